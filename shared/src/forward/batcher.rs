//! Batching: items (a request's accepted events) gather into a batch until
//! it holds enough events or bytes, or its first item has waited long
//! enough; closed batches go out while fewer than the in-flight limit are on
//! their way, and wait in order otherwise.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When a batch closes, and how many may be on their way at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Events per batch at most: a batch closes when it holds this many.
    pub max_events: usize,
    /// Event bytes per batch at most: a batch closes when it holds this many.
    pub max_bytes: usize,
    /// Longest wait of a batch's first item before the batch closes.
    pub max_age: Duration,
    /// Batches handed out and not yet done, at most.
    pub in_flight: usize,
}

/// The batch being filled.
#[derive(Debug)]
struct Open<T> {
    items: Vec<T>,
    events: usize,
    bytes: usize,
    /// When it closes by age: its first item's arrival plus the age limit.
    due: Instant,
}

/// A batcher driven with time passed in: [`Batcher::push`] items,
/// [`Batcher::poll_batch`] for batches to send, [`Batcher::poll_timeout`] for
/// when to poll next, [`Batcher::on_done`] when a batch handed out is done.
#[derive(Debug)]
pub struct Batcher<T> {
    limits: BatchLimits,
    open: Option<Open<T>>,
    ready: VecDeque<Vec<T>>,
    in_flight: usize,
}

impl<T> Batcher<T> {
    /// An empty batcher; limits of zero are taken as one.
    pub fn new(limits: BatchLimits) -> Self {
        Batcher {
            limits: BatchLimits {
                max_events: limits.max_events.max(1),
                max_bytes: limits.max_bytes.max(1),
                in_flight: limits.in_flight.max(1),
                ..limits
            },
            open: None,
            ready: VecDeque::new(),
            in_flight: 0,
        }
    }

    /// Adds `item`, of `events` events and `bytes` bytes, arriving at `now`.
    pub fn push(&mut self, now: Instant, item: T, events: usize, bytes: usize) {
        let max_age = self.limits.max_age;
        let open = self.open.get_or_insert_with(|| Open {
            items: Vec::new(),
            events: 0,
            bytes: 0,
            due: now + max_age,
        });
        open.items.push(item);
        open.events += events;
        open.bytes += bytes;
        if open.events >= self.limits.max_events || open.bytes >= self.limits.max_bytes {
            self.close();
        }
    }

    /// Closes the batch being filled, whatever it holds.
    pub fn flush(&mut self) {
        self.close();
    }

    fn close(&mut self) {
        if let Some(open) = self.open.take() {
            self.ready.push_back(open.items);
        }
    }

    /// A batch to send now, if one is closed (by size, or by age at `now`) and
    /// fewer than the in-flight limit are on their way; it counts as in flight
    /// until [`Batcher::on_done`].
    pub fn poll_batch(&mut self, now: Instant) -> Option<Vec<T>> {
        if self.open.as_ref().is_some_and(|o| o.due <= now) {
            self.close();
        }
        if self.in_flight >= self.limits.in_flight {
            return None;
        }
        let batch = self.ready.pop_front()?;
        self.in_flight += 1;
        Some(batch)
    }

    /// When the batch being filled closes by age, if there is one.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.open.as_ref().map(|o| o.due)
    }

    /// A batch handed out by [`Batcher::poll_batch`] is done.
    pub fn on_done(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Whether new items should be taken: no closed batch is waiting for
    /// room in flight. A driver that stops taking items while this is false
    /// passes backpressure on to whoever queues them.
    pub fn accepting(&self) -> bool {
        self.ready.is_empty()
    }

    /// Whether nothing is being filled, waiting, or on its way.
    pub fn is_idle(&self) -> bool {
        self.open.is_none() && self.ready.is_empty() && self.in_flight == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> BatchLimits {
        BatchLimits {
            max_events: 10,
            max_bytes: 1000,
            max_age: Duration::from_millis(10),
            in_flight: 2,
        }
    }

    #[test]
    fn batches_close_by_count_bytes_and_age() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = Batcher::new(limits());
        assert_eq!(b.poll_timeout(), None);
        assert!(b.is_idle());
        // By count: 4 + 6 events close the batch at once.
        b.push(t0, "a", 4, 10);
        assert_eq!(b.poll_timeout(), Some(ms(10)));
        assert_eq!(b.poll_batch(t0), None, "not full, not old");
        b.push(ms(1), "b", 6, 10);
        assert_eq!(b.poll_timeout(), None);
        assert_eq!(b.poll_batch(ms(1)), Some(vec!["a", "b"]));
        // By bytes.
        b.push(ms(2), "c", 1, 999);
        assert_eq!(b.poll_batch(ms(2)), None);
        b.push(ms(3), "d", 1, 1);
        assert_eq!(b.poll_batch(ms(3)), Some(vec!["c", "d"]));
        // By age: due 10 ms after the first item, not after the last.
        b.on_done();
        b.on_done();
        b.push(ms(20), "e", 1, 1);
        b.push(ms(29), "f", 1, 1);
        assert_eq!(b.poll_timeout(), Some(ms(30)));
        assert_eq!(b.poll_batch(ms(29)), None);
        assert_eq!(b.poll_batch(ms(30)), Some(vec!["e", "f"]));
        assert!(!b.is_idle());
        b.on_done();
        assert!(b.is_idle());
    }

    #[test]
    fn batches_wait_in_order_for_room_in_flight() {
        let t0 = Instant::now();
        let mut b = Batcher::new(BatchLimits {
            max_events: 1,
            ..limits()
        });
        for item in 1..=4 {
            b.push(t0, item, 1, 1);
        }
        assert!(!b.accepting());
        assert_eq!(b.poll_batch(t0), Some(vec![1]));
        assert_eq!(b.poll_batch(t0), Some(vec![2]));
        assert_eq!(b.poll_batch(t0), None, "two in flight already");
        b.on_done();
        assert_eq!(b.poll_batch(t0), Some(vec![3]));
        assert!(!b.accepting());
        b.on_done();
        assert_eq!(b.poll_batch(t0), Some(vec![4]));
        assert!(b.accepting());
        // A flush closes a batch that is neither full nor old.
        let mut b = Batcher::new(limits());
        b.push(t0, 9, 1, 1);
        b.flush();
        assert_eq!(b.poll_batch(t0), Some(vec![9]));
    }
}
