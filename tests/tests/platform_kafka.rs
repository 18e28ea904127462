//! The whole path to Kafka across real processes: events posted to a native
//! edge go over QUIC to an aggregator whose sink is a tansu broker process;
//! a consumer reads every event back with the stream's topic, the partition
//! key the stream config names, `meta.dt` as the timestamp, and the
//! `schema_uri`, `event_id` and `stream` headers.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use serde_json::json;
use sluice_tests::{Edge, Scratch, Tansu, binary, http_call, post_events_created, terminate};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TOKEN: &str = "platform-kafka-token";
const TOPIC: &str = "local.kafka.e2e";
const REQUESTS: usize = 4;
const PER_REQUEST: usize = 50;

#[test]
fn events_from_the_edge_reach_kafka_with_topic_key_and_headers() {
    let tansu = Tansu::start();
    tansu.create_topic(TOPIC, 3);
    let scratch = Scratch::with_streams(
        "defaults:\n  topic_prefixes: [local.]\nstreams:\n  kafka.e2e:\n    schema_title: sluice/test/event\n    partition_key: count\n    canary_events_enabled: true\n",
    );
    let mut aggregator = scratch.aggregator(
        TOKEN,
        &[("SLUICE_AGGREGATOR_KAFKA__BROKERS", tansu.brokers.as_ref())],
    );
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(&aggregator, &[]);
    for r in 0..REQUESTS {
        let events: Vec<_> = (0..PER_REQUEST)
            .map(|i| {
                let n = r * PER_REQUEST + i;
                json!({
                    "$schema": "/sluice/test/event/1.0.0",
                    "meta": {"stream": "kafka.e2e", "dt": format!("2026-11-27T10:00:00.{:03}Z", n % 1000)},
                    "dt": "2026-11-27T09:59:59.000Z",
                    "count": n,
                })
            })
            .collect();
        post_events_created(edge, &events);
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &tansu.brokers)
        .set("group.id", "sluice-platform-e2e")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let total = REQUESTS * PER_REQUEST;
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < total && Instant::now() < deadline {
        let Some(Ok(msg)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let value: serde_json::Value =
            serde_json::from_slice(msg.payload().unwrap_or_default()).unwrap();
        let n = value["count"].as_u64().unwrap();
        *seen.entry(n).or_default() += 1;
        assert_eq!(msg.topic(), TOPIC);
        assert_eq!(msg.key(), Some(n.to_string().as_bytes()));
        // 2026-11-27T10:00:00Z is 1795773600000 ms.
        assert_eq!(
            msg.timestamp().to_millis(),
            Some(1_795_773_600_000 + (n % 1000) as i64)
        );
        let headers = msg.headers().expect("headers");
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(<[u8]>::to_vec)
        };
        assert_eq!(
            header("schema_uri"),
            Some(b"/sluice/test/event/1.0.0".to_vec())
        );
        assert_eq!(header("stream"), Some(b"kafka.e2e".to_vec()));
        let id = uuid::Uuid::parse_str(value["meta"]["id"].as_str().unwrap()).unwrap();
        assert_eq!(header("event_id"), Some(id.as_bytes().to_vec()));
    }
    assert_eq!(seen.len(), total, "read {} of {total} events", seen.len());
    assert!(seen.values().all(|&c| c == 1), "an event was read twice");

    // `sluice tail --brokers` reads the same events back from Kafka, one JSON line each.
    let out = std::process::Command::new(binary("sluice"))
        .args(["tail", "kafka.e2e", "--from-beginning", "--no-follow"])
        .args(["--brokers", &tansu.brokers])
        .arg("--streams")
        .arg(&scratch.streams)
        .output()
        .expect("sluice tail runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut counts: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("a JSON line")["count"]
                .as_u64()
                .expect("a count")
        })
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, (0..total as u64).collect::<Vec<_>>());

    // The console's live tail reads the stream from Kafka too.
    let seen = console_tail_shows(aggregator.http, edge, "kafka.e2e");
    assert_eq!(seen["meta"]["stream"], "kafka.e2e");
    assert_eq!(seen["message"], "for the console");

    // A canary event, and the console's page of the stream finds it in Kafka.
    post_events_created(
        edge,
        &[json!({
            "$schema": "/sluice/test/event/1.0.0",
            "meta": {"stream": "kafka.e2e", "domain": "canary"},
            "dt": "2026-11-27T09:59:59.000Z",
            "count": 100_000,
        })],
    );
    let page = http_call(
        aggregator.http,
        "GET",
        "/console/stream?name=kafka.e2e",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(page.status, 200);
    let page = String::from_utf8_lossy(&page.body);
    assert!(
        page.contains("canary events enabled; the last one arrived 20"),
        "{page}"
    );
    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());
}

/// Opens the console's tail of `stream` (server-sent events), posts an event
/// to the edge, and returns it as the tail shows it.
fn console_tail_shows(
    aggregator: std::net::SocketAddr,
    edge: std::net::SocketAddr,
    stream: &str,
) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut tail = std::net::TcpStream::connect(aggregator).unwrap();
    write!(
        tail,
        "GET /console/api/tail?stream={stream} HTTP/1.1\r\nHost: {aggregator}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    tail.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 16 << 10];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut posted = false;
    while Instant::now() < deadline {
        if let Ok(n) = tail.read(&mut buf) {
            assert!(n > 0, "the tail closed: {text}");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        if !posted && text.contains(r#"{"kind":"ready"}"#) {
            post_events_created(
                edge,
                &[json!({
                    "$schema": "/sluice/test/event/1.0.0",
                    "meta": {"stream": stream},
                    "dt": "2026-11-27T09:59:59.000Z",
                    "message": "for the console",
                })],
            );
            posted = true;
        }
        let found = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|m| m["kind"] == "event");
        if let Some(m) = found {
            return m["event"].clone();
        }
    }
    panic!("the console's tail showed no event within 60 s: {text}");
}
