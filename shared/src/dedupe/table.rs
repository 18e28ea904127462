//! The exact id table under every dedupe structure: linear probing over
//! bare 16-byte slots, grown without a pause, and read back in hash order
//! (so that a sealed slice of the window is written sorted without a copy).

pub(super) const MAX_LOAD_NUM: usize = 4;
pub(super) const MAX_LOAD_DEN: usize = 5;
const MIN_SLOTS: usize = 64;

use std::hash::BuildHasher;

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
pub(super) struct IdTable {
    hasher: foldhash::fast::FixedState,
    slots: Slots,
    /// The table being moved out of, while growing; its slots before `cursor` are
    /// moved and their chunks freed.
    old: Slots,
    pub(super) cursor: usize,
    pub(super) len: usize,
    has_zero: bool,
}

/// Old slots moved per insert while growing: the move ends well before the new table fills.
pub(super) const MIGRATE_STEP: usize = 8;

impl IdTable {
    pub(super) fn with_expected(n: usize, hasher: foldhash::fast::FixedState) -> Self {
        IdTable {
            hasher,
            slots: Slots::new(table_size(n * MAX_LOAD_DEN / MAX_LOAD_NUM + 1)),
            old: Slots::new(0),
            cursor: 0,
            len: 0,
            has_zero: false,
        }
    }

    pub(super) fn growing(&self) -> bool {
        self.old.len > 0
    }

    pub(super) fn contains(&self, id: u128, hash: u64) -> bool {
        if id == 0 {
            return self.has_zero;
        }
        // In the old table, the slots before the cursor are moved: an id located
        // past them is found by probing from the cursor, and none is found by wrapping.
        self.slots.contains(id, hash, 0, true)
            || (self.growing() && self.old.contains(id, hash, self.cursor, self.cursor == 0))
    }

