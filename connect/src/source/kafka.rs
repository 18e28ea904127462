//! Kafka as a source: one consumer in the group `sluice-connect-<sink>`, so
//! that every `sluice connect` process running the sink shares the
//! partitions and takes over those of one that stops. Offsets are not
//! auto-committed: on every assignment each partition is started at the
//! position the store holds (read in the rebalance callback, before any
//! record of it is fetched); the group's offsets are committed after the
//! store's only as a courtesy to tools that watch consumer lag.

use super::{Assignment, Lookup, Source, SourceError, SourceRecord, Tp};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use sluice_shared::record_headers::SCHEMA_URI;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Rebalance handling: start positions from the store.
struct Rebalancer {
    lookup: Mutex<Lookup>,
    /// The assignment made in the last callback, for the runner.
    fresh: Mutex<Option<Assignment>>,
    /// Topics whose partitions stay paused across assignments.
    paused: Mutex<BTreeSet<String>>,
    /// Topic names shared with the records.
    names: HashMap<String, Arc<str>>,
    /// The partitions assigned last are held paused: the store did not answer for their positions.
    unpositioned: AtomicBool,
    /// A partition the lookup has no position for starts at the group's committed offset
    /// (processors, whose positions are the group's) rather than at its beginning.
    from_group: AtomicBool,
}

impl ClientContext for Rebalancer {}

impl Rebalancer {
    /// Where a partition without a position in the store starts.
    fn unpositioned_start(&self) -> Offset {
        if self.from_group.load(Ordering::Relaxed) {
            Offset::Stored
        } else {
            Offset::Beginning
        }
    }

    fn name(&self, topic: &str) -> Arc<str> {
        self.names
            .get(topic)
            .cloned()
            .unwrap_or_else(|| Arc::from(topic))
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let tps: Vec<Tp> = tpl
            .elements()
            .iter()
            .map(|e| (self.name(e.topic()), e.partition()))
            .collect();
        let looked = match self.lookup.lock() {
            Ok(mut lookup) => lookup(&tps),
            Err(_) => Err("the positions lookup panicked earlier".to_owned()),
        };
        let positions = match looked {
            Ok(p) => p,
            Err(why) => {
                // Without the store's positions nothing may be read. The partitions are taken
                // (the group counts on it) but held paused, and the runner hears of no partition
                // until `poll` has read their positions and sought to them.
                tracing::error!(%why, "Cannot read positions from the store on assignment; holding the partitions paused until it answers.");
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "Kafka refused the assignment.");
                }
                let _ = consumer.pause(tpl);
                self.unpositioned.store(true, Ordering::Relaxed);
                if let Ok(mut fresh) = self.fresh.lock() {
                    *fresh = Some(Assignment::new());
                }
                return;
            }
        };
        self.unpositioned.store(false, Ordering::Relaxed);
        let mut assignment = Assignment::new();
        for ((topic, partition), at) in tps.into_iter().zip(positions) {
            let offset = at.map_or(self.unpositioned_start(), Offset::Offset);
            if let Err(e) = tpl.set_partition_offset(&topic, partition, offset) {
                tracing::error!(%topic, partition, error = %e, "Cannot set a start position.");
            }
            assignment.insert((topic, partition), at);
        }
        if let Err(e) = consumer.assign(tpl) {
            tracing::error!(error = %e, "Kafka refused the assignment.");
        }
        tracing::info!(
            partitions = assignment.len(),
            "Partitions assigned; each starts where the store's positions say."
        );
        self.pause_again(consumer);
        if let Ok(mut fresh) = self.fresh.lock() {
            *fresh = Some(assignment);
        }
    }

    fn pause_again(&self, consumer: &BaseConsumer<Self>) {
        let Ok(paused) = self.paused.lock() else {
            return;
        };
        let Ok(assigned) = consumer.assignment() else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for e in assigned.elements() {
            if paused.contains(e.topic()) {
                tpl.add_partition(e.topic(), e.partition());
            }
        }
        if tpl.count() > 0 {
            let _ = consumer.pause(&tpl);
        }
    }
}

impl ConsumerContext for Rebalancer {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let _ = consumer.unassign();
                self.unpositioned.store(false, Ordering::Relaxed);
                tracing::info!(partitions = tpl.count(), "Partitions revoked.");
                if let Ok(mut fresh) = self.fresh.lock() {
                    *fresh = Some(Assignment::new());
                }
            }
            other => tracing::error!(error = ?other, "Kafka rebalance failed."),
        }
    }
}

