//! The edge-to-aggregator wire format: one frame per batch and one per
//! acknowledgement. A frame is a format-version byte, a flags byte, then the
//! message encoded with postcard 1; with the LZ4 flag set, the postcard bytes
//! are LZ4 block-compressed behind their decompressed length (u32, little
//! endian). Decoding takes untrusted bytes: every size is checked against
//! [`WireLimits`] before memory is spent on it, and nothing panics.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The frame format this build writes and reads.
pub const WIRE_VERSION: u8 = 2;
const FLAG_LZ4: u8 = 0b0000_0001;
const KNOWN_FLAGS: u8 = FLAG_LZ4;

/// One accepted, enriched event on its way to the aggregator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchEvent {
    /// Stream name. Shared: a stream's events hold one string between them.
    #[serde(with = "shared_str")]
    pub stream: Arc<str>,
    /// Kafka topic (or embedded log topic).
    #[serde(with = "shared_str")]
    pub topic: Arc<str>,
    /// Kafka message key, from the stream's `partition_key`.
    pub partition_key: Option<String>,
    /// Key for per-client rate limits, when the stream has one.
    pub rate_key: Option<String>,
    /// Event id for dedupe: `meta.id` as a UUID, or a UUIDv5 of it.
    pub id: [u8; 16],
    /// When the edge received the event, Unix milliseconds.
    pub received_ms: i64,
    /// The event's `meta.dt`, Unix milliseconds (the receive time when the
    /// sender set none): the Kafka record timestamp.
    pub dt_ms: i64,
    /// The `$schema` URI.
    #[serde(with = "shared_str")]
    pub schema_uri: Arc<str>,
    /// Whether the stream is deduplicated.
    pub dedupe: bool,
    /// The enriched event as JSON text. A decoded batch's events share one buffer
    /// (the frame's payload) rather than holding a copy each.
    #[serde(with = "serde_bytes_compat")]
    pub json: Bytes,
}

/// A batch of events from one edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Unique id of the batch, for logs and acknowledgements.
    pub id: [u8; 16],
    /// The events, in the order the edge accepted them.
    pub events: Vec<BatchEvent>,
    /// Events the edge refused, reported for the error stream. They get no
    /// verdicts: the edge has already answered their senders.
    pub errors: Vec<BatchError>,
}

/// An event an edge refused, reported so that it lands on the error stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchError {
    /// The stream the event named, when it named one.
    pub stream: Option<String>,
    /// The `$schema` the event named, when it named one.
    pub schema_uri: Option<String>,
    /// What kind of refusal, e.g. `invalid` or `unknown_stream`.
    pub error_type: String,
    /// Why it was refused.
    pub message: String,
    /// The event as sent, possibly cut short by the edge.
    pub raw_event: String,
    /// When the edge received it, Unix milliseconds.
    pub received_ms: i64,
    /// The request's `x-request-id`, when there was one.
    pub request_id: Option<String>,
}

/// The aggregator's verdict on one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventAck {
    /// Durable in the sink.
    Accepted,
    /// Already seen within the dedupe window; not written again.
    Duplicate,
    /// Over a rate limit; may be retried after this many milliseconds.
    RateLimited {
        /// Milliseconds until a retry can succeed.
        retry_after_ms: u32,
    },
    /// Not written, for this reason.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Verdicts for a batch, in event order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAck {
    /// The batch id being answered.
    pub batch_id: [u8; 16],
    /// One verdict per event, in the batch's order.
    pub verdicts: Vec<EventAck>,
}

/// Bounds on what a decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WireLimits {
    /// Largest frame, and largest decompressed message, in bytes.
    pub max_frame_bytes: usize,
    /// Most events in one batch.
    pub max_events: usize,
    /// Largest event JSON in bytes.
    pub max_event_bytes: usize,
}

impl Default for WireLimits {
    fn default() -> Self {
        WireLimits {
            max_frame_bytes: 16 * 1024 * 1024,
            max_events: 10_000,
            max_event_bytes: 1024 * 1024,
        }
    }
}

