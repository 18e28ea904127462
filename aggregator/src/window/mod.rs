//! The dedupe window: exact answers for every id admitted in the last
//! `window`, in a few bytes of memory per id. New ids go into the open
//! slice, an exact in-memory table ([`IdSet`]). A slice closes when it holds
//! a thirty-second of the window's ids (at least `min_slice_ids`) or spans
//! a thirty-second of its time; once none of its ids waits for its write to be
//! confirmed (a failed write must be able to forget its id), a background
//! thread writes it to disk as a [`Run`]: ids sorted by hash, page fences
//! and a Bloom filter. Then only the fences and the filter stay in memory
//! (about 1.5 bytes an id at 12 filter bits); a filter hit is confirmed by
//! reading one page of the run, so answers stay exact. Runs go once all
//! their ids have left the window.
//!
//! The runs are saved beside the log (`<data>/dedupe-slices`), so a restart
//! opens them (fences and filters only) and rebuilds just the slices not yet
//! written, from the log or the dedupe journal since the newest run's last
//! id. Without a directory (tests, benchmarks of other parts) slices stay in
//! memory.

mod run;

use run::io;
pub use run::{Run, RunError, RunMeta};

use sluice_shared::{FrozenIds, IdSet};
use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};

/// Settings of a window.
#[derive(Debug, Clone)]
pub struct WindowOptions {
    /// How long an id is remembered, milliseconds.
    pub window_ms: i64,
    /// Where the runs are saved; `None` keeps every slice in memory.
    pub dir: Option<PathBuf>,
    /// A slice closes at no fewer ids than this (unless its time is up).
    pub min_slice_ids: usize,
    /// Bloom filter bits per id of a run.
    pub bits_per_key: usize,
    /// The hash seed when there is no directory (with one, the seed saved there).
    pub seed: u64,
}

impl Default for WindowOptions {
    fn default() -> Self {
        WindowOptions {
            window_ms: 3_600_000,
            dir: None,
            min_slice_ids: 1 << 20,
            bits_per_key: 12,
            seed: 0,
        }
    }
}

/// Slices a window is cut into: by time, or by count when ids come faster than that.
const SLICES: i64 = 32;

/// Counts of what lookups cost, since the window opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Filter hits confirmed against a run on disk.
    pub disk_lookups: u64,
    /// Of those, ids the run did not hold (the filter's false positives).
    pub false_positives: u64,
    /// Lookups that could not read a run (the id was taken as new).
    pub disk_errors: u64,
}

/// A closed slice: in memory until its run is written.
#[derive(Debug)]
struct Slice {
    seq: u64,
    ids: FrozenIds,
    min_at_ms: i64,
    max_at_ms: i64,
}

/// A closed slice whose ids may still be forgotten (a write not yet confirmed).
#[derive(Debug)]
struct Closing {
    seq: u64,
    ids: IdSet,
    min_at_ms: i64,
    max_at_ms: i64,
}

/// Work for the writer thread.
#[derive(Debug)]
enum Job {
    /// Write a closed slice as a run.
    Seal(Arc<Slice>),
    /// Merge two adjacent runs into one.
    Merge(Arc<Run>, Arc<Run>),
}

/// What the writer thread did.
#[derive(Debug)]
enum Done {
    Sealed(Result<Run, (u64, RunError)>),
    Merged(Result<Run, RunError>),
}

/// More runs than this, and adjacent ones are merged (up to an eighth of the window's
/// time each), so that a lookup checks few filters.
const MAX_RUNS: usize = 8;

/// The window.
#[derive(Debug)]
pub struct DedupeWindow {
    options: WindowOptions,
    seed: u64,
    open: IdSet,
    open_min_ms: i64,
    open_max_ms: i64,
    closing: VecDeque<Closing>,
    sealing: Vec<Arc<Slice>>,
    runs: Vec<Arc<Run>>,
    /// Ids the open slice closes at (from [`DedupeWindow::slice_ids`], kept current).
    slice_cap: usize,
    /// A merge is under way.
    merging: bool,
    next_seq: u64,
    sealer: Option<(Sender<Job>, Receiver<Done>)>,
    sealer_thread: Option<std::thread::JoinHandle<()>>,
    stats: WindowStats,
    covered_until_ms: Option<i64>,
}

