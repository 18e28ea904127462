//! The intake pipeline through its public surface: bodies in, verdicts and enriched events out.

use serde_json::{Value, json};
use sluice_shared::{
    BodyError, BodyLimits, EventIds, EventOutcome, Intake, IntakeOptions, RejectionKind,
    RequestMeta, SchemaRegistry, StreamConfig, Timestamp, Verdict, fs,
};
use std::path::Path;
use std::sync::Arc;

const STREAMS: &str = r#"
defaults:
  topic_prefixes: [local., remote.]
streams:
  sluice.keywords:
    schema_title: sluice/keywords
    partition_key: performer.session_id
    rate_limit: [{events_per_second: 10}, {events_per_second: 1, key: client}]
    producers:
      eventgate:
        enrich_fields_from_http_headers:
          http.request_headers.user-agent: user-agent
          meta.request_id: x-request-id
          http.client_ip: x-client-ip
  sluice.no_ip:
    schema_title: sluice/keywords
  sluice.sampled:
    schema_title: sluice/keywords
    sample: {unit: session, rate: 0.5}
  sluice.off:
    schema_title: sluice/keywords
    enabled: false
  sluice.weekends:
    schema_title: sluice/keywords
    windows: [{days: [sat, sun]}]
  /^sluice\.pattern\..+$/:
    schema_title: sluice/keywords
"#;

/// Friday 2026-11-27, 12:00:00.250 UTC.
const NOW_MS: i64 = 1_795_780_800_250;

fn intake_with(limits: BodyLimits) -> Intake {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo");
    let (repo, errors) = fs::load_dir(&dir).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let (registry, errors) = SchemaRegistry::load(&[repo]);
    assert!(errors.is_empty(), "{errors:?}");
    let streams = StreamConfig::parse(STREAMS).unwrap();
    Intake::new(
        Arc::new(registry),
        Arc::new(streams),
        IntakeOptions {
            limits,
            client_hash_seed: 7,
        },
    )
}

fn intake() -> Intake {
    intake_with(BodyLimits::default())
}

fn request() -> RequestMeta {
    RequestMeta {
        headers: vec![
            ("user-agent".into(), "Mozilla/5.0 (Test)".into()),
            ("x-request-id".into(), "req-1".into()),
        ],
        client_ip: Some("192.0.2.7".into()),
        received: Timestamp::from_unix_millis(NOW_MS),
        ..Default::default()
    }
}

fn run(intake: &Intake, req: &RequestMeta, body: &str) -> Vec<EventOutcome> {
    intake
        .process(req, body.as_bytes(), &mut EventIds::with_seed(1))
        .unwrap()
}

fn one(body: Value) -> EventOutcome {
    run(&intake(), &request(), &body.to_string()).remove(0)
}

fn good() -> Value {
    json!({"$schema": "/sluice/keywords/1.0.0", "meta": {"stream": "sluice.keywords"}, "name": "ok", "performer": {"session_id": "abc"}})
}

