//! Finding a member's property by name: an object's property names laid out
//! in a table where, for up to a few dozen names, each has a slot of its own
//! (a multiplier that separates them is searched for when the schema
//! compiles), and the table holds the names themselves, compared by length
//! and first and last words.

use super::{NoFastPath, ObjectCheck};
use crate::tape::same_bytes;

#[derive(Clone)]
pub(super) struct Name {
    pub(super) hash: u64,
    /// [`NameWords`] of `text`: for a name of up to 16 bytes, equal words and length are
    /// equal names, with no byte loop.
    pub(super) words: NameWords,
    pub(super) text: Box<str>,
    /// Index into `properties`, or [`NOT_DECLARED`] for a name only `required` gives.
    pub(super) property: u32,
    /// Its bit in `required`, or 0 when it is not required.
    pub(super) required_mask: u64,
}

pub(super) const NOT_DECLARED: u32 = u32::MAX;

/// A name's first and last eight bytes (or four, or all of a name under four bytes),
/// as two words: for a name of up to sixteen bytes they hold every byte.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct NameWords {
    pub(super) len: usize,
    pub(super) head: u64,
    pub(super) tail: u64,
}

impl NameWords {
    #[inline(always)]
    pub(super) fn of(b: &[u8]) -> NameWords {
        let (head, tail) = if let (Some(h), Some(t)) = (b.first_chunk::<8>(), b.last_chunk::<8>()) {
            (u64::from_le_bytes(*h), u64::from_le_bytes(*t))
        } else if let (Some(h), Some(t)) = (b.first_chunk::<4>(), b.last_chunk::<4>()) {
            (
                u64::from(u32::from_le_bytes(*h)),
                u64::from(u32::from_le_bytes(*t)),
            )
        } else {
            (b.iter().fold(0, |h, &c| h << 8 | u64::from(c)), 0)
        };
        NameWords {
            len: b.len(),
            head,
            tail,
        }
    }

    /// A hash of the words and the length: cheap, and enough to tell apart the few
    /// names of one object.
    #[inline(always)]
    pub(super) fn hash(self) -> u64 {
        let mixed = if self.len >= 8 {
            self.head ^ self.tail.rotate_left(29)
        } else {
            self.head | self.tail << 32
        };
        (mixed ^ (self.len as u64).rotate_right(8)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// The hash of a name (see [`NameWords::hash`]).
#[inline(always)]
pub(super) fn name_hash(b: &[u8]) -> u64 {
    NameWords::of(b).hash()
}

/// Multipliers tried, in turn, for a table where every name has a slot of its own.
fn spread(attempt: u64) -> u64 {
    let mut z = attempt.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (z ^ (z >> 27)) | 1
}

impl ObjectCheck {
    /// Lays `names` out in `slots`: if it can, with every name in its home slot (a table
    /// of two to eight slots per name, and a multiplier that separates them), else with
    /// linear probing.
    pub(super) fn index_names(&mut self) -> Result<(), NoFastPath> {
        let least = (self.names.len() * 2).next_power_of_two().max(4);
        if least > usize::from(u16::MAX) {
            return Err(NoFastPath);
        }
        let place = |size: usize, spread: u64, perfect: bool| -> Option<Vec<u16>> {
            let shift = 64 - size.trailing_zeros();
            let mut slots = vec![0u16; size];
            for (i, name) in self.names.iter().enumerate() {
                let mut at = (name.hash.wrapping_mul(spread) >> shift) as usize;
                while slots[at] != 0 {
                    if perfect {
                        return None;
                    }
                    at = (at + 1) & (size - 1);
                }
                slots[at] = (i + 1) as u16;
            }
            Some(slots)
        };
        let sizes = [least, least * 2, least * 4];
        for size in sizes.into_iter().filter(|&s| s <= usize::from(u16::MAX)) {
            for attempt in 0..32 {
                if let Some(slots) = place(size, spread(attempt), true) {
                    // An empty slot found is a name not declared: `additionalProperties`
                    // applies, as it does to a name not found.
                    let vacant = Name {
                        hash: 0,
                        words: NameWords::of(b""),
                        text: "".into(),
                        property: NOT_DECLARED,
                        required_mask: 0,
                    };
                    self.table = slots
                        .iter()
                        .map(|&slot| match usize::from(slot).checked_sub(1) {
                            Some(i) => self.names[i].clone(),
                            None => vacant.clone(),
                        })
                        .collect();
                    (self.slots, self.spread, self.perfect) = (slots, spread(attempt), true);
                    self.shift = 64 - size.trailing_zeros();
                    return Ok(());
                }
            }
        }
        // Names whose hashes are equal (a long shared prefix and suffix) share a chain.
        self.slots = place(least, 1, false).ok_or(NoFastPath)?;
        (self.spread, self.perfect) = (1, false);
        self.shift = 64 - least.trailing_zeros();
        Ok(())
    }

    #[inline(always)]
    pub(super) fn find(&self, name: &[u8]) -> Option<&Name> {
        let words = NameWords::of(name);
        let hash = words.hash();
        let mask = self.slots.len() - 1;
        let at = (hash.wrapping_mul(self.spread) >> self.shift) as usize;
        if self.perfect {
            // The one name that can match is the one in the home slot (or a vacant
            // slot's empty name, which stands for "not declared" either way).
            let n = self.table.get(at & mask)?;
            return (n.words == words && (name.len() <= 16 || same_bytes(n.text.as_bytes(), name)))
                .then_some(n);
        }
        self.find_chained(name, hash, at)
    }

    /// [`ObjectCheck::find`] in a table whose names share slots: out of the hot loop, so
    /// that its state does not crowd the registers of the common case.
    #[cold]
    #[inline(never)]
    pub(super) fn find_chained(&self, name: &[u8], hash: u64, mut at: usize) -> Option<&Name> {
        let mask = self.slots.len() - 1;
        loop {
            let slot = usize::from(*self.slots.get(at & mask)?);
            let n = self.names.get(slot.checked_sub(1)?)?;
            if n.hash == hash && same_bytes(n.text.as_bytes(), name) {
                return Some(n);
            }
            at += 1;
        }
    }
}
