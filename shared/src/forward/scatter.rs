//! Sending one batch to the owners of its events, as a state machine the
//! hosts drive (the native edge over QUIC, the Worker over HTTPS): each round
//! places the events still unanswered on the first-ranked aggregator that is
//! up ([`Owners`]), one part per aggregator; the host sends the parts and
//! reports how each went. A part whose aggregator could not be reached goes
//! back into the next round, placed on the next-ranked aggregators (the
//! unreachable one is out for the rest of this batch). Error reports ride
//! with one part, once.

use super::Owners;
use crate::wire::{Batch, BatchAck, EventAck};

/// One aggregator's part of a batch.
#[derive(Debug, Clone)]
pub struct Part {
    /// The aggregator's index in the list.
    pub aggregator: usize,
    /// The events of the part, as a batch of its own.
    pub batch: Batch,
    /// How many of them are not on their first-ranked aggregator.
    pub moved: usize,
    indices: Vec<usize>,
    with_errors: bool,
}

/// How sending a part went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartOutcome {
    /// The aggregator answered with a verdict per event of the part.
    Acknowledged(Vec<EventAck>),
    /// The aggregator could not be reached: its events go to the next-ranked.
    Unreachable,
    /// The aggregator answered but took nothing (busy, failed, refused).
    Refused,
}

/// The scatter of one batch.
#[derive(Debug)]
pub struct Scatter {
    verdicts: Vec<Option<EventAck>>,
    pending: Vec<usize>,
    out: Vec<bool>,
    errors_left: bool,
    refused: bool,
}

impl Scatter {
    /// A scatter of `batch` over `aggregators` listed aggregators.
    pub fn new(batch: &Batch, aggregators: usize) -> Self {
        Scatter {
            verdicts: vec![None; batch.events.len()],
            pending: (0..batch.events.len()).collect(),
            out: vec![false; aggregators],
            errors_left: !batch.errors.is_empty(),
            refused: false,
        }
    }

    /// Whether every event has its verdict and the error reports are delivered, or a
    /// part was refused (the host then answers the batch with that refusal).
    pub fn done(&self) -> bool {
        self.refused || (self.pending.is_empty() && !self.errors_left)
    }

    /// The parts of the next round, over the aggregators `up` says are up (and not out
    /// for this batch); `None` when events are left and no aggregator can take them.
    pub fn round(
        &mut self,
        owners: &Owners,
        batch: &Batch,
        up: impl Fn(usize) -> bool,
    ) -> Option<Vec<Part>> {
        // Asked once per aggregator a round, not once per event: a host's answer may take a lock.
        let up: Vec<bool> = (0..owners.len())
            .map(|a| !self.out.get(a).copied().unwrap_or(true) && up(a))
            .collect();
        let up = |a: usize| up[a];
        let mut placement = owners.place(self.pending.iter().map(|&n| &batch.events[n].id), up);
        if !placement.unplaced.is_empty() {
            return None;
        }
        if self.pending.is_empty() && self.errors_left {
            // Only error reports are left: they go to the owner of the batch's id.
            placement
                .groups
                .push((owners.owner(&batch.id, up)?.0, Vec::new()));
        }
        let mut parts = Vec::with_capacity(placement.groups.len());
        for (k, (aggregator, members)) in placement.groups.into_iter().enumerate() {
            let indices: Vec<usize> = members.into_iter().map(|m| self.pending[m]).collect();
            let with_errors = k == 0 && self.errors_left;
            let moved = indices
                .iter()
                .filter(|&&n| !owners.owns(aggregator, &batch.events[n].id))
                .count();
            parts.push(Part {
                aggregator,
                batch: part_of(batch, &indices, aggregator, with_errors),
                moved,
                indices,
                with_errors,
            });
        }
        self.pending.clear();
        Some(parts)
    }

    /// Records how `part` went.
    pub fn answered(&mut self, part: Part, outcome: PartOutcome) {
        match outcome {
            PartOutcome::Acknowledged(verdicts) => {
                self.errors_left &= !part.with_errors;
                for (n, v) in part.indices.into_iter().zip(verdicts) {
                    self.verdicts[n] = Some(v);
                }
            }
            PartOutcome::Unreachable => {
                if let Some(out) = self.out.get_mut(part.aggregator) {
                    *out = true;
                }
                self.pending.extend(part.indices);
            }
            PartOutcome::Refused => {
                self.errors_left &= !part.with_errors;
                self.refused = true;
            }
        }
    }

