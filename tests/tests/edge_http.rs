//! The native edge's HTTP surface, end to end: a real `sluice edge` process
//! forwarding over QUIC to a real `sluice aggregator`, driven over HTTP.
//! Each status code with its body, CORS, the GET beacon, size limits,
//! malformed JSON, unknown and disabled streams, schemas a stream does not
//! take, deterministic sampling, and enrichment, checked in the sink; and
//! early refusals (413, 415, 431) read by clients that write their whole
//! body before they read.

use serde_json::{Value, json};
use sluice_tests::{
    Aggregator, Edge, HttpReply, Scratch, http_call, log_events, metric, terminate,
    write_whole_then_read,
};
use std::net::SocketAddr;

const TOKEN: &str = "edge-http-token";

const STREAMS: &str = "
streams:
  edge.interaction:
    schema_title: sluice/browser/interaction
    sample: {unit: session, rate: 0.5}
    producers:
      eventgate:
        enrich_fields_from_http_headers:
          http.request_headers.user-agent: user-agent
          meta.request_id: x-request-id
          http.client_ip: x-client-ip
  edge.test:
    schema_title: sluice/test/event
  edge.limited:
    schema_title: sluice/test/event
    rate_limit: {events_per_second: 0.01, burst: 2}
  edge.off:
    schema_title: sluice/test/event
    enabled: false
";

/// An aggregator on a scratch folder with [`STREAMS`], and an edge in front of
/// it with `extra` settings.
fn platform(extra: &[(&str, &std::ffi::OsStr)]) -> (Scratch, Aggregator, Edge) {
    let scratch =
        Scratch::with_streams(&format!("defaults:\n  topic_prefixes: [local.]\n{STREAMS}"));
    let aggregator = scratch.aggregator(TOKEN, &[]);
    let edge = scratch.edge(&aggregator, extra);
    (scratch, aggregator, edge)
}

fn test_event(stream: &str, message: &str) -> Value {
    json!({
        "$schema": "/sluice/test/event/1.0.0",
        "meta": {"stream": stream},
        "dt": "2026-11-27T12:00:00.000Z",
        "message": message,
    })
}

fn interaction(session: &str, element: &str) -> Value {
    json!({
        "$schema": "/sluice/browser/interaction/1.0.0",
        "meta": {"stream": "edge.interaction"},
        "dt": "2026-11-27T12:00:00.000Z",
        "action": "click",
        "element": element,
        "performer": {"session_id": session},
    })
}

fn post(edge: SocketAddr, query: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    http_call(edge, "POST", &format!("/v1/events{query}"), &all, body).expect("the edge answers")
}

fn post_json(edge: SocketAddr, query: &str, body: &Value) -> HttpReply {
    post(edge, query, &[], body.to_string().as_bytes())
}

