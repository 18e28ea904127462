//! The disk spool: hasty batches that no aggregator took wait here, in
//! order, until one does. Files `<seq>.spool` hold records of a u32 length,
//! a u32 CRC-32 of the frame (both little endian) and the batch frame; each
//! append is synced before it counts. Reading starts at the oldest record;
//! a record is consumed once an aggregator has answered it, and a file is
//! deleted once every record in it is consumed. After a crash the files are
//! replayed from their start: the aggregator's dedupe drops what it already
//! has. A torn or corrupt tail (a crash mid-append) ends its file there.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const HEADER: u64 = 8;

/// Why a record could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool holds its maximum.
    #[error("the spool is full ({max_bytes} bytes); no aggregator has taken its batches yet")]
    Full {
        /// The bound.
        max_bytes: u64,
    },
    /// The disk refused.
    #[error("spool {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

struct Segment {
    seq: u64,
    path: PathBuf,
    /// Bytes of whole records.
    len: u64,
}

struct Inner {
    segments: VecDeque<Segment>,
    /// The newest segment, open for appends.
    writer: Option<File>,
    /// Offset of the next unread record in the oldest segment.
    read_offset: u64,
    next_seq: u64,
    bytes: u64,
}

/// A record read from the spool, to be consumed once answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    seq: u64,
    offset: u64,
    /// The batch frame.
    pub frame: Vec<u8>,
}

/// An append-only, bounded, synced queue of batch frames on disk.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    inner: Mutex<Inner>,
    /// Wakes the replayer when a record is appended.
    pub appended: tokio::sync::Notify,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the record at `offset` of `file`, or `None` at its end or a torn or corrupt record.
