//! Members the server adds to a parsed event (enrichment), kept beside the
//! parsed tape so that validation sees the enriched event without copying
//! it, and their splicing into the event's text when it is forwarded.

use super::scan::scan_plain;
use super::{Entry, Ext, Tape, write_json_string};

impl<'s> Tape<'s> {
    /// Adds `key: "text"` to the object at `object`; returns the value's index.
    pub(crate) fn add_string(&mut self, object: u32, key: &str, text: &str) -> u32 {
        let plain = |s: &str| scan_plain(s.as_bytes(), 0) == s.len();
        let plain = plain(key) && plain(text);
        self.add_string_as(object, key, text, plain)
    }

    /// [`Tape::add_string`] for a key and a text the caller knows need no escaping in
    /// JSON (a name of its own, an id or a time it wrote), which are not scanned again.
    pub(crate) fn add_plain_string(&mut self, object: u32, key: &str, text: &str) -> u32 {
        debug_assert!(scan_plain(key.as_bytes(), 0) == key.len());
        debug_assert!(scan_plain(text.as_bytes(), 0) == text.len());
        self.add_string_as(object, key, text, true)
    }

    /// [`Tape::add_string`], told whether the key and the text need no escaping.
    fn add_string_as(&mut self, object: u32, key: &str, text: &str, plain: bool) -> u32 {
        // The text holds `"key":"text"`, quotes and all: when neither needs escaping,
        // that is the member's JSON, and splicing it in is one copy.
        let from = self.text.len() as u32;
        self.text.reserve(key.len() + text.len() + 5);
        self.text.push('"');
        let key_idx = self.push_owned(key);
        self.text.push_str("\":\"");
        let value = self.push_owned(text);
        self.text.push('"');
        let json = if plain {
            (from, self.text.len() as u32)
        } else {
            (0, 0)
        };
        self.ext_objects |= 1 << (object & 63);
        self.ext.push(Ext {
            object,
            key: key_idx,
            value,
            json,
        });
        value
    }

    /// Adds `key: {}` to the object at `object`; returns the new object's index.
    pub(crate) fn add_object(&mut self, object: u32, key: &str) -> u32 {
        // As for strings: `"key":` is the member's JSON up to the object, when plain.
        let from = self.text.len() as u32;
        self.text.push('"');
        let key_idx = self.push_owned(key);
        self.text.push_str("\":");
        let json = if scan_plain(key.as_bytes(), 0) == key.len() {
            (from, self.text.len() as u32)
        } else {
            (0, 0)
        };
        let value = self.nodes.len() as u32;
        self.nodes.push(Entry::Object {
            len: 0,
            end: value + 1,
            pos: u32::MAX,
        });
        self.ext_objects |= 1 << (object & 63);
        self.ext.push(Ext {
            object,
            key: key_idx,
            value,
            json,
        });
        value
    }

    fn push_owned(&mut self, s: &str) -> u32 {
        let k = self.owned.len() as u32;
        self.owned.push((self.text.len() as u32, s.len() as u32));
        self.text.push_str(s);
        let i = self.nodes.len() as u32;
        self.nodes.push(Entry::Owned(k));
        i
    }

    /// Forgets every added member, so that the next event's additions are
    /// looked through alone (and the tape does not grow with the body).
    pub(crate) fn reset_added(&mut self) {
        self.ext.clear();
        self.ext_objects = 0;
        self.nodes.truncate(self.parsed.0);
        self.owned.truncate(self.parsed.1);
        self.text.truncate(self.parsed.2);
    }

    /// How many members have been added so far; [`Tape::splice`] writes those added after it.
    pub(crate) fn ext_mark(&self) -> usize {
        self.ext.len()
    }

    /// [`Tape::splice_into`] a new string.
    #[cfg(test)]
    pub(crate) fn splice(&self, start: usize, end: usize, mark: usize) -> String {
        let mut out = String::new();
        self.splice_into(start, end, mark, &mut out);
        out
    }

    /// Appends to `out` the source text `start..end` with the members added since `mark`
    /// written into the parsed objects they belong to, right after each object's `{`.
    pub(crate) fn splice_into(&self, start: usize, end: usize, mark: usize, out: &mut String) {
        let added = &self.ext[mark..];
        let parsed_pos = |e: &Ext| match self.nodes[e.object as usize] {
            Entry::Object { pos, .. } if pos != u32::MAX => Some((pos, e.object)),
            _ => None,
        };
        // Room for the added members: their texts with quotes, colons and commas.
        let added_len = added.first().map_or(0, |e| {
            self.text.len()
                - self
                    .owned
                    .get(self.key_owned(e.key))
                    .map_or(0, |o| o.0 as usize)
        });
        out.reserve(end - start + added_len + 6 * added.len());
        let mut cursor = start;
        // The parsed objects that got members, in the order they appear. Enrichment adds
        // to a handful: they are gathered in one pass and sorted in place. Past that
        // many, the next one is picked from the members each time.
        const FEW: usize = 8;
        let mut few = [(0u32, 0u32); FEW];
        let mut n = 0;
        for t in added.iter().filter_map(parsed_pos) {
            if !few[..n.min(FEW)].contains(&t) {
                if let Some(slot) = few.get_mut(n) {
                    *slot = t;
                }
                n += 1;
            }
        }
        let few = &mut few[..n.min(FEW)];
        few.sort_unstable();
        let mut few = few.iter().copied();
        let mut after = None;
        while let Some((pos, object)) = if n <= FEW {
            few.next()
        } else {
            added
                .iter()
                .filter_map(parsed_pos)
                .filter(|&t| after.is_none_or(|a| t > a))
                .min()
        } {
            after = Some((pos, object));
            let at = pos as usize + 1;
            out.push_str(&self.src[cursor..at]);
            self.write_members(object, added, out);
            if matches!(self.nodes[object as usize], Entry::Object { len, .. } if len > 0) {
                out.push(',');
            }
            cursor = at;
        }
        out.push_str(&self.src[cursor..end]);
    }

    /// Index into `owned` of the added string at tape index `i`.
    fn key_owned(&self, i: u32) -> usize {
        match self.nodes[i as usize] {
            Entry::Owned(k) => k as usize,
            _ => usize::MAX,
        }
    }

    /// Writes the members of `added` that belong to `object`, separated by commas.
    fn write_members(&self, object: u32, added: &[Ext], out: &mut String) {
        let mut first = true;
        for e in added.iter().filter(|e| e.object == object) {
            if !first {
                out.push(',');
            }
            first = false;
            let value = self.nodes[e.value as usize];
            let (from, to) = e.json;
            if to != 0 {
                out.push_str(
                    self.text
                        .get(from as usize..to as usize)
                        .unwrap_or_default(),
                );
                if !matches!(value, Entry::Object { .. }) {
                    continue;
                }
            } else {
                write_json_string(self.str_at(e.key).unwrap_or_default(), out);
                out.push(':');
            }
            match value {
                Entry::Str { .. } | Entry::Owned(_) => {
                    write_json_string(self.str_at(e.value).unwrap_or_default(), out)
                }
                Entry::Object { pos: u32::MAX, .. } => {
                    out.push('{');
                    self.write_members(e.value, added, out);
                    out.push('}');
                }
                _ => out.push_str(&self.to_value(e.value).to_string()),
            }
        }
    }
}