/// The seed saved in `dir`, made on first use: runs are sorted by the seeded hash.
fn saved_seed(dir: &Path) -> Result<u64, RunError> {
    let path = dir.join("seed");
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes);
            Ok(u64::from_le_bytes(a))
        }
        Ok(_) => Err(RunError::Damaged {
            path,
            why: "not 8 bytes".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
            let tmp = dir.join("seed.tmp");
            std::fs::write(&tmp, seed.to_le_bytes()).map_err(io("writing", &tmp))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io("syncing", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(io("renaming", &tmp))?;
            Ok(seed)
        }
        Err(e) => Err(io("reading", &path)(e)),
    }
}

impl DedupeWindow {
    /// A window that keeps every slice in memory (its `dir` is not used).
    pub fn in_memory(options: WindowOptions) -> DedupeWindow {
        DedupeWindow {
            seed: options.seed,
            open: IdSet::new(0, options.seed),
            open_min_ms: i64::MAX,
            open_max_ms: i64::MIN,
            closing: VecDeque::new(),
            sealing: Vec::new(),
            runs: Vec::new(),
            slice_cap: options.min_slice_ids.max(1),
            merging: false,
            next_seq: 0,
            sealer: None,
            sealer_thread: None,
            stats: WindowStats::default(),
            covered_until_ms: None,
            options,
        }
    }

