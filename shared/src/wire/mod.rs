//! The edge-to-aggregator wire format: one frame per batch and one per
//! acknowledgement. A frame is a format-version byte, a flags byte, then the
//! message encoded with postcard 1; with the LZ4 flag set, the postcard bytes
//! are LZ4 block-compressed behind their decompressed length (u32, little
//! endian). Decoding takes untrusted bytes: every size is checked against
//! [`WireLimits`] before memory is spent on it, and nothing panics.

mod fields;
mod frame;
#[cfg(test)]
mod tests;

pub use frame::frame_is_compressed;

use bytes::Bytes;
use fields::{serde_bytes_compat, shared_str};
use frame::{decode, encode};
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