    /// The batch's acknowledgement, from every part's verdicts (an event no part
    /// answered for is failed, so that it is sent again).
    pub fn finish(self, batch_id: [u8; 16]) -> BatchAck {
        BatchAck {
            batch_id,
            verdicts: self
                .verdicts
                .into_iter()
                .map(|v| {
                    v.unwrap_or(EventAck::Failed {
                        reason: "no aggregator answered for this event".into(),
                    })
                })
                .collect(),
        }
    }
}

/// The events of `batch` at `indices`, as the part for `aggregator`. The part with the
/// error reports keeps the batch's id (the aggregator derives the error events' ids from
/// it, so a retry writes them once); the others get ids derived from it.
fn part_of(batch: &Batch, indices: &[usize], aggregator: usize, with_errors: bool) -> Batch {
    let mut id = batch.id;
    if !with_errors {
        id[15] ^= 0x80;
        for (b, x) in id.iter_mut().zip((aggregator as u64 + 1).to_le_bytes()) {
            *b ^= x;
        }
    }
    Batch {
        id,
        events: if indices.len() == batch.events.len() {
            batch.events.clone()
        } else {
            indices.iter().map(|&n| batch.events[n].clone()).collect()
        },
        errors: if with_errors {
            batch.errors.clone()
        } else {
            Vec::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{BatchError, BatchEvent};

    fn batch(n: u64) -> Batch {
        Batch {
            id: [9; 16],
            events: (0..n)
                .map(|i| BatchEvent {
                    stream: "s".into(),
                    topic: "t".into(),
                    partition_key: None,
                    rate_key: None,
                    id: {
                        let mut id = [0u8; 16];
                        id[..8]
                            .copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
                        id
                    },
                    received_ms: 0,
                    dt_ms: 0,
                    schema_uri: "/s/1.0.0".into(),
                    dedupe: true,
                    json: format!("{{\"n\":{i}}}").into_bytes().into(),
                })
                .collect(),
            errors: vec![BatchError {
                stream: Some("s".into()),
                schema_uri: None,
                raw_event: "{".into(),
                message: "bad".into(),
                error_type: "invalid".into(),
                received_ms: 0,
                request_id: None,
            }],
        }
    }

    #[test]
    fn parts_go_to_owners_and_an_unreachable_one_moves_its_events_on() {
        let owners = Owners::new(&["a", "b", "c"]);
        let b = batch(300);
        let mut s = Scatter::new(&b, 3);
        let parts = s.round(&owners, &b, |_| true).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parts.iter().map(|p| p.batch.events.len()).sum::<usize>(),
            300
        );
        assert_eq!(
            parts.iter().filter(|p| !p.batch.errors.is_empty()).count(),
            1
        );
        assert!(parts.iter().all(|p| p.moved == 0));
        let mut on_b = 0;
        for p in parts {
            if p.aggregator == 1 {
                on_b = p.batch.events.len();
                s.answered(p, PartOutcome::Unreachable);
            } else {
                let n = p.batch.events.len();
                s.answered(p, PartOutcome::Acknowledged(vec![EventAck::Accepted; n]));
            }
        }
        assert!(!s.done());
        // The next round places only b's events, each on its next-ranked aggregator.
        let again = s.round(&owners, &b, |_| true).unwrap();
        assert_eq!(again.iter().map(|p| p.moved).sum::<usize>(), on_b);
        assert!(again.iter().all(|p| p.aggregator != 1));
        for p in again {
            let n = p.batch.events.len();
            s.answered(p, PartOutcome::Acknowledged(vec![EventAck::Duplicate; n]));
        }
        assert!(s.done());
        let ack = s.finish(b.id);
        assert_eq!(ack.verdicts.len(), 300);
        let dup = ack
            .verdicts
            .iter()
            .filter(|v| **v == EventAck::Duplicate)
            .count();
        assert_eq!(dup, on_b);
    }

    #[test]
    fn no_aggregator_up_or_a_refusal_ends_the_scatter() {
        let owners = Owners::new(&["a", "b"]);
        let b = batch(10);
        let mut s = Scatter::new(&b, 2);
        assert!(s.round(&owners, &b, |_| false).is_none());
        let parts = s.round(&owners, &b, |_| true).unwrap();
        let first = parts.into_iter().next().unwrap();
        s.answered(first, PartOutcome::Refused);
        assert!(s.done());
        // A batch of error reports alone still goes somewhere, once.
        let errors_only = Batch {
            events: Vec::new(),
            ..batch(0)
        };
        let mut s = Scatter::new(&errors_only, 2);
        let parts = s.round(&owners, &errors_only, |_| true).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].batch.id, errors_only.id);
        let p = parts.into_iter().next().unwrap();
        s.answered(p, PartOutcome::Acknowledged(Vec::new()));
        assert!(s.done());
    }
}