fn read_record(file: &mut File, offset: u64, len: u64) -> std::io::Result<Option<Vec<u8>>> {
    if offset + HEADER > len {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut head = [0u8; 8];
    file.read_exact(&mut head)?;
    let size = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if offset + HEADER + size > len {
        return Ok(None);
    }
    let mut frame = vec![0u8; size as usize];
    file.read_exact(&mut frame)?;
    if crc32fast::hash(&frame) != crc {
        return Ok(None);
    }
    Ok(Some(frame))
}

impl Spool {
    /// Opens the spool in `dir`, keeping what an earlier run left.
    pub fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut seqs: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".spool")?.parse().ok())
            .collect();
        seqs.sort_unstable();
        let mut segments = VecDeque::new();
        let mut bytes = 0;
        for seq in seqs {
            let path = dir.join(format!("{seq:020}.spool"));
            // Keep the whole records; a torn tail from a crash mid-append is cut off.
            let mut file = File::open(&path).map_err(io(&path))?;
            let size = file.metadata().map_err(io(&path))?.len();
            let mut len = 0;
            while let Some(frame) = read_record(&mut file, len, size).map_err(io(&path))? {
                len += HEADER + frame.len() as u64;
            }
            if len < size {
                tracing::warn!(path = %path.display(), kept = len, size, "A spool file ends in a torn or corrupt record; replaying what precedes it.");
            }
            if len == 0 {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            bytes += len;
            segments.push_back(Segment { seq, path, len });
        }
        let next_seq = segments.back().map_or(0, |s| s.seq + 1);
        if !segments.is_empty() {
            tracing::info!(
                files = segments.len(),
                bytes,
                "The spool holds batches from an earlier run; replaying them."
            );
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes,
            inner: Mutex::new(Inner {
                segments,
                writer: None,
                read_offset: 0,
                next_seq,
                bytes,
            }),
            appended: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Whether every record has been consumed.
    pub fn is_empty(&self) -> bool {
        let inner = self.lock();
        match inner.segments.len() {
            0 => true,
            1 => inner.read_offset >= inner.segments[0].len,
            _ => false,
        }
    }

    /// Whether `extra` more bytes would fit.
    pub fn has_room(&self, extra: u64) -> bool {
        self.lock().bytes + HEADER + extra <= self.max_bytes
    }

    /// Appends a frame and syncs it to disk.
    pub fn append(&self, frame: &[u8]) -> Result<(), SpoolError> {
        let size = HEADER + frame.len() as u64;
        let mut inner = self.lock();
        if inner.bytes + size > self.max_bytes {
            return Err(SpoolError::Full {
                max_bytes: self.max_bytes,
            });
        }
        let roll = match inner.segments.back() {
            None => true,
            Some(s) => inner.writer.is_none() || s.len + size > self.segment_bytes,
        };
        if roll {
            let seq = inner.next_seq;
            let path = self.dir.join(format!("{seq:020}.spool"));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            inner.next_seq += 1;
            inner.writer = Some(file);
            inner.segments.push_back(Segment { seq, path, len: 0 });
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
        }
        let Some(segment) = inner.segments.back() else {
            return Ok(());
        };
        let path = segment.path.clone();
        let mut record = Vec::with_capacity(size as usize);
        record.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(frame).to_le_bytes());
        record.extend_from_slice(frame);
        let written = inner
            .writer
            .as_mut()
            .map(|w| w.write_all(&record).and_then(|()| w.sync_data()));
        if let Some(Err(e)) = written {
            // A part-written record would be cut off at the next open; stop appending to this file.
            inner.writer = None;
            return Err(io(&path)(e));
        }
        if let Some(s) = inner.segments.back_mut() {
            s.len += size;
        }
        inner.bytes += size;
        drop(inner);
        self.appended.notify_one();
        Ok(())
    }

    /// The oldest record not yet consumed.
    pub fn peek(&self) -> Result<Option<Record>, SpoolError> {
        let mut inner = self.lock();
        loop {
            let offset = inner.read_offset;
            let (seq, path, len, newest) = match inner.segments.front() {
                None => return Ok(None),
                Some(s) => (s.seq, s.path.clone(), s.len, inner.segments.len() == 1),
            };
            if offset < len {
                let mut file = File::open(&path).map_err(io(&path))?;
                if let Some(frame) = read_record(&mut file, offset, len).map_err(io(&path))? {
                    return Ok(Some(Record { seq, offset, frame }));
                }
                tracing::error!(path = %path.display(), offset, lost_bytes = len - offset, "A spool record is corrupt; the rest of its file cannot be replayed.");
            } else if newest {
                return Ok(None);
            }
            // This file is done (or unreadable past here): delete it and go on to the next.
            Self::retire_front(&mut inner);
        }
    }

    fn retire_front(inner: &mut Inner) {
        if let Some(s) = inner.segments.pop_front() {
            if inner.segments.is_empty() {
                inner.writer = None;
            }
            inner.bytes = inner.bytes.saturating_sub(s.len);
            inner.read_offset = 0;
            if let Err(e) = std::fs::remove_file(&s.path) {
                tracing::warn!(path = %s.path.display(), error = %e, "Cannot delete a replayed spool file.");
            }
        }
    }

    /// Marks `record` consumed: its batch was answered.
    pub fn consume(&self, record: &Record) {
        let mut inner = self.lock();
        let Some((seq, len)) = inner.segments.front().map(|f| (f.seq, f.len)) else {
            return;
        };
        if seq != record.seq || inner.read_offset != record.offset {
            return;
        }
        inner.read_offset = record.offset + HEADER + record.frame.len() as u64;
        if inner.read_offset >= len {
            // The file is replayed (if it was the newest, the next append starts another).
            Self::retire_front(&mut inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_in_order_across_files_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 10_000, 100).unwrap();
        assert!(spool.is_empty());
        for i in 0..10u8 {
            spool.append(&[i; 40]).unwrap();
        }
        assert!(!spool.is_empty());
        // 48-byte records, two per 100-byte file.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5);
        let first = spool.peek().unwrap().unwrap();
        assert_eq!(first.frame, vec![0; 40]);
        spool.consume(&first);
        drop(spool);

        // A restart replays from the start of the oldest file left.
        let spool = Spool::open(dir.path(), 10_000, 100).unwrap();
        let mut seen = Vec::new();
        while let Some(r) = spool.peek().unwrap() {
            seen.push(r.frame[0]);
            spool.consume(&r);
        }
        assert_eq!(seen, (0..10).collect::<Vec<u8>>());
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        spool.append(b"again").unwrap();
        assert_eq!(spool.peek().unwrap().unwrap().frame, b"again");
    }

    #[test]
    fn the_bound_holds_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 100, 100).unwrap();
        spool.append(&[1; 40]).unwrap();
        spool.append(&[2; 40]).unwrap();
        assert!(matches!(
            spool.append(&[3; 40]),
            Err(SpoolError::Full { .. })
        ));
        drop(spool);
        // A crash mid-append leaves half a record behind.
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let spool = Spool::open(dir.path(), 1000, 1000).unwrap();
        let mut seen = Vec::new();
        while let Some(r) = spool.peek().unwrap() {
            seen.push(r.frame[0]);
            spool.consume(&r);
        }
        assert_eq!(seen, vec![1, 2]);
    }
}
