//! The commit loop: one thread owns admission, takes batches from a bounded
//! queue, and commits them in groups to the sink: the embedded log or Kafka.
//! For each group it admits every event (dedupe, rate limits), then:
//! - embedded log: appends the admitted events, makes them durable with one
//!   `sync`, and only then answers each batch with its [`BatchAck`];
//! - Kafka: hands them to the producer and goes on to the next group; each
//!   batch is answered once every one of its events has its delivery report
//!   (see [`crate::kafka`]).
//!
//! An event whose write fails is answered `failed` with the reason, and its
//! id forgotten, so that the retry is not taken for a duplicate. A full
//! queue or in-flight budget is refused at once, so a slow sink holds
//! senders back instead of growing memory.

use crate::admit::{Admission, Admit};
use crate::budget::Budget;
use crate::errors::{ErrorStream, ErrorStreamOptions};
use crate::kafka::KafkaSink;
use crate::log::{EmbeddedLog, LogError, NewRecord};
use crate::metrics::Metrics;
use sluice_shared::Live;
use sluice_shared::{Batch, BatchAck, EventAck, StreamConfig, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// Where admitted events go.
pub enum SinkTarget {
    /// The embedded log, synced before each answer.
    Log(EmbeddedLog),
    /// Kafka, answered by delivery reports.
    Kafka(KafkaSink),
}

/// Settings of the commit loop.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Batches that may wait for the loop before senders are refused.
    pub queue: usize,
    /// Event bytes that may be queued or being written before senders are refused.
    pub max_in_flight_bytes: usize,
    /// Most batches committed together.
    pub max_group: usize,
    /// Dedupe window, nanoseconds.
    pub dedupe_window_nanos: i64,
    /// Most rate-limit keys tracked.
    pub max_rate_keys: usize,
    /// Seed for the hashes of client-chosen ids and keys.
    pub seed: u64,
    /// The error stream that edges' error reports go to.
    pub errors: ErrorStreamOptions,
    /// How long the embedded log keeps a segment after its last write; `None`: forever.
    pub log_retention: Option<Duration>,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            queue: 1024,
            max_in_flight_bytes: 256 * 1024 * 1024,
            max_group: 256,
            dedupe_window_nanos: 3_600_000_000_000,
            max_rate_keys: 1_000_000,
            seed: 0,
            errors: ErrorStreamOptions::default(),
            log_retention: None,
        }
    }
}

/// Why a batch was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full: the sink is slower than the senders.
    #[error("the aggregator's sink queue is full; retry shortly")]
    Busy,
    /// The commit loop has stopped.
    #[error("the aggregator's sink has stopped")]
    Stopped,
}

pub(crate) struct Job {
    pub(crate) batch: Arc<Batch>,
    /// How many of the batch's events get verdicts; the rest are error events.
    answered: usize,
    reply: oneshot::Sender<BatchAck>,
    /// The batch's share of the in-flight budget, given back when it is answered.
    bytes: usize,
}

/// Bytes a batch holds while queued: its events' JSON, its error reports
/// (which become events about as large), and per-event overhead.
fn batch_bytes(batch: &Batch) -> usize {
    let events: usize = batch
        .events
        .iter()
        .map(|e| e.json.len() + e.stream.len() + e.topic.len() + 64)
        .sum();
    let errors: usize = batch
        .errors
        .iter()
        .map(|e| e.raw_event.len() + e.message.len() + 512)
        .sum();
    events + errors
}

/// A handle to the commit loop; cheap to clone.
#[derive(Clone)]
pub struct Sink {
    tx: SyncSender<Job>,
    stopped: tokio::sync::watch::Receiver<bool>,
    metrics: Metrics,
    budget: Arc<Budget>,
    streams: Live<StreamConfig>,
    errors: Arc<ErrorStream>,
}