/// A frame that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer than the two header bytes.
    #[error("frame is truncated: {0} bytes, shorter than its header")]
    Truncated(usize),
    /// A version this build does not speak.
    #[error("frame format version {found} is not supported (this build speaks {WIRE_VERSION})")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// Unknown flag bits.
    #[error("frame has unknown flags {0:#010b}")]
    UnknownFlags(u8),
    /// Over a size limit.
    #[error("{what} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// More events than allowed.
    #[error("batch has {count} events, over the limit of {limit}")]
    TooManyEvents {
        /// Events in the batch.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// LZ4 data that does not decompress to its stated length.
    #[error("frame's LZ4 payload is corrupt: {0}")]
    Compression(String),
    /// Postcard bytes that are not the message.
    #[error("frame payload is not a valid message: {0}")]
    Payload(String),
    /// The batch's verdict count does not match its events.
    #[error("acknowledgement has {verdicts} verdicts for a batch of {events} events")]
    AckMismatch {
        /// Verdicts received.
        verdicts: usize,
        /// Events sent.
        events: usize,
    },
}

/// Encodes `msg` (at most about `size_hint` bytes of postcard) as a frame. The
/// postcard bytes and the LZ4 output are written into buffers this thread keeps
/// between frames, and the frame is copied once into an allocation of its final
/// size: a batch is half a megabyte, and fresh buffers of that size (zeroed, or
/// grown by doubling) cost more than the copy.
fn encode<T: Serialize>(msg: &T, size_hint: usize, compress: bool) -> Vec<u8> {
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
        self.0.extend_from_slice(data);
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

/// Bytes postcard takes for a length prefix, at most.
const LEN: usize = 5;

impl BatchEvent {
    /// An upper bound of the bytes postcard takes for this event.
    pub fn size_bound(&self) -> usize {
        let text = |s: &Option<String>| 1 + s.as_ref().map_or(0, |s| LEN + s.len());
        3 * LEN
            + self.stream.len()
            + self.topic.len()
            + self.schema_uri.len()
            + text(&self.partition_key)
            + text(&self.rate_key)
            + 16
            + 2 * 10
            + 1
            + LEN
            + self.json.len()
    }
}

impl BatchError {
    /// An upper bound of the bytes postcard takes for this report.
    pub fn size_bound(&self) -> usize {
        let text = |s: &Option<String>| 1 + s.as_ref().map_or(0, |s| LEN + s.len());
        text(&self.stream)
            + text(&self.schema_uri)
            + text(&self.request_id)
            + 3 * LEN
            + self.error_type.len()
            + self.message.len()
            + self.raw_event.len()
            + 10
    }
}

/// Decodes a frame; with `share`, byte strings in the message (events' JSON) share one
/// buffer holding the payload.
fn decode<T: for<'de> Deserialize<'de>>(
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
        let mut body = PAYLOADS.take();
        body.extend_from_slice(rest);
        return take_shared(Bytes::from_owner(Payload(body)));
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
    let mut body = PAYLOADS.take();
    // Zeroed each time, so that nothing of an earlier frame can show through.
    body.resize(size, 0);
    match lz4_flex::block::decompress_into(payload, &mut body) {
        Err(e) => Err(WireError::Compression(e.to_string())),
        Ok(n) if n != size => Err(WireError::Compression(format!(
            "{n} bytes, not the {size} stated"
        ))),
        Ok(_) => take_shared(Bytes::from_owner(Payload(body))),
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
    /// slices of it instead of copies.
    static SHARED_PAYLOAD: std::cell::RefCell<Option<Bytes>> = const { std::cell::RefCell::new(None) };
}

/// Byte buffers kept for reuse: a frame or payload is about half a megabyte, and a
/// fresh allocation of that size costs page faults and zeroing every time.
#[derive(Debug)]
pub struct BufferPool {
    kept: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Buffers kept, at most.
    most: usize,
    /// The largest buffer kept; a larger one is let go.
    largest: usize,
}

impl BufferPool {
    /// A pool keeping up to `most` buffers of at most `largest` bytes.
    pub const fn new(most: usize, largest: usize) -> BufferPool {
        BufferPool {
            kept: std::sync::Mutex::new(Vec::new()),
            most,
            largest,
        }
    }

    /// An empty buffer: a kept one when there is one.
    pub fn take(&self) -> Vec<u8> {
        self.kept
            .lock()
            .ok()
            .and_then(|mut kept| kept.pop())
            .unwrap_or_default()
    }

    /// Gives `buffer` back for reuse (emptied), unless the pool is full or it is too large.
    pub fn put(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() > self.largest {
            return;
        }
        buffer.clear();
        if let Ok(mut kept) = self.kept.lock()
            && kept.len() < self.most
        {
            kept.push(buffer);
        }
    }
}

/// Decoded payloads (a batch of 500 events of 1 KB is about half a megabyte). An
/// aggregator under load holds a dozen or more batches at once; with eight kept, the
/// rest were fresh allocations, and ingest was slower than copying each event.
static PAYLOADS: BufferPool = BufferPool::new(32, 2 << 20);

/// A payload buffer that goes back to [`PAYLOADS`] once the last event sharing it is dropped.
struct Payload(Vec<u8>);

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        PAYLOADS.put(std::mem::take(&mut self.0));
    }
}