/// How often the group's offsets are committed (after the store's).
const COMMIT_EVERY: Duration = Duration::from_secs(2);
/// How long a partition with a full prefetch queue waits before it is fetched again (a source's
/// extra settings may set `fetch.queue.backoff.ms` otherwise: `[source.kafka]` of a connector,
/// `--kafka-option` of a processor).
const FETCH_QUEUE_BACKOFF_MS: &str = "20";

/// A consumer of the sink's topics in its group.
pub struct KafkaSource {
    consumer: BaseConsumer<Rebalancer>,
    topics: Vec<String>,
    /// Positions the store holds that the group has not been told of yet.
    uncommitted: HashMap<Tp, i64>,
    committed_at: Instant,
}

impl KafkaSource {
    /// Joins `group` at `brokers` (with `extra` librdkafka settings) and subscribes to `topics`
    /// and to the topics the `^`-regexes `patterns` match.
    pub fn open(
        brokers: &str,
        group: &str,
        extra: &BTreeMap<String, String>,
        topics: Vec<Arc<str>>,
        patterns: &[String],
        lookup: Lookup,
    ) -> Result<Self, SourceError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            // A partition whose prefetched records pass the queue's limits is not fetched again
            // for this long; at the client's default (1 s) a reader that drains a backlog faster
            // than that waited about half a second, every time, for the records after it.
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
        for (k, v) in extra {
            config.set(k, v);
        }
        let context = Rebalancer {
            lookup: Mutex::new(lookup),
            fresh: Mutex::new(None),
            paused: Mutex::new(BTreeSet::new()),
            names: topics.iter().map(|t| (t.to_string(), t.clone())).collect(),
            unpositioned: AtomicBool::new(false),
            from_group: AtomicBool::new(false),
        };
        let consumer: BaseConsumer<Rebalancer> = config.create_with_context(context)?;
        let names: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        // Streams configured by `/regex/`: librdkafka subscribes to every topic a `^` pattern
        // matches, now and as topics appear.
        let refs: Vec<&str> = names.iter().chain(patterns).map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        Ok(KafkaSource {
            consumer,
            topics: names,
            uncommitted: HashMap::new(),
            committed_at: Instant::now(),
        })
    }
}