    /// Inserts an id known to be absent.
    pub(super) fn insert(&mut self, id: u128, hash: u64) {
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
    pub(super) fn migrate(&mut self, step: usize) {
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
    pub(super) fn remove(&mut self, id: u128, hash: u64) -> bool {
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

    pub(super) fn remove_from_slots(&mut self, id: u128, hash: u64) -> bool {
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
    pub(super) fn slot_count(&self) -> usize {
        self.slots.allocated() + self.old.allocated()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = u128> + '_ {
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

/// An exact set of 128-bit ids under a seeded hash: the open slice of the
/// aggregator's dedupe window. Ids are client-chosen, so the seed is secret.
#[derive(Debug, Clone)]
pub struct IdSet {
    hasher: foldhash::fast::FixedState,
    table: IdTable,
}

impl IdSet {
    /// A set sized for `expected` ids, hashing with `seed`.
    pub fn new(expected: usize, seed: u64) -> Self {
        let hasher = foldhash::fast::FixedState::with_seed(seed);
        IdSet {
            table: IdTable::with_expected(expected, hasher.clone()),
            hasher,
        }
    }

    /// The seeded hash of `id`, as every structure of one window uses it.
    #[inline]
    pub fn hash(&self, id: u128) -> u64 {
        self.hasher.hash_one(id)
    }

    /// Whether `id` (whose hash is `hash`) is held.
    #[inline]
    pub fn contains(&self, id: u128, hash: u64) -> bool {
        self.table.contains(id, hash)
    }

    /// Inserts `id`, known to be absent.
    #[inline]
    pub fn insert(&mut self, id: u128, hash: u64) {
        self.table.insert(id, hash);
    }

    /// Removes `id`; returns whether it was held.
    pub fn remove(&mut self, id: u128, hash: u64) -> bool {
        self.table.remove(id, hash)
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.table.len
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.table.len == 0
    }

    /// Bytes of slots allocated.
    pub fn memory_bytes(&self) -> usize {
        self.table.slot_count() * 16
    }

    /// The set made read-only, its growth finished, to be written out sorted.
    pub fn freeze(mut self) -> FrozenIds {
        self.table.migrate(usize::MAX);
        FrozenIds(self)
    }
}

/// A read-only [`IdSet`], as a slice of the window is while it is written to disk.
#[derive(Debug, Clone)]
pub struct FrozenIds(IdSet);

impl FrozenIds {
    /// Whether `id` (whose hash is `hash`) is held.
    #[inline]
    pub fn contains(&self, id: u128, hash: u64) -> bool {
        self.0.contains(id, hash)
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes of slots allocated.
    pub fn memory_bytes(&self) -> usize {
        self.0.memory_bytes()
    }

    fn hash(&self, id: u128) -> u64 {
        self.0.hash(id)
    }

    /// Every id with its hash, in ascending `(hash, id)` order, for writing a sealed
    /// slice sorted without copying the table: a slot's place is proportional to its
    /// id's hash, so only each cluster of occupied slots needs sorting.
    pub fn sorted(&self) -> SortedIds<'_> {
        let mut extra: Vec<(u64, u128)> = Vec::new();
        if self.0.table.has_zero {
            extra.push((self.hash(0), 0));
        }
        // Ids that wrapped from the end of the table into its first cluster come last.
        let slots = &self.0.table.slots;
        let mut head_end = 0;
        while head_end < slots.len && slots.get(head_end) != 0 {
            head_end += 1;
        }
        let mut head = Vec::new();
        for i in 0..head_end {
            let id = slots.get(i);
            let hash = self.hash(id);
            if slots.home(hash) > i {
                extra.push((hash, id));
            } else {
                head.push((hash, id));
            }
        }
        head.sort_unstable();
        extra.sort_unstable();
        SortedIds {
            set: self,
            next_slot: head_end,
            cluster: head,
            at: 0,
            extra,
            extra_at: 0,
        }
    }
}

/// The ids of a [`FrozenIds`] in `(hash, id)` order; see [`FrozenIds::sorted`].
pub struct SortedIds<'a> {
    set: &'a FrozenIds,
    next_slot: usize,
    cluster: Vec<(u64, u128)>,
    at: usize,
    /// Ids out of slot order (the id 0, and those that wrapped), merged in as due.
    extra: Vec<(u64, u128)>,
    extra_at: usize,
}

impl SortedIds<'_> {
    /// Loads the next cluster of occupied slots, sorted; false at the end of the table.
    fn refill(&mut self) -> bool {
        let slots = &self.set.0.table.slots;
        self.cluster.clear();
        self.at = 0;
        while self.next_slot < slots.len && slots.get(self.next_slot) == 0 {
            self.next_slot += 1;
        }
        while self.next_slot < slots.len {
            let id = slots.get(self.next_slot);
            if id == 0 {
                break;
            }
            self.cluster.push((self.set.hash(id), id));
            self.next_slot += 1;
        }
        self.cluster.sort_unstable();
        !self.cluster.is_empty()
    }
}

impl Iterator for SortedIds<'_> {
    type Item = (u64, u128);

    fn next(&mut self) -> Option<(u64, u128)> {
        if self.at == self.cluster.len() {
            self.refill();
        }
        let main = self.cluster.get(self.at).copied();
        let extra = self.extra.get(self.extra_at).copied();
        match (main, extra) {
            (Some(m), Some(e)) if e < m => {
                self.extra_at += 1;
                Some(e)
            }
            (Some(m), _) => {
                self.at += 1;
                Some(m)
            }
            (None, Some(e)) => {
                self.extra_at += 1;
                Some(e)
            }
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_back_sorted_by_hash_each_once() {
        for (n, seed) in [(0u128, 1u64), (1, 2), (50, 3), (5_000, 4), (200_000, 5)] {
            let mut set = IdSet::new(0, seed);
            let id = |i: u128| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
            // id(0) is 0: the id held in a flag.
            for i in 0..n {
                let h = set.hash(id(i));
                if !set.contains(id(i), h) {
                    set.insert(id(i), h);
                }
            }
            let frozen = set.clone().freeze();
            let out: Vec<(u64, u128)> = frozen.sorted().collect();
            assert_eq!(out.len(), set.len(), "{n} ids");
            assert!(out.windows(2).all(|w| w[0] < w[1]), "{n} ids in order");
            assert!(out.iter().all(|&(h, i)| h == set.hash(i)));
        }
    }
}
