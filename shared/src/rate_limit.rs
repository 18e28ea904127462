//! GCRA rate limiting keyed by string, time passed in.
//!
//! Each key holds one number, its theoretical arrival time (TAT). An event
//! at `now` is allowed when `TAT + interval - burst * interval <= now`, and
//! then moves the TAT on by one interval; otherwise the answer says how long
//! until it would be allowed. Keys whose TAT has passed hold nothing a fresh
//! key would not, so [`RateLimiter::purge`] drops them and memory stays
//! bounded by the keys active within one burst time.

use crate::timestamp::Timestamp;
use std::collections::HashMap;

/// A rate: one event per `interval_nanos`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    interval_nanos: i64,
    burst: u32,
}

impl Quota {
    /// `events_per_second` sustained (above 0), `burst` at once (at least 1).
    pub fn per_second(events_per_second: f64, burst: u32) -> Quota {
        let interval = (1e9 / events_per_second.max(1e-9))
            .round()
            .clamp(1.0, i64::MAX as f64) as i64;
        Quota {
            interval_nanos: interval,
            burst: burst.max(1),
        }
    }
}

/// How long until an over-limit event would be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    /// Nanoseconds to wait.
    pub nanos: i64,
}

impl RetryAfter {
    /// Whole milliseconds, rounded up.
    pub fn millis(self) -> u64 {
        (self.nanos.max(0) as u64).div_ceil(1_000_000)
    }
}

/// Limits per key.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    tats: HashMap<String, i64, foldhash::fast::FixedState>,
    max_keys: usize,
}

/// The key that unknown keys share once `max_keys` are tracked.
pub const OVERFLOW_KEY: &str = "\u{0}overflow";

impl RateLimiter {
    /// A limiter tracking at most `max_keys` keys; `seed` keys the hash of client-chosen keys.
    pub fn new(max_keys: usize, seed: u64) -> Self {
        RateLimiter {
            tats: HashMap::with_hasher(foldhash::fast::FixedState::with_seed(seed)),
            max_keys: max_keys.max(1),
        }
    }

    /// Admits one event for `key` at `now`, or says when to retry.
    pub fn check(&mut self, key: &str, quota: Quota, now: Timestamp) -> Result<(), RetryAfter> {
        let now = now.unix_nanos();
        if !self.tats.contains_key(key) && self.tats.len() >= self.max_keys {
            self.purge(Timestamp::from_unix_nanos(now));
        }
        let key = if self.tats.contains_key(key) || self.tats.len() < self.max_keys {
            key
        } else {
            OVERFLOW_KEY
        };
        let tat = self.tats.get(key).copied().unwrap_or(now).max(now);
        let new_tat = tat.saturating_add(quota.interval_nanos);
        let allow_at =
            new_tat.saturating_sub(quota.interval_nanos.saturating_mul(i64::from(quota.burst)));
        if now < allow_at {
            return Err(RetryAfter {
                nanos: allow_at - now,
            });
        }
        match self.tats.get_mut(key) {
            Some(slot) => *slot = new_tat,
            None => {
                self.tats.insert(key.to_owned(), new_tat);
            }
        }
        Ok(())
    }

    /// Forgets keys whose allowance is full again at `now`.
    pub fn purge(&mut self, now: Timestamp) {
        let now = now.unix_nanos();
        self.tats.retain(|_, tat| *tat > now);
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.tats.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.tats.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_unix_nanos(1_700_000_000_000 * MS + ms * MS)
    }

    #[test]
    fn allows_the_burst_then_one_per_interval() {
        let mut l = RateLimiter::new(100, 0);
        let q = Quota::per_second(10.0, 3); // one per 100 ms, three at once
        for _ in 0..3 {
            assert_eq!(l.check("a", q, t(0)), Ok(()));
        }
        assert_eq!(l.check("a", q, t(0)), Err(RetryAfter { nanos: 100 * MS }));
        assert_eq!(l.check("a", q, t(99)), Err(RetryAfter { nanos: MS }));
        assert_eq!(l.check("a", q, t(100)), Ok(()));
        assert_eq!(l.check("a", q, t(100)), Err(RetryAfter { nanos: 100 * MS }));
        // Other keys are independent.
        assert_eq!(l.check("b", q, t(100)), Ok(()));
    }

    #[test]
    fn quiet_keys_refill_and_are_purged() {
        let mut l = RateLimiter::new(100, 0);
        let q = Quota::per_second(10.0, 2);
        assert!(l.check("a", q, t(0)).is_ok());
        assert!(l.check("a", q, t(0)).is_ok());
        assert!(l.check("a", q, t(0)).is_err());
        l.purge(t(199));
        assert_eq!(l.len(), 1);
        l.purge(t(200));
        assert!(l.is_empty());
        assert!(l.check("a", q, t(200)).is_ok());
        assert!(l.check("a", q, t(200)).is_ok());
    }

    #[test]
    fn unknown_keys_share_one_allowance_when_full() {
        let mut l = RateLimiter::new(2, 0);
        let q = Quota::per_second(1.0, 1);
        assert!(l.check("a", q, t(0)).is_ok());
        assert!(l.check("b", q, t(0)).is_ok());
        assert!(l.check("c", q, t(0)).is_ok()); // the overflow key's first event
        assert!(l.check("d", q, t(0)).is_err()); // shares c's allowance
        assert_eq!(l.len(), 3);
        assert_eq!(RetryAfter { nanos: 1 }.millis(), 1);
    }
}