impl Source for KafkaSource {
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<SourceRecord>, SourceError> {
        if self.consumer.context().unpositioned.load(Ordering::Relaxed) {
            self.position_held()?;
        }
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            // Once some records are in, take only what is already fetched.
            let timeout = if out.is_empty() { left } else { Duration::ZERO };
            match self.consumer.poll(timeout) {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Kafka consumer error.");
                    if out.is_empty() && Instant::now() < deadline {
                        continue;
                    }
                    break;
                }
                Some(Ok(m)) => {
                    let schema_uri = m.headers().and_then(|h| {
                        h.iter()
                            .find(|h| h.key == SCHEMA_URI)
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    });
                    out.push(SourceRecord {
                        topic: self.consumer.context().name(m.topic()),
                        partition: m.partition(),
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                        schema_uri,
                        value: m.payload().unwrap_or_default().to_vec(),
                    });
                }
            }
            if self
                .consumer
                .context()
                .fresh
                .lock()
                .is_ok_and(|f| f.is_some())
            {
                // A rebalance happened: hand the records over so the runner sees it in order.
                break;
            }
        }
        Ok(out)
    }

    fn take_assignment(&mut self) -> Option<Assignment> {
        let fresh = self.consumer.context().fresh.lock().ok()?.take();
        if fresh.is_some() {
            // Positions of partitions that may have moved to another member are not ours to commit.
            self.uncommitted.clear();
        }
        fresh
    }

    fn rewind(&mut self) -> Result<Assignment, SourceError> {
        let assigned = self.consumer.assignment()?;
        let context = self.consumer.context();
        let tps: Vec<Tp> = assigned
            .elements()
            .iter()
            .map(|e| (context.name(e.topic()), e.partition()))
            .collect();
        let positions = match context.lookup.lock() {
            Ok(mut lookup) => lookup(&tps),
            Err(_) => Err("the positions lookup panicked earlier".to_owned()),
        }
        .map_err(SourceError::Positions)?;
        let mut tpl = TopicPartitionList::new();
        let mut assignment = Assignment::new();
        for ((topic, partition), at) in tps.into_iter().zip(positions) {
            let start = match at {
                Some(n) => Offset::Offset(n),
                None if context.from_group.load(Ordering::Relaxed) => {
                    // A seek needs an offset: the group's committed one, else the beginning.
                    let mut one = TopicPartitionList::new();
                    one.add_partition(&topic, partition);
                    self.consumer
                        .committed_offsets(one, Duration::from_secs(10))?
                        .elements()
                        .first()
                        .map(|e| e.offset())
                        .filter(|o| matches!(o, Offset::Offset(_)))
                        .unwrap_or(Offset::Beginning)
                }
                None => Offset::Beginning,
            };
            tpl.add_partition_offset(&topic, partition, start)?;
            assignment.insert((topic, partition), at);
        }
        // A seek restarts fetching at the positions and drops what was prefetched before it;
        // the group's assignment itself is left to the group (assigning here, outside the
        // rebalance callback, would replace it behind the coordinator's back).
        if tpl.count() > 0 {
            let sought = self
                .consumer
                .seek_partitions(tpl, Duration::from_secs(10))?;
            for e in sought.elements() {
                if let Err(why) = e.error() {
                    return Err(SourceError::Kafka(why));
                }
            }
        }
        Ok(assignment)
    }

    fn pause(&mut self, topic: &str) {
        if let Ok(mut paused) = self.consumer.context().paused.lock() {
            paused.insert(topic.to_owned());
        }
        self.consumer.context().pause_again(&self.consumer);
    }

    fn ends(&mut self) -> Vec<(Tp, i64)> {
        let Ok(assigned) = self.consumer.assignment() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in assigned.elements() {
            if let Ok((_, high)) =
                self.consumer
                    .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2))
            {
                out.push((
                    (self.consumer.context().name(e.topic()), e.partition()),
                    high,
                ));
            }
        }
        out
    }

    fn close(&mut self) {
        if let Err(e) = self.commit_now() {
            tracing::warn!(error = %e, "The group's last offsets could not be committed; the next member repeats from the ones before.");
        }
        // Leaving the group now hands the partitions over at once, rather than after the
        // session times out.
        self.consumer.unsubscribe();
    }

    fn written(&mut self, positions: &[(Tp, i64)]) {
        for (tp, next) in positions {
            self.uncommitted.insert(tp.clone(), *next);
        }
        // A courtesy to lag tools, so at most every few seconds: a commit refused during a
        // rebalance is then one warning, not one per batch.
        if self.committed_at.elapsed() < COMMIT_EVERY || self.uncommitted.is_empty() {
            return;
        }
        self.committed_at = Instant::now();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in std::mem::take(&mut self.uncommitted) {
            let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(next));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "Committing the group's offsets failed; the store's positions stand.");
        }
    }
}

impl KafkaSource {
    /// Partitions taken while the store was away: seek them to the store's positions now and
    /// let them be read (those of stopped streams stay paused).
    fn position_held(&mut self) -> Result<(), SourceError> {
        let assignment = self.rewind()?;
        let context = self.consumer.context();
        let mut tpl = TopicPartitionList::new();
        if let Ok(paused) = context.paused.lock() {
            for (topic, partition) in assignment.keys() {
                if !paused.contains(&**topic) {
                    tpl.add_partition(topic, *partition);
                }
            }
        }
        if tpl.count() > 0 {
            self.consumer.resume(&tpl)?;
        }
        context.unpositioned.store(false, Ordering::Relaxed);
        tracing::info!(
            partitions = assignment.len(),
            "The store answers again: the held partitions start at its positions."
        );
        if let Ok(mut fresh) = context.fresh.lock() {
            *fresh = Some(assignment);
        }
        Ok(())
    }

    /// Partitions the lookup has no position for start at the group's committed offsets (set
    /// before the first poll): for readers whose positions are the group's own.
    pub fn positions_in_group(&self) {
        self.consumer
            .context()
            .from_group
            .store(true, Ordering::Relaxed);
    }

    /// Commits the positions `written` was told of and not yet committed, and waits for the
    /// group to take them (before leaving it).
    pub fn commit_now(&mut self) -> Result<(), SourceError> {
        if self.uncommitted.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in std::mem::take(&mut self.uncommitted) {
            tpl.add_partition_offset(&topic, partition, Offset::Offset(next))?;
        }
        self.committed_at = Instant::now();
        self.consumer.commit(&tpl, CommitMode::Sync)?;
        Ok(())
    }

    /// The group's member: its metadata for transactions that commit offsets.
    pub fn consumer(&self) -> &BaseConsumer<impl ConsumerContext> {
        &self.consumer
    }

    /// The topics subscribed to.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }
}
