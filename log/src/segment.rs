//! Segment files: their names, listing them, and the file calls that make
//! new ones durable.

use crate::LogError;
use crate::error::io_err;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

/// Extension of segment files.
const SEGMENT_EXT: &str = "log";

/// A segment file and the offset of its first record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
}

/// The path of the segment of `dir` whose first record is `base`.
pub(crate) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.{SEGMENT_EXT}"))
}

/// The base offset a segment file's name gives, if it is a segment.
fn segment_base(path: &Path) -> Option<u64> {
    path.extension()
        .filter(|e| *e == SEGMENT_EXT)
        .and(path.file_stem())
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse::<u64>().ok())
}

/// The segments in a topic's folder, oldest first; none when it does not exist.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<Segment>, LogError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", dir)(e)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_err("listing", dir))?.path();
        if let Some(base) = segment_base(&path) {
            segments.push(Segment { base, path });
        }
    }
    segments.sort();
    Ok(segments)
}

/// Opens a file for appending, creating it when needed.
pub(crate) fn open_append(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err("opening", path))
}

/// Makes a new or removed directory entry durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing the folder", dir))
}

/// When a file was last written.
pub(crate) fn modified(path: &Path) -> Result<std::time::SystemTime, LogError> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(io_err("reading the age of", path))
}
