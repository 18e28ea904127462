//! An exact, windowed set of 128-bit event ids with bounded memory.
//!
//! Time is cut into generations of `window / GENERATIONS`; an id is looked up
//! in every live generation and inserted into the newest. A generation is
//! dropped only once all its ids are older than the window, so an id repeated
//! within the window is always found (ids up to one generation older may be
//! found too). Each generation is an open-addressing table of bare 16-byte
//! slots that grows by a quarter at 80% load, so a held id costs 16 to 20 bytes
//! in steady state (generations are sized from their predecessors) and about 25
//! while a table grows (ids move a few per insert, never all at once, and the
//! old table is freed a chunk at a time as they go).
//! Ids may be chosen by clients, so slots are found with a seeded hash.

mod filter;
mod table;

pub use filter::BlockedBloom;
pub use table::{FrozenIds, IdSet, SortedIds};

use crate::timestamp::Timestamp;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use table::IdTable;

/// How many generations a window is cut into.
pub const GENERATIONS: i64 = 8;

/// Whether an id was new to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time within the window; now remembered.
    New,
    /// Already seen within the window.
    Duplicate,
}

/// The dedupe set.
#[derive(Debug, Clone)]
pub struct DedupeSet {
    window_nanos: i64,
    generation_nanos: i64,
    generations: VecDeque<Generation>,
    hasher: foldhash::fast::FixedState,
}

#[derive(Debug, Clone)]
struct Generation {
    start: i64,
    table: IdTable,
}

impl DedupeSet {
    /// A set remembering ids for `window_nanos` (at least one generation of a nanosecond);
    /// `seed` keys the hash so that chosen ids cannot collide on purpose.
    pub fn new(window_nanos: i64, seed: u64) -> Self {
        let window_nanos = window_nanos.max(GENERATIONS);
        DedupeSet {
            window_nanos,
            generation_nanos: window_nanos / GENERATIONS,
            generations: VecDeque::new(),
            hasher: foldhash::fast::FixedState::with_seed(seed),
        }
    }

    /// The window in nanoseconds.
    pub fn window_nanos(&self) -> i64 {
        self.window_nanos
    }

    /// Looks `id` up and remembers it at `now`.
    pub fn check_and_insert(&mut self, id: u128, now: Timestamp) -> Seen {
        let hash = self.hasher.hash_one(id);
        self.rotate(now);
        if self.generations.iter().any(|g| g.table.contains(id, hash)) {
            return Seen::Duplicate;
        }
        if let Some(newest) = self.generations.back_mut() {
            newest.table.insert(id, hash);
        }
        Seen::New
    }

    /// Remembers `id` at `now`, the caller having just found it absent with
    /// [`DedupeSet::contains`]: one probe instead of the two of
    /// [`DedupeSet::check_and_insert`]. An id already held would be held twice.
    pub fn insert_new(&mut self, id: u128, now: Timestamp) {
        let hash = self.hasher.hash_one(id);
        self.rotate(now);
        if let Some(newest) = self.generations.back_mut() {
            newest.table.insert(id, hash);
        }
    }

    /// Whether `id` is held, without inserting it.
    pub fn contains(&self, id: u128) -> bool {
        let hash = self.hasher.hash_one(id);
        self.generations.iter().any(|g| g.table.contains(id, hash))
    }

    /// Forgets `id` (an event whose write failed, so that its retry is not taken for a
    /// duplicate); returns whether it was held.
    pub fn remove(&mut self, id: u128) -> bool {
        let hash = self.hasher.hash_one(id);
        let mut removed = false;
        for g in &mut self.generations {
            removed |= g.table.remove(id, hash);
        }
        removed
    }

