//! One topic as its writer holds it: the segments, the open last one, and
//! the calls that grow, roll, cut back and recover it.

use crate::error::io_err;
use crate::frame::{FrameError, read_frame};
use crate::segment::{Segment, list_segments, open_append, segment_path, sync_dir};
use crate::{Damage, LogError, LogOptions};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Page size, for dropping whole synced pages from the page cache.
const PAGE: u64 = 4096;

#[derive(Debug)]
pub(crate) struct Topic {
    pub(crate) dir: PathBuf,
    pub(crate) segments: Vec<Segment>,
    /// The open last segment, and its size in bytes.
    file: File,
    pub(crate) size: u64,
    /// Bytes of the closed segments.
    closed_bytes: u64,
    /// Bytes of the append under way written past `size`.
    pending: u64,
    /// Where the open segment's bytes still in the page cache start (see [`Topic::uncache`]).
    cached_from: u64,
    pub(crate) next_offset: u64,
    pub(crate) dirty: bool,
    /// The topic's `synced` file: the offset after the last durable record, for readers.
    synced: File,
}

/// The file in a topic's folder that tells readers how far the topic is durable:
/// eight bytes, the offset after the last synced record, little-endian.
pub(crate) const SYNCED_FILE: &str = "synced";

fn open_synced(dir: &Path) -> Result<File, LogError> {
    let path = dir.join(SYNCED_FILE);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err("opening", &path))
}

impl Topic {
    /// A new topic in `dir`, its first record at `base`.
    pub(crate) fn create(dir: &Path, base: u64) -> Result<Topic, LogError> {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        let path = segment_path(dir, base);
        let file = open_append(&path)?;
        let synced = open_synced(dir)?;
        sync_dir(dir)?;
        let mut topic = Topic {
            dir: dir.to_path_buf(),
            segments: vec![Segment { base, path }],
            file,
            size: 0,
            closed_bytes: 0,
            pending: 0,
            cached_from: 0,
            next_offset: base,
            dirty: false,
            synced,
        };
        topic.publish_synced()?;
        Ok(topic)
    }

    /// Tells readers that every record before `next_offset` is durable. The file is not
    /// synced itself: after a crash it holds this value or an older one, never a newer.
    fn publish_synced(&mut self) -> Result<(), LogError> {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join(SYNCED_FILE);
        self.synced
            .write_all_at(&self.next_offset.to_le_bytes(), 0)
            .map_err(io_err("writing", &path))
    }

    /// Bytes of every segment on disk.
    pub(crate) fn bytes(&self) -> u64 {
        self.closed_bytes + self.size
    }

