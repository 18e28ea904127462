//! Batch ingest over real HTTP on loopback, into a real embedded log.

mod common;

use common::{TOKEN, event, get, post, request_with, serve_http};
use sluice_aggregator::{BatchService, CommitLoop, CommitOptions, Live, LogSink, Metrics};
use sluice_host::token::Token;
use sluice_log::{Log, LogOptions};
use sluice_shared::{Batch, BatchAck, EventAck, StreamConfig, WireLimits};
use std::net::SocketAddr;
use std::path::Path;

const STREAMS: &str = r#"
streams:
  sluice.test.event:
    schema_title: sluice/test/event
    rate_limit: {events_per_second: 1, burst: 5}
"#;

async fn start(dir: &Path, limits: WireLimits) -> SocketAddr {
    start_with_sink(dir, limits).await.0
}

async fn start_with_sink(dir: &Path, limits: WireLimits) -> (SocketAddr, CommitLoop) {
    let log = Log::open(dir, LogOptions::default()).unwrap();
    let streams = Live::new(StreamConfig::parse(STREAMS).unwrap());
    let sink = CommitLoop::start(
        Box::new(LogSink::new(log, None)),
        streams.clone(),
        CommitOptions::default(),
        Metrics::new(),
    );
    let app = BatchService::new(sink.clone(), Token::new(TOKEN), limits, streams).router();
    let addr = serve_http(app).await;
    (addr, sink)
}

#[tokio::test]
async fn batches_are_acknowledged_once_durable_and_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, sink) = start_with_sink(dir.path(), WireLimits::default()).await;
    let batch = Batch {
        id: [1; 16],
        events: (0..4).map(event).collect(),
        errors: Vec::new(),
    };
    let reply = post(addr, Some(TOKEN), &batch.encode(true)).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let ack = BatchAck::decode_for(&reply.body, &batch, &WireLimits::default()).unwrap();
    assert_eq!(ack.verdicts, vec![EventAck::Accepted; 4]);

    // The same batch again: every event is a duplicate, and nothing is written twice.
    let reply = post(addr, Some(TOKEN), &batch.encode(false)).await;
    let ack = BatchAck::decode_for(&reply.body, &batch, &WireLimits::default()).unwrap();
    assert_eq!(ack.verdicts, vec![EventAck::Duplicate; 4]);

    // Past the stream's burst of 5, events are rate-limited with a retry-after.
    let more = Batch {
        id: [2; 16],
        events: (10..13).map(event).collect(),
        errors: Vec::new(),
    };
    let reply = post(addr, Some(TOKEN), &more.encode(false)).await;
    let ack = BatchAck::decode_for(&reply.body, &more, &WireLimits::default()).unwrap();
    assert_eq!(ack.verdicts[0], EventAck::Accepted);
    assert!(
        matches!(ack.verdicts[1], EventAck::RateLimited { retry_after_ms } if retry_after_ms > 0 && retry_after_ms <= 1000),
        "{:?}",
        ack.verdicts
    );

    // The metrics count every outcome per stream, and the sink is ready.
    let metrics = String::from_utf8(get(addr, "/metrics").await.body).unwrap();
    for (outcome, n) in [
        ("received", 11),
        ("accepted", 5),
        ("duplicate", 4),
        ("rate_limited", 2),
    ] {
        let line = format!(
            "sluice_aggregator_events_total{{stream=\"sluice.test.event\",outcome=\"{outcome}\"}} {n}"
        );
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("sluice_aggregator_batch_ack_seconds_count 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_aggregator_dedupe_ids 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_aggregator_sink_queue_depth 0"),
        "{metrics}"
    );
    assert_eq!(get(addr, "/healthz").await.status, 200);
    // Every answered batch gave its bytes back to the in-flight budget.
    assert_eq!(sink.in_flight_bytes(), 0);
    let config: serde_json::Value = serde_json::from_slice(&get(addr, "/v1/streams?streams=sluice.test.event|nope&constraints=schema_title%3Dsluice/test/event").await.body).unwrap();
    assert_eq!(
        config["streams"]["sluice.test.event"]["schema_title"],
        "sluice/test/event"
    );
    assert_eq!(config["streams"].as_object().unwrap().len(), 1);
    assert_eq!(get(addr, "/v1/streams?constraints=oops").await.status, 400);
    assert_eq!(get(addr, "/readyz").await.status, 200);

    // What was acknowledged is in the log, once, with its key and headers.
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let records = log.read("local.sluice.test.event", 0, 100).unwrap();
    let values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.value.clone()).unwrap())
        .collect();
    assert_eq!(
        values,
        [
            r#"{"n":0}"#,
            r#"{"n":1}"#,
            r#"{"n":2}"#,
            r#"{"n":3}"#,
            r#"{"n":10}"#
        ]
    );
    assert_eq!(records[1].key.as_deref(), Some(&b"key-1"[..]));
    assert_eq!(records[1].timestamp_ms, 1_795_780_800_001);
    assert!(
        records[1]
            .headers
            .contains(&("event_id".to_owned(), vec![1; 16]))
    );
    assert!(records[1].headers.contains(&(
        "schema_uri".to_owned(),
        b"/sluice/test/event/1.0.0".to_vec()
    )));
}

