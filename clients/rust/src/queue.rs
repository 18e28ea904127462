//! The durable queue: events appended to a `sluice-log` topic and synced
//! before `submit` returns, a committed position that moves past a batch
//! only once the edge has answered it, and a bound that drops the oldest
//! events (counted) when the app has been offline too long.

use crate::ClientError;
use sluice_log::{ConsumerPosition, Log, LogOptions, NewRecord};
use std::path::Path;

const TOPIC: &str = "events";
const CONSUMER: &str = "sent";

/// Events waiting to be sent, on disk.
pub(crate) struct Queue {
    log: Log,
    position: ConsumerPosition,
    /// The first event not yet answered.
    next: u64,
    /// Events above the bound, dropped oldest first, since opening.
    pub(crate) dropped_oldest: u64,
    max: u64,
}

/// Events read from the queue, to send.
pub(crate) struct Taken {
    /// Each event's JSON.
    pub(crate) events: Vec<Vec<u8>>,
    /// The position after the last of them.
    pub(crate) end: u64,
}

impl Queue {
    /// Opens (or creates) the queue in `dir`, holding at most `max` events.
    pub(crate) fn open(dir: &Path, max: u64) -> Result<Queue, ClientError> {
        let options = LogOptions {
            segment_bytes: 8 * 1024 * 1024,
            ..LogOptions::default()
        };
        let log = Log::open(dir, options)?;
        let position = ConsumerPosition::new(dir, TOPIC, CONSUMER)?;
        let next = position.load()?.unwrap_or(0).max(log.first_offset(TOPIC));
        Ok(Queue {
            log,
            position,
            next,
            dropped_oldest: 0,
            max: max.max(1),
        })
    }

    /// Events waiting.
    pub(crate) fn len(&self) -> u64 {
        self.log.next_offset(TOPIC).saturating_sub(self.next)
    }

    /// Appends `events` and syncs them; beyond the bound, the oldest are dropped.
    pub(crate) fn push(&mut self, events: &[Vec<u8>], now_ms: i64) -> Result<u64, ClientError> {
        if events.is_empty() {
            return Ok(0);
        }
        let records: Vec<NewRecord<'_>> = events
            .iter()
            .map(|e| NewRecord {
                timestamp_ms: now_ms,
                key: None,
                headers: &[],
                value: e,
            })
            .collect();
        self.log.append(TOPIC, &records)?;
        self.log.sync()?;
        let over = self.len().saturating_sub(self.max);
        if over > 0 {
            tracing::warn!(
                dropped = over,
                bound = self.max,
                "The queue is full: dropped the oldest events."
            );
            self.dropped_oldest += over;
            self.advance(self.next + over)?;
        }
        Ok(over)
    }

    /// Up to `max` events (and at most about `max_bytes`) from the first unanswered one.
    pub(crate) fn peek(&self, max: usize, max_bytes: usize) -> Result<Taken, ClientError> {
        let records = self.log.read(TOPIC, self.next, max)?;
        let mut events = Vec::with_capacity(records.len());
        let mut bytes = 0;
        let mut end = self.next;
        for r in records {
            if !events.is_empty() && bytes + r.value.len() > max_bytes {
                break;
            }
            bytes += r.value.len();
            end = r.offset + 1;
            events.push(r.value);
        }
        Ok(Taken { events, end })
    }

    /// Marks everything before `end` answered: committed (synced), and
    /// segments holding only answered events deleted.
    pub(crate) fn advance(&mut self, end: u64) -> Result<(), ClientError> {
        if end <= self.next {
            return Ok(());
        }
        self.next = end;
        self.position.commit(end, true)?;
        self.log.trim(TOPIC, end)?;
        Ok(())
    }
}
