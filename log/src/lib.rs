//! Sluice's durable append store: the embedded log an aggregator writes when
//! no Kafka is configured, the edge's spool, and the journal of delivered
//! ids all sit on it, and connectors and processors read it.
//!
//! It knows topics and bytes, not events. A [`Log`] owns every topic under
//! one folder and is the only writer; a [`Reader`] follows one topic, in
//! this process or another, and a [`ConsumerPosition`] keeps a named
//! consumer's committed offset on disk, as a Kafka consumer group keeps its
//! offsets.
//!
//! # Format
//!
//! ```text
//! <dir>/<topic>/<base offset, 20 digits>.log    segments, oldest first
//! <dir>/<topic>/<consumer>.position             a consumer's next offset, as decimal text
//! ```
//!
//! A topic name is a Kafka topic name (1 to 249 of `a-z A-Z 0-9 . _ -`, not
//! `.` or `..`), so it is also a safe folder name. A segment is named by the
//! offset of its first record and holds frames back to back:
//!
//! ```text
//! u32 LE  length of the body
//! u32 LE  CRC-32 (IEEE) of the body
//! body    postcard 1 of (timestamp_ms: i64, key: Option<bytes>,
//!                        headers: [(string, bytes)], value: bytes)
//! ```
//!
//! Appends only write; [`Log::sync`] makes everything appended so far durable
//! with one `fsync` per written file, so a caller commits many batches as a
//! group and acknowledges them after one sync. After each sync the writer
//! publishes, in the topic's `synced` file, the offset after the last durable
//! record; a [`Reader`] (in any process) reads no further, so it never hands
//! on a record a machine crash could still take back or a failed sync could
//! cut off. Opening a log recovers it: a
//! torn or corrupt tail of a topic's last segment (a crash mid-write) is cut
//! off and every record before it kept; damage in an older segment is
//! refused (or, for stores that prefer to go on, skipped with an error
//! line; see [`Damage`]). A segment rolls once it holds
//! [`LogOptions::segment_bytes`]; retention deletes closed segments by age
//! ([`Log::delete_segments_before`]) or once consumed ([`Log::trim`]).

mod error;
mod frame;
mod position;
mod reader;
mod record;
mod segment;
mod store;
mod topic;

pub use error::LogError;
pub use position::ConsumerPosition;
pub use reader::{Reader, Start};
pub use record::{LogRecord, NewRecord};
pub use store::{Log, LogMark};

/// Settings of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
    /// Largest record body accepted, in bytes.
    pub max_record_bytes: usize,
    /// What opening does with damage before a topic's last segment.
    pub damage: Damage,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 256 * 1024 * 1024,
            max_record_bytes: 16 * 1024 * 1024,
            damage: Damage::Refuse,
        }
    }
}

/// What to do with a damaged segment that is not a topic's last (the last
/// one's torn tail is always cut: that is what a crash mid-write leaves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Refuse to open: an operator should look before anything is lost.
    Refuse,
    /// Keep the segment's readable records, log what follows them as lost,
    /// and go on; readers pass over the damaged part.
    Skip,
}

/// Whether `name` is a topic name Kafka would accept (and so a safe folder name).
pub fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
