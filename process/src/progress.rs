//! Where a rule stands in its partitions, and which jobs may run now. Events
//! of a partition finish out of order (a rule runs many at once), so the
//! position committed is the lowest offset not yet finished: a processor
//! that stops repeats what was under way and skips nothing. Jobs that share
//! a key run one after another in the order they were read; jobs without a
//! key, or with different keys, run side by side.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;

/// One partition's offsets under way.
#[derive(Debug, Default)]
struct Partition {
    /// The offset after the last one begun.
    next: i64,
    /// Offsets begun and not finished.
    open: BTreeSet<i64>,
    /// The position last handed out to be committed.
    committed: Option<i64>,
}

/// Offsets under way per partition, and the position each may commit.
#[derive(Debug)]
pub struct Progress<P> {
    partitions: HashMap<P, Partition>,
}

impl<P> Default for Progress<P> {
    fn default() -> Self {
        Progress {
            partitions: HashMap::new(),
        }
    }
}

impl<P: Hash + Eq + Clone> Progress<P> {
    /// Offset `offset` of `partition` is under way.
    pub fn begin(&mut self, partition: &P, offset: i64) {
        let p = self.partitions.entry(partition.clone()).or_default();
        p.open.insert(offset);
        p.next = p.next.max(offset + 1);
    }

    /// Offset `offset` of `partition` is finished (its work done, or never to be done here).
    pub fn finish(&mut self, partition: &P, offset: i64) {
        if let Some(p) = self.partitions.get_mut(partition) {
            p.open.remove(&offset);
        }
    }

    /// Where `partition` would commit now, when it has been read.
    pub fn position(&self, partition: &P) -> Option<i64> {
        let p = self.partitions.get(partition)?;
        Some(p.open.first().copied().unwrap_or(p.next))
    }

    /// Offsets of `partition` begun and not finished.
    pub fn open(&self, partition: &P) -> usize {
        self.partitions.get(partition).map_or(0, |p| p.open.len())
    }

    /// Every offset under way, summed over the partitions.
    pub fn under_way(&self) -> usize {
        self.partitions.values().map(|p| p.open.len()).sum()
    }

    /// Forgets every partition not in `kept` (they went to another member of the group):
    /// what finishes there later is not ours to commit.
    pub fn keep_only(&mut self, kept: impl Fn(&P) -> bool) {
        self.partitions.retain(|p, _| kept(p));
    }

    /// The positions that moved since the last call: each partition's lowest offset under
    /// way, or the offset after the last begun when none is.
    pub fn committable(&mut self) -> Vec<(P, i64)> {
        let mut out = Vec::new();
        for (id, p) in &mut self.partitions {
            let at = p.open.first().copied().unwrap_or(p.next);
            if p.committed != Some(at) {
                p.committed = Some(at);
                out.push((id.clone(), at));
            }
        }
        out
    }
}

/// Jobs waiting for the job before them with the same key.
#[derive(Debug)]
pub struct Lanes<J> {
    /// Per key under way: the jobs read after the one running.
    waiting: HashMap<String, VecDeque<J>>,
}

impl<J> Default for Lanes<J> {
    fn default() -> Self {
        Lanes {
            waiting: HashMap::new(),
        }
    }
}

impl<J> Lanes<J> {
    /// A job read: it is handed back to run now unless a job with its key is under way.
    pub fn admit(&mut self, key: Option<&str>, job: J) -> Option<J> {
        let Some(key) = key else {
            return Some(job);
        };
        match self.waiting.get_mut(key) {
            Some(queue) => {
                queue.push_back(job);
                None
            }
            None => {
                self.waiting.insert(key.to_owned(), VecDeque::new());
                Some(job)
            }
        }
    }

    /// The job with `key` finished: the next one with that key, to run now.
    pub fn done(&mut self, key: Option<&str>) -> Option<J> {
        let key = key?;
        let queue = self.waiting.get_mut(key)?;
        match queue.pop_front() {
            Some(job) => Some(job),
            None => {
                self.waiting.remove(key);
                None
            }
        }
    }

    /// Jobs waiting behind another with their key.
    pub fn waiting(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_up_to_the_lowest_offset_under_way() {
        let mut p = Progress::default();
        for o in 10..15 {
            p.begin(&"a", o);
        }
        assert_eq!(p.committable(), vec![("a", 10)]);
        p.finish(&"a", 12);
        p.finish(&"a", 11);
        assert_eq!(p.committable(), vec![], "10 is still under way");
        p.finish(&"a", 10);
        assert_eq!(p.committable(), vec![("a", 13)]);
        p.finish(&"a", 14);
        p.finish(&"a", 13);
        assert_eq!(p.committable(), vec![("a", 15)]);
        assert_eq!(p.committable(), vec![], "nothing moved");
        assert_eq!(p.under_way(), 0);
    }

    #[test]
    fn partitions_are_apart_and_forgotten_when_revoked() {
        let mut p = Progress::default();
        p.begin(&0, 5);
        p.begin(&1, 7);
        p.finish(&1, 7);
        let mut got = p.committable();
        got.sort();
        assert_eq!(got, vec![(0, 5), (1, 8)]);
        p.keep_only(|part| *part == 1);
        p.finish(&0, 5);
        assert_eq!(p.committable(), vec![]);
        assert_eq!(p.open(&0), 0);
    }

    #[test]
    fn jobs_with_one_key_run_in_order_and_others_beside_them() {
        let mut lanes = Lanes::default();
        assert_eq!(lanes.admit(Some("k"), 1), Some(1));
        assert_eq!(lanes.admit(Some("k"), 2), None);
        assert_eq!(lanes.admit(Some("j"), 3), Some(3));
        assert_eq!(lanes.admit(None, 4), Some(4));
        assert_eq!(lanes.admit(Some("k"), 5), None);
        assert_eq!(lanes.waiting(), 2);
        assert_eq!(lanes.done(Some("k")), Some(2));
        assert_eq!(lanes.done(Some("k")), Some(5));
        assert_eq!(lanes.done(Some("k")), None);
        assert_eq!(
            lanes.admit(Some("k"), 6),
            Some(6),
            "the key's lane is free again"
        );
        assert_eq!(lanes.done(Some("j")), None);
        assert_eq!(lanes.done(None), None);
        assert_eq!(lanes.waiting(), 0);
    }
}
