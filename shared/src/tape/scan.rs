//! Byte scans over JSON text: finding the first quote, backslash or control
//! byte sixteen bytes a step (SSE2 on x86_64, words of SWAR tests elsewhere),
//! reading digits, comparing short keys a word at a time, and writing a
//! string as a JSON literal.

/// Bytes that end the fast scan of a string: quote, backslash and control characters.
pub(super) static SPECIAL: [bool; 256] = {
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
pub(super) fn special16(chunk: &[u8; 16]) -> u32 {
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
pub(super) fn special16(chunk: &[u8; 16]) -> u32 {
    special16_words(chunk)
}

/// [`special16`] two words at a time, where SSE2 is missing; only its lowest bit is set.
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse2", not(test)),
    allow(dead_code)
)]
#[inline(always)]
pub(super) fn special16_words(chunk: &[u8; 16]) -> u32 {
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
pub(super) fn scan_plain(bytes: &[u8], mut i: usize) -> usize {
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
pub(super) fn integer_at(bytes: &[u8], mut i: usize) -> (usize, u64) {
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
pub(super) fn key_bit(fp: u64) -> u128 {
    1u128 << (fp.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 57)
}

/// Length and first seven bytes of a key: unequal fingerprints mean unequal keys.
#[inline(always)]
pub(super) fn fingerprint(b: &[u8]) -> u64 {
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
