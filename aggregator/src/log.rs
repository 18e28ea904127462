//! The embedded log: the sink used when no Kafka brokers are configured.
//!
//! Each topic is a folder of append-only segment files named by the offset
//! of their first record. A record on disk is its length (u32), a CRC-32 of
//! its body (u32), then the body (postcard: timestamp, key, headers, value).
//! Appends only write; [`EmbeddedLog::sync`] makes everything appended so
//! far durable with one `fsync` per written file, so a caller commits many
//! batches as a group and acknowledges them only after `sync` returns.
//! Opening a log recovers it: a torn or corrupt tail of a topic's last
//! segment (a crash mid-write) is cut off, and every record before it kept.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes before a record's body: its length and its checksum.
const FRAME_HEADER: usize = 8;
/// Extension of segment files.
const SEGMENT_EXT: &str = "log";
/// Page size, for dropping whole synced pages from the page cache.
const PAGE: u64 = 4096;
/// Appended frames are written in chunks of about this many bytes.
const WRITE_CHUNK: usize = 1 << 20;

/// Settings of the embedded log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
    /// Largest record body accepted, in bytes.
    pub max_record_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 256 * 1024 * 1024,
            max_record_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A record to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewRecord<'a> {
    /// Record time, Unix milliseconds (the event's `meta.dt`).
    pub timestamp_ms: i64,
    /// Message key.
    pub key: Option<&'a [u8]>,
    /// Headers, as Kafka carries them.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The payload.
    pub value: &'a [u8],
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Position in its topic, from 0.
    pub offset: u64,
    /// Record time, Unix milliseconds.
    pub timestamp_ms: i64,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The payload.
    pub value: Vec<u8>,
}

/// Bytes of a postcard varint of `n`.
fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// Bytes of a record's body: postcard's encoding of (timestamp, key, headers, value).
fn body_len(r: &NewRecord<'_>) -> usize {
    let bytes = |n: usize| varint_len(n as u64) + n;
    varint_len(zigzag(r.timestamp_ms))
        + 1
        + r.key.map_or(0, |k| bytes(k.len()))
        + varint_len(r.headers.len() as u64)
        + r.headers
            .iter()
            .map(|(k, v)| bytes(k.len()) + bytes(v.len()))
            .sum::<usize>()
        + bytes(r.value.len())
}

/// Writes a record's body as postcard writes `BodyIn` (the reader's shape), by hand:
/// this is the hot path of every append, and it needs no intermediate value.
fn encode_body(r: &NewRecord<'_>, out: &mut Vec<u8>) {
    put_varint(out, zigzag(r.timestamp_ms));
    match r.key {
        None => out.push(0),
        Some(k) => {
            out.push(1);
            put_bytes(out, k);
        }
    }
    put_varint(out, r.headers.len() as u64);
    for (k, v) in r.headers {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v);
    }
    put_bytes(out, r.value);
}

#[derive(Deserialize)]
struct BodyIn {
    timestamp_ms: i64,
    #[serde(with = "serde_bytes")]
    key: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
}

/// What can go wrong with the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A filesystem call failed.
    #[error("embedded log: {action} {}: {source}", path.display())]
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
    /// A record over the size limit.
    #[error("a record of {size} bytes is over the embedded log's limit of {limit} bytes")]
    RecordTooLarge {
        /// The record body's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Damage before the last segment's tail, which recovery does not guess about.
    #[error("embedded log segment {} is damaged at byte {at}: {why}; move it aside to start without it", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the damage.
        at: u64,
        /// What was found.
        why: String,
    },
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> LogError + 'p {
    move |source| LogError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
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

#[derive(Debug)]
struct Segment {
    base: u64,
    path: PathBuf,
}

#[derive(Debug)]
struct Topic {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// The open last segment, and its size in bytes.
    file: File,
    size: u64,
    /// Bytes of the append under way written past `size`.
    pending: u64,
    /// Where the open segment's bytes still in the page cache start (see [`Topic::uncache`]).
    cached_from: u64,
    next_offset: u64,
    dirty: bool,
}

/// Where each topic of a log stood (segments, open segment size, next offset); see [`EmbeddedLog::mark`].
#[derive(Debug, Clone)]
pub struct LogMark(BTreeMap<String, (usize, u64, u64)>);