fn rejection(o: &EventOutcome) -> (RejectionKind, String, Vec<(String, String, String)>) {
    match &o.verdict {
        Verdict::Rejected(r) => (
            r.kind,
            r.message.clone(),
            r.violations
                .iter()
                .flat_map(|v| v.0.iter())
                .map(|v| {
                    (
                        v.keyword.clone(),
                        v.instance_path.clone(),
                        v.schema_path.clone(),
                    )
                })
                .collect(),
        ),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn accepts_and_enriches_a_valid_event() {
    let out = one(good());
    assert_eq!(out.verdict, Verdict::Accepted);
    let event = out.event.unwrap();
    assert_eq!(&*event.stream, "sluice.keywords");
    assert_eq!(&*event.topic, "local.sluice.keywords");
    assert_eq!(event.partition_key.as_deref(), Some("abc"));
    assert_eq!(&*event.schema_uri, "/sluice/keywords/1.0.0");
    assert_eq!(event.received_ms, NOW_MS);
    assert_eq!(
        event.dt_ms, NOW_MS,
        "meta.dt is filled with the receive time"
    );
    assert!(
        event.rate_key.as_deref().is_some_and(|k| k.len() == 16),
        "{:?}",
        event.rate_key
    );
    let v: Value = serde_json::from_slice(&event.json).unwrap();
    let id = uuid::Uuid::parse_str(v["meta"]["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 4);
    assert_eq!(*id.as_bytes(), event.id);
    assert_eq!(v["meta"]["dt"], "2026-11-27T12:00:00.250Z");
    assert_eq!(v["meta"]["request_id"], "req-1");
    assert_eq!(
        v["http"]["request_headers"]["user-agent"],
        "Mozilla/5.0 (Test)"
    );
    assert_eq!(v["http"]["client_ip"], "192.0.2.7");
    assert_eq!(v["name"], "ok");
}

#[test]
fn events_of_a_configured_stream_share_its_name_topic_and_schema() {
    let body = format!("[{},{}]", good(), good());
    let out = run(&intake(), &request(), &body);
    let (a, b) = (
        out[0].event.as_ref().unwrap(),
        out[1].event.as_ref().unwrap(),
    );
    assert!(std::sync::Arc::ptr_eq(&a.stream, &b.stream));
    assert!(std::sync::Arc::ptr_eq(&a.topic, &b.topic));
    assert!(std::sync::Arc::ptr_eq(&a.schema_uri, &b.schema_uri));
    assert!(std::sync::Arc::ptr_eq(
        &a.stream,
        out[1].stream.as_ref().unwrap()
    ));
    assert_eq!(&*a.schema_uri, "/sluice/keywords/1.0.0");
}

#[test]
fn each_body_gets_its_own_receive_time() {
    let intake = intake();
    let body = good().to_string();
    let dt_at = |millis: i64| {
        let req = RequestMeta {
            received: Timestamp::from_unix_millis(millis),
            ..request()
        };
        let event = run(&intake, &req, &body).remove(0).event.unwrap();
        let v: Value = serde_json::from_slice(&event.json).unwrap();
        assert_eq!(event.dt_ms, millis);
        v["meta"]["dt"].as_str().unwrap().to_owned()
    };
    // The same millisecond twice, the next one, a later second, and back again.
    assert_eq!(dt_at(NOW_MS), "2026-11-27T12:00:00.250Z");
    assert_eq!(dt_at(NOW_MS), "2026-11-27T12:00:00.250Z");
    assert_eq!(dt_at(NOW_MS + 1), "2026-11-27T12:00:00.251Z");
    assert_eq!(dt_at(NOW_MS + 61_000), "2026-11-27T12:01:01.250Z");
    assert_eq!(dt_at(NOW_MS), "2026-11-27T12:00:00.250Z");
}

#[test]
fn keeps_what_the_client_set_and_fills_only_what_the_schema_has() {
    let mut e = good();
    e["meta"]["id"] = json!("not-a-uuid");
    e["meta"]["dt"] = json!("2020-01-01T00:00:00Z");
    e["meta"]["stream"] = json!("sluice.no_ip");
    let out = one(e);
    let event = out.event.unwrap();
    let v: Value = serde_json::from_slice(&event.json).unwrap();
    assert_eq!(v["meta"]["id"], "not-a-uuid");
    assert_eq!(v["meta"]["dt"], "2020-01-01T00:00:00Z");
    // The record timestamp follows the sender's meta.dt; dedupe and the window use the receive time.
    assert_eq!(event.dt_ms, 1_577_836_800_000);
    assert_eq!(event.received_ms, NOW_MS);
    // The stream has no header enrichment: no client address, no user agent.
    assert!(v.get("http").is_none(), "{v}");
    // A non-UUID meta.id maps to a stable UUIDv5, so retries dedupe.
    let again = one(
        json!({"$schema": "/sluice/keywords/1.0.0", "meta": {"stream": "sluice.no_ip", "id": "not-a-uuid", "dt": "2020-01-01T00:00:00Z"}, "name": "ok"}),
    );
    assert_eq!(again.event.unwrap().id, event.id);
}

#[test]
fn header_fields_go_into_objects_the_event_has_and_keep_what_it_set() {
    let mut e = good();
    e["http"] = json!({"client_ip": "203.0.113.1"});
    e["meta"]["request_id"] = json!("client-request");
    let event = one(e).event.expect("accepted");
    let v: Value = serde_json::from_slice(&event.json).unwrap();
    assert_eq!(v["http"]["client_ip"], "203.0.113.1");
    assert_eq!(
        v["http"]["request_headers"]["user-agent"],
        "Mozilla/5.0 (Test)"
    );
    assert_eq!(v["meta"]["request_id"], "client-request");
    // A partition key the event lacks is no key, not an error.
    let mut e = good();
    e.as_object_mut().unwrap().remove("performer");
    let event = one(e).event.expect("accepted");
    assert_eq!(event.partition_key, None);
    let v: Value = serde_json::from_slice(&event.json).unwrap();
    assert_eq!(v["http"]["client_ip"], "192.0.2.7");
}

#[test]
fn stream_and_schema_may_come_from_query_parameters() {
    let req = RequestMeta {
        stream: Some("sluice.pattern.browser".into()),
        schema_uri: Some("/sluice/keywords/latest".into()),
        ..request()
    };
    let out = run(&intake(), &req, r#"{"name": "beacon"}"#).remove(0);
    let event = out.event.expect("accepted");
    assert_eq!(&*event.stream, "sluice.pattern.browser");
    assert_eq!(&*event.topic, "local.sluice.pattern.browser");
    assert_eq!(&*event.schema_uri, "/sluice/keywords/latest");
    let v: Value = serde_json::from_slice(&event.json).unwrap();
    assert_eq!(v["$schema"], "/sluice/keywords/latest");
    assert_eq!(v["meta"]["stream"], "sluice.pattern.browser");
}

#[test]
fn each_keyword_family_fails_with_its_paths() {
    let cases: Vec<(Value, &str, &str, &str)> = vec![
        (json!({"name": 5}), "type", "/name", "/properties/name/type"),
        (
            json!({"name": null}),
            "type",
            "/name",
            "/properties/name/type",
        ),
        (
            json!({"kind": "scroll"}),
            "enum",
            "/kind",
            "/properties/kind/enum",
        ),
        (
            json!({"name": "UPPER"}),
            "pattern",
            "/name",
            "/properties/name/pattern",
        ),
        (
            json!({"name": "abcdefghijk"}),
            "maxLength",
            "/name",
            "/properties/name/maxLength",
        ),
        (
            json!({"count": -1}),
            "minimum",
            "/count",
            "/properties/count/minimum",
        ),
        (
            json!({"count": 1.5}),
            "type",
            "/count",
            "/properties/count/type",
        ),
        (
            json!({"extra": true}),
            "additionalProperties",
            "",
            "/additionalProperties",
        ),
        (
            json!({"meta": {"dt": "yesterday"}}),
            "format",
            "/meta/dt",
            "/properties/meta/properties/dt/format",
        ),
        (
            json!({"http": {"request_headers": {"a": 1}}}),
            "type",
            "/http/request_headers/a",
            "/properties/http/properties/request_headers/additionalProperties/type",
        ),
    ];
    for (patch, keyword, instance, schema) in cases {
        let mut e = good();
        sluice_shared::merge(&mut e, patch.clone());
        let (kind, message, violations) = rejection(&one(e));
        assert_eq!(kind, RejectionKind::Invalid, "{patch}");
        assert!(
            violations
                .iter()
                .any(|(k, i, s)| k == keyword && i == instance && s == schema),
            "{patch}: {violations:?}"
        );
        assert!(message.contains(&format!("data{instance}")), "{message}");
    }
    let mut missing = good();
    missing.as_object_mut().unwrap().remove("name");
    let (_, _, violations) = rejection(&one(missing));
    assert_eq!(
        violations,
        vec![("required".into(), "".into(), "/required".into())]
    );
}

#[test]
fn refuses_streams_and_schemas_it_must_not_take() {
    let cases: Vec<(Value, RejectionKind, &str)> = vec![
        (
            json!({"meta": {"stream": "nope"}}),
            RejectionKind::UnknownStream,
            "stream `nope` is not configured",
        ),
        (
            json!({"meta": {"stream": "sluice.off"}}),
            RejectionKind::StreamDisabled,
            "disabled",
        ),
        (
            json!({"meta": {"stream": "sluice.weekends"}}),
            RejectionKind::StreamClosed,
            "producing windows",
        ),
        (
            json!({"$schema": "/sluice/other/1.0.0"}),
            RejectionKind::SchemaNotAllowed,
            "takes schema title `sluice/keywords`",
        ),
        (
            json!({"$schema": "/sluice/keywords/9.0.0"}),
            RejectionKind::UnknownSchema,
            "no version 9.0.0",
        ),
        (
            json!({"$schema": "/nothing/here/1.0.0"}),
            RejectionKind::UnknownSchema,
            "no schema titled `nothing/here`",
        ),
        (
            json!({"$schema": "http://evil.example/x/1.0.0"}),
            RejectionKind::UnknownSchema,
            "with a scheme are not resolved",
        ),
        (
            json!({"$schema": "file:///etc/passwd"}),
            RejectionKind::UnknownSchema,
            "with a scheme are not resolved",
        ),
        (
            json!({"$schema": "/../../etc/passwd/1.0.0"}),
            RejectionKind::UnknownSchema,
            "`..` segment",
        ),
        (
            json!({"meta": "text"}),
            RejectionKind::Invalid,
            "`meta` must be an object",
        ),
    ];
    for (patch, expected_kind, expected_text) in cases {
        let mut e = good();
        sluice_shared::merge(&mut e, patch.clone());
        let (kind, message, _) = rejection(&one(e));
        assert_eq!(kind, expected_kind, "{patch}: {message}");
        assert!(message.contains(expected_text), "{patch}: {message}");
    }
    let (kind, _, _) = rejection(&one(
        json!({"$schema": "/sluice/keywords/1.0.0", "name": "x"}),
    ));
    assert_eq!(kind, RejectionKind::NoStream);
    let (kind, _, _) = rejection(&one(
        json!({"meta": {"stream": "sluice.keywords"}, "name": "x"}),
    ));
    assert_eq!(kind, RejectionKind::NoSchema);
    let (kind, message, _) = rejection(&one(json!([1])));
    assert_eq!(kind, RejectionKind::NotAnObject, "{message}");
}

#[test]
fn producing_windows_open_and_close_the_stream() {
    let saturday = RequestMeta {
        received: Timestamp::from_unix_millis(NOW_MS + 86_400_000),
        ..request()
    };
    let mut e = good();
    e["meta"]["stream"] = json!("sluice.weekends");
    let out = run(&intake(), &saturday, &e.to_string()).remove(0);
    assert_eq!(out.verdict, Verdict::Accepted);
}

#[test]
fn samples_deterministically_by_unit() {
    let intake = intake();
    let with_session = |session: &str| {
        let mut e = good();
        e["meta"]["stream"] = json!("sluice.sampled");
        e["performer"]["session_id"] = json!(session);
        run(&intake, &request(), &e.to_string()).remove(0).verdict
    };
    // 0x7fffffff / 0xffffffff < 0.5; 0x80000000 / 0xffffffff > 0.5.
    for _ in 0..3 {
        assert_eq!(with_session("7fffffff0000"), Verdict::Accepted);
        assert_eq!(with_session("80000000ffff"), Verdict::SampledOut);
    }
    // Without a unit id, the event id decides, so a retry with the same meta.id decides alike.
    let mut e = good();
    e["meta"]["stream"] = json!("sluice.sampled");
    e.as_object_mut().unwrap().remove("performer");
    let decisions: Vec<Verdict> = (0..40)
        .map(|i| {
            e["meta"]["id"] = json!(format!(
                "{:08x}-0000-4000-8000-000000000000",
                i * 0x0666_6666u32
            ));
            run(&intake, &request(), &e.to_string()).remove(0).verdict
        })
        .collect();
    let kept = decisions
        .iter()
        .filter(|v| **v == Verdict::Accepted)
        .count();
    assert!((14..=26).contains(&kept), "{kept} of 40 kept");
    assert_eq!(decisions[0], Verdict::Accepted);
}

#[test]
fn each_accepted_event_gets_exactly_its_own_json() {
    let named = |name: &str| {
        let mut e = good();
        e["name"] = json!(name);
        e
    };
    let bad = json!({"$schema": "/sluice/keywords/1.0.0", "meta": {"stream": "sluice.keywords"}, "name": 3});
    let bodies = [
        format!("{}", named("a")),
        format!("[{}]", named("a")),
        format!("[{bad}, {}, {bad}]", named("a")),
        format!("[{}, {bad}, {}]", named("a"), named("b")),
        format!("[{}, {}, {}]", named("a"), named("b"), named("c")),
    ];
    for body in bodies {
        let out = run(&intake(), &request(), &body);
        let names: Vec<Value> = out
            .iter()
            .filter_map(|o| o.event.as_ref())
            .map(|e| {
                let v: Value = serde_json::from_slice(&e.json).unwrap();
                assert!(v["meta"]["id"].is_string(), "{v}");
                v["name"].clone()
            })
            .collect();
        let expected: Vec<Value> = ["a", "b", "c"]
            .iter()
            .take(names.len())
            .map(|n| json!(n))
            .collect();
        assert!(!names.is_empty(), "{body}");
        assert_eq!(names, expected, "{body}");
    }
}

#[test]
fn a_mixed_body_gets_a_verdict_per_event_in_order() {
    let bad_schema = json!({"$schema": "/sluice/keywords/1.0.0", "meta": {"stream": "sluice.keywords"}, "name": 3});
    let body = format!(
        "[{}, {}, {{\"a\":1,\"a\":2}}, {}, {{\"n\": 1e400}}]",
        good(),
        bad_schema,
        good()
    );
    let out = run(&intake(), &request(), &body);
    let kinds: Vec<Option<RejectionKind>> = out
        .iter()
        .map(|o| match &o.verdict {
            Verdict::Rejected(r) => Some(r.kind),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [
            None,
            Some(RejectionKind::Invalid),
            Some(RejectionKind::Malformed),
            None,
            Some(RejectionKind::Malformed)
        ]
    );
    assert!(rejection(&out[2]).1.contains("duplicate key `a`"));
    assert!(rejection(&out[4]).1.contains("out of range"));
    assert!(out[0].event.is_some() && out[3].event.is_some());
    let mut tally = sluice_shared::Tally::default();
    tally.add(&out);
    assert_eq!(tally.total(), 5);
    assert_eq!(tally.streams["sluice.keywords"].accepted, 2);
    assert_eq!(
        tally.streams["sluice.keywords"].rejected[&RejectionKind::Invalid],
        1
    );
    assert_eq!(tally.streams[""].rejected[&RejectionKind::Malformed], 2);
    assert_ne!(
        out[0].event.as_ref().unwrap().id,
        out[3].event.as_ref().unwrap().id
    );
}

#[test]
fn hostile_bodies_get_clear_errors() {
    let intake = intake();
    let req = request();
    let mut ids = EventIds::with_seed(1);

    // An array body's events are refused one by one: a too-deep one beside a good one.
    let deep = format!(
        r#"[{{"a": {}1{}}}, {{"b": 2}}]"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let outcomes = intake
        .process(&req, deep.as_bytes(), &mut EventIds::with_seed(2))
        .unwrap();
    assert!(
        matches!(&outcomes[0].verdict, Verdict::Rejected(r) if r.message.contains("deeper than 128")),
        "{:?}",
        outcomes[0].verdict
    );
    assert_eq!(outcomes.len(), 2);
    assert!(!matches!(&outcomes[1].verdict, Verdict::Rejected(r) if r.message.contains("deeper")));
    // So is a single event.
    let deep = format!("{{\"a\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let outcomes = intake
        .process(&req, deep.as_bytes(), &mut EventIds::with_seed(3))
        .unwrap();
    assert!(
        matches!(&outcomes[0].verdict, Verdict::Rejected(r) if r.message.contains("deeper than 128"))
    );
    let mut body_error = |body: &[u8]| intake.process(&req, body, &mut ids).err();
    // Brackets that do not pair up inside the skipped part are still malformed.
    let crossed = format!("[{{\"a\": {}}}]", "[".repeat(200));
    assert!(matches!(
        body_error(crossed.as_bytes()),
        Some(BodyError::Malformed { .. })
    ));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let outcomes = intake
        .process(&req, deep_object.as_bytes(), &mut EventIds::with_seed(4))
        .unwrap();
    assert!(
        matches!(&outcomes[0].verdict, Verdict::Rejected(r) if r.message.contains("deeper than 128"))
    );

    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(10 * 1024 * 1024));
    assert!(matches!(
        body_error(huge.as_bytes()),
        Some(BodyError::TooLarge { limit: 4194304, .. })
    ));

    let million = format!("[{}1]", "1,".repeat(999_999));
    assert!(matches!(
        body_error(million.as_bytes()),
        Some(BodyError::TooManyEvents { limit: 10_000 })
    ));

    for (body, found) in [
        ("NaN", "expected a value"),
        ("[NaN]", "expected a value"),
        ("{\"a\": Infinity}", "expected a value"),
    ] {
        match body_error(body.as_bytes()) {
            Some(BodyError::Malformed {
                message, line: 1, ..
            }) => assert!(message.contains(found), "{body}: {message}"),
            Some(BodyError::NotEventOrArray { .. }) if body == "NaN" => panic!("NaN is not JSON"),
            other => panic!("{body}: {other:?}"),
        }
    }
    assert_eq!(body_error(b""), Some(BodyError::Empty));
    assert_eq!(body_error(b" []"), Some(BodyError::EmptyArray));
    assert_eq!(
        body_error(b"\"str\""),
        Some(BodyError::NotEventOrArray { found: "string" })
    );
    match body_error(b"{\n  \"a\": tru\n}") {
        Some(BodyError::Malformed { line, column, .. }) => assert_eq!((line, column), (2, 8)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversized_and_broken_events_do_not_lose_their_neighbours() {
    let intake = intake_with(BodyLimits {
        max_body_bytes: 32 * 1024 * 1024,
        ..BodyLimits::default()
    });
    let big = json!({"$schema": "/sluice/keywords/1.0.0", "meta": {"stream": "sluice.keywords"}, "name": "x".repeat(10 * 1024 * 1024)});
    let mut body = format!("[{}, {}, ", good(), big).into_bytes();
    // An event whose string holds invalid UTF-8.
    body.extend_from_slice(b"{\"name\": \"\xff\xfe\"}, ");
    body.extend_from_slice(good().to_string().as_bytes());
    body.push(b']');
    let out = intake
        .process(&request(), &body, &mut EventIds::with_seed(2))
        .unwrap();
    assert_eq!(out.len(), 4);
    assert_eq!(out[0].verdict, Verdict::Accepted);
    assert_eq!(rejection(&out[1]).0, RejectionKind::TooLarge);
    let (kind, message, _) = rejection(&out[2]);
    assert_eq!(kind, RejectionKind::Malformed);
    assert!(message.contains("UTF-8"), "{message}");
    assert_eq!(out[3].verdict, Verdict::Accepted);
}

#[test]
fn rejection_context_is_eventgate_shaped() {
    let mut e = good();
    e["name"] = json!(5);
    let out = one(e);
    let Verdict::Rejected(r) = &out.verdict else {
        panic!()
    };
    let ctx = r.context();
    assert_eq!(ctx["kind"], "invalid");
    assert_eq!(ctx["errors"][0]["keyword"], "type");
    assert_eq!(ctx["errors"][0]["instancePath"], "/name");
    assert!(
        ctx["errorsText"]
            .as_str()
            .unwrap()
            .starts_with("data/name ")
    );
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = intake().process(&request(), &body, &mut EventIds::with_seed(3));
        }

        #[test]
        fn on_json_shaped_noise(parts in proptest::collection::vec(prop_oneof![
            Just("{"), Just("}"), Just("["), Just("]"), Just(","), Just(":"), Just("\"meta\""), Just("\"a\""),
            Just("1e999"), Just("-0"), Just("\"\\u0000\""), Just("\"\\ud800\""), Just("null"), Just("true"),
            Just("{\"$schema\":\"/sluice/keywords/1.0.0\",\"meta\":{\"stream\":\"sluice.keywords\"},\"name\":\"a\"}"),
        ], 0..40)) {
            let body = parts.concat();
            let _ = intake().process(&request(), body.as_bytes(), &mut EventIds::with_seed(4));
        }
    }
}
