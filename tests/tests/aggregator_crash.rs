//! The aggregator process is killed (SIGKILL) while batches stream in, then
//! restarted; every batch is sent again. Every event must be in the embedded
//! log exactly once: nothing acknowledged is lost, nothing is written twice.

use sluice_log::{Log, LogOptions};
use sluice_shared::{Batch, BatchAck, EventAck};
use sluice_tests::{Aggregator, Scratch, numbered_event, post_batch};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

const TOKEN: &str = "crash-test-token";
const BATCHES: usize = 400;
const PER_BATCH: usize = 50;

fn batch(b: usize) -> Batch {
    let events = (0..PER_BATCH)
        .map(|i| {
            numbered_event(
                "crash.test",
                "local.crash.test",
                (b * PER_BATCH + i) as u64,
                now_ms(),
            )
        })
        .collect();
    Batch {
        id: [b as u8; 16],
        events,
        errors: Vec::new(),
    }
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

fn send(addr: SocketAddr, b: &Batch) -> Option<BatchAck> {
    post_batch(addr, TOKEN, b)
}

#[test]
fn killed_mid_stream_then_restarted_keeps_every_event_exactly_once() {
    let scratch = Scratch::new("crash.test");

    // Round one: stream batches from a sender thread; kill the aggregator once a third are acknowledged.
    let Aggregator {
        mut child,
        http: addr,
        ..
    } = scratch.aggregator(TOKEN, &[]);
    let acked = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let sender = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            let mut results = Vec::new();
            for b in 0..BATCHES {
                let ack = send(addr, &batch(b));
                if ack.is_some() {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                if ack.is_none() {
                    let _ = tx.send(());
                }
                results.push(ack);
            }
            results
        })
    };
    while acked.load(Ordering::SeqCst) < BATCHES / 3 {
        assert!(
            !sender.is_finished(),
            "the sender stopped before a third of the batches were acknowledged"
        );
        std::thread::yield_now();
    }
    child.0.kill().expect("SIGKILL is delivered");
    child.0.wait().unwrap();
    let first_round = sender.join().unwrap();
    assert!(
        rx.try_recv().is_ok(),
        "some batches must have failed after the kill"
    );
    let acked_first: Vec<usize> = first_round
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_some())
        .map(|(b, _)| b)
        .collect();
    for b in &acked_first {
        let ack = first_round[*b].as_ref().unwrap();
        assert!(
            ack.verdicts.iter().all(|v| *v == EventAck::Accepted),
            "batch {b}: {:?}",
            ack.verdicts
        );
    }

    // Round two: restart on the same data and send everything again, as retrying clients would.
    let Aggregator {
        child, http: addr, ..
    } = scratch.aggregator(TOKEN, &[]);
    for b in 0..BATCHES {
        let ack = send(addr, &batch(b))
            .unwrap_or_else(|| panic!("batch {b} is acknowledged after the restart"));
        // Acknowledged before the kill: all duplicates. Unacknowledged: new, or duplicates where the
        // batch reached the disk but its answer did not reach the sender.
        let ok = if acked_first.contains(&b) {
            ack.verdicts.iter().all(|v| *v == EventAck::Duplicate)
        } else {
            ack.verdicts
                .iter()
                .all(|v| matches!(v, EventAck::Accepted | EventAck::Duplicate))
        };
        assert!(ok, "batch {b}: {:?}", ack.verdicts);
    }
    drop(child);

    // The log holds every event exactly once.
    let log = Log::open(&scratch.data.join("log"), LogOptions::default()).unwrap();
    let records = log.read("local.crash.test", 0, usize::MAX).unwrap();
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in &records {
        *seen.entry(r.value.clone()).or_default() += 1;
    }
    assert_eq!(
        records.len(),
        BATCHES * PER_BATCH,
        "{} records",
        records.len()
    );
    assert!(seen.values().all(|&c| c == 1));
}
