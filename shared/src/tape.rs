//! A one-pass JSON parser into a flat tape, and members the server adds.
//!
//! The tape borrows every string without escapes from the source text, so
//! parsing a typical event allocates only the tape itself. It enforces what
//! intake needs while parsing: nesting depth, no duplicate keys, finite
//! numbers, no control characters in strings, and, for bodies, the event
//! count. Members that enrichment adds are appended to the tape and linked to
//! their object, so validation sees the enriched event without copying it.
//!
//! Layout: a container entry is followed by its children; an object's
//! children alternate key and value. Every container records the index just
//! past its subtree, so a sibling is one step away.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

/// Deepest nesting accepted, as in serde_json.
pub const MAX_DEPTH: usize = 128;

/// One tape entry. `repr(u32)` lays every variant out as a tag word followed by
/// aligned fields in 16 bytes, so entries move as two aligned words.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(u32)]
pub(crate) enum Entry {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// A string without escapes: a byte range of the source.
    Str {
        start: u32,
        len: u32,
    },
    /// An unescaped or added string, by index into the owned strings.
    Owned(u32),
    Array {
        len: u32,
        end: u32,
    },
    /// `pos` is the byte offset of the `{` in the source, or `u32::MAX` for an added object.
    Object {
        len: u32,
        end: u32,
        pos: u32,
    },
}

/// A member added to an object after parsing.
#[derive(Debug, Clone, Copy)]
struct Ext {
    object: u32,
    key: u32,
    value: u32,
    /// Where the member's JSON lies in the tape's text when nothing in it needs escaping,
    /// else `(0, 0)`: `"key":"value"` for a string, `"key":` for an added object.
    json: (u32, u32),
}

/// A parsed JSON text.
#[derive(Debug, Clone)]
pub struct Tape<'s> {
    src: &'s str,
    pub(crate) nodes: Vec<Entry>,
    /// Where unescaped and added strings live: (start, length) in `text`.
    owned: Vec<(u32, u32)>,
    text: String,
    ext: Vec<Ext>,
    /// One bit per object index modulo 64, set for objects with added members: the
    /// objects without any (most) skip looking through `ext`.
    ext_objects: u64,
    /// Lengths of `nodes`, `owned` and `text` when parsing ended; what lies past them was added.
    parsed: (usize, usize, usize),
}

/// Where a top-level event sits in a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpan {
    /// Tape index of the event's value.
    pub node: u32,
    /// Byte range of its text in the body.
    pub start: usize,
    /// End of the byte range.
    pub end: usize,
    /// A problem confined to this event (a duplicate key, a number beyond
    /// f64): the body still parses, and only this event is refused.
    pub problem: Option<String>,
    /// One bit per fingerprint of the event's top-level keys (the bits the parser
    /// keeps to find repeated keys), or every bit when they are not all known: an
    /// event object of more keys than are checked as they come, or an event that is
    /// not an object. A key whose bit is clear is not among them.
    pub keys: u128,
}

/// A syntax error, at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapeError {
    /// Byte offset of the error.
    pub offset: usize,
    /// What is wrong.
    pub message: Cow<'static, str>,
    /// Set when the only problem is too many events.
    pub too_many_events: bool,
}

impl TapeError {
    fn at(offset: usize, message: impl Into<Cow<'static, str>>) -> Self {
        TapeError {
            offset,
            message: message.into(),
            too_many_events: false,
        }
    }

    /// 1-based line and column (in characters) of the error in `src`.
    pub fn line_column(&self, src: &str) -> (usize, usize) {
        let upto = &src.as_bytes()[..self.offset.min(src.len())];
        let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = upto.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let column = String::from_utf8_lossy(&upto[line_start..]).chars().count() + 1;
        (line, column)
    }
}

impl fmt::Display for TapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

impl<'s> Tape<'s> {
    /// Parses one JSON text.
    pub fn parse(src: &'s str) -> Result<Tape<'s>, TapeError> {
        let mut p = Parser::new(src, usize::MAX);
        p.run(false)?;
        Ok(p.finish())
    }

    /// Parses a body: a top-level array's elements are its events (at most
    /// `max_events`), and any other value is one event.
    pub fn parse_body(
        src: &'s str,
        max_events: usize,
    ) -> Result<(Tape<'s>, Vec<EventSpan>), TapeError> {
        let mut spans = Vec::new();
        let tape = Tape::parse_body_into(src, max_events, &mut spans)?;
        Ok((tape, spans))
    }

    /// [`Tape::parse_body`], with the spans put in `spans` (emptied first), whose room is reused.
    pub fn parse_body_into(
        src: &'s str,
        max_events: usize,
        spans: &mut Vec<EventSpan>,
    ) -> Result<Tape<'s>, TapeError> {
        let mut p = Parser::new(src, max_events);
        spans.clear();
        p.spans = std::mem::take(spans);
        // Room for the events a body of this size usually holds, so the list seldom grows.
        p.spans.reserve((src.len() / 512 + 1).min(max_events));
        let parsed = p.run(true);
        *spans = std::mem::take(&mut p.spans);
        parsed?;
        Ok(p.finish())
    }

