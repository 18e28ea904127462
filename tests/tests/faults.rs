//! Faults under load, each checked with exact counts: the aggregator killed
//! (SIGKILL) mid-load, then the edge too, the Kafka broker down for 30 seconds, an aggregator
//! too slow for its load, and a full disk under the embedded log and under
//! the edge's spool. In each, every event answered 201 or 202 is in the sink
//! exactly once, refusals carry Retry-After and say why, and memory stays
//! bounded. (The edge killed with a non-empty spool is in `edge_spool.rs`.)

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use sluice_tests::{
    Aggregator, Edge, FixedPorts, Scratch, SmallDisk, free_port, http_call, http_get, log_events,
    metric, rss_mib, send_counting, send_retrying, signal, terminate, test_events_body, wait_until,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "fault-test-token";
const PER_REQUEST: usize = 50;

/// `count` messages `tag-<n>` padded with `pad` pseudo-random hex characters,
/// so that batches do not compress to nothing.
fn messages(tag: &str, from: usize, count: usize, pad: usize) -> Vec<String> {
    (from..from + count)
        .map(|n| {
            let mut x = (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut m = format!("{tag}-{n}-");
            while m.len() < pad {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                m.push_str(&format!("{x:016x}"));
            }
            m
        })
        .collect()
}

/// The tag and number of a message made by [`messages`].
fn key(message: &str) -> String {
    message
        .rsplit_once('-')
        .map_or(message, |(k, _)| k)
        .to_owned()
}

/// How many copies of each message the embedded log holds.
fn log_counts(scratch: &Scratch, topic: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for e in log_events(&scratch.data, topic) {
        let m = e["message"].as_str().expect("events have a message");
        *counts.entry(key(m)).or_default() += 1;
    }
    counts
}

fn delivered(edge: SocketAddr) -> f64 {
    metric(edge, "sluice_edge_events_total{outcome=\"delivered\"}")
        + metric(edge, "sluice_edge_events_total{outcome=\"duplicate\"}")
}

/// Checks that `counts` holds each of `answered` exactly once and nothing else.
fn exactly_once(counts: &HashMap<String, usize>, answered: &[String]) {
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "events in the sink more than once: {twice:?}"
    );
    let missing: Vec<_> = answered
        .iter()
        .map(|m| key(m))
        .filter(|k| !counts.contains_key(k))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "answered events missing: {missing:?}");
    assert_eq!(
        counts.len(),
        answered.len(),
        "unanswered events in the sink"
    );
}

#[test]
fn aggregator_killed_under_hasty_load_loses_nothing_answered() {
    const TOTAL: usize = 100_000;
    const THREADS: usize = 2;
    let scratch = Scratch::new("fault.kill");
    let ports = FixedPorts::new();
    let mut aggregator = scratch.aggregator(TOKEN, &ports.env());
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(
        &aggregator,
        &[("SLUICE_EDGE_BATCH__HASTY_AGE_MS", "20".as_ref())],
    );
    let taken = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let (taken, refused) = (taken.clone(), refused.clone());
            std::thread::spawn(move || {
                let share = TOTAL / THREADS;
                for r in 0..share / PER_REQUEST {
                    let from = t * share + r * PER_REQUEST;
                    let batch = messages("k", from, PER_REQUEST, 200);
                    let d = send_retrying(edge, "fault.kill", &batch, true);
                    assert_eq!(d.status, 202);
                    refused.fetch_add(d.refused, Ordering::Relaxed);
                    taken.fetch_add(PER_REQUEST, Ordering::Relaxed);
                }
            })
        })
        .collect();
    wait_until("a third of the load is answered", || {
        taken.load(Ordering::Relaxed) >= TOTAL / 3
    });
    // SIGKILL, mid-write; then the same aggregator comes back on the same ports.
    drop(aggregator);
    let at_kill = taken.load(Ordering::Relaxed);
    aggregator = scratch.aggregator(TOKEN, &ports.env());
    for s in senders {
        s.join().expect("a sender panicked");
    }
    assert!(at_kill < TOTAL, "the load ended before the kill");
    assert_eq!(taken.load(Ordering::Relaxed), TOTAL);
    wait_until("every answered event reaches the aggregator", || {
        delivered(edge) >= TOTAL as f64 && metric(edge, "sluice_edge_spool_bytes") == 0.0
    });
    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());
    let answered = messages("k", 0, TOTAL, 0);
    exactly_once(&log_counts(&scratch, "local.fault.kill"), &answered);
    eprintln!(
        "killed at {at_kill} of {TOTAL}; {} refusals retried",
        refused.load(Ordering::Relaxed)
    );
}

