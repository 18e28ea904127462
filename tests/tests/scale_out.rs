//! Scale-out across real processes: two native edges list three
//! aggregators (one PKI, each aggregator producing to one tansu broker).
//! Each event goes to the owner of its `meta.id` by rendezvous hashing, so
//! every aggregator takes a share, and a client's retry through the other
//! edge reaches the same owner and is answered as a duplicate: a steady run
//! writes every event to Kafka exactly once. Then one aggregator is
//! SIGKILLed mid-load while clients keep sending (and retry what got 503):
//! every acknowledged event is in Kafka, and any event written twice is one
//! whose owner was the killed aggregator.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use serde_json::json;
use sluice_shared::forward::Owners;
use sluice_tests::{Aggregator, Edge, Scratch, Tansu, http_call, metric, post_events_created};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "scale-out-token";
const STREAM: &str = "scale.out";
const TOPIC: &str = "local.scale.out";
const NAMES: [&str; 3] = ["agg-1", "agg-2", "agg-3"];
const STEADY: u64 = 3_000;
const PER_REQUEST: u64 = 50;

fn event_id(n: u64) -> uuid::Uuid {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &n.to_be_bytes())
}

fn event(n: u64) -> serde_json::Value {
    json!({
        "$schema": "/sluice/test/event/1.0.0",
        "meta": {"stream": STREAM, "id": event_id(n).to_string()},
        "dt": "2026-12-06T10:00:00.000Z",
        "count": n,
    })
}

/// Posts events `range` as one array; the status.
fn post(edge: SocketAddr, range: std::ops::Range<u64>) -> u16 {
    let events: Vec<_> = range.map(event).collect();
    http_call(
        edge,
        "POST",
        "/v1/events",
        &[("Content-Type", "application/json")],
        serde_json::Value::from(events).to_string().as_bytes(),
    )
    .map_or(0, |r| r.status)
}

fn accepted(aggregator: SocketAddr, outcome: &str) -> u64 {
    metric(
        aggregator,
        &format!("sluice_aggregator_events_total{{stream=\"{STREAM}\",outcome=\"{outcome}\"}}"),
    ) as u64
}

/// Every record of the topic, by event number: how many times each was written. Reads
/// until every event of `expected` is in, then on until each partition reports its end
/// (tansu's watermarks lag its logs, so they cannot say where the end is).
fn kafka_counts(brokers: &str, expected: &HashSet<u64>) -> HashMap<u64, usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("sluice-scale-out-{}", expected.len()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("a consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribed");
    let mut counts: HashMap<u64, usize> = HashMap::new();
    let mut at_end = [false; 3];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let complete = expected.iter().all(|n| counts.contains_key(n));
        if complete && at_end.iter().all(|&e| e) {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} expected events arrived",
            expected.iter().filter(|n| counts.contains_key(n)).count(),
            expected.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) => {
                at_end[usize::try_from(msg.partition()).unwrap_or(0) % 3] = false;
                let value: serde_json::Value =
                    serde_json::from_slice(msg.payload().unwrap_or_default())
                        .expect("JSON records");
                *counts
                    .entry(value["count"].as_u64().expect("a count"))
                    .or_default() += 1;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end[usize::try_from(p).unwrap_or(0) % 3] = true;
            }
            _ => {}
        }
    }
}

