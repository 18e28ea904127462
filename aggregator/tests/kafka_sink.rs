//! Batch ingest over real HTTP into Kafka, against librdkafka's mock
//! cluster (three brokers speaking the Kafka protocol): records land with
//! their topic, key, timestamp, headers and payload; a resent batch lands
//! once, also after a restart; with the brokers down nothing is
//! acknowledged, and once they are back everything is, exactly once.

mod common;

use common::{TOKEN, event, get, post, serve_http};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use sluice_aggregator::{
    BatchService, CommitLoop, CommitOptions, DedupeJournal, KafkaOptions, KafkaSink, Live, Metrics,
};
use sluice_host::token::Token;
use sluice_shared::{Batch, BatchAck, BatchError, EventAck, StreamConfig, WireLimits};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const STREAMS: &str = r#"
streams:
  sluice.test.event:
    schema_title: sluice/test/event
"#;
const TOPIC: &str = "local.sluice.test.event";
const ERRORS: &str = "sluice.error.validation";

/// A record as read back from Kafka.
#[derive(Debug)]
struct Got {
    topic: String,
    key: Option<Vec<u8>>,
    timestamp: Option<i64>,
    headers: Vec<(String, Vec<u8>)>,
    payload: Vec<u8>,
}

/// An aggregator whose sink is Kafka at `brokers`, journaling under `dir`.
async fn start(brokers: &str, dir: &Path) -> (SocketAddr, CommitLoop) {
    let streams = Live::new(StreamConfig::parse(STREAMS).unwrap());
    let metrics = Metrics::new();
    let options = KafkaOptions {
        brokers: brokers.to_owned(),
        properties: [("linger.ms".to_owned(), "1".to_owned())].into(),
    };
    let journal = DedupeJournal::open(dir, Duration::from_secs(3600)).unwrap();
    let kafka = KafkaSink::connect(&options, journal, &metrics).unwrap();
    let sink = CommitLoop::start(
        Box::new(kafka),
        streams.clone(),
        CommitOptions::default(),
        metrics,
    );
    let app = BatchService::new(
        sink.clone(),
        Token::new(TOKEN),
        WireLimits::default(),
        streams,
    )
    .router();
    let addr = serve_http(app).await;
    (addr, sink)
}

async fn send(addr: SocketAddr, batch: &Batch) -> Vec<EventAck> {
    let reply = post(addr, Some(TOKEN), &batch.encode(true)).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    BatchAck::decode_for(&reply.body, batch, &WireLimits::default())
        .unwrap()
        .verdicts
}

fn consumer(brokers: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sluice-test")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC, ERRORS]).unwrap();
    consumer
}

/// Reads records until every payload of `wanted` has been seen on `topic`; returns all read on the way.
fn read_until(consumer: &BaseConsumer, topic: &str, wanted: &[&str]) -> Vec<Got> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while Instant::now() < deadline {
        // Transport errors while brokers go down and come back are the client's to retry.
        let Some(Ok(msg)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let record = Got {
            topic: msg.topic().to_owned(),
            key: msg.key().map(<[u8]>::to_vec),
            timestamp: msg.timestamp().to_millis(),
            headers: msg
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default(),
            payload: msg.payload().unwrap_or_default().to_vec(),
        };
        got.push(record);
        let seen = payloads(&got, topic);
        if wanted.iter().all(|w| seen.contains(w)) {
            return got;
        }
    }
    panic!("not all of {wanted:?} on {topic} within a minute; read {got:?}");
}

