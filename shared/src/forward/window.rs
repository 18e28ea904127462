//! Which records of a log-backed queue (the edge's spool) are done: batches
//! cover runs of consecutive offsets, go out in order, and finish in any
//! order; the queue may be trimmed only up to the first offset not yet done.

use std::collections::BTreeMap;

/// Runs of offsets handed out and finished, and the offset up to which every
/// record is done (the position to commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoneWindow {
    /// Every offset below this is done.
    committed: u64,
    /// The offset after the last one handed out.
    handed: u64,
    /// Finished runs above `committed`: start → end (exclusive).
    finished: BTreeMap<u64, u64>,
}

impl DoneWindow {
    /// A window whose records below `committed` are done.
    pub fn new(committed: u64) -> Self {
        DoneWindow {
            committed,
            handed: committed,
            finished: BTreeMap::new(),
        }
    }

    /// Every offset below this is done.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The offset after the last one handed out: where reading goes on.
    pub fn handed(&self) -> u64 {
        self.handed
    }

    /// Records offsets `start..end` as handed out to a batch. Runs are handed
    /// out in order; a run that does not start where the last ended (records
    /// skipped over, as after damage) moves the window on.
    pub fn hand_out(&mut self, start: u64, end: u64) {
        if start > self.handed && self.finished.is_empty() && self.committed == self.handed {
            // Nothing outstanding: offsets skipped over are as good as done.
            self.committed = start;
        } else if start > self.handed {
            // The gap is done: nothing will ever be handed out for it.
            self.finished.insert(self.handed, start);
        }
        self.handed = self.handed.max(end);
    }

    /// Records offsets `start..end` as done. Returns the new committed
    /// position when it moved.
    pub fn finish(&mut self, start: u64, end: u64) -> Option<u64> {
        if end <= self.committed {
            return None;
        }
        self.finished.insert(start.max(self.committed), end);
        let before = self.committed;
        while let Some((&s, &e)) = self.finished.first_key_value() {
            if s > self.committed {
                break;
            }
            self.committed = self.committed.max(e);
            self.finished.pop_first();
        }
        (self.committed > before).then_some(self.committed)
    }

    /// Whether every offset handed out is done.
    pub fn is_idle(&self) -> bool {
        self.committed >= self.handed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_moves_only_over_runs_all_done() {
        let mut w = DoneWindow::new(10);
        assert!(w.is_idle());
        w.hand_out(10, 15);
        w.hand_out(15, 20);
        w.hand_out(20, 22);
        assert_eq!(w.handed(), 22);
        assert!(!w.is_idle());
        // The second batch is answered first: nothing below it may go yet.
        assert_eq!(w.finish(15, 20), None);
        assert_eq!(w.committed(), 10);
        assert_eq!(w.finish(10, 15), Some(20));
        assert!(!w.is_idle());
        assert_eq!(w.finish(20, 22), Some(22));
        assert!(w.is_idle());
        // A run finished twice (an answer repeated) changes nothing.
        assert_eq!(w.finish(20, 22), None);
        assert_eq!(w.committed(), 22);
    }

    #[test]
    fn offsets_skipped_over_count_as_done() {
        let mut w = DoneWindow::new(0);
        w.hand_out(3, 5);
        assert_eq!(w.committed(), 3, "nothing was outstanding");
        w.hand_out(8, 9);
        assert_eq!(w.finish(8, 9), None, "3..5 is still out");
        assert_eq!(w.finish(3, 5), Some(9), "5..8 was skipped, so done");
        assert!(w.is_idle());
    }
}
