//! The aggregator process with a real Kafka-protocol broker process
//! (tansu) as its sink: 2,000 events in 40 batches over HTTP, some batches
//! sent twice, and the topic read back with rdkafka holds every event
//! exactly once, with its key, timestamp and headers.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use sluice_shared::{Batch, BatchEvent, EventAck};
use sluice_tests::{Aggregator, Scratch, Tansu, numbered_event, post_batch, terminate};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TOKEN: &str = "kafka-test-token";
const TOPIC: &str = "local.kafka.test";
const BATCHES: usize = 40;
const PER_BATCH: usize = 50;

fn batch(b: usize) -> Batch {
    numbered(b, b * PER_BATCH..(b + 1) * PER_BATCH)
}

/// Batch `b` of the events numbered `ns`; event n has key `k{n % 7}` and is stamped n ms after a fixed time.
fn numbered(b: usize, ns: std::ops::Range<usize>) -> Batch {
    let events = ns
        .map(|n| BatchEvent {
            partition_key: Some(format!("k{}", n % 7)),
            ..numbered_event("kafka.test", TOPIC, n as u64, 1_795_780_800_000 + n as i64)
        })
        .collect();
    Batch {
        id: [b as u8; 16],
        events,
        errors: Vec::new(),
    }
}

fn send(addr: SocketAddr, b: &Batch) -> Vec<EventAck> {
    post_batch(addr, TOKEN, b)
        .expect("the aggregator acknowledges the batch")
        .verdicts
}

#[test]
fn every_event_reaches_a_real_broker_exactly_once() {
    let tansu = Tansu::start();
    tansu.create_topic(TOPIC, 3);
    let scratch = Scratch::new("kafka.test");
    let Aggregator {
        child: mut aggregator,
        http: addr,
        ..
    } = scratch.aggregator(
        TOKEN,
        &[("SLUICE_AGGREGATOR_KAFKA__BROKERS", tansu.brokers.as_ref())],
    );

    for b in 0..BATCHES {
        assert_eq!(send(addr, &batch(b)), vec![EventAck::Accepted; PER_BATCH]);
    }
    // Retries of acknowledged batches are duplicates, and write nothing.
    for b in [0, 17, BATCHES - 1] {
        assert_eq!(send(addr, &batch(b)), vec![EventAck::Duplicate; PER_BATCH]);
    }
    // Then one marker per key. A second copy of any event would have gone to its key's
    // partition before that key's marker, so once every marker is read, so is every copy.
    let total = BATCHES * PER_BATCH;
    let markers = numbered(BATCHES, total..total + 7);
    assert_eq!(send(addr, &markers), vec![EventAck::Accepted; 7]);
    let total = total + 7;

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &tansu.brokers)
        .set("group.id", "sluice-e2e")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < total && Instant::now() < deadline {
        let Some(Ok(msg)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        read += 1;
        let value: serde_json::Value =
            serde_json::from_slice(msg.payload().unwrap_or_default()).unwrap();
        let n = value["n"].as_u64().unwrap() as usize;
        *seen.entry(n).or_default() += 1;
        assert_eq!(msg.key(), Some(format!("k{}", n % 7).as_bytes()));
        assert_eq!(
            msg.timestamp().to_millis(),
            Some(1_795_780_800_000 + n as i64)
        );
        let headers = msg.headers().expect("headers");
        let id = headers
            .iter()
            .find(|h| h.key == "event_id")
            .and_then(|h| h.value);
        assert_eq!(id, Some(&(n as u128 + 1).to_be_bytes()[..]));
    }
    assert_eq!(seen.len(), total, "read {} of {total} events", seen.len());
    assert_eq!(read, total, "{} records are second copies", read - total);
    assert!(seen.values().all(|&c| c == 1));

    // SIGTERM: the producer is flushed, the completion thread answers the rest, and it exits cleanly.
    let exit = terminate(&mut aggregator);
    assert!(exit.success(), "the aggregator exited with {exit}");
}