impl Sink {
    /// Starts the commit loop on its own thread, writing to `target`.
    pub fn start(
        mut target: SinkTarget,
        streams: Live<StreamConfig>,
        options: SinkOptions,
        metrics: Metrics,
    ) -> Sink {
        let (tx, rx) = mpsc::sync_channel(options.queue.max(1));
        let mut admission = Admission::new(
            options.dedupe_window_nanos,
            options.max_rate_keys,
            options.seed,
        );
        // Retries after a crash must still dedupe: remember what the sink took in the last window.
        let since_ms = now().add_nanos(-options.dedupe_window_nanos).unix_millis();
        let mut remembered = 0u64;
        let mut remember = |id, at_ms| {
            admission.remember(id, Timestamp::from_unix_millis(at_ms));
            remembered += 1;
        };
        let (rebuilt, source) = match &target {
            SinkTarget::Log(log) => (
                log.for_each_recent_id(since_ms, &mut remember),
                "embedded log",
            ),
            SinkTarget::Kafka(kafka) => (
                kafka.for_each_recent_id(since_ms, &mut remember),
                "dedupe journal",
            ),
        };
        match rebuilt {
            Ok(()) => tracing::info!(ids = remembered, source, "Dedupe window rebuilt."),
            Err(e) => {
                tracing::error!(error = %e, source, "Could not rebuild the dedupe window; repeats of old events may be written again.")
            }
        }
        let budget = Arc::new(Budget::new(options.max_in_flight_bytes));
        let finisher = Finisher {
            metrics: metrics.clone(),
            budget: budget.clone(),
        };
        if let SinkTarget::Kafka(kafka) = &mut target {
            kafka.begin(finisher.clone());
        }
        let loop_streams = streams.clone();
        let max_group = options.max_group.max(1);
        let (stopped_tx, stopped) = tokio::sync::watch::channel(false);
        let retention = options.log_retention;
        thread::Builder::new()
            .name("sluice-sink".into())
            .spawn(move || {
                commit_loop(
                    rx,
                    target,
                    admission,
                    loop_streams,
                    max_group,
                    finisher,
                    retention,
                );
                let _ = stopped_tx.send(true);
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!(error = %e, "Could not start the sink thread."));
        Sink {
            tx,
            stopped,
            metrics,
            budget,
            streams,
            errors: Arc::new(ErrorStream::new(options.errors)),
        }
    }

    /// Queues a batch; the returned receiver yields its acknowledgement once
    /// durable. Its error reports become error events, within their bound.
    pub fn submit(&self, mut batch: Batch) -> Result<oneshot::Receiver<BatchAck>, SubmitError> {
        let answered = batch.events.len();
        // The budget is taken before error reports are admitted, so a refused batch spends
        // none of the error stream's bound and counts none of its reports.
        let bytes = batch_bytes(&batch);
        if !self.budget.try_take(bytes) {
            return Err(SubmitError::Busy);
        }
        if !batch.errors.is_empty() {
            self.errors
                .admit(&mut batch, &self.streams.get(), now(), &self.metrics);
        }
        let (reply, rx) = oneshot::channel();
        // Counted before the send, so the commit loop never takes it below zero.
        self.metrics.queue_depth.inc();
        match self.tx.try_send(Job {
            batch: Arc::new(batch),
            answered,
            reply,
            bytes,
        }) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.metrics.queue_depth.dec();
                self.budget.release(bytes);
                match e {
                    TrySendError::Full(_) => Err(SubmitError::Busy),
                    TrySendError::Disconnected(_) => Err(SubmitError::Stopped),
                }
            }
        }
    }

    /// Turns true once every handle to the sink is gone and it has answered
    /// every batch it took (with Kafka: once every delivery report is in).
    pub fn stopped(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopped.clone()
    }

    /// Event bytes queued or being written.
    pub fn in_flight_bytes(&self) -> usize {
        self.budget.held()
    }

    /// The metrics the sink updates.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

pub(crate) fn now() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos();
    Timestamp::from_unix_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
}

/// Answers batches: verdicts, metrics, and the in-flight budget.
#[derive(Clone)]
pub(crate) struct Finisher {
    pub(crate) metrics: Metrics,
    budget: Arc<Budget>,
}