/// Decodes the whole of `body` as one message.
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

impl Batch {
    /// Encodes the batch as a frame, LZ4-compressed when `compress` and LZ4 saves
    /// at least an eighth of the bytes ([`frame_is_compressed`] tells which).
    pub fn encode(&self, compress: bool) -> Vec<u8> {
        let bound = 16
            + 2 * LEN
            + self
                .events
                .iter()
                .map(BatchEvent::size_bound)
                .sum::<usize>()
            + self
                .errors
                .iter()
                .map(BatchError::size_bound)
                .sum::<usize>();
        encode(self, bound, compress)
    }

    /// Decodes and checks a batch frame.
    pub fn decode(frame: &[u8], limits: &WireLimits) -> Result<Batch, WireError> {
        let batch: Batch = decode(frame, limits, true)?;
        let count = batch.events.len() + batch.errors.len();
        if count > limits.max_events {
            return Err(WireError::TooManyEvents {
                count,
                limit: limits.max_events,
            });
        }
        if let Some(e) = batch
            .errors
            .iter()
            .find(|e| e.raw_event.len() + e.message.len() > limits.max_event_bytes)
        {
            return Err(WireError::TooLarge {
                what: "error report",
                size: e.raw_event.len() + e.message.len(),
                limit: limits.max_event_bytes,
            });
        }
        if let Some(e) = batch
            .events
            .iter()
            .find(|e| e.json.len() > limits.max_event_bytes)
        {
            return Err(WireError::TooLarge {
                what: "event",
                size: e.json.len(),
                limit: limits.max_event_bytes,
            });
        }
        Ok(batch)
    }
}

impl BatchAck {
    /// Encodes the acknowledgement as a frame.
    pub fn encode(&self) -> Vec<u8> {
        encode(self, 16 + LEN + 8 * self.verdicts.len(), false)
    }

    /// Decodes an acknowledgement and checks it answers every event of `batch`.
    pub fn decode_for(
        frame: &[u8],
        batch: &Batch,
        limits: &WireLimits,
    ) -> Result<BatchAck, WireError> {
        let ack: BatchAck = decode(frame, limits, false)?;
        if ack.verdicts.len() != batch.events.len() || ack.batch_id != batch.id {
            return Err(WireError::AckMismatch {
                verdicts: ack.verdicts.len(),
                events: batch.events.len(),
            });
        }
        Ok(ack)
    }

    /// Decodes an acknowledgement frame.
    pub fn decode(frame: &[u8], limits: &WireLimits) -> Result<BatchAck, WireError> {
        decode(frame, limits, false)
    }
}

