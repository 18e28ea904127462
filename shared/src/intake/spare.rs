//! What one body's intake needs and does not return, kept by each thread for
//! its next body, so that once warm a body allocates only what it returns.

use crate::tape::EventSpan;
use crate::timestamp::Timestamp;

/// What one body's intake needs and does not return, kept by each thread for its next body.
pub(super) struct BodySpare {
    /// The last receive time written as text, and the text: bodies received in the
    /// same millisecond share it, and its buffer is reused.
    pub(super) received: (Timestamp, String),
    /// Where each event of the body lies.
    pub(super) spans: Vec<EventSpan>,
    /// Accepted events by position in the answer, and where their JSON lies in the body's buffer.
    pub(super) ranges: Vec<(usize, std::ops::Range<usize>)>,
}

// Kept per thread, as the tape's vectors are. Measured with
// `cargo bench -p sluice-shared --bench intake`, three runs alternating with the reuse turned off, 2 cores: a 1 KB event
// alone in a body goes 9% faster (489k against 448k events/s); in bodies of 50 events
// the difference is lost in the noise, as the lists are set up once a body.
thread_local! {
    static BODY_SPARE: std::cell::RefCell<BodySpare> = const { std::cell::RefCell::new(BodySpare::EMPTY) };
}

/// Lists longer than this are let go, not kept: one huge body does not stay resident.
const SPARE_ITEMS: usize = 4096;

impl BodySpare {
    const EMPTY: BodySpare = BodySpare {
        received: (Timestamp::EPOCH, String::new()),
        spans: Vec::new(),
        ranges: Vec::new(),
    };

    /// The thread's spare, or a new one if it is in use or gone.
    pub(super) fn take() -> BodySpare {
        BODY_SPARE
            .try_with(|s| {
                s.try_borrow_mut()
                    .ok()
                    .map(|mut s| std::mem::replace(&mut *s, BodySpare::EMPTY))
            })
            .ok()
            .flatten()
            .unwrap_or(BodySpare::EMPTY)
    }

    /// Hands the lists back to the thread, emptied, unless they grew too long to keep.
    pub(super) fn keep(mut self) {
        self.spans.clear();
        self.ranges.clear();
        if self.spans.capacity() > SPARE_ITEMS {
            self.spans = Vec::new();
        }
        if self.ranges.capacity() > SPARE_ITEMS {
            self.ranges = Vec::new();
        }
        let _ = BODY_SPARE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = self;
            }
        });
    }
}

/// `received` as `meta.dt` text: `kept`'s text if it is of the same millisecond.
pub(super) fn received_text(kept: &mut (Timestamp, String), received: Timestamp) -> String {
    let (at, mut text) = std::mem::replace(kept, (received, String::new()));
    if text.is_empty() || at.unix_millis() != received.unix_millis() {
        text.clear();
        received.write_rfc3339_millis(&mut text);
    }
    text
}
