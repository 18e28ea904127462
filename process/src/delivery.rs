//! What becomes of an event once a rule's request is answered, as
//! change-propagation decides it: a status the rule ignores is done; one it
//! retries goes to the retry stream with the delay for its attempt, until
//! the retry limit, then to the error stream; any other failure (4xx) goes
//! to the error stream at once. A request with no answer (a timeout, a
//! refused connection) counts as retried. And which jobs still matter: a job
//! fanned out from a root event is dropped once a newer root event of the
//! same signature has run (the root-event cut-off).

use crate::rules::Rule;
use std::collections::HashMap;

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP status.
    Status(u16),
    /// No answer: a timeout or a failed connection.
    NoAnswer,
}

/// What to do with the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Done (2xx, or a status the rule ignores).
    Done,
    /// Try again after this many milliseconds, as attempt `attempt` (1 for the first retry).
    Retry {
        /// Which retry this is.
        attempt: u32,
        /// Milliseconds to wait from the event's time.
        delay_ms: u64,
    },
    /// To the error stream, with why.
    Report(String),
}

/// The fate of attempt `attempt` (0 for the first try) of `rule`'s request.
pub fn next(rule: &Rule, attempt: u32, answer: Answer) -> Next {
    let retry = |why: String| {
        if attempt < rule.retry_limit {
            Next::Retry {
                attempt: attempt + 1,
                delay_ms: rule.retry_delay(attempt),
            }
        } else {
            Next::Report(format!("{why}, after {} retries", rule.retry_limit))
        }
    };
    match answer {
        Answer::Status(s) if (200..300).contains(&s) || rule.ignore.contains(s) => Next::Done,
        Answer::Status(s) if rule.retry_on.contains(s) => retry(format!("status {s}")),
        Answer::Status(s) => Next::Report(format!("status {s}")),
        Answer::NoAnswer => retry("no answer".into()),
    }
}

/// The newest root event that has run, per signature.
#[derive(Debug, Default)]
pub struct RootCutoff {
    newest: HashMap<String, i64>,
}

impl RootCutoff {
    /// Whether a job from the root event of `signature` at `root_dt_ms` still
    /// runs; a root event runs by being admitted, and cuts off older ones.
    pub fn admit(&mut self, signature: &str, root_dt_ms: i64) -> bool {
        match self.newest.get_mut(signature) {
            Some(n) if *n > root_dt_ms => false,
            Some(n) => {
                *n = root_dt_ms;
                true
            }
            None => {
                self.newest.insert(signature.to_owned(), root_dt_ms);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;

    fn rule() -> Rule {
        RuleSet::parse("rules: {r: {topic: s, exec: {uri: x}, retry_delay: 1000, retry_factor: 6, retry_limit: 2}}")
            .unwrap()
            .rules
            .remove(0)
    }

    #[test]
    fn statuses_decide_done_retry_and_report() {
        let r = rule();
        assert_eq!(next(&r, 0, Answer::Status(200)), Next::Done);
        assert_eq!(next(&r, 0, Answer::Status(412)), Next::Done, "ignored");
        assert_eq!(
            next(&r, 0, Answer::Status(503)),
            Next::Retry {
                attempt: 1,
                delay_ms: 1000
            }
        );
        assert_eq!(
            next(&r, 1, Answer::NoAnswer),
            Next::Retry {
                attempt: 2,
                delay_ms: 6000
            }
        );
        assert_eq!(
            next(&r, 2, Answer::Status(500)),
            Next::Report("status 500, after 2 retries".into())
        );
        assert_eq!(
            next(&r, 0, Answer::Status(400)),
            Next::Report("status 400".into())
        );
    }

    #[test]
    fn a_newer_root_event_cuts_off_an_older_ones_jobs() {
        let mut c = RootCutoff::default();
        assert!(c.admit("Template:A", 100));
        assert!(c.admit("Template:A", 100), "the same root's next page");
        assert!(c.admit("Template:A", 200), "a newer edit");
        assert!(
            !c.admit("Template:A", 100),
            "the older edit's rest is cut off"
        );
        assert!(c.admit("Template:B", 50), "another signature is its own");
    }
}

/// Event ids seen within a window, so that a repeated event (a resend, a
/// replay after a crash) does not run twice: change-propagation's dedupe by
/// `meta.id`. Time is an argument; ids older than the window are forgotten.
#[derive(Debug)]
pub struct SeenIds {
    window_ms: i64,
    ids: std::collections::HashSet<String>,
    order: std::collections::VecDeque<(i64, String)>,
}

impl SeenIds {
    /// Remembers ids for `window_ms`.
    pub fn new(window_ms: i64) -> SeenIds {
        SeenIds {
            window_ms,
            ids: Default::default(),
            order: Default::default(),
        }
    }

    /// Whether `id` is new at `now_ms` (and remembers it).
    pub fn first(&mut self, id: &str, now_ms: i64) -> bool {
        while let Some((at, old)) = self.order.front() {
            if now_ms - *at < self.window_ms {
                break;
            }
            self.ids.remove(old);
            self.order.pop_front();
        }
        if self.ids.contains(id) {
            return false;
        }
        self.ids.insert(id.to_owned());
        self.order.push_back((now_ms, id.to_owned()));
        true
    }
}

#[cfg(test)]
mod seen_tests {
    use super::*;

    #[test]
    fn a_repeated_id_is_caught_within_the_window_only() {
        let mut seen = SeenIds::new(1000);
        assert!(seen.first("a", 0));
        assert!(!seen.first("a", 999));
        assert!(seen.first("b", 999));
        assert!(seen.first("a", 1000), "forgotten after the window");
        assert!(!seen.first("b", 1500));
    }
}
