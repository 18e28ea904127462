//! Shortcuts that pass the commonest valid values of a keyword jsonschema
//! would otherwise check: UTC date-times of the usual shape, and
//! `^[class]{m,n}$` patterns over letters and digits (sixteen bytes at once
//! with SSE2). Anything they do not pass goes on to jsonschema.

use crate::tape::Tape;

/// A check that passes a value only when it is certainly valid; any other value goes
/// on to jsonschema, which decides.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Shortcut {
    None,
    /// `format: date-time`, for the shape events carry: `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
    DateTime,
    /// A `pattern` of the form `^[class]{min,max}$` over ASCII letters and digits (ids and
    /// tokens): one bit per byte value admitted, and the length bounds.
    Run {
        admitted: [u64; 2],
        min: usize,
        max: usize,
        /// The admitted bytes as up to four ranges, for checking sixteen bytes at once;
        /// `ranges[..n]`, and `n` is 0 when the class needs more.
        ranges: [(u8, u8); 4],
        n: usize,
    },
}

impl Shortcut {
    #[inline]
    pub(super) fn passes(self, tape: &Tape<'_>, node: u32) -> bool {
        match self {
            Shortcut::None => false,
            Shortcut::DateTime => tape.key_bytes(node).is_some_and(utc_date_time),
            Shortcut::Run {
                admitted,
                min,
                max,
                ranges,
                n,
            } => tape.key_bytes(node).is_some_and(|b| {
                (min..=max).contains(&b.len()) && run_admits(b, &admitted, &ranges[..n])
            }),
        }
    }

    /// The shortcut for a `pattern`, when it has the one shape taken apart here.
    pub(super) fn for_pattern(pattern: &str) -> Shortcut {
        run_pattern(pattern).map_or(Shortcut::None, |(admitted, min, max)| {
            let mut ranges = [(0, 0); 4];
            let mut n = 0;
            let admits = |c: u8| admitted[usize::from(c >> 6)] & (1 << (c & 63)) != 0;
            let mut c = 0u8;
            while c < 128 {
                if admits(c) {
                    let lo = c;
                    while c < 127 && admits(c + 1) {
                        c += 1;
                    }
                    if let Some(slot) = ranges.get_mut(n) {
                        *slot = (lo, c);
                    }
                    n += 1;
                }
                c += 1;
            }
            Shortcut::Run {
                admitted,
                min,
                max,
                ranges,
                n: if n <= ranges.len() { n } else { 0 },
            }
        })
    }
}

/// Whether every byte of `b` is admitted: sixteen at a time against `ranges` where it
/// can, else one at a time against the bitmap.
#[inline]
pub(super) fn run_admits(b: &[u8], admitted: &[u64; 2], ranges: &[(u8, u8)]) -> bool {
    let one_by_one = |b: &[u8]| {
        b.iter()
            .all(|&c| c < 128 && admitted[usize::from(c >> 6)] & (1 << (c & 63)) != 0)
    };
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if !ranges.is_empty() && b.len() >= 16 {
        // Sixteen-byte windows from the start, and one ending at the last byte.
        let mut at = 0;
        while let Some(chunk) = b.get(at..).and_then(<[u8]>::first_chunk::<16>) {
            if !in_ranges16(chunk, ranges) {
                return false;
            }
            at += 16;
        }
        return at == b.len() || b.last_chunk::<16>().is_some_and(|c| in_ranges16(c, ranges));
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    let _ = ranges;
    one_by_one(b)
}

/// Whether each of the sixteen bytes lies in one of `ranges` (ASCII ranges).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn in_ranges16(chunk: &[u8; 16], ranges: &[(u8, u8)]) -> bool {
    use safe_arch::{
        bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, min_u8_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i, sub_i8_m128i, zeroed_m128i,
    };
    let v = load_unaligned_m128i(chunk);
    let mut inside = zeroed_m128i();
    for &(lo, hi) in ranges {
        // `v - lo`, wrapping, is at most `hi - lo` exactly for the bytes in the range.
        let d = sub_i8_m128i(v, set_splat_i8_m128i(lo as i8));
        let span = set_splat_i8_m128i((hi - lo) as i8);
        inside = bitor_m128i(inside, cmp_eq_mask_i8_m128i(min_u8_m128i(d, span), d));
    }
    move_mask_i8_m128i(inside) == 0xffff
}

/// `^[class]{min,max}$` (or `{n}`, `+`, `*`) where the class holds only ASCII letters,
/// digits and ranges between them: the bytes admitted and the length bounds.
fn run_pattern(pattern: &str) -> Option<([u64; 2], usize, usize)> {
    let body = pattern.strip_prefix("^[")?.strip_suffix('$')?;
    let (class, quantifier) = body.split_once(']')?;
    let (min, max) = match quantifier {
        "+" => (1, usize::MAX),
        "*" => (0, usize::MAX),
        q => {
            let q = q.strip_prefix('{')?.strip_suffix('}')?;
            let bound = |t: &str| {
                (!t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
                    .then(|| t.parse::<usize>().ok())
                    .flatten()
            };
            match q.split_once(',') {
                None => (bound(q)?, bound(q)?),
                Some((lo, hi)) => (bound(lo)?, bound(hi)?),
            }
        }
    };
    let mut admitted = [0u64; 2];
    let mut admit = |c: u8| admitted[usize::from(c >> 6)] |= 1 << (c & 63);
    let bytes = class.as_bytes();
    if bytes.is_empty() || min > max {
        return None;
    }
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if !c.is_ascii_alphanumeric() {
            return None;
        }
        match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(b'-'), Some(&end)) => {
                // A range within one kind: digits, lower- or upper-case letters.
                let same_kind = (c.is_ascii_digit() && end.is_ascii_digit())
                    || (c.is_ascii_lowercase() && end.is_ascii_lowercase())
                    || (c.is_ascii_uppercase() && end.is_ascii_uppercase());
                if !same_kind || end < c {
                    return None;
                }
                (c..=end).for_each(&mut admit);
                i += 3;
            }
            (Some(b'-'), None) => return None,
            _ => {
                admit(c);
                i += 1;
            }
        }
    }
    Some((admitted, min, max))
}

/// Whether `b` is an RFC 3339 date-time in UTC with an upper-case `T` and `Z`, a valid
/// calendar date and a second below 60: a subset of what jsonschema's `date-time`
/// accepts (leap seconds, offsets and lower-case letters are left to it).
pub(super) fn utc_date_time(b: &[u8]) -> bool {
    let digits = |range: std::ops::Range<usize>| {
        b.get(range).and_then(|d| {
            d.iter().try_fold(0u32, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        })
    };
    let punctuation = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if b.len() < 20
        || b.last() != Some(&b'Z')
        || punctuation.iter().any(|&(at, c)| b.get(at) != Some(&c))
    {
        return false;
    }
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return false;
    };
    let (Some(hour), Some(minute), Some(second)) = (digits(11..13), digits(14..16), digits(17..19))
    else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    // After the seconds: `Z` alone, or a fraction of at least one digit and then `Z`.
    let rest = &b[19..b.len() - 1];
    let fraction_ok = rest.is_empty()
        || (rest.len() >= 2 && rest[0] == b'.' && rest[1..].iter().all(u8::is_ascii_digit));
    (1..=month_days).contains(&day) && hour < 24 && minute < 60 && second < 60 && fraction_ok
}
