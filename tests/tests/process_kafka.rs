//! Two `sluice process` instances on one rule set over a Kafka-protocol
//! broker (librdkafka's mock cluster, listening on loopback: it runs the
//! group protocol with session timeouts, which tansu does not), each rule a
//! consumer group they share; one is SIGKILLed mid-load. Every matching
//! event is executed at least once (the repeats, from what the killed one
//! had not committed, are counted and printed), and the produce-only rule's
//! events land exactly once: they go through an edge and an aggregator
//! writing to the same broker, with ids made from the events they come
//! from, so the aggregator's dedupe drops a repeat.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{Value, json};
use sluice_tests::recorder::{Calls, recording_service};
use sluice_tests::{Edge, KillOnDrop, Scratch, binary, free_port, metric, wait_until, workspace};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: u64 = 4000;
const IN: &str = "local.proc.in";
const OUT: &str = "local.proc.out";
const STREAMS: &str = "defaults:\n  topic_prefixes: [local.]\nstreams:\n  proc.in:\n    schema_title: sluice/test/event\n  proc.out:\n    schema_title: sluice/test/event\n  sluice.process.retry:\n    schema_title: change-prop/retry\n  sluice.process.error:\n    schema_title: error\n";

fn start_processor(
    rules: &Path,
    streams: &Path,
    brokers: &str,
    edge: SocketAddr,
) -> (KillOnDrop, SocketAddr) {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(binary("sluice"))
        .args(["process", "--rules"])
        .arg(rules)
        .args(["--kafka", brokers])
        // A killed member's partitions move within seconds, not librdkafka's default 45.
        .args(["--kafka-option", "session.timeout.ms=6000"])
        .args(["--kafka-option", "heartbeat.interval.ms=500"])
        .arg("--streams")
        .arg(streams)
        .args(["--edge", &format!("http://{edge}")])
        .args(["--metrics-listen", &metrics.to_string()])
        .current_dir(workspace())
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("sluice process starts");
    (KillOnDrop(child), metrics)
}

/// Distinct counts purged, and calls in all.
fn purges(calls: &Calls) -> (usize, usize) {
    let c = calls.lock().unwrap();
    let seen: std::collections::BTreeSet<&str> = c
        .iter()
        .filter_map(|(p, _)| p.strip_prefix("/p/"))
        .collect();
    (seen.len(), c.len())
}

/// Events `from..to` into the input topic, as the aggregator writes them.
fn feed(producer: &ThreadedProducer<DefaultProducerContext>, from: u64, to: u64) {
    for n in from..to {
        let value = json!({
            "$schema": "/sluice/test/event/1.1.0",
            "meta": {"stream": "proc.in", "id": format!("00000000-0000-4000-8000-{n:012}"), "dt": "2026-12-06T12:00:00.000Z"},
            "dt": "2026-12-06T12:00:00Z",
            "count": n,
        })
        .to_string();
        let key = n.to_string();
        let mut record = BaseRecord::to(IN).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn two_processors_share_the_work_and_one_killed_loses_nothing_and_repeats_no_produced_event() {
    let cluster = MockCluster::<DefaultProducerContext>::new(1).unwrap();
    cluster.create_topic(IN, 4, 1).unwrap();
    cluster.create_topic(OUT, 2, 1).unwrap();
    cluster
        .create_topic("local.sluice.process.retry", 1, 1)
        .unwrap();
    cluster
        .create_topic("local.sluice.process.error", 1, 1)
        .unwrap();
    let brokers = cluster.bootstrap_servers();
    let scratch = Scratch::with_streams(STREAMS);
    let aggregator = scratch.aggregator(
        "process-kafka-token",
        &[("SLUICE_AGGREGATOR_KAFKA__BROKERS", brokers.as_ref())],
    );
    let Edge {
        child: _edge_child,
        http: edge,
    } = scratch.edge(&aggregator, &[]);
    let streams = scratch.streams.clone();
    let (port, calls) = recording_service();
    let rules = scratch.root.join("rules.yaml");
    std::fs::write(
        &rules,
        format!(
            "rules:\n  purge:\n    topic: proc.in\n    exec: {{method: post, uri: 'http://127.0.0.1:{port}/p/{{{{message.count}}}}'}}\n  copy:\n    topic: proc.in\n    derive: {{stream: proc.out, fields: {{message: copied}}}}\n"
        ),
    )
    .unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("acks", "all")
        .create()
        .unwrap();

    let (mut first, first_metrics) = start_processor(&rules, &streams, &brokers, edge);
    let (mut second, second_metrics) = start_processor(&rules, &streams, &brokers, edge);
    feed(&producer, 0, EVENTS / 2);
    let both = |name: &str, rule: &str| {
        let sample = format!("sluice_process_{name}_total{{rule=\"{rule}\"}}");
        metric(first_metrics, &sample) > 0.0 && metric(second_metrics, &sample) > 0.0
    };
    wait_until("both instances purge and copy", || {
        both("matched", "purge") && both("produced", "copy")
    });
    wait_until("a third of the purges", || {
        purges(&calls).0 as u64 >= EVENTS / 3
    });
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    feed(&producer, EVENTS / 2, EVENTS);
    let deadline = Instant::now() + Duration::from_secs(120);
    while (purges(&calls).0 as u64) < EVENTS {
        assert!(
            Instant::now() < deadline,
            "{} of {EVENTS} events purged",
            purges(&calls).0
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (distinct, all) = purges(&calls);
    assert_eq!(
        distinct as u64, EVENTS,
        "every matching event executed at least once"
    );
    eprintln!(
        "purge: {EVENTS} events, {all} calls, {} repeats after the kill",
        all - distinct
    );

    // The produce-only rule: every event once in the output.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "process-kafka-check")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[OUT]).unwrap();
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut records = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (seen.len() as u64) < EVENTS && Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let v: Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
        assert_eq!(v["message"], "copied");
        assert_eq!(v["meta"]["stream"], "proc.out");
        *seen.entry(v["count"].as_u64().unwrap()).or_default() += 1;
        records += 1;
    }
    assert_eq!(seen.len() as u64, EVENTS, "every event copied");
    // Whatever else was committed would have come with the rest: wait for the copy rule to
    // have no lag left, then read on.
    wait_until("the survivor has copied everything", || {
        metric(
            second_metrics,
            "sluice_process_produced_total{rule=\"copy\"}",
        ) > 0.0
    });
    while let Some(r) = consumer.poll(Duration::from_secs(3)) {
        if let Ok(m) = r {
            let v: Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            *seen.entry(v["count"].as_u64().unwrap()).or_default() += 1;
            records += 1;
        }
    }
    eprintln!("copy: {EVENTS} events, {records} records in {OUT}");
    assert_eq!(records, EVENTS, "no repeats for the produce-only rule");
    assert!(seen.values().all(|&c| c == 1));
    assert!(sluice_tests::terminate(&mut second).success());
}
