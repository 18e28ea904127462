//! The aggregator process is stopped with SIGTERM while batches stream in:
//! it exits cleanly (status 0) once the sink has answered what it took, and
//! every batch it acknowledged is in the embedded log exactly once.

use sluice_log::{Log, LogOptions};
use sluice_shared::{Batch, EventAck};
use sluice_tests::{Aggregator, Scratch, numbered_event, post_batch, terminate};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const TOKEN: &str = "stop-test-token";
const PER_BATCH: usize = 50;

#[test]
fn sigterm_drains_and_loses_nothing_acknowledged() {
    let scratch = Scratch::new("stop.test");
    let Aggregator {
        mut child,
        http: addr,
        ..
    } = scratch.aggregator(TOKEN, &[]);

    // Four senders stream batches until the aggregator stops answering.
    let acked = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..4)
        .map(|s| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for b in 0.. {
                    let first = (s * 1_000_000 + b * PER_BATCH) as u64;
                    let batch = Batch {
                        id: (u128::from(first) + 1).to_be_bytes(),
                        events: (first..first + PER_BATCH as u64)
                            .map(|n| {
                                numbered_event("stop.test", "local.stop.test", n, 1_795_780_800_000)
                            })
                            .collect(),
                        errors: Vec::new(),
                    };
                    let Some(ack) = post_batch(addr, TOKEN, &batch) else {
                        break;
                    };
                    assert_eq!(ack.verdicts, vec![EventAck::Accepted; PER_BATCH]);
                    acked.fetch_add(1, Ordering::SeqCst);
                    got.push(first);
                }
                got
            })
        })
        .collect();
    while acked.load(Ordering::SeqCst) < 40 {
        assert!(
            senders.iter().all(|s| !s.is_finished()),
            "a sender stopped before 40 batches were acknowledged"
        );
        std::thread::yield_now();
    }
    let exit = terminate(&mut child);
    assert!(exit.success(), "the aggregator exited with {exit}");
    let acknowledged: Vec<u64> = senders
        .into_iter()
        .flat_map(|s| s.join().unwrap())
        .collect();

    // Everything acknowledged is in the log, once.
    let log = Log::open(&scratch.data.join("log"), LogOptions::default()).unwrap();
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for r in log.read("local.stop.test", 0, usize::MAX).unwrap() {
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        *counts.entry(v["n"].as_u64().unwrap()).or_default() += 1;
    }
    assert!(
        counts.values().all(|&c| c == 1),
        "an event was written twice"
    );
    for first in acknowledged {
        for n in first..first + PER_BATCH as u64 {
            assert_eq!(
                counts.get(&n),
                Some(&1),
                "acknowledged event {n} is not in the log"
            );
        }
    }
}