impl Finisher {
    /// Answers `job`: `failure(i)` is why event `i`, admitted for writing, was not written.
    pub(crate) fn finish<'a>(
        &self,
        job: Job,
        admits: &[Admit],
        failure: impl Fn(usize) -> Option<&'a str>,
    ) {
        let mut verdicts = Vec::with_capacity(job.answered);
        // Counted per (stream, outcome) for the whole batch, then added to the metrics
        // once each: a batch holds a stream or a few, and each metrics update takes a lock.
        let mut tally: Vec<(&str, &'static str, u64)> = Vec::new();
        fn add<'s>(
            tally: &mut Vec<(&'s str, &'static str, u64)>,
            stream: &'s str,
            outcome: &'static str,
        ) {
            match tally
                .iter_mut()
                .find(|(s, o, _)| *o == outcome && *s == stream)
            {
                Some((_, _, n)) => *n += 1,
                None => tally.push((stream, outcome, 1)),
            }
        }
        for (i, (event, admit)) in job.batch.events.iter().zip(admits).enumerate() {
            let verdict = match admit {
                Admit::Write => match failure(i) {
                    None => EventAck::Accepted,
                    Some(reason) => EventAck::Failed {
                        reason: reason.to_owned(),
                    },
                },
                Admit::Duplicate => EventAck::Duplicate,
                // Its earlier copy's fate: `failure(i)` says why it is not durable, if it is not.
                Admit::InFlight => match failure(i) {
                    None => EventAck::Duplicate,
                    Some(reason) => EventAck::Failed {
                        reason: reason.to_owned(),
                    },
                },
                Admit::RateLimited { retry_after_ms } => EventAck::RateLimited {
                    retry_after_ms: *retry_after_ms,
                },
            };
            let outcome = match &verdict {
                EventAck::Accepted => "accepted",
                EventAck::Failed { .. } => "failed",
                EventAck::Duplicate => "duplicate",
                EventAck::RateLimited { .. } => "rate_limited",
            };
            add(&mut tally, &event.stream, "received");
            add(&mut tally, &event.stream, outcome);
            if i < job.answered {
                verdicts.push(verdict);
            }
        }
        for (stream, outcome, n) in tally {
            self.metrics.count(stream, outcome, n);
        }
        self.budget.release(job.bytes);
        // A sender that gave up waiting has nothing to be told.
        let _ = job.reply.send(BatchAck {
            batch_id: job.batch.id,
            verdicts,
        });
    }
}

/// Applies Kafka's delivery reports to admission: delivered ids are durable
/// (repeats are duplicates now), failed ones are forgotten (their retries get in).
fn settle_kafka(kafka: &KafkaSink, admission: &mut Admission) {
    for settled in kafka.settled() {
        for id in settled.failed {
            admission.forget_id(id);
        }
        for id in settled.delivered {
            admission.confirm_id(id);
        }
    }
}

