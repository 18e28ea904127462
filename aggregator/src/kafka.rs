//! The Kafka sink, through rdkafka: an idempotent producer with `acks=all`
//! and compression, every librdkafka property settable from config.
//!
//! The commit loop hands each admitted event to the producer (topic from
//! the event, key = partition key, timestamp = `meta.dt`, headers with the
//! schema URI, event id and stream) and goes on to the next group without
//! waiting. Delivery reports settle a batch event by event; when its last
//! report is in, the batch goes to the completion thread, which records the
//! delivered ids in the [`DedupeJournal`], tells the commit loop which ids
//! failed (so their retries are not duplicates), and answers the batch. An
//! event's verdict is its delivery report: accepted only once Kafka has it
//! with every in-sync replica.
//!
//! A crash after Kafka took an event but before the journal recorded its id
//! cannot be told from a lost write; the edge retries it and Kafka gets a
//! second copy. That window is one journal sync long.

use crate::admit::{Admission, Admit};
use crate::journal::DedupeJournal;
use crate::metrics::Metrics;
use crate::sink::{Finisher, Job, Sink, SinkError};
use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use sluice_log::LogError;
use sluice_shared::record_headers::{EVENT_ID, SCHEMA_URI, STREAM};
use sluice_shared::{BatchEvent, Timestamp};
use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// Settings of the Kafka sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaOptions {
    /// `bootstrap.servers`: brokers as `host:port`, comma-separated. Empty: no Kafka.
    pub brokers: String,
    /// Any librdkafka producer property, over Sluice's defaults.
    pub properties: BTreeMap<String, String>,
}

/// Sluice's producer defaults; config properties override them.
pub const DEFAULT_PROPERTIES: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("compression.type", "lz4"),
    ("linger.ms", "5"),
    ("queue.buffering.max.messages", "1000000"),
];

/// The librdkafka configuration for `options`.
pub fn producer_config(options: &KafkaOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &options.brokers);
    for (k, v) in DEFAULT_PROPERTIES {
        config.set(*k, *v);
    }
    for (k, v) in &options.properties {
        config.set(k, v);
    }
    for (key, safe) in [("enable.idempotence", "true"), ("acks", "all")] {
        if config
            .get(key)
            .is_some_and(|v| v != safe && !(key == "acks" && v == "-1"))
        {
            tracing::warn!(
                key,
                value = config.get(key),
                "A Kafka property weakens delivery: events may be lost or written twice."
            );
        }
    }
    config
}

/// Why the Kafka sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// librdkafka refused the configuration.
    #[error("Kafka producer: {0}")]
    Kafka(#[from] KafkaError),
    /// The dedupe journal could not be opened.
    #[error(transparent)]
    Journal(#[from] LogError),
}

/// Where a batch's delivery reports are gathered.
struct Pending {
    state: Mutex<PendingState>,
    done: Sender<Finished>,
}

struct PendingState {
    job: Option<Job>,
    admits: Vec<Admit>,
    failures: Vec<Option<String>>,
    /// Reports still to come, plus one held by the producing side until it has sent them all.
    remaining: usize,
    at_ms: i64,
}

/// A batch whose every event has its delivery report.
pub(crate) struct Finished {
    job: Job,
    admits: Vec<Admit>,
    failures: Vec<Option<String>>,
    at_ms: i64,
}

impl Pending {
    /// Settles event `index` (None: the producing side's share) with its failure, if any.
    fn settle(&self, index: Option<usize>, failure: Option<String>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(i), Some(why)) = (index, failure)
            && let Some(slot) = st.failures.get_mut(i)
        {
            *slot = Some(why);
        }
        st.remaining = st.remaining.saturating_sub(1);
        if st.remaining == 0
            && let Some(job) = st.job.take()
        {
            let finished = Finished {
                job,
                admits: std::mem::take(&mut st.admits),
                failures: std::mem::take(&mut st.failures),
                at_ms: st.at_ms,
            };
            if self.done.send(finished).is_err() {
                tracing::error!(
                    "The Kafka completion thread has stopped; a batch goes unanswered and its sender will retry."
                );
            }
        }
    }
}

/// What a delivery report is about.
pub(crate) struct Delivery {
    pending: Arc<Pending>,
    index: usize,
}

/// The producer's context: delivery reports, errors and logs.
struct Reports {
    metrics: Metrics,
}

