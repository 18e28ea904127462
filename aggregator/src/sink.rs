//! What the commit loop writes to: the [`Sink`] trait, with the embedded log
//! ([`crate::log_sink`]) and Kafka ([`crate::kafka`]) as its two kinds, and
//! what every sink needs to answer batches ([`Job`], [`Finisher`]).

use crate::admit::{Admission, Admit};
use crate::budget::Budget;
use crate::metrics::Metrics;
use sluice_host::metrics::Outcome;
use sluice_shared::{Batch, BatchAck, EventAck, Timestamp};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::oneshot;

/// Why a sink could not recall the ids it holds.
pub type SinkError = sluice_log::LogError;

/// Where admitted events go. The commit loop owns its sink on one thread and
/// calls it in this order: [`Sink::recall`] once, [`Sink::begin`] once, then for
/// every group [`Sink::settle`] and [`Sink::write_group`], with
/// [`Sink::housekeep`] between groups and at least once a second, and
/// [`Sink::close`] when every sender is gone.
pub trait Sink: Send + 'static {
    /// What the sink rebuilds the dedupe window from, for log lines.
    fn source(&self) -> &'static str;

    /// Calls `f` with the id and receive time (Unix milliseconds) of every
    /// event the sink holds that was received at or after `since_ms`.
    fn recall(&self, since_ms: i64, f: &mut dyn FnMut([u8; 16], i64)) -> Result<(), SinkError>;

    /// How far before the newest saved dedupe slice a restart must recall: the times
    /// [`Sink::recall`] gives can trail the admission times the slices keep.
    fn recall_margin_ms(&self) -> i64 {
        0
    }

    /// Starts whatever answers batches beside the loop, through `finisher`.
    fn begin(&mut self, finisher: Finisher);

    /// Applies to `admission` what became durable or failed since the last call.
    fn settle(&mut self, admission: &mut Admission);

    /// Writes the admitted events of `group` (`admits[i]` are the verdicts on
    /// `group[i]`), received at `at`; answers each batch once its events are
    /// durable (now, or later from beside the loop) and tells `admission`
    /// which writes to confirm or forget.
    fn write_group(
        &mut self,
        group: Vec<Job>,
        admits: Vec<Vec<Admit>>,
        admission: &mut Admission,
        at: Timestamp,
    );

    /// Chores that come due with time (retention).
    fn housekeep(&mut self, now: SystemTime);

    /// Answers everything taken, then stops.
    fn close(self: Box<Self>);
}

/// A batch taken by the commit loop, with whom to answer.
pub struct Job {
    pub(crate) batch: Arc<Batch>,
    /// How many of the batch's events get verdicts; the rest are error events.
    pub(crate) answered: usize,
    pub(crate) reply: oneshot::Sender<BatchAck>,
    /// The batch's share of the in-flight budget, given back when it is answered.
    pub(crate) bytes: usize,
}

/// Answers batches: verdicts, metrics, and the in-flight budget.
#[derive(Clone)]
pub struct Finisher {
    pub(crate) metrics: Metrics,
    pub(crate) budget: Arc<Budget>,
}

/// Counts per (stream, outcome), added to the metrics once each: a batch holds a
/// stream or a few, and each metrics update takes a lock.
#[derive(Default)]
struct Tally<'s>(Vec<(&'s str, Outcome, u64)>);

impl<'s> Tally<'s> {
    fn add(&mut self, stream: &'s str, outcome: Outcome) {
        match self
            .0
            .iter_mut()
            .find(|(s, o, _)| *o == outcome && *s == stream)
        {
            Some((_, _, n)) => *n += 1,
            None => self.0.push((stream, outcome, 1)),
        }
    }
}

impl Finisher {
    /// Answers `job`: `failure(i)` is why event `i`, admitted for writing, was not written.
    pub(crate) fn finish<'a>(
        &self,
        job: Job,
        admits: &[Admit],
        failure: impl Fn(usize) -> Option<&'a str>,
    ) {
        let mut verdicts = Vec::with_capacity(job.answered);
        let mut tally = Tally::default();
        // Durable events for the console's open tails, if any.
        let tapping = self.metrics.taps.is_open();
        let mut durable = Vec::new();
        for (i, (event, admit)) in job.batch.events.iter().zip(admits).enumerate() {
            let verdict = match admit {
                Admit::Write => match failure(i) {
                    None => EventAck::Accepted,
                    Some(reason) => EventAck::Failed {
                        reason: reason.to_owned(),
                    },
                },
                Admit::Duplicate => EventAck::Duplicate,
                // Its earlier copy's fate: `failure(i)` says why it is not durable, if it is not.
                Admit::InFlight => match failure(i) {
                    None => EventAck::Duplicate,
                    Some(reason) => EventAck::Failed {
                        reason: reason.to_owned(),
                    },
                },
                Admit::RateLimited { retry_after_ms } => EventAck::RateLimited {
                    retry_after_ms: *retry_after_ms,
                },
            };
            let outcome = match &verdict {
                EventAck::Accepted => Outcome::Accepted,
                EventAck::Failed { .. } => Outcome::Failed,
                EventAck::Duplicate => Outcome::Duplicate,
                EventAck::RateLimited { .. } => Outcome::RateLimited,
            };
            tally.add(&event.stream, Outcome::Received);
            tally.add(&event.stream, outcome);
            if tapping && outcome == Outcome::Accepted {
                durable.push(event);
            }
            if i < job.answered {
                verdicts.push(verdict);
            }
        }
        for (stream, outcome, n) in tally.0 {
            self.metrics.count(stream, outcome, n);
        }
        if !durable.is_empty() {
            self.metrics.taps.offer(durable.iter().copied());
        }
        self.budget.release(job.bytes);
        // A sender that gave up waiting has nothing to be told.
        let _ = job.reply.send(BatchAck {
            batch_id: job.batch.id,
            verdicts,
        });
    }
}
