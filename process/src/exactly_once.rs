//! Kafka to Kafka exactly once, for a rule that only writes events
//! (`produce`, `derive`): each poll's records become one Kafka transaction
//! holding the events the rule makes from them and the consumer group's new
//! offsets (`send_offsets_to_transaction`), so the events and the fact that
//! their sources were read are committed together or not at all. A member
//! that dies mid-transaction leaves nothing a `read_committed` reader sees,
//! and the member that takes its partitions over starts at the offsets the
//! last committed transaction wrote.
//!
//! The events go through the edge's own pipeline ([`Intake`] over the same
//! schemas and stream config), so they are validated, enriched and keyed as
//! every event is, and are written as the aggregator writes records: topic,
//! key, `meta.dt` as the timestamp, and the `schema_uri`, `event_id` and
//! `stream` headers. An event the pipeline refuses goes to the error stream,
//! in the same transaction.

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
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a transaction's steps may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// Records one transaction takes at most (what one poll hands over).
const TXN_RECORDS: usize = 1000;

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
    intake: Arc<Intake>,
    ids: EventIds,
    producer: BaseProducer,
    source: KafkaSource,
    metrics: ProcessMetrics,
    error_stream: String,
}

/// What one poll's records made.
struct Made {
    /// Accepted events, to write.
    events: Vec<BatchEvent>,
    /// Each partition's next offset.
    offsets: HashMap<Tp, i64>,
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
        Ok(Some(ExactlyOnce {
            label: RuleLabel {
                rule: rule.name.clone(),
            },
            rule,
            intake,
            ids: EventIds::with_seed(u64::from(std::process::id())),
            producer,
            source,
            metrics,
            error_stream,
        }))
    }

    /// Runs until `stop` turns true.
    pub fn run(mut self, stop: watch::Receiver<bool>) -> Result<(), ExactlyOnceError> {
        while !*stop.borrow() {
            if self.source.take_assignment().is_some() {
                tracing::info!(rule = %self.rule.name, "Partitions assigned; each starts at the group's committed offset.");
            }
            let records = self.source.poll(TXN_RECORDS, Duration::from_millis(100))?;
            if records.is_empty() {
                self.producer.poll(Duration::ZERO);
                continue;
            }
            let made = self.make(records);
            if let Err(e) = self.commit(&made) {
                tracing::warn!(rule = %self.rule.name, error = %e, "A transaction failed; it is aborted and its records read again.");
                if let Err(e) = self.producer.abort_transaction(TXN_TIMEOUT) {
                    tracing::error!(rule = %self.rule.name, error = %e, "The transaction could not be aborted; the producer is done.");
                    return Err(e.into());
                }
                self.source.rewind()?;
                continue;
            }
            let n = made.events.len() as u64;
            self.metrics.produced.get_or_create(&self.label).inc_by(n);
        }
        self.source.close();
        Ok(())
    }

    /// The events `records` make, through the pipeline.
    fn make(&mut self, records: Vec<SourceRecord>) -> Made {
        let mut offsets = HashMap::new();
        let mut bodies: Vec<Value> = Vec::new();
        let mut origins: Vec<Value> = Vec::new();
        for r in records {
            offsets.insert((r.topic.clone(), r.partition), r.offset + 1);
            let Ok(event) = serde_json::from_slice::<Value>(&r.value) else {
                self.metrics.failed.get_or_create(&self.label).inc();
                tracing::warn!(rule = %self.rule.name, topic = %r.topic, offset = r.offset, "A record that is not JSON was passed over.");
                continue;
            };
            let Some(planned) = plan_rule(&self.rule, &event) else {
                continue;
            };
            self.metrics.matched.get_or_create(&self.label).inc();
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
                origins.push(event.clone());
            }
        }
        let mut events = Vec::new();
        if bodies.is_empty() {
            return Made { events, offsets };
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
        Made { events, offsets }
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

    /// Writes `made` and its offsets in one transaction.
    fn commit(&mut self, made: &Made) -> Result<(), ExactlyOnceError> {
        self.producer.begin_transaction()?;
        for e in &made.events {
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
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &made.offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        let group = self
            .source
            .consumer()
            .group_metadata()
            .ok_or(ExactlyOnceError::NoGroup)?;
        self.producer
            .send_offsets_to_transaction(&tpl, &group, TXN_TIMEOUT)?;
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
