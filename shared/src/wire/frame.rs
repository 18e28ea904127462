//! Frames: the version and flags bytes, postcard, and LZ4 when it saves
//! enough; encoded through buffers each thread keeps, decoded from untrusted
//! bytes with every size checked first, into payloads whose byte strings the
//! decoded events share.

use super::{FLAG_LZ4, KNOWN_FLAGS, WIRE_VERSION, WireError, WireLimits};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Encodes `msg` (at most about `size_hint` bytes of postcard) as a frame. The
/// postcard bytes and the LZ4 output are written into buffers this thread keeps
/// between frames, and the frame is copied once into an allocation of its final
/// size: a batch is half a megabyte, and fresh buffers of that size (zeroed, or
/// grown by doubling) cost more than the copy.
pub(super) fn encode<T: Serialize>(msg: &T, size_hint: usize, compress: bool) -> Vec<u8> {
    // postcard cannot fail to serialize these types into a Vec: they hold no maps with non-string keys,
    // no unsized sequences and no custom serializers that error.
    if !compress {
        let mut out = Vec::with_capacity(2 + size_hint);
        out.extend_from_slice(&[WIRE_VERSION, 0]);
        return postcard::serialize_with_flavor(msg, VecOut(out)).unwrap_or_default();
    }
    with_scratch(&ENCODE_SCRATCH, |[body, packed]| {
        body.clear();
        body.reserve(size_hint);
        let Ok(encoded) = postcard::serialize_with_flavor(msg, VecOut(std::mem::take(body))) else {
            return Vec::new();
        };
        *body = encoded;
        let bound = lz4_flex::block::get_maximum_output_size(body.len());
        if packed.len() < bound {
            packed.resize(bound, 0);
        }
        // The buffer holds the most LZ4 can produce, so compressing into it cannot fail.
        let written = lz4_flex::block::compress_into(body, packed).unwrap_or_default();
        if written == 0 || written + 4 > body.len() - body.len() / COMPRESSION_WORTH {
            // Too little saved to be worth decompressing: the plain bytes go instead.
            let mut out = Vec::with_capacity(2 + body.len());
            out.extend_from_slice(&[WIRE_VERSION, 0]);
            out.extend_from_slice(body);
            return out;
        }
        let header = 6;
        let mut out = Vec::with_capacity(header + written);
        out.extend_from_slice(&[WIRE_VERSION, FLAG_LZ4]);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&packed[..written]);
        out
    })
}

/// postcard output appended to a `Vec`, byte strings copied whole (postcard's own
/// `Vec` output extends from an iterator, a byte at a time).
struct VecOut(Vec<u8>);

impl postcard::ser_flavors::Flavor for VecOut {
    type Output = Vec<u8>;

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // Varints (lengths, times) come a few bytes at a time: pushed, not handed to
        // `memcpy`, whose call costs more than the copy (9% of a hasty edge's CPU,
        // sampled with perf, went to such calls).
        if data.len() <= 10 {
            data.iter().for_each(|&b| self.0.push(b));
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// A compressed frame goes only when LZ4 saves at least 1/`COMPRESSION_WORTH` of
/// the bytes; otherwise the frame is sent plain.
const COMPRESSION_WORTH: usize = 8;

/// Whether `frame` is LZ4-compressed (an encoder asked to compress sends plain
/// frames of what LZ4 cannot shrink).
pub fn frame_is_compressed(frame: &[u8]) -> bool {
    frame.get(1).is_some_and(|f| f & FLAG_LZ4 != 0)
}

/// Scratch buffers a thread reuses for encoding (postcard bytes, LZ4 output).
/// Measured with `cargo bench -p sluice-shared --bench intake`, three runs alternating with the reuse turned off, 2 cores:
/// encoding 500 events of 1 KB with LZ4 goes 18% faster with them kept (1.74M
/// against 1.47M events/s); plain frames do not use them.
type Scratch = std::cell::Cell<[Vec<u8>; 2]>;

thread_local! {
    static ENCODE_SCRATCH: Scratch = const { std::cell::Cell::new([Vec::new(), Vec::new()]) };
}

/// Scratch kept between frames is at most this big; a larger one is let go after use.
const SCRATCH_KEEP: usize = 4 << 20;

/// Runs `f` on this thread's scratch buffers: they are taken out for the call
/// and put back after it (fresh ones serve a thread being torn down).
fn with_scratch<R>(
    key: &'static std::thread::LocalKey<Scratch>,
    f: impl FnOnce(&mut [Vec<u8>; 2]) -> R,
) -> R {
    let mut bufs = key.try_with(|cell| cell.take()).unwrap_or_default();
    let result = f(&mut bufs);
    for b in &mut bufs {
        if b.capacity() > SCRATCH_KEEP {
            *b = Vec::new();
        }
    }
    let _ = key.try_with(|cell| cell.replace(bufs));
    result
}

/// buffer holding the payload.
pub(super) fn decode<T: for<'de> Deserialize<'de>>(
    frame: &[u8],
    limits: &WireLimits,
    share: bool,
) -> Result<T, WireError> {
    if frame.len() > limits.max_frame_bytes {
        return Err(WireError::TooLarge {
            what: "frame",
            size: frame.len(),
            limit: limits.max_frame_bytes,
        });
    }
    let [version, flags, rest @ ..] = frame else {
        return Err(WireError::Truncated(frame.len()));
    };
    if *version != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion { found: *version });
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err(WireError::UnknownFlags(*flags));
    }
    if flags & FLAG_LZ4 == 0 {
        if !share {
            return take_all(rest);
        }
        return take_shared(Bytes::copy_from_slice(rest));
    }
    let [a, b, c, d, payload @ ..] = rest else {
        return Err(WireError::Truncated(frame.len()));
    };
    let size = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
    if size > limits.max_frame_bytes {
        return Err(WireError::TooLarge {
            what: "decompressed payload",
            size,
            limit: limits.max_frame_bytes,
        });
    }
    // A fresh, zeroed buffer: nothing of an earlier frame can show through.
    let mut body = vec![0; size];
    match lz4_flex::block::decompress_into(payload, &mut body) {
        Err(e) => Err(WireError::Compression(e.to_string())),
        Ok(n) if n != size => Err(WireError::Compression(format!(
            "{n} bytes, not the {size} stated"
        ))),
        Ok(_) => take_shared(Bytes::from(body)),
    }
}

/// Decodes the whole of `payload`, letting events' JSON share its buffer.
fn take_shared<T: for<'de> Deserialize<'de>>(payload: Bytes) -> Result<T, WireError> {
    let previous = SHARED_PAYLOAD.with(|p| p.replace(Some(payload.clone())));
    let result = take_all(&payload);
    SHARED_PAYLOAD.with(|p| p.replace(previous));
    result
}

thread_local! {
    /// The payload being decoded on this thread: byte strings borrowed from it become
    /// slices of it instead of copies. Not a cache but the decoder's context, which
    /// serde's field functions cannot be handed any other way; it is set for one
    /// decode and put back after it.
    pub(super) static SHARED_PAYLOAD: std::cell::RefCell<Option<Bytes>> = const { std::cell::RefCell::new(None) };
}

fn take_all<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, WireError> {
    let (msg, extra) =
        postcard::take_from_bytes::<T>(body).map_err(|e| WireError::Payload(e.to_string()))?;
    if !extra.is_empty() {
        return Err(WireError::Payload(format!(
            "{} bytes after the message",
            extra.len()
        )));
    }
    Ok(msg)
}