fn commit_loop(
    rx: Receiver<Job>,
    mut target: SinkTarget,
    mut admission: Admission,
    streams: Live<StreamConfig>,
    max_group: usize,
    finisher: Finisher,
    retention: Option<Duration>,
) {
    let metrics = finisher.metrics.clone();
    let mut chores = Housekeeping::new(retention);
    loop {
        // Woken at least once a second, so an idle sink still purges and applies retention.
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                if let SinkTarget::Kafka(kafka) = &target {
                    settle_kafka(kafka, &mut admission);
                }
                chores.run(&mut target, &mut admission);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut group = vec![first];
        while group.len() < max_group {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        metrics.queue_depth.dec_by(group.len() as i64);
        let at = now();
        if let SinkTarget::Kafka(kafka) = &target {
            settle_kafka(kafka, &mut admission);
        }
        let current = streams.get();
        let admits: Vec<Vec<Admit>> = group
            .iter()
            .map(|j| admission.admit(&j.batch, &current, at))
            .collect();
        match &mut target {
            SinkTarget::Log(log) => {
                let mark = log.mark();
                let written = write_group(log, &group, &admits);
                if let Err(e) = &written {
                    // Nothing of a failed group may stay behind to be written again by its retry.
                    log.rewind(&mark);
                    tracing::error!(error = %e, batches = group.len(), "A group commit failed; its events are answered as failed.");
                    for (job, a) in group.iter().zip(&admits) {
                        admission.forget(&job.batch, a);
                    }
                }
                if written.is_ok() {
                    for (job, a) in group.iter().zip(&admits) {
                        admission.confirm(&job.batch, a);
                    }
                }
                metrics.set_writable(written.is_ok());
                // Gauges first, so that whoever reads them after an answer sees its effect.
                set_dedupe_gauges(&metrics, &admission);
                let reason = written.err().map(|e| e.to_string());
                for (job, a) in group.into_iter().zip(admits) {
                    finisher.finish(job, &a, |_| reason.as_deref());
                }
            }
            SinkTarget::Kafka(kafka) => {
                set_dedupe_gauges(&metrics, &admission);
                for (job, a) in group.into_iter().zip(admits) {
                    kafka.produce(job, a, at);
                }
            }
        }
        chores.run(&mut target, &mut admission);
    }
    match target {
        SinkTarget::Kafka(kafka) => kafka.finish(),
        SinkTarget::Log(mut log) => {
            if let Err(e) = log.sync() {
                tracing::error!(error = %e, "The last sync of the embedded log failed.");
            }
        }
    }
    tracing::info!(
        "The sink's queue closed and every batch it took is answered; the commit loop stops."
    );
}

/// The commit loop's chores: once a second, dropping idle rate-limit keys
/// and old dedupe generations; once a minute, deleting embedded-log segments
/// past their retention.
struct Housekeeping {
    retention: Option<Duration>,
    last_purge: Timestamp,
    last_retention: Timestamp,
}

impl Housekeeping {
    fn new(retention: Option<Duration>) -> Self {
        Housekeeping {
            retention,
            last_purge: now(),
            last_retention: now(),
        }
    }

    /// Does whichever chores are due.
    fn run(&mut self, target: &mut SinkTarget, admission: &mut Admission) {
        let at = now();
        if at.nanos_since(self.last_purge) >= 1_000_000_000 {
            admission.purge(at);
            self.last_purge = at;
        }
        if at.nanos_since(self.last_retention) < 60_000_000_000 {
            return;
        }
        self.last_retention = at;
        let (SinkTarget::Log(log), Some(keep)) = (target, self.retention) else {
            return;
        };
        let Some(cutoff) = SystemTime::now().checked_sub(keep) else {
            return;
        };
        match log.delete_all_segments_before(cutoff) {
            Ok(0) => {}
            Ok(segments) => {
                tracing::info!(
                    segments,
                    "Deleted embedded-log segments past their retention."
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "Could not delete embedded-log segments past their retention.")
            }
        }
    }
}

fn set_dedupe_gauges(metrics: &Metrics, admission: &Admission) {
    metrics
        .dedupe_ids
        .set(i64::try_from(admission.dedupe_len()).unwrap_or(i64::MAX));
    metrics
        .dedupe_bytes
        .set(i64::try_from(admission.dedupe_bytes()).unwrap_or(i64::MAX));
}

/// Header with the receive time (Unix milliseconds, little-endian), on records whose timestamp differs from it.
pub const RECEIVED_HEADER: &str = "received_ms";

/// A record's headers, of which the first 3 or all 4 are written.
type RecordHeaders<'a> = [(&'a str, &'a [u8]); 4];

fn write_group(
    log: &mut EmbeddedLog,
    group: &[Job],
    admits: &[Vec<Admit>],
) -> Result<(), LogError> {
    let written: Vec<_> = group
        .iter()
        .zip(admits)
        .flat_map(|(job, a)| job.batch.events.iter().zip(a))
        .filter(|(_, admit)| **admit == Admit::Write)
        .map(|(event, _)| event)
        .collect();
    // The receive time rides along only when the sender set meta.dt, for the dedupe rebuild.
    let received: Vec<[u8; 8]> = written
        .iter()
        .map(|e| e.received_ms.to_le_bytes())
        .collect();
    let headers: Vec<(RecordHeaders<'_>, usize)> = written
        .iter()
        .zip(&received)
        .map(|(e, received)| {
            let all = [
                ("schema_uri", e.schema_uri.as_bytes()),
                ("event_id", &e.id[..]),
                ("stream", e.stream.as_bytes()),
                (RECEIVED_HEADER, &received[..]),
            ];
            (all, if e.received_ms == e.dt_ms { 3 } else { 4 })
        })
        .collect();
    // One write per topic per group.
    let mut by_topic: BTreeMap<&str, Vec<NewRecord<'_>>> = BTreeMap::new();
    for (event, headers) in written.iter().zip(&headers) {
        by_topic.entry(&*event.topic).or_default().push(NewRecord {
            timestamp_ms: event.dt_ms,
            key: event.partition_key.as_deref().map(str::as_bytes),
            headers: &headers.0[..headers.1],
            value: &event.json,
        });
    }
    for (topic, records) in &by_topic {
        log.append(topic, records)?;
    }
    log.sync()
}