    /// The source text.
    pub fn source(&self) -> &'s str {
        self.src
    }

    pub(crate) fn entry(&self, i: u32) -> Entry {
        self.nodes[i as usize]
    }

    /// Index just past the subtree at `i`.
    pub(crate) fn next(&self, i: u32) -> u32 {
        match self.nodes[i as usize] {
            Entry::Array { end, .. } | Entry::Object { end, .. } => end,
            _ => i + 1,
        }
    }

    /// The text of the string entry at `i`.
    pub(crate) fn str_at(&self, i: u32) -> Option<&str> {
        match self.nodes[i as usize] {
            Entry::Str { start, len } => self.src.get(start as usize..(start + len) as usize),
            Entry::Owned(k) => self.owned_str(k),
            _ => None,
        }
    }

    fn owned_str(&self, k: u32) -> Option<&str> {
        let &(start, len) = self.owned.get(k as usize)?;
        self.text.get(start as usize..start as usize + len as usize)
    }

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

    /// Converts the subtree at `i` to a serde value (for cold paths).
    pub fn to_value(&self, i: u32) -> serde_json::Value {
        use serde_json::Value;
        match self.nodes[i as usize] {
            Entry::Null => Value::Null,
            Entry::Bool(b) => Value::Bool(b),
            Entry::Int(n) => Value::from(n),
            Entry::UInt(n) => Value::from(n),
            Entry::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
            Entry::Str { .. } | Entry::Owned(_) => {
                Value::String(self.str_at(i).unwrap_or_default().to_owned())
            }
            Entry::Array { .. } => {
                let mut out = Vec::new();
                let mut c = i + 1;
                for _ in 0..self.array_len(i) {
                    out.push(self.to_value(c));
                    c = self.next(c);
                }
                Value::Array(out)
            }
            Entry::Object { .. } => Value::Object(
                self.members(i)
                    .map(|(k, v)| {
                        (
                            self.str_at(k).unwrap_or_default().to_owned(),
                            self.to_value(v),
                        )
                    })
                    .collect(),
            ),
        }
    }

    pub(crate) fn array_len(&self, i: u32) -> u32 {
        match self.nodes[i as usize] {
            Entry::Array { len, .. } => len,
            _ => 0,
        }
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

struct Frame {
    index: u32,
    len: u32,
    object: bool,
    /// One bit per key fingerprint seen: a key whose bit is clear repeats none before it.
    seen: u128,
}

/// Objects with more keys than this are checked for repeats once, sorted, when they close:
/// key by key, a hostile object of many keys would cost the square of their number.
const KEYS_CHECKED_AS_THEY_COME: usize = 32;

struct Parser<'s> {
    tape: Tape<'s>,
    bytes: &'s [u8],
    pos: usize,
    stack: Vec<Frame>,
    spans: Vec<EventSpan>,
    max_events: usize,
    /// The first event-confined problem since the current event began.
    problem: Option<String>,
    /// The key bits of the last container closed at an event's top level, for its span.
    root_keys: u128,
}

/// Bytes that end the fast scan of a string: quote, backslash and control characters.
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bits set at the bytes of `v` that are a quote, a backslash or a control
/// character; the lowest set bit is exact (higher ones may be borrow artefacts).
#[inline(always)]
fn special_mask(v: u64) -> u64 {
    let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let quote = zero(v ^ (LO * u64::from(b'"')));
    let slash = zero(v ^ (LO * u64::from(b'\\')));
    let control = v.wrapping_sub(LO * 0x20) & !v & HI;
    quote | slash | control
}

/// Bit `k` set when byte `k` of `chunk` is a quote, a backslash or a control character:
/// three byte compares over all sixteen at once, with SSE2 (always present on x86_64).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn special16(chunk: &[u8; 16]) -> u32 {
    use safe_arch::{
        bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, min_u8_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i,
    };
    let v = load_unaligned_m128i(chunk);
    let quote = cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b'"' as i8));
    let slash = cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b'\\' as i8));
    // A byte is a control character when it is its own minimum with 0x1f.
    let control = cmp_eq_mask_i8_m128i(min_u8_m128i(v, set_splat_i8_m128i(0x1f)), v);
    move_mask_i8_m128i(bitor_m128i(bitor_m128i(quote, slash), control)) as u32
}

/// The same without SSE2 (WASM, say).
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn special16(chunk: &[u8; 16]) -> u32 {
    special16_words(chunk)
}

/// [`special16`] two words at a time, where SSE2 is missing; only its lowest bit is set.
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse2", not(test)),
    allow(dead_code)
)]
#[inline(always)]
fn special16_words(chunk: &[u8; 16]) -> u32 {
    let (Some(low), Some(high)) = (chunk.first_chunk::<8>(), chunk.last_chunk::<8>()) else {
        return 0;
    };
    let (low, high) = (
        special_mask(u64::from_le_bytes(*low)),
        special_mask(u64::from_le_bytes(*high)),
    );
    // Only the lowest bit is exact, and only it is used: one bit per byte past it is enough.
    if low != 0 {
        1 << (low.trailing_zeros() / 8)
    } else if high != 0 {
        1 << (8 + high.trailing_zeros() / 8)
    } else {
        0
    }
}

/// Index of the first quote, backslash or control character at or after `i` (or the end).
/// Sixteen bytes a step: most keys and many values end within the first, so the loop's
/// exit is seldom mispredicted.
#[inline(always)]
fn scan_plain(bytes: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = bytes.get(i..).and_then(<[u8]>::first_chunk::<16>) {
        let mask = special16(chunk);
        if mask != 0 {
            return i + mask.trailing_zeros() as usize;
        }
        i += 16;
    }
    while let Some(chunk) = bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let mask = special_mask(u64::from_le_bytes(*chunk));
        if mask != 0 {
            return i + (mask.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if SPECIAL[b as usize] {
            break;
        }
        i += 1;
    }
    i
}

/// The end of the run of ASCII digits at `i`, and their value (exact up to 19 digits,
/// wrapped past that).
#[inline(always)]
fn integer_at(bytes: &[u8], mut i: usize) -> (usize, u64) {
    let mut v: u64 = 0;
    while let Some(&b) = bytes.get(i) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    (i, v)
}

/// A tape's and a parser's vectors, kept by each thread between parses: once warm,
/// parsing an event allocates nothing.
#[derive(Default)]
struct Spare {
    nodes: Vec<Entry>,
    owned: Vec<(u32, u32)>,
    text: String,
    ext: Vec<Ext>,
    stack: Vec<Frame>,
}

/// Vectors larger than this are let go, not kept: one huge body does not stay resident.
const SPARE_BYTES: usize = 1 << 20;

thread_local! {
    static SPARE: RefCell<Spare> = RefCell::new(Spare::default());
}

/// Puts `v`, emptied, in `slot` if the slot is free and `v` is not too large to keep.
fn keep<T>(slot: &mut Vec<T>, v: &mut Vec<T>) {
    if slot.capacity() == 0 && v.capacity() * std::mem::size_of::<T>() <= SPARE_BYTES {
        v.clear();
        *slot = std::mem::take(v);
    }
}

impl Drop for Tape<'_> {
    fn drop(&mut self) {
        // Not available while the thread itself is being torn down: then there is nothing to keep.
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut() {
                keep(&mut spare.nodes, &mut self.nodes);
                keep(&mut spare.owned, &mut self.owned);
                keep(&mut spare.ext, &mut self.ext);
                if spare.text.capacity() == 0 && self.text.capacity() <= SPARE_BYTES {
                    self.text.clear();
                    spare.text = std::mem::take(&mut self.text);
                }
            }
        });
    }
}

