//! A named consumer's committed position in a topic, kept on disk beside the
//! topic's segments, as Kafka keeps a consumer group's offsets: the offset of
//! the next record the consumer has not finished with.

use crate::LogError;
use crate::error::io_err;
use crate::segment::sync_dir;
use crate::valid_topic;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Extension of position files.
const POSITION_EXT: &str = "position";

/// Where one consumer stands in one topic.
#[derive(Debug, Clone)]
pub struct ConsumerPosition {
    dir: PathBuf,
    path: PathBuf,
}

impl ConsumerPosition {
    /// The position of `consumer` in `topic` of the log in `log_dir`.
    pub fn new(log_dir: &Path, topic: &str, consumer: &str) -> Result<Self, LogError> {
        if !valid_topic(topic) {
            return Err(LogError::BadTopic(topic.to_owned()));
        }
        if !valid_topic(consumer) || consumer.len() > 200 {
            return Err(LogError::BadConsumer(consumer.to_owned()));
        }
        let dir = log_dir.join(topic);
        let path = dir.join(format!("{consumer}.{POSITION_EXT}"));
        Ok(ConsumerPosition { dir, path })
    }

    /// The committed offset, if the consumer has committed one.
    pub fn load(&self) -> Result<Option<u64>, LogError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &self.path)(e)),
        };
        text.trim()
            .parse()
            .map(Some)
            .map_err(|e| LogError::BadPosition {
                path: self.path.clone(),
                why: format!("{e}"),
            })
    }

    /// Commits `offset`: the file is replaced whole, so a crash leaves the old
    /// position or the new one. With `durable`, both the file and its folder
    /// entry are synced before this returns; without, a crash may lose the
    /// latest commit (and the consumer reads a little again).
    pub fn commit(&self, offset: u64, durable: bool) -> Result<(), LogError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        let tmp = self.path.with_extension(format!("{POSITION_EXT}.new"));
        let mut file = std::fs::File::create(&tmp).map_err(io_err("writing", &tmp))?;
        file.write_all(format!("{offset}\n").as_bytes())
            .map_err(io_err("writing", &tmp))?;
        if durable {
            file.sync_data().map_err(io_err("syncing", &tmp))?;
        }
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(io_err("replacing", &self.path))?;
        if durable {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}