    /// Drops generations that have left the window and opens a new one when due.
    pub fn rotate(&mut self, now: Timestamp) {
        let now = now.unix_nanos();
        while let Some(oldest) = self.generations.front() {
            if now.saturating_sub(oldest.start)
                >= self.generation_nanos.saturating_add(self.window_nanos)
            {
                self.generations.pop_front();
            } else {
                break;
            }
        }
        let due = match self.generations.back() {
            None => true,
            Some(g) => now.saturating_sub(g.start) >= self.generation_nanos,
        };
        if due {
            let start = now - now.rem_euclid(self.generation_nanos);
            // Size the new table for as many ids as the last generation took, so steady traffic never rehashes.
            let expect = self.generations.back().map_or(0, |g| g.table.len);
            self.generations.push_back(Generation {
                start,
                table: IdTable::with_expected(expect, self.hasher.clone()),
            });
        }
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.generations.iter().map(|g| g.table.len).sum()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of table memory held.
    pub fn memory_bytes(&self) -> usize {
        self.generations
            .iter()
            .map(|g| g.table.slot_count() * 16)
            .sum()
    }

    /// Every held id with the start of its generation, oldest first, for persisting the window.
    pub fn export(&self) -> impl Iterator<Item = (Timestamp, u128)> + '_ {
        self.generations.iter().flat_map(|g| {
            g.table
                .iter()
                .map(move |id| (Timestamp::from_unix_nanos(g.start), id))
        })
    }

    /// Remembers `id` as seen at `at` (used to restore an exported window).
    pub fn restore(&mut self, id: u128, at: Timestamp) {
        let hash = self.hasher.hash_one(id);
        let at_nanos = at.unix_nanos();
        let start = at_nanos - at_nanos.rem_euclid(self.generation_nanos);
        let pos = self.generations.iter().position(|g| g.start >= start);
        let g = match pos {
            Some(i) if self.generations[i].start == start => &mut self.generations[i],
            Some(i) => {
                self.generations.insert(
                    i,
                    Generation {
                        start,
                        table: IdTable::with_expected(0, self.hasher.clone()),
                    },
                );
                &mut self.generations[i]
            }
            None => {
                self.generations.push_back(Generation {
                    start,
                    table: IdTable::with_expected(0, self.hasher.clone()),
                });
                let last = self.generations.len() - 1;
                &mut self.generations[last]
            }
        };
        if !g.table.contains(id, hash) {
            g.table.insert(id, hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use table::MIGRATE_STEP;

    const SEC: i64 = 1_000_000_000;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_nanos(1_700_000_000 * SEC + secs * SEC)
    }

    #[test]
    fn finds_repeats_anywhere_inside_the_window() {
        let mut set = DedupeSet::new(3600 * SEC, 42);
        assert_eq!(set.check_and_insert(7, at(0)), Seen::New);
        assert_eq!(set.check_and_insert(7, at(1)), Seen::Duplicate);
        assert_eq!(set.check_and_insert(0, at(1)), Seen::New);
        assert_eq!(set.check_and_insert(0, at(2)), Seen::Duplicate);
        // The very end of the window still holds the id.
        assert_eq!(set.check_and_insert(7, at(3600)), Seen::Duplicate);
        // One window plus one generation later, it is gone.
        assert_eq!(
            set.check_and_insert(7, at(3600 + 3600 / GENERATIONS + 1)),
            Seen::New
        );
    }

    #[test]
    fn forgets_old_generations_and_bounds_memory() {
        let mut set = DedupeSet::new(80 * SEC, 1);
        let mut id = 1u128;
        for second in 0..400 {
            for _ in 0..1000 {
                id = id
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
                    .wrapping_add(1);
                set.check_and_insert(id, at(second));
            }
        }
        // 80 s window + one 10 s generation at 1,000 ids/s.
        assert!(set.len() <= 91_000, "{}", set.len());
        assert!(set.len() >= 80_000, "{}", set.len());
        let per_id = set.memory_bytes() as f64 / set.len() as f64;
        assert!(per_id <= 32.0, "{per_id} bytes per id");
    }

    #[test]
    fn growth_keeps_every_id_and_stays_under_32_bytes() {
        let mut set = DedupeSet::new(3600 * SEC, 9);
        for i in 1..=200_000u128 {
            assert_eq!(set.check_and_insert(i << 64 | i, at(0)), Seen::New);
        }
        for i in 1..=200_000u128 {
            assert!(set.contains(i << 64 | i));
        }
        assert!(!set.contains(1));
        let per_id = set.memory_bytes() as f64 / set.len() as f64;
        assert!(per_id <= 32.0, "{per_id} bytes per id");
    }

    #[test]
    fn growing_moves_ids_a_few_at_a_time_and_loses_none() {
        let mut set = DedupeSet::new(3600 * SEC, 5);
        let id = |i: u128| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) | 1;
        let mut checked_mid_move = false;
        let mut worst = 0.0f64;
        for i in 0..100_000u128 {
            let before = set.generations.back().map_or(0, |g| g.table.cursor);
            assert_eq!(set.check_and_insert(id(i), at(0)), Seen::New);
            let table = &set.generations.back().unwrap().table;
            if table.growing() {
                // An insert moves a few old slots, never the whole table.
                assert!(table.cursor <= before + 2 * MIGRATE_STEP);
            }
            if i > 1_000 {
                worst = worst.max(set.memory_bytes() as f64 / set.len() as f64);
            }
            if table.growing() && i > 20_000 && !checked_mid_move {
                checked_mid_move = true;
                // Halfway through a move every id is found, and an export holds each once.
                assert!((0..=i).all(|j| set.contains(id(j))));
                let exported: std::collections::HashSet<u128> =
                    set.export().map(|(_, x)| x).collect();
                assert_eq!(exported.len(), set.len());
                assert_eq!(set.export().count(), set.len());
                // A removal finishes the move and keeps every other id.
                assert!(set.remove(id(7)));
                assert!(!set.contains(id(7)));
                assert!((0..=i).filter(|&j| j != 7).all(|j| set.contains(id(j))));
                assert_eq!(set.check_and_insert(id(7), at(0)), Seen::New);
            }
        }
        assert!(
            checked_mid_move,
            "100,000 inserts grow the table past 20,000 ids"
        );
        assert!(worst <= 52.0, "{worst} bytes per id while growing");
    }

    #[test]
    fn removed_ids_are_new_again_and_others_stay() {
        let mut set = DedupeSet::new(3600 * SEC, 11);
        // Enough ids in a small table to build long probe clusters.
        let ids: Vec<u128> = (0..5_000u128)
            .map(|i| i * 0x9E37_79B9_7F4A_7C15 + 1)
            .collect();
        for &id in &ids {
            set.check_and_insert(id, at(0));
        }
        set.check_and_insert(0, at(0));
        for &id in ids.iter().step_by(3) {
            assert!(set.remove(id));
        }
        assert!(set.remove(0));
        assert!(!set.remove(0));
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(set.contains(id), i % 3 != 0, "id #{i}");
        }
        assert_eq!(set.len(), ids.len() - ids.len().div_ceil(3));
        assert_eq!(set.check_and_insert(ids[0], at(1)), Seen::New);
        assert_eq!(set.check_and_insert(ids[1], at(1)), Seen::Duplicate);
    }