impl<'s> Parser<'s> {
    fn new(src: &'s str, max_events: usize) -> Self {
        let mut spare = SPARE
            .try_with(|spare| spare.try_borrow_mut().map(|mut s| std::mem::take(&mut *s)))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        spare.nodes.reserve(src.len() / 6 + 8);
        spare.stack.reserve(16);
        Parser {
            tape: Tape {
                src,
                nodes: spare.nodes,
                owned: spare.owned,
                text: spare.text,
                ext: spare.ext,
                ext_objects: 0,
                parsed: (0, 0, 0),
            },
            bytes: src.as_bytes(),
            pos: 0,
            stack: spare.stack,
            spans: Vec::new(),
            max_events,
            problem: None,
            root_keys: u128::MAX,
        }
    }

    /// Hands the parser's own vectors back to the thread for the next parse.
    fn finish(mut self) -> Tape<'s> {
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut() {
                keep(&mut spare.stack, &mut self.stack);
            }
        });
        self.tape
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        self.skip_ws_in(self.bytes);
    }

    /// [`Parser::skip_ws`] over `bytes`, which are `self.bytes`.
    #[inline(always)]
    fn skip_ws_in(&mut self, bytes: &[u8]) {
        // Compact JSON has no white space between tokens: one comparison decides.
        if bytes.get(self.pos).is_some_and(|&b| b > b' ') {
            return;
        }
        while let Some(&b) = bytes.get(self.pos) {
            if b == b' ' || b == b'\n' || b == b'\r' || b == b'\t' {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    #[cold]
    fn err(&self, message: impl Into<Cow<'static, str>>) -> TapeError {
        TapeError::at(self.pos, message)
    }

    fn run(&mut self, body: bool) -> Result<(), TapeError> {
        if u32::try_from(self.bytes.len()).is_err() {
            return Err(TapeError::at(0, "the text is over 4 GiB"));
        }
        self.skip_ws();
        let top_is_array = body && self.bytes.get(self.pos) == Some(&b'[');
        if body && !top_is_array {
            let start = self.pos;
            self.value_tree::<false>()?;
            let problem = self.problem.take();
            self.spans.push(EventSpan {
                node: 0,
                start,
                end: self.pos,
                problem,
                keys: std::mem::replace(&mut self.root_keys, u128::MAX),
            });
        } else if top_is_array {
            self.value_tree::<true>()?;
        } else {
            self.value_tree::<false>()?;
            if let Some(problem) = self.problem.take() {
                return Err(TapeError::at(0, problem));
            }
        }
        self.skip_ws();
        if self.pos != self.bytes.len() {
            return Err(self.err("trailing characters after the JSON value"));
        }
        self.tape.parsed = (
            self.tape.nodes.len(),
            self.tape.owned.len(),
            self.tape.text.len(),
        );
        // Room for what enrichment adds to an event (ids, times, a few headers), at once.
        let tape = &mut self.tape;
        tape.nodes.reserve(32);
        tape.owned.reserve(16);
        tape.text.reserve(256);
        tape.ext.reserve(8);
        Ok(())
    }

    /// Steps over the object or array at `pos` without building it: its brackets
    /// must pair up and its strings close; what lies between is not looked at.
    /// Iterative, one bit of memory per level.
    #[cold]
    fn skip_container(&mut self) -> Result<(), TapeError> {
        let start = self.pos;
        let mut open: Vec<bool> = Vec::new();
        while let Some(&b) = self.bytes.get(self.pos) {
            self.pos += 1;
            match b {
                b'{' => open.push(true),
                b'[' => open.push(false),
                b'}' | b']' => {
                    if open.pop() != Some(b == b'}') {
                        self.pos -= 1;
                        return Err(self.err(format!(
                            "`{}` does not close the bracket it meets",
                            b as char
                        )));
                    }
                    if open.is_empty() {
                        return Ok(());
                    }
                }
                b'"' => loop {
                    match self.bytes.get(self.pos) {
                        None => {
                            return Err(self.err("unexpected end of input inside a string"));
                        }
                        Some(b'\\') => self.pos += 2,
                        Some(b'"') => {
                            self.pos += 1;
                            break;
                        }
                        Some(_) => self.pos += 1,
                    }
                },
                _ => {}
            }
        }
        Err(TapeError::at(
            start,
            "unexpected end of input: an array or object is not closed",
        ))
    }

    /// Parses one complete value, iteratively.
    fn value_tree<const RECORD_EVENTS: bool>(&mut self) -> Result<(), TapeError> {
        // Read once: a field would be read again after every write to the tape.
        let bytes = self.bytes;
        let mut event_start = 0usize;
        let mut event_node = 0u32;
        'value: loop {
            self.skip_ws_in(bytes);
            if RECORD_EVENTS && self.stack.len() == 1 {
                if self.spans.len() == self.max_events {
                    let mut e = self.err(format!("more than {} events", self.max_events));
                    e.too_many_events = true;
                    return Err(e);
                }
                event_start = self.pos;
                event_node = self.tape.nodes.len() as u32;
            }
            let Some(&b) = bytes.get(self.pos) else {
                return Err(self.err("unexpected end of input: expected a value"));
            };
            match b {
                b'{' | b'[' if self.stack.len() >= MAX_DEPTH => {
                    // Too deep to keep: step over it (checking only that its brackets and
                    // strings close) and refuse just this event, as for a duplicate key.
                    self.skip_container()?;
                    self.problem.get_or_insert_with(|| {
                        format!("nesting is deeper than {MAX_DEPTH} levels")
                    });
                    self.tape.nodes.push(Entry::Null);
                }
                b'{' | b'[' => {
                    let index = self.tape.nodes.len() as u32;
                    let object = b == b'{';
                    self.tape.nodes.push(if object {
                        Entry::Object {
                            len: 0,
                            end: 0,
                            pos: self.pos as u32,
                        }
                    } else {
                        Entry::Array { len: 0, end: 0 }
                    });
                    self.pos += 1;
                    self.stack.push(Frame {
                        index,
                        len: 0,
                        object,
                        seen: 0,
                    });
                    self.skip_ws_in(bytes);
                    let close = if object { b'}' } else { b']' };
                    if bytes.get(self.pos) == Some(&close) {
                        self.pos += 1;
                        self.close()?;
                    } else {
                        if object {
                            self.key(bytes)?;
                        }
                        continue 'value;
                    }
                }
                b'"' => {
                    self.string(bytes)?;
                }
                b't' => self.literal(b"true", Entry::Bool(true))?,
                b'f' => self.literal(b"false", Entry::Bool(false))?,
                b'n' => self.literal(b"null", Entry::Null)?,
                b'0'..=b'9' => {
                    // Most numbers in events are small whole ones: read here, without a
                    // call. Anything else (a fraction, an exponent, a leading zero, more
                    // than 19 digits) is read again by `number`, which says what is wrong.
                    let (end, v) = integer_at(bytes, self.pos);
                    let digits = end - self.pos;
                    if digits <= 19
                        && (digits == 1 || b != b'0')
                        && !matches!(bytes.get(end), Some(b'.' | b'e' | b'E'))
                    {
                        self.pos = end;
                        self.tape.nodes.push(Entry::UInt(v));
                    } else {
                        let e = self.number()?;
                        self.push_number(e);
                    }
                }
                b'-' => {
                    let e = self.number()?;
                    self.push_number(e);
                }
                _ => {
                    return Err(self.err(format!(
                        "expected a value, found `{}`",
                        char_at(bytes, self.pos)
                    )));
                }
            }
            // A value is complete: climb out of finished containers.
            loop {
                if RECORD_EVENTS && self.stack.len() == 1 {
                    let problem = self.problem.take();
                    self.spans.push(EventSpan {
                        node: event_node,
                        start: event_start,
                        end: self.pos,
                        problem,
                        keys: std::mem::replace(&mut self.root_keys, u128::MAX),
                    });
                }
                let Some(top) = self.stack.last_mut() else {
                    return Ok(());
                };
                top.len += 1;
                let object = top.object;
                self.skip_ws_in(bytes);
                match bytes.get(self.pos) {
                    Some(b',') => {
                        self.pos += 1;
                        if object {
                            self.skip_ws_in(bytes);
                            self.key(bytes)?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => {
                        self.pos += 1;
                        self.close()?;
                    }
                    Some(b']') if !object => {
                        self.pos += 1;
                        self.close()?;
                    }
                    Some(_) => {
                        let expected = if object { "`,` or `}`" } else { "`,` or `]`" };
                        return Err(self.err(format!(
                            "expected {expected}, found `{}`",
                            char_at(bytes, self.pos)
                        )));
                    }
                    None => return Err(self.err("unexpected end of input inside a container")),
                }
            }
        }
    }

    /// Finishes the container on top of the stack; the caller then counts it as a value of its parent.
    #[inline(always)]
    fn close(&mut self) -> Result<(), TapeError> {
        let Some(frame) = self.stack.pop() else {
            return Ok(());
        };
        let end = self.tape.nodes.len() as u32;
        // An event's top level: in a body's array, or the body itself. (Containers inside
        // a lone event close here too, before the event does and overwrites them.)
        if self.stack.len() <= 1 {
            self.root_keys = if frame.object && frame.len as usize <= KEYS_CHECKED_AS_THEY_COME {
                frame.seen
            } else {
                u128::MAX
            };
        }
        self.tape.nodes[frame.index as usize] = match self.tape.nodes[frame.index as usize] {
            Entry::Object { pos, .. } => {
                if frame.len as usize > KEYS_CHECKED_AS_THEY_COME {
                    self.check_unique_keys(frame.index, frame.len);
                }
                Entry::Object {
                    len: frame.len,
                    end,
                    pos,
                }
            }
            _ => Entry::Array {
                len: frame.len,
                end,
            },
        };
        Ok(())
    }

    #[inline(always)]
    fn key(&mut self, bytes: &'s [u8]) -> Result<(), TapeError> {
        if bytes.get(self.pos) != Some(&b'"') {
            return Err(self.err(format!(
                "expected a string key, found `{}`",
                char_at(bytes, self.pos)
            )));
        }
        let key_start = self.pos + 1;
        let index = self.tape.nodes.len() as u32;
        let plain = self.string(bytes)?;
        let fp = if plain {
            fingerprint(&bytes[key_start..self.pos - 1])
        } else {
            fingerprint(self.tape.str_at(index).unwrap_or_default().as_bytes())
        };
        // `len` counts the members before this one.
        if let Some(frame) = self.stack.last_mut()
            && (frame.len as usize) < KEYS_CHECKED_AS_THEY_COME
        {
            let bit = key_bit(fp);
            let maybe_repeat = frame.seen & bit != 0;
            frame.seen |= bit;
            if maybe_repeat {
                let (object, before) = (frame.index, frame.len);
                self.check_repeat(object, before, index);
            }
        }
        self.skip_ws_in(bytes);
        if bytes.get(self.pos) != Some(&b':') {
            return Err(self.err(format!(
                "expected `:` after an object key, found `{}`",
                char_at(bytes, self.pos)
            )));
        }
        self.pos += 1;
        Ok(())
    }

    /// The tape indexes of the first `len` keys of the object at `object`, whose values
    /// are complete.
    fn keys_of(&self, object: u32, len: u32) -> impl Iterator<Item = u32> + '_ {
        let mut k = object + 1;
        (0..len).map(move |_| {
            let key = k;
            k = self.tape.next(k + 1);
            key
        })
    }

    /// Whether the key at tape index `key` repeats one of the `before` keys of its object.
    #[cold]
    fn check_repeat(&mut self, object: u32, before: u32, key: u32) {
        let Some(name) = self.tape.key_bytes(key) else {
            return;
        };
        if self
            .keys_of(object, before)
            .any(|j| self.tape.key_bytes(j).is_some_and(|b| same_bytes(b, name)))
        {
            let text = self.tape.str_at(key).unwrap_or_default().to_owned();
            self.duplicate(text);
        }
    }

    /// Whether any of the `len` keys of the object at `object` repeats, by sorting them.
    #[cold]
    fn check_unique_keys(&mut self, object: u32, len: u32) {
        let text = |i: u32| self.tape.str_at(i).unwrap_or_default();
        let mut sorted: Vec<&str> = self.keys_of(object, len).map(text).collect();
        sorted.sort_unstable();
        if let Some(key) = sorted
            .windows(2)
            .find_map(|w| (w[0] == w[1]).then_some(w[0]))
        {
            self.duplicate(key.to_owned());
        }
    }

    fn duplicate(&mut self, key: String) {
        let message = format!("duplicate key `{}` in an object", truncate(&key, 64));
        self.problem.get_or_insert(message);
    }

    fn literal(&mut self, word: &[u8], entry: Entry) -> Result<(), TapeError> {
        // Byte by byte: a `memcmp` call costs more than four comparisons.
        let at = self.bytes.get(self.pos..).unwrap_or_default();
        if at.len() >= word.len() && word.iter().zip(at).all(|(a, b)| a == b) {
            self.pos += word.len();
            self.tape.nodes.push(entry);
            Ok(())
        } else {
            Err(self.err(format!(
                "expected a value, found `{}`",
                char_at(self.bytes, self.pos)
            )))
        }
    }

    /// Parses the string at `self.pos` onto the tape; says whether it had no escapes.
    #[inline(always)]
    fn string(&mut self, bytes: &'s [u8]) -> Result<bool, TapeError> {
        let start = self.pos + 1;
        let i = scan_plain(bytes, start);
        match bytes.get(i) {
            Some(b'"') => {
                self.pos = i + 1;
                self.tape.nodes.push(Entry::Str {
                    start: start as u32,
                    len: (i - start) as u32,
                });
                Ok(true)
            }
            Some(b'\\') => {
                let e = self.escaped_string(start, i)?;
                self.tape.nodes.push(e);
                Ok(false)
            }
            Some(_) => {
                self.pos = i;
                Err(self.err("control character in a string: escape it"))
            }
            None => {
                self.pos = i;
                Err(self.err("unexpected end of input inside a string"))
            }
        }
    }

    #[cold]
    fn escaped_string(&mut self, start: usize, first_escape: usize) -> Result<Entry, TapeError> {
        let bytes = self.bytes;
        let mut out = String::with_capacity(first_escape - start + 16);
        out.push_str(&self.tape.src[start..first_escape]);
        let mut i = first_escape;
        let mut run = i;
        loop {
            match bytes.get(i) {
                Some(b'"') => {
                    out.push_str(&self.tape.src[run..i]);
                    self.pos = i + 1;
                    let k = self.tape.owned.len() as u32;
                    let start = self.tape.text.len() as u32;
                    self.tape.owned.push((start, out.len() as u32));
                    self.tape.text.push_str(&out);
                    return Ok(Entry::Owned(k));
                }
                Some(b'\\') => {
                    out.push_str(&self.tape.src[run..i]);
                    self.pos = i;
                    let esc = bytes.get(i + 1).copied();
                    i += 2;
                    match esc {
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'/') => out.push('/'),
                        Some(b'b') => out.push('\u{8}'),
                        Some(b'f') => out.push('\u{c}'),
                        Some(b'n') => out.push('\n'),
                        Some(b'r') => out.push('\r'),
                        Some(b't') => out.push('\t'),
                        Some(b'u') => {
                            let hi = self.hex4(i)?;
                            i += 4;
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                if bytes.get(i..i + 2) != Some(b"\\u") {
                                    self.pos = i;
                                    return Err(self.err("lone leading surrogate in a \\u escape"));
                                }
                                let lo = self.hex4(i + 2)?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    self.pos = i;
                                    return Err(
                                        self.err("invalid trailing surrogate in a \\u escape")
                                    );
                                }
                                i += 6;
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(self.err("lone trailing surrogate in a \\u escape"));
                            } else {
                                hi
                            };
                            out.push(
                                char::from_u32(c).ok_or_else(|| self.err("invalid \\u escape"))?,
                            );
                        }
                        _ => return Err(self.err("invalid escape in a string")),
                    }
                    run = i;
                }
                Some(&c) if c < 0x20 => {
                    self.pos = i;
                    return Err(self.err("control character in a string: escape it"));
                }
                Some(_) => i += 1,
                None => {
                    self.pos = i;
                    return Err(self.err("unexpected end of input inside a string"));
                }
            }
        }
    }

    fn hex4(&self, i: usize) -> Result<u32, TapeError> {
        let digits = self
            .bytes
            .get(i..i + 4)
            .ok_or_else(|| TapeError::at(i, "truncated \\u escape"))?;
        let text =
            std::str::from_utf8(digits).map_err(|_| TapeError::at(i, "invalid \\u escape"))?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TapeError::at(i, "invalid \\u escape"));
        }
        u32::from_str_radix(text, 16).map_err(|_| TapeError::at(i, "invalid \\u escape"))
    }

    #[inline(always)]
    fn push_number(&mut self, e: Entry) {
        self.tape.nodes.push(e);
    }

    fn number(&mut self) -> Result<Entry, TapeError> {
        let bytes = self.bytes;
        let start = self.pos;
        let mut i = start;
        let negative = bytes[i] == b'-';
        if negative {
            i += 1;
        }
        let digits = |i: &mut usize| {
            let s = *i;
            while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - s
        };
        // The integer part is read as it is scanned: most numbers in events end there.
        let int_start = i;
        let (end, v) = integer_at(bytes, i);
        i = end;
        let n_int = i - int_start;
        if n_int == 0 {
            self.pos = i;
            return Err(self.err("invalid number: expected digits"));
        }
        if n_int > 1 && bytes[int_start] == b'0' {
            self.pos = int_start;
            return Err(self.err("invalid number: leading zero"));
        }
        let mut float = false;
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            float = true;
            if digits(&mut i) == 0 {
                self.pos = i;
                return Err(self.err("invalid number: expected digits after `.`"));
            }
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            float = true;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if digits(&mut i) == 0 {
                self.pos = i;
                return Err(self.err("invalid number: expected exponent digits"));
            }
        }
        self.pos = i;
        // Up to 19 digits, `v` is exact.
        if !float && n_int <= 19 {
            if !negative {
                return Ok(Entry::UInt(v));
            }
            if v <= i64::MAX as u64 + 1 {
                return Ok(Entry::Int((v as i64).wrapping_neg()));
            }
        }
        let text = &self.tape.src[start..i];
        if !float
            && !negative
            && let Ok(v) = text.parse::<u64>()
        {
            return Ok(Entry::UInt(v));
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Entry::Float(f)),
            _ => {
                let message = format!(
                    "number `{}` is out of range: beyond a 64-bit float",
                    truncate(text, 40)
                );
                self.problem.get_or_insert(message);
                Ok(Entry::Null)
            }
        }
    }
}

