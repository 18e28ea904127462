//! The native edge's spool, end to end: with the aggregator stopped,
//! guaranteed requests get 503 with Retry-After while 20,000 hasty events
//! are answered 202 and spooled; the edge is killed and restarted with its
//! spool; the aggregator comes back; exactly those 20,000 events land in the
//! sink, once each. The edge also fails over past an aggregator that does
//! not answer, and an edge stopped (SIGTERM) while no aggregator answers
//! stops cleanly and forwards its spool at the next start.

use serde_json::json;
use sluice_tests::{
    Edge, FixedPorts, Scratch, free_port, http_call, log_events, metric, send_retrying, terminate,
    wait_until,
};
use std::collections::HashMap;

const TOKEN: &str = "edge-spool-token";
const REQUESTS: usize = 400;
const PER_REQUEST: usize = 50;

#[test]
fn hasty_events_wait_in_the_spool_and_land_once() {
    let scratch = Scratch::new("spool.test");
    let ports = FixedPorts::new();
    let fixed = ports.env();
    let mut aggregator = scratch.aggregator(TOKEN, &fixed);
    // The first aggregator listed never answers: the edge fails over to the second.
    let aggregators = format!("[\"127.0.0.1:{}\", \"{}\"]", free_port(), ports.quic);
    let edge_env = [
        ("SLUICE_EDGE_AGGREGATORS", aggregators.as_ref()),
        ("SLUICE_EDGE_BATCH__HASTY_AGE_MS", "50".as_ref()),
    ];
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(&aggregator, &edge_env);
    let event = |message: String| {
        json!({
            "$schema": "/sluice/test/event/1.0.0",
            "meta": {"stream": "spool.test"},
            "dt": "2026-11-27T12:00:00.000Z",
            "message": message,
        })
    };
    let post = |edge, query: &str, body: &serde_json::Value| {
        http_call(
            edge,
            "POST",
            &format!("/v1/events{query}"),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .expect("the edge answers")
    };
    let r = post(edge, "", &event("before".into()));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    assert!(terminate(&mut aggregator.child).success());
    // Guaranteed requests cannot be answered 201 now.
    let r = post(edge, "", &event("refused".into()));
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.json()["error"][0]["context"]["kind"], "unavailable");

    // Hasty ones are taken and spooled.
    for req in 0..REQUESTS {
        let batch: Vec<_> = (0..PER_REQUEST)
            .map(|i| event(format!("s-{}", req * PER_REQUEST + i)))
            .collect();
        let r = post(edge, "?hasty=true", &json!(batch));
        assert_eq!(
            r.status,
            202,
            "request {req}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let total = (REQUESTS * PER_REQUEST) as f64;
    wait_until("every hasty event is spooled", || {
        metric(edge, "sluice_edge_events_total{outcome=\"spooled\"}") == total
    });
    assert!(metric(edge, "sluice_edge_spool_bytes") > 0.0);

    // The edge dies with a full spool and comes back; then the aggregator does.
    drop(edge_child);
    let Edge {
        child: restarted,
        http: edge,
    } = scratch.edge(&aggregator, &edge_env);
    edge_child = restarted;
    let mut aggregator = scratch.aggregator(TOKEN, &fixed);
    wait_until("the spool is replayed", || {
        metric(edge, "sluice_edge_events_total{outcome=\"delivered\"}") == total
            && metric(edge, "sluice_edge_spool_bytes") == 0.0
    });
    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());

    let mut counts: HashMap<String, usize> = HashMap::new();
    for e in log_events(&scratch.data, "local.spool.test") {
        *counts
            .entry(e["message"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(counts.remove("before"), Some(1));
    assert_eq!(
        counts.len(),
        REQUESTS * PER_REQUEST,
        "events missing from the sink"
    );
    assert!(counts.values().all(|&c| c == 1), "an event landed twice");
    assert!(!counts.contains_key("refused"));
}

#[test]
fn a_full_spool_refuses_hasty_requests_and_loses_nothing_it_answered() {
    let scratch = Scratch::new("spool.test");
    let ports = FixedPorts::new();
    let fixed = ports.env();
    let mut aggregator = scratch.aggregator(TOKEN, &fixed);
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(
        &aggregator,
        &[
            ("SLUICE_EDGE_SPOOL__MAX_BYTES", "262144".as_ref()),
            ("SLUICE_EDGE_SPOOL__SEGMENT_BYTES", "65536".as_ref()),
            ("SLUICE_EDGE_BATCH__HASTY_AGE_MS", "20".as_ref()),
        ],
    );
    assert!(terminate(&mut aggregator.child).success());
    // Bursts of hasty requests until the spool's bound turns them away.
    let mut answered = Vec::new();
    let mut refused = 0;
    for req in 0..200 {
        let batch: Vec<_> = (0..20)
            .map(|i| {
                json!({
                    "$schema": "/sluice/test/event/1.0.0",
                    "meta": {"stream": "spool.test"},
                    "dt": "2026-11-27T12:00:00.000Z",
                    "message": format!("b-{req}-{i}-{}", "y".repeat(400)),
                })
            })
            .collect();
        let r = http_call(
            edge,
            "POST",
            "/v1/events?hasty=true",
            &[("Content-Type", "application/json")],
            json!(batch).to_string().as_bytes(),
        )
        .unwrap();
        match r.status {
            202 => answered.push(req),
            503 => {
                assert!(r.header("retry-after").is_some());
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused > 0, "the spool never filled");
    assert!(!answered.is_empty());
    let taken = (answered.len() * 20) as f64;
    wait_until("every answered event is spooled", || {
        metric(edge, "sluice_edge_events_total{outcome=\"spooled\"}") == taken
    });

    let mut aggregator = scratch.aggregator(TOKEN, &fixed);
    wait_until("the spool is replayed", || {
        metric(edge, "sluice_edge_events_total{outcome=\"delivered\"}") == taken
    });
    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());
    assert_eq!(
        log_events(&scratch.data, "local.spool.test").len(),
        answered.len() * 20
    );
}

#[test]
fn an_edge_stopped_while_no_aggregator_answers_keeps_its_spool_for_the_next_start() {
    let scratch = Scratch::new("spool.test");
    let ports = FixedPorts::new();
    let fixed = ports.env();
    let mut aggregator = scratch.aggregator(TOKEN, &fixed);
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(&aggregator, &[]);
    assert!(terminate(&mut aggregator.child).success());
    let messages: Vec<String> = (0..500).map(|i| format!("kept-{i}")).collect();
    for chunk in messages.chunks(PER_REQUEST) {
        assert_eq!(send_retrying(edge, "spool.test", chunk, true).status, 202);
    }
    // SIGTERM with nothing to forward to: the edge stops cleanly, its spool on disk.
    let stopping = std::time::Instant::now();
    assert!(terminate(&mut edge_child).success());
    eprintln!("the edge stopped in {:?}", stopping.elapsed());

    let mut aggregator = scratch.aggregator(TOKEN, &fixed);
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(&aggregator, &[]);
    wait_until("the kept spool is forwarded", || {
        metric(edge, "sluice_edge_events_total{outcome=\"delivered\"}") == 500.0
            && metric(edge, "sluice_edge_spool_bytes") == 0.0
    });
    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());
    let mut landed: Vec<String> = log_events(&scratch.data, "local.spool.test")
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect();
    landed.sort();
    let mut expected = messages;
    expected.sort();
    assert_eq!(landed, expected);
}
