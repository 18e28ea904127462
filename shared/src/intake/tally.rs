//! Verdicts counted per stream, for hosts to export as metrics.

use super::{EventOutcome, RejectionKind, Verdict};

/// Counts of verdicts per stream, for hosts to export as metrics: every
/// event is accepted, sampled out or rejected, and each lands in one count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Per stream (`""` when the stream could not be told): counts by outcome.
    pub streams: std::collections::BTreeMap<String, StreamTally>,
}

/// One stream's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamTally {
    /// Accepted and sent on.
    pub accepted: u64,
    /// Valid, outside the sample, dropped.
    pub sampled_out: u64,
    /// Refused, by kind.
    pub rejected: std::collections::BTreeMap<RejectionKind, u64>,
}

impl Tally {
    /// Adds the outcomes of one body.
    pub fn add(&mut self, outcomes: &[EventOutcome]) {
        for o in outcomes {
            let name = o.stream.as_deref().unwrap_or_default();
            // Found by reference: a stream's name is copied only for its first count.
            if !self.streams.contains_key(name) {
                self.streams.insert(name.to_owned(), StreamTally::default());
            }
            let Some(s) = self.streams.get_mut(name) else {
                continue;
            };
            match &o.verdict {
                Verdict::Accepted => s.accepted += 1,
                Verdict::SampledOut => s.sampled_out += 1,
                Verdict::Rejected(r) => *s.rejected.entry(r.kind).or_default() += 1,
            }
        }
    }

    /// Events counted in all.
    pub fn total(&self) -> u64 {
        self.streams
            .values()
            .map(|s| s.accepted + s.sampled_out + s.rejected.values().sum::<u64>())
            .sum()
    }
}
