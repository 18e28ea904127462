//! The real aggregator reloads its stream config on SIGHUP, and keeps the old
//! one when the new one is broken.

use sluice_tests::{KillOnDrop, binary, http_get, workspace};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn stream_names(addr: SocketAddr) -> Vec<String> {
    let (status, body) = http_get(addr, "/v1/streams").expect("the aggregator answers");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    v["streams"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// The first log line containing `needle` within a minute.
fn wait_for(log: &mpsc::Receiver<String>, needle: &str) -> Option<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match log.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

fn hangup(pid: u32) {
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[cfg(unix)]
#[test]
fn sighup_reloads_stream_config_and_a_broken_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let streams = dir.path().join("streams.yaml");
    std::fs::write(
        &streams,
        "streams:\n  first.stream:\n    schema_title: sluice/test/event\n",
    )
    .unwrap();
    let mut child = Command::new(binary("sluice"))
        .arg("aggregator")
        .env("SLUICE_AGGREGATOR_DATA_DIR", dir.path().join("data"))
        .env("SLUICE_AGGREGATOR_STREAMS", &streams)
        .env(
            "SLUICE_AGGREGATOR_REPOSITORIES",
            format!("[{:?}]", workspace().join("schemas")),
        )
        .env("SLUICE_AGGREGATOR_HTTP__LISTEN", "127.0.0.1:0")
        .env("SLUICE_AGGREGATOR_QUIC__LISTEN", "127.0.0.1:0")
        .env("SLUICE_AGGREGATOR_HTTP__TOKEN", "reload-test-token")
        .env("SLUICE_AGGREGATOR_RELOAD_SECS", "3600")
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice aggregator starts");
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let _child = KillOnDrop(child);
    let (log_tx, log_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let addr: SocketAddr = lines
        .by_ref()
        .find_map(|l| {
            l.strip_prefix("aggregator listening on http://")
                .map(|a| a.parse().expect("an address"))
        })
        .expect("the aggregator prints its HTTP address");
    assert_eq!(stream_names(addr), ["first.stream"]);

    std::fs::write(&streams, "streams:\n  first.stream:\n    schema_title: sluice/test/event\n  second.stream:\n    schema_title: sluice/test/event\n").unwrap();
    hangup(pid);
    let reloaded = wait_for(&log_rx, "Reloaded stream config and schemas").is_some();
    assert!(reloaded);
    assert_eq!(stream_names(addr), ["first.stream", "second.stream"]);

    std::fs::write(&streams, "streams:\n  third.stream:\n    schema_title: 7\n").unwrap();
    hangup(pid);
    let refused = wait_for(&log_rx, "Refused a new stream config")
        .expect("the broken config is refused with a log line");
    assert!(refused.contains("third.stream"), "{refused}");
    assert_eq!(stream_names(addr), ["first.stream", "second.stream"]);
}
