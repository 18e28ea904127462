//! Admission: which events of a batch go on to the sink. An event already
//! seen within the dedupe window is a duplicate (and spends no rate budget);
//! an event over its stream's limit, or its client's, is rate-limited with a
//! retry-after; the rest are written. Ids are remembered when admitted, so a
//! repeat in the same or a concurrent batch is caught before either is
//! durable; if the write then fails, [`Admission::forget`] lets the retry in.
//! Until a write is confirmed durable ([`Admission::confirm`]), a repeat is
//! [`Admit::InFlight`], not a duplicate: it is answered by the first copy's
//! fate, never acknowledged ahead of it.

use crate::window::{DedupeWindow, RunError, WindowOptions, WindowStats};
use sluice_shared::{Batch, BatchEvent, Quota, RateLimiter, StreamConfig, Timestamp};
use std::path::Path;

/// The verdict of admission on one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write it to the sink.
    Write,
    /// Seen within the window: acknowledge as a duplicate, write nothing.
    Duplicate,
    /// A copy of it is being written and not yet durable: write nothing; a
    /// duplicate once that copy is durable, else failed (and retried).
    InFlight,
    /// Over a limit: retry after this many milliseconds.
    RateLimited {
        /// Milliseconds until a retry can pass.
        retry_after_ms: u32,
    },
}

/// Dedupe and rate-limit state.
#[derive(Debug)]
pub struct Admission {
    dedupe: DedupeWindow,
    limiter: RateLimiter,
    /// Ids admitted for writing whose write is not yet confirmed.
    pending: std::collections::HashSet<u128, foldhash::fast::FixedState>,
}

impl Admission {
    /// State for a dedupe window of `window_nanos` held in memory, tracking at most
    /// `max_rate_keys` rate-limit keys; `seed` keys the hashes of client-chosen ids and keys.
    pub fn new(window_nanos: i64, max_rate_keys: usize, seed: u64) -> Self {
        let dedupe = DedupeWindow::in_memory(WindowOptions {
            window_ms: window_nanos / 1_000_000,
            seed,
            ..WindowOptions::default()
        });
        Admission::with_window(dedupe, max_rate_keys, seed)
    }

    /// State whose dedupe window saves its closed slices (of at least `slice_ids` ids)
    /// in `dir`, loading those saved before (see [`DedupeWindow`]).
    pub fn open(
        window_nanos: i64,
        max_rate_keys: usize,
        seed: u64,
        (dir, slice_ids): (&Path, usize),
        now: Timestamp,
    ) -> Result<Self, RunError> {
        let dedupe = DedupeWindow::open(
            WindowOptions {
                window_ms: window_nanos / 1_000_000,
                dir: Some(dir.to_owned()),
                min_slice_ids: slice_ids,
                seed,
                ..WindowOptions::default()
            },
            now.unix_millis(),
        )?;
        Ok(Admission::with_window(dedupe, max_rate_keys, seed))
    }

    fn with_window(dedupe: DedupeWindow, max_rate_keys: usize, seed: u64) -> Self {
        Admission {
            dedupe,
            limiter: RateLimiter::new(max_rate_keys, seed.rotate_left(17)),
            pending: Default::default(),
        }
    }

    /// From when the log must be read again to rebuild the window (`None`: all of it).
    pub fn rebuild_since_ms(&self) -> Option<i64> {
        self.dedupe.covered_until_ms()
    }

    /// Decides every event of `batch` at `now`, in order.
    pub fn admit(&mut self, batch: &Batch, streams: &StreamConfig, now: Timestamp) -> Vec<Admit> {
        batch
            .events
            .iter()
            .map(|e| self.admit_one(e, streams, now))
            .collect()
    }

