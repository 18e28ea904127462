//! A byte budget shared by senders and the commit loop: what is queued or
//! being written may not exceed it, so a slow disk cannot make the
//! aggregator's memory grow without bound.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes held against a limit.
#[derive(Debug)]
pub struct Budget {
    max: usize,
    held: AtomicUsize,
}

impl Budget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Self {
        Budget {
            max,
            held: AtomicUsize::new(0),
        }
    }

    /// Takes `bytes` if they fit; a single request larger than the whole budget
    /// fits when nothing else is held, or nothing that large could ever pass.
    pub fn try_take(&self, bytes: usize) -> bool {
        let mut held = self.held.load(Ordering::Acquire);
        loop {
            if held > 0 && held.saturating_add(bytes) > self.max {
                return false;
            }
            match self.held.compare_exchange_weak(
                held,
                held + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => held = now,
            }
        }
    }

    /// Gives `bytes` back.
    pub fn release(&self, bytes: usize) {
        // Saturating, so that a release without its take can never wrap the count and refuse everything.
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                Some(h.saturating_sub(bytes))
            });
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_no_more_than_the_budget_but_never_starves_a_large_request() {
        let b = Budget::new(100);
        assert!(b.try_take(60));
        assert!(b.try_take(40));
        assert!(!b.try_take(1));
        b.release(40);
        assert!(!b.try_take(41));
        assert!(b.try_take(40));
        b.release(100);
        assert_eq!(b.held(), 0);
        // Alone, a request over the whole budget passes; with anything held, it waits.
        assert!(b.try_take(500));
        assert!(!b.try_take(1));
        b.release(500);
        assert_eq!(b.held(), 0);
    }
}