#[tokio::test]
async fn wrong_tokens_bad_frames_and_oversized_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let limits = WireLimits {
        max_frame_bytes: 4096,
        ..WireLimits::default()
    };
    let addr = start(dir.path(), limits).await;
    let frame = Batch {
        id: [3; 16],
        events: vec![event(1)],
        errors: Vec::new(),
    }
    .encode(false);
    for token in [None, Some("wrong-secret-token"), Some("edge-secret-toke")] {
        let reply = post(addr, token, &frame).await;
        assert_eq!(reply.status, 401);
        assert!(!String::from_utf8_lossy(&reply.body).contains(TOKEN));
    }
    let reply = post(addr, Some(TOKEN), b"\x09garbage").await;
    assert_eq!(reply.status, 400);
    assert!(String::from_utf8_lossy(&reply.body).contains("format version 9 is not supported"));
    let reply = post(addr, Some(TOKEN), &vec![1u8; 8192]).await;
    assert_eq!(reply.status, 413, "{}", reply.headers);
    // The service is still up and takes good batches.
    assert_eq!(post(addr, Some(TOKEN), &frame).await.status, 200);
}

#[tokio::test]
async fn the_schema_service_serves_the_bundle_and_repository_files() {
    use sluice_aggregator::schemas::{SchemaService, bundle_from_disk};
    use sluice_shared::Bundle;
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let streams = std::fs::read_to_string(schemas.join("streams.yaml")).unwrap();
    let bundle = bundle_from_disk(&[schemas], streams).unwrap();
    let app = SchemaService::new(&bundle).router();
    let addr = serve_http(app).await;

    let reply = get(addr, "/v1/bundle").await;
    assert_eq!(reply.status, 200);
    let etag = reply
        .headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("etag:")
                .then(|| l[5..].trim().to_owned())
        })
        .expect("an ETag");
    let served: Bundle = serde_json::from_slice(&reply.body).unwrap();
    let (registry, streams) = served.load().unwrap();
    assert!(registry.resolve("/sluice/test/event/1.0.0").is_ok());
    assert!(streams.get("sluice.test.event").is_some());

    let unchanged = request_with(addr, "GET", "/v1/bundle", &[("If-None-Match", etag)], b"").await;
    assert_eq!(unchanged.status, 304, "{}", unchanged.headers);

    let json = get(
        addr,
        "/repositories/schemas/jsonschema/sluice/test/event/1.0.0.json",
    )
    .await;
    assert_eq!(json.status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(doc["$id"], "/sluice/test/event/1.0.0");
    let yaml = get(
        addr,
        "/repositories/schemas/jsonschema/sluice/test/event/1.0.0",
    )
    .await;
    assert_eq!(yaml.status, 200);
    assert!(String::from_utf8_lossy(&yaml.body).contains("title: sluice/test/event"));
    for path in [
        "/repositories/schemas/jsonschema/sluice/test/event/9.0.0.json",
        "/repositories/nope/jsonschema/sluice/test/event/1.0.0",
        "/repositories/schemas/../../../etc/passwd",
        "/repositories/schemas/%2e%2e/%2e%2e/etc/passwd",
    ] {
        assert_eq!(get(addr, path).await.status, 404, "{path}");
    }
}
