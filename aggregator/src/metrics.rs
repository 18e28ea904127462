//! The aggregator's Prometheus metrics, and whether it is ready.

use crate::console::{Flow, Taps};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sluice_host::metrics::{LATENCY_BUCKETS, Outcome, OutcomeLabels, service_registry};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Labels of the per-stream event counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The stream.
    pub stream: String,
    /// `received`, `accepted`, `duplicate`, `rate_limited` or `failed`.
    pub outcome: Outcome,
}

/// Labels of the stream alert gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    /// The stream.
    pub stream: String,
    /// `zero_flow` or `under_rate`.
    pub alert: String,
}

/// Every metric the aggregator exports; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Events by stream and outcome.
    pub events: Family<EventLabels, Counter>,
    /// Seconds from a batch's arrival to its acknowledgement.
    pub ack_seconds: Histogram,
    /// Batches waiting for the sink.
    pub queue_depth: Gauge,
    /// Ids held by the dedupe window.
    pub dedupe_ids: Gauge,
    /// Bytes held by the dedupe window.
    pub dedupe_bytes: Gauge,
    /// Dedupe filter hits confirmed against a run on disk.
    pub dedupe_disk_lookups: Counter,
    /// Of those, ids the run did not hold: the filters' false positives.
    pub dedupe_false_positives: Counter,
    /// Closed slices of the dedupe window saved on disk.
    pub dedupe_runs: Gauge,
    /// Error reports from edges, by outcome: `admitted` to the error stream or `dropped` over its bound.
    pub error_reports: Family<OutcomeLabels, Counter>,
    /// Writes of the dedupe journal that failed (Kafka sink only): ids that a restart will not remember.
    pub journal_failures: Counter,
    /// 1 while a stream is alerted (see [`crate::console::flow`]).
    pub stream_alert: Family<AlertLabels, Gauge>,
    /// Each stream's flow by second, for the console and its alerts.
    pub flow: Flow,
    /// The console's open tails, offered each durable event.
    pub taps: Taps,
    writable: Arc<AtomicBool>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered under `sluice_aggregator_`, beside the process's own.
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Arc::default(),
            events: Family::default(),
            ack_seconds: Histogram::new(LATENCY_BUCKETS),
            queue_depth: Gauge::default(),
            dedupe_ids: Gauge::default(),
            dedupe_bytes: Gauge::default(),
            dedupe_disk_lookups: Counter::default(),
            dedupe_false_positives: Counter::default(),
            dedupe_runs: Gauge::default(),
            error_reports: Family::default(),
            journal_failures: Counter::default(),
            stream_alert: Family::default(),
            flow: Flow::new(300, 0.1),
            taps: Taps::default(),
            writable: Arc::new(AtomicBool::new(true)),
        };
        m.registry = service_registry(
            "sluice_aggregator",
            &[
                ("events", "Events by stream and outcome", &m.events),
                (
                    "batch_ack_seconds",
                    "Time from a batch's arrival to its acknowledgement",
                    &m.ack_seconds,
                ),
                (
                    "sink_queue_depth",
                    "Batches waiting for the sink",
                    &m.queue_depth,
                ),
                (
                    "dedupe_ids",
                    "Event ids held in the dedupe window",
                    &m.dedupe_ids,
                ),
                (
                    "dedupe_bytes",
                    "Bytes held by the dedupe window",
                    &m.dedupe_bytes,
                ),
                (
                    "dedupe_disk_lookups",
                    "Dedupe filter hits confirmed against the ids saved on disk",
                    &m.dedupe_disk_lookups,
                ),
                (
                    "dedupe_false_positives",
                    "Dedupe filter hits the ids on disk did not confirm (false positives)",
                    &m.dedupe_false_positives,
                ),
                (
                    "dedupe_runs",
                    "Closed slices of the dedupe window saved on disk",
                    &m.dedupe_runs,
                ),
                (
                    "error_reports",
                    "Events refused by edges and reported for the error stream, by outcome",
                    &m.error_reports,
                ),
                (
                    "dedupe_journal_failures",
                    "Failed writes of the dedupe journal",
                    &m.journal_failures,
                ),
                (
                    "stream_alert",
                    "1 while a stream that was flowing has stopped (zero_flow) or runs far under its last hour's rate (under_rate)",
                    &m.stream_alert,
                ),
            ],
        );
        m
    }

    /// Counts `n` events of `stream` with `outcome`, also in the stream's flow.
    pub fn count(&self, stream: &str, outcome: Outcome, n: u64) {
        let kind = match outcome {
            Outcome::Accepted => Some(0),
            Outcome::Invalid => Some(1),
            Outcome::RateLimited => Some(2),
            Outcome::Duplicate => Some(3),
            _ => None,
        };
        if let Some(kind) = kind {
            // Only an accepted event's time is kept (the stream's last event).
            let now = if kind == 0 {
                sluice_host::clock::unix_millis()
            } else {
                0
            };
            self.flow.count(stream, kind, n, now);
        }
        self.events
            .get_or_create(&EventLabels {
                stream: stream.to_owned(),
                outcome,
            })
            .inc_by(n);
    }

    /// Counts `n` error reports with `outcome`.
    pub fn count_error_reports(&self, outcome: Outcome, n: u64) {
        self.error_reports
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(n);
    }

    /// Records whether the last write to the sink succeeded.
    pub fn set_writable(&self, ok: bool) {
        self.writable.store(ok, Ordering::Relaxed);
    }

    /// Whether the sink took its last write.
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        sluice_host::metrics::encode(&self.registry)
    }
}
