//! The dependency index in the embedded store: the edges in memory, every
//! change appended to a journal file (one JSON line per edge added or
//! removed) and made durable at the end of each event's changes. Opening
//! replays the journal (a torn last line, from a crash while writing, is
//! dropped); once the journal holds far more lines than edges it is
//! rewritten, through a temporary file renamed over it.

use crate::fanout::{Index, MemoryIndex};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The journal's file name in its folder.
const FILE: &str = "dependencies.jsonl";

/// A journal that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error("the dependency index at {path}: {source}")]
pub struct JournalError {
    path: PathBuf,
    source: std::io::Error,
}

/// The index kept in a folder.
pub struct JournalIndex {
    edges: MemoryIndex,
    count: usize,
    lines: usize,
    path: PathBuf,
    out: BufWriter<File>,
}

impl JournalIndex {
    /// Opens (or starts) the index in `dir`.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let path = dir.join(FILE);
        let fail = |source| JournalError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(fail)?;
        let mut edges = MemoryIndex::default();
        let mut count = 0usize;
        let mut lines = 0usize;
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let line = line.map_err(fail)?;
                let Ok((op, target, dependent)) =
                    serde_json::from_str::<(String, String, String)>(&line)
                else {
                    tracing::warn!(path = %path.display(), "A torn line at the end of the dependency journal is dropped.");
                    break;
                };
                lines += 1;
                let had = edges.contains(&target, &dependent);
                match op.as_str() {
                    "+" if !had => {
                        let _ = edges.add(&target, &dependent);
                        count += 1;
                    }
                    "-" if had => {
                        let _ = edges.remove(&target, &dependent);
                        count -= 1;
                    }
                    _ => {}
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(fail)?;
        let mut index = JournalIndex {
            edges,
            count,
            lines,
            path,
            out: BufWriter::new(file),
        };
        // What a crash tore is not left under new lines.
        index.compact()?;
        Ok(index)
    }

    /// Edges held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no edge is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn fail(&self, source: std::io::Error) -> JournalError {
        JournalError {
            path: self.path.clone(),
            source,
        }
    }

    fn append(&mut self, op: &str, target: &str, dependent: &str) -> Result<(), JournalError> {
        let line = serde_json::json!([op, target, dependent]).to_string();
        writeln!(self.out, "{line}").map_err(|e| self.fail(e))?;
        self.lines += 1;
        Ok(())
    }

    /// Rewrites the journal as the edges held.
    fn compact(&mut self) -> Result<(), JournalError> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let write = || -> std::io::Result<File> {
            let mut w = BufWriter::new(File::create(&tmp)?);
            for (t, d) in self.edges.edges() {
                writeln!(w, "{}", serde_json::json!(["+", t, d]))?;
            }
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
            OpenOptions::new().append(true).open(&self.path)
        };
        let file = write().map_err(|e| self.fail(e))?;
        self.out = BufWriter::new(file);
        self.lines = self.count;
        Ok(())
    }
}

impl Index for JournalIndex {
    type Error = JournalError;

    fn add(&mut self, target: &str, dependent: &str) -> Result<(), JournalError> {
        if self.edges.contains(target, dependent) {
            return Ok(());
        }
        self.append("+", target, dependent)?;
        let _ = self.edges.add(target, dependent);
        self.count += 1;
        Ok(())
    }

    fn remove(&mut self, target: &str, dependent: &str) -> Result<(), JournalError> {
        if !self.edges.contains(target, dependent) {
            return Ok(());
        }
        self.append("-", target, dependent)?;
        let _ = self.edges.remove(target, dependent);
        self.count -= 1;
        Ok(())
    }

    fn page(
        &mut self,
        target: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, JournalError> {
        Ok(self
            .edges
            .page(target, after, limit)
            .unwrap_or_else(|e| match e {}))
    }

    fn sync(&mut self) -> Result<(), JournalError> {
        self.out.flush().map_err(|e| self.fail(e))?;
        self.out.get_ref().sync_data().map_err(|e| self.fail(e))?;
        if self.lines > 2 * self.count + 10_000 {
            self.compact()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::{PAGE, expand};

    #[test]
    fn edges_survive_a_reopen_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut index = JournalIndex::open(dir.path()).unwrap();
            for i in 0..600 {
                index.add("T", &format!("P{i:03}")).unwrap();
            }
            index.add("T", "P000").unwrap();
            index.remove("T", "P001").unwrap();
            index.remove("T", "nobody").unwrap();
            index.sync().unwrap();
            assert_eq!(index.len(), 599);
        }
        // A crash in the middle of a line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(b"[\"+\",\"T\",\"P9").unwrap();
        drop(f);
        let mut index = JournalIndex::open(dir.path()).unwrap();
        assert_eq!(index.len(), 599);
        let first = expand(&mut index, "T", None, PAGE).unwrap();
        assert_eq!(first.dependents.len(), PAGE);
        assert_eq!(first.dependents[..2], ["P000", "P002"]);
        let rest = expand(&mut index, "T", first.cont.as_deref(), PAGE).unwrap();
        assert_eq!(rest.dependents.len(), 99);
        assert_eq!(rest.cont, None);
        // New lines after the torn one are read back too.
        index.add("U", "Q").unwrap();
        index.sync().unwrap();
        drop(index);
        let mut index = JournalIndex::open(dir.path()).unwrap();
        assert_eq!(index.len(), 600);
        assert_eq!(index.page("U", None, 10).unwrap(), ["Q"]);
    }
}
