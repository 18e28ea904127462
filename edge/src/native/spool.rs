//! The disk spool: every hasty request's events wait here, synced, before
//! the request is answered 202, until an aggregator has taken them. It is a
//! topic of a `sluice-log` under `data_dir/spool`: each request's events are
//! one record (a batch frame). One writer thread owns the log and commits in
//! groups: every request that arrived while the last `fsync` ran is appended
//! and covered by the next one, so a 202 costs a few milliseconds however
//! many requests share it. The forwarder reads records only up to the synced
//! end (a record whose sync failed is cut off again and never sent), and is
//! a named consumer whose committed position moves past a record once an
//! aggregator has answered it; segments it has passed are deleted.
//!
//! After a crash the forwarder resumes from its last commit: a batch answered
//! but not yet committed (a kill between the answer and the commit's `fsync`)
//! is sent again, and the aggregator's dedupe answers it as a duplicate. A
//! torn tail (a crash mid-append, before the 202) is cut off; a damaged older
//! segment is passed over with an error line rather than keeping the edge
//! from starting.

use super::metrics::Metrics;
use sluice_host::metrics::Outcome;
use sluice_log::{ConsumerPosition, Damage, Log, LogError, LogOptions, NewRecord, Reader, Start};
use sluice_shared::Batch;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The spool's one topic.
const TOPIC: &str = "spool";
/// The consumer that forwards it.
const CONSUMER: &str = "forwarder";
/// Bytes of a record's frame around a batch frame: its length, checksum and postcard's fields.
const RECORD_OVERHEAD: u64 = 32;
/// Largest record: a request's events as a batch frame (bodies are limited far below).
const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;
/// Appends waiting for the writer at most; past them requests wait (then get 503).
const QUEUE: usize = 256;
/// Records appended in one group at most.
const GROUP: usize = 1024;
/// Bytes of synced records (as their frames count) handed to the forwarder in
/// memory and not yet taken, at most; past them it reads them from the log.
const FRESH_BYTES: u64 = 16 * 1024 * 1024;

/// Why a record could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool holds its maximum.
    #[error("the spool is full ({max_bytes} bytes); no aggregator has taken its batches yet")]
    Full {
        /// The bound.
        max_bytes: u64,
    },
    /// Too many appends are waiting for the writer.
    #[error("the spool's writer is behind: too many hasty requests are waiting for their sync")]
    Busy,
    /// The spool is closed (the edge is stopping).
    #[error("the spool is closed: the edge is stopping")]
    Closed,
    /// The disk refused.
    #[error("spool {}: {source}", path.display())]
    Log {
        /// The spool's folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: LogError,
    },
    /// The disk refused a group's append or sync.
    #[error("spool {}: {message}", path.display())]
    Write {
        /// The spool's folder.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// A record read from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its offset in the spool.
    pub offset: u64,
    /// The batch frame.
    pub frame: Vec<u8>,
}

/// A synced record handed to the forwarder as it was appended, decoded: the
/// forwarder takes it from memory instead of reading the log back, while it
/// keeps up.
pub struct Fresh {
    /// Its offset in the spool.
    pub offset: u64,
    /// What it holds.
    pub batch: Batch,
    bytes: u64,
}

/// The forwarder's end of the in-memory hand-over.
pub struct FreshFeed {
    rx: mpsc::Receiver<Fresh>,
    held: Arc<AtomicU64>,
}

impl FreshFeed {
    /// The next record handed over, if one waits.
    pub fn take(&mut self) -> Option<Fresh> {
        let fresh = self.rx.try_recv().ok()?;
        self.held.fetch_sub(fresh.bytes, Ordering::AcqRel);
        Some(fresh)
    }
}

