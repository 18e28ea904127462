//! A reader of one topic: opened at an offset, at a time, at either end, or
//! where a named consumer stopped; it reads in order and follows what the
//! writer appends, in this process or another, up to what the writer has
//! synced. It never repairs anything and returns only whole, checksummed,
//! durable records.

use crate::error::io_err;
use crate::frame::{FrameError, read_frame, skim_frame};
use crate::position::ConsumerPosition;
use crate::record::{LogRecord, decode_body};
use crate::segment::{Segment, list_segments};
use crate::topic::SYNCED_FILE;
use crate::{LogError, LogOptions, valid_topic};
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Bytes read from a segment at a time: large reads keep system calls few when a reader
/// catches up through a backlog.
const READ_BUFFER: usize = 256 << 10;

/// Where a reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the first record the topic still holds.
    Earliest,
    /// After the last record written so far: only new records.
    Latest,
    /// At this offset (or the first one kept, when retention took it).
    Offset(u64),
    /// At the first record whose timestamp (Unix milliseconds) is at or after this.
    Time(i64),
}

/// The segment being read.
struct Cursor {
    segment: Segment,
    reader: BufReader<File>,
    /// The offset of the frame at `pos`.
    offset: u64,
    /// Bytes into the segment.
    pos: u64,
}

impl Cursor {
    /// Moves the file back to the start of the frame at `pos`, dropping what was read ahead.
    fn back_to_frame(&mut self) -> Result<(), LogError> {
        self.reader
            .seek(SeekFrom::Start(self.pos))
            .map_err(io_err("reading", &self.segment.path))?;
        Ok(())
    }
}

/// How a pass over the open segment ended.
enum Ended {
    /// `max` records are out.
    Full,
    /// At the first record not durable yet.
    Unsynced,
    /// At the end of what is written (`Some`: a frame that is not whole yet, or damaged).
    End(Option<String>),
}

/// Follows one topic of a log.
pub struct Reader {
    dir: PathBuf,
    max_record_bytes: usize,
    /// The next offset to return.
    next: u64,
    cursor: Option<Cursor>,
    /// The topic's `synced` file, once it exists.
    synced: Option<File>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("dir", &self.dir)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// A reader of `topic` of the log in `log_dir`, from `start`.
    pub fn open(
        log_dir: &Path,
        topic: &str,
        start: Start,
        options: LogOptions,
    ) -> Result<Reader, LogError> {
        if !valid_topic(topic) {
            return Err(LogError::BadTopic(topic.to_owned()));
        }
        let mut reader = Reader {
            dir: log_dir.join(topic),
            max_record_bytes: options.max_record_bytes,
            next: 0,
            cursor: None,
            synced: None,
        };
        reader.seek(start)?;
        Ok(reader)
    }

    /// A reader of `topic` from where `consumer` committed, or from `otherwise`
    /// when it has not committed yet.
    pub fn resume(
        log_dir: &Path,
        topic: &str,
        consumer: &ConsumerPosition,
        otherwise: Start,
        options: LogOptions,
    ) -> Result<Reader, LogError> {
        let start = consumer.load()?.map_or(otherwise, Start::Offset);
        Reader::open(log_dir, topic, start, options)
    }

    /// The offset of the next record [`Reader::poll`] returns.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Moves the reader to `start`.
    pub fn seek(&mut self, start: Start) -> Result<(), LogError> {
        self.cursor = None;
        let segments = list_segments(&self.dir)?;
        self.next = match start {
            Start::Offset(offset) => offset,
            Start::Earliest => segments.first().map_or(0, |s| s.base),
            Start::Latest => match segments.last() {
                Some(last) => self.skim(last, |_| false)?.1.min(self.durable()?),
                None => 0,
            },
            Start::Time(at_ms) => {
                // The first record that late; with none, the end: only newer records come.
                let mut at = 0;
                for seg in &segments {
                    let (found, end) = self.skim(seg, |ts| ts >= at_ms)?;
                    at = found.unwrap_or(end);
                    if found.is_some() {
                        break;
                    }
                }
                at
            }
        };
        Ok(())
    }