    fn admit_one(&mut self, event: &BatchEvent, streams: &StreamConfig, now: Timestamp) -> Admit {
        let id = u128::from_be_bytes(event.id);
        if event.dedupe && self.dedupe.contains(id) {
            if self.pending.contains(&id) {
                return Admit::InFlight;
            }
            return Admit::Duplicate;
        }
        if let Some(entry) = streams.get(&event.stream) {
            // Per-client limits first, so one busy client is held back before it spends the stream's budget.
            let mut limits: Vec<_> = entry.settings.rate_limit.iter().collect();
            limits.sort_by_key(|r| r.key.is_none());
            for r in limits {
                let key: std::borrow::Cow<'_, str> = match &r.key {
                    None => (*event.stream).into(),
                    Some(_) => format!(
                        "{}\u{0}{}",
                        event.stream,
                        event.rate_key.as_deref().unwrap_or("")
                    )
                    .into(),
                };
                let quota = Quota::per_second(r.events_per_second, r.burst());
                if let Err(retry) = self.limiter.check(&key, quota, now) {
                    return Admit::RateLimited {
                        retry_after_ms: u32::try_from(retry.millis()).unwrap_or(u32::MAX),
                    };
                }
            }
        }
        if event.dedupe {
            // Found absent above, and nothing was inserted since.
            self.dedupe.insert_new(id, now.unix_millis());
            self.pending.insert(id);
        }
        Admit::Write
    }

    /// Forgets the ids admitted for writing in `batch`, after the write failed.
    pub fn forget(&mut self, batch: &Batch, admits: &[Admit]) {
        for (e, a) in batch.events.iter().zip(admits) {
            if *a == Admit::Write && e.dedupe {
                let id = u128::from_be_bytes(e.id);
                self.dedupe.remove(id);
                self.pending.remove(&id);
            }
        }
    }

    /// Confirms the ids admitted for writing in `batch` as durable: repeats are duplicates now.
    pub fn confirm(&mut self, batch: &Batch, admits: &[Admit]) {
        for (e, a) in batch.events.iter().zip(admits) {
            if *a == Admit::Write && e.dedupe {
                self.pending.remove(&u128::from_be_bytes(e.id));
            }
        }
    }

    /// Confirms one id as durable.
    pub fn confirm_id(&mut self, id: [u8; 16]) {
        self.pending.remove(&u128::from_be_bytes(id));
    }

    /// Ids admitted for writing and not yet confirmed or forgotten.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Forgets one id, after its write failed.
    pub fn forget_id(&mut self, id: [u8; 16]) {
        let id = u128::from_be_bytes(id);
        self.dedupe.remove(id);
        self.pending.remove(&id);
    }

    /// Remembers an id as seen at `at`, e.g. when rebuilding the window after a restart.
    pub fn remember(&mut self, id: [u8; 16], at: Timestamp) {
        self.dedupe
            .remember(u128::from_be_bytes(id), at.unix_millis());
    }

    /// Ids held in the dedupe window.
    pub fn dedupe_len(&self) -> usize {
        self.dedupe.len()
    }

    /// Bytes of memory the dedupe window holds.
    pub fn dedupe_bytes(&self) -> usize {
        self.dedupe.memory_bytes()
    }

    /// Closed slices of the dedupe window saved on disk.
    pub fn dedupe_runs(&self) -> usize {
        self.dedupe.runs()
    }

    /// What the dedupe window's lookups cost so far.
    pub fn dedupe_stats(&self) -> WindowStats {
        self.dedupe.stats()
    }

    /// Drops idle rate-limit keys.
    pub fn purge(&mut self, now: Timestamp) {
        self.limiter.purge(now);
        self.dedupe.maintain(now.unix_millis(), &self.pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAMS: &str = r#"
streams:
  limited:
    schema_title: a/b
    rate_limit:
      - {events_per_second: 10, burst: 3}
      - {events_per_second: 1, burst: 2, key: client}
  free:
    schema_title: a/b
    dedupe: false
"#;

    fn event(stream: &str, id: u8, client: &str) -> BatchEvent {
        BatchEvent {
            stream: stream.into(),
            topic: stream.into(),
            partition_key: None,
            rate_key: Some(client.into()),
            id: [id; 16],
            received_ms: 0,
            dt_ms: 0,
            schema_uri: "/a/b/1.0.0".into(),
            dedupe: stream != "free",
            json: b"{}".to_vec().into(),
        }
    }

    fn batch(events: Vec<BatchEvent>) -> Batch {
        Batch {
            id: [0; 16],
            events,
            errors: Vec::new(),
        }
    }

    fn now(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_795_780_800_000 + ms)
    }

    #[test]
    fn duplicates_are_caught_within_and_across_batches() {
        let streams = StreamConfig::parse(STREAMS).unwrap();
        let mut a = Admission::new(3_600_000_000_000, 1000, 1);
        let b = batch(vec![
            event("free", 1, "c"),
            event("limited", 2, "c"),
            event("limited", 2, "d"),
        ]);
        // A stream without dedupe writes repeats.
        let admits = a.admit(&b, &streams, now(0));
        // The repeat in the same batch waits on its first copy's fate.
        assert_eq!(admits, [Admit::Write, Admit::Write, Admit::InFlight]);
        a.confirm(&b, &admits);
        let again = a.admit(
            &batch(vec![event("free", 1, "c"), event("limited", 2, "e")]),
            &streams,
            now(10),
        );
        assert_eq!(again, [Admit::Write, Admit::Duplicate]);
        assert_eq!(a.dedupe_len(), 1);
    }

    #[test]
    fn limits_apply_per_client_and_per_stream() {
        let streams = StreamConfig::parse(STREAMS).unwrap();
        let mut a = Admission::new(3_600_000_000_000, 1000, 1);
        let events = vec![
            event("limited", 1, "alice"),
            event("limited", 2, "alice"),
            event("limited", 3, "alice"), // alice's burst of 2 is spent
            event("limited", 4, "bob"),
            event("limited", 5, "carol"), // the stream's burst of 3 is spent
        ];
        let admits = a.admit(&batch(events), &streams, now(0));
        assert_eq!(admits[..2], [Admit::Write, Admit::Write]);
        assert_eq!(
            admits[2],
            Admit::RateLimited {
                retry_after_ms: 1000
            }
        );
        assert_eq!(admits[3], Admit::Write);
        assert_eq!(
            admits[4],
            Admit::RateLimited {
                retry_after_ms: 100
            }
        );
        // A rate-limited event was not remembered: its retry is not a duplicate.
        let retry = a.admit(
            &batch(vec![event("limited", 5, "carol")]),
            &streams,
            now(100),
        );
        assert_eq!(retry, [Admit::Write]);
    }

    #[test]
    fn a_repeat_is_a_duplicate_only_once_its_first_copy_is_durable() {
        let streams = StreamConfig::parse(STREAMS).unwrap();
        let mut a = Admission::new(3_600_000_000_000, 1000, 1);
        let first = batch(vec![event("limited", 9, "a")]);
        assert_eq!(a.admit(&first, &streams, now(0)), [Admit::Write]);
        assert_eq!(a.pending_len(), 1);
        let repeat = batch(vec![event("limited", 9, "b")]);
        assert_eq!(a.admit(&repeat, &streams, now(1)), [Admit::InFlight]);
        a.confirm_id(first.events[0].id);
        assert_eq!(a.pending_len(), 0);
        assert_eq!(a.admit(&repeat, &streams, now(2)), [Admit::Duplicate]);
        // A failed first copy lets the next repeat be written.
        let other = |client| batch(vec![event("limited", 10, client)]);
        assert_eq!(a.admit(&other("c"), &streams, now(3)), [Admit::Write]);
        assert_eq!(a.admit(&other("d"), &streams, now(4)), [Admit::InFlight]);
        a.forget_id([10; 16]);
        assert_eq!(a.admit(&other("e"), &streams, now(5)), [Admit::Write]);
    }

    #[test]
    fn forgetting_a_failed_write_lets_the_retry_in() {
        let streams = StreamConfig::parse(STREAMS).unwrap();
        let mut a = Admission::new(3_600_000_000_000, 1000, 1);
        let b = batch(vec![event("limited", 7, "x"), event("free", 8, "x")]);
        let admits = a.admit(&b, &streams, now(0));
        assert_eq!(admits, [Admit::Write, Admit::Write]);
        a.forget(&b, &admits);
        assert_eq!(
            a.admit(&batch(vec![event("limited", 7, "x")]), &streams, now(500))[0],
            Admit::Write
        );
    }
}
