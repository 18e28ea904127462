//! The dedupe journal: with Kafka as the sink, the ids of delivered events
//! are also written to the data directory, so that the dedupe window
//! survives a restart as it does with the embedded log (which is its own
//! journal). Each group of deliveries is one record of 24 bytes per event
//! (the 16-byte id, then the admission time in Unix milliseconds), synced
//! before the group is answered. Segments older than the window are deleted.

use sluice_log::{Log, LogError, LogOptions, NewRecord};
use std::path::Path;
use std::time::{Duration, SystemTime};

const TOPIC: &str = "ids";
const ENTRY: usize = 24;

/// The journal of delivered event ids.
#[derive(Debug)]
pub struct DedupeJournal {
    log: Log,
    window: Duration,
}

impl DedupeJournal {
    /// Opens (creating if needed) the journal in `dir`, keeping ids for `window`.
    pub fn open(dir: &Path, window: Duration) -> Result<DedupeJournal, LogError> {
        let options = LogOptions {
            segment_bytes: 64 * 1024 * 1024,
            ..LogOptions::default()
        };
        Ok(DedupeJournal {
            log: Log::open(dir, options)?,
            window,
        })
    }

    /// Appends ids admitted at the given Unix milliseconds, and syncs them.
    pub fn record(&mut self, ids: &[([u8; 16], i64)]) -> Result<(), LogError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut value = Vec::with_capacity(ids.len() * ENTRY);
        for (id, at_ms) in ids {
            value.extend_from_slice(id);
            value.extend_from_slice(&at_ms.to_le_bytes());
        }
        let at_ms = ids.iter().map(|(_, at)| *at).max().unwrap_or(0);
        self.log.append(
            TOPIC,
            &[NewRecord {
                timestamp_ms: at_ms,
                key: None,
                headers: &[],
                value: &value,
            }],
        )?;
        self.log.sync()
    }

    /// Calls `f` with every id recorded at or after `since_ms`.
    pub fn for_each_since(
        &self,
        since_ms: i64,
        mut f: impl FnMut([u8; 16], i64),
    ) -> Result<(), LogError> {
        const CHUNK: usize = 1_000;
        // Segments last written before `since_ms` hold no id admitted since: skip them.
        let since =
            std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(since_ms).unwrap_or(0));
        let mut from = self.log.first_offset_written_since(TOPIC, since)?;
        loop {
            let records = self.log.read(TOPIC, from, CHUNK)?;
            let Some(last) = records.last() else {
                return Ok(());
            };
            from = last.offset + 1;
            for r in records.iter().filter(|r| r.timestamp_ms >= since_ms) {
                for entry in r.value.chunks_exact(ENTRY) {
                    let (id, at) = entry.split_at(16);
                    let (Ok(id), Ok(at)) = (<[u8; 16]>::try_from(id), <[u8; 8]>::try_from(at))
                    else {
                        continue;
                    };
                    let at_ms = i64::from_le_bytes(at);
                    if at_ms >= since_ms {
                        f(id, at_ms);
                    }
                }
            }
            if records.len() < CHUNK {
                return Ok(());
            }
        }
    }

    /// Deletes segments whose ids have all left the window.
    pub fn trim(&mut self, now: SystemTime) -> Result<usize, LogError> {
        match now.checked_sub(self.window) {
            Some(cutoff) => self.log.delete_segments_before(TOPIC, cutoff),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_a_reopen_and_old_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let window = Duration::from_secs(3600);
        {
            let mut j = DedupeJournal::open(dir.path(), window).unwrap();
            j.record(&[([1; 16], 1_000), ([2; 16], 2_000)]).unwrap();
            j.record(&[([3; 16], 3_000)]).unwrap();
            j.record(&[]).unwrap();
        }
        let j = DedupeJournal::open(dir.path(), window).unwrap();
        let mut seen = Vec::new();
        j.for_each_since(2_000, |id, at| seen.push((id[0], at)))
            .unwrap();
        assert_eq!(seen, [(2, 2_000), (3, 3_000)]);
    }

    #[test]
    fn trimming_deletes_only_closed_segments_past_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = DedupeJournal::open(dir.path(), Duration::from_secs(60)).unwrap();
        j.log = Log::open(
            dir.path(),
            LogOptions {
                segment_bytes: 64,
                ..LogOptions::default()
            },
        )
        .unwrap();
        for n in 0..5u8 {
            j.record(&[([n; 16], i64::from(n)), ([n; 16], i64::from(n))])
                .unwrap();
        }
        let segments = || {
            std::fs::read_dir(dir.path().join(TOPIC))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
                })
                .count()
        };
        assert_eq!(segments(), 5, "each 48-byte group fills a 64-byte segment");
        // Nothing is older than a minute yet.
        assert_eq!(j.trim(SystemTime::now()).unwrap(), 0);
        // An hour on, every closed segment goes and the open one stays.
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(j.trim(later).unwrap(), 4);
        assert_eq!(segments(), 1);
        let mut seen = Vec::new();
        j.for_each_since(0, |id, _| seen.push(id[0])).unwrap();
        assert_eq!(seen, [4, 4]);
    }
}
