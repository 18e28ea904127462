//! The processor's metrics, per rule, served on `/metrics` as
//! `sluice_process_*`: events matched, requests executed, retries, failures
//! (sent to the error stream), repeats skipped, fan-out jobs cut off by a
//! newer root event, events produced, and lag in records.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// A rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RuleLabel {
    /// The rule's name.
    pub rule: String,
}

/// Every processor metric.
#[derive(Clone, Default)]
pub struct ProcessMetrics {
    /// Events a rule matched (and took: not a repeat, in its sample).
    pub matched: Family<RuleLabel, Counter>,
    /// Requests answered as done (a status in `ignore` included).
    pub executed: Family<RuleLabel, Counter>,
    /// Retries sent to the retry stream.
    pub retried: Family<RuleLabel, Counter>,
    /// Events sent to the error stream (a status reported, retries used up, a template that failed).
    pub failed: Family<RuleLabel, Counter>,
    /// Events skipped as repeats of an id seen within the window.
    pub duplicate: Family<RuleLabel, Counter>,
    /// Fan-out pages dropped because a newer root event for their target has run.
    pub cut_off: Family<RuleLabel, Counter>,
    /// Events produced (produce, derive, continue).
    pub produced: Family<RuleLabel, Counter>,
    /// Records in the rule's streams not yet finished.
    pub lag: Family<RuleLabel, Gauge>,
}

impl ProcessMetrics {
    /// The registry `/metrics` serves.
    pub fn registry(&self) -> Arc<Registry> {
        sluice_host::metrics::service_registry(
            "sluice_process",
            &[
                ("matched", "Events a rule matched and took.", &self.matched),
                (
                    "executed",
                    "Requests a rule made that were answered as done.",
                    &self.executed,
                ),
                (
                    "retried",
                    "Events sent to the retry stream for a later attempt.",
                    &self.retried,
                ),
                (
                    "failed",
                    "Events sent to the error stream, with the reason.",
                    &self.failed,
                ),
                (
                    "duplicate",
                    "Events skipped as repeats of an id seen within the dedupe window.",
                    &self.duplicate,
                ),
                (
                    "cut_off",
                    "Fan-out pages dropped because a newer root event for their target has run.",
                    &self.cut_off,
                ),
                (
                    "produced",
                    "Events a rule wrote to streams.",
                    &self.produced,
                ),
                (
                    "lag_records",
                    "Records in a rule's streams not yet finished.",
                    &self.lag,
                ),
            ],
        )
    }

    /// One rule's counters, for the caller's summary.
    pub fn counts(&self, rule: &str) -> [(&'static str, u64); 7] {
        let l = RuleLabel {
            rule: rule.to_owned(),
        };
        [
            ("matched", self.matched.get_or_create(&l).get()),
            ("executed", self.executed.get_or_create(&l).get()),
            ("retried", self.retried.get_or_create(&l).get()),
            ("failed", self.failed.get_or_create(&l).get()),
            ("duplicate", self.duplicate.get_or_create(&l).get()),
            ("cut_off", self.cut_off.get_or_create(&l).get()),
            ("produced", self.produced.get_or_create(&l).get()),
        ]
    }
}