/// Byte strings as postcard's compact byte sequences rather than lists of numbers.
/// Decoding borrows them from the payload being decoded where it can (see
/// [`take_shared`]), and copies them otherwise.
mod serde_bytes_compat {
    use super::SHARED_PAYLOAD;
    use bytes::Bytes;
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct Shared;
        impl<'de> Visitor<'de> for Shared {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_borrowed_bytes<E: Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
                let shared = SHARED_PAYLOAD.with(|p| {
                    let p = p.borrow();
                    let payload = p.as_ref()?;
                    let range = payload.as_ptr_range();
                    // Only a subslice of the payload can be a slice of it.
                    (range.start <= v.as_ptr() && v.as_ptr_range().end <= range.end)
                        .then(|| payload.slice_ref(v))
                });
                Ok(shared.unwrap_or_else(|| Bytes::copy_from_slice(v)))
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::copy_from_slice(v))
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
        }
        d.deserialize_bytes(Shared)
    }
}

/// Shared strings (`Arc<str>`) as plain strings on the wire. Decoding keeps the last
/// few distinct strings decoded on each thread and hands out one of those when it
/// matches, so a batch's events share their stream, topic and schema URI rather than
/// each holding copies.
mod shared_str {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};
    use std::cell::RefCell;
    use std::fmt;
    use std::sync::Arc;

    /// How many recent strings each thread keeps: a batch seldom mixes more streams.
    const KEPT: usize = 16;
    /// Longer strings are not kept: comparing them costs more than copying.
    const LONGEST_KEPT: usize = 256;

    thread_local! {
        static RECENT: RefCell<(Vec<Arc<str>>, usize)> = const { RefCell::new((Vec::new(), 0)) };
    }

    pub fn serialize<S: Serializer>(text: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(text)
    }

    /// `text` as a shared string: one kept on this thread if equal, else a new one (kept).
    pub(super) fn share(text: &str) -> Arc<str> {
        if text.len() > LONGEST_KEPT {
            return text.into();
        }
        RECENT
            .try_with(|recent| {
                let Ok(mut recent) = recent.try_borrow_mut() else {
                    return text.into();
                };
                let (kept, next) = &mut *recent;
                if let Some(found) = kept.iter().find(|k| ***k == *text) {
                    return found.clone();
                }
                let new: Arc<str> = text.into();
                if kept.len() < KEPT {
                    kept.push(new.clone());
                } else {
                    kept[*next] = new.clone();
                    *next = (*next + 1) % KEPT;
                }
                new
            })
            .unwrap_or_else(|_| text.into())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        struct Shared;
        impl Visitor<'_> for Shared {
            type Value = Arc<str>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Arc<str>, E> {
                Ok(share(v))
            }
        }
        d.deserialize_str(Shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(n: u8, json: &str) -> BatchEvent {
        BatchEvent {
            stream: "test.event".into(),
            topic: "local.test.event".into(),
            partition_key: Some("k".into()),
            rate_key: None,
            id: [n; 16],
            received_ms: 1_764_000_000_000,
            dt_ms: 1_764_000_000_000,
            schema_uri: "/test/event/1.0.0".into(),
            dedupe: true,
            json: json.as_bytes().to_vec().into(),
        }
    }

    #[test]
    fn round_trips_plain_and_compressed() {
        let batch = Batch {
            id: [9; 16],
            events: (0..100)
                .map(|i| {
                    event(
                        i,
                        r#"{"$schema":"/test/event/1.0.0","meta":{"stream":"test.event"}}"#,
                    )
                })
                .collect(),
            errors: Vec::new(),
        };
        let limits = WireLimits::default();
        let plain = batch.encode(false);
        let packed = batch.encode(true);
        assert!(
            packed.len() < plain.len() / 4,
            "{} vs {}",
            packed.len(),
            plain.len()
        );
        assert_eq!(Batch::decode(&plain, &limits).unwrap(), batch);
        assert_eq!(Batch::decode(&packed, &limits).unwrap(), batch);
        assert!(frame_is_compressed(&packed) && !frame_is_compressed(&plain));
        let ack = BatchAck {
            batch_id: batch.id,
            verdicts: (0..100)
                .map(|_| EventAck::RateLimited { retry_after_ms: 5 })
                .collect(),
        };
        assert_eq!(
            BatchAck::decode_for(&ack.encode(), &batch, &limits).unwrap(),
            ack
        );
    }

    #[test]
    fn decoded_events_share_their_stream_topic_and_schema_strings() {
        let batch_of = |streams: usize| Batch {
            id: [3; 16],
            events: (0..120u8)
                .map(|i| {
                    // Every 50th name is too long to keep.
                    let stream: Arc<str> = if i % 50 == 7 {
                        "s".repeat(300).into()
                    } else {
                        format!("stream.{}", usize::from(i) % streams).into()
                    };
                    BatchEvent {
                        topic: format!("local.{stream}").into(),
                        stream,
                        ..event(i, "{}")
                    }
                })
                .collect(),
            errors: Vec::new(),
        };
        let limits = WireLimits::default();
        // Three streams: events of one stream hold one string between them.
        let three = batch_of(3);
        for lz4 in [false, true] {
            let decoded = Batch::decode(&three.encode(lz4), &limits).unwrap();
            assert_eq!(decoded, three);
            let e = &decoded.events;
            assert!(Arc::ptr_eq(&e[0].stream, &e[3].stream));
            assert!(Arc::ptr_eq(&e[1].topic, &e[100].topic));
            assert!(Arc::ptr_eq(&e[0].schema_uri, &e[119].schema_uri));
            assert!(!Arc::ptr_eq(&e[7].stream, &e[57].stream));
        }
        // Forty streams, more than a thread keeps: every string still decodes as sent.
        let forty = batch_of(40);
        assert_eq!(Batch::decode(&forty.encode(false), &limits).unwrap(), forty);
    }

    #[test]
    fn buffer_pools_keep_few_and_small_buffers_emptied() {
        let pool = BufferPool::new(2, 1024);
        for _ in 0..3 {
            pool.put(Vec::with_capacity(100));
        }
        pool.put(Vec::with_capacity(4096));
        let mut a = pool.take();
        let b = pool.take();
        assert!(a.is_empty() && a.capacity() >= 100 && b.capacity() >= 100);
        assert_eq!(
            pool.take().capacity(),
            0,
            "only two were kept, and not the large one"
        );
        a.extend_from_slice(b"left over");
        pool.put(a);
        assert!(pool.take().is_empty());
    }

    #[test]
    fn frames_hold_postcards_own_bytes() {
        let batch = Batch {
            id: [6; 16],
            events: (0..30).map(|i| event(i, r#"{"a":"b"}"#)).collect(),
            errors: Vec::new(),
        };
        let frame = batch.encode(false);
        assert_eq!(frame[..2], [WIRE_VERSION, 0]);
        assert_eq!(frame[2..], postcard::to_allocvec(&batch).unwrap());
    }

    #[test]
    fn decoded_events_share_the_payload() {
        let batch = Batch {
            id: [4; 16],
            events: (0..20)
                .map(|i| event(i, &format!(r#"{{"n":{i},"text":"{}"}}"#, "xy".repeat(50))))
                .collect(),
            errors: Vec::new(),
        };
        for compress in [false, true] {
            let frame = batch.encode(compress);
            let decoded = Batch::decode(&frame, &WireLimits::default()).unwrap();
            assert_eq!(decoded, batch);
            // Every event's JSON lies in one buffer, laid out as in the plain frame.
            let plain = batch.encode(false);
            let at = |json: &[u8]| plain.windows(json.len()).position(|w| w == json).unwrap();
            let base = decoded.events[0].json.as_ptr() as usize;
            for e in &decoded.events {
                assert_eq!(
                    e.json.as_ptr() as usize - base,
                    at(&e.json) - at(&decoded.events[0].json),
                    "compress={compress}"
                );
            }
            // Bytes outside any payload are copied, not borrowed.
            SHARED_PAYLOAD.with(|p| assert!(p.borrow().is_none()));
        }
    }

    #[test]
    fn what_lz4_cannot_shrink_goes_plain() {
        // Events of random hex: LZ4 finds next to nothing to repeat.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let events: Vec<BatchEvent> = (0..50)
            .map(|i| {
                let noise: String = (0..900)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        char::from(b"0123456789abcdef"[(state & 15) as usize])
                    })
                    .collect();
                event(i, &format!(r#"{{"message":"{noise}"}}"#))
            })
            .collect();
        let batch = Batch {
            id: [3; 16],
            events,
            errors: Vec::new(),
        };
        let frame = batch.encode(true);
        assert!(!frame_is_compressed(&frame));
        assert_eq!(frame, batch.encode(false));
        assert_eq!(
            Batch::decode(&frame, &WireLimits::default()).unwrap(),
            batch
        );
    }

    #[test]
    fn refuses_bad_frames_with_reasons() {
        let limits = WireLimits::default();
        let good = Batch {
            id: [1; 16],
            events: vec![event(1, "{}")],
            errors: Vec::new(),
        }
        .encode(false);
        assert_eq!(Batch::decode(&[], &limits), Err(WireError::Truncated(0)));
        let mut v9 = good.clone();
        v9[0] = 9;
        assert_eq!(
            Batch::decode(&v9, &limits),
            Err(WireError::UnsupportedVersion { found: 9 })
        );
        assert!(matches!(
            Batch::decode(&good[..good.len() - 3], &limits),
            Err(WireError::Payload(_))
        ));
        let mut extra = good.clone();
        extra.push(0);
        assert!(matches!(
            Batch::decode(&extra, &limits),
            Err(WireError::Payload(_))
        ));
        // A compressed frame that claims 4 GiB is refused before any allocation.
        let bomb = [WIRE_VERSION, FLAG_LZ4, 0xff, 0xff, 0xff, 0xff, 0x00];
        assert!(matches!(
            Batch::decode(&bomb, &limits),
            Err(WireError::TooLarge {
                what: "decompressed payload",
                ..
            })
        ));
        let few = WireLimits {
            max_events: 0,
            ..limits
        };
        assert_eq!(
            Batch::decode(&good, &few),
            Err(WireError::TooManyEvents { count: 1, limit: 0 })
        );
        let small = WireLimits {
            max_event_bytes: 1,
            ..limits
        };
        assert!(matches!(
            Batch::decode(&good, &small),
            Err(WireError::TooLarge { what: "event", .. })
        ));
    }

    proptest! {
        #[test]
        fn batches_round_trip(
            ids in proptest::collection::vec(any::<[u8; 16]>(), 0..20),
            json in "\\PC{0,64}",
            key in proptest::option::of("\\PC{0,16}"),
            compress in any::<bool>(),
        ) {
            let batch = Batch {
                id: [7; 16],
                events: ids.iter().map(|id| BatchEvent { id: *id, partition_key: key.clone(), json: json.clone().into_bytes().into(), ..event(0, "") }).collect(),
                errors: Vec::new(),
            };
            prop_assert_eq!(Batch::decode(&batch.encode(compress), &WireLimits::default()).unwrap(), batch);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), version in 0u8..3, flags in 0u8..3) {
            let mut frame = vec![version, flags];
            frame.extend_from_slice(&bytes);
            let _ = Batch::decode(&frame, &WireLimits::default());
            let _ = BatchAck::decode(&frame, &WireLimits::default());
            let _ = Batch::decode(&bytes, &WireLimits::default());
        }

        #[test]
        fn decoding_corrupted_frames_never_panics(flip in 0usize..4096, bit in 0u8..8, compress in any::<bool>()) {
            let batch = Batch { id: [3; 16], events: (0..8).map(|i| event(i, r#"{"a":[1,2,3],"b":"text text text"}"#)).collect(), errors: Vec::new() };
            let mut frame = batch.encode(compress);
            let i = flip % frame.len();
            frame[i] ^= 1 << bit;
            let _ = Batch::decode(&frame, &WireLimits::default());
        }
    }
}
