//! Where a sink reads: Kafka through a consumer group, or the embedded log
//! through one reader per topic. Both hand over records in order per
//! partition and start every partition they are given at the position the
//! store holds, found through a [`Lookup`] at start and on every assignment.

mod kafka;
mod log;

pub use kafka::KafkaSource;
pub use log::LogSource;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A topic and a partition (always 0 in the embedded log).
pub type Tp = (Arc<str>, i32);

/// One record read.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// Its topic.
    pub topic: Arc<str>,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its timestamp (`meta.dt`), Unix milliseconds.
    pub timestamp_ms: i64,
    /// The `schema_uri` header, when it has one.
    pub schema_uri: Option<String>,
    /// The event, as JSON.
    pub value: Vec<u8>,
}

/// The positions the store holds for these partitions: the next offset to
/// write, or `None` where the sink has written nothing yet.
pub type Lookup = Box<dyn FnMut(&[Tp]) -> Result<Vec<Option<i64>>, String> + Send>;

/// Whether a topic found in the source (not named at start) is one the sink takes.
pub type Discover = Box<dyn Fn(&str) -> bool + Send>;

/// A new set of partitions and where each starts.
pub type Assignment = HashMap<Tp, Option<i64>>;

/// A source that failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The embedded log cannot be read.
    #[error("the embedded log: {0}")]
    Log(#[from] sluice_log::LogError),
    /// Kafka refused or failed.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The store's positions could not be read.
    #[error("reading the positions from the store: {0}")]
    Positions(String),
}

/// What a sink reads from.
pub trait Source: Send {
    /// Up to `max` records, waiting at most `wait` for the first.
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<SourceRecord>, SourceError>;
    /// The partitions and start positions given since the last call, if they changed.
    fn take_assignment(&mut self) -> Option<Assignment>;
    /// Moves every partition back to the position the store holds (after a
    /// write that failed or lost a race), and returns them.
    fn rewind(&mut self) -> Result<Assignment, SourceError>;
    /// Stops reading `topic` (its stream cannot be written).
    fn pause(&mut self, topic: &str);
    /// The end of every partition read: the offset after its last record.
    fn ends(&mut self) -> Vec<(Tp, i64)>;
    /// Tells the source's own bookkeeping that the store holds these positions
    /// (Kafka: the group's committed offsets, for tools that watch them).
    fn written(&mut self, _positions: &[(Tp, i64)]) {}
    /// Before the source is dropped: what `written` was told of and has not passed on yet
    /// is passed on now.
    fn close(&mut self) {}
}
