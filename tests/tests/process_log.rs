//! `sluice process` over the embedded log of a real `sluice up`, against a
//! small HTTP service this test runs that records every call: a purge rule
//! calls it once per matching event; a 503 is retried after the rule's
//! delay and then succeeds; a 400 is reported and not retried; a stopped
//! and restarted processor goes on from its committed position, calling
//! nothing twice.

use serde_json::json;
use sluice_tests::{
    KillOnDrop, binary, free_port, post_events_created, terminate, wait_until, workspace,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Calls the service got: (path, when).
type Calls = Arc<Mutex<Vec<(String, Instant)>>>;

/// Serves on a free port: `/purge/flaky` answers 503 the first time, `/purge/bad`
/// 400, everything else 200; every call is recorded.
fn recording_service() -> (u16, Calls) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls: Calls = Arc::default();
    let record = calls.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut length = 0;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let status = {
                let mut calls = record.lock().unwrap();
                let before = calls.iter().filter(|(p, _)| *p == path).count();
                calls.push((path.clone(), Instant::now()));
                match (path.as_str(), before) {
                    ("/purge/flaky", 0) => "503 Service Unavailable",
                    ("/purge/bad", _) => "400 Bad Request",
                    _ => "200 OK",
                }
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (port, calls)
}

fn count(calls: &Calls, path: &str) -> usize {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == path)
        .count()
}

fn event(message: &str) -> serde_json::Value {
    json!({
        "$schema": "/sluice/test/event/1.1.0",
        "meta": {"stream": "sluice.test.event"},
        "dt": "2026-12-06T12:00:00Z",
        "message": message,
    })
}

fn start_processor(rules: &std::path::Path, data: &std::path::Path) -> KillOnDrop {
    KillOnDrop(
        Command::new(binary("sluice"))
            .args(["process", "--rules"])
            .arg(rules)
            .arg("--data-dir")
            .arg(data)
            .current_dir(workspace())
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::piped())
            .spawn()
            .expect("sluice process starts"),
    )
}

#[test]
fn a_purge_rule_calls_once_per_matching_event_retries_a_503_and_resumes_where_it_stopped() {
    let (port, calls) = recording_service();
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let rules = scratch.path().join("rules.yaml");
    std::fs::write(
        &rules,
        format!(
            "rules:\n  purge:\n    topic: sluice.test.event\n    match:\n      message: '/^purge-(?<name>[a-z]+)$/'\n    exec:\n      method: post\n      uri: 'http://127.0.0.1:{port}/purge/{{{{match.message.name}}}}'\n      body: {{id: '{{{{message.meta.id}}}}'}}\n    retry_delay: 700\n    retry_limit: 2\n"
        ),
    )
    .unwrap();
    let check = Command::new(binary("sluice"))
        .args(["process", "--check", "--rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(check.status.success());
    assert_eq!(
        String::from_utf8_lossy(&check.stdout),
        "purge: 1 case(s) over sluice.test.event\nrules=1\n"
    );

    let edge_addr = format!("127.0.0.1:{}", free_port());
    let mut up = Command::new(binary("sluice"))
        .arg("up")
        .arg("--data-dir")
        .arg(&data)
        .args(["--edge-addr", &edge_addr])
        .args(["--aggregator-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--quic-addr", &format!("127.0.0.1:{}", free_port())])
        .current_dir(workspace())
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .map(KillOnDrop)
        .expect("sluice up starts");
    let stdout = up.0.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("edge listening on"));
    assert!(ready, "sluice up printed its edge's address");
    let edge = edge_addr.parse().unwrap();

    post_events_created(
        edge,
        &[
            event("purge-alpha"),
            event("not a purge"),
            event("purge-flaky"),
            event("purge-bad"),
            event("purge-beta"),
        ],
    );
    let mut processor = start_processor(&rules, &data);
    wait_until("four purges, one of them twice", || {
        count(&calls, "/purge/beta") == 1
    });
    assert_eq!(count(&calls, "/purge/alpha"), 1);
    assert_eq!(count(&calls, "/purge/flaky"), 2, "a 503, then a 200");
    assert_eq!(count(&calls, "/purge/bad"), 1, "a 400 is not retried");
    {
        let c = calls.lock().unwrap();
        let flaky: Vec<Instant> = c
            .iter()
            .filter(|(p, _)| p == "/purge/flaky")
            .map(|(_, t)| *t)
            .collect();
        assert!(
            flaky[1] - flaky[0] >= std::time::Duration::from_millis(700),
            "retried after the rule's delay"
        );
        assert_eq!(c.len(), 5);
    }

    // Stopped and started again, the processor goes on after what it committed.
    assert!(terminate(&mut processor).success());
    post_events_created(edge, &[event("purge-gamma")]);
    let mut again = start_processor(&rules, &data);
    wait_until("the purge sent while it was stopped", || {
        count(&calls, "/purge/gamma") == 1
    });
    assert!(terminate(&mut again).success());
    let out = {
        let mut s = String::new();
        if let Some(mut o) = again.0.stdout.take() {
            let _ = o.read_to_string(&mut s);
        }
        s
    };
    assert!(
        out.contains("purge: matched=1 executed=1 retried=0 failed=0 duplicate=0"),
        "{out}"
    );
    assert_eq!(calls.lock().unwrap().len(), 6, "nothing was called twice");
    assert!(terminate(&mut up).success());
}
