//! The vocabulary the services' Prometheus metrics share: what can happen
//! to an event or a batch (one enum, so a label value is never misspelt),
//! the latency buckets, and the text exposition with the process's own
//! metrics beside the service's.

use crate::process::ProcessCollector;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::registry::{Metric, Registry};
use std::fmt::Write;
use std::sync::Arc;

/// What happened to an event, a batch or an error report: the value of an `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Taken in (an aggregator's count of what edges sent).
    Received,
    /// Valid and taken for forwarding (edge), or durable (aggregator).
    Accepted,
    /// Left out by the stream's sampling.
    SampledOut,
    /// Refused: not valid for its schema or stream.
    Invalid,
    /// Acknowledged durable by an aggregator.
    Delivered,
    /// Seen before within the dedupe window.
    Duplicate,
    /// Over a rate limit.
    RateLimited,
    /// A write that failed.
    Failed,
    /// No aggregator answered in time.
    Unavailable,
    /// Synced to the edge's spool (a hasty event, before its 202).
    Spooled,
    /// Acknowledged by an aggregator (a batch).
    Acknowledged,
    /// Taken into the error stream (an error report).
    Admitted,
    /// Dropped over the error stream's bound (an error report).
    Dropped,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Received => "received",
            Outcome::Accepted => "accepted",
            Outcome::SampledOut => "sampled_out",
            Outcome::Invalid => "invalid",
            Outcome::Delivered => "delivered",
            Outcome::Duplicate => "duplicate",
            Outcome::RateLimited => "rate_limited",
            Outcome::Failed => "failed",
            Outcome::Unavailable => "unavailable",
            Outcome::Spooled => "spooled",
            Outcome::Acknowledged => "acknowledged",
            Outcome::Admitted => "admitted",
            Outcome::Dropped => "dropped",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Labels of counters split only by outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// What happened.
    pub outcome: Outcome,
}

/// Upper bounds, in seconds, of the latency histograms (requests, batch acknowledgements).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A metric a service keeps and registers: a handle it clones into the registry.
pub trait Registrable {
    /// Registers a clone of this metric in `registry` as `name`, described by `help`.
    fn register_into(&self, registry: &mut Registry, name: &str, help: &str);
}

impl<M: Metric + Clone> Registrable for M {
    fn register_into(&self, registry: &mut Registry, name: &str, help: &str) {
        registry.register(name, help, self.clone());
    }
}

/// A service's registry: the process's own metrics under their standard
/// names, and the service's `metrics` (name, help, metric) under `prefix`.
pub fn service_registry(prefix: &str, metrics: &[(&str, &str, &dyn Registrable)]) -> Arc<Registry> {
    let mut root = Registry::default();
    ProcessCollector::register(&mut root);
    let service = root.sub_registry_with_prefix(prefix);
    for (name, help, metric) in metrics {
        metric.register_into(service, name, help);
    }
    Arc::new(root)
}

/// The Prometheus text exposition of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
        out.push_str("# metrics could not be encoded\n");
    }
    out
}