/// Messages of the test events in the sink for `stream`.
fn messages(scratch: &Scratch, stream: &str) -> Vec<String> {
    log_events(&scratch.data, &format!("local.{stream}"))
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn statuses_bodies_limits_and_cors() {
    let (
        scratch,
        mut aggregator,
        Edge {
            child: mut edge_child,
            http: edge,
        },
    ) = platform(&[
        ("SLUICE_EDGE_LIMITS__MAX_BODY_BYTES", "65536".as_ref()),
        ("SLUICE_EDGE_LIMITS__MAX_EVENT_BYTES", "16384".as_ref()),
        (
            "SLUICE_EDGE_CORS_ORIGINS",
            "[\"https://allowed.example\"]".as_ref(),
        ),
    ]);

    // 201: all in, no body; the request id is echoed.
    let r = post(
        edge,
        "",
        &[("X-Request-Id", "req-201")],
        test_event("edge.test", "one").to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.body.is_empty());
    assert_eq!(r.header("x-request-id"), Some("req-201"));
    // A request without one gets one.
    let r = post_json(edge, "", &test_event("edge.test", "two"));
    assert_eq!(r.status, 201);
    assert_eq!(r.header("x-request-id").map(str::len), Some(36));

    // 202: hasty.
    let r = post_json(
        edge,
        "?hasty=true",
        &json!([test_event("edge.test", "hasty")]),
    );
    assert_eq!(r.status, 202);

    // 207: the valid event is kept, the invalid one listed with its errors.
    let mut bad = test_event("edge.test", "bad");
    bad["count"] = json!(-1);
    let r = post_json(
        edge,
        "",
        &json!([test_event("edge.test", "beside-bad"), bad]),
    );
    assert_eq!(r.status, 207);
    let body = r.json();
    assert_eq!(body["error"], json!([]));
    assert_eq!(body["invalid"][0]["status"], "invalid");
    assert_eq!(body["invalid"][0]["event"]["message"], "bad");
    assert_eq!(body["invalid"][0]["context"]["kind"], "invalid");
    assert_eq!(
        body["invalid"][0]["context"]["errors"][0]["instancePath"],
        "/count"
    );
    assert_eq!(
        body["invalid"][0]["context"]["errors"][0]["keyword"],
        "minimum"
    );
    assert!(
        body["invalid"][0]["context"]["errorsText"]
            .as_str()
            .unwrap()
            .contains("data/count")
    );

    // 400: every event refused, each with its reason.
    let r = post_json(
        edge,
        "",
        &json!([
            test_event("no.such.stream", "x"),
            test_event("edge.off", "x"),
            {"$schema": "/sluice/test/event/1.0.0", "meta": {"stream": "edge.interaction"}, "dt": "2026-11-27T12:00:00Z"},
            {"meta": {"stream": "edge.test"}, "dt": "2026-11-27T12:00:00Z"},
            "not an object",
        ]),
    );
    assert_eq!(r.status, 400);
    let kinds: Vec<Value> = r.json()["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["context"]["kind"].clone())
        .collect();
    assert_eq!(
        kinds,
        vec![
            json!("unknown_stream"),
            json!("stream_disabled"),
            json!("schema_not_allowed"),
            json!("no_schema"),
            json!("not_an_object")
        ]
    );

    // Malformed JSON names where it breaks; empty bodies and arrays are refused.
    let r = post(edge, "", &[], b"[{\"a\": 1},\n {\"b\": }]");
    assert_eq!(r.status, 400);
    let message = r.json()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("line 2, column 8"), "{message}");
    assert_eq!(post(edge, "", &[], b"").status, 400);
    let r = post(edge, "", &[], b" [ ] ");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("empty array"));

    // 415: a content type the intake does not read; text/plain (sendBeacon) is read.
    let r = http_call(
        edge,
        "POST",
        "/v1/events",
        &[("Content-Type", "application/xml")],
        b"<e/>",
    )
    .unwrap();
    assert_eq!(r.status, 415);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("application/xml")
    );
    let r = http_call(
        edge,
        "POST",
        "/v1/events",
        &[("Content-Type", "text/plain;charset=UTF-8")],
        test_event("edge.test", "beacon-post")
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 201);
    // application/reports+json takes its stream and schema from the query.
    let report = json!([{"dt": "2026-11-27T12:00:00Z", "message": "report"}]);
    let r = http_call(
        edge,
        "POST",
        "/v1/events?stream=edge.test&schema_uri=/sluice/test/event/1.0.0",
        &[("Content-Type", "application/reports+json")],
        report.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    // 413: a body over the limit; an event over the event limit is refused alone.
    let r = post(edge, "", &[], &vec![b' '; 70_000]);
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].as_str().unwrap().contains("65536"));
    let mut big = test_event("edge.test", "big");
    big["message"] = json!("x".repeat(20_000));
    let r = post_json(
        edge,
        "",
        &json!([test_event("edge.test", "beside-big"), big]),
    );
    assert_eq!(r.status, 207);
    assert_eq!(r.json()["invalid"][0]["context"]["kind"], "too_large");

    // 207 and 429 from the aggregator's rate limit (burst 2, then nothing for 100 s).
    let three = json!([
        test_event("edge.limited", "l1"),
        test_event("edge.limited", "l2"),
        test_event("edge.limited", "l3")
    ]);
    let r = post_json(edge, "", &three);
    assert_eq!(r.status, 207);
    assert_eq!(r.json()["error"][0]["context"]["kind"], "rate_limited");
    assert_eq!(r.json()["error"][0]["event"]["message"], "l3");
    let r = post_json(edge, "", &test_event("edge.limited", "l4"));
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");

    // CORS: the configured origin is allowed, preflight included; others are not.
    let r = http_call(
        edge,
        "OPTIONS",
        "/v1/events",
        &[
            ("Origin", "https://allowed.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://allowed.example")
    );
    // A beacon is a credentialed request: credentials are allowed, the origin varies.
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(
        r.header("vary")
            .is_some_and(|v| v.to_ascii_lowercase().contains("origin")),
        "{:?}",
        r.header("vary")
    );
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    let r = post(
        edge,
        "",
        &[("Origin", "https://elsewhere.example")],
        test_event("edge.test", "cors").to_string().as_bytes(),
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.header("access-control-allow-origin"), None);

    // The GET beacon answers 204, whatever it carries.
    let beacon = test_event("edge.test", "get-beacon").to_string();
    let encoded: String = beacon.bytes().map(|b| format!("%{b:02X}")).collect();
    let r = http_call(edge, "GET", &format!("/beacon/event?{encoded};"), &[], b"").unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(
        http_call(edge, "GET", "/beacon/event?garbage", &[], b"")
            .unwrap()
            .status,
        204
    );

    // /v1/streams gives browsers only the settings clients apply; /healthz answers.
    let r = http_call(edge, "GET", "/v1/streams", &[], b"").unwrap();
    let streams = r.json();
    let interaction_keys: Vec<&String> = streams["streams"]["edge.interaction"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        interaction_keys,
        vec!["producers", "sample", "schema_title"]
    );
    // Conditional requests: the ETag names the answer; asking with it costs a 304.
    let tag = r.header("etag").expect("an ETag").to_owned();
    let again = http_call(edge, "GET", "/v1/streams", &[("If-None-Match", &tag)], b"").unwrap();
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let other = http_call(
        edge,
        "GET",
        "/v1/streams",
        &[("If-None-Match", "\"x\"")],
        b"",
    )
    .unwrap();
    assert_eq!(other.status, 200);
    let r = http_call(
        edge,
        "GET",
        "/v1/streams?streams=edge.test&all_settings=true",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(
        r.json()["streams"]["edge.test"]["schema_title"],
        "sluice/test/event"
    );
    assert_eq!(r.json()["streams"].as_object().unwrap().len(), 1);
    assert_eq!(
        http_call(edge, "GET", "/healthz", &[], b"").unwrap().status,
        200
    );

    // The edge stops cleanly (flushing hasty batches), then the aggregator; the sink has
    // exactly the events that were taken.
    assert_eq!(
        metric(edge, "sluice_edge_events_total{outcome=\"invalid\"}"),
        8.0
    );
    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());
    let mut got = messages(&scratch, "edge.test");
    got.sort();
    let mut want = vec![
        "one",
        "two",
        "hasty",
        "beside-bad",
        "beacon-post",
        "report",
        "beside-big",
        "cors",
        "get-beacon",
    ];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(messages(&scratch, "edge.limited"), vec!["l1", "l2"]);
    // Refused events went to the error stream.
    let errors = log_events(&scratch.data, "sluice.error.validation");
    assert!(
        errors.iter().any(|e| e["raw_event"]
            .as_str()
            .is_some_and(|r| r.contains("\"bad\""))),
        "{errors:?}"
    );
}