    /// Opens a window, loading the runs saved in its directory (dropping those that
    /// have left the window at `now_ms`).
    pub fn open(options: WindowOptions, now_ms: i64) -> Result<DedupeWindow, RunError> {
        let mut window = DedupeWindow::in_memory(options);
        let Some(dir) = window.options.dir.clone() else {
            return Ok(window);
        };
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        window.seed = saved_seed(&dir)?;
        window.open = IdSet::new(0, window.seed);
        let mut damaged = false;
        for entry in std::fs::read_dir(&dir).map_err(io("listing", &dir))? {
            let path = entry.map_err(io("listing", &dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                // A run whose write a crash cut short: its slice is rebuilt from the log.
                let _ = std::fs::remove_file(&path);
            } else if name.ends_with(".run") {
                match Run::open(&path) {
                    Ok(run) => window.runs.push(Arc::new(run)),
                    Err(e) => {
                        tracing::warn!(error = %e, "A dedupe run is damaged; it is deleted and its ids are read again from the log.");
                        let _ = std::fs::remove_file(&path);
                        damaged = true;
                    }
                }
            }
        }
        // A merge that a crash cut short between writing its run and deleting its
        // inputs leaves both: the inputs go.
        window
            .runs
            .sort_by_key(|r| (r.meta.first_seq, std::cmp::Reverse(r.meta.seq)));
        let mut kept: Vec<Arc<Run>> = Vec::with_capacity(window.runs.len());
        for run in std::mem::take(&mut window.runs) {
            match kept.last() {
                Some(last) if run.meta.seq <= last.meta.seq => {
                    let _ = run.delete();
                }
                _ => kept.push(run),
            }
        }
        window.runs = kept;
        let contiguous = window
            .runs
            .windows(2)
            .all(|w| w[1].meta.first_seq == w[0].meta.seq + 1);
        window.next_seq = window.runs.last().map_or(0, |r| r.meta.seq + 1);
        if !damaged && contiguous {
            window.covered_until_ms = window.runs.iter().map(|r| r.meta.max_at_ms).max();
        }
        window.expire(now_ms);
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<Job>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let (bits, seed) = (window.options.bits_per_key, window.seed);
        let thread = std::thread::Builder::new()
            .name("sluice-dedupe".into())
            .spawn(move || write_runs(&dir, bits, seed, jobs_rx, done_tx))
            .map_err(|e| io("starting the dedupe writer for", Path::new("dedupe"))(e))?;
        window.sealer = Some((jobs_tx, done_rx));
        window.sealer_thread = Some(thread);
        Ok(window)
    }

    /// The time from which the log must be read again to rebuild the slices not saved
    /// (`None`: the whole window).
    pub fn covered_until_ms(&self) -> Option<i64> {
        self.covered_until_ms
    }

    fn hash(&self, id: u128) -> u64 {
        self.open.hash(id)
    }

    /// Whether `id` was admitted within the window.
    pub fn contains(&mut self, id: u128) -> bool {
        let h = self.hash(id);
        if self.open.contains(id, h)
            || self.closing.iter().any(|s| s.ids.contains(id, h))
            || self.sealing.iter().any(|s| s.ids.contains(id, h))
        {
            return true;
        }
        for run in self.runs.iter().rev() {
            if !run.may_hold(h) {
                continue;
            }
            self.stats.disk_lookups += 1;
            match run.holds(id, h) {
                Ok(true) => return true,
                Ok(false) => self.stats.false_positives += 1,
                Err(e) => {
                    self.stats.disk_errors += 1;
                    tracing::error!(error = %e, "Cannot read a dedupe run; the event is taken as new.");
                }
            }
        }
        false
    }

    /// Remembers `id`, just found absent, as admitted at `at_ms`.
    pub fn insert_new(&mut self, id: u128, at_ms: i64) {
        let h = self.hash(id);
        self.open.insert(id, h);
        self.open_min_ms = self.open_min_ms.min(at_ms);
        self.open_max_ms = self.open_max_ms.max(at_ms);
        if self.open.len() >= self.slice_cap {
            self.close_open();
        }
    }

    /// Remembers `id` as admitted at `at_ms` (rebuilding the window after a restart).
    pub fn remember(&mut self, id: u128, at_ms: i64) {
        let h = self.hash(id);
        if !self.open.contains(id, h) {
            self.insert_new(id, at_ms);
        }
    }

    /// Forgets `id` (its write failed); returns whether it was held. Only ids of slices
    /// not yet handed to the writer can be forgotten, which are all ids awaiting a write.
    pub fn remove(&mut self, id: u128) -> bool {
        let h = self.hash(id);
        self.open.remove(id, h) || self.closing.iter_mut().any(|s| s.ids.remove(id, h))
    }

    /// Ids a slice closes at: a thirty-second of those held, at least `min_slice_ids`.
    fn slice_ids(&self) -> usize {
        self.options
            .min_slice_ids
            .max(self.len() / SLICES as usize)
            .max(1)
    }

    fn close_open(&mut self) {
        if self.open.is_empty() {
            return;
        }
        // Sized like the slice before it, so steady traffic does not grow tables.
        let next = IdSet::new(self.open.len().min(self.slice_ids()), self.seed);
        let ids = std::mem::replace(&mut self.open, next);
        self.closing.push_back(Closing {
            seq: self.next_seq,
            ids,
            min_at_ms: self.open_min_ms,
            max_at_ms: self.open_max_ms,
        });
        self.next_seq += 1;
        self.slice_cap = self.slice_ids();
        self.open_min_ms = i64::MAX;
        self.open_max_ms = i64::MIN;
    }

    /// Once a second or so: closes the open slice when its time is up, hands closed
    /// slices none of whose ids is in `pending` to the writer, takes in written runs,
    /// and drops what has left the window.
    pub fn maintain<S: BuildHasher>(&mut self, now_ms: i64, pending: &HashSet<u128, S>) {
        let slice_ms = (self.options.window_ms / SLICES).max(1);
        if !self.open.is_empty() && now_ms.saturating_sub(self.open_min_ms) >= slice_ms {
            self.close_open();
        }
        while let Some(front) = self.closing.front() {
            if pending
                .iter()
                .any(|&p| front.ids.contains(p, self.open.hash(p)))
            {
                break;
            }
            let Some(c) = self.closing.pop_front() else {
                break;
            };
            let slice = Arc::new(Slice {
                seq: c.seq,
                ids: c.ids.freeze(),
                min_at_ms: c.min_at_ms,
                max_at_ms: c.max_at_ms,
            });
            if let Some((jobs, _)) = &self.sealer
                && jobs.send(Job::Seal(slice.clone())).is_err()
            {
                tracing::error!("The dedupe writer has stopped; closed slices stay in memory.");
            }
            self.sealing.push(slice);
        }
        let done: Vec<Done> = match &self.sealer {
            Some((_, results)) => results.try_iter().collect(),
            None => Vec::new(),
        };
        for d in done {
            self.take_in(d);
        }
        self.merge_some();
        self.expire(now_ms);
        self.slice_cap = self.slice_ids();
    }

    /// Takes in what the writer did.
    fn take_in(&mut self, done: Done) {
        match done {
            Done::Sealed(Ok(run)) => {
                self.sealing.retain(|s| s.seq != run.meta.seq);
                let at = self.runs.partition_point(|r| r.meta.seq < run.meta.seq);
                self.runs.insert(at, Arc::new(run));
            }
            Done::Sealed(Err((seq, e))) => {
                tracing::error!(seq, error = %e, "Could not save a dedupe slice; it stays in memory and a restart reads its ids from the log again.");
            }
            Done::Merged(Ok(run)) => {
                self.merging = false;
                let (first, last) = (run.meta.first_seq, run.meta.seq);
                self.runs
                    .retain(|r| r.meta.seq < first || r.meta.first_seq > last);
                let at = self.runs.partition_point(|r| r.meta.seq < first);
                self.runs.insert(at, Arc::new(run));
            }
            Done::Merged(Err(e)) => {
                self.merging = false;
                tracing::warn!(error = %e, "Could not merge two dedupe runs; both stay.");
            }
        }
    }

    /// Over [`MAX_RUNS`] runs, hands the writer the adjacent pair with the fewest ids
    /// whose ids together span at most an eighth of the window.
    fn merge_some(&mut self) {
        if self.merging || self.runs.len() <= MAX_RUNS {
            return;
        }
        let Some((jobs, _)) = &self.sealer else {
            return;
        };
        let span = self.options.window_ms / 8;
        let pair = self
            .runs
            .windows(2)
            .enumerate()
            .filter(|(_, w)| {
                w[1].meta.first_seq == w[0].meta.seq + 1
                    && w[1].meta.max_at_ms.saturating_sub(w[0].meta.min_at_ms) <= span
            })
            .min_by_key(|(_, w)| w[0].meta.count + w[1].meta.count)
            .map(|(i, _)| i);
        if let Some(i) = pair
            && jobs
                .send(Job::Merge(self.runs[i].clone(), self.runs[i + 1].clone()))
                .is_ok()
        {
            self.merging = true;
        }
    }

    /// Drops slices and runs whose every id is older than the window.
    fn expire(&mut self, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(self.options.window_ms);
        self.sealing.retain(|s| s.max_at_ms >= cutoff);
        self.closing.retain(|s| s.max_at_ms >= cutoff);
        let (keep, old): (Vec<Arc<Run>>, Vec<Arc<Run>>) = std::mem::take(&mut self.runs)
            .into_iter()
            .partition(|r| r.meta.max_at_ms >= cutoff);
        self.runs = keep;
        for run in old {
            if let Err(e) = run.delete() {
                tracing::warn!(error = %e, "Could not delete a dedupe run that left the window.");
            }
        }
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.open.len()
            + self.closing.iter().map(|s| s.ids.len()).sum::<usize>()
            + self.sealing.iter().map(|s| s.ids.len()).sum::<usize>()
            + self
                .runs
                .iter()
                .map(|r| usize::try_from(r.meta.count).unwrap_or(usize::MAX))
                .sum::<usize>()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory held: tables of the slices in memory, fences and filters of runs.
    pub fn memory_bytes(&self) -> usize {
        self.open.memory_bytes()
            + self
                .closing
                .iter()
                .map(|s| s.ids.memory_bytes())
                .sum::<usize>()
            + self
                .sealing
                .iter()
                .map(|s| s.ids.memory_bytes())
                .sum::<usize>()
            + self.runs.iter().map(|r| r.memory_bytes()).sum::<usize>()
    }

    /// Runs on disk.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Slices closed and not yet saved as runs.
    pub fn unsaved_slices(&self) -> usize {
        self.closing.len() + self.sealing.len()
    }

    /// What lookups cost so far.
    pub fn stats(&self) -> WindowStats {
        self.stats
    }

    /// Waits until every slice handed to the writer is saved and no merge is due
    /// (for tests and benchmarks).
    pub fn flush(&mut self, now_ms: i64) {
        let empty: HashSet<u128> = HashSet::new();
        self.maintain(now_ms, &empty);
        while !self.sealing.is_empty() || self.merging {
            let Some((_, results)) = &self.sealer else {
                return;
            };
            match results.recv() {
                Ok(done) => self.take_in(done),
                Err(_) => return,
            }
            self.merge_some();
        }
    }

    /// Closes the open slice now (for tests and benchmarks).
    pub fn close_slice(&mut self) {
        self.close_open();
    }
}

impl Drop for DedupeWindow {
    /// Lets the writer finish the run it is writing.
    fn drop(&mut self) {
        self.sealer = None;
        if let Some(t) = self.sealer_thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: each slice handed over becomes a run; each pair of runs, one.
fn write_runs(dir: &Path, bits: usize, seed: u64, jobs: Receiver<Job>, done: Sender<Done>) {
    let hasher = IdSet::new(0, seed);
    for job in jobs {
        let result = match job {
            Job::Seal(slice) => {
                let meta = RunMeta {
                    count: slice.ids.len() as u64,
                    first_seq: slice.seq,
                    seq: slice.seq,
                    min_at_ms: slice.min_at_ms,
                    max_at_ms: slice.max_at_ms,
                };
                let ids = slice.ids.sorted().map(Ok);
                Done::Sealed(Run::write(dir, meta, ids, bits).map_err(|e| (slice.seq, e)))
            }
            Job::Merge(a, b) => Done::Merged(merge(dir, bits, &hasher, &a, &b)),
        };
        if done.send(result).is_err() {
            return;
        }
    }
}

/// Merges runs `a` and `b` (adjacent, `a` first) into one run, an id in both once, then
/// deletes their files (still readable by the window until it takes the merged run in).
fn merge(dir: &Path, bits: usize, hasher: &IdSet, a: &Run, b: &Run) -> Result<Run, RunError> {
    let meta = RunMeta {
        count: a.meta.count + b.meta.count,
        first_seq: a.meta.first_seq,
        seq: b.meta.seq,
        min_at_ms: a.meta.min_at_ms.min(b.meta.min_at_ms),
        max_at_ms: a.meta.max_at_ms.max(b.meta.max_at_ms),
    };
    let hash = |id| hasher.hash(id);
    let mut left = a.ids(hash).peekable();
    let mut right = b.ids(hash).peekable();
    let merged = std::iter::from_fn(move || {
        let (pick_left, same) = match (left.peek(), right.peek()) {
            (None, None) => return None,
            (Some(Err(_)), _) | (Some(_), None) => (true, false),
            (None, Some(_)) | (_, Some(Err(_))) => (false, false),
            (Some(Ok(l)), Some(Ok(r))) => (l <= r, l == r),
        };
        if same {
            right.next();
        }
        if pick_left { left.next() } else { right.next() }
    });
    let run = Run::write(dir, meta, merged, bits)?;
    for input in [a, b] {
        if let Err(e) = input.delete() {
            tracing::warn!(error = %e, "Could not delete a merged dedupe run.");
        }
    }
    Ok(run)
}

#[cfg(test)]
mod tests;
