//! The edge as a Cloudflare Worker: the wasm32 build of `sluice-edge`, run
//! under workerd, takes real HTTP requests and forwards over HTTP to a real
//! `sluice aggregator`'s `/v1/batches` with its token. Statuses, bodies,
//! CORS, the GET beacon and hasty requests (sent under waitUntil) are
//! checked, and the sink holds exactly the events that were taken.

use serde_json::{Value, json};
use sluice_tests::{Scratch, Workerd, http_call, log_events, terminate, wait_until, workspace};

const TOKEN: &str = "worker-edge-token";

fn event(message: &str) -> Value {
    json!({
        "$schema": "/sluice/test/event/1.0.0",
        "meta": {"stream": "sluice.test.event"},
        "dt": "2026-11-27T12:00:00.000Z",
        "message": message,
    })
}

#[test]
fn the_worker_validates_and_forwards_to_a_real_aggregator() {
    // The Worker embeds schemas/ and schemas/streams.yaml; the aggregator runs on the same.
    let streams = std::fs::read_to_string(workspace().join("schemas/streams.yaml")).unwrap();
    let scratch = Scratch::with_streams(&streams);
    let mut aggregator = scratch.aggregator(TOKEN, &[]);
    let url = format!("http://{}", aggregator.http);
    let worker = Workerd::start(&[("AGGREGATOR_URL", &url), ("AGGREGATOR_TOKEN", TOKEN)]);
    let at = worker.http;
    let post = |query: &str, content_type: &str, body: &[u8]| {
        http_call(
            at,
            "POST",
            &format!("/v1/events{query}"),
            &[("Content-Type", content_type), ("X-Request-Id", "w-req")],
            body,
        )
        .expect("the Worker answers")
    };

    let r = post(
        "",
        "application/json",
        event("w-one").to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-request-id"), Some("w-req"));

    let mut bad = event("w-bad");
    bad["count"] = json!("many");
    let r = post(
        "",
        "application/json",
        json!([event("w-beside-bad"), bad]).to_string().as_bytes(),
    );
    assert_eq!(r.status, 207);
    assert_eq!(
        r.json()["invalid"][0]["context"]["errors"][0]["instancePath"],
        "/count"
    );

    let r = post("", "application/json", br#"{"meta": "#);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("line 1"));
    assert_eq!(post("", "application/xml", b"<e/>").status, 415);
    let r = post(
        "",
        "application/json",
        json!([event("x")])
            .to_string()
            .replace("sluice.test.event", "no.such")
            .as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["invalid"][0]["context"]["kind"], "unknown_stream");

    let r = post(
        "?hasty=true",
        "text/plain;charset=UTF-8",
        event("w-hasty").to_string().as_bytes(),
    );
    assert_eq!(r.status, 202);

    let r = http_call(
        at,
        "OPTIONS",
        "/v1/events",
        &[
            ("Origin", "https://site.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 204);
    // Echoed, with credentials allowed: a beacon is a credentialed request.
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://site.example")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("vary"), Some("Origin"));
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );

    let beacon: String = event("w-beacon")
        .to_string()
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    let r = http_call(at, "GET", &format!("/beacon/event?{beacon}"), &[], b"").unwrap();
    assert_eq!(r.status, 204);

    let r = http_call(at, "GET", "/v1/streams", &[], b"").unwrap();
    let keys: Vec<String> = r.json()["streams"]["sluice.browser.interaction"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, vec!["producers", "sample", "schema_title"]);
    let tag = r.header("etag").expect("an ETag").to_owned();
    let again = http_call(at, "GET", "/v1/streams", &[("If-None-Match", &tag)], b"").unwrap();
    assert_eq!(again.status, 304);

    // Hasty events are sent after the answer, under waitUntil; wait for the aggregator to have them.
    let http = aggregator.http;
    wait_until("the aggregator has written every event", || {
        sluice_tests::metric(
            http,
            "sluice_aggregator_events_total{stream=\"sluice.test.event\",outcome=\"accepted\"}",
        ) == 4.0
    });
    drop(worker);
    assert!(terminate(&mut aggregator.child).success());
    let mut got: Vec<String> = log_events(&scratch.data, "local.sluice.test.event")
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    assert_eq!(got, vec!["w-beacon", "w-beside-bad", "w-hasty", "w-one"]);
}

#[test]
fn the_worker_sends_each_event_to_its_owner_and_moves_off_a_dead_one() {
    let streams = std::fs::read_to_string(workspace().join("schemas/streams.yaml")).unwrap();
    let scratch = Scratch::with_streams(&streams);
    let other = scratch.root.join("data-b");
    let mut a = scratch.aggregator(TOKEN, &[]);
    let mut b = scratch.aggregator(TOKEN, &[("SLUICE_AGGREGATOR_DATA_DIR", other.as_os_str())]);
    let list = format!("a=http://{},b=http://{}", a.http, b.http);
    let worker = Workerd::start(&[("AGGREGATORS", &list), ("AGGREGATOR_TOKEN", TOKEN)]);
    let owners = sluice_shared::forward::Owners::new(&["a", "b"]);
    let id = |n: u64| uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &n.to_be_bytes());
    let numbered = |n: u64| {
        let mut e = event(&format!("w-{n}"));
        e["meta"]["id"] = json!(id(n).to_string());
        e
    };
    let post = |range: std::ops::Range<u64>| {
        let events: Vec<Value> = range.map(numbered).collect();
        let r = http_call(
            worker.http,
            "POST",
            "/v1/events",
            &[("Content-Type", "application/json")],
            json!(events).to_string().as_bytes(),
        )
        .expect("the Worker answers");
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    };
    for start in (0..200).step_by(50) {
        post(start..start + 50);
    }
    let on_b = (0..200u64)
        .filter(|&n| owners.rank(id(n).as_bytes())[0] == 1)
        .count();
    let accepted = |at| {
        sluice_tests::metric(
            at,
            "sluice_aggregator_events_total{stream=\"sluice.test.event\",outcome=\"accepted\"}",
        ) as usize
    };
    // Each took exactly the ids it owns, both a good share.
    assert_eq!(accepted(b.http), on_b);
    assert_eq!(accepted(a.http), 200 - on_b);
    assert!((40..160).contains(&on_b), "{on_b} of 200 on b");
    // With b gone, its ids go to a; nothing is refused.
    b.child.0.kill().unwrap();
    let _ = b.child.0.wait();
    post(200..300);
    assert_eq!(accepted(a.http), 300 - on_b);
    drop(worker);
    assert!(terminate(&mut a.child).success());
    let in_a = log_events(&scratch.data, "local.sluice.test.event").len();
    let in_b = log_events(&other, "local.sluice.test.event").len();
    assert_eq!((in_a, in_b), (300 - on_b, on_b));
}