impl ClientContext for Reports {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(facility, message, "librdkafka logged an error.")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(facility, message, "librdkafka logged a warning.")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(facility, message, "librdkafka logged a notice.")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(facility, message, "librdkafka logged."),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.metrics.set_writable(false);
        }
        tracing::warn!(error = %error, reason, "The Kafka client reported an error.");
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Box<Delivery>) {
        match result {
            Ok(_) => {
                self.metrics.set_writable(true);
                delivery.pending.settle(Some(delivery.index), None);
            }
            Err((e, _)) => {
                // Logged once per batch by the completion thread; counted per event there too.
                tracing::debug!(error = %e, "Kafka did not take an event.");
                delivery
                    .pending
                    .settle(Some(delivery.index), Some(format!("Kafka: {e}")));
            }
        }
    }
}

/// The Kafka sink: the producer, and the channels to its completion thread.
pub struct KafkaSink {
    producer: ThreadedProducer<Reports>,
    done_tx: Sender<Finished>,
    settled_rx: Receiver<Settled>,
    /// Taken by [`KafkaSink::begin`] for the completion thread.
    waiting: Option<(Receiver<Finished>, DedupeJournal, Sender<Settled>)>,
    /// Told when the completion thread has answered its last batch.
    completion: Option<Receiver<()>>,
}

impl KafkaSink {
    /// Creates the producer and opens the dedupe journal; nothing is sent yet.
    pub fn connect(
        options: &KafkaOptions,
        journal: DedupeJournal,
        metrics: &Metrics,
    ) -> Result<KafkaSink, KafkaSinkError> {
        let producer: ThreadedProducer<Reports> =
            producer_config(options).create_with_context(Reports {
                metrics: metrics.clone(),
            })?;
        let (done_tx, done_rx) = mpsc::channel();
        let (settled_tx, settled_rx) = mpsc::channel();
        tracing::info!(brokers = %options.brokers, "Kafka producer created.");
        Ok(KafkaSink {
            producer,
            done_tx,
            settled_rx,
            waiting: Some((done_rx, journal, settled_tx)),
            completion: None,
        })
    }

    /// Starts the completion thread, which answers batches through `finisher`.
    fn start_completions(&mut self, finisher: Finisher) {
        let Some((done_rx, journal, settled_tx)) = self.waiting.take() else {
            return;
        };
        let (ended_tx, ended_rx) = mpsc::channel();
        let spawned = thread::Builder::new()
            .name("sluice-kafka-acks".into())
            .spawn(move || {
                completions(done_rx, journal, settled_tx, finisher);
                let _ = ended_tx.send(());
            });
        match spawned {
            Ok(_) => self.completion = Some(ended_rx),
            Err(e) => tracing::error!(error = %e, "Could not start the Kafka completion thread."),
        }
    }

    /// Sends the events of `job` admitted for writing; the batch is answered
    /// when the last delivery report is in.
    fn produce(&self, job: Job, admits: Vec<Admit>, at: Timestamp) {
        let batch = job.batch.clone();
        let writes: Vec<(usize, &BatchEvent)> = batch
            .events
            .iter()
            .enumerate()
            .zip(&admits)
            .filter(|(_, a)| **a == Admit::Write)
            .map(|(e, _)| e)
            .collect();
        let pending = Arc::new(Pending {
            state: Mutex::new(PendingState {
                job: Some(job),
                // A repeat of an event still on its way to Kafka is answered `failed`,
                // so its sender retries and meets a duplicate once the first copy is in.
                failures: admits
                    .iter()
                    .map(|a| {
                        (*a == Admit::InFlight).then(|| {
                            "an earlier copy of this event is not yet in Kafka; retry".to_owned()
                        })
                    })
                    .collect(),
                remaining: writes.len() + 1,
                admits,
                at_ms: at.unix_millis(),
            }),
            done: self.done_tx.clone(),
        });
        for (i, event) in writes {
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: SCHEMA_URI,
                    value: Some(event.schema_uri.as_bytes()),
                })
                .insert(Header {
                    key: EVENT_ID,
                    value: Some(&event.id[..]),
                })
                .insert(Header {
                    key: STREAM,
                    value: Some(event.stream.as_bytes()),
                });
            let mut record: BaseRecord<'_, [u8], [u8], Box<Delivery>> = BaseRecord::with_opaque_to(
                &event.topic,
                Box::new(Delivery {
                    pending: pending.clone(),
                    index: i,
                }),
            )
            .payload(&event.json[..])
            .timestamp(event.dt_ms)
            .headers(headers);
            if let Some(key) = &event.partition_key {
                record = record.key(key.as_bytes());
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((e, back))
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                    {
                        // The producer's queue is full: serve delivery reports until there is room.
                        self.producer.poll(Duration::from_millis(10));
                        record = back;
                    }
                    Err((e, back)) => {
                        back.delivery_opaque
                            .pending
                            .settle(Some(i), Some(format!("Kafka refused the event: {e}")));
                        break;
                    }
                }
            }
        }
        pending.settle(None, None);
    }

    /// Waits (up to 30 s) for every sent event's delivery report, then for the
    /// completion thread to answer every batch. Events Kafka has not confirmed
    /// by then are purged, so their batches are answered failed and retried.
    fn finish(mut self) {
        if let Err(e) = self.producer.flush(Duration::from_secs(30)) {
            tracing::error!(error = %e, "Kafka did not confirm every event before the stop; they are answered failed.");
        }
        let completion = self.completion.take();
        // The producer (purging what is left) and the last sender of finished batches go first,
        // so the completion thread sees its queue close.
        drop(self);
        if let Some(ended) = completion
            && ended.recv_timeout(Duration::from_secs(30)).is_err()
        {
            tracing::error!("The Kafka completion thread did not finish within 30 s of the stop.");
        }
    }
}

