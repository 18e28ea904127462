//! The edge's forwarding policy as state machines driven with time passed
//! in, as quinn-proto is for quinn: batching by count, bytes and age with a
//! limit on batches in flight ([`Batcher`]), the choice of aggregator with
//! failover and backoff with jitter ([`Failover`]), what to do after each
//! attempt to deliver a batch ([`Delivery`]), when compressing is worth it
//! ([`CompressionGate`]), which aggregator owns each event ([`Owners`]),
//! which spooled records are done and may be trimmed
//! ([`DoneWindow`]), and what an acknowledgement's verdicts come to.
//! The native edge's tokio shell drives them; tests drive them step by step.

mod batcher;
mod compression;
mod delivery;
mod failover;
mod owners;
mod scatter;
mod window;

pub use batcher::{BatchLimits, Batcher};
pub use compression::CompressionGate;
pub use delivery::{Attempted, Delivery, Next};
pub use failover::{Attempt, Failover};
pub use owners::{Owners, Placement, aggregator_name};
pub use scatter::{Part, PartOutcome, Scatter};
pub use window::DoneWindow;

use crate::wire::{BatchEvent, EventAck};

/// How many events of a batch got each verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerdictCounts {
    /// Durable.
    pub accepted: usize,
    /// Seen before within the dedupe window.
    pub duplicate: usize,
    /// Over a rate limit.
    pub rate_limited: usize,
    /// Not written; worth sending again.
    pub failed: usize,
}

impl VerdictCounts {
    /// Counts `verdicts`.
    pub fn of<'a>(verdicts: impl IntoIterator<Item = &'a EventAck>) -> Self {
        let mut c = VerdictCounts::default();
        for v in verdicts {
            match v {
                EventAck::Accepted => c.accepted += 1,
                EventAck::Duplicate => c.duplicate += 1,
                EventAck::RateLimited { .. } => c.rate_limited += 1,
                EventAck::Failed { .. } => c.failed += 1,
            }
        }
        c
    }
}

/// The events whose verdict is `failed`: to be sent again. Accepted and
/// duplicate events are done; rate-limited ones are for their senders to retry.
pub fn failed_events(events: Vec<BatchEvent>, verdicts: &[EventAck]) -> Vec<BatchEvent> {
    events
        .into_iter()
        .zip(verdicts)
        .filter(|(_, v)| matches!(v, EventAck::Failed { .. }))
        .map(|(e, _)| e)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_counted_and_failed_events_kept_for_another_try() {
        let event = |n: u8| BatchEvent {
            stream: "s".into(),
            topic: "t".into(),
            partition_key: None,
            rate_key: None,
            id: [n; 16],
            received_ms: 0,
            dt_ms: 0,
            schema_uri: "/s/1.0.0".into(),
            dedupe: true,
            json: b"{}".to_vec().into(),
        };
        let verdicts = [
            EventAck::Accepted,
            EventAck::Failed {
                reason: "disk".into(),
            },
            EventAck::Duplicate,
            EventAck::RateLimited { retry_after_ms: 5 },
            EventAck::Failed {
                reason: "disk".into(),
            },
        ];
        assert_eq!(
            VerdictCounts::of(&verdicts),
            VerdictCounts {
                accepted: 1,
                duplicate: 1,
                rate_limited: 1,
                failed: 2
            }
        );
        let again = failed_events((0..5).map(event).collect(), &verdicts);
        assert_eq!(again.iter().map(|e| e.id[0]).collect::<Vec<_>>(), [1, 4]);
    }
}
