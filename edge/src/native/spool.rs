//! The disk spool: hasty batches that no aggregator took wait here, in
//! order, until one does. It is a topic of a `sluice-log` under
//! `data_dir/spool`: each batch frame is one record, synced before it
//! counts; the forwarder is a named consumer whose committed position moves
//! past a record once an aggregator has answered it, and segments it has
//! passed are deleted. After a crash the forwarder resumes from its last
//! commit: a batch answered but not yet committed is sent again, and the
//! aggregator's dedupe drops what it already has. A torn tail (a crash
//! mid-append) is cut off; a damaged older segment is passed over with an
//! error line rather than keeping the edge from starting.

use sluice_log::{ConsumerPosition, Damage, Log, LogError, LogOptions, NewRecord, Reader, Start};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The spool's one topic.
const TOPIC: &str = "spool";
/// The consumer that replays it.
const CONSUMER: &str = "forwarder";
/// Bytes of a record's frame around a batch frame: its length, checksum and postcard's fields.
const RECORD_OVERHEAD: u64 = 32;

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
    Log {
        /// The spool's folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: LogError,
    },
}

struct Inner {
    log: Log,
    reader: Reader,
    position: ConsumerPosition,
    /// The record `peek` returned and `consume` has not yet taken.
    peeked: Option<Record>,
    /// The offset after the last record consumed.
    committed: u64,
}

/// A record read from the spool, to be consumed once answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    offset: u64,
    /// The batch frame.
    pub frame: Vec<u8>,
}

/// An append-only, bounded, synced queue of batch frames on disk.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    inner: Mutex<Inner>,
    /// Wakes the replayer when a record is appended.
    pub appended: tokio::sync::Notify,
}

