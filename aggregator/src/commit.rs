//! The commit loop: one thread owns admission, takes batches from a bounded
//! queue, and commits them in groups to a [`Sink`]: the embedded log or
//! Kafka. For each group it admits every event (dedupe, rate limits) and
//! hands the group to the sink, which answers each batch with its
//! [`BatchAck`] once its events are durable.
//!
//! An event whose write fails is answered `failed` with the reason, and its
//! id forgotten, so that the retry is not taken for a duplicate. A full
//! queue or in-flight budget is refused at once, so a slow sink holds
//! senders back instead of growing memory.

use crate::admit::{Admission, Admit};
use crate::budget::Budget;
use crate::error_stream::{ErrorStream, ErrorStreamOptions};
use crate::metrics::Metrics;
use crate::sink::{Finisher, Job, Sink};
use sluice_host::clock::now;
use sluice_shared::Live;
use sluice_shared::{Batch, BatchAck, StreamConfig, Timestamp};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;

/// Settings of the commit loop.
#[derive(Debug, Clone)]
pub struct CommitOptions {
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
    /// Where the dedupe window saves its closed slices; `None` keeps them in memory.
    pub dedupe_dir: Option<std::path::PathBuf>,
    /// Fewest ids at which the window's newest slice closes.
    pub dedupe_slice_ids: usize,
}

impl Default for CommitOptions {
    fn default() -> Self {
        CommitOptions {
            queue: 1024,
            max_in_flight_bytes: 256 * 1024 * 1024,
            max_group: 256,
            dedupe_window_nanos: 3_600_000_000_000,
            max_rate_keys: 1_000_000,
            seed: 0,
            errors: ErrorStreamOptions::default(),
            dedupe_dir: None,
            dedupe_slice_ids: 1 << 20,
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
pub struct CommitLoop {
    tx: SyncSender<Job>,
    stopped: tokio::sync::watch::Receiver<bool>,
    metrics: Metrics,
    budget: Arc<Budget>,
    streams: Live<StreamConfig>,
    errors: Arc<ErrorStream>,
}

impl CommitLoop {
    /// Starts the commit loop on its own thread, writing to `sink`.
    pub fn start(
        mut sink: Box<dyn Sink>,
        streams: Live<StreamConfig>,
        options: CommitOptions,
        metrics: Metrics,
    ) -> CommitLoop {
        let (tx, rx) = mpsc::sync_channel(options.queue.max(1));
        let started = std::time::Instant::now();
        let mut admission = match &options.dedupe_dir {
            None => Admission::new(
                options.dedupe_window_nanos,
                options.max_rate_keys,
                options.seed,
            ),
            Some(dir) => Admission::open(
                options.dedupe_window_nanos,
                options.max_rate_keys,
                options.seed,
                (dir, options.dedupe_slice_ids),
                now(),
            )
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "Cannot open the dedupe window's saved slices; the window is kept in memory.");
                Admission::new(
                    options.dedupe_window_nanos,
                    options.max_rate_keys,
                    options.seed,
                )
            }),
        };
        // Retries after a crash must still dedupe: remember what the sink took in the last
        // window, since the newest slice saved on disk (less the sink's margin).
        let window_start = now().add_nanos(-options.dedupe_window_nanos).unix_millis();
        let margin = sink.recall_margin_ms();
        let since_ms = admission
            .rebuild_since_ms()
            .map_or(window_start, |t| t.saturating_sub(margin).max(window_start));
        let mut remembered = 0u64;
        let rebuilt = sink.recall(since_ms, &mut |id, at_ms| {
            admission.remember(id, Timestamp::from_unix_millis(at_ms));
            remembered += 1;
        });
        let source = sink.source();
        match rebuilt {
            Ok(()) => tracing::info!(
                ids = remembered,
                held = admission.dedupe_len(),
                source,
                ms = started.elapsed().as_millis() as u64,
                "Dedupe window rebuilt."
            ),
            Err(e) => {
                tracing::error!(error = %e, source, "Could not rebuild the dedupe window; repeats of old events may be written again.")
            }
        }
        let budget = Arc::new(Budget::new(options.max_in_flight_bytes));
        sink.begin(Finisher {
            metrics: metrics.clone(),
            budget: budget.clone(),
        });
        let loop_streams = streams.clone();
        let max_group = options.max_group.max(1);
        let loop_metrics = metrics.clone();
        let (stopped_tx, stopped) = tokio::sync::watch::channel(false);
        thread::Builder::new()
            .name("sluice-sink".into())
            .spawn(move || {
                commit_loop(rx, sink, admission, loop_streams, max_group, loop_metrics);
                let _ = stopped_tx.send(true);
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!(error = %e, "Could not start the sink thread."));
        CommitLoop {
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

fn commit_loop(
    rx: Receiver<Job>,
    mut sink: Box<dyn Sink>,
    mut admission: Admission,
    streams: Live<StreamConfig>,
    max_group: usize,
    metrics: Metrics,
) {
    let mut last_purge = now();
    let mut chores = |sink: &mut Box<dyn Sink>, admission: &mut Admission| {
        let at = now();
        // Idle rate-limit keys and old dedupe generations go once a second.
        if at.nanos_since(last_purge) >= 1_000_000_000 {
            admission.purge(at);
            last_purge = at;
        }
        sink.housekeep(SystemTime::now());
    };
    loop {
        // Woken at least once a second, so an idle sink still settles, purges and applies retention.
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                sink.settle(&mut admission);
                chores(&mut sink, &mut admission);
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
        sink.settle(&mut admission);
        let current = streams.get();
        let admits: Vec<Vec<Admit>> = group
            .iter()
            .map(|j| admission.admit(&j.batch, &current, at))
            .collect();
        // Gauges before the answers, so that whoever reads them after an answer sees its
        // effect (a sink that changes admission as it writes sets them again).
        set_dedupe_gauges(&metrics, &admission);
        sink.write_group(group, admits, &mut admission, at);
        chores(&mut sink, &mut admission);
    }
    sink.close();
    tracing::info!(
        "The sink's queue closed and every batch it took is answered; the commit loop stops."
    );
}

/// Sets the gauges of the dedupe window's size.
pub(crate) fn set_dedupe_gauges(metrics: &Metrics, admission: &Admission) {
    metrics
        .dedupe_ids
        .set(i64::try_from(admission.dedupe_len()).unwrap_or(i64::MAX));
    metrics
        .dedupe_bytes
        .set(i64::try_from(admission.dedupe_bytes()).unwrap_or(i64::MAX));
    // The counters follow the window's own (only this thread moves either).
    let stats = admission.dedupe_stats();
    let lookups = &metrics.dedupe_disk_lookups;
    lookups.inc_by(stats.disk_lookups.saturating_sub(lookups.get()));
    let misses = &metrics.dedupe_false_positives;
    misses.inc_by(stats.false_positives.saturating_sub(misses.get()));
    metrics
        .dedupe_runs
        .set(i64::try_from(admission.dedupe_runs()).unwrap_or(i64::MAX));
}
