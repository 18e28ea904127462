//! Kafka to Kafka exactly once, for a rule that only writes events
//! (`produce`, `derive`): the records read in 100 ms (Kafka Streams' commit
//! interval under exactly-once) become one Kafka transaction holding the
//! events the rule makes from them and the consumer group's new offsets
//! (`send_offsets_to_transaction`), so the events and the fact that their
//! sources were read are committed together or not at all. A member
//! that dies mid-transaction leaves nothing a `read_committed` reader sees,
//! and the member that takes its partitions over starts at the offsets the
//! last committed transaction wrote.
//!
//! The events go through the edge's own pipeline ([`Intake`] over the same
//! schemas and stream config), so they are validated, enriched and keyed as
//! every event is, and are written as the aggregator writes records: topic,
//! key, `meta.dt` as the timestamp, and the `schema_uri`, `event_id` and
//! `stream` headers. An event the pipeline refuses goes to the error stream,
//! in the same transaction. Each poll's records are shared among a thread per
//! core (up to four) in runs of consecutive records, and their events are
//! written in read order.

use crate::events::{self, Stamp};
use crate::metrics::{ProcessMetrics, RuleLabel};
use crate::plan::{Step, plan_rule};
use crate::rules::Rule;
use crate::runner::{Settings, SourceKind};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use sluice_connect::source::{KafkaSource, Lookup, Source, SourceRecord, Tp};
use sluice_shared::record_headers::{EVENT_ID, SCHEMA_URI, STREAM};
use sluice_shared::{BatchEvent, EventIds, Intake, RequestMeta, Verdict};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a transaction's steps may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// Records one poll hands over at most.
const TXN_RECORDS: usize = 1000;
/// How long a transaction gathers polls before it is committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// Events one transaction holds at most.
const TXN_EVENTS: u64 = 50_000;
/// Threads that make events at most.
const MAKERS: usize = 4;
/// Records a maker thread takes at least (fewer are not worth a thread).
const MIN_SHARE: usize = 250;
/// How long each wait for delivery reports is (the client's poll always waits its whole length).
const FLUSH_STEP: Duration = Duration::from_millis(1);
/// How long a poll waits for records when no transaction is open.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// Why exactly-once processing stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExactlyOnceError {
    /// Kafka refused or failed.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The source failed.
    #[error(transparent)]
    Source(#[from] sluice_connect::source::SourceError),
    /// The consumer has no group metadata to commit offsets with.
    #[error("the consumer has no group metadata")]
    NoGroup,
}

/// A produce-only rule over Kafka, in transactions.
pub struct ExactlyOnce {
    rule: Rule,
    label: RuleLabel,
    /// One per thread that makes events; a poll's records are shared among them.
    makers: Vec<Maker>,
    producer: BaseProducer,
    source: KafkaSource,
    metrics: ProcessMetrics,
}

/// Makes a rule's events from records, through the edge's pipeline.
struct Maker {
    rule: Rule,
    label: RuleLabel,
    intake: Arc<Intake>,
    ids: EventIds,
    metrics: ProcessMetrics,
    error_stream: String,
}

/// The transaction under way.
struct Open {
    since: Instant,
    /// Records read into it.
    records: u64,
    /// Events written in it.
    events: u64,
    /// Each partition's next offset.
    offsets: HashMap<Tp, i64>,
}

impl Open {
    fn new() -> Self {
        Open {
            since: Instant::now(),
            records: 0,
            events: 0,
            offsets: HashMap::new(),
        }
    }

    /// Adds one poll's work.
    fn with(mut self, made: Made) -> Self {
        self.records += made.records;
        self.events += made.events.len() as u64;
        self.offsets.extend(made.offsets);
        self
    }
}

/// What one poll's records made.
struct Made {
    /// Accepted events, to write.
    events: Vec<BatchEvent>,
    /// Each partition's next offset.
    offsets: HashMap<Tp, i64>,
    /// Records read.
    records: u64,
}

