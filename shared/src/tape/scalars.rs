//! The parser's scalars: strings (borrowed from the source when they hold
//! no escape, unescaped into the tape's text when they do), numbers (small
//! whole numbers read inline, the rest by the full reader, non-finite ones
//! refused), and the literals `true`, `false` and `null`.

use super::parse::{Parser, char_at, truncate};
use super::scan::{integer_at, scan_plain};
use super::{Entry, TapeError};

impl<'s> Parser<'s> {
    pub(super) fn literal(&mut self, word: &[u8], entry: Entry) -> Result<(), TapeError> {
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
    pub(super) fn string(&mut self, bytes: &'s [u8]) -> Result<bool, TapeError> {
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
    pub(super) fn escaped_string(
        &mut self,
        start: usize,
        first_escape: usize,
    ) -> Result<Entry, TapeError> {
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

    pub(super) fn hex4(&self, i: usize) -> Result<u32, TapeError> {
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
    pub(super) fn push_number(&mut self, e: Entry) {
        self.tape.nodes.push(e);
    }

    pub(super) fn number(&mut self) -> Result<Entry, TapeError> {
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