/// Posts `messages` hasty until the edge answers 202, through edge restarts:
/// a connection refused or cut (the edge killed) is tried again at the address
/// `edge` holds then, a 503 after its Retry-After (at most 200 ms).
fn send_through_restarts(edge: &Mutex<SocketAddr>, stream: &str, messages: &[String]) {
    let body = test_events_body(stream, messages);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(Instant::now() < deadline, "no 202 within 180 s");
        let at = *edge.lock().unwrap();
        let reply = http_call(
            at,
            "POST",
            "/v1/events?hasty=true",
            &[("Content-Type", "application/json")],
            &body,
        );
        match reply {
            Ok(r) if r.status == 202 => return,
            Ok(r) if r.status == 503 || r.status == 429 => {
                let secs: u64 = r
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .expect("a refusal says when to retry");
                std::thread::sleep(Duration::from_millis((secs * 1000).min(200)));
            }
            Ok(r) => panic!(
                "the edge answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ),
            // The edge is down: a client retries the same events.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn aggregator_then_edge_killed_under_hasty_load_lose_nothing_answered_202() {
    const SENDERS: usize = 6;
    let scratch = Scratch::new("fault.both");
    let ports = FixedPorts::new();
    let mut aggregator = scratch.aggregator(TOKEN, &ports.env());
    // The edge comes back on the same HTTP port, as behind a load balancer.
    let listen = format!("127.0.0.1:{}", free_port());
    let edge_env = [("SLUICE_EDGE_LISTEN", listen.as_ref())];
    let Edge {
        child: mut edge_child,
        http,
    } = scratch.edge(&aggregator, &edge_env);
    let edge = Arc::new(Mutex::new(http));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|t| {
            let (edge, stop, answered) = (edge.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut r = 0;
                while !stop.load(Ordering::Relaxed) {
                    let batch = messages("b", t * 10_000_000 + r * PER_REQUEST, PER_REQUEST, 200);
                    send_through_restarts(&edge, "fault.both", &batch);
                    answered.lock().unwrap().extend(batch);
                    r += 1;
                }
            })
        })
        .collect();
    let count = || answered.lock().unwrap().len();
    wait_until("20,000 events are answered 202", || count() >= 20_000);
    // SIGKILL the aggregator, then bring it back on the same ports.
    drop(aggregator);
    aggregator = scratch.aggregator(TOKEN, &ports.env());
    let at = count();
    wait_until("20,000 more are answered", || count() >= at + 20_000);
    // SIGKILL the edge with whatever it holds, then bring it back with its spool.
    let spooled_before = metric(http, "sluice_edge_events_total{outcome=\"spooled\"}");
    drop(edge_child);
    let killed_at = count();
    let Edge {
        child: restarted,
        http: again,
    } = scratch.edge(&aggregator, &edge_env);
    edge_child = restarted;
    assert_eq!(again, http);
    let at = count();
    wait_until("20,000 more are answered after the restart", || {
        count() >= at + 20_000
    });
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().expect("a sender panicked");
    }
    wait_until("the spool is forwarded", || {
        metric(http, "sluice_edge_spool_bytes") == 0.0
    });
    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());
    let answered = std::mem::take(&mut *answered.lock().unwrap());
    exactly_once(&log_counts(&scratch, "local.fault.both"), &answered);
    eprintln!(
        "{} events answered 202, the edge killed after {killed_at} (with {spooled_before} spooled); all in the sink once",
        answered.len()
    );
}

