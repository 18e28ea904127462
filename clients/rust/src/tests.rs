use super::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::sync::mpsc;

const STREAMS: &str = r#"
streams:
  app.events:
    schema_title: app/event
  app.sampled:
    schema_title: app/event
    sample: {unit: device, rate: 0.5}
  app.off:
    schema_title: app/event
    enabled: false
"#;

/// One request as the scripted edge saw it.
struct Seen {
    path: String,
    body: Value,
    at: Instant,
}

type Script =
    Arc<Mutex<std::collections::VecDeque<(u16, Vec<(&'static str, &'static str)>, String)>>>;

/// An HTTP server answering each request with the next answer (status,
/// headers, body) of its script, then 201s; what it was sent comes out of the channel.
fn scripted_edge() -> (String, mpsc::Receiver<Seen>, Script) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let script = Script::default();
    let handle = script.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let tx = tx.clone();
            let script = script.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let mut length = 0usize;
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let (status, headers, text) =
                        script
                            .lock()
                            .unwrap()
                            .pop_front()
                            .unwrap_or((201, vec![], String::new()));
                    let _ = tx.send(Seen {
                        path,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        at: Instant::now(),
                    });
                    let mut head =
                        format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", text.len());
                    for (k, v) in headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    out.write_all(head.as_bytes()).unwrap();
                    out.write_all(text.as_bytes()).unwrap();
                }
            });
        }
    });
    (format!("http://{addr}"), rx, handle)
}

fn client(edge: &str, dir: &std::path::Path, max: u64) -> Client {
    let mut config = ClientConfig::new(edge, dir);
    config.stream_config = Some(StreamConfig::parse(STREAMS).unwrap());
    config.max_queued = max;
    config.batch_events = 10;
    Client::open(config).unwrap()
}

#[test]
fn the_queue_keeps_events_across_a_reopen_and_drops_the_oldest_beyond_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = client("http://127.0.0.1:9", dir.path(), 5);
        let events = (0..8).map(|n| json!({"n": n})).collect();
        let out = c.submit_all("app.events", events).unwrap();
        assert_eq!(out.len(), 8);
        let s = c.stats();
        assert_eq!((s.queued, s.dropped_oldest), (5, 3));
    }
    let c = client("http://127.0.0.1:9", dir.path(), 5);
    assert_eq!(c.stats().queued, 5);
    let taken = lock(&c.queue).peek(100, 1 << 20).unwrap();
    let ns: Vec<i64> = taken
        .events
        .iter()
        .map(|e| {
            serde_json::from_slice::<Value>(e).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, [3, 4, 5, 6, 7]);
}

#[test]
fn the_stream_config_is_applied_before_an_event_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let c = client("http://127.0.0.1:9", dir.path(), 100);
    let sampled = |device: &str| json!({"agent": {"app_install_id": device}});
    assert_eq!(
        c.submit("app.off", json!({})).unwrap(),
        Submitted::Withheld(Withheld::Disabled)
    );
    assert_eq!(
        c.submit("app.nope", json!({})).unwrap(),
        Submitted::Withheld(Withheld::UnknownStream)
    );
    assert_eq!(
        c.submit("app.sampled", sampled("80000000ff")).unwrap(),
        Submitted::Withheld(Withheld::OutOfSample)
    );
    let Submitted::Queued(id) = c.submit("app.sampled", sampled("7fffffffff")).unwrap() else {
        panic!("in sample")
    };
    assert!(matches!(
        c.submit("app.events", json!([1])),
        Err(ClientError::NotAnObject("an array"))
    ));
    let s = c.stats();
    assert_eq!(s.queued, 1);
    assert_eq!(s.withheld.values().sum::<u64>(), 3);
    let taken = lock(&c.queue).peek(10, 1 << 20).unwrap();
    let e: Value = serde_json::from_slice(&taken.events[0]).unwrap();
    assert_eq!(e["meta"]["id"], id.as_str());
    assert_eq!(e["meta"]["stream"], "app.sampled");
    assert_eq!(e["sample"], json!({"unit": "device", "rate": 0.5}));
    assert!(Timestamp::parse_rfc3339(e["dt"].as_str().unwrap()).is_ok());
}

#[test]
fn a_flush_waits_out_retry_after_drops_the_invalid_and_sends_the_failed_again() {
    let (edge, seen, script) = scripted_edge();
    let dir = tempfile::tempdir().unwrap();
    let c = client(&edge, dir.path(), 100);
    let ids: Vec<String> = (0..3)
        .map(|n| match c.submit("app.events", json!({"n": n})).unwrap() {
            Submitted::Queued(id) => id,
            other => panic!("{other:?}"),
        })
        .collect();
    // A 503 first; then the first event invalid, the second failed, the third taken.
    let partly = json!({
        "invalid": [{"status": "invalid", "event": {"meta": {"id": ids[0]}}, "context": {"message": "bad", "errorsText": "'n' must be a string"}}],
        "error": [{"status": "error", "event": {"meta": {"id": ids[1]}}, "context": {"kind": "failed", "message": "down"}}],
    });
    script.lock().unwrap().extend([
        (
            503,
            vec![("Retry-After", "1")],
            r#"{"error":"busy"}"#.to_owned(),
        ),
        (207, vec![], partly.to_string()),
    ]);
    let report = c.flush(Duration::from_secs(20)).unwrap();
    let requests: Vec<Seen> = seen.try_iter().collect();
    assert_eq!(requests.len(), 3, "503, 207, then the failed one alone");
    assert!(requests.iter().all(|r| r.path == "/v1/events"));
    assert!(requests[1].at - requests[0].at >= Duration::from_secs(1));
    assert_eq!(requests[0].body.as_array().unwrap().len(), 3);
    assert_eq!(requests[1].body, requests[0].body);
    assert_eq!(requests[2].body.as_array().unwrap().len(), 1);
    assert_eq!(requests[2].body[0]["meta"]["id"], ids[1].as_str());
    assert_eq!(
        report,
        FlushReport {
            accepted: 2,
            invalid: 1,
            retried: 4,
            remaining: 0
        }
    );
    let s = c.stats();
    assert_eq!((s.accepted, s.invalid, s.queued), (2, 1, 0));
    assert_eq!(s.invalid_reasons, ["bad: 'n' must be a string"]);
}

#[test]
fn answers_are_sorted_by_what_comes_next() {
    assert!(matches!(sort_answer(201, None, ""), Answer::Taken));
    assert!(matches!(sort_answer(202, None, ""), Answer::Taken));
    assert!(matches!(
        sort_answer(429, Some(Duration::from_secs(3)), ""),
        Answer::Again(Some(d)) if d == Duration::from_secs(3)
    ));
    assert!(matches!(sort_answer(502, None, ""), Answer::Again(None)));
    assert!(
        matches!(sort_answer(400, None, r#"{"error":"not JSON at line 1"}"#), Answer::Refused(w) if w.contains("not JSON"))
    );
    assert!(
        matches!(sort_answer(413, None, "too big"), Answer::Refused(w) if w.starts_with("413"))
    );
    assert!(matches!(
        sort_answer(400, None, r#"{"invalid":[{"event":{"meta":{"id":"a"}},"context":{"message":"m"}}],"error":[]}"#),
        Answer::Partly { invalid, failed, .. } if invalid.len() == 1 && failed.is_empty()
    ));
}

#[test]
fn an_edge_that_is_not_a_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = Client::open(ClientConfig::new("127.0.0.1:8420", dir.path())).err();
    assert!(e.is_some_and(|e| e.to_string().contains("not an http://")));
}