fn payloads<'a>(got: &'a [Got], topic: &str) -> Vec<&'a str> {
    got.iter()
        .filter(|g| g.topic == topic)
        .map(|g| std::str::from_utf8(&g.payload).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_kafka_once_with_key_timestamp_and_headers() {
    let cluster = MockCluster::<DefaultProducerContext>::new(3).unwrap();
    cluster.create_topic(TOPIC, 3, 3).unwrap();
    cluster.create_topic(ERRORS, 1, 3).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let (addr, sink) = start(&brokers, dir.path()).await;

    let mut batch = Batch {
        id: [1; 16],
        events: (0..4).map(event).collect(),
        errors: Vec::new(),
    };
    batch.events[2].dt_ms = 1_577_836_800_000;
    batch.errors.push(BatchError {
        stream: Some("sluice.test.event".into()),
        schema_uri: Some("/sluice/test/event/1.0.0".into()),
        error_type: "invalid".into(),
        message: "'/n' must be integer".into(),
        raw_event: r#"{"n":"x"}"#.into(),
        received_ms: 1_795_780_800_000,
        request_id: None,
    });
    assert_eq!(send(addr, &batch).await, vec![EventAck::Accepted; 4]);
    assert_eq!(sink.in_flight_bytes(), 0);

    let consumer = consumer(&brokers);
    let got = read_until(
        &consumer,
        TOPIC,
        &[r#"{"n":0}"#, r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#],
    );
    let mut events = payloads(&got, TOPIC);
    events.sort();
    assert_eq!(
        events,
        [r#"{"n":0}"#, r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]
    );
    let one = got.iter().find(|g| g.payload == br#"{"n":1}"#).unwrap();
    assert_eq!(one.key.as_deref(), Some(&b"key-1"[..]));
    assert_eq!(one.timestamp, Some(1_795_780_800_001));
    assert!(
        one.headers.contains(&("event_id".into(), vec![1; 16])),
        "{:?}",
        one.headers
    );
    assert!(
        one.headers
            .contains(&("schema_uri".into(), b"/sluice/test/event/1.0.0".to_vec()))
    );
    assert!(
        one.headers
            .contains(&("stream".into(), b"sluice.test.event".to_vec()))
    );
    let two = got.iter().find(|g| g.payload == br#"{"n":2}"#).unwrap();
    assert_eq!(
        two.timestamp,
        Some(1_577_836_800_000),
        "the timestamp is meta.dt"
    );

    // The error report became an error event on the error stream.
    let errors = read_until_topic(&consumer, &got, ERRORS);
    let error: serde_json::Value = serde_json::from_str(&errors).unwrap();
    assert_eq!(error["$schema"], "/error/2.1.0");
    assert_eq!(error["raw_event"], r#"{"n":"x"}"#);
    assert_eq!(error["errored_stream_name"], "sluice.test.event");

    // Sent again: every event is a duplicate and Kafka gets nothing new. A fresh event
    // after it marks where the reading can stop.
    assert_eq!(send(addr, &batch).await, vec![EventAck::Duplicate; 4]);
    let marker = Batch {
        id: [2; 16],
        events: vec![event(10)],
        errors: Vec::new(),
    };
    assert_eq!(send(addr, &marker).await, vec![EventAck::Accepted]);
    let got = read_until(&consumer, TOPIC, &[r#"{"n":10}"#]);
    assert_eq!(payloads(&got, TOPIC), [r#"{"n":10}"#]);
    // Kafka holds exactly what was accepted: the resent events and error report are not there twice.
    assert_eq!(held(&consumer, TOPIC, 3), 5);
    assert_eq!(held(&consumer, ERRORS, 1), 1);

    // A restart keeps the dedupe window: the journal remembers what Kafka took.
    drop(sink);
    let (addr, _sink) = start(&brokers, dir.path()).await;
    assert_eq!(send(addr, &batch).await, vec![EventAck::Duplicate; 4]);

    // With every broker down, a batch is not acknowledged...
    for broker in 1..=3 {
        cluster.broker_down(broker).unwrap();
    }
    let late = Batch {
        id: [3; 16],
        events: (20..23).map(event).collect(),
        errors: Vec::new(),
    };
    let mut pending = tokio::spawn(async move { send(addr, &late).await });
    wait_for_readyz(addr, 503).await;
    let early = tokio::time::timeout(Duration::from_secs(3), &mut pending).await;
    assert!(
        early.is_err(),
        "a batch was acknowledged while Kafka was down: {early:?}"
    );
    // ...and once the brokers are back it is, and Kafka holds it once.
    for broker in 1..=3 {
        cluster.broker_up(broker).unwrap();
    }
    assert_eq!(pending.await.unwrap(), vec![EventAck::Accepted; 3]);
    wait_for_readyz(addr, 200).await;
    let got = read_until(
        &consumer,
        TOPIC,
        &[r#"{"n":20}"#, r#"{"n":21}"#, r#"{"n":22}"#],
    );
    let mut late: Vec<_> = payloads(&got, TOPIC);
    late.sort();
    assert_eq!(late, [r#"{"n":20}"#, r#"{"n":21}"#, r#"{"n":22}"#]);
    assert_eq!(held(&consumer, TOPIC, 3), 8);
}

/// Records `topic` holds over its `partitions`, from the brokers' watermarks.
fn held(consumer: &BaseConsumer, topic: &str, partitions: i32) -> i64 {
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            high - low
        })
        .sum()
}

/// Polls `/readyz` until it answers `status` (a minute at most).
async fn wait_for_readyz(addr: SocketAddr, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = get(addr, "/readyz").await.status;
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {got}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The payload of the first record of `topic` among `got`, or read on until one comes.
fn read_until_topic(consumer: &BaseConsumer, got: &[Got], topic: &str) -> String {
    if let Some(g) = got.iter().find(|g| g.topic == topic) {
        return String::from_utf8(g.payload.clone()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(200))
            && msg.topic() == topic
        {
            return String::from_utf8(msg.payload().unwrap_or_default().to_vec()).unwrap();
        }
    }
    panic!("nothing on {topic} within a minute");
}
