//! What can go wrong with a log, each with what to do about it.

use std::io;
use std::path::{Path, PathBuf};

/// What can go wrong with the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A filesystem call failed.
    #[error("log: {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A topic name that is not a Kafka topic name.
    #[error(
        "`{0}` is not a valid topic name: use 1 to 249 of a-z, A-Z, 0-9, `.`, `_` and `-`, and not `.` or `..`"
    )]
    BadTopic(String),
    /// A consumer name that cannot name a position file.
    #[error(
        "`{0}` is not a valid consumer name: use 1 to 200 of a-z, A-Z, 0-9, `.`, `_` and `-`, and not `.` or `..`"
    )]
    BadConsumer(String),
    /// A record over the size limit.
    #[error("a record of {size} bytes is over the log's limit of {limit} bytes")]
    RecordTooLarge {
        /// The record body's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A record that postcard could not encode.
    #[error("a record could not be encoded: {0}")]
    Encode(String),
    /// Damage before the last segment's tail, which recovery does not guess about.
    #[error("log segment {} is damaged at byte {at}: {why}; move it aside to start without it", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the damage.
        at: u64,
        /// What was found.
        why: String,
    },
    /// A consumer's position file that does not hold an offset.
    #[error("consumer position {} does not hold an offset ({why}); delete it to start the consumer over", path.display())]
    BadPosition {
        /// The file.
        path: PathBuf,
        /// What it holds instead.
        why: String,
    },
}

/// Wraps an I/O error with what was being done, and where.
pub(crate) fn io_err<'p>(
    action: &'static str,
    path: &'p Path,
) -> impl FnOnce(io::Error) -> LogError + 'p {
    move |source| LogError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
