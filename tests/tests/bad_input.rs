//! Bad input, as one table run over HTTP against both edge hosts (the native
//! `sluice edge` and the Worker under workerd), both forwarding to one real
//! aggregator. Each case gets its documented status and a message naming the
//! problem; where a body holds a good event beside the bad one, the good one
//! is kept (207); after every case the host still answers and takes a good
//! event. At the end the sink holds exactly the good events, once each.

use serde_json::{Value, json};
use sluice_tests::{
    Edge, HttpReply, Scratch, Workerd, log_events, raw_call, terminate, wait_until, workspace,
};
use std::net::SocketAddr;

const TOKEN: &str = "bad-input-token";
const STREAM: &str = "sluice.test.event";

fn good(message: &str) -> String {
    json!({
        "$schema": "/sluice/test/event/1.0.0",
        "meta": {"stream": STREAM},
        "dt": "2026-11-27T12:00:00.000Z",
        "message": message,
    })
    .to_string()
}

/// An event of the test stream with `field` set to the raw JSON text `raw`.
fn with_raw(field: &str, raw: &str) -> String {
    format!(
        r#"{{"$schema": "/sluice/test/event/1.0.0", "meta": {{"stream": "{STREAM}"}}, "dt": "2026-11-27T12:00:00.000Z", "{field}": {raw}}}"#
    )
}

fn with_schema(uri: &str) -> String {
    json!({
        "$schema": uri,
        "meta": {"stream": STREAM},
        "dt": "2026-11-27T12:00:00.000Z",
    })
    .to_string()
}

/// A good event beside a bad one, as one array body.
fn beside(good_message: &str, bad: &[u8]) -> Vec<u8> {
    let mut body = format!("[{},", good(good_message)).into_bytes();
    body.extend_from_slice(bad);
    body.push(b']');
    body
}

struct Case {
    name: &'static str,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    /// Words the answer must hold (case-insensitive), naming the problem.
    says: &'static [&'static str],
    /// The good event's message, when the body holds one that must be kept.
    keeps: Option<String>,
}

