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
//!
//! The parts: the parser ([`parse`]) and its scalars ([`scalars`]), the byte scans it and the writers of
//! JSON text share ([`scan`]), looking members up ([`navigate`]), members
//! added after parsing and their splicing into the event's text
//! ([`overlay`]), and the vectors each thread keeps between parses
//! ([`spare`]).

mod navigate;
mod overlay;
mod parse;
mod scalars;
mod scan;
mod spare;
#[cfg(test)]
mod tests;

pub(crate) use navigate::Members;
use parse::Parser;
pub(crate) use scan::{same_bytes, write_json_string};

use std::borrow::Cow;
use std::fmt;

/// Deepest nesting accepted, as in serde_json.
pub(crate) const MAX_DEPTH: usize = 128;

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
pub(crate) struct EventSpan {
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
    #[cfg(test)]
    pub(crate) fn parse_body(
        src: &'s str,
        max_events: usize,
    ) -> Result<(Tape<'s>, Vec<EventSpan>), TapeError> {
        let mut spans = Vec::new();
        let tape = Tape::parse_body_into(src, max_events, &mut spans)?;
        Ok((tape, spans))
    }

    /// [`Tape::parse_body`], with the spans put in `spans` (emptied first), whose room is reused.
    pub(crate) fn parse_body_into(
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