#[test]
fn three_aggregators_share_the_ids_and_a_killed_one_loses_no_acknowledged_event() {
    let tansu = Tansu::start();
    tansu.create_topic(TOPIC, 3);
    let scratch = Scratch::new(STREAM);
    // Small dedupe slices, so that each aggregator saves several to disk during the test.
    let kafka: [(&str, &std::ffi::OsStr); 2] = [
        ("SLUICE_AGGREGATOR_KAFKA__BROKERS", tansu.brokers.as_ref()),
        ("SLUICE_AGGREGATOR_DEDUPE_SLICE_IDS", "1000".as_ref()),
    ];
    // The first aggregator makes the development PKI; the others are given the same one.
    let first = scratch.aggregator(TOKEN, &kafka);
    let mut aggregators: Vec<Aggregator> = vec![first];
    for k in 2..=3 {
        let data = scratch.root.join(format!("data-{k}"));
        let tls = data.join("tls");
        std::fs::create_dir_all(&tls).expect("a data folder");
        for f in std::fs::read_dir(scratch.data.join("tls")).expect("the PKI") {
            let f = f.expect("a PKI file").path();
            let name = f.file_name().expect("a file name");
            std::fs::copy(&f, tls.join(name)).expect("the PKI copies");
        }
        let mut env = kafka.to_vec();
        env.push(("SLUICE_AGGREGATOR_DATA_DIR", data.as_os_str()));
        aggregators.push(scratch.aggregator(TOKEN, &env));
    }
    // Both edges list the three by name, in different orders: owners follow names.
    let list = |order: [usize; 3]| {
        let entries: Vec<String> = order
            .iter()
            .map(|&k| format!("\"{}={}\"", NAMES[k], aggregators[k].quic))
            .collect();
        format!("[{}]", entries.join(","))
    };
    let edge_at = |k: usize, order: [usize; 3]| -> Edge {
        let data = scratch.root.join(format!("edge-{k}"));
        let listed = list(order);
        scratch.edge(
            &aggregators[0],
            &[
                ("SLUICE_EDGE_DATA_DIR", data.as_os_str()),
                ("SLUICE_EDGE_AGGREGATORS", listed.as_ref()),
            ],
        )
    };
    let edges = [edge_at(1, [0, 1, 2]), edge_at(2, [2, 0, 1])];
    let owners = Owners::new(&NAMES);
    let owner = |n: u64| owners.rank(event_id(n).as_bytes())[0];

    // Steady: half the requests through each edge.
    for (r, start) in (0..STEADY).step_by(PER_REQUEST as usize).enumerate() {
        let events: Vec<_> = (start..start + PER_REQUEST).map(event).collect();
        post_events_created(edges[r % 2].http, &events);
    }
    let mut owned = [0u64; 3];
    for n in 0..STEADY {
        owned[owner(n)] += 1;
    }
    for (k, a) in aggregators.iter().enumerate() {
        let took = accepted(a.http, "accepted");
        // Each aggregator took exactly the ids it owns, and its share is a fifth to a half.
        assert_eq!(took, owned[k], "{} took {took} events", NAMES[k]);
        assert!(
            took * 5 >= STEADY && took * 2 <= STEADY,
            "{} took {took} of {STEADY}",
            NAMES[k]
        );
    }
    // A client's retry of the first 500 events goes through the other edge: each reaches
    // the same owner and is answered as a duplicate.
    for start in (0..500).step_by(PER_REQUEST as usize) {
        let events: Vec<_> = (start..start + PER_REQUEST).map(event).collect();
        post_events_created(edges[1].http, &events);
    }
    let duplicates: u64 = aggregators
        .iter()
        .map(|a| accepted(a.http, "duplicate"))
        .sum();
    assert_eq!(duplicates, 500);
    let counts = kafka_counts(&tansu.brokers, &(0..STEADY).collect());
    assert_eq!(counts.len() as u64, STEADY);
    assert!(
        counts.values().all(|&c| c == 1),
        "a steady run wrote an event twice"
    );
    println!(
        "steady: shares {owned:?} of {STEADY}; 500 retries answered duplicate; no duplicate in Kafka"
    );

    // Load from four clients (two per edge) that retry a 503 until it is answered.
    let acked: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(STEADY));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (acked, stop, next) = (acked.clone(), stop.clone(), next.clone());
            let edge = edges[c % 2].http;
            std::thread::spawn(move || {
                let mut retried = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let start = next.fetch_add(PER_REQUEST, Ordering::SeqCst);
                    let range = start..start + PER_REQUEST;
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        match post(edge, range.clone()) {
                            201 => {
                                acked.lock().expect("lock").extend(range.clone());
                                break;
                            }
                            _ if Instant::now() > deadline => break,
                            _ => {
                                retried += 1;
                                std::thread::sleep(Duration::from_millis(200));
                            }
                        }
                    }
                }
                retried
            })
        })
        .collect();
    let wait_for = |count: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while acked.lock().expect("lock").len() < count {
            assert!(Instant::now() < deadline, "the clients stalled");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(3_000);
    let killed = &mut aggregators[1].child.0;
    killed.kill().expect("SIGKILL");
    let _ = killed.wait();
    let at_kill = acked.lock().expect("lock").len();
    wait_for(at_kill + 3_000);
    stop.store(true, Ordering::SeqCst);
    let retries: u64 = clients
        .into_iter()
        .map(|c| c.join().expect("a client"))
        .sum();
    let acked = acked.lock().expect("lock").clone();
    let sent = next.load(Ordering::SeqCst);

    let counts = kafka_counts(&tansu.brokers, &acked);
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| !counts.contains_key(n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events are not in Kafka: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let twice: Vec<u64> = counts
        .iter()
        .filter(|&(_, &c)| c > 1)
        .map(|(&n, _)| n)
        .collect();
    let not_moved: Vec<u64> = twice.iter().copied().filter(|&n| owner(n) != 1).collect();
    assert!(
        not_moved.is_empty(),
        "events written twice whose owner was not killed: {not_moved:?}"
    );
    let moved: f64 = edges
        .iter()
        .map(|e| metric(e.http, "sluice_edge_owner_moves_total"))
        .sum();
    assert!(moved > 0.0, "no event moved off the killed aggregator");
    let owned_by_killed = (STEADY..sent).filter(|&n| owner(n) == 1).count();

    // Back on its addresses, the killed aggregator takes its own ids again once the
    // edges' next attempt reaches it.
    let back_data = scratch.root.join("data-2");
    let (quic, http) = (
        aggregators[1].quic.to_string(),
        aggregators[1].http.to_string(),
    );
    let mut env = kafka.to_vec();
    env.push(("SLUICE_AGGREGATOR_DATA_DIR", back_data.as_os_str()));
    env.push(("SLUICE_AGGREGATOR_QUIC__LISTEN", quic.as_ref()));
    env.push(("SLUICE_AGGREGATOR_HTTP__LISTEN", http.as_ref()));
    let back = scratch.aggregator(TOKEN, &env);
    let mut from = sent;
    sluice_tests::wait_until("the edges send to the restarted aggregator again", || {
        post_events_created(
            edges[0].http,
            &(from..from + PER_REQUEST).map(event).collect::<Vec<_>>(),
        );
        post_events_created(
            edges[1].http,
            &(from + PER_REQUEST..from + 2 * PER_REQUEST)
                .map(event)
                .collect::<Vec<_>>(),
        );
        from += 2 * PER_REQUEST;
        accepted(back.http, "accepted") > 0
    });
    let before = accepted(back.http, "accepted");
    for start in (from..from + 1_000).step_by(PER_REQUEST as usize) {
        let events: Vec<_> = (start..start + PER_REQUEST).map(event).collect();
        post_events_created(edges[(start / PER_REQUEST) as usize % 2].http, &events);
    }
    let its_own = (from..from + 1_000).filter(|&n| owner(n) == 1).count() as u64;
    assert_eq!(accepted(back.http, "accepted") - before, its_own);
    // Its dedupe window came back from the slices it saved and the journal since: the
    // steady run's events are duplicates to it still.
    assert!(metric(back.http, "sluice_aggregator_dedupe_runs") >= 1.0);
    for start in (0..STEADY).step_by(PER_REQUEST as usize) {
        let events: Vec<_> = (start..start + PER_REQUEST).map(event).collect();
        post_events_created(edges[0].http, &events);
    }
    assert_eq!(accepted(back.http, "duplicate"), owned[1]);
    println!(
        "killed {} mid-load: {} events acknowledged of {} sent after the steady run, all in Kafka; {} client retries; {} events moved to their next-ranked aggregator; {} of the {} events the killed one owned written twice",
        NAMES[1],
        acked.len(),
        sent - STEADY,
        retries,
        moved,
        twice.len(),
        owned_by_killed
    );
}
