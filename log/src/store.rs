//! The log of every topic under one folder, as its one writer holds it:
//! append, sync, cut back a failed group, read, and retention.

use crate::error::io_err;
use crate::frame::{FRAME_HEADER, FrameError, put_frame, read_frame};
use crate::record::{LogRecord, NewRecord, body_len, decode_body};
use crate::segment::{modified, sync_dir};
use crate::topic::Topic;
use crate::{LogError, LogOptions, valid_topic};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Appended frames are written in chunks of about this many bytes.
const WRITE_CHUNK: usize = 1 << 20;

/// Where each topic of a log stood; see [`Log::mark`].
#[derive(Debug, Clone)]
pub struct LogMark(BTreeMap<String, (usize, u64, u64)>);

/// The log of every topic under one folder.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    options: LogOptions,
    topics: BTreeMap<String, Topic>,
    /// Bytes cut from torn tails when the log was opened.
    recovered_bytes: u64,
    /// Reused for encoding appended frames.
    buffer: Vec<u8>,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering every topic.
    pub fn open(dir: &Path, options: LogOptions) -> Result<Log, LogError> {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let mut log = Log {
            dir: dir.to_path_buf(),
            options,
            topics: BTreeMap::new(),
            recovered_bytes: 0,
            buffer: Vec::new(),
        };
        for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
            let entry = entry.map_err(io_err("listing", dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.path().is_dir() || !valid_topic(&name) {
                continue;
            }
            let (topic, cut) = Topic::recover(&entry.path(), &options)?;
            log.recovered_bytes += cut;
            log.topics.insert(name, topic);
        }
        Ok(log)
    }

    /// The folder the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes cut from torn segment tails when the log was opened.
    pub fn recovered_bytes(&self) -> u64 {
        self.recovered_bytes
    }

    /// The offset the next record of `topic` will get.
    pub fn next_offset(&self, topic: &str) -> u64 {
        self.topics.get(topic).map_or(0, |t| t.next_offset)
    }

    /// The offset of the first record `topic` still holds (retention deletes older ones).
    pub fn first_offset(&self, topic: &str) -> u64 {
        self.topics
            .get(topic)
            .and_then(|t| t.segments.first())
            .map_or(0, |s| s.base)
    }

    /// Bytes `topic` takes on disk.
    pub fn topic_bytes(&self, topic: &str) -> u64 {
        self.topics.get(topic).map_or(0, Topic::bytes)
    }

    /// Topics that hold or held records.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    /// Appends records to `topic` and returns the offset of the first. Not
    /// durable until [`Log::sync`] returns.
    pub fn append(&mut self, topic: &str, records: &[NewRecord<'_>]) -> Result<u64, LogError> {
        if !valid_topic(topic) {
            return Err(LogError::BadTopic(topic.to_owned()));
        }
        let options = self.options;
        let t = match self.topics.get_mut(topic) {
            Some(t) => t,
            None => {
                let t = Topic::create(&self.dir.join(topic), 0)?;
                self.topics.entry(topic.to_owned()).or_insert(t)
            }
        };
        // Frames are encoded into one reused buffer and written a chunk at a time: a group
        // of many batches needs no allocation of its size (whose fresh pages the kernel would
        // have to zero) and no second copy of its events. The first chunk is encoded before
        // anything is written, so a group that fits in it (most do) is measured by encoding
        // it, and only the records past it are counted without being encoded.
        let mut frames = std::mem::take(&mut self.buffer);
        frames.clear();
        let first = t.next_offset;
        let segment_bytes = options.segment_bytes;
        let written = (|| {
            let mut encoded = 0;
            while encoded < records.len() && frames.len() < WRITE_CHUNK {
                put_frame(&records[encoded], &mut frames, options.max_record_bytes)?;
                encoded += 1;
            }
            let rest = &records[encoded..];
            let len = frames.len() as u64
                + rest
                    .iter()
                    .map(|r| (FRAME_HEADER + body_len(r)) as u64)
                    .sum::<u64>();
            if t.size > 0 && t.size + len > segment_bytes {
                t.roll()?;
            }
            t.write(&frames)?;
            frames.clear();
            for r in rest {
                put_frame(r, &mut frames, options.max_record_bytes)?;
                if frames.len() >= WRITE_CHUNK {
                    t.write(&frames)?;
                    frames.clear();
                }
            }
            t.write(&frames)
        })();
        frames.clear();
        if frames.capacity() > 2 * WRITE_CHUNK {
            frames.shrink_to(WRITE_CHUNK);
        }
        self.buffer = frames;
        match written {
            Ok(()) => {
                t.commit_append(records.len() as u64);
                Ok(first)
            }
            Err(e) => {
                t.abort_append();
                Err(e)
            }
        }
    }

    /// Where every topic stands now, for [`Log::rewind`].
    pub fn mark(&self) -> LogMark {
        LogMark(
            self.topics
                .iter()
                .map(|(name, t)| (name.clone(), t.mark()))
                .collect(),
        )
    }

    /// Cuts off everything appended since `mark` (a group whose append or sync
    /// failed), so that its retry is not written twice. Topics created since are
    /// emptied. Errors are logged: what cannot be cut stays until the next start's
    /// recovery reads it back as written.
    pub fn rewind(&mut self, mark: &LogMark) {
        for (name, t) in &mut self.topics {
            let (segments, size, next_offset) = mark.0.get(name).copied().unwrap_or((1, 0, 0));
            if t.mark() == (segments, size, next_offset) {
                continue;
            }
            if let Err(e) = t.rewind(segments.max(1), size, next_offset) {
                tracing::error!(topic = %name, error = %e, "Could not cut a failed group off the log.");
            }
        }
    }

    /// Makes every appended record durable: one `fsync` per file written since the last sync.
    pub fn sync(&mut self) -> Result<(), LogError> {
        for t in self.topics.values_mut().filter(|t| t.dirty) {
            t.sync()?;
        }
        Ok(())
    }

    /// Deletes the closed segments of `topic` last written before `cutoff`
    /// (so every record in them is older), oldest first; returns how many.
    /// The open segment is always kept.
    pub fn delete_segments_before(
        &mut self,
        topic: &str,
        cutoff: SystemTime,
    ) -> Result<usize, LogError> {
        let Some(t) = self.topics.get_mut(topic) else {
            return Ok(0);
        };
        let mut deleted = 0;
        while let [oldest, _, ..] = t.segments.as_slice() {
            if modified(&oldest.path)? >= cutoff {
                break;
            }
            t.delete_oldest()?;
            deleted += 1;
        }
        if deleted > 0 {
            sync_dir(&t.dir)?;
        }
        Ok(deleted)
    }

    /// Deletes, in every topic, the closed segments last written before `cutoff`; returns how many.
    pub fn delete_all_segments_before(&mut self, cutoff: SystemTime) -> Result<usize, LogError> {
        let topics: Vec<String> = self.topics.keys().cloned().collect();
        let mut deleted = 0;
        for topic in topics {
            deleted += self.delete_segments_before(&topic, cutoff)?;
        }
        Ok(deleted)
    }

    /// Deletes what every reader is done with: the segments of `topic` that
    /// hold only records below `offset`. When that is every record, the open
    /// segment goes too and an empty one starts at the next offset, so that
    /// a consumed topic takes no space. Returns how many segments went.
    pub fn trim(&mut self, topic: &str, offset: u64) -> Result<usize, LogError> {
        self.trim_segments(topic, offset, true)
    }

    /// [`Log::trim`] without the open segment: only closed segments holding
    /// only records below `offset` go. For a writer trimming under load, to
    /// which emptying the open segment would cost a sync and folder syncs.
    pub fn trim_closed(&mut self, topic: &str, offset: u64) -> Result<usize, LogError> {
        self.trim_segments(topic, offset, false)
    }

    fn trim_segments(
        &mut self,
        topic: &str,
        offset: u64,
        open_too: bool,
    ) -> Result<usize, LogError> {
        let Some(t) = self.topics.get_mut(topic) else {
            return Ok(0);
        };
        let mut deleted = 0;
        while let [_, second, ..] = t.segments.as_slice() {
            if second.base > offset {
                break;
            }
            t.delete_oldest()?;
            deleted += 1;
        }
        if open_too && offset >= t.next_offset && t.size > 0 {
            // Everything is consumed: start afresh at the next offset and drop the old segment.
            t.sync()?;
            t.roll()?;
            t.delete_oldest()?;
            deleted += 1;
        }
        if deleted > 0 {
            sync_dir(&t.dir)?;
        }
        Ok(deleted)
    }

    /// The first offset of `topic` in a segment written to at or after `since`:
    /// records before it were all written, and so received, earlier.
    pub fn first_offset_written_since(
        &self,
        topic: &str,
        since: SystemTime,
    ) -> Result<u64, LogError> {
        let Some(t) = self.topics.get(topic) else {
            return Ok(0);
        };
        for seg in &t.segments {
            if modified(&seg.path)? >= since {
                return Ok(seg.base);
            }
        }
        Ok(t.next_offset)
    }

    /// Up to `max` records of `topic` from offset `from` on, in order.
    pub fn read(&self, topic: &str, from: u64, max: usize) -> Result<Vec<LogRecord>, LogError> {
        let Some(t) = self.topics.get(topic) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let start = t
            .segments
            .partition_point(|s| s.base <= from)
            .saturating_sub(1);
        for seg in &t.segments[start..] {
            if out.len() >= max {
                break;
            }
            let file = File::open(&seg.path).map_err(io_err("reading", &seg.path))?;
            let mut reader = BufReader::new(file);
            let mut offset = seg.base;
            let mut at = 0;
            while out.len() < max && offset < t.next_offset {
                let frame = match read_frame(&mut reader, self.options.max_record_bytes, at) {
                    Ok(Some(f)) => f,
                    // The end of what was appended (or of a segment's readable part).
                    Ok(None) | Err(FrameError::Torn(_)) => break,
                    Err(FrameError::Io(e)) => return Err(io_err("reading", &seg.path)(e)),
                };
                at += frame.len;
                if offset >= from {
                    out.push(
                        decode_body(&frame.body, offset).map_err(|e| LogError::Corrupt {
                            path: seg.path.clone(),
                            at,
                            why: format!("a record passed its checksum but does not decode: {e}"),
                        })?,
                    );
                }
                offset += 1;
            }
        }
        Ok(out)
    }
}
