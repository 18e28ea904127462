//! What each fuzz target checks, in one file shared by the fuzz targets
//! (`fuzz/fuzz_targets/`) and the regression test that replays their
//! findings on stable Rust (`tests/tests/fuzz_regressions.rs`).
//!
//! Every function takes arbitrary bytes and panics only when an invariant
//! breaks: a panic inside the core, or an answer that contradicts itself.

#![allow(dead_code)]

use sluice_shared::{
    Batch, BatchAck, EventIds, Intake, IntakeOptions, RequestMeta, SchemaRegistry,
    SchemaRepository, StreamConfig, Timestamp, Verdict, WireLimits,
};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The project's `schemas/` folder (both the fuzz crate and the tests crate sit beside it).
fn schemas_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas"))
}

/// Batch and ack frames: decoding never panics, and what decodes re-encodes to
/// something that decodes to the same value, compressed or not.
pub fn batch_decode(data: &[u8]) {
    let limits = WireLimits {
        max_frame_bytes: 1 << 20,
        max_events: 1000,
        max_event_bytes: 64 * 1024,
    };
    if let Ok(batch) = Batch::decode(data, &limits) {
        for compress in [false, true] {
            let again = Batch::decode(&batch.encode(compress), &WireLimits::default());
            assert_eq!(again.as_ref(), Ok(&batch), "batch round trip");
        }
        let _ = BatchAck::decode_for(data, &batch, &limits);
    }
    if let Ok(ack) = BatchAck::decode(data, &limits) {
        let again = BatchAck::decode(&ack.encode(), &WireLimits::default());
        assert_eq!(again.as_ref(), Ok(&ack), "ack round trip");
    }
}

fn intake() -> &'static Intake {
    static INTAKE: OnceLock<Intake> = OnceLock::new();
    INTAKE.get_or_init(|| {
        let dir = schemas_dir();
        let (repo, errors) = sluice_shared::fs::load_dir(dir).unwrap_or_else(|e| {
            panic!("cannot read {}: {e}", dir.display());
        });
        assert!(errors.is_empty(), "{errors:?}");
        let (registry, errors) = SchemaRegistry::load(&[repo]);
        assert!(errors.is_empty(), "{errors:?}");
        let text = std::fs::read_to_string(dir.join("streams.yaml")).unwrap_or_default();
        let streams = StreamConfig::parse(&text).unwrap_or_else(|e| panic!("{e:?}"));
        Intake::new(
            Arc::new(registry),
            Arc::new(streams),
            IntakeOptions {
                limits: Default::default(),
                client_hash_seed: 1,
            },
        )
    })
}

/// The intake body: the first line is the query string (`stream=…&schema_uri=…`),
/// the rest the body. The pipeline never panics; every event of the body gets
/// exactly one verdict; accepted events carry JSON objects that survive the wire.
pub fn intake_body(data: &[u8]) {
    let (query, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let mut req = RequestMeta {
        headers: vec![("user-agent".into(), "fuzz".into())],
        received: Timestamp::from_unix_millis(1_764_000_000_000),
        client_ip: Some("192.0.2.1".into()),
        ..Default::default()
    };
    for (k, v) in form_urlencoded::parse(query) {
        match &*k {
            "stream" => req.stream = Some(v.into_owned()),
            "schema_uri" => req.schema_uri = Some(v.into_owned()),
            _ => {}
        }
    }
    let Ok(outcomes) = intake().process(&req, body, &mut EventIds::with_seed(3)) else {
        return;
    };
    assert!(
        !outcomes.is_empty(),
        "a body that parses has at least one event"
    );
    let mut events = Vec::new();
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(o.index, i, "verdicts in body order, one per event");
        match &o.verdict {
            Verdict::Accepted => {
                let Some(event) = &o.event else {
                    panic!("event {i} accepted without its enriched form");
                };
                let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&event.json);
                assert!(
                    matches!(parsed, Ok(serde_json::Value::Object(_))),
                    "accepted event {i} is not a JSON object"
                );
                events.push(event.clone());
            }
            Verdict::SampledOut => {}
            Verdict::Rejected(r) => assert!(!r.message.is_empty(), "rejection without reason"),
        }
    }
    let batch = Batch {
        id: [7; 16],
        events,
        errors: Vec::new(),
    };
    let again = Batch::decode(&batch.encode(true), &WireLimits::default());
    assert_eq!(
        again.as_ref(),
        Ok(&batch),
        "accepted events survive the wire"
    );
}

/// Stream config text: parsing never panics, and a config that parses answers
/// lookups and the `/v1/streams` rendering without panicking.
pub fn stream_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(config) = StreamConfig::parse(&text) else {
        return;
    };
    let names: Vec<String> = config.entries().map(|e| e.key.clone()).collect();
    for name in &names {
        let _ = config.get(name);
        let _ = config.get(&format!("{name}.x"));
    }
    let _ = config.to_api(None, &[]);
    let _ = config.to_api(None, &[("destination_event_service", "eventgate")]);
}

fn base_repository_files() -> &'static Vec<(String, Vec<u8>)> {
    static FILES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        sluice_shared::fs::read_tree(schemas_dir())
            .unwrap_or_default()
            .into_iter()
            // The fragments only (what `$ref`s reach): compiling every schema of the
            // repository on each input would slow fuzzing tenfold for no new paths.
            .filter(|(p, _)| p.starts_with("jsonschema/fragment/"))
            .collect()
    })
}

/// A schema file: the first byte picks YAML or JSON, the rest is the file, loaded
/// as `fuzz/event/1.0.0` (and its `current`) beside the fragments of the project's
/// own repository so that `$ref`s to them resolve. Loading and compiling never panic or
/// fetch; what compiles validates its own examples without panicking.
pub fn schema_repo(data: &[u8]) {
    let Some((&selector, doc)) = data.split_first() else {
        return;
    };
    let ext = if selector & 1 == 0 { "yaml" } else { "json" };
    let mut files: Vec<(String, Vec<u8>)> = base_repository_files().clone();
    files.push((format!("jsonschema/fuzz/event/1.0.0.{ext}"), doc.to_vec()));
    files.push((format!("jsonschema/fuzz/event/current.{ext}"), doc.to_vec()));
    let (repo, read_errors) = SchemaRepository::from_files("fuzz", files);
    let (registry, _report) = sluice_shared::check_examples(&[repo], &read_errors);
    if let Ok(schema) = registry.resolve("/fuzz/event/1.0.0") {
        let _ = schema.validate(&serde_json::json!({"$schema": "/fuzz/event/1.0.0"}));
    }
}
