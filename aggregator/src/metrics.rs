//! The aggregator's Prometheus metrics, and whether it is ready.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sluice_host::metrics::{LATENCY_BUCKETS, Outcome, OutcomeLabels};
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
    /// Error reports from edges, by outcome: `admitted` to the error stream or `dropped` over its bound.
    pub error_reports: Family<OutcomeLabels, Counter>,
    /// Writes of the dedupe journal that failed (Kafka sink only): ids that a restart will not remember.
    pub journal_failures: Counter,
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
        let mut root = sluice_host::metrics::root_registry();
        let registry = root.sub_registry_with_prefix("sluice_aggregator");
        let events = Family::<EventLabels, Counter>::default();
        let ack_seconds = Histogram::new(LATENCY_BUCKETS);
        let queue_depth = Gauge::default();
        let dedupe_ids = Gauge::default();
        let dedupe_bytes = Gauge::default();
        registry.register("events", "Events by stream and outcome", events.clone());
        registry.register(
            "batch_ack_seconds",
            "Time from a batch's arrival to its acknowledgement",
            ack_seconds.clone(),
        );
        registry.register(
            "sink_queue_depth",
            "Batches waiting for the sink",
            queue_depth.clone(),
        );
        registry.register(
            "dedupe_ids",
            "Event ids held in the dedupe window",
            dedupe_ids.clone(),
        );
        registry.register(
            "dedupe_bytes",
            "Bytes held by the dedupe window",
            dedupe_bytes.clone(),
        );
        let error_reports = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "error_reports",
            "Events refused by edges and reported for the error stream, by outcome",
            error_reports.clone(),
        );
        let journal_failures = Counter::default();
        registry.register(
            "dedupe_journal_failures",
            "Failed writes of the dedupe journal",
            journal_failures.clone(),
        );
        Metrics {
            registry: Arc::new(root),
            error_reports,
            journal_failures,
            events,
            ack_seconds,
            queue_depth,
            dedupe_ids,
            dedupe_bytes,
            writable: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Counts `n` events of `stream` with `outcome`.
    pub fn count(&self, stream: &str, outcome: Outcome, n: u64) {
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
