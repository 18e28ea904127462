//! Which aggregator to connect to, and when: one is in use at a time; a
//! lost connection moves on to the next one in the list; a connection
//! attempt walks the whole list from the one in use; when every aggregator
//! failed, the next attempt waits, doubling from 100 ms up to 5 s, with
//! jitter so that edges that lost the same aggregator do not come back in
//! step.

use std::time::{Duration, Instant};

/// The first backoff after every aggregator failed.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The choice of aggregator, driven with time passed in.
#[derive(Debug)]
pub struct Failover {
    aggregators: usize,
    /// Index of the aggregator to try first.
    current: usize,
    /// Rounds over every aggregator that failed in a row.
    failures: u32,
    /// No connection attempt before this.
    next_attempt: Option<Instant>,
    rng: fastrand::Rng,
}

/// Whether to connect now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Try these aggregators (indices into the list), in this order.
    Try(Vec<usize>),
    /// Not before this much time has passed.
    Wait(Duration),
}

impl Failover {
    /// The choice among `aggregators` (at least one is assumed), jittered from `seed`.
    pub fn new(aggregators: usize, seed: u64) -> Self {
        Failover {
            aggregators: aggregators.max(1),
            current: 0,
            failures: 0,
            next_attempt: None,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The aggregator in use, or to try first.
    pub fn current(&self) -> usize {
        self.current
    }

    /// Whether the last round over every aggregator failed.
    pub fn failing(&self) -> bool {
        self.failures > 0
    }

    /// Whether a connection attempt may start at `now`, and in which order.
    pub fn attempt(&self, now: Instant) -> Attempt {
        match self.next_attempt {
            Some(at) if now < at => Attempt::Wait(at - now),
            _ => Attempt::Try(
                (0..self.aggregators)
                    .map(|k| (self.current + k) % self.aggregators)
                    .collect(),
            ),
        }
    }

    /// The attempt reached aggregator `index`: it is in use from now on.
    pub fn on_connected(&mut self, index: usize) {
        self.current = index % self.aggregators;
        self.failures = 0;
        self.next_attempt = None;
    }

    /// Every aggregator failed at `now`: how long until the next attempt.
    pub fn on_all_failed(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let base = FIRST_BACKOFF
            .saturating_mul(1 << self.failures.min(6))
            .min(MAX_BACKOFF);
        let wait = base.mul_f64(0.5 + self.rng.f64() * 0.5);
        self.next_attempt = Some(now + wait);
        wait
    }

    /// The connection to aggregator `index` was lost: the next attempt starts
    /// at the one after it (unless another is in use by now).
    pub fn on_lost(&mut self, index: usize) {
        if index == self.current {
            self.current = (self.current + 1) % self.aggregators;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_walk_the_list_from_the_one_in_use_and_move_on_when_it_is_lost() {
        let now = Instant::now();
        let mut f = Failover::new(3, 1);
        assert_eq!(f.attempt(now), Attempt::Try(vec![0, 1, 2]));
        f.on_connected(1);
        assert_eq!(f.current(), 1);
        assert_eq!(f.attempt(now), Attempt::Try(vec![1, 2, 0]));
        // Losing another than the one in use changes nothing.
        f.on_lost(0);
        assert_eq!(f.current(), 1);
        f.on_lost(1);
        assert_eq!(f.attempt(now), Attempt::Try(vec![2, 0, 1]));
        f.on_lost(2);
        assert_eq!(f.current(), 0, "wraps around");
    }

    #[test]
    fn backoff_doubles_to_five_seconds_with_jitter_and_resets_on_success() {
        let t0 = Instant::now();
        let mut f = Failover::new(2, 42);
        let mut at = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let wait = f.on_all_failed(at);
            assert!(f.failing());
            // No attempt before the wait is over; one at its end.
            assert_eq!(f.attempt(at), Attempt::Wait(wait));
            assert!(matches!(f.attempt(at + wait), Attempt::Try(_)));
            waits.push(wait);
            at += wait;
        }
        // Base 200 ms, 400, 800, 1.6 s, 3.2 s, then 5 s: each wait is half to all of it.
        let bases = [200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for (wait, base) in waits.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(*wait >= base / 2 && *wait <= base, "{wait:?} for {base:?}");
        }
        // Jitter: the same seed gives the same sequence, another seed another.
        let mut again = Failover::new(2, 42);
        let replay: Vec<Duration> = (0..8).map(|_| again.on_all_failed(t0)).collect();
        assert_eq!(replay, waits);
        let mut other = Failover::new(2, 43);
        let different: Vec<Duration> = (0..8).map(|_| other.on_all_failed(t0)).collect();
        assert_ne!(different, waits);
        f.on_connected(1);
        assert!(!f.failing());
        assert_eq!(f.attempt(at), Attempt::Try(vec![1, 0]));
        let wait = f.on_all_failed(at);
        assert!(
            wait <= Duration::from_millis(200),
            "the backoff starts over"
        );
    }
}
