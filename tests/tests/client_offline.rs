//! `sluice-client`'s durable queue over real processes. `sluice send` (built
//! on the client) queues 10,000 events while the edge answers 503 (its
//! aggregator is down) and is SIGKILLed holding them all; a second run on
//! the same queue, with the aggregator back, is SIGKILLed mid-flush; a third
//! sends the rest. The log holds each of the 10,000 exactly once.

use sluice_tests::{
    Edge, FixedPorts, KillOnDrop, Scratch, binary, log_events, metric, terminate, wait_until,
};
use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Command, Stdio};

const TOKEN: &str = "client-offline-token";
const EVENTS: usize = 10_000;

/// `sluice send` on the queue in `queue`, with `extra` arguments.
fn send(edge: &str, queue: &std::path::Path, extra: &[&str]) -> Command {
    let mut command = Command::new(binary("sluice"));
    command
        .args(["send", "--stream", "app.events", "--edge", edge, "--queue"])
        .arg(queue)
        .args(extra)
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

fn start(mut command: Command) -> KillOnDrop {
    KillOnDrop(command.spawn().expect("sluice send starts"))
}

/// Reads `child`'s stdout until a line starting with `prefix`.
fn wait_for_line(child: &mut KillOnDrop, prefix: &str) -> String {
    let out = child.0.stdout.as_mut().expect("stdout is piped");
    let mut reader = std::io::BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "no line `{prefix}…`"
        );
        if line.starts_with(prefix) {
            return line;
        }
    }
}

fn sigkill(child: &mut KillOnDrop) {
    child.0.kill().unwrap();
    child.0.wait().unwrap();
}

#[test]
fn a_killed_client_delivers_every_queued_event_exactly_once() {
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
    let edge_url = format!("http://{edge}");
    let queue = scratch.root.join("queue");
    assert!(terminate(&mut aggregator.child).success());

    // First run: everything queued, nothing taken (the edge answers 503), killed.
    let mut first = start(send(
        &edge_url,
        &queue,
        &[
            "--count",
            &EVENTS.to_string(),
            "--schema",
            "/sluice/test/event/1.0.0",
            "--batch",
            "200",
        ],
    ));
    let line = wait_for_line(&mut first, "queued ");
    assert!(
        line.starts_with(&format!("queued {EVENTS} events")),
        "{line}"
    );
    wait_until("the edge has answered 503 twice", || {
        metric(edge, "sluice_edge_requests_total{status=\"503\"}") >= 2.0
    });
    sigkill(&mut first);
    assert_eq!(
        metric(edge, "sluice_edge_events_total{outcome=\"delivered\"}"),
        0.0
    );

    // Second run: the aggregator is back; killed once a part has been taken.
    let mut aggregator = scratch.aggregator(TOKEN, &fixed);
    let mut second = start(send(&edge_url, &queue, &["--batch", "10"]));
    let line = wait_for_line(&mut second, "queued ");
    assert!(
        line.starts_with(&format!("queued {EVENTS} events")),
        "{line}"
    );
    wait_until("2,000 events are delivered", || {
        metric(edge, "sluice_edge_events_total{outcome=\"delivered\"}") >= 2_000.0
    });
    sigkill(&mut second);
    let delivered = metric(edge, "sluice_edge_events_total{outcome=\"delivered\"}") as usize;
    assert!(
        delivered < EVENTS,
        "the second run finished before it was killed"
    );

    // Third run: the rest.
    let output = send(&edge_url, &queue, &["--batch", "500"])
        .output()
        .expect("sluice send finishes");
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{summary}");
    assert!(summary.contains("invalid=0 "), "{summary}");
    assert!(summary.contains("failed=0 "), "{summary}");
    println!("killed holding {EVENTS}, then after {delivered} delivered; third run: {summary}");

    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());
    let mut counts: HashMap<u64, usize> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for e in log_events(&scratch.data, "local.app.events") {
        *counts.entry(e["count"].as_u64().unwrap()).or_default() += 1;
        ids.insert(e["meta"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(counts.len(), EVENTS, "events are missing");
    assert!(counts.values().all(|&c| c == 1), "an event landed twice");
    assert_eq!(ids.len(), EVENTS);
}

/// `sluice send --count` makes events of the stream's own schema, from its
/// example: all of them valid; an invalid event's reason is printed.
#[test]
fn generated_events_follow_the_streams_schema_and_refusals_say_why() {
    let streams =
        std::fs::read_to_string(sluice_tests::workspace().join("schemas/streams.yaml")).unwrap();
    let scratch = Scratch::with_streams(&streams);
    let mut aggregator = scratch.aggregator(TOKEN, &[]);
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(&aggregator, &[]);
    let edge_url = format!("http://{edge}");
    let output = Command::new(binary("sluice"))
        .args([
            "send",
            "--stream",
            "sluice.server.event",
            "--count",
            "10",
            "--edge",
            &edge_url,
        ])
        .current_dir(sluice_tests::workspace())
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{summary}");
    assert!(summary.contains("accepted=10 invalid=0"), "{summary}");

    let bad = scratch.root.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"$schema\": \"/sluice/test/event/1.0.0\", \"dt\": \"2026-12-06T10:00:00Z\", \"count\": \"seven\"}\n",
    )
    .unwrap();
    let output = Command::new(binary("sluice"))
        .args([
            "send",
            "--stream",
            "sluice.test.event",
            "--edge",
            &edge_url,
            "--file",
        ])
        .arg(&bad)
        .current_dir(sluice_tests::workspace())
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    let errors = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{summary}");
    assert!(summary.contains("accepted=0 invalid=1"), "{summary}");
    assert!(
        errors.contains("invalid: ") && errors.contains("count"),
        "{errors}"
    );

    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());
    let events = log_events(&scratch.data, "local.sluice.server.event");
    assert_eq!(events.len(), 10);
    for e in &events {
        assert!(
            e["$schema"]
                .as_str()
                .unwrap()
                .starts_with("/sluice/server/event/"),
            "{e}"
        );
    }
}