/// The embedded log of every topic under one folder.
#[derive(Debug)]
pub struct EmbeddedLog {
    dir: PathBuf,
    options: LogOptions,
    topics: BTreeMap<String, Topic>,
    /// Bytes cut from torn tails when the log was opened.
    recovered_bytes: u64,
    /// Reused for encoding appended frames.
    buffer: Vec<u8>,
}

impl EmbeddedLog {
    /// Opens (creating if needed) the log in `dir`, recovering every topic.
    pub fn open(dir: &Path, options: LogOptions) -> Result<EmbeddedLog, LogError> {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let mut log = EmbeddedLog {
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

    /// Bytes cut from torn segment tails when the log was opened.
    pub fn recovered_bytes(&self) -> u64 {
        self.recovered_bytes
    }

    /// The offset the next record of `topic` will get.
    pub fn next_offset(&self, topic: &str) -> u64 {
        self.topics.get(topic).map_or(0, |t| t.next_offset)
    }

    /// Topics that hold or held records.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    /// Appends records to `topic` and returns the offset of the first. Not
    /// durable until [`EmbeddedLog::sync`] returns.
    pub fn append(&mut self, topic: &str, records: &[NewRecord<'_>]) -> Result<u64, LogError> {
        if !valid_topic(topic) {
            return Err(LogError::BadTopic(topic.to_owned()));
        }
        let options = self.options;
        let t = match self.topics.get_mut(topic) {
            Some(t) => t,
            None => {
                let t = Topic::create(&self.dir.join(topic))?;
                self.topics.entry(topic.to_owned()).or_insert(t)
            }
        };
        let frames_len: u64 = records
            .iter()
            .map(|r| (FRAME_HEADER + body_len(r)) as u64)
            .sum();
        if t.size > 0 && t.size + frames_len > options.segment_bytes {
            t.roll()?;
        }
        // Frames are encoded into one reused buffer and written a chunk at a time: a group
        // of many batches needs no allocation of its size (whose fresh pages the kernel would
        // have to zero) and no second copy of its events.
        let mut frames = std::mem::take(&mut self.buffer);
        frames.clear();
        let first = t.next_offset;
        let written = (|| {
            for r in records {
                let at = frames.len();
                frames.extend_from_slice(&[0; FRAME_HEADER]);
                encode_body(r, &mut frames);
                let body = &frames[at + FRAME_HEADER..];
                if body.len() > options.max_record_bytes {
                    return Err(LogError::RecordTooLarge {
                        size: body.len(),
                        limit: options.max_record_bytes,
                    });
                }
                let len = (body.len() as u32).to_le_bytes();
                let crc = crc32fast::hash(body).to_le_bytes();
                frames[at..at + 4].copy_from_slice(&len);
                frames[at + 4..at + FRAME_HEADER].copy_from_slice(&crc);
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
        if let Err(e) = written {
            // A short write (a full disk, say) must not leave half a record for the next
            // append to follow: cut the file back to what it held.
            let path = t.current_path();
            if let Err(cut) = t.file.set_len(t.size) {
                tracing::error!(path = %path.display(), error = %cut, "Could not cut a failed append off the embedded log; recovery will on the next start.");
            }
            t.pending = 0;
            return Err(e);
        }
        t.size += t.pending;
        t.pending = 0;
        t.next_offset += records.len() as u64;
        t.dirty = true;
        Ok(first)
    }

    /// Where every topic stands now, for [`EmbeddedLog::rewind`].
    pub fn mark(&self) -> LogMark {
        LogMark(
            self.topics
                .iter()
                .map(|(name, t)| (name.clone(), (t.segments.len(), t.size, t.next_offset)))
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
            if (t.segments.len(), t.size, t.next_offset) == (segments, size, next_offset) {
                continue;
            }
            if let Err(e) = t.rewind(segments.max(1), size, next_offset) {
                tracing::error!(topic = %name, error = %e, "Could not cut a failed group off the embedded log.");
            }
        }
    }

    /// Makes every appended record durable: one `fsync` per file written since the last sync.
    pub fn sync(&mut self) -> Result<(), LogError> {
        for t in self.topics.values_mut().filter(|t| t.dirty) {
            let path = t.current_path();
            t.file.sync_data().map_err(io_err("syncing", &path))?;
            t.dirty = false;
            t.uncache();
        }
        Ok(())
    }

    /// Deletes the closed segments of `topic` last written before `cutoff`
    /// (so every record in them is older), oldest first; returns how many.
    /// The open segment is always kept.
    pub fn delete_segments_before(
        &mut self,
        topic: &str,
        cutoff: std::time::SystemTime,
    ) -> Result<usize, LogError> {
        let Some(t) = self.topics.get_mut(topic) else {
            return Ok(0);
        };
        let mut deleted = 0;
        while t.segments.len() > 1 {
            let seg = &t.segments[0];
            let modified = fs::metadata(&seg.path)
                .and_then(|m| m.modified())
                .map_err(io_err("reading the age of", &seg.path))?;
            if modified >= cutoff {
                break;
            }
            fs::remove_file(&seg.path).map_err(io_err("deleting", &seg.path))?;
            t.segments.remove(0);
            deleted += 1;
        }
        if deleted > 0 {
            sync_dir(&t.dir)?;
        }
        Ok(deleted)
    }

    /// Deletes, in every topic, the closed segments last written before `cutoff`; returns how many.
    pub fn delete_all_segments_before(
        &mut self,
        cutoff: std::time::SystemTime,
    ) -> Result<usize, LogError> {
        let topics: Vec<String> = self.topics.keys().cloned().collect();
        let mut deleted = 0;
        for topic in topics {
            deleted += self.delete_segments_before(&topic, cutoff)?;
        }
        Ok(deleted)
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
                let frame = match read_frame(&mut reader, &self.options, at) {
                    Ok(Some(f)) => f,
                    // The end of what was appended: records of the open segment written
                    // after this reader started are not torn, just not ours to see yet.
                    Ok(None) | Err(FrameError::Torn(_)) => break,
                    Err(FrameError::Io(e)) => return Err(io_err("reading", &seg.path)(e)),
                };
                at += frame.len;
                if offset >= from {
                    out.push(decode_record(&frame, offset, &seg.path, at)?);
                }
                offset += 1;
            }
        }
        Ok(out)
    }
}

/// The record a checksummed frame holds, at `offset` of the topic (`at` bytes into `path`).
fn decode_record(frame: &Frame, offset: u64, path: &Path, at: u64) -> Result<LogRecord, LogError> {
    let body: BodyIn = postcard::from_bytes(&frame.body).map_err(|e| LogError::Corrupt {
        path: path.to_path_buf(),
        at,
        why: format!("a record passed its checksum but does not decode: {e}"),
    })?;
    Ok(LogRecord {
        offset,
        timestamp_ms: body.timestamp_ms,
        key: body.key,
        headers: body.headers,
        value: body.value,
    })
}

/// The base offset a segment file's name gives, if it is a segment.
fn segment_base(path: &Path) -> Option<u64> {
    path.extension()
        .filter(|e| *e == SEGMENT_EXT)
        .and(path.file_stem())
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse::<u64>().ok())
}

struct Frame {
    body: Vec<u8>,
    /// Bytes the frame takes on disk.
    len: u64,
}

enum FrameError {
    Io(io::Error),
    /// The frame at this byte is incomplete or fails its checksum.
    Torn(String),
}

/// Reads the frame at the reader's position (`at` bytes into the file); `None` at a clean end.
fn read_frame(
    reader: &mut impl Read,
    options: &LogOptions,
    at: u64,
) -> Result<Option<Frame>, FrameError> {
    let mut header = [0u8; FRAME_HEADER];
    let mut got = 0;
    while got < FRAME_HEADER {
        match reader.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(FrameError::Torn(format!(
                    "a record header at byte {at} is cut short"
                )));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    let crc = u32::from_le_bytes([c0, c1, c2, c3]);
    if len > options.max_record_bytes {
        return Err(FrameError::Torn(format!(
            "a record at byte {at} claims {len} bytes, over the limit"
        )));
    }
    let mut body = vec![0u8; len];
    if let Err(e) = reader.read_exact(&mut body) {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => Err(FrameError::Torn(format!(
                "the record at byte {at} is cut short"
            ))),
            _ => Err(FrameError::Io(e)),
        };
    }
    if crc32fast::hash(&body) != crc {
        return Err(FrameError::Torn(format!(
            "the record at byte {at} fails its checksum"
        )));
    }
    Ok(Some(Frame {
        body,
        len: (FRAME_HEADER + len) as u64,
    }))
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.{SEGMENT_EXT}"))
}

/// Makes a new directory entry durable.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing the folder", dir))
}

impl Topic {
    fn create(dir: &Path) -> Result<Topic, LogError> {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        let path = segment_path(dir, 0);
        let file = open_append(&path)?;
        sync_dir(dir)?;
        Ok(Topic {
            dir: dir.to_path_buf(),
            segments: vec![Segment { base: 0, path }],
            file,
            size: 0,
            pending: 0,
            cached_from: 0,
            next_offset: 0,
            dirty: false,
        })
    }

    /// Lets the page cache drop the synced bytes of the open segment. The log is
    /// written once and read back rarely (a restart, `sluice tail`), so keeping
    /// what is on disk in memory only crowds out pages the next appends can reuse;
    /// the last, partly written page stays.
    fn uncache(&mut self) {
        self.uncache_to(self.size & !(PAGE - 1));
    }

    fn uncache_to(&mut self, end: u64) {
        if end <= self.cached_from {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            let len = std::num::NonZeroU64::new(end.saturating_sub(self.cached_from));
            // Advice only: a failure leaves the pages cached, which is harmless.
            if let Err(e) = rustix::fs::fadvise(
                &self.file,
                self.cached_from,
                len.filter(|_| end != u64::MAX),
                rustix::fs::Advice::DontNeed,
            ) {
                tracing::debug!(error = %e, "Could not drop synced embedded-log pages from the page cache.");
            }
        }
        self.cached_from = end;
    }

    /// Writes frames at the end of the open segment, as part of the append under way.
    fn write(&mut self, frames: &[u8]) -> Result<(), LogError> {
        if frames.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(frames) {
            return Err(io_err("appending to", &self.current_path())(e));
        }
        self.pending += frames.len() as u64;
        Ok(())
    }

    fn current_path(&self) -> PathBuf {
        self.segments.last().map_or_else(
            || segment_path(&self.dir, self.next_offset),
            |s| s.path.clone(),
        )
    }

    /// Back to `segments` segments, the last `size` bytes long, next offset `next_offset`.
    fn rewind(&mut self, segments: usize, size: u64, next_offset: u64) -> Result<(), LogError> {
        while self.segments.len() > segments {
            let Some(extra) = self.segments.pop() else {
                break;
            };
            fs::remove_file(&extra.path).map_err(io_err("removing", &extra.path))?;
            let path = self.current_path();
            self.file = open_append(&path)?;
        }
        let path = self.current_path();
        self.file.set_len(size).map_err(io_err("cutting", &path))?;
        self.file.sync_data().map_err(io_err("syncing", &path))?;
        self.size = size;
        self.cached_from = size & !(PAGE - 1);
        self.next_offset = next_offset;
        self.dirty = false;
        Ok(())
    }

    fn roll(&mut self) -> Result<(), LogError> {
        let old = self.current_path();
        self.file.sync_data().map_err(io_err("syncing", &old))?;
        self.cached_from = self.cached_from.min(self.size);
        self.uncache_to(u64::MAX);
        self.cached_from = 0;
        let path = segment_path(&self.dir, self.next_offset);
        self.file = open_append(&path)?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            base: self.next_offset,
            path,
        });
        self.size = 0;
        self.dirty = false;
        Ok(())
    }