    /// Lets the page cache drop the synced bytes of the open segment. The log is
    /// written once and read back rarely (a restart, a reader catching up), so
    /// keeping what is on disk in memory only crowds out pages the next appends
    /// can reuse; the last, partly written page stays.
    pub(crate) fn uncache(&mut self) {
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
                tracing::debug!(error = %e, "Could not drop synced log pages from the page cache.");
            }
        }
        self.cached_from = end;
    }

    /// Writes frames at the end of the open segment, as part of the append under way.
    pub(crate) fn write(&mut self, frames: &[u8]) -> Result<(), LogError> {
        if frames.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(frames) {
            return Err(io_err("appending to", &self.current_path())(e));
        }
        self.pending += frames.len() as u64;
        Ok(())
    }

    /// Ends the append under way: its `records` frames now count.
    pub(crate) fn commit_append(&mut self, records: u64) {
        self.size += self.pending;
        self.pending = 0;
        self.next_offset += records;
        self.dirty = true;
    }

    /// Cuts a failed append off: a short write (a full disk, say) must not leave
    /// half a record for the next append to follow.
    pub(crate) fn abort_append(&mut self) {
        if let Err(cut) = self.file.set_len(self.size) {
            let path = self.current_path();
            tracing::error!(path = %path.display(), error = %cut, "Could not cut a failed append off the log; recovery will on the next start.");
        }
        self.pending = 0;
    }

    /// Makes what was appended durable.
    pub(crate) fn sync(&mut self) -> Result<(), LogError> {
        if self.dirty {
            let path = self.current_path();
            self.file.sync_data().map_err(io_err("syncing", &path))?;
            self.dirty = false;
            self.uncache();
            self.publish_synced()?;
        }
        Ok(())
    }

    pub(crate) fn current_path(&self) -> PathBuf {
        self.segments.last().map_or_else(
            || segment_path(&self.dir, self.next_offset),
            |s| s.path.clone(),
        )
    }

    /// Where the topic stands: (segments, open segment size, next offset).
    pub(crate) fn mark(&self) -> (usize, u64, u64) {
        (self.segments.len(), self.size, self.next_offset)
    }

    /// Back to `segments` segments, the last `size` bytes long, next offset `next_offset`.
    pub(crate) fn rewind(
        &mut self,
        segments: usize,
        size: u64,
        next_offset: u64,
    ) -> Result<(), LogError> {
        while self.segments.len() > segments {
            let Some(extra) = self.segments.pop() else {
                break;
            };
            fs::remove_file(&extra.path).map_err(io_err("removing", &extra.path))?;
            let path = self.current_path();
            self.file = open_append(&path)?;
            let len = self
                .file
                .metadata()
                .map_err(io_err("reading", &path))?
                .len();
            self.closed_bytes = self.closed_bytes.saturating_sub(len);
        }
        let path = self.current_path();
        self.file.set_len(size).map_err(io_err("cutting", &path))?;
        self.file.sync_data().map_err(io_err("syncing", &path))?;
        self.size = size;
        self.cached_from = size & !(PAGE - 1);
        self.next_offset = next_offset;
        self.dirty = false;
        self.publish_synced()
    }

    /// Closes the open segment and starts a new one at the next offset.
    pub(crate) fn roll(&mut self) -> Result<(), LogError> {
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
        self.closed_bytes += self.size;
        self.size = 0;
        // Durable now, but readers hear of it only at the sync that commits the group:
        // a group whose append or sync fails later is cut off again.
        self.dirty = false;
        Ok(())
    }

    /// Deletes the oldest segment, unless it is the only one.
    pub(crate) fn delete_oldest(&mut self) -> Result<(), LogError> {
        if self.segments.len() < 2 {
            return Ok(());
        }
        let seg = self.segments.remove(0);
        let len = fs::metadata(&seg.path).map_or(0, |m| m.len());
        fs::remove_file(&seg.path).map_err(io_err("deleting", &seg.path))?;
        self.closed_bytes = self.closed_bytes.saturating_sub(len);
        Ok(())
    }

    /// Scans a topic's segments; cuts a torn tail off the last one. Returns the
    /// topic and the bytes cut.
    pub(crate) fn recover(dir: &Path, options: &LogOptions) -> Result<(Topic, u64), LogError> {
        let segments = list_segments(dir)?;
        let Some(last_segment) = segments.last() else {
            return Topic::create(dir, 0).map(|t| (t, 0));
        };
        let mut next_offset = segments[0].base;
        let mut size = 0;
        let mut closed_bytes = 0;
        let mut cut = 0;
        let last = segments.len() - 1;
        for (i, seg) in segments.iter().enumerate() {
            if seg.base != next_offset {
                let why = format!(
                    "it starts at offset {} but the segment before ends at {next_offset}",
                    seg.base
                );
                if options.damage == Damage::Refuse || seg.base < next_offset {
                    return Err(LogError::Corrupt {
                        path: seg.path.clone(),
                        at: 0,
                        why,
                    });
                }
                tracing::error!(path = %seg.path.display(), lost = seg.base - next_offset, "Records of a damaged log segment are lost; going on after them.");
                next_offset = seg.base;
            }
            let (good, records, total, torn) = scan(&seg.path, options)?;
            next_offset += records;
            match torn {
                None => {}
                Some(why) if i == last => {
                    tracing::warn!(path = %seg.path.display(), kept_bytes = good, cut_bytes = total - good, %why, "Cutting a torn tail off the log.");
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&seg.path)
                        .map_err(io_err("repairing", &seg.path))?;
                    f.set_len(good).map_err(io_err("repairing", &seg.path))?;
                    f.sync_all().map_err(io_err("repairing", &seg.path))?;
                    cut = total - good;
                }
                Some(why) if options.damage == Damage::Refuse => {
                    return Err(LogError::Corrupt {
                        path: seg.path.clone(),
                        at: good,
                        why,
                    });
                }
                Some(why) => {
                    tracing::error!(path = %seg.path.display(), at = good, lost_bytes = total - good, %why, "A log segment is damaged; the records after the damage are lost.");
                }
            }
            if i == last {
                size = good;
            } else {
                closed_bytes += total;
            }
        }
        let path = last_segment.path.clone();
        let mut file = open_append(&path)?;
        file.seek(SeekFrom::End(0))
            .map_err(io_err("opening", &path))?;
        // What a killed writer left in the page cache is kept: make it durable before
        // readers are told they may read it.
        file.sync_data().map_err(io_err("syncing", &path))?;
        let mut topic = Topic {
            dir: dir.to_path_buf(),
            segments,
            file,
            size,
            closed_bytes,
            pending: 0,
            cached_from: size,
            next_offset,
            dirty: false,
            synced: open_synced(dir)?,
        };
        topic.publish_synced()?;
        Ok((topic, cut))
    }
}

/// Reads a segment's frames: (bytes of whole frames, how many, file size, why it ends early).
fn scan(path: &Path, options: &LogOptions) -> Result<(u64, u64, u64, Option<String>), LogError> {
    let file = File::open(path).map_err(io_err("reading", path))?;
    let total = file.metadata().map_err(io_err("reading", path))?.len();
    let mut reader = BufReader::new(file);
    let mut good = 0u64;
    let mut records = 0;
    loop {
        match read_frame(&mut reader, options.max_record_bytes, good) {
            Ok(Some(frame)) => {
                good += frame.len;
                records += 1;
            }
            Ok(None) => return Ok((good, records, total, None)),
            Err(FrameError::Io(e)) => return Err(io_err("reading", path)(e)),
            Err(FrameError::Torn(why)) => return Ok((good, records, total, Some(why))),
        }
    }
}
