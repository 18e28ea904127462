//! A sealed slice of the dedupe window on disk: its ids sorted by their
//! seeded hash, then the hash of the first id of every 4 KiB page (the
//! fences), then the slice's Bloom filter. Opening a run reads the fences
//! and the filter into memory (about 1.5 bytes per id at 12 filter bits) and
//! keeps the file open; confirming a filter hit reads the one page (rarely
//! two) the fences point to. Written to a temporary name, synced and renamed,
//! so a run on disk is whole; a checksum covers the header, fences and
//! filter.
//!
//! Layout: a 64-byte header (magic `SLDDRUN1`, count, last slice's sequence
//! number, the earliest and latest admission times in Unix ms,
//! filter bytes, first slice's sequence number, CRC-32), then `count` ids of 16 bytes (little endian), the
//! fences (8 bytes each), the filter.

use sluice_shared::BlockedBloom;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SLDDRUN1";
const HEADER: u64 = 64;
/// Ids per page of the id section.
pub const PAGE_IDS: usize = 256;
const ID_BYTES: usize = 16;

/// What a run holds, besides its ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunMeta {
    /// Ids in the run.
    pub count: u64,
    /// The sequence number of its first slice (runs of adjacent slices are merged).
    pub first_seq: u64,
    /// The sequence number of its last slice.
    pub seq: u64,
    /// The earliest admission time of its ids, Unix ms.
    pub min_at_ms: i64,
    /// The latest.
    pub max_at_ms: i64,
}

/// Why a run could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a whole run.
    #[error("{} is not a whole dedupe run: {why}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// A run: the file, its fences and its filter.
#[derive(Debug)]
pub struct Run {
    /// What it holds.
    pub meta: RunMeta,
    path: PathBuf,
    file: File,
    fences: Vec<u64>,
    filter: BlockedBloom,
}

/// Maps an IO error of `action` on `path` into a [`RunError`].
pub(super) fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RunError + 'a {
    move |source| RunError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The file name of the run of slices `first` to `last`.
pub fn file_name(first: u64, last: u64) -> String {
    format!("slice-{first:016}-{last:016}.run")
}

fn header_bytes(meta: &RunMeta, filter_bytes: u64) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[0..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&meta.count.to_le_bytes());
    h[16..24].copy_from_slice(&meta.seq.to_le_bytes());
    h[24..32].copy_from_slice(&meta.min_at_ms.to_le_bytes());
    h[32..40].copy_from_slice(&meta.max_at_ms.to_le_bytes());
    h[40..48].copy_from_slice(&filter_bytes.to_le_bytes());
    h[48..56].copy_from_slice(&meta.first_seq.to_le_bytes());
    h
}