impl Spool {
    /// Opens the spool in `dir`, keeping what an earlier run left.
    pub fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> Result<Spool, SpoolError> {
        let err = |source| SpoolError::Log {
            path: dir.to_path_buf(),
            source,
        };
        let options = LogOptions {
            segment_bytes,
            damage: Damage::Skip,
            ..LogOptions::default()
        };
        let mut log = Log::open(dir, options).map_err(err)?;
        import_legacy(dir, &mut log).map_err(err)?;
        let position = ConsumerPosition::new(dir, TOPIC, CONSUMER).map_err(err)?;
        let committed = position
            .load()
            .map_err(err)?
            .unwrap_or(0)
            .max(log.first_offset(TOPIC));
        let reader = Reader::open(dir, TOPIC, Start::Offset(committed), options).map_err(err)?;
        let waiting = log.next_offset(TOPIC).saturating_sub(committed);
        if waiting > 0 {
            tracing::info!(
                batches = waiting,
                bytes = log.topic_bytes(TOPIC),
                "The spool holds batches from an earlier run; replaying them."
            );
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            inner: Mutex::new(Inner {
                log,
                reader,
                position,
                peeked: None,
                committed,
            }),
            appended: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn err(&self) -> impl FnOnce(LogError) -> SpoolError + '_ {
        |source| SpoolError::Log {
            path: self.dir.clone(),
            source,
        }
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().log.topic_bytes(TOPIC)
    }

    /// Whether every record has been consumed.
    pub fn is_empty(&self) -> bool {
        let inner = self.lock();
        inner.committed >= inner.log.next_offset(TOPIC)
    }

    /// Whether a frame of `extra` more bytes would fit.
    pub fn has_room(&self, extra: u64) -> bool {
        self.bytes() + RECORD_OVERHEAD + extra <= self.max_bytes
    }

    /// Appends a frame and syncs it to disk.
    pub fn append(&self, frame: &[u8]) -> Result<(), SpoolError> {
        let mut inner = self.lock();
        if inner.log.topic_bytes(TOPIC) + RECORD_OVERHEAD + frame.len() as u64 > self.max_bytes {
            return Err(SpoolError::Full {
                max_bytes: self.max_bytes,
            });
        }
        let record = NewRecord {
            timestamp_ms: sluice_host::clock::unix_millis(),
            key: None,
            headers: &[],
            value: frame,
        };
        let mark = inner.log.mark();
        let written = inner
            .log
            .append(TOPIC, &[record])
            .and_then(|_| inner.log.sync());
        if let Err(e) = written {
            // What was not synced must not be replayed as if it had been taken.
            inner.log.rewind(&mark);
            return Err(self.err()(e));
        }
        drop(inner);
        self.appended.notify_one();
        Ok(())
    }

    /// The oldest record not yet consumed.
    pub fn peek(&self) -> Result<Option<Record>, SpoolError> {
        let mut inner = self.lock();
        if inner.peeked.is_none() {
            let next = inner.reader.poll(1).map_err(self.err())?.pop();
            inner.peeked = next.map(|r| Record {
                offset: r.offset,
                frame: r.value,
            });
        }
        Ok(inner.peeked.clone())
    }

    /// Marks `record` consumed: its batch was answered. The spool's files
    /// holding only consumed records are deleted.
    pub fn consume(&self, record: &Record) {
        let mut inner = self.lock();
        if inner.peeked.as_ref().map(|p| p.offset) != Some(record.offset) {
            return;
        }
        inner.peeked = None;
        inner.committed = record.offset + 1;
        let committed = inner.committed;
        // Not synced: after a crash the batches since the last synced commit go again,
        // and the aggregator's dedupe answers them as duplicates.
        if let Err(e) = inner.position.commit(committed, false) {
            tracing::warn!(error = %e, "Could not record the spool's replay position; a restart will replay more.");
        }
        if let Err(e) = inner.log.trim(TOPIC, committed) {
            tracing::warn!(error = %e, "Cannot delete replayed spool files.");
        }
    }
}

/// Moves batches spooled by earlier versions (files `<seq>.spool` of records
/// `u32 length, u32 CRC-32, frame`) into the log, oldest first, then deletes
/// those files: an upgrade loses nothing that was answered 202.
fn import_legacy(dir: &Path, log: &mut Log) -> Result<(), LogError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LogError::Io {
            action: "importing",
            path,
            source,
        }
    };
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let seq = e
                .file_name()
                .to_str()?
                .strip_suffix(".spool")?
                .parse()
                .ok()?;
            Some((seq, e.path()))
        })
        .collect();
    files.sort();
    for (_, path) in &files {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let mut rest = &bytes[..];
        let mut frames = 0;
        while let [l0, l1, l2, l3, c0, c1, c2, c3, body @ ..] = rest {
            let len = u32::from_le_bytes([*l0, *l1, *l2, *l3]) as usize;
            let Some(frame) = body.get(..len) else { break };
            if crc32fast::hash(frame) != u32::from_le_bytes([*c0, *c1, *c2, *c3]) {
                break;
            }
            let record = NewRecord {
                timestamp_ms: sluice_host::clock::unix_millis(),
                key: None,
                headers: &[],
                value: frame,
            };
            log.append(TOPIC, &[record])?;
            frames += 1;
            rest = &body[len..];
        }
        log.sync()?;
        if !rest.is_empty() {
            tracing::warn!(path = %path.display(), lost_bytes = rest.len(), "An old spool file ends in a torn or corrupt record; importing what precedes it.");
        }
        std::fs::remove_file(path).map_err(io(path))?;
        tracing::info!(path = %path.display(), batches = frames, "Moved an old spool file's batches into the spool.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(spool: &Spool) -> Vec<u8> {
        let mut seen = Vec::new();
        while let Some(r) = spool.peek().unwrap() {
            seen.push(r.frame[0]);
            spool.consume(&r);
        }
        seen
    }

    fn segments(dir: &Path) -> usize {
        std::fs::read_dir(dir.join(TOPIC))
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
                })
                .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn records_come_back_in_order_across_files_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 10_000, 120).unwrap();
        assert!(spool.is_empty());
        for i in 0..10u8 {
            spool.append(&[i; 40]).unwrap();
        }
        assert!(!spool.is_empty());
        // 57-byte records, two per 120-byte file.
        assert_eq!(segments(dir.path()), 5);
        let first = spool.peek().unwrap().unwrap();
        assert_eq!(first.frame, vec![0; 40]);
        spool.consume(&first);
        drop(spool);

        // A restart replays from the first record not consumed.
        let spool = Spool::open(dir.path(), 10_000, 120).unwrap();
        assert_eq!(drain(&spool), (1..10).collect::<Vec<u8>>());
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
        assert_eq!(segments(dir.path()), 1, "an empty file keeps the offsets");
        spool.append(b"again").unwrap();
        assert_eq!(spool.peek().unwrap().unwrap().frame, b"again");
    }

    #[test]
    fn batches_spooled_by_earlier_versions_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = Vec::new();
        for frame in [&b"first"[..], b"second"] {
            old.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            old.extend_from_slice(&crc32fast::hash(frame).to_le_bytes());
            old.extend_from_slice(frame);
        }
        std::fs::write(dir.path().join("00000000000000000003.spool"), &old).unwrap();
        old.truncate(old.len() - 2);
        std::fs::write(dir.path().join("00000000000000000002.spool"), &old).unwrap();
        let spool = Spool::open(dir.path(), 10_000, 1000).unwrap();
        let mut frames = Vec::new();
        while let Some(r) = spool.peek().unwrap() {
            frames.push(String::from_utf8(r.frame.clone()).unwrap());
            spool.consume(&r);
        }
        // The older file first, its torn last record left out.
        assert_eq!(frames, ["first", "first", "second"]);
        assert!(
            !std::fs::read_dir(dir.path()).unwrap().any(|e| e
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "spool"))
        );
    }

    #[test]
    fn the_bound_holds_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 150, 1000).unwrap();
        spool.append(&[1; 40]).unwrap();
        spool.append(&[2; 40]).unwrap();
        assert!(!spool.has_room(40));
        assert!(matches!(
            spool.append(&[3; 40]),
            Err(SpoolError::Full { .. })
        ));
        drop(spool);
        // A crash mid-append leaves half a record behind.
        let file = std::fs::read_dir(dir.path().join(TOPIC))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "log"))
            .unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        std::io::Write::write_all(&mut f, &[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let spool = Spool::open(dir.path(), 1000, 1000).unwrap();
        assert_eq!(drain(&spool), vec![1, 2]);
    }
}