    #[test]
    fn export_and_restore_keep_the_window() {
        let mut set = DedupeSet::new(3600 * SEC, 5);
        for i in 0..1000u128 {
            set.check_and_insert(i, at(i as i64));
        }
        let mut restored = DedupeSet::new(3600 * SEC, 6);
        for (t, id) in set.export() {
            restored.restore(id, t);
        }
        assert_eq!(restored.len(), 1000);
        assert_eq!(restored.check_and_insert(999, at(1000)), Seen::Duplicate);
        assert_eq!(restored.check_and_insert(0, at(1000)), Seen::Duplicate);
        assert_eq!(restored.check_and_insert(5000, at(1000)), Seen::New);
    }

    #[test]
    fn a_large_table_grows_holding_little_more_than_its_new_size() {
        let mut set = DedupeSet::new(3600 * SEC, 3);
        let id = |i: u128| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) | 1;
        let mut worst = 0.0f64;
        for i in 0..400_000u128 {
            set.check_and_insert(id(i), at(0));
            if i > 150_000 {
                worst = worst.max(set.memory_bytes() as f64 / set.len() as f64);
            }
        }
        // The old table is freed a chunk at a time as its ids move, and a table grows
        // by a quarter: growing costs about 25 bytes per id, not old and new tables
        // whole (45).
        assert!(worst <= 27.0, "{worst} bytes per id while growing");
        assert!((0..400_000u128).step_by(97).all(|i| set.contains(id(i))));
    }
}
