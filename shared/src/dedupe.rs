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

use crate::timestamp::Timestamp;
use std::collections::VecDeque;
use std::hash::BuildHasher;

/// How many generations a window is cut into.
pub const GENERATIONS: i64 = 8;
const MAX_LOAD_NUM: usize = 4;
const MAX_LOAD_DEN: usize = 5;
const MIN_SLOTS: usize = 64;

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

/// Slots per chunk of a large table: its memory is taken and given back a chunk
/// (256 KiB) at a time.
const CHUNK: usize = 1 << 14;

/// A table's slots, in chunks that are allocated when first written (an
/// unwritten chunk reads as empty) and can be freed one at a time. The last
/// chunk holds what is left, so a table smaller than a chunk is one chunk of
/// its own size.
#[derive(Debug, Clone)]
struct Slots {
    len: usize,
    /// `index >> shift` is the chunk of a slot and `index & mask` its place in it.
    shift: u32,
    mask: usize,
    chunks: Vec<Option<Box<[u128]>>>,
}

impl Slots {
    fn new(len: usize) -> Slots {
        let (shift, mask, chunk) = if len > CHUNK {
            (CHUNK.trailing_zeros(), CHUNK - 1, CHUNK)
        } else {
            (usize::BITS - 1, usize::MAX, len.max(1))
        };
        Slots {
            len,
            shift,
            mask,
            chunks: vec![None; len.div_ceil(chunk)],
        }
    }

    /// Slots of chunk `k`.
    fn chunk_len(&self, k: usize) -> usize {
        let full = self.mask.min(self.len.saturating_sub(1)) + 1;
        full.min(self.len - k * full)
    }

    #[inline]
    fn get(&self, i: usize) -> u128 {
        match &self.chunks[i >> self.shift] {
            Some(chunk) => chunk[i & self.mask],
            None => 0,
        }
    }

    #[inline]
    fn set(&mut self, i: usize, id: u128) {
        let k = i >> self.shift;
        let len = self.chunk_len(k);
        let chunk = self.chunks[k].get_or_insert_with(|| vec![0; len].into());
        chunk[i & self.mask] = id;
    }

    /// Slots of the chunks that are allocated.
    fn allocated(&self) -> usize {
        self.chunks.iter().flatten().map(|c| c.len()).sum()
    }

    /// Lemire's range reduction: any table size, no modulo.
    #[inline]
    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.len as u128) >> 64) as usize
    }

    /// The first slot from `id`'s home (or from `from`, if later) that holds `id`
    /// or is empty; `None` when reaching one would mean wrapping past the end and
    /// `wrap` is false.
    fn probe(&self, id: u128, hash: u64, from: usize, wrap: bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mut i = self.home(hash).max(from);
        loop {
            if i == self.len {
                if !wrap {
                    return None;
                }
                i = 0;
            }
            let s = self.get(i);
            if s == 0 || s == id {
                return Some(i);
            }
            i += 1;
        }
    }

    /// Whether `id` is held (probing as [`Slots::probe`] does).
    fn contains(&self, id: u128, hash: u64, from: usize, wrap: bool) -> bool {
        self.probe(id, hash, from, wrap)
            .is_some_and(|i| self.get(i) == id)
    }

    /// Puts `id`, known to be absent, in the first empty slot [`Slots::probe`] finds;
    /// `None` when it finds none.
    fn place(&mut self, id: u128, hash: u64, from: usize, wrap: bool) -> Option<()> {
        let i = self.probe(id, hash, from, wrap)?;
        self.set(i, id);
        Some(())
    }
}

/// Linear-probing table of u128 ids; 0 marks an empty slot, and the id 0 is held in a flag.
///
/// A full table grows without a pause: its ids move to a table half as big
/// again a few slots per insert (`MIGRATE_STEP`), in slot order, the old table
/// answering for the ids not moved yet. Because a slot's place in the table is
/// proportional to its hash (Lemire's reduction), the ids moved so far land in
/// the front of the new table: each old chunk is freed as soon as it is moved
/// and the new table is allocated as it fills, so growing holds little more
/// than the new table. New ids whose old place is already moved go to the new
/// table, where their neighbourhood already is; the others to the old one,
/// ahead of the move. Copying millions of ids at once would stop the caller
/// (the aggregator's commit loop) for as long as a second.
#[derive(Debug, Clone)]
struct IdTable {
    hasher: foldhash::fast::FixedState,
    slots: Slots,
    /// The table being moved out of, while growing; its slots before `cursor` are
    /// moved and their chunks freed.
    old: Slots,
    cursor: usize,
    len: usize,
    has_zero: bool,
}

/// Old slots moved per insert while growing: the move ends well before the new table fills.
const MIGRATE_STEP: usize = 8;