    /// Scans a topic's segments; cuts a torn tail off the last one. Returns the topic and the bytes cut.
    fn recover(dir: &Path, options: &LogOptions) -> Result<(Topic, u64), LogError> {
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
            let path = entry.map_err(io_err("listing", dir))?.path();
            if let Some(base) = segment_base(&path) {
                segments.push(Segment { base, path });
            }
        }
        segments.sort_by_key(|s| s.base);
        if segments.is_empty() {
            return Topic::create(dir).map(|t| (t, 0));
        }
        let mut next_offset = segments[0].base;
        let mut size = 0;
        let mut cut = 0;
        let last = segments.len() - 1;
        for (i, seg) in segments.iter().enumerate() {
            if seg.base != next_offset {
                return Err(LogError::Corrupt {
                    path: seg.path.clone(),
                    at: 0,
                    why: format!(
                        "it starts at offset {} but the segment before ends at {next_offset}",
                        seg.base
                    ),
                });
            }
            let file = File::open(&seg.path).map_err(io_err("reading", &seg.path))?;
            let total = file.metadata().map_err(io_err("reading", &seg.path))?.len();
            let mut reader = BufReader::new(file);
            let mut good = 0u64;
            loop {
                match read_frame(&mut reader, options, good) {
                    Ok(Some(frame)) => {
                        good += frame.len;
                        next_offset += 1;
                    }
                    Ok(None) => break,
                    Err(FrameError::Io(e)) => return Err(io_err("reading", &seg.path)(e)),
                    Err(FrameError::Torn(why)) if i < last => {
                        return Err(LogError::Corrupt {
                            path: seg.path.clone(),
                            at: good,
                            why,
                        });
                    }
                    Err(FrameError::Torn(why)) => {
                        tracing::warn!(path = %seg.path.display(), kept_bytes = good, cut_bytes = total - good, %why, "Cutting a torn tail off the embedded log.");
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&seg.path)
                            .map_err(io_err("repairing", &seg.path))?;
                        f.set_len(good).map_err(io_err("repairing", &seg.path))?;
                        f.sync_all().map_err(io_err("repairing", &seg.path))?;
                        cut = total - good;
                        break;
                    }
                }
            }
            if i == last {
                size = good;
            }
        }
        let path = segments[last].path.clone();
        let mut file = open_append(&path)?;
        file.seek(SeekFrom::End(0))
            .map_err(io_err("opening", &path))?;
        Ok((
            Topic {
                dir: dir.to_path_buf(),
                segments,
                file,
                size,
                pending: 0,
                cached_from: size,
                next_offset,
                dirty: false,
            },
            cut,
        ))
    }
}