/// Bytes of the header the checksum covers; the CRC-32 follows them.
const SUMMED: usize = 56;

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Run {
    /// Writes the run of `ids` (ascending `(hash, id)`, at most `meta.count` of them,
    /// which sizes the filter; the header says how many came) into `dir`, with a filter
    /// of `bits_per_key` bits an id, and opens it.
    pub fn write(
        dir: &Path,
        mut meta: RunMeta,
        ids: impl Iterator<Item = Result<(u64, u128), RunError>>,
        bits_per_key: usize,
    ) -> Result<Run, RunError> {
        let name = file_name(meta.first_seq, meta.seq);
        let path = dir.join(&name);
        let tmp = dir.join(format!("{name}.tmp"));
        let count = usize::try_from(meta.count).unwrap_or(usize::MAX);
        let mut filter = BlockedBloom::new(count, bits_per_key);
        let mut fences = Vec::with_capacity(count.div_ceil(PAGE_IDS));
        // Read back for lookups once renamed, so opened for both.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER as usize])
            .map_err(io("writing", &tmp))?;
        let mut written = 0usize;
        for item in ids.take(count) {
            let (hash, id) = item?;
            if written.is_multiple_of(PAGE_IDS) {
                fences.push(hash);
            }
            filter.insert(hash);
            out.write_all(&id.to_le_bytes())
                .map_err(io("writing", &tmp))?;
            written += 1;
        }
        meta.count = written as u64;
        let mut tail = Vec::with_capacity(fences.len() * 8);
        for f in &fences {
            tail.extend_from_slice(&f.to_le_bytes());
        }
        out.write_all(&tail).map_err(io("writing", &tmp))?;
        // The filter goes out a block at a time: a copy of a large one is memory the
        // window would hold twice for a moment.
        let mut summed = crc32fast::Hasher::new();
        for block in filter.blocks_le() {
            summed.update(&block);
            out.write_all(&block).map_err(io("writing", &tmp))?;
        }
        let mut header = header_bytes(&meta, filter.memory_bytes() as u64);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[..SUMMED]);
        crc.update(&tail);
        crc.combine(&summed);
        header[SUMMED..SUMMED + 4].copy_from_slice(&crc.finalize().to_le_bytes());
        let mut file = out
            .into_inner()
            .map_err(|e| io("writing", &tmp)(e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&header))
            .and_then(|()| file.sync_all())
            .map_err(io("syncing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("renaming", &tmp))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", dir))?;
        Ok(Run {
            meta,
            path,
            file,
            fences,
            filter,
        })
    }

    /// Opens a run written by [`Run::write`], reading its fences and filter.
    pub fn open(path: &Path) -> Result<Run, RunError> {
        let damaged = |why: String| RunError::Damaged {
            path: path.to_owned(),
            why,
        };
        let mut file = File::open(path).map_err(io("opening", path))?;
        let mut header = [0u8; HEADER as usize];
        file.read_exact(&mut header)
            .map_err(|e| damaged(format!("no header ({e})")))?;
        if &header[0..8] != MAGIC {
            return Err(damaged("wrong magic".into()));
        }
        let meta = RunMeta {
            count: u64_at(&header, 8),
            seq: u64_at(&header, 16),
            min_at_ms: u64_at(&header, 24) as i64,
            max_at_ms: u64_at(&header, 32) as i64,
            first_seq: u64_at(&header, 48),
        };
        let filter_len = u64_at(&header, 40);
        let pages = meta.count.div_ceil(PAGE_IDS as u64);
        let len = file.metadata().map_err(io("reading", path))?.len();
        let expected = HEADER + meta.count * ID_BYTES as u64 + pages * 8 + filter_len;
        if len != expected {
            return Err(damaged(format!(
                "{len} bytes where the header says {expected}"
            )));
        }
        file.seek(SeekFrom::Start(HEADER + meta.count * ID_BYTES as u64))
            .map_err(io("reading", path))?;
        let mut tail = vec![0u8; usize::try_from(pages * 8 + filter_len).unwrap_or(0)];
        file.read_exact(&mut tail).map_err(io("reading", path))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[..SUMMED]);
        crc.update(&tail);
        if crc.finalize().to_le_bytes() != header[SUMMED..SUMMED + 4] {
            return Err(damaged("checksum mismatch".into()));
        }
        let (fence_bytes, filter_bytes) = tail.split_at(usize::try_from(pages * 8).unwrap_or(0));
        let fences = fence_bytes.chunks_exact(8).map(|c| u64_at(c, 0)).collect();
        let filter = BlockedBloom::from_bytes(filter_bytes)
            .ok_or_else(|| damaged("the filter is not whole blocks".into()))?;
        Ok(Run {
            meta,
            path: path.to_owned(),
            file,
            fences,
            filter,
        })
    }

    /// Whether the filter lets `hash` through (false: the id is certainly not here).
    #[inline]
    pub fn may_hold(&self, hash: u64) -> bool {
        self.filter.may_contain(hash)
    }

    /// Whether the run holds `id`, whose hash is `hash`: reads the page (or pages) the
    /// fences point to.
    pub fn holds(&self, id: u128, hash: u64) -> Result<bool, RunError> {
        let pages = self.fences.len();
        let mut page = self.fences.partition_point(|&f| f < hash).saturating_sub(1);
        let mut buf = [0u8; PAGE_IDS * ID_BYTES];
        let want = id.to_le_bytes();
        while page < pages {
            let first = page as u64 * PAGE_IDS as u64;
            let n = usize::try_from((self.meta.count - first).min(PAGE_IDS as u64)).unwrap_or(0);
            let bytes = &mut buf[..n * ID_BYTES];
            self.file
                .read_exact_at(bytes, HEADER + first * ID_BYTES as u64)
                .map_err(io("reading", &self.path))?;
            if bytes.chunks_exact(ID_BYTES).any(|c| c == want) {
                return Ok(true);
            }
            // Ids of this hash may continue on the next page only if it starts with it.
            match self.fences.get(page + 1) {
                Some(&next) if next <= hash => page += 1,
                _ => return Ok(false),
            }
        }
        Ok(false)
    }

    /// Every id of the run, in its `(hash, id)` order, read sequentially (for a merge).
    pub fn ids<'a>(
        &'a self,
        hash: impl Fn(u128) -> u64 + 'a,
    ) -> impl Iterator<Item = Result<(u64, u128), RunError>> + 'a {
        const CHUNK_IDS: u64 = 4096;
        let mut buf = Vec::new();
        let mut next = 0u64;
        let mut at = 0usize;
        std::iter::from_fn(move || {
            if at * ID_BYTES == buf.len() {
                if next >= self.meta.count {
                    return None;
                }
                let n = (self.meta.count - next).min(CHUNK_IDS);
                buf.resize(usize::try_from(n).unwrap_or(0) * ID_BYTES, 0);
                if let Err(e) = self
                    .file
                    .read_exact_at(&mut buf, HEADER + next * ID_BYTES as u64)
                {
                    next = self.meta.count;
                    buf.clear();
                    return Some(Err(io("reading", &self.path)(e)));
                }
                next += n;
                at = 0;
            }
            let mut b = [0u8; ID_BYTES];
            b.copy_from_slice(&buf[at * ID_BYTES..(at + 1) * ID_BYTES]);
            at += 1;
            let id = u128::from_le_bytes(b);
            Some(Ok((hash(id), id)))
        })
    }

    /// Bytes of memory the run holds (fences and filter).
    pub fn memory_bytes(&self) -> usize {
        self.fences.len() * 8 + self.filter.memory_bytes()
    }

    /// Deletes the run's file (it stays readable while open).
    pub fn delete(&self) -> Result<(), RunError> {
        std::fs::remove_file(&self.path).map_err(io("deleting", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::IdSet;

    #[test]
    fn a_run_finds_its_ids_survives_a_reopen_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = IdSet::new(0, 77);
        let id = |i: u128| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) | 1;
        for i in 0..10_000 {
            set.insert(id(i), set.hash(id(i)));
        }
        let meta = RunMeta {
            count: set.len() as u64,
            first_seq: 3,
            seq: 3,
            min_at_ms: 10,
            max_at_ms: 20,
        };
        let frozen = set.clone().freeze();
        let run = Run::write(dir.path(), meta, frozen.sorted().map(Ok), 12).unwrap();
        let check = |run: &Run| {
            for i in 0..10_000 {
                let h = set.hash(id(i));
                assert!(run.may_hold(h));
                assert!(run.holds(id(i), h).unwrap(), "id #{i}");
            }
            for i in 10_000..12_000 {
                assert!(!run.holds(id(i), set.hash(id(i))).unwrap());
            }
        };
        check(&run);
        drop(run);
        let path = dir.path().join(file_name(3, 3));
        let reopened = Run::open(&path).unwrap();
        assert_eq!(reopened.meta, meta);
        check(&reopened);
        // Read back in order, each id with its hash.
        let back: Vec<(u64, u128)> = reopened.ids(|i| set.hash(i)).map(Result::unwrap).collect();
        assert_eq!(back, frozen.sorted().collect::<Vec<_>>());
        // A flipped byte in the filter is found.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(Run::open(&path), Err(RunError::Damaged { .. })));
        bytes.truncate(100);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(Run::open(&path), Err(RunError::Damaged { .. })));
    }
}