impl IdTable {
    fn with_expected(n: usize, hasher: foldhash::fast::FixedState) -> Self {
        IdTable {
            hasher,
            slots: Slots::new(table_size(n * MAX_LOAD_DEN / MAX_LOAD_NUM + 1)),
            old: Slots::new(0),
            cursor: 0,
            len: 0,
            has_zero: false,
        }
    }

    fn growing(&self) -> bool {
        self.old.len > 0
    }

    fn contains(&self, id: u128, hash: u64) -> bool {
        if id == 0 {
            return self.has_zero;
        }
        // In the old table, the slots before the cursor are moved: an id located
        // past them is found by probing from the cursor, and none is found by wrapping.
        self.slots.contains(id, hash, 0, true)
            || (self.growing() && self.old.contains(id, hash, self.cursor, self.cursor == 0))
    }

    /// Inserts an id known to be absent.
    fn insert(&mut self, id: u128, hash: u64) {
        if id == 0 {
            if !self.has_zero {
                self.has_zero = true;
                self.len += 1;
            }
            return;
        }
        self.migrate(MIGRATE_STEP);
        if (self.len + 1) * MAX_LOAD_DEN > self.slots.len * MAX_LOAD_NUM {
            // Never two moves at once: a move still under way (it cannot be, with
            // MIGRATE_STEP as it is, but sizes are the caller's) is finished first.
            self.migrate(usize::MAX);
            let bigger = table_size(self.slots.len + self.slots.len / 4);
            self.old = std::mem::replace(&mut self.slots, Slots::new(bigger));
            self.cursor = 0;
            self.migrate(MIGRATE_STEP);
        }
        let in_old = self.growing()
            && self.old.home(hash) >= self.cursor
            && self.old.place(id, hash, self.cursor, false).is_some();
        if !in_old {
            self.slots.place(id, hash, 0, true);
        }
        self.len += 1;
    }

    /// Moves up to `step` slots of the old table into the new one, freeing each old
    /// chunk once moved; drops the old table when done.
    fn migrate(&mut self, step: usize) {
        if !self.growing() {
            return;
        }
        let end = self.cursor.saturating_add(step).min(self.old.len);
        for i in self.cursor..end {
            let s = self.old.get(i);
            if s != 0 {
                self.slots.place(s, self.hasher.hash_one(s), 0, true);
            }
        }
        let chunk = self.old.chunk_len(0);
        for k in self.cursor / chunk..end / chunk {
            self.old.chunks[k] = None;
        }
        self.cursor = end;
        if self.cursor == self.old.len {
            self.old = Slots::new(0);
            self.cursor = 0;
        }
    }

    /// Removes `id` with backward-shift deletion, so probe chains stay unbroken without tombstones.
    fn remove(&mut self, id: u128, hash: u64) -> bool {
        if id == 0 {
            let had = self.has_zero;
            if had {
                self.has_zero = false;
                self.len -= 1;
            }
            return had;
        }
        // Shifting slots of a table half moved could carry an id behind the move's cursor;
        // removals are rare (failed writes), so the move is finished first.
        self.migrate(usize::MAX);
        let removed = self.remove_from_slots(id, hash);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn remove_from_slots(&mut self, id: u128, hash: u64) -> bool {
        let slots = &mut self.slots;
        let n = slots.len;
        if n == 0 {
            return false;
        }
        let mut i = slots.home(hash);
        loop {
            match slots.get(i) {
                0 => return false,
                s if s == id => break,
                _ => i = if i + 1 == n { 0 } else { i + 1 },
            }
        }
        // Move later members of the cluster back into the hole when their home allows it.
        let mut hole = i;
        let mut j = i;
        loop {
            j = if j + 1 == n { 0 } else { j + 1 };
            let s = slots.get(j);
            if s == 0 {
                break;
            }
            let home = slots.home(self.hasher.hash_one(s));
            // `s` may fill the hole if its home is not cyclically within (hole, j].
            let between = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !between {
                slots.set(hole, s);
                hole = j;
            }
        }
        slots.set(hole, 0);
        true
    }

    /// Slots allocated, in both tables while growing.
    fn slot_count(&self) -> usize {
        self.slots.allocated() + self.old.allocated()
    }

    fn iter(&self) -> impl Iterator<Item = u128> + '_ {
        let (new, old) = (&self.slots, &self.old);
        self.has_zero
            .then_some(0u128)
            .into_iter()
            .chain((0..new.len).map(|i| new.get(i)).filter(|&s| s != 0))
            .chain(
                (self.cursor..old.len)
                    .map(|i| old.get(i))
                    .filter(|&s| s != 0),
            )
    }
}

/// Slots for a table of at least `n` ids.
fn table_size(n: usize) -> usize {
    n.max(MIN_SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;

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
