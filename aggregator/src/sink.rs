//! The commit loop: one thread owns admission and the embedded log, takes
//! batches from a bounded queue, and commits them in groups. For each group
//! it admits every event, appends the admitted ones, makes them durable with
//! one `sync`, and only then answers each batch with its [`BatchAck`]. If a
//! write fails, the group's admitted ids are forgotten (so retries are not
//! taken for duplicates) and their events answered `failed` with the reason.
//! A full queue is refused at once, so a slow disk holds senders back
//! instead of growing memory.

use crate::admit::{Admission, Admit};
use crate::budget::Budget;
use crate::live::Live;
use crate::log::{EmbeddedLog, LogError, NewRecord};
use crate::metrics::Metrics;
use sluice_shared::{Batch, BatchAck, EventAck, StreamConfig, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// Settings of the commit loop.
#[derive(Debug, Clone, Copy)]
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

struct Job {
    batch: Batch,
    reply: oneshot::Sender<BatchAck>,
    /// The batch's share of the in-flight budget, given back when it is answered.
    bytes: usize,
}

/// Bytes a batch holds while queued: its events' JSON and per-event overhead.
fn batch_bytes(batch: &Batch) -> usize {
    batch
        .events
        .iter()
        .map(|e| e.json.len() + e.stream.len() + e.topic.len() + 64)
        .sum()
}

/// A handle to the commit loop; cheap to clone.
#[derive(Clone)]
pub struct Sink {
    tx: SyncSender<Job>,
    metrics: Metrics,
    budget: Arc<Budget>,
}

impl Sink {
    /// Starts the commit loop on its own thread, writing to `log`.
    pub fn start(
        log: EmbeddedLog,
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
        // Retries after a crash must still dedupe: remember what the log holds from the last window.
        let since_ms = now().add_nanos(-options.dedupe_window_nanos).unix_millis();
        let mut remembered = 0u64;
        let rebuilt = log.for_each_recent_id(since_ms, |id, at_ms| {
            admission.remember(id, Timestamp::from_unix_millis(at_ms));
            remembered += 1;
        });
        match rebuilt {
            Ok(()) => tracing::info!(
                ids = remembered,
                "Dedupe window rebuilt from the embedded log."
            ),
            Err(e) => {
                tracing::error!(error = %e, "Could not rebuild the dedupe window from the embedded log; repeats of old events may be written again.")
            }
        }
        let loop_metrics = metrics.clone();
        let budget = Arc::new(Budget::new(options.max_in_flight_bytes));
        let loop_budget = budget.clone();
        thread::Builder::new()
            .name("sluice-sink".into())
            .spawn(move || {
                commit_loop(
                    rx,
                    log,
                    admission,
                    streams,
                    options.max_group.max(1),
                    loop_metrics,
                    loop_budget,
                )
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!(error = %e, "Could not start the sink thread."));
        Sink {
            tx,
            metrics,
            budget,
        }
    }

    /// Queues a batch; the returned receiver yields its acknowledgement once durable.
    pub fn submit(&self, batch: Batch) -> Result<oneshot::Receiver<BatchAck>, SubmitError> {
        let bytes = batch_bytes(&batch);
        if !self.budget.try_take(bytes) {
            return Err(SubmitError::Busy);
        }
        let (reply, rx) = oneshot::channel();
        // Counted before the send, so the commit loop never takes it below zero.
        self.metrics.queue_depth.inc();
        match self.tx.try_send(Job {
            batch,
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

    /// Event bytes queued or being written.
    pub fn in_flight_bytes(&self) -> usize {
        self.budget.held()
    }

    /// The metrics the sink updates.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

fn now() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos();
    Timestamp::from_unix_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
}

fn commit_loop(
    rx: Receiver<Job>,
    mut log: EmbeddedLog,
    mut admission: Admission,
    streams: Live<StreamConfig>,
    max_group: usize,
    metrics: Metrics,
    budget: Arc<Budget>,
) {
    let mut last_purge = now();
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < max_group {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        metrics.queue_depth.dec_by(group.len() as i64);
        let at = now();
        let current = streams.get();
        let admits: Vec<Vec<Admit>> = group
            .iter()
            .map(|j| admission.admit(&j.batch, &current, at))
            .collect();
        let written = write_group(&mut log, &group, &admits);
        if let Err(e) = &written {
            tracing::error!(error = %e, batches = group.len(), "A group commit failed; its events are answered as failed.");
            for (job, a) in group.iter().zip(&admits) {
                admission.forget(&job.batch, a);
            }
        }
        metrics.set_writable(written.is_ok());
        // Gauges first, so that whoever reads them after an answer sees its effect.
        metrics
            .dedupe_ids
            .set(i64::try_from(admission.dedupe_len()).unwrap_or(i64::MAX));
        metrics
            .dedupe_bytes
            .set(i64::try_from(admission.dedupe_bytes()).unwrap_or(i64::MAX));
        let events: usize = group.iter().map(|j| j.batch.events.len()).sum();
        tracing::debug!(batches = group.len(), events, "Group committed.");
        for (job, a) in group.into_iter().zip(admits) {
            for (event, admit) in job.batch.events.iter().zip(&a) {
                let outcome = match (admit, &written) {
                    (Admit::Write, Ok(())) => "accepted",
                    (Admit::Write, Err(_)) => "failed",
                    (Admit::Duplicate, _) => "duplicate",
                    (Admit::RateLimited { .. }, _) => "rate_limited",
                };
                metrics.count(&event.stream, "received", 1);
                metrics.count(&event.stream, outcome, 1);
            }
            let verdicts = a
                .iter()
                .map(|admit| match (admit, &written) {
                    (Admit::Write, Ok(())) => EventAck::Accepted,
                    (Admit::Write, Err(e)) => EventAck::Failed {
                        reason: e.to_string(),
                    },
                    (Admit::Duplicate, _) => EventAck::Duplicate,
                    (Admit::RateLimited { retry_after_ms }, _) => EventAck::RateLimited {
                        retry_after_ms: *retry_after_ms,
                    },
                })
                .collect();
            budget.release(job.bytes);
            // A sender that gave up waiting has nothing to be told.
            let _ = job.reply.send(BatchAck {
                batch_id: job.batch.id,
                verdicts,
            });
        }
        if at.nanos_since(last_purge) >= 1_000_000_000 {
            admission.purge(at);
            last_purge = at;
        }
    }
    tracing::info!("The sink's queue closed; the commit loop stops.");
}

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
    let headers: Vec<[(&str, &[u8]); 3]> = written
        .iter()
        .map(|e| {
            [
                ("schema_uri", e.schema_uri.as_bytes()),
                ("event_id", &e.id[..]),
                ("stream", e.stream.as_bytes()),
            ]
        })
        .collect();
    // One write per topic per group.
    let mut by_topic: BTreeMap<&str, Vec<NewRecord<'_>>> = BTreeMap::new();
    for (event, headers) in written.iter().zip(&headers) {
        by_topic
            .entry(event.topic.as_str())
            .or_default()
            .push(NewRecord {
                timestamp_ms: event.received_ms,
                key: event.partition_key.as_deref().map(str::as_bytes),
                headers,
                value: &event.json,
            });
    }
    for (topic, records) in &by_topic {
        log.append(topic, records)?;
    }
    log.sync()
}