    /// Scans a segment's timestamps: the offset of the first record whose
    /// timestamp `wanted` takes, if any, and the offset after its last whole record.
    fn skim(
        &self,
        seg: &Segment,
        wanted: impl Fn(i64) -> bool,
    ) -> Result<(Option<u64>, u64), LogError> {
        let file = match File::open(&seg.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, seg.base)),
            Err(e) => return Err(io_err("reading", &seg.path)(e)),
        };
        let mut reader = BufReader::with_capacity(READ_BUFFER, file);
        let (mut offset, mut pos) = (seg.base, 0);
        loop {
            match skim_frame(&mut reader, self.max_record_bytes, pos) {
                Ok(Some((ts, len))) => {
                    if wanted(ts) {
                        return Ok((Some(offset), offset));
                    }
                    offset += 1;
                    pos += len;
                }
                Ok(None) | Err(FrameError::Torn(_)) => return Ok((None, offset)),
                Err(FrameError::Io(e)) => return Err(io_err("reading", &seg.path)(e)),
            }
        }
    }

    /// Records appended since the last poll (up to `max`), in order; empty when
    /// the reader is at the end of what is written.
    pub fn poll(&mut self, max: usize) -> Result<Vec<LogRecord>, LogError> {
        let mut out = Vec::new();
        self.advance(&mut Some(&mut out), max)?;
        Ok(out)
    }

    /// Moves past every whole record written so far without decoding them, and
    /// returns the offset after the last: the topic's end, for lag. It reads
    /// only what was written since the previous call.
    pub fn skip_to_end(&mut self) -> Result<u64, LogError> {
        self.advance(&mut None, usize::MAX)?;
        Ok(self.next)
    }

    /// The offset after the last durable record, as the writer last published it: a
    /// record past it could still be lost by a crash, or cut off after a failed sync,
    /// so it is not read yet. A log written before the writer published it has no
    /// limit.
    fn durable(&mut self) -> Result<u64, LogError> {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join(SYNCED_FILE);
        if self.synced.is_none() {
            match File::open(&path) {
                Ok(f) => self.synced = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // No topic yet (nothing to read), or one from before the file existed.
                    return Ok(u64::MAX);
                }
                Err(e) => return Err(io_err("reading", &path)(e)),
            }
        }
        let Some(f) = &self.synced else {
            return Ok(u64::MAX);
        };
        let mut bytes = [0u8; 8];
        match f.read_exact_at(&mut bytes, 0) {
            Ok(()) => Ok(u64::from_le_bytes(bytes)),
            // Made but not written yet: nothing is durable.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    /// Reads on: records into `out`, or (with `None`) skims over them, up to `max`.
    fn advance(
        &mut self,
        out: &mut Option<&mut Vec<LogRecord>>,
        max: usize,
    ) -> Result<(), LogError> {
        let limit = self.durable()?;
        let mut taken = 0;
        // A segment whose end was seen after a newer one appeared is complete.
        let mut final_pass = false;
        while taken < max {
            if self.cursor.is_none() && !self.open_cursor()? {
                return Ok(());
            }
            let ended = self.read_cursor(out, &mut taken, max, limit)?;
            let Ended::End(damage) = ended else {
                return Ok(());
            };
            let Some(cursor) = &self.cursor else {
                return Ok(());
            };
            let following = list_segments(&self.dir)?
                .into_iter()
                .find(|s| s.base > cursor.segment.base);
            let Some(following) = following else {
                // The writer's open segment: wait here for more.
                return Ok(());
            };
            if !final_pass {
                // The writer finished this segment before it started the next: read what
                // came since, then move on.
                final_pass = true;
                continue;
            }
            if let Some(why) = damage {
                tracing::error!(segment = %cursor.segment.path.display(), at = cursor.pos, %why, "A log segment is damaged; a reader passes over the rest of it.");
            }
            if following.base > cursor.offset {
                tracing::warn!(segment = %cursor.segment.path.display(), missing = following.base - cursor.offset, "Records between log segments are missing; a reader goes on after them.");
            }
            self.next = self.next.max(following.base);
            self.cursor = None;
            final_pass = false;
        }
        Ok(())
    }

    /// Opens the segment that holds `next` (or the first after it, when
    /// retention took it); false when the topic has no segment.
    fn open_cursor(&mut self) -> Result<bool, LogError> {
        let segments = list_segments(&self.dir)?;
        let pick = segments
            .iter()
            .rev()
            .find(|s| s.base <= self.next)
            .or_else(|| segments.first());
        let Some(segment) = pick.cloned() else {
            return Ok(false);
        };
        let file = match File::open(&segment.path) {
            Ok(f) => f,
            // Deleted since it was listed: the next poll lists again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err("reading", &segment.path)(e)),
        };
        self.next = self.next.max(segment.base);
        self.cursor = Some(Cursor {
            offset: segment.base,
            segment,
            reader: BufReader::with_capacity(READ_BUFFER, file),
            pos: 0,
        });
        Ok(true)
    }

    /// Reads the open segment's frames into `out` (or skims them, with `None`),
    /// skipping those before `next`, counting what it takes in `taken`.
    fn read_cursor(
        &mut self,
        out: &mut Option<&mut Vec<LogRecord>>,
        taken: &mut usize,
        max: usize,
        limit: u64,
    ) -> Result<Ended, LogError> {
        let Some(c) = &mut self.cursor else {
            return Ok(Ended::End(None));
        };
        while *taken < max {
            if c.offset >= limit {
                // Bytes read ahead past the limit may be cut off and written again: drop them.
                c.back_to_frame()?;
                return Ok(Ended::Unsynced);
            }
            let Some(out) = out.as_deref_mut() else {
                // Skimming: only the header and the timestamp are read.
                match skim_frame(&mut c.reader, self.max_record_bytes, c.pos) {
                    Ok(Some((_, len))) => {
                        c.pos += len;
                        if c.offset >= self.next {
                            self.next = c.offset + 1;
                            *taken += 1;
                        }
                        c.offset += 1;
                        continue;
                    }
                    Ok(None) => return Ok(Ended::End(None)),
                    Err(FrameError::Torn(why)) => {
                        c.back_to_frame()?;
                        return Ok(Ended::End(Some(why)));
                    }
                    Err(FrameError::Io(e)) => return Err(io_err("reading", &c.segment.path)(e)),
                }
            };
            let frame = match read_frame(&mut c.reader, self.max_record_bytes, c.pos) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(Ended::End(None)),
                Err(FrameError::Torn(why)) => {
                    // Possibly a frame being written: read it again from its start next time.
                    c.back_to_frame()?;
                    return Ok(Ended::End(Some(why)));
                }
                Err(FrameError::Io(e)) => return Err(io_err("reading", &c.segment.path)(e)),
            };
            c.pos += frame.len;
            if c.offset >= self.next {
                let record = decode_body(&frame.body, c.offset).map_err(|e| LogError::Corrupt {
                    path: c.segment.path.clone(),
                    at: c.pos,
                    why: format!("a record passed its checksum but does not decode: {e}"),
                })?;
                out.push(record);
                *taken += 1;
                self.next = c.offset + 1;
            }
            c.offset += 1;
        }
        Ok(Ended::Full)
    }
}
