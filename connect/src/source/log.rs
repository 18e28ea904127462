//! The embedded log as a source: a reader per topic, started where the store says.

use super::{Assignment, Discover, Lookup, Source, SourceError, SourceRecord, Tp};
use sluice_log::{LogOptions, Reader, Start};
use sluice_shared::record_headers::SCHEMA_URI;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often an idle poll looks for new records.
const IDLE_CHECK: Duration = Duration::from_millis(20);
/// How often the log's folder is listed for new topics of streams taken by pattern.
const SCAN_EVERY: Duration = Duration::from_secs(2);

/// Readers of the sink's topics in the embedded log.
pub struct LogSource {
    dir: PathBuf,
    topics: Vec<Arc<str>>,
    readers: Vec<Option<Reader>>,
    /// Readers at the end of each topic, for lag.
    ends: Vec<Option<Reader>>,
    paused: BTreeSet<Arc<str>>,
    lookup: Lookup,
    fresh: Option<Assignment>,
    /// The next reader to poll first, so that one busy topic does not starve the others.
    turn: usize,
    /// Topics to take as they appear (streams configured by `/regex/`).
    discover: Option<Discover>,
    scanned: Instant,
}

impl LogSource {
    /// Readers of `topics` in the log at `dir`, positioned by `lookup`, and of every topic
    /// `discover` takes, as it appears.
    pub fn open(
        dir: PathBuf,
        topics: Vec<Arc<str>>,
        lookup: Lookup,
        discover: Option<Discover>,
    ) -> Result<Self, SourceError> {
        let n = topics.len();
        let mut source = LogSource {
            dir,
            topics,
            readers: (0..n).map(|_| None).collect(),
            ends: (0..n).map(|_| None).collect(),
            paused: BTreeSet::new(),
            lookup,
            fresh: None,
            turn: 0,
            discover,
            scanned: Instant::now(),
        };
        source.scan();
        let assignment = source.rewind()?;
        source.fresh = Some(assignment);
        Ok(source)
    }
}

impl LogSource {
    /// Adds the topics `discover` takes that have appeared; whether there were any.
    fn scan(&mut self) -> bool {
        self.scanned = Instant::now();
        let Some(discover) = &self.discover else {
            return false;
        };
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return false;
        };
        let mut found: Vec<Arc<str>> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|name| !self.topics.iter().any(|t| **t == **name) && discover(name))
            .map(Arc::from)
            .collect();
        found.sort();
        for topic in &found {
            tracing::info!(%topic, "A new topic of a stream taken by pattern; reading it.");
            self.topics.push(topic.clone());
            self.readers.push(None);
            self.ends.push(None);
        }
        !found.is_empty()
    }
}

impl Source for LogSource {
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<SourceRecord>, SourceError> {
        if self.discover.is_some() && self.scanned.elapsed() >= SCAN_EVERY && self.scan() {
            // Every reader starts again at the store's positions, so the runner can drop
            // what it holds unwritten and take the new topic with the rest.
            let assignment = self.rewind()?;
            self.fresh = Some(assignment);
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        loop {
            let mut out = Vec::new();
            let n = self.readers.len();
            for i in 0..n {
                let at = (self.turn + i) % n.max(1);
                let topic = self.topics[at].clone();
                let Some(reader) = &mut self.readers[at] else {
                    continue;
                };
                if out.len() >= max {
                    break;
                }
                for r in reader.poll(max - out.len())? {
                    out.push(SourceRecord {
                        topic: topic.clone(),
                        partition: 0,
                        offset: r.offset as i64,
                        timestamp_ms: r.timestamp_ms,
                        schema_uri: r
                            .header(SCHEMA_URI)
                            .map(|v| String::from_utf8_lossy(v).into_owned()),
                        value: r.value,
                    });
                }
            }
            self.turn = self.turn.wrapping_add(1);
            let now = Instant::now();
            if !out.is_empty() || now >= deadline {
                return Ok(out);
            }
            std::thread::sleep(IDLE_CHECK.min(deadline - now));
        }
    }

    fn take_assignment(&mut self) -> Option<Assignment> {
        self.fresh.take()
    }

    fn rewind(&mut self) -> Result<Assignment, SourceError> {
        let tps: Vec<Tp> = self.topics.iter().map(|t| (t.clone(), 0)).collect();
        let positions = (self.lookup)(&tps).map_err(SourceError::Positions)?;
        let mut assignment = Assignment::new();
        for (i, ((topic, _), at)) in tps.iter().zip(positions).enumerate() {
            if self.paused.contains(topic) {
                continue;
            }
            let start = at.map_or(Start::Earliest, |n| Start::Offset(n.max(0) as u64));
            self.readers[i] = Some(Reader::open(
                &self.dir,
                topic,
                start,
                LogOptions::default(),
            )?);
            assignment.insert((topic.clone(), 0), at);
        }
        Ok(assignment)
    }

    fn pause(&mut self, topic: &str) {
        if let Some(i) = self.topics.iter().position(|t| &**t == topic) {
            self.readers[i] = None;
            self.paused.insert(self.topics[i].clone());
        }
    }

    fn ends(&mut self) -> Vec<(Tp, i64)> {
        let mut out = Vec::new();
        for (i, topic) in self.topics.iter().enumerate() {
            if self.ends[i].is_none() {
                self.ends[i] =
                    Reader::open(&self.dir, topic, Start::Earliest, LogOptions::default()).ok();
            }
            if let Some(end) = self.ends[i].as_mut().and_then(|r| r.skip_to_end().ok()) {
                out.push(((topic.clone(), 0), end as i64));
            }
        }
        out
    }
}
