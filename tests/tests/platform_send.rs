//! An offline mobile app flushing its queue: with the aggregator down,
//! `sluice send` pushes 10,000 events with old `dt` values at a native
//! edge, which answers 503 with Retry-After; the app retries with backoff;
//! the aggregator comes back; `sluice send` reports all 10,000 accepted and
//! the sink holds each exactly once.

use sluice_tests::{Edge, FixedPorts, Scratch, binary, log_events, metric, terminate, wait_until};
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

const TOKEN: &str = "send-test-token";
const EVENTS: usize = 10_000;

#[test]
fn an_offline_app_flush_lands_exactly_once() {
    let scratch = Scratch::new("app.events");
    let ports = FixedPorts::new();
    let fixed = ports.env();
    let mut aggregator = scratch.aggregator(TOKEN, &fixed);
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(
        &aggregator,
        &[("SLUICE_EDGE_BATCH__FORWARD_TIMEOUT_MS", "300".as_ref())],
    );
    assert!(terminate(&mut aggregator.child).success());

    // A week-old queue: events made offline, with their own dt.
    let queue = scratch.root.join("queue.jsonl");
    let mut file = std::fs::File::create(&queue).unwrap();
    for n in 0..EVENTS {
        writeln!(
            file,
            r#"{{"$schema":"/sluice/test/event/1.0.0","dt":"2026-11-20T08:{:02}:{:02}.000Z","count":{n},"message":"offline {n}"}}"#,
            (n / 60) % 60,
            n % 60
        )
        .unwrap();
    }
    drop(file);
    let edge_url = format!("http://{edge}");
    let sender = Command::new(binary("sluice"))
        .args(["send", "--stream", "app.events", "--file"])
        .arg(&queue)
        .args(["--edge", &edge_url, "--batch", "200"])
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sluice send starts");

    // The edge turns the app away while no aggregator answers...
    wait_until("the edge has answered 503", || {
        metric(edge, "sluice_edge_requests_total{status=\"503\"}") >= 3.0
    });
    // ...and the app's retries get through once one is back.
    let mut aggregator = scratch.aggregator(TOKEN, &fixed);
    let output = sender.wait_with_output().expect("sluice send finishes");
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{summary}");
    assert!(
        summary.contains(&format!("accepted={EVENTS} invalid=0")),
        "{summary}"
    );
    let retried: usize = summary
        .split("retried=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(retried > 0, "{summary}");

    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for e in log_events(&scratch.data, "local.app.events") {
        assert!(
            e["dt"].as_str().unwrap().starts_with("2026-11-20T08:"),
            "{e}"
        );
        *counts.entry(e["count"].as_u64().unwrap()).or_default() += 1;
    }
    assert_eq!(counts.len(), EVENTS, "events are missing");
    assert!(counts.values().all(|&c| c == 1), "an event landed twice");
}