/// An edge sending hasty batches after 20 ms, with a spool of `max_bytes`.
fn small_spool_edge(scratch: &Scratch, aggregator: &Aggregator, max_bytes: &str) -> Edge {
    scratch.edge(
        aggregator,
        &[
            ("SLUICE_EDGE_BATCH__HASTY_AGE_MS", "20".as_ref()),
            ("SLUICE_EDGE_SPOOL__MAX_BYTES", max_bytes.as_ref()),
            ("SLUICE_EDGE_SPOOL__SEGMENT_BYTES", "524288".as_ref()),
        ],
    )
}

/// Sends requests of both kinds until `stop`, recording what was answered.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<Mutex<Vec<String>>>,
    refusals: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `threads` senders; every `guaranteed_every`-th request of each is guaranteed
    /// (0: none), the rest hasty.
    fn start(
        edge: SocketAddr,
        stream: &'static str,
        threads: usize,
        guaranteed_every: usize,
        tag: &'static str,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(Mutex::new(Vec::new()));
        let refusals = Arc::new(AtomicUsize::new(0));
        let threads = (0..threads)
            .map(|t| {
                let (stop, answered, refusals) = (stop.clone(), answered.clone(), refusals.clone());
                std::thread::spawn(move || {
                    let mut r = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let from = (t * 1_000_000) + r * PER_REQUEST;
                        let batch = messages(tag, from, PER_REQUEST, 300);
                        let hasty = guaranteed_every == 0 || r % guaranteed_every != 0;
                        send_counting(edge, stream, &batch, hasty, &refusals);
                        answered.lock().unwrap().extend(batch);
                        r += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            answered,
            refusals,
            threads,
        }
    }

    fn answered(&self) -> usize {
        self.answered.lock().unwrap().len()
    }

    fn finish(self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a sender panicked");
        }
        let answered = std::mem::take(&mut *self.answered.lock().unwrap());
        (answered, self.refusals.load(Ordering::Relaxed))
    }
}

#[test]
fn kafka_down_for_thirty_seconds_stops_acknowledgements_and_loses_nothing() {
    let cluster = MockCluster::<DefaultProducerContext>::new(1).expect("a mock cluster");
    let topic = "local.fault.kafka";
    cluster
        .create_topic(topic, 1, 1)
        .expect("the topic is created");
    let brokers = cluster.bootstrap_servers();
    let scratch = Scratch::new("fault.kafka");
    let mut aggregator = scratch.aggregator(
        TOKEN,
        &[("SLUICE_AGGREGATOR_KAFKA__BROKERS", brokers.as_ref())],
    );
    let Edge {
        child: mut edge_child,
        http: edge,
    } = small_spool_edge(&scratch, &aggregator, "4194304");
    let load = Load::start(edge, "fault.kafka", 2, 2, "f");
    wait_until("load flows", || load.answered() >= 5_000);

    cluster.broker_down(1).expect("the broker goes down");
    let down = Instant::now();
    let (mut edge_peak, mut aggregator_peak) = (0f64, 0f64);
    let mut answered_late = None;
    // The fault lasts 30 s; memory is sampled through it.
    while down.elapsed() < Duration::from_secs(30) {
        edge_peak = edge_peak.max(rss_mib(edge_child.0.id()));
        aggregator_peak = aggregator_peak.max(rss_mib(aggregator.child.0.id()));
        if answered_late.is_none() && down.elapsed() > Duration::from_secs(20) {
            answered_late = Some(load.answered());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let during = load.answered();
    let refusals = load.refusals.load(Ordering::Relaxed);
    // With the broker gone nothing is acknowledged: the spool fills to its bound, after
    // which senders are turned away with 503 and Retry-After.
    assert!(
        refusals > 0,
        "no request was refused while the broker was down"
    );
    assert_eq!(
        answered_late,
        Some(during),
        "requests were still answered 201/202 in the last ten seconds of the outage"
    );
    assert!(edge_peak < 150.0, "edge RSS reached {edge_peak:.0} MiB");
    assert!(
        aggregator_peak < 250.0,
        "aggregator RSS reached {aggregator_peak:.0} MiB"
    );
    let (http_status, _) = http_get(aggregator.http, "/readyz").expect("the aggregator answers");
    assert_eq!(
        http_status, 503,
        "an aggregator whose broker is down is not ready"
    );
    eprintln!(
        "outage: {refusals} refusals; peak RSS edge {edge_peak:.0} MiB, aggregator {aggregator_peak:.0} MiB; readyz {http_status}"
    );

    cluster.broker_up(1).expect("the broker comes back");
    wait_until("load flows again", || load.answered() >= during + 5_000);
    let (answered, _) = load.finish();
    wait_until("the edge's spool is empty", || {
        metric(edge, "sluice_edge_spool_bytes") == 0.0
    });
    // A last event, after everything: once it is read, so is every copy written before it.
    let marker = vec!["marker".to_owned()];
    assert_eq!(
        send_retrying(edge, "fault.kafka", &marker, false).status,
        201
    );
    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "sluice-faults")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    consumer.subscribe(&[topic]).expect("subscribed");
    let mut counts: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !counts.contains_key("marker") {
        assert!(Instant::now() < deadline, "the marker was not read back");
        let Some(Ok(msg)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let value: serde_json::Value =
            serde_json::from_slice(msg.payload().unwrap_or_default()).expect("JSON");
        let m = value["message"].as_str().unwrap_or_default();
        *counts
            .entry(if m == "marker" { m.to_owned() } else { key(m) })
            .or_default() += 1;
    }
    counts.remove("marker");
    exactly_once(&counts, &answered);
}

#[test]
fn a_slow_aggregator_gets_the_edge_to_refuse_not_to_grow() {
    let scratch = Scratch::new("fault.slow");
    let mut aggregator = scratch.aggregator(TOKEN, &[]);
    let Edge {
        child: mut edge_child,
        http: edge,
    } = small_spool_edge(&scratch, &aggregator, "2097152");
    let pid = aggregator.child.0.id();
    let load = Load::start(edge, "fault.slow", 8, 0, "s");
    wait_until("load flows", || load.answered() >= 2_000);
    // The aggregator runs 50 ms in every 500 (stopped the rest): a tenth of its speed,
    // far below what eight senders ask of it.
    let slow = Instant::now();
    let mut edge_peak = 0f64;
    while slow.elapsed() < Duration::from_secs(15) {
        signal(pid, "STOP");
        std::thread::sleep(Duration::from_millis(450));
        signal(pid, "CONT");
        std::thread::sleep(Duration::from_millis(50));
        edge_peak = edge_peak.max(rss_mib(edge_child.0.id()));
    }
    let refusals = load.refusals.load(Ordering::Relaxed);
    assert!(
        refusals > 0,
        "the edge never refused while its aggregator lagged"
    );
    assert!(edge_peak < 150.0, "edge RSS reached {edge_peak:.0} MiB");
    let (answered, _) = load.finish();
    wait_until(
        "the edge's spool is empty and every answer delivered",
        || {
            metric(edge, "sluice_edge_spool_bytes") == 0.0
                && delivered(edge) >= answered.len() as f64
        },
    );
    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());
    exactly_once(&log_counts(&scratch, "local.fault.slow"), &answered);
    eprintln!(
        "slow aggregator: {} events answered, {refusals} refusals, edge peak RSS {edge_peak:.0} MiB",
        answered.len()
    );
}

/// Posts 50-event batches of about 1 KB events until one is refused (at most
/// 20 MB in all); the messages answered 201/202 before it, the refused batch,
/// and the refusal's body. The refusal must be a 503 with Retry-After.
fn post_until_refused(
    edge: SocketAddr,
    stream: &str,
    tag: &str,
    hasty: bool,
) -> (Vec<String>, Vec<String>, String) {
    let (path, taken) = if hasty {
        ("/v1/events?hasty=true", 202)
    } else {
        ("/v1/events", 201)
    };
    let mut answered = Vec::new();
    for r in 0..400 {
        let batch = messages(tag, r * PER_REQUEST, PER_REQUEST, 1000);
        let reply = sluice_tests::http_call(
            edge,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            &sluice_tests::test_events_body(stream, &batch),
        )
        .expect("the edge answers");
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        match reply.status {
            s if s == taken => answered.extend(batch),
            503 => {
                assert!(
                    reply.header("retry-after").is_some(),
                    "503 without Retry-After"
                );
                return (answered, batch, body);
            }
            other => panic!("{other}: {body}"),
        }
    }
    panic!("a full disk never refused a request");
}

#[test]
fn a_full_disk_under_the_embedded_log_is_a_503_and_heals() {
    let scratch = Scratch::new("fault.disk");
    let disk = SmallDisk::mount(&scratch.data, 16);
    let mut aggregator = scratch.aggregator(TOKEN, &[]);
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(&aggregator, &[]);
    disk.fill_leaving(1024);
    let (mut answered, refused, body) = post_until_refused(edge, "fault.disk", "d", false);
    assert!(
        body.contains("No space left on device"),
        "the 503 does not say why: {body}"
    );
    let (ready, _) = http_get(aggregator.http, "/readyz").expect("the aggregator answers");
    assert_eq!(
        ready, 503,
        "an aggregator that cannot write says it is not ready"
    );

    // Space comes back: the refused batch goes through and so do new ones.
    disk.free();
    assert_eq!(
        send_retrying(edge, "fault.disk", &refused, false).status,
        201
    );
    answered.extend(refused);
    let more = messages("d", 1_000_000, PER_REQUEST, 1000);
    assert_eq!(send_retrying(edge, "fault.disk", &more, false).status, 201);
    answered.extend(more);
    let (ready, _) = http_get(aggregator.http, "/readyz").expect("the aggregator answers");
    assert_eq!(ready, 200);
    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());

    // No corruption: the log opens with nothing to cut, each answered event once.
    let log = sluice_log::Log::open(&scratch.data.join("log"), sluice_log::LogOptions::default())
        .expect("the log opens");
    assert_eq!(log.recovered_bytes(), 0, "the log had a torn tail");
    drop(log);
    exactly_once(&log_counts(&scratch, "local.fault.disk"), &answered);
}

#[test]
fn a_full_disk_under_the_spool_is_a_503_and_heals() {
    let scratch = Scratch::new("fault.spool");
    let ports = FixedPorts::new();
    let mut aggregator = scratch.aggregator(TOKEN, &ports.env());
    let disk = SmallDisk::mount(&scratch.root.join("edge"), 16);
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(
        &aggregator,
        &[("SLUICE_EDGE_BATCH__HASTY_AGE_MS", "20".as_ref())],
    );
    assert!(terminate(&mut aggregator.child).success());
    disk.fill_leaving(512);
    let (mut answered, refused, body) = post_until_refused(edge, "fault.spool", "p", true);
    assert!(
        body.contains("spool cannot be written"),
        "the 503 does not say why: {body}"
    );
    assert!(!answered.is_empty());

    // Space comes back, then the aggregator: everything answered 202 arrives once.
    disk.free();
    assert_eq!(
        send_retrying(edge, "fault.spool", &refused, true).status,
        202
    );
    answered.extend(refused);
    let mut aggregator = scratch.aggregator(TOKEN, &ports.env());
    wait_until("the spool is replayed", || {
        metric(edge, "sluice_edge_spool_bytes") == 0.0 && delivered(edge) >= answered.len() as f64
    });
    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());
    exactly_once(&log_counts(&scratch, "local.fault.spool"), &answered);
}
