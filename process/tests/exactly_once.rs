//! A produce-only rule over librdkafka's mock cluster: its events and the
//! group's offsets go in one transaction, so a second run starts where the
//! first committed and writes nothing twice; the events of each partition are
//! written in the order they were read, though several threads make them.

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
        // Even numbers in partition 0, odd in 1: each partition's order is the numbers'.
        p.send(
            BaseRecord::to("local.proc.in")
                .partition((n % 2) as i32)
                .key(&k)
                .payload(&v),
        )
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

/// The output's events, as they come.
#[derive(Default)]
struct Seen {
    /// Each event's `count`, in the output's order.
    order: Vec<u64>,
    times: BTreeMap<u64, usize>,
}

impl Seen {
    fn add(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) {
        let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let n = v["count"].as_u64().unwrap();
        self.order.push(n);
        *self.times.entry(n).or_default() += 1;
    }
}

fn run_until(
    settings: &Settings,
    rules: &RuleSet,
    out: &BaseConsumer,
    want: usize,
    seen: &mut Seen,
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
    while seen.order.len() < want {
        assert!(Instant::now() < deadline, "{} of {want}", seen.order.len());
        if let Some(Ok(m)) = out.poll(Duration::from_millis(100)) {
            seen.add(&m);
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
    let mut seen = Seen::default();
    // Enough that a poll's records are shared among the threads that make events.
    feed(&brokers, 0, 2000);
    run_until(&settings, &rules, &out, 2000, &mut seen);
    assert_eq!(
        committed_sum(&brokers),
        2000,
        "the group's offsets were committed with the events"
    );
    feed(&brokers, 2000, 2150);
    run_until(&settings, &rules, &out, 2150, &mut seen);
    assert_eq!(committed_sum(&brokers), 2150);
    while let Some(Ok(m)) = out.poll(Duration::from_secs(2)) {
        seen.add(&m);
    }
    assert_eq!(seen.times.len(), 2150);
    assert!(seen.times.values().all(|&c| c == 1), "written once each");
    for parity in [0, 1] {
        let of: Vec<u64> = seen
            .order
            .iter()
            .copied()
            .filter(|n| n % 2 == parity)
            .collect();
        assert!(
            of.windows(2).all(|w| w[0] < w[1]),
            "partition {parity}'s events are written in the order they were read"
        );
    }
}
