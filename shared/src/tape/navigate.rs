//! Looking an object's members up: by name, by several names in one walk,
//! by path, or with an event's key bits, over parsed and added members alike.

use super::scan::{fingerprint, key_bit};
use super::{Entry, Tape, same_bytes};

impl<'s> Tape<'s> {
    /// The bytes of the string entry at `i` (an object key, say).
    #[inline]
    pub(crate) fn key_bytes(&self, i: u32) -> Option<&[u8]> {
        match self.nodes[i as usize] {
            Entry::Str { start, len } => self
                .src
                .as_bytes()
                .get(start as usize..start as usize + len as usize),
            Entry::Owned(k) => self.owned_str(k).map(str::as_bytes),
            _ => None,
        }
    }

    /// Whether the object at `i` may have added members: `false` says it has none.
    #[inline(always)]
    pub(crate) fn may_have_added(&self, i: u32) -> bool {
        self.ext_objects & 1 << (i & 63) != 0
    }

    /// Members added to the object at `i`, as (key index, value index).
    #[inline]
    pub(crate) fn added_members(&self, i: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.ext
            .iter()
            .filter(move |e| e.object == i)
            .map(|e| (e.key, e.value))
    }

    /// Members of the object at `i` as (key index, value index), parsed ones then added ones.
    pub(crate) fn members(&self, i: u32) -> Members<'_, 's> {
        let (len, pos) = match self.nodes[i as usize] {
            Entry::Object { len, .. } => (len, i + 1),
            _ => (0, i + 1),
        };
        Members {
            tape: self,
            object: i,
            left: len,
            pos,
            ext: 0,
        }
    }

    /// Number of members of the object at `i`, added ones included.
    pub(crate) fn object_len(&self, i: u32) -> usize {
        let native = match self.nodes[i as usize] {
            Entry::Object { len, .. } => len as usize,
            _ => 0,
        };
        native + self.ext.iter().filter(|e| e.object == i).count()
    }

    /// The value of member `key` of the object at `i`.
    pub(crate) fn get(&self, i: u32, key: &str) -> Option<u32> {
        let Entry::Object { len, .. } = self.nodes[i as usize] else {
            return None;
        };
        let want = key.as_bytes();
        let mut k = i + 1;
        for _ in 0..len {
            let found = match self.nodes[k as usize] {
                Entry::Str { len, .. } if len as usize != want.len() => false,
                Entry::Str { .. } | Entry::Owned(_) => {
                    self.key_bytes(k).is_some_and(|name| same_bytes(name, want))
                }
                _ => false,
            };
            if found {
                return Some(k + 1);
            }
            k = self.next(k + 1);
        }
        self.get_added(i, want)
    }

    /// The value of the member named `want` that was added to the object at `i`.
    fn get_added(&self, i: u32, want: &[u8]) -> Option<u32> {
        self.ext
            .iter()
            .find(|e| {
                e.object == i
                    && self
                        .key_bytes(e.key)
                        .is_some_and(|name| same_bytes(name, want))
            })
            .map(|e| e.value)
    }

    /// The value of member `key` of the object at `i`, whose parsed members' key bits
    /// are `keys` (an [`EventSpan`]'s): a key whose bit is clear is looked for only
    /// among the added members, without walking the parsed ones.
    pub(crate) fn get_keyed(&self, i: u32, key: &str, keys: u128) -> Option<u32> {
        if keys & key_bit(fingerprint(key.as_bytes())) != 0 {
            return self.get(i, key);
        }
        self.get_added(i, key.as_bytes())
    }

    /// The values of members `keys` of the object at `i`, found in one walk over it.
    pub(crate) fn get_each<const N: usize>(&self, i: u32, keys: [&str; N]) -> [Option<u32>; N] {
        let mut found = [None; N];
        let Entry::Object { len, .. } = self.nodes[i as usize] else {
            return found;
        };
        // Whether the member named by key `k` is one sought; records its value if so.
        let look = |found: &mut [Option<u32>; N], k: u32, value: u32| {
            let Some(name) = self.key_bytes(k) else {
                return false;
            };
            keys.iter().zip(found.iter_mut()).any(|(want, slot)| {
                let hit = slot.is_none() && same_bytes(name, want.as_bytes());
                if hit {
                    *slot = Some(value);
                }
                hit
            })
        };
        let mut left = N;
        let mut k = i + 1;
        for _ in 0..len {
            if look(&mut found, k, k + 1) {
                left -= 1;
                if left == 0 {
                    return found;
                }
            }
            k = self.next(k + 1);
        }
        for e in self.ext.iter().filter(|e| e.object == i) {
            look(&mut found, e.key, e.value);
        }
        found
    }

    /// The value at a path of keys from the object at `i`.
    pub(crate) fn get_path<S: AsRef<str>>(&self, i: u32, path: &[S]) -> Option<u32> {
        path.iter().try_fold(i, |node, key| {
            matches!(self.nodes[node as usize], Entry::Object { .. }).then_some(())?;
            self.get(node, key.as_ref())
        })
    }

    /// Whether the entry at `i` is an object.
    pub(crate) fn is_object(&self, i: u32) -> bool {
        matches!(self.nodes[i as usize], Entry::Object { .. })
    }
}

/// Iterator over an object's members.
pub(crate) struct Members<'t, 's> {
    tape: &'t Tape<'s>,
    object: u32,
    left: u32,
    pos: u32,
    ext: usize,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 16);

impl Iterator for Members<'_, '_> {
    type Item = (u32, u32);

    fn next(&mut self) -> Option<(u32, u32)> {
        if self.left > 0 {
            self.left -= 1;
            let key = self.pos;
            let value = key + 1;
            self.pos = self.tape.next(value);
            return Some((key, value));
        }
        while let Some(e) = self.tape.ext.get(self.ext) {
            self.ext += 1;
            if e.object == self.object {
                return Some((e.key, e.value));
            }
        }
        None
    }
}