impl ExactlyOnce {
    /// Joins the rule's consumer group and opens a transactional producer for `rule`; `None`
    /// when `settings` do not read Kafka.
    pub fn open(
        rule: Rule,
        intake: Arc<Intake>,
        settings: &Settings,
        metrics: ProcessMetrics,
    ) -> Result<Option<Self>, ExactlyOnceError> {
        let SourceKind::Kafka { brokers, extra } = &settings.source else {
            return Ok(None);
        };
        let group = format!("{}.{}", settings.group_prefix, rule.name);
        let topics: Vec<Arc<str>> = rule
            .topics
            .iter()
            .map(|s| Arc::from((settings.topic)(s)))
            .collect();
        let error_stream = settings.streams.error.clone();
        let mut consumer_extra = extra.clone();
        consumer_extra.insert("isolation.level".into(), "read_committed".into());
        let lookup: Lookup = Box::new(|tps: &[Tp]| Ok(vec![None; tps.len()]));
        let source = KafkaSource::open(brokers, &group, &consumer_extra, topics, &[], lookup)?;
        source.positions_in_group();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set(
                "transactional.id",
                format!("{group}.{}", uuid::Uuid::from_u128(random_u128()).simple()),
            )
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        for (k, v) in extra {
            if !k.starts_with("session.") && !k.starts_with("heartbeat.") {
                config.set(k, v);
            }
        }
        let producer: BaseProducer = config.create()?;
        producer.init_transactions(TXN_TIMEOUT)?;
        let label = RuleLabel {
            rule: rule.name.clone(),
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAKERS));
        let makers = (0..threads)
            .map(|n| Maker {
                rule: rule.clone(),
                label: label.clone(),
                intake: Arc::clone(&intake),
                ids: EventIds::with_seed(u64::from(std::process::id()) << 8 | n as u64),
                metrics: metrics.clone(),
                error_stream: error_stream.clone(),
            })
            .collect();
        Ok(Some(ExactlyOnce {
            label,
            rule,
            makers,
            producer,
            source,
            metrics,
        }))
    }

    /// Runs until `stop` turns true.
    ///
    /// A transaction stays open over several polls, as Kafka Streams' commit interval does
    /// under exactly-once: the fixed cost of a transaction (adding partitions, the offsets,
    /// the commit's round trips) is paid once per [`COMMIT_INTERVAL`] or [`TXN_EVENTS`]
    /// events, not once per poll. It is committed early when the source has nothing more.
    pub fn run(mut self, stop: watch::Receiver<bool>) -> Result<(), ExactlyOnceError> {
        let mut open: Option<Open> = None;
        while !*stop.borrow() {
            if self.source.take_assignment().is_some() {
                tracing::info!(rule = %self.rule.name, "Partitions assigned; each starts at the group's committed offset.");
                if open.take().is_some() {
                    // Some of its records may come from partitions another member now reads.
                    self.abandon()?;
                }
            }
            let wait = open.as_ref().map_or(POLL_WAIT, |t| {
                COMMIT_INTERVAL.saturating_sub(t.since.elapsed())
            });
            let records = self.source.poll(TXN_RECORDS, wait)?;
            let caught_up = records.is_empty();
            if caught_up && open.is_none() {
                self.producer.poll(Duration::ZERO);
                continue;
            }
            if !caught_up {
                let made = self.make(records);
                let txn = match open.take() {
                    Some(t) => t,
                    None => {
                        self.producer.begin_transaction()?;
                        Open::new()
                    }
                };
                match self.send(&made.events) {
                    Ok(()) => open = Some(txn.with(made)),
                    Err(e) => {
                        tracing::warn!(rule = %self.rule.name, error = %e, "A transaction failed; it is aborted and its records read again.");
                        self.abandon()?;
                        continue;
                    }
                }
            }
            let due = open.as_ref().is_some_and(|t| {
                caught_up || t.events >= TXN_EVENTS || t.since.elapsed() >= COMMIT_INTERVAL
            });
            if due && let Some(t) = open.take() {
                self.finish(t)?;
            }
        }
        if let Some(t) = open.take() {
            self.finish(t)?;
        }
        self.source.close();
        Ok(())
    }

    /// Commits `txn`; a commit that fails is aborted and its records read again.
    fn finish(&mut self, txn: Open) -> Result<(), ExactlyOnceError> {
        let started = Instant::now();
        match self.commit(&txn.offsets) {
            Ok(()) => {
                tracing::debug!(rule = %self.rule.name, events = txn.events, records = txn.records, open_ms = txn.since.elapsed().as_millis() as u64, commit_ms = started.elapsed().as_millis() as u64, "Transaction committed.");
                self.metrics
                    .produced
                    .get_or_create(&self.label)
                    .inc_by(txn.events);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(rule = %self.rule.name, error = %e, "A transaction failed; it is aborted and its records read again.");
                self.abandon()
            }
        }
    }

    /// Aborts the open transaction and goes back to the group's committed offsets.
    fn abandon(&mut self) -> Result<(), ExactlyOnceError> {
        if let Err(e) = self.producer.abort_transaction(TXN_TIMEOUT) {
            tracing::error!(rule = %self.rule.name, error = %e, "The transaction could not be aborted; the producer is done.");
            return Err(e.into());
        }
        self.source.rewind()?;
        Ok(())
    }

    /// The events `records` make, through the pipeline: shared among the makers in runs of
    /// consecutive records (each partition's order kept), and put back together in order.
    fn make(&mut self, mut records: Vec<SourceRecord>) -> Made {
        let n = records.len();
        let share = n.div_ceil(self.makers.len()).max(MIN_SHARE);
        let mut runs = Vec::new();
        while records.len() > share {
            let rest = records.split_off(share);
            runs.push(std::mem::replace(&mut records, rest));
        }
        runs.push(records);
        let made: Vec<Made> = std::thread::scope(|scope| {
            let mut makers = self.makers.iter_mut();
            let mut runs = runs.into_iter();
            let (Some(first), Some(here)) = (runs.next(), makers.next()) else {
                return Vec::new();
            };
            let others: Vec<_> = runs
                .zip(makers)
                .map(|(run, maker)| scope.spawn(move || maker.make(run)))
                .collect();
            let mut made = vec![here.make(first)];
            for t in others {
                // A maker's panic goes on as this thread's, as it would with one maker.
                made.push(t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            made
        });
        let mut all = Made {
            events: Vec::new(),
            offsets: HashMap::new(),
            records: n as u64,
        };
        for mut m in made {
            all.events.append(&mut m.events);
            // Later runs hold later offsets of a partition.
            all.offsets.extend(m.offsets);
        }
        all
    }
}

impl Maker {
    fn make(&mut self, records: Vec<SourceRecord>) -> Made {
        let mut offsets = HashMap::new();
        let mut bodies: Vec<Value> = Vec::new();
        let mut matched = 0;
        // Each body's source event, for an error report (shared: a source may make several).
        let mut origins: Vec<Rc<Value>> = Vec::new();
        for r in records {
            offsets.insert((r.topic.clone(), r.partition), r.offset + 1);
            let Ok(event) = serde_json::from_slice::<Value>(&r.value).map(Rc::new) else {
                self.metrics.failed.get_or_create(&self.label).inc();
                tracing::warn!(rule = %self.rule.name, topic = %r.topic, offset = r.offset, "A record that is not JSON was passed over.");
                continue;
            };
            let Some(planned) = plan_rule(&self.rule, &event) else {
                continue;
            };
            matched += 1;
            let steps = match planned.steps {
                Ok(s) => s,
                Err(e) => {
                    bodies.push(self.error_event(&event, &e.to_string()));
                    origins.push(event);
                    continue;
                }
            };
            let origin = event
                .pointer("/meta/id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            for (n, s) in steps.into_iter().enumerate() {
                let Step::Produce {
                    stream,
                    event: mut e,
                } = s
                else {
                    continue;
                };
                if !e.is_object() {
                    e = json!({"value": e});
                }
                let id =
                    crate::job::derived_id(&[&self.rule.name, &origin, "produce", &n.to_string()]);
                let meta = e
                    .as_object_mut()
                    .map(|m| m.entry("meta").or_insert_with(|| json!({})));
                if let Some(Value::Object(meta)) = meta {
                    meta.insert("id".into(), Value::String(id));
                    meta.insert("stream".into(), Value::String(stream));
                }
                bodies.push(e);
                origins.push(Rc::clone(&event));
            }
        }
        self.metrics
            .matched
            .get_or_create(&self.label)
            .inc_by(matched);
        let mut events = Vec::new();
        if bodies.is_empty() {
            return Made {
                events,
                offsets,
                records: 0,
            };
        }
        let outcomes = match self.validate(&bodies) {
            Ok(o) => o,
            Err(e) => {
                // Not expected for a body made here; every event is reported.
                let why = e.to_string();
                let reports: Vec<Value> =
                    origins.iter().map(|o| self.error_event(o, &why)).collect();
                self.metrics
                    .failed
                    .get_or_create(&self.label)
                    .inc_by(reports.len() as u64);
                return self.reports(reports, offsets);
            }
        };
        let mut refused = Vec::new();
        for o in outcomes {
            match (o.verdict, o.event) {
                (Verdict::Accepted, Some(e)) => events.push(e),
                (Verdict::SampledOut, _) | (Verdict::Accepted, None) => {}
                (Verdict::Rejected(why), _) => {
                    self.metrics.failed.get_or_create(&self.label).inc();
                    tracing::warn!(rule = %self.rule.name, reason = %why.message, "An event the rule made was refused; it goes to the error stream.");
                    if let Some(origin) = origins.get(o.index) {
                        refused.push(self.error_event(origin, &why.message));
                    }
                }
            }
        }
        let mut made = self.reports(refused, offsets);
        events.append(&mut made.events);
        made.events = events;
        made
    }

    /// `events` through the edge's pipeline, as one body received now.
    fn validate(
        &mut self,
        events: &[Value],
    ) -> Result<Vec<sluice_shared::EventOutcome>, sluice_shared::BodyError> {
        let body = serde_json::to_vec(events).unwrap_or_default();
        let req = RequestMeta {
            headers: Vec::new(),
            stream: None,
            schema_uri: None,
            client_ip: None,
            received: sluice_host::clock::now(),
        };
        self.intake.process(&req, &body, &mut self.ids)
    }

    /// Error events for the error stream, through the pipeline too.
    fn reports(&mut self, reports: Vec<Value>, offsets: HashMap<Tp, i64>) -> Made {
        let mut events = Vec::new();
        if !reports.is_empty()
            && let Ok(outcomes) = self.validate(&reports)
        {
            events.extend(outcomes.into_iter().filter_map(|o| o.event));
        }
        Made {
            events,
            offsets,
            records: 0,
        }
    }

    fn error_event(&self, original: &Value, why: &str) -> Value {
        let origin = original
            .pointer("/meta/id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let id = crate::job::derived_id(&[&self.rule.name, origin, "error", "produce"]);
        let dt = sluice_host::clock::now().to_rfc3339_millis();
        events::error(
            Stamp {
                stream: &self.error_stream,
                id: &id,
                dt: &dt,
            },
            &self.rule.name,
            original,
            why,
        )
    }
}

impl ExactlyOnce {
    /// Hands `events` to the open transaction.
    fn send(&mut self, events: &[BatchEvent]) -> Result<(), ExactlyOnceError> {
        for e in events {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: SCHEMA_URI,
                    value: Some(e.schema_uri.as_bytes()),
                })
                .insert(Header {
                    key: EVENT_ID,
                    value: Some(&e.id[..]),
                })
                .insert(Header {
                    key: STREAM,
                    value: Some(e.stream.as_bytes()),
                });
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&e.topic)
                .payload(&e.json[..])
                .timestamp(e.dt_ms)
                .headers(headers);
            if let Some(k) = &e.partition_key {
                record = record.key(k.as_bytes());
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        back,
                    )) => {
                        record = back;
                        self.producer.poll(FLUSH_STEP);
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Waits until every event sent is acknowledged, serving delivery reports as they come.
    ///
    /// `commit_transaction` flushes too, but the client's flush polls in steps of 100 ms that
    /// always run their whole length: every transaction paid 100 ms there. Polled here in
    /// steps of 1 ms, it ends within a millisecond of the last acknowledgement, and the commit's
    /// own flush finds nothing left.
    fn flush(&self) -> Result<(), ExactlyOnceError> {
        let deadline = Instant::now() + TXN_TIMEOUT;
        loop {
            match self.producer.flush(Duration::ZERO) {
                Ok(()) => return Ok(()),
                Err(rdkafka::error::KafkaError::Flush(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                )) if Instant::now() < deadline => self.producer.poll(FLUSH_STEP),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Adds `offsets` to the open transaction and commits it.
    fn commit(&mut self, offsets: &HashMap<Tp, i64>) -> Result<(), ExactlyOnceError> {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        let group = self
            .source
            .consumer()
            .group_metadata()
            .ok_or(ExactlyOnceError::NoGroup)?;
        self.producer
            .send_offsets_to_transaction(&tpl, &group, TXN_TIMEOUT)?;
        self.flush()?;
        self.producer.commit_transaction(TXN_TIMEOUT)?;
        // The same offsets again, straight to the group: on Kafka the transaction has committed
        // them already and this changes nothing; some brokers acknowledge a transaction's offsets
        // without keeping them (librdkafka's mock cluster), and there this keeps the positions.
        if let Err(e) = self
            .source
            .consumer()
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        {
            tracing::debug!(rule = %self.rule.name, error = %e, "The group's offsets were not committed again; the transaction's stand.");
        }
        Ok(())
    }
}

/// 128 random bits for this member's transactional id (unique among the live members, so
/// none fences another; the group's metadata in each commit fences a zombie).
fn random_u128() -> u128 {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        Ok(()) => u128::from_le_bytes(bytes),
        Err(_) => {
            (sluice_host::clock::unix_millis() as u128) << 32 | u128::from(std::process::id())
        }
    }
}