impl Sink for KafkaSink {
    fn source(&self) -> &'static str {
        "dedupe journal"
    }

    fn recall(&self, since_ms: i64, f: &mut dyn FnMut([u8; 16], i64)) -> Result<(), SinkError> {
        match &self.waiting {
            Some((_, journal, _)) => journal.for_each_since(since_ms, f),
            None => Ok(()),
        }
    }

    fn begin(&mut self, finisher: Finisher) {
        self.start_completions(finisher);
    }

    /// Applies delivery reports: delivered ids are durable (repeats are
    /// duplicates now), failed ones are forgotten (their retries get in).
    fn settle(&mut self, admission: &mut Admission) {
        for settled in self.settled_rx.try_iter() {
            for id in settled.failed {
                admission.forget_id(id);
            }
            for id in settled.delivered {
                admission.confirm_id(id);
            }
        }
    }

    /// Hands the admitted events to the producer and returns without waiting:
    /// each batch is answered by the completion thread once its reports are in.
    fn write_group(
        &mut self,
        group: Vec<Job>,
        admits: Vec<Vec<Admit>>,
        _admission: &mut Admission,
        at: Timestamp,
    ) {
        for (job, a) in group.into_iter().zip(admits) {
            self.produce(job, a, at);
        }
    }

    fn housekeep(&mut self, _now: SystemTime) {}

    fn close(self: Box<Self>) {
        self.finish();
    }
}

/// The ids of written events whose delivery reports came in, by outcome.
struct Settled {
    delivered: Vec<[u8; 16]>,
    failed: Vec<[u8; 16]>,
}

fn completions(
    rx: Receiver<Finished>,
    mut journal: DedupeJournal,
    settled_tx: Sender<Settled>,
    finisher: Finisher,
) {
    let mut last_trim = Instant::now();
    while let Ok(first) = rx.recv() {
        let mut done = vec![first];
        while done.len() < 256 {
            match rx.try_recv() {
                Ok(f) => done.push(f),
                Err(_) => break,
            }
        }
        let mut delivered = Vec::new();
        let mut failed = Vec::new();
        for f in &done {
            for ((event, admit), failure) in
                f.job.batch.events.iter().zip(&f.admits).zip(&f.failures)
            {
                if *admit != Admit::Write || !event.dedupe {
                    continue;
                }
                match failure {
                    None => delivered.push((event.id, f.at_ms)),
                    Some(_) => failed.push(event.id),
                }
            }
        }
        // Sent before the answers, so that the retry a `failed` answer invites is let in,
        // and a repeat after an `accepted` one is a duplicate.
        let _ = settled_tx.send(Settled {
            delivered: delivered.iter().map(|(id, _)| *id).collect(),
            failed,
        });
        if let Err(e) = journal.record(&delivered) {
            finisher.metrics.journal_failures.inc();
            tracing::error!(error = %e, ids = delivered.len(), "Could not journal delivered ids; after a restart their retries may be written again.");
        }
        for f in done {
            let Finished {
                job,
                admits,
                failures,
                ..
            } = f;
            let failed = failures.iter().flatten().count();
            if let Some(reason) = failures.iter().flatten().next() {
                tracing::warn!(failed, %reason, "Kafka did not take events of a batch; they are answered failed.");
            }
            finisher.finish(job, &admits, |i| failures.get(i).and_then(Option::as_deref));
        }
        if last_trim.elapsed() >= Duration::from_secs(60) {
            last_trim = Instant::now();
            if let Err(e) = journal.trim(SystemTime::now()) {
                tracing::warn!(error = %e, "Could not delete old dedupe journal segments.");
            }
        }
    }
}
