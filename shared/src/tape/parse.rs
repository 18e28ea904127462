//! The one-pass parser: tokens into tape entries, with what intake enforces
//! while parsing (depth, repeated keys, finite numbers, control characters,
//! the event count) and, for bodies, each event's span and key bits.

use super::scan::{fingerprint, integer_at, key_bit};
use super::spare::{SPARE, keep};
use super::{Entry, EventSpan, MAX_DEPTH, Tape, TapeError, same_bytes};
use std::borrow::Cow;

pub(super) struct Frame {
    index: u32,
    len: u32,
    object: bool,
    /// One bit per key fingerprint seen: a key whose bit is clear repeats none before it.
    seen: u128,
}

/// Objects with more keys than this are checked for repeats once, sorted, when they close:
/// key by key, a hostile object of many keys would cost the square of their number.
pub(super) const KEYS_CHECKED_AS_THEY_COME: usize = 32;

pub(super) struct Parser<'s> {
    pub(super) tape: Tape<'s>,
    pub(super) bytes: &'s [u8],
    pub(super) pos: usize,
    pub(super) stack: Vec<Frame>,
    pub(super) spans: Vec<EventSpan>,
    pub(super) max_events: usize,
    /// The first event-confined problem since the current event began.
    pub(super) problem: Option<String>,
    /// The key bits of the last container closed at an event's top level, for its span.
    pub(super) root_keys: u128,
}

impl<'s> Parser<'s> {
    pub(super) fn new(src: &'s str, max_events: usize) -> Self {
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
    pub(super) fn finish(mut self) -> Tape<'s> {
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut() {
                keep(&mut spare.stack, &mut self.stack);
            }
        });
        self.tape
    }

    #[inline(always)]
    pub(super) fn skip_ws(&mut self) {
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
    pub(super) fn err(&self, message: impl Into<Cow<'static, str>>) -> TapeError {
        TapeError::at(self.pos, message)
    }

    pub(super) fn run(&mut self, body: bool) -> Result<(), TapeError> {
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
}

pub(super) fn char_at(bytes: &[u8], pos: usize) -> char {
    std::str::from_utf8(&bytes[pos..bytes.len().min(pos + 4)])
        .ok()
        .and_then(|s| s.chars().next())
        .or_else(|| bytes.get(pos).map(|&b| char::from(b)))
        .unwrap_or('?')
}

pub(super) fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