fn open_append(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err("opening", path))
}

impl EmbeddedLog {
    /// Calls `f` with the event id header and receive time of every record
    /// of every topic received at or after `since_ms`, to rebuild the dedupe
    /// window. The receive time is the `received_ms` header where a record
    /// has one, else its timestamp.
    pub fn for_each_recent_id(
        &self,
        since_ms: i64,
        mut f: impl FnMut([u8; 16], i64),
    ) -> Result<(), LogError> {
        const CHUNK: usize = 10_000;
        let since = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(u64::try_from(since_ms).unwrap_or(0));
        for (name, topic) in &self.topics {
            // A segment last written before the window opened holds no record received in it:
            // start at the first one written since, so a start does not read the whole log.
            let mut from = topic.next_offset;
            for seg in &topic.segments {
                let modified = fs::metadata(&seg.path)
                    .and_then(|m| m.modified())
                    .map_err(io_err("reading the age of", &seg.path))?;
                if modified >= since {
                    from = seg.base;
                    break;
                }
            }
            let topic = name;
            loop {
                let records = self.read(topic, from, CHUNK)?;
                let Some(last) = records.last() else {
                    break;
                };
                from = last.offset + 1;
                for r in &records {
                    let mut id = None;
                    let mut at_ms = r.timestamp_ms;
                    for (k, v) in &r.headers {
                        match k.as_str() {
                            "event_id" => id = <[u8; 16]>::try_from(v.as_slice()).ok(),
                            crate::sink::RECEIVED_HEADER => {
                                if let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) {
                                    at_ms = i64::from_le_bytes(b);
                                }
                            }
                            _ => {}
                        }
                    }
                    if let Some(id) = id.filter(|_| at_ms >= since_ms) {
                        f(id, at_ms);
                    }
                }
                if records.len() < CHUNK {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// A reader that follows one topic of an embedded log another process is
/// writing: it never repairs anything, reads only whole records, and picks
/// up where it left off on each [`LogTail::poll`].
#[derive(Debug)]
pub struct LogTail {
    dir: PathBuf,
    options: LogOptions,
    /// The next offset to return.
    next: u64,
    /// The segment being read: its base offset, path, the offset and byte position reached.
    at: Option<(u64, PathBuf, u64, u64)>,
}

impl LogTail {
    /// Follows `topic` of the log in `log_dir` from offset `from`.
    pub fn new(log_dir: &Path, topic: &str, from: u64, options: LogOptions) -> LogTail {
        LogTail {
            dir: log_dir.join(topic),
            options,
            next: from,
            at: None,
        }
    }

    fn segments(&self) -> Vec<(u64, PathBuf)> {
        let mut out: Vec<(u64, PathBuf)> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| {
                let path = e.path();
                Some((segment_base(&path)?, path))
            })
            .collect();
        out.sort();
        out
    }

    /// Records appended since the last poll (up to `max`), in order.
    pub fn poll(&mut self, max: usize) -> Result<Vec<LogRecord>, LogError> {
        let mut out = Vec::new();
        loop {
            let segments = self.segments();
            if self.at.is_none() {
                // The segment holding `next`, or the first after it when retention took it.
                let pick = segments
                    .iter()
                    .rev()
                    .find(|(base, _)| *base <= self.next)
                    .or_else(|| segments.first())
                    .cloned();
                let Some((base, path)) = pick else {
                    return Ok(out);
                };
                self.next = self.next.max(base);
                self.at = Some((base, path, base, 0));
            }
            let Some((base, path, mut offset, mut pos)) = self.at.take() else {
                return Ok(out);
            };
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(_) => continue,
            };
            let mut reader = BufReader::new(file);
            reader
                .seek(SeekFrom::Start(pos))
                .map_err(io_err("reading", &path))?;
            while out.len() < max {
                let frame = match read_frame(&mut reader, &self.options, pos) {
                    Ok(Some(f)) => f,
                    Ok(None) | Err(FrameError::Torn(_)) => break,
                    Err(FrameError::Io(e)) => return Err(io_err("reading", &path)(e)),
                };
                pos += frame.len;
                if offset >= self.next {
                    out.push(decode_record(&frame, offset, &path, pos)?);
                    self.next = offset + 1;
                }
                offset += 1;
            }
            // At the end of this segment: go on to the next one if it exists, else wait here.
            let following = segments
                .iter()
                .find(|(b, _)| *b > base && *b <= offset)
                .cloned();
            match following {
                Some((b, p)) if out.len() < max => self.at = Some((b, p, b, 0)),
                _ => {
                    self.at = Some((base, path, offset, pos));
                    return Ok(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape the reader decodes, written by serde, to hold the hand encoder to it.
    #[derive(serde::Serialize)]
    struct BodyOut<'a> {
        timestamp_ms: i64,
        #[serde(with = "serde_bytes")]
        key: Option<&'a [u8]>,
        headers: &'a [(&'a str, &'a [u8])],
        #[serde(with = "serde_bytes")]
        value: &'a [u8],
    }

    #[test]
    fn bodies_are_encoded_as_postcard_encodes_them() {
        let long = vec![7u8; 300];
        let headers: [(&str, &[u8]); 2] = [("schema_uri", b"/a/b/1.0.0"), ("event_id", &long)];
        for (timestamp_ms, key, headers, value) in [
            (0i64, None, &headers[..0], &b""[..]),
            (-1, Some(&b"k"[..]), &headers[..1], &b"{}"[..]),
            (1_795_780_800_000, Some(&long[..]), &headers[..], &long[..]),
            (i64::MIN, None, &headers[..], &b"x"[..]),
            (i64::MAX, Some(&b""[..]), &headers[..], &long[..200]),
        ] {
            let r = NewRecord {
                timestamp_ms,
                key,
                headers,
                value,
            };
            let mut mine = Vec::new();
            encode_body(&r, &mut mine);
            let theirs = postcard::to_allocvec(&BodyOut {
                timestamp_ms,
                key,
                headers,
                value,
            })
            .unwrap();
            assert_eq!(mine, theirs);
            assert_eq!(body_len(&r), mine.len());
            let back: BodyIn = postcard::from_bytes(&mine).unwrap();
            assert_eq!(back.timestamp_ms, timestamp_ms);
            assert_eq!(back.value, value);
        }
    }
}