/// Equal byte strings, compared a word at a time (keys are short; a `memcmp` call costs more).
#[inline(always)]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if let (Some(a_last), Some(b_last)) = (a.last_chunk::<8>(), b.last_chunk::<8>()) {
        // Whole words, then the last word (overlapping the one before it).
        let (mut x, mut y) = (a, b);
        while let (Some((p, rest_x)), Some((q, rest_y))) =
            (x.split_first_chunk::<8>(), y.split_first_chunk::<8>())
        {
            if p != q {
                return false;
            }
            (x, y) = (rest_x, rest_y);
        }
        return a_last == b_last;
    }
    if let (Some(a4), Some(b4), Some(a_last), Some(b_last)) = (
        a.first_chunk::<4>(),
        b.first_chunk::<4>(),
        a.last_chunk::<4>(),
        b.last_chunk::<4>(),
    ) {
        return a4 == b4 && a_last == b_last;
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// Writes `s` as a JSON string literal.
pub(crate) fn write_json_string(s: &str, out: &mut String) {
    let bytes = s.as_bytes();
    let plain = scan_plain(bytes, 0);
    out.reserve(bytes.len() + 2);
    out.push('"');
    if plain == bytes.len() {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut run = 0;
    loop {
        let i = scan_plain(bytes, run);
        out.push_str(&s[run..i]);
        let Some(&b) = bytes.get(i) else {
            break;
        };
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        run = i + 1;
    }
    out.push('"');
}

/// The bit of a key's [`fingerprint`] in an object's 128 bits of keys seen.
#[inline(always)]
fn key_bit(fp: u64) -> u128 {
    1u128 << (fp.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 57)
}

/// Length and first seven bytes of a key: unequal fingerprints mean unequal keys.
#[inline(always)]
fn fingerprint(b: &[u8]) -> u64 {
    let head = if let Some(first) = b.first_chunk::<8>() {
        u64::from_le_bytes(*first) & 0x00ff_ffff_ffff_ffff
    } else if let (Some(h), Some(t)) = (b.first_chunk::<4>(), b.last_chunk::<4>()) {
        // Four to seven bytes: two overlapping words hold them all.
        let shift = 8 * (b.len() - 4);
        u64::from(u32::from_le_bytes(*h)) | (u64::from(u32::from_le_bytes(*t)) << shift)
    } else {
        b.iter()
            .enumerate()
            .fold(0u64, |h, (i, &c)| h | u64::from(c) << (8 * i))
    };
    head << 8 | (b.len() as u64 & 0xff)
}

fn char_at(bytes: &[u8], pos: usize) -> char {
    std::str::from_utf8(&bytes[pos..bytes.len().min(pos + 4)])
        .ok()
        .and_then(|s| s.chars().next())
        .or_else(|| bytes.get(pos).map(|&b| char::from(b)))
        .unwrap_or('?')
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn the_string_scan_stops_at_the_first_quote_backslash_or_control_byte() {
        // Every byte value at every position of the sixteen-byte, eight-byte and
        // one-byte steps, behind plain ASCII and behind multi-byte UTF-8.
        for filler in [b'a', 0xc3] {
            for len in [1usize, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40] {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut bytes = vec![filler; len];
                        bytes[at] = b;
                        let want = bytes
                            .iter()
                            .position(|&c| SPECIAL[c as usize])
                            .unwrap_or(len);
                        for from in [0, 3.min(len)] {
                            // Only the byte at `at` can be special: before `from`, it is skipped.
                            let want = if want >= from { want } else { len };
                            let got = scan_plain(&bytes, from);
                            assert_eq!(got, want, "byte {b:#04x} at {at} of {len}, from {from}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn both_ways_of_scanning_sixteen_bytes_find_the_same_first_byte() {
        let mut rng = fastrand::Rng::with_seed(16);
        for _ in 0..200_000 {
            let mut chunk = [0u8; 16];
            // Mostly printable bytes, with a few of every kind.
            for b in &mut chunk {
                *b = if rng.u8(..8) == 0 {
                    rng.u8(..)
                } else {
                    rng.u8(b' '..=b'~')
                };
            }
            let (fast, words) = (special16(&chunk), special16_words(&chunk));
            assert_eq!(fast.trailing_zeros(), words.trailing_zeros(), "{chunk:?}");
            assert_eq!(fast == 0, words == 0, "{chunk:?}");
        }
    }

    fn body(src: &str) -> Result<(Tape<'_>, Vec<EventSpan>), TapeError> {
        Tape::parse_body(src, 100)
    }

    #[test]
    fn parses_like_serde_json() {
        let src = r#"{"a":[1,-2,3.5,1e3,18446744073709551615,-9223372036854775808,123456789012345678901234],"b":{"c":null,"d":true,"e":false},"s":"x\"y\u00e9\ud83e\udd80\n","":{}}"#;
        let tape = Tape::parse(src).unwrap();
        let expected: Value = serde_json::from_str(src).unwrap();
        assert_eq!(tape.to_value(0), expected);
        // Numbers at the edges of each way they are read. (Not `-0`: serde_json reads it
        // as a float, the tape as the integer 0, which JSON Schema takes alike.)
        for n in [
            "0",
            "7",
            "-7",
            "1234567890123456789",
            "9999999999999999999",
            "-9223372036854775808",
            "-9223372036854775809",
            "10000000000000000000",
            "18446744073709551616",
            "99999999999999999999",
            "0.5",
            "-0.0",
            "1E+2",
            "12e-1",
            "5e0",
            "123.456e7",
        ] {
            let src = format!(r#"{{"n":{n},"m":[{n}]}}"#);
            let tape = Tape::parse(&src).unwrap();
            let expected: Value = serde_json::from_str(&src).unwrap();
            assert_eq!(tape.to_value(0), expected, "{n}");
        }
    }

    #[test]
    fn white_space_is_taken_wherever_json_allows_it() {
        let tokens = [
            "{", r#""a""#, ":", "[", "1", ",", "{", r#""b""#, ":", r#""c d""#, "}", ",", "[", "]",
            ",", "{", "}", "]", ",", r#""e""#, ":", "{", r#""f""#, ":", "null", ",", r#""g""#, ":",
            "[", "true", ",", "false", ",", "-2.5e3", "]", "}", "}",
        ];
        let expected: Value = serde_json::from_str(&tokens.concat()).unwrap();
        // Each kind of white space, in runs, between every two tokens.
        for ws in [" ", "\n", "\r\n", "\t", " \t\n "] {
            let spaced = format!("{ws}{}{ws}", tokens.join(ws));
            let tape = Tape::parse(&spaced).unwrap_or_else(|e| panic!("{e}: {spaced:?}"));
            assert_eq!(tape.to_value(0), expected, "{spaced:?}");
            let body = format!("{ws}[{ws}{spaced}{ws},{ws}{spaced}{ws}]{ws}");
            let (tape, spans) = Tape::parse_body(&body, 10).unwrap();
            assert_eq!(spans.len(), 2);
            for span in &spans {
                assert_eq!(&body[span.start..span.end], spaced.trim(), "{body:?}");
                assert_eq!(tape.to_value(span.node), expected);
            }
        }
        // White space inside a string is its text; a bare one where a token belongs is not JSON.
        assert!(Tape::parse(r#"{"a" "b"}"#).is_err());
        assert!(Tape::parse(r#"{"a":1 "b":2}"#).is_err());
        assert!(Tape::parse("[1 2]").is_err());
        assert!(Tape::parse("{ }").is_ok() && Tape::parse("[ ]").is_ok());
    }

    #[test]
    fn kept_vectors_carry_nothing_into_the_next_parse() {
        // A larger tape with escapes and added members, then smaller ones on the same
        // thread: each sees only its own text.
        let mut big = Tape::parse(r#"{"a":"x\ny","b":[1,2,3],"c":{"d":"e\u00e9"}}"#).unwrap();
        big.add_string(0, "added", "value");
        drop(big);
        for src in [r#"{"k":"v"}"#, "[]", r#"{"s":"\"q\""}"#] {
            let tape = Tape::parse(src).unwrap();
            let expected: Value = serde_json::from_str(src).unwrap();
            assert_eq!(tape.to_value(0), expected);
        }
        // Two tapes alive at once do not share vectors.
        let (one, two) = (
            Tape::parse(r#"{"a":1}"#).unwrap(),
            Tape::parse("[true]").unwrap(),
        );
        assert_eq!(one.to_value(0), serde_json::json!({"a": 1}));
        assert_eq!(two.to_value(0), serde_json::json!([true]));
    }

    #[test]
    fn an_events_key_bits_find_what_walking_it_finds() {
        let many: Vec<String> = (0..=KEYS_CHECKED_AS_THEY_COME)
            .map(|i| format!(r#""k{i}":{i}"#))
            .collect();
        let many = format!("{{{}}}", many.join(","));
        let src = format!(
            r#"[{{"a":1,"b":{{"c":{{"d":2}}}},"e":[{{"f":3}}],"\u0067":4}}, 5, {{"h":{{}}}}, [{{"i":1}}], {many}, {{}}]"#
        );
        let (mut tape, spans) = body(&src).unwrap();
        assert_eq!(spans.len(), 6);
        // Every bit is set where not every top-level key is known: not an object, too many keys.
        for i in [1, 3, 4] {
            assert_eq!(spans[i].keys, u128::MAX, "event {i}");
        }
        let (single, one) = body(r#" {"x":{"y":1},"z":[{"w":2}]} "#).unwrap();
        let mut names: Vec<String> = [
            "a", "b", "c", "d", "e", "f", "g", "h", "i", "x", "y", "z", "w",
        ]
        .map(String::from)
        .to_vec();
        names.extend((0..40).map(|i| format!("k{i}")));
        names.extend(["", "meta", "http", "aa", "b\\", "\\u0067"].map(String::from));
        let agree = |tape: &Tape<'_>, span: &EventSpan| {
            for name in &names {
                assert_eq!(
                    tape.get_keyed(span.node, name, span.keys),
                    tape.get(span.node, name),
                    "{name} in the event at {}",
                    span.start
                );
            }
        };
        agree(&single, &one[0]);
        for span in &spans {
            agree(&tape, span);
        }
        // Added members are found whatever the bits say.
        let first = spans[0].node;
        tape.add_string(first, "http", "added");
        let http = tape.get_keyed(first, "http", spans[0].keys);
        assert_eq!(http.and_then(|i| tape.str_at(i)), Some("added"));
        for span in &spans {
            agree(&tape, span);
        }
    }

    #[test]
    fn records_event_spans_in_arrays() {
        let src = r#" [ {"a":1} , {"b":[{"c":2}]},3 ] "#;
        let (tape, spans) = body(src).unwrap();
        let texts: Vec<&str> = spans.iter().map(|s| &src[s.start..s.end]).collect();
        assert_eq!(texts, [r#"{"a":1}"#, r#"{"b":[{"c":2}]}"#, "3"]);
        assert_eq!(tape.to_value(spans[1].node), json!({"b":[{"c":2}]}));
        let (_, one) = body(r#"  {"x":1}  "#).unwrap();
        assert_eq!(
            one,
            vec![EventSpan {
                node: 0,
                start: 2,
                end: 9,
                problem: None,
                keys: key_bit(fingerprint(b"x")),
            }]
        );
    }

    #[test]
    fn refuses_what_intake_must_refuse() {
        let cases = [
            (r#"{"a":1,"a":2}"#, "duplicate key `a`"),
            (r#"{"b":{"k":1,"x":2,"k":3}}"#, "duplicate key `k`"),
            (r#"{"a\u0062":1,"ab":2}"#, "duplicate key `ab`"),
            ("[NaN]", "expected a value"),
            ("[Infinity]", "expected a value"),
            ("[1e400]", "number `1e400` is out of range"),
            ("[01]", "leading zero"),
            ("[1.]", "expected digits after"),
            ("{\"a\":\"\u{1}\"}", "control character"),
            ("{\"a\":\"tab\there\"}", "control character"),
            (
                "{\"a\":\"long enough to scan by words\u{7f}\u{1f}\"}",
                "control character",
            ),
            ("{\"a\":\"ééééééé\u{0}\"}", "control character"),
            (r#"{"a":"\ud800"}"#, "lone leading surrogate"),
            (r#"{"a":"\x"}"#, "invalid escape"),
            (r#"{"a":1} x"#, "trailing characters"),
            (r#"{"a":1"#, "unexpected end of input"),
            (r#"{"a" 1}"#, "expected `:`"),
            (r#"{1:2}"#, "expected a string key"),
        ];
        for (src, expected) in cases {
            let err = Tape::parse(src).unwrap_err();
            assert!(err.message.contains(expected), "{src}: {err}");
        }
    }

    #[test]
    fn confines_duplicate_keys_and_huge_numbers_to_their_event() {
        let src = r#"[{"a":1},{"b":{"k":1,"k":2}},{"n":1e400},{"c":3}]"#;
        let (_, spans) = body(src).unwrap();
        let problems: Vec<Option<&str>> = spans.iter().map(|s| s.problem.as_deref()).collect();
        assert_eq!(problems[0], None);
        assert!(problems[1].unwrap().contains("duplicate key `k`"));
        assert!(
            problems[2]
                .unwrap()
                .contains("number `1e400` is out of range")
        );
        assert_eq!(problems[3], None);
    }

    #[test]
    fn finds_a_repeated_key_wherever_it_is_and_only_then() {
        // Keys alike in length and head (so their fingerprints meet), escaped keys, and
        // members whose values are objects, in objects below and above the size at which
        // keys stop being checked as they come.
        let key = |n: usize| match n % 4 {
            0 => format!("session_id_{n}"),
            1 => format!("k{n}"),
            2 => format!("a\\u0062_{n}"),
            _ => format!("performer_field_with_a_long_shared_prefix_{n}"),
        };
        for size in [1, 2, 5, 14, 31, 32, 33, 40, 80] {
            for repeat in [None, Some(0), Some(size / 2), Some(size - 1)] {
                let mut members: Vec<String> = (0..size)
                    .map(|n| format!(r#""{}":{{"x":{n},"y":[1,{{"z":true}}]}}"#, key(n)))
                    .collect();
                if let Some(r) = repeat {
                    members.push(format!(r#""{}":null"#, key(r)));
                }
                let src = format!(r#"[{{"first":1}},{{{}}},{{"last":2}}]"#, members.join(","));
                let (_, spans) = body(&src).unwrap();
                let problem = spans[1].problem.as_deref();
                match repeat {
                    None => assert_eq!(problem, None, "size {size}"),
                    Some(r) => {
                        let text = key(r).replace("\\u0062", "b");
                        let message = format!("duplicate key `{text}`");
                        assert!(
                            problem.is_some_and(|p| p.contains(&message)),
                            "size {size}, repeat of {r}: {problem:?}"
                        );
                    }
                }
                assert_eq!(spans[0].problem, None);
                assert_eq!(spans[2].problem, None);
            }
        }
    }

    #[test]
    fn bounds_nesting_without_recursion() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        let err = Tape::parse(&deep).unwrap_err();
        assert!(err.message.contains("deeper than 128"), "{err}");
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(Tape::parse(&ok).is_ok());
    }

    #[test]
    fn counts_events_against_the_limit() {
        let err = Tape::parse_body("[1,2,3]", 2).unwrap_err();
        assert!(err.too_many_events);
        assert!(Tape::parse_body("[1,2]", 2).is_ok());
    }

    #[test]
    fn error_positions_are_lines_and_columns() {
        let src = "{\n  \"a\": tru\n}";
        let err = Tape::parse(src).unwrap_err();
        assert_eq!(err.line_column(src), (2, 8));
    }

    #[test]
    fn members_added_to_many_objects_are_spliced_into_each() {
        // Objects at every depth and in every order get members: from one to past the
        // handful that splicing sorts in place.
        for count in [1usize, 2, 7, 8, 9, 12] {
            let inner: Vec<String> = (0..12).map(|i| format!(r#""o{i}":{{"v":{i}}}"#)).collect();
            let src = format!(
                r#"{{"a":[{{}},{{"b":{{}}}}],{},"z":{{}}}}"#,
                inner.join(",")
            );
            let mut tape = Tape::parse(&src).unwrap();
            let mark = tape.ext_mark();
            let mut expected: Value = serde_json::from_str(&src).unwrap();
            // The last objects first, so that the members come in no order of place.
            for i in (0..count).rev() {
                let key = format!("o{}", (i * 5) % 12);
                let object = tape.get(0, &key).unwrap();
                tape.add_string(object, "added", &key);
                expected[&key]["added"] = json!(key);
            }
            let z = tape.get(0, "z").unwrap();
            tape.add_string(z, "k", "v");
            expected["z"]["k"] = json!("v");
            let first = tape.get_path(0, &["a"]).map(|a| a + 1).unwrap();
            tape.add_string(first, "in", "array");
            expected["a"][0]["in"] = json!("array");
            let spliced = tape.splice(0, src.len(), mark);
            let v: Value = serde_json::from_str(&spliced).unwrap();
            assert_eq!(v, expected, "{count} objects: {spliced}");
        }
    }

    #[test]
    fn added_members_are_seen_and_spliced() {
        let src = r#"{"q\"":"}{","meta":{"stream":"s"},"n":[{"meta":1}]}"#;
        let mut tape = Tape::parse(src).unwrap();
        let mark = tape.ext_mark();
        let meta = tape.get(0, "meta").unwrap();
        tape.add_string(meta, "id", "i\"d");
        let http = tape.add_object(0, "http");
        tape.add_string(http, "ua", "Mozilla\n");
        tape.add_string(
            http,
            "raw",
            "bell\u{7}, quote \" and slash \\ past eight bytes",
        );
        assert_eq!(tape.object_len(0), 4);
        assert_eq!(tape.object_len(http), 2);
        assert_eq!(
            tape.get_path(0, &["http", "ua"])
                .and_then(|i| tape.str_at(i)),
            Some("Mozilla\n")
        );
        let spliced = tape.splice(0, src.len(), mark);
        let v: Value = serde_json::from_str(&spliced).unwrap();
        assert_eq!(v, tape.to_value(0));
        assert_eq!(v["meta"], json!({"id": "i\"d", "stream": "s"}));
        assert_eq!(v["http"]["ua"], "Mozilla\n");
        assert_eq!(v["n"][0]["meta"], 1);

        let mut empty = Tape::parse("{}").unwrap();
        let meta = empty.add_object(0, "meta");
        empty.add_string(meta, "dt", "t");
        assert_eq!(empty.splice(0, 2, 0), r#"{"meta":{"dt":"t"}}"#);
    }
}