fn case(name: &'static str, body: Vec<u8>, status: u16, says: &'static [&'static str]) -> Case {
    Case {
        name,
        content_type: "application/json",
        headers: Vec::new(),
        body,
        status,
        says,
        keeps: None,
    }
}

/// A case whose body holds a good event (tagged by host and case) beside the bad one.
fn kept(host: &str, name: &'static str, bad: &[u8], says: &'static [&'static str]) -> Case {
    let message = format!("{host}-{name}");
    Case {
        keeps: Some(message.clone()),
        ..case(name, beside(&message, bad), 207, says)
    }
}

fn table(host: &str) -> Vec<Case> {
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let huge_event = with_raw("message", &format!("\"{}\"", "x".repeat(2 * 1024 * 1024)));
    let mut invalid_utf8 = with_raw("message", "\"caf\u{e9}\"").into_bytes();
    let at = invalid_utf8
        .windows(2)
        .position(|w| w == "é".as_bytes())
        .unwrap_or(0);
    invalid_utf8.splice(at..at + 2, [0xff, 0xfe]);
    let million: Vec<u8> = {
        let mut b = b"[".to_vec();
        for i in 0..1_000_000 {
            if i > 0 {
                b.push(b',');
            }
            b.extend_from_slice(b"{}");
        }
        b.push(b']');
        b
    };
    let hundred_mb = {
        let one = good("filler");
        let mut b = b"[".to_vec();
        while b.len() < 100 * 1024 * 1024 {
            b.extend_from_slice(one.as_bytes());
            b.push(b',');
        }
        b.extend_from_slice(one.as_bytes());
        b.push(b']');
        b
    };
    vec![
        case(
            "malformed JSON",
            format!("[{}, {{\"meta\": ", good("never")).into_bytes(),
            400,
            &["malformed", "line 1"],
        ),
        kept(host, "invalid-utf8", &invalid_utf8, &["utf-8"]),
        kept(
            host,
            "deep-nesting",
            with_raw("message", &deep).as_bytes(),
            &["nest"],
        ),
        case("100 MB body", hundred_mb, 413, &["limit"]),
        case("a million events", million, 413, &["events"]),
        kept(host, "2mb-event", huge_event.as_bytes(), &["limit"]),
        kept(
            host,
            "duplicate-keys",
            with_raw("message", "\"a\", \"message\": \"b\"").as_bytes(),
            &["duplicate"],
        ),
        kept(
            host,
            "beyond-f64",
            with_raw("count", "1e400").as_bytes(),
            &["number"],
        ),
        Case {
            content_type: "application/xml",
            ..case(
                "wrong content type",
                good("never").into_bytes(),
                415,
                &["content type"],
            )
        },
        kept(
            host,
            "schema-http",
            with_schema("http://203.0.113.9/evil/1.0.0.json").as_bytes(),
            &["203.0.113.9/evil"],
        ),
        kept(
            host,
            "schema-file",
            with_schema("file:///etc/passwd").as_bytes(),
            &["file:///etc/passwd"],
        ),
        kept(
            host,
            "schema-dotdot",
            with_schema("../../../../etc/passwd").as_bytes(),
            &["../../../../etc/passwd"],
        ),
        kept(
            host,
            "unknown-stream",
            good("x").replace(STREAM, "no.such.stream").as_bytes(),
            &["no.such.stream"],
        ),
        Case {
            headers: vec![("X-Padding", "p".repeat(64 * 1024))],
            ..case("64 KB header", good("never").into_bytes(), 431, &["header"])
        },
    ]
}

fn post(at: SocketAddr, content_type: &str, headers: &[(&str, String)], body: &[u8]) -> HttpReply {
    let mut all: Vec<(&str, &str)> = vec![("Content-Type", content_type)];
    all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
    // Raw bytes: the hostile cases include bodies a client writes whole though the
    // server has answered, and headers over any limit.
    raw_call(at, "POST", "/v1/events", &all, body).expect("the edge answers")
}

/// Runs the table against the host at `at`; the good messages it kept.
fn run(host: &str, at: SocketAddr) -> Vec<String> {
    let mut kept = Vec::new();
    for (i, c) in table(host).into_iter().enumerate() {
        let r = post(at, c.content_type, &c.headers, &c.body);
        let text = String::from_utf8_lossy(&r.body).to_lowercase();
        let shown: String = text.chars().take(600).collect();
        assert_eq!(r.status, c.status, "{host}: {}: {shown}", c.name);
        for word in c.says {
            assert!(
                text.contains(&word.to_lowercase()),
                "{host}: {}: the answer does not say {word:?}: {shown}",
                c.name
            );
        }
        if let Some(m) = c.keeps {
            kept.push(m);
        }
        // The host is up and takes a good event after every case.
        let alive = format!("{host}-alive-{i}");
        let r = post(at, "application/json", &[], good(&alive).as_bytes());
        assert_eq!(
            r.status,
            201,
            "{host}: after {}: {}",
            c.name,
            String::from_utf8_lossy(&r.body)
        );
        kept.push(alive);
    }
    kept
}

#[test]
fn both_edge_hosts_refuse_bad_input_clearly_and_keep_the_good() {
    let streams = std::fs::read_to_string(workspace().join("schemas/streams.yaml"))
        .expect("the stream config reads");
    let scratch = Scratch::with_streams(&streams);
    let mut aggregator = scratch.aggregator(TOKEN, &[]);
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(&aggregator, &[]);
    let url = format!("http://{}", aggregator.http);
    let worker = Workerd::start(&[("AGGREGATOR_URL", &url), ("AGGREGATOR_TOKEN", TOKEN)]);

    let mut expected = run("native", edge);
    expected.extend(run("worker", worker.http));
    let http = aggregator.http;
    let total = expected.len() as f64;
    wait_until("the aggregator has written every good event", || {
        sluice_tests::metric(
            http,
            &format!("sluice_aggregator_events_total{{stream=\"{STREAM}\",outcome=\"accepted\"}}"),
        ) >= total
    });
    drop(worker);
    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());
    let mut got: Vec<String> = log_events(&scratch.data, &format!("local.{STREAM}"))
        .iter()
        .map(|e: &Value| e["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}
