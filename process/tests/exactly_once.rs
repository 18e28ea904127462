//! A produce-only rule over librdkafka's mock cluster: its events and the
//! group's offsets go in one transaction, so a second run starts where the
//! first committed and writes nothing twice.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, TopicPartitionList};
use serde_json::{Value, json};
use sluice_process::RuleSet;
use sluice_process::exactly_once::ExactlyOnce;
use sluice_process::metrics::ProcessMetrics;
use sluice_process::runner::{OwnStreams, Settings, SourceKind};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const STREAMS: &str = "defaults:\n  topic_prefixes: [local.]\nstreams:\n  proc.in:\n    schema_title: sluice/test/event\n  proc.out:\n    schema_title: sluice/test/event\n  sluice.process.error:\n    schema_title: error\n";

fn intake() -> Arc<sluice_shared::Intake> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let bundle = sluice_shared::fs::read_bundle(&[repo], STREAMS.to_owned()).unwrap();
    let (registry, streams) = bundle.load().unwrap();
    Arc::new(sluice_shared::Intake::new(
        Arc::new(registry),
        Arc::new(streams),
        sluice_shared::IntakeOptions::default(),
    ))
}

fn feed(brokers: &str, from: u64, to: u64) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for n in from..to {
        let v = json!({"$schema": "/sluice/test/event/1.1.0", "meta": {"stream": "proc.in", "id": format!("00000000-0000-4000-8000-{n:012}"), "dt": "2026-12-06T12:00:00Z"}, "dt": "2026-12-06T12:00:00Z", "count": n}).to_string();
        let k = n.to_string();
        p.send(BaseRecord::to("local.proc.in").key(&k).payload(&v))
            .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
}

fn committed_sum(brokers: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sluice-process.copy")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("local.proc.in", 0);
    tpl.add_partition("local.proc.in", 1);
    c.committed_offsets(tpl, Duration::from_secs(5))
        .unwrap()
        .elements()
        .iter()
        .map(|e| e.offset().to_raw().unwrap_or(0).max(0))
        .sum()
}

fn run_until(
    settings: &Settings,
    rules: &RuleSet,
    out: &BaseConsumer,
    want: usize,
    seen: &mut BTreeMap<u64, usize>,
) {
    let eos = ExactlyOnce::open(
        rules.rules[0].clone(),
        intake(),
        settings,
        ProcessMetrics::default(),
    )
    .unwrap()
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let t = std::thread::spawn(move || eos.run(stop_rx));
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.values().sum::<usize>() < want {
        assert!(
            Instant::now() < deadline,
            "{} of {want}",
            seen.values().sum::<usize>()
        );
        if let Some(Ok(m)) = out.poll(Duration::from_millis(100)) {
            let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            *seen.entry(v["count"].as_u64().unwrap()).or_default() += 1;
        }
    }
    stop_tx.send(true).unwrap();
    t.join().unwrap().unwrap();
}

#[test]
fn events_and_offsets_commit_together() {
    let cluster = MockCluster::<DefaultProducerContext>::new(1).unwrap();
    cluster.create_topic("local.proc.in", 2, 1).unwrap();
    cluster.create_topic("local.proc.out", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let rules = RuleSet::parse(
        "rules: {copy: {topic: proc.in, derive: {stream: proc.out, fields: {message: copied}}}}",
    )
    .unwrap();
    let settings = Settings {
        // The mock cluster keeps a stopped member in the group until its session times out.
        source: SourceKind::Kafka {
            brokers: brokers.clone(),
            extra: BTreeMap::from([("session.timeout.ms".to_owned(), "6000".to_owned())]),
        },
        topic: Arc::new(|s: &str| format!("local.{s}")),
        edge: None,
        streams: OwnStreams::default(),
        index: None,
        dedupe_window_ms: 0,
        group_prefix: "sluice-process".into(),
        intake: None,
    };
    let out: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "check")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    out.subscribe(&["local.proc.out"]).unwrap();
    let mut seen = BTreeMap::new();
    feed(&brokers, 0, 100);
    run_until(&settings, &rules, &out, 100, &mut seen);
    assert_eq!(
        committed_sum(&brokers),
        100,
        "the group's offsets were committed with the events"
    );
    feed(&brokers, 100, 150);
    run_until(&settings, &rules, &out, 150, &mut seen);
    assert_eq!(committed_sum(&brokers), 150);
    while let Some(Ok(m)) = out.poll(Duration::from_secs(2)) {
        let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        *seen.entry(v["count"].as_u64().unwrap()).or_default() += 1;
    }
    assert_eq!(seen.len(), 150);
    assert!(seen.values().all(|&c| c == 1), "written once each");
}
