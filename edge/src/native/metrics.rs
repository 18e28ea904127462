//! The native edge's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sluice_host::metrics::{LATENCY_BUCKETS, Outcome, OutcomeLabels, service_registry};
use std::sync::Arc;

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// The HTTP status answered.
    pub status: u16,
}

/// Labels of the per-aggregator counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AggregatorLabels {
    /// The aggregator's name in the edge's list.
    pub aggregator: String,
}

/// Every metric the edge exports; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Intake requests by answer status.
    pub requests: Family<StatusLabels, Counter>,
    /// Events by outcome: `accepted`, `sampled_out`, `invalid`, and after forwarding
    /// `delivered`, `duplicate`, `rate_limited`, `failed`, `unavailable`, and `spooled`
    /// (hasty events synced to the spool, each before its request's 202).
    pub events: Family<OutcomeLabels, Counter>,
    /// Hasty events that were answered 202 but then dropped, by reason
    /// (`rate_limited` by the aggregator, or `failed` when the aggregator refused a
    /// spooled event five times or a spooled batch could not be decoded).
    pub hasty_dropped: Family<OutcomeLabels, Counter>,
    /// Batches sent to aggregators, by result.
    pub batches: Family<OutcomeLabels, Counter>,
    /// Events sent to each aggregator (each event to the owner of its id).
    pub aggregator_events: Family<AggregatorLabels, Counter>,
    /// Events sent to an aggregator other than their id's owner, because the owner was down.
    pub owner_moves: Counter,
    /// Bytes in the spool.
    pub spool_bytes: Gauge,
    /// Time of a spool group's append and sync, from the writer taking it to the `fsync`'s return.
    pub spool_sync_seconds: Histogram,
    /// Time from a request's body being read to its answer, `/v1/events` only.
    pub request_seconds: Histogram,
}

impl Default for Metrics {
    /// A fresh set, registered under `sluice_edge_`, beside the process's own.
    fn default() -> Self {
        let mut m = Metrics {
            registry: Arc::default(),
            requests: Family::default(),
            events: Family::default(),
            hasty_dropped: Family::default(),
            batches: Family::default(),
            aggregator_events: Family::default(),
            owner_moves: Counter::default(),
            spool_bytes: Gauge::default(),
            spool_sync_seconds: Histogram::new(LATENCY_BUCKETS),
            request_seconds: Histogram::new(LATENCY_BUCKETS),
        };
        m.registry = service_registry(
            "sluice_edge",
            &[
                ("requests", "Intake requests by answer status", &m.requests),
                ("events", "Events by outcome", &m.events),
                (
                    "hasty_dropped",
                    "Hasty events answered 202 and then dropped, by reason",
                    &m.hasty_dropped,
                ),
                (
                    "batches",
                    "Batches sent to aggregators, by result",
                    &m.batches,
                ),
                (
                    "aggregator_events",
                    "Events sent to each aggregator, each to the owner of its id",
                    &m.aggregator_events,
                ),
                (
                    "owner_moves",
                    "Events sent to the next-ranked aggregator because their owner was down",
                    &m.owner_moves,
                ),
                ("spool_bytes", "Bytes held in the spool", &m.spool_bytes),
                (
                    "spool_sync_seconds",
                    "Time to append and sync a group of hasty requests to the spool",
                    &m.spool_sync_seconds,
                ),
                (
                    "request_seconds",
                    "Time from an intake request's body being read to its answer",
                    &m.request_seconds,
                ),
            ],
        );
        m
    }
}

impl Metrics {
    /// Counts `n` events with `outcome`.
    pub fn count(&self, outcome: Outcome, n: usize) {
        if n > 0 {
            self.events
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(n as u64);
        }
    }

    /// Counts a batch sent to aggregators, with its result.
    pub fn batch(&self, outcome: Outcome) {
        self.batches.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts `n` events sent to `aggregator`, `moved` of them off their down owner.
    pub fn placed(&self, aggregator: &str, n: usize, moved: usize) {
        self.aggregator_events
            .get_or_create(&AggregatorLabels {
                aggregator: aggregator.to_owned(),
            })
            .inc_by(n as u64);
        self.owner_moves.inc_by(moved as u64);
    }

    /// Counts `n` hasty events answered 202 and then dropped, by reason.
    pub fn dropped(&self, outcome: Outcome, n: usize) {
        self.hasty_dropped
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(n as u64);
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        sluice_host::metrics::encode(&self.registry)
    }
}