#[test]
fn sampling_enrichment_and_client_addresses() {
    let (
        scratch,
        mut aggregator,
        Edge {
            child: mut direct,
            http: edge,
        },
    ) = platform(&[]);

    // Sampling by session, rate 0.5: 0x00000000 is in, 0xffffffff is out (both answered 201).
    let headers = [
        ("X-Request-Id", "req-enrich"),
        ("User-Agent", "edge-test/1.0"),
        ("X-Forwarded-For", "203.0.113.5"),
    ];
    let r = post(
        edge,
        "",
        &headers,
        interaction("00000000aa", "in").to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = post(
        edge,
        "",
        &headers,
        interaction("ffffffffaa", "out").to_string().as_bytes(),
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        metric(edge, "sluice_edge_events_total{outcome=\"sampled_out\"}"),
        1.0
    );

    // Behind a trusted proxy the forwarded address is believed.
    let Edge {
        child: mut proxied,
        http: behind,
    } = scratch.edge(
        &aggregator,
        &[
            ("SLUICE_EDGE_TRUSTED_PROXIES", "[\"127.0.0.1/32\"]".as_ref()),
            (
                "SLUICE_EDGE_DATA_DIR",
                scratch.root.join("edge-2").as_os_str(),
            ),
        ],
    );
    let r = post(
        behind,
        "",
        &headers,
        interaction("00000000bb", "proxied").to_string().as_bytes(),
    );
    assert_eq!(r.status, 201);

    assert!(terminate(&mut direct).success());
    assert!(terminate(&mut proxied).success());
    assert!(terminate(&mut aggregator.child).success());
    let events = log_events(&scratch.data, "local.edge.interaction");
    assert_eq!(events.len(), 2, "{events:?}");
    let direct = events.iter().find(|e| e["element"] == "in").unwrap();
    assert!(
        uuid_like(direct["meta"]["id"].as_str().unwrap()),
        "{direct}"
    );
    assert!(direct["meta"]["dt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(direct["meta"]["request_id"], "req-enrich");
    assert_eq!(
        direct["http"]["request_headers"]["user-agent"],
        "edge-test/1.0"
    );
    // X-Forwarded-For from an untrusted peer is ignored.
    assert_eq!(direct["http"]["client_ip"], "127.0.0.1");
    let proxied = events.iter().find(|e| e["element"] == "proxied").unwrap();
    assert_eq!(proxied["http"]["client_ip"], "203.0.113.5");
}

/// A 7 MB body of one long JSON string: well over the default 4 MiB limit.
fn seven_mb() -> Vec<u8> {
    let mut body = b"[\"".to_vec();
    body.resize(7_000_000, b'x');
    body.extend_from_slice(b"\"]");
    body
}

#[test]
fn early_refusals_reach_clients_that_write_their_whole_body_first() {
    let (
        scratch,
        mut aggregator,
        Edge {
            child: mut edge_child,
            http: edge,
        },
    ) = platform(&[]);
    let body = seven_mb();
    let length = format!("Content-Length: {}\r\n", body.len());
    // Writes the request whole (headers `extra`, then `body`), then reads: the answer
    // must be `status` and say `says`.
    let refused = |extra: &str, body: &[u8], status: u16, says: &str| {
        let head = format!(
            "POST /v1/events?hasty=true HTTP/1.1\r\nHost: {edge}\r\nConnection: close\r\n{extra}\r\n"
        );
        let r = write_whole_then_read(edge, &head, body).unwrap_or_else(|e| {
            panic!("the client wrote its whole body and expected {status}, but: {e}")
        });
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        let text = String::from_utf8_lossy(&r.body);
        assert!(
            text.contains(says),
            "{status} does not say {says:?}: {text}"
        );
    };
    let json = "Content-Type: application/json\r\n";

    // Over the limit by its Content-Length: 413 before a byte is read, then the rest is read away.
    refused(&format!("{json}{length}"), &body, 413, "4194304 bytes");

    // Chunked, so over the limit only once read that far.
    let mut chunked = Vec::new();
    for chunk in body.chunks(1 << 20) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let chunking = format!("{json}Transfer-Encoding: chunked\r\n");
    refused(&chunking, &chunked, 413, "4194304 bytes");

    // 415 and 431 come before the body is read, too.
    let html = format!("Content-Type: text/html\r\n{length}");
    refused(&html, &body, 415, "text/html");
    let filler = format!("{json}X-Filler: {}\r\n{length}", "f".repeat(40_000));
    refused(&filler, &body, 431, "headers");

    // A client that waits for 100 Continue sends no body: it gets the 413 at once.
    let waits = format!("{json}Expect: 100-continue\r\n{length}");
    refused(&waits, &[], 413, "4194304 bytes");

    // Nothing of it reached the sink, and the edge takes the next request as usual.
    let r = post(
        edge,
        "",
        &[],
        test_event("edge.test", "after").to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        metric(edge, "sluice_edge_requests_total{status=\"413\"}"),
        3.0
    );
    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());
    assert_eq!(messages(&scratch, "edge.test"), ["after"]);
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}