/// What the writer thread is asked to do.
enum Job {
    Append {
        frame: Vec<u8>,
        batch: Batch,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
    /// Delete the closed segments holding only records below `offset`; with
    /// `all`, also the open one when every record is below it.
    Trim { offset: u64, all: bool },
}

/// What the writer publishes for readers and requests.
struct Shared {
    /// The offset after the last synced record: readers stop here.
    synced: AtomicU64,
    /// Bytes of the spool's segments.
    bytes: AtomicU64,
}

/// A bounded, synced queue of batch frames on disk, written in groups.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    reader: Mutex<Reader>,
    /// The forwarder's committed position (its own file: committing does not wait on reads).
    position: ConsumerPosition,
    /// The committed position loaded at open: where forwarding starts.
    start: u64,
    /// The position committed last.
    committed: AtomicU64,
    /// Wakes the forwarder when a group is synced.
    pub appended: Arc<tokio::sync::Notify>,
    /// The in-memory hand-over, until the forwarder takes it.
    fresh: Mutex<Option<FreshFeed>>,
}

impl Spool {
    /// Opens the spool in `dir`, keeping what an earlier run left, and starts
    /// its writer thread (which ends when the spool is dropped).
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
        metrics: Metrics,
    ) -> Result<Spool, SpoolError> {
        let err = |source| SpoolError::Log {
            path: dir.to_path_buf(),
            source,
        };
        let options = LogOptions {
            segment_bytes,
            max_record_bytes: MAX_RECORD_BYTES,
            damage: Damage::Skip,
        };
        let mut log = Log::open(dir, options).map_err(err)?;
        import_legacy(dir, &mut log).map_err(err)?;
        let position = ConsumerPosition::new(dir, TOPIC, CONSUMER).map_err(err)?;
        let start = position
            .load()
            .map_err(err)?
            .unwrap_or(0)
            .max(log.first_offset(TOPIC));
        let reader = Reader::open(dir, TOPIC, Start::Offset(start), options).map_err(err)?;
        let waiting = log.next_offset(TOPIC).saturating_sub(start);
        if waiting > 0 {
            tracing::info!(
                batches = waiting,
                bytes = log.topic_bytes(TOPIC),
                "The spool holds batches from an earlier run; forwarding them."
            );
        }
        let shared = Arc::new(Shared {
            synced: AtomicU64::new(log.next_offset(TOPIC)),
            bytes: AtomicU64::new(log.topic_bytes(TOPIC)),
        });
        metrics.spool_bytes.set(log.topic_bytes(TOPIC) as i64);
        let (jobs, rx) = mpsc::channel(QUEUE);
        let appended = Arc::new(tokio::sync::Notify::new());
        let (fresh_tx, fresh_rx) = mpsc::channel(4 * GROUP);
        let held = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            fresh: fresh_tx,
            held: held.clone(),
            log,
            dir: dir.to_path_buf(),
            max_bytes,
            shared: shared.clone(),
            appended: appended.clone(),
            metrics,
        };
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| {
                err(LogError::Io {
                    action: "starting the writer thread of",
                    path: dir.to_path_buf(),
                    source: e,
                })
            })?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            jobs,
            shared,
            reader: Mutex::new(reader),
            position,
            start,
            committed: AtomicU64::new(start),
            appended,
            fresh: Mutex::new(Some(FreshFeed { rx: fresh_rx, held })),
        })
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Reader> {
        self.reader
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
        self.shared.bytes.load(Ordering::Acquire)
    }

    /// The offset after the last synced record.
    pub fn synced(&self) -> u64 {
        self.shared.synced.load(Ordering::Acquire)
    }

    /// The position committed when the spool was opened: where forwarding starts.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The position committed last: every record below it was answered.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Whether every synced record has been answered.
    pub fn is_empty(&self) -> bool {
        self.committed() >= self.synced()
    }

    /// Whether a frame of `extra` more bytes would fit now.
    pub fn has_room(&self, extra: u64) -> bool {
        self.bytes() + RECORD_OVERHEAD + extra <= self.max_bytes
    }

    /// The in-memory hand-over of synced records, for the one forwarder.
    pub fn take_fresh(&self) -> Option<FreshFeed> {
        self.fresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Appends `frame` (the encoding of `batch`) and returns once it is synced
    /// to disk, sharing the sync with every append that came meanwhile. Waits
    /// up to `patience` for a place in the writer's queue.
    pub async fn append(
        &self,
        frame: Vec<u8>,
        batch: Batch,
        patience: Duration,
    ) -> Result<(), SpoolError> {
        if !self.has_room(frame.len() as u64) {
            return Err(SpoolError::Full {
                max_bytes: self.max_bytes,
            });
        }
        let (reply, answer) = oneshot::channel();
        let job = Job::Append {
            frame,
            batch,
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => self
                .jobs
                .send_timeout(job, patience)
                .await
                .map_err(|e| match e {
                    mpsc::error::SendTimeoutError::Timeout(_) => SpoolError::Busy,
                    mpsc::error::SendTimeoutError::Closed(_) => SpoolError::Closed,
                })?,
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(SpoolError::Closed),
        }
        answer.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Up to `max` synced records from `from` on, in order: blocking reads, for a
    /// blocking thread. Fewer when the reader reaches the synced end; records
    /// skipped over (damage) are simply not returned.
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<Record>, SpoolError> {
        let synced = self.synced();
        let mut reader = self.reader();
        if reader.position() != from {
            reader.seek(Start::Offset(from)).map_err(self.err())?;
        }
        let room = usize::try_from(synced.saturating_sub(from)).unwrap_or(usize::MAX);
        let records = reader.poll(max.min(room)).map_err(self.err())?;
        Ok(records
            .into_iter()
            .filter(|r| r.offset < synced)
            .map(|r| Record {
                offset: r.offset,
                frame: r.value,
            })
            .collect())
    }

    /// Commits `offset`, durably: every record below it was answered. The
    /// spool's closed files holding only such records are deleted by the
    /// writer; with `all` (the forwarder is quiet), the open one too when
    /// everything is answered.
    pub fn commit(&self, offset: u64, all: bool) {
        self.committed.fetch_max(offset, Ordering::AcqRel);
        if let Err(e) = self.position.commit(offset, true) {
            tracing::warn!(error = %e, "Could not record the spool's forwarding position; a restart will send more again.");
        }
        // A full queue only delays the trim: the next commit asks again.
        let _ = self.jobs.try_send(Job::Trim { offset, all });
    }
}

/// The writer thread's state: it alone appends to and trims the log.
struct Writer {
    log: Log,
    dir: PathBuf,
    max_bytes: u64,
    shared: Arc<Shared>,
    appended: Arc<tokio::sync::Notify>,
    metrics: Metrics,
    /// Synced records for the forwarder, in order, while it keeps up.
    fresh: mpsc::Sender<Fresh>,
    /// Bytes handed over and not yet taken.
    held: Arc<AtomicU64>,
}

/// An append taken into a group.
struct Taken {
    frame: Vec<u8>,
    batch: Batch,
    reply: oneshot::Sender<Result<(), SpoolError>>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut group = Vec::with_capacity(GROUP);
        while let Some(job) = rx.blocking_recv() {
            let mut trim = None;
            let mut job = Some(job);
            while let Some(j) = job.take() {
                match j {
                    Job::Trim { offset, all } => {
                        let (o, a) = trim.unwrap_or((0, false));
                        trim = Some((o.max(offset), a || all));
                    }
                    Job::Append {
                        frame,
                        batch,
                        reply,
                    } => group.push(Taken {
                        frame,
                        batch,
                        reply,
                    }),
                }
                if group.len() < GROUP {
                    job = rx.try_recv().ok();
                }
            }
            // Trims first, so that what is deleted does not depend on how jobs were grouped.
            if let Some((offset, all)) = trim {
                // Under load only closed files go: emptying the open one after every commit
                // would cost a sync and two folder syncs here, between groups of requests
                // waiting for theirs. Once the forwarder is quiet, a consumed spool takes no space.
                let trimmed = if all {
                    self.log.trim(TOPIC, offset)
                } else {
                    self.log.trim_closed(TOPIC, offset)
                };
                if let Err(e) = trimmed {
                    tracing::warn!(error = %e, "Cannot delete forwarded spool files.");
                }
                self.publish_bytes();
            }
            if !group.is_empty() {
                self.commit_group(&mut group);
            }
        }
    }

    fn publish_bytes(&self) {
        let bytes = self.log.topic_bytes(TOPIC);
        self.shared.bytes.store(bytes, Ordering::Release);
        self.metrics.spool_bytes.set(bytes as i64);
    }

    /// Hands a synced record to the forwarder in memory, when it keeps up (else
    /// it reads the record from the log).
    fn hand_over(&self, offset: u64, bytes: u64, batch: Batch) {
        if self.held.load(Ordering::Acquire) + bytes > FRESH_BYTES {
            return;
        }
        self.held.fetch_add(bytes, Ordering::AcqRel);
        let fresh = Fresh {
            offset,
            batch,
            bytes,
        };
        if self.fresh.try_send(fresh).is_err() {
            self.held.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// Appends the group's frames that fit, syncs once, and answers each.
    fn commit_group(&mut self, group: &mut Vec<Taken>) {
        let started = std::time::Instant::now();
        let mut bytes = self.log.topic_bytes(TOPIC);
        let mut taken = Vec::with_capacity(group.len());
        for t in group.drain(..) {
            let size = RECORD_OVERHEAD + t.frame.len() as u64;
            if bytes + size > self.max_bytes {
                let _ = t.reply.send(Err(SpoolError::Full {
                    max_bytes: self.max_bytes,
                }));
            } else {
                bytes += size;
                taken.push(t);
            }
        }
        if taken.is_empty() {
            return;
        }
        let now = sluice_host::clock::unix_millis();
        let records: Vec<NewRecord<'_>> = taken
            .iter()
            .map(|t| NewRecord {
                timestamp_ms: now,
                key: None,
                headers: &[],
                value: &t.frame,
            })
            .collect();
        let mark = self.log.mark();
        let written = self
            .log
            .append(TOPIC, &records)
            .and_then(|first| self.log.sync().map(|()| first));
        drop(records);
        match written {
            Ok(first) => {
                let events: usize = taken.iter().map(|t| t.batch.events.len()).sum();
                let mut replies = Vec::with_capacity(taken.len());
                // Handed over before they count as synced, so the forwarder finds them in memory.
                for (offset, t) in (first..).zip(taken) {
                    self.hand_over(offset, t.frame.len() as u64, t.batch);
                    replies.push(t.reply);
                }
                self.shared
                    .synced
                    .store(self.log.next_offset(TOPIC), Ordering::Release);
                self.publish_bytes();
                self.metrics
                    .spool_sync_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.count(Outcome::Spooled, events);
                self.appended.notify_one();
                for reply in replies {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                // What was not synced must not be forwarded as if it had been taken.
                self.log.rewind(&mark);
                let message = e.to_string();
                tracing::error!(error = %message, requests = taken.len(), "The spool cannot be written; hasty requests get 503 until it can.");
                for t in taken {
                    let _ = t.reply.send(Err(SpoolError::Write {
                        path: self.dir.clone(),
                        message: message.clone(),
                    }));
                }
            }
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

    const PATIENCE: Duration = Duration::from_secs(5);

    /// A batch of `n` events (the spool counts them; the frames beside them are made up).
    fn events(n: u8) -> Batch {
        let event = |i: u8| sluice_shared::BatchEvent {
            stream: "s".into(),
            topic: "t".into(),
            partition_key: None,
            rate_key: None,
            id: [i; 16],
            received_ms: 0,
            dt_ms: 0,
            schema_uri: "/s/1.0.0".into(),
            dedupe: true,
            json: bytes::Bytes::from_static(b"{}"),
        };
        Batch {
            id: [n; 16],
            events: (0..n).map(event).collect(),
            errors: Vec::new(),
        }
    }

    fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> Spool {
        Spool::open(dir, max_bytes, segment_bytes, Metrics::default()).unwrap()
    }

    /// Reads and commits every synced record; their first bytes, in order.
    fn drain(spool: &Spool) -> Vec<u8> {
        let mut seen = Vec::new();
        let mut from = spool.committed();
        loop {
            let records = spool.read(from, 3).unwrap();
            let Some(last) = records.last() else {
                return seen;
            };
            from = last.offset + 1;
            seen.extend(records.iter().map(|r| r.frame[0]));
            spool.commit(from, true);
        }
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

    /// Waits (5 s at most) for the writer to have trimmed a consumed spool to nothing.
    async fn emptied(spool: &Spool) {
        let deadline = std::time::Instant::now() + PATIENCE;
        while spool.bytes() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the spool keeps {} bytes",
                spool.bytes()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn records_come_back_in_order_across_files_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), 10_000, 120);
        assert!(spool.is_empty());
        for i in 0..10u8 {
            spool
                .append(vec![i; 40], events(1), PATIENCE)
                .await
                .unwrap();
        }
        assert_eq!(spool.synced(), 10);
        assert!(!spool.is_empty());
        // 57-byte records, two per 120-byte file.
        assert_eq!(segments(dir.path()), 5);
        let first = spool.read(0, 1).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].frame, vec![0; 40]);
        spool.commit(1, true);
        drop(spool);

        // A restart forwards from the first record not committed.
        let spool = open(dir.path(), 10_000, 120);
        assert_eq!(spool.start(), 1);
        assert_eq!(drain(&spool), (1..10).collect::<Vec<u8>>());
        assert!(spool.is_empty());
        // Everything forwarded: the files go, and an empty one starts at the next offset.
        emptied(&spool).await;
        assert_eq!(segments(dir.path()), 1);
        spool.append(vec![10], events(1), PATIENCE).await.unwrap();
        let again = spool.read(spool.committed(), 10).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].offset, &again[0].frame[..]), (10, &[10][..]));
        spool.commit(11, true);
        emptied(&spool).await;
        assert_eq!(segments(dir.path()), 1, "forwarded files are deleted");
    }

    #[tokio::test]
    async fn appends_arriving_together_share_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::default();
        let spool = Arc::new(Spool::open(dir.path(), 1 << 30, 1 << 20, metrics.clone()).unwrap());
        let tasks: Vec<_> = (0..200u8)
            .map(|i| {
                let spool = spool.clone();
                tokio::spawn(async move { spool.append(vec![i; 100], events(2), PATIENCE).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(spool.synced(), 200);
        let text = metrics.encode();
        let syncs: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("sluice_edge_spool_sync_seconds_count "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (1.0..200.0).contains(&syncs),
            "200 appends at once take fewer than 200 syncs: {syncs}"
        );
        assert!(text.contains("sluice_edge_events_total{outcome=\"spooled\"} 400"));
        let mut seen = drain(&spool);
        seen.sort_unstable();
        assert_eq!(seen, (0..200).collect::<Vec<u8>>());
    }

    #[tokio::test]
    async fn synced_records_are_handed_over_in_memory_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), 1 << 20, 1 << 20);
        let mut feed = spool.take_fresh().unwrap();
        assert!(spool.take_fresh().is_none(), "there is one forwarder");
        for n in 1..=3 {
            spool
                .append(vec![n; 10], events(n), PATIENCE)
                .await
                .unwrap();
        }
        let handed: Vec<(u64, usize)> = std::iter::from_fn(|| feed.take())
            .map(|f| (f.offset, f.batch.events.len()))
            .collect();
        assert_eq!(handed, [(0, 1), (1, 2), (2, 3)]);
        assert!(feed.take().is_none());
    }

    #[tokio::test]
    async fn batches_spooled_by_earlier_versions_are_taken_over() {
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
        let spool = open(dir.path(), 10_000, 1000);
        let frames: Vec<String> = spool
            .read(0, 10)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.frame).unwrap())
            .collect();
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

    #[tokio::test]
    async fn the_bound_holds_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), 150, 1000);
        spool
            .append(vec![1; 40], events(1), PATIENCE)
            .await
            .unwrap();
        spool
            .append(vec![2; 40], events(1), PATIENCE)
            .await
            .unwrap();
        assert!(!spool.has_room(40));
        assert!(matches!(
            spool.append(vec![3; 40], events(1), PATIENCE).await,
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
        let spool = open(dir.path(), 1000, 1000);
        assert_eq!(spool.synced(), 2);
        assert_eq!(drain(&spool), vec![1, 2]);
    }
}
