//! The names of the headers every record in Kafka or the embedded log
//! carries, which downstream readers (connectors, processors, `sluice tail`)
//! rely on.

/// The event's `$schema` URI.
pub const SCHEMA_URI: &str = "schema_uri";
/// The event's 16-byte id (`meta.id` as a UUID's bytes).
pub const EVENT_ID: &str = "event_id";
/// The stream the event belongs to.
pub const STREAM: &str = "stream";
/// When the aggregator received the event (Unix milliseconds, little-endian
/// i64): on embedded-log records whose timestamp, `meta.dt`, differs from it.
pub const RECEIVED_MS: &str = "received_ms";
