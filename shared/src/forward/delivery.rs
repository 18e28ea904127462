//! What to do after each attempt to deliver a batch, by the kind of batch:
//! a guaranteed request's batch is retried until its deadline, then given
//! up (its senders get 503); a hasty batch, read from the spool where its
//! events are already durable, is retried until an aggregator answers it.

use std::time::{Duration, Instant};

/// How an attempt to deliver a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempted {
    /// The aggregator answered with a verdict per event.
    Acknowledged,
    /// The aggregator is busy: it asks for a retry after this long.
    Busy(Duration),
    /// The aggregator failed the batch as a whole.
    Failed,
    /// The aggregator refused this edge's certificate or token.
    Unauthorized,
    /// The aggregator could not read the batch.
    BadRequest,
    /// No aggregator could be reached; the link retries after this long.
    Down {
        /// When the link will try again.
        retry_after: Duration,
        /// Another batch is connecting right now: a moment's wait, no failure yet.
        connecting: bool,
    },
}

/// What to do next with the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// It is delivered: settle its verdicts.
    Done,
    /// Send it again after this long.
    Retry(Duration),
    /// Stop: answer its senders that no aggregator took it, and to retry after this long.
    GiveUp(Duration),
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Guaranteed { deadline: Instant },
    Spooled,
}

/// The delivery of one batch, driven with time passed in.
#[derive(Debug, Clone, Copy)]
pub struct Delivery(Kind);

impl Delivery {
    /// A guaranteed request's batch, given up `timeout` after `now`.
    pub fn guaranteed(now: Instant, timeout: Duration) -> Self {
        Delivery(Kind::Guaranteed {
            deadline: now + timeout,
        })
    }

    /// A batch from the spool: tried until an aggregator answers it.
    pub fn spooled() -> Self {
        Delivery(Kind::Spooled)
    }

    /// When an attempt under way should be abandoned, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.0 {
            Kind::Guaranteed { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// What to do after `attempt` ended at `now`.
    pub fn next(&self, now: Instant, attempt: Attempted) -> Next {
        if attempt == Attempted::Acknowledged {
            return Next::Done;
        }
        match self.0 {
            Kind::Guaranteed { deadline } => {
                let wait = match attempt {
                    Attempted::Busy(wait)
                    | Attempted::Down {
                        retry_after: wait, ..
                    } => wait,
                    Attempted::Failed => Duration::from_millis(200),
                    // A configuration fault: retrying soon cannot help.
                    Attempted::Unauthorized | Attempted::BadRequest => Duration::from_secs(5),
                    Attempted::Acknowledged => Duration::ZERO,
                };
                if now + wait > deadline {
                    Next::GiveUp(wait)
                } else {
                    Next::Retry(wait)
                }
            }
            Kind::Spooled => Next::Retry(match attempt {
                Attempted::Busy(wait)
                | Attempted::Down {
                    retry_after: wait, ..
                } => wait,
                _ => Duration::from_secs(1),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn down(ms: u64, connecting: bool) -> Attempted {
        Attempted::Down {
            retry_after: MS * ms as u32,
            connecting,
        }
    }

    #[test]
    fn a_guaranteed_batch_is_retried_until_its_deadline_then_given_up() {
        let t0 = Instant::now();
        let d = Delivery::guaranteed(t0, Duration::from_secs(5));
        assert_eq!(d.deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(d.next(t0, Attempted::Acknowledged), Next::Done);
        // A sequence as a dead aggregator gives it: backoffs, then a busy one, then time is up.
        let mut now = t0;
        let mut seen = Vec::new();
        for attempt in [
            down(100, false),
            down(400, false),
            Attempted::Busy(MS * 1000),
            Attempted::Failed,
            down(3000, false),
            down(3000, false),
        ] {
            let next = d.next(now, attempt);
            seen.push(next);
            if let Next::Retry(wait) = next {
                now += wait;
            }
        }
        assert_eq!(
            seen,
            [
                Next::Retry(MS * 100),
                Next::Retry(MS * 400),
                Next::Retry(MS * 1000),
                Next::Retry(MS * 200),
                Next::Retry(MS * 3000),
                // 4.7 s in: another 3 s would pass the deadline.
                Next::GiveUp(MS * 3000),
            ]
        );
        assert_eq!(
            d.next(t0, Attempted::Unauthorized),
            Next::Retry(Duration::from_secs(5))
        );
        assert_eq!(
            d.next(t0 + MS, Attempted::BadRequest),
            Next::GiveUp(Duration::from_secs(5))
        );
    }

    #[test]
    fn a_spooled_batch_is_retried_until_answered() {
        let t0 = Instant::now();
        let d = Delivery::spooled();
        assert_eq!(d.next(t0, down(700, false)), Next::Retry(MS * 700));
        assert_eq!(d.next(t0, Attempted::Busy(MS * 20)), Next::Retry(MS * 20));
        assert_eq!(
            d.next(t0 + Duration::from_secs(3600), Attempted::Failed),
            Next::Retry(Duration::from_secs(1))
        );
        assert_eq!(d.next(t0, Attempted::Acknowledged), Next::Done);
    }
}
