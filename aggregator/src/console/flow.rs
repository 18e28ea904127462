//! Each stream's flow for the console: events accepted, invalid, rate-limited
//! and duplicate, counted as the sink answers batches (atomics, no lock on
//! the way), and once a second moved into an hour of one-second buckets,
//! from which the console plots rates and the alerts are judged.
//!
//! Alerts: a stream that had accepted events in the hour before and has had
//! none for `alert_after` is `zero_flow`; one whose rate over `alert_after`
//! is under `under_ratio` of its rate over the hour is `under_rate`. Both
//! need a full `alert_after` of history, and are raised and cleared with a
//! log line and the gauge `sluice_aggregator_stream_alert{stream, alert}`.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The kinds of events counted, in the order of [`Bucket`]'s fields.
pub const KINDS: [&str; 4] = ["accepted", "invalid", "rate_limited", "duplicate"];

/// Buckets kept: an hour of seconds.
pub const HISTORY: usize = 3600;

/// One stream's running totals.
#[derive(Debug, Default)]
struct Totals {
    counts: [AtomicU64; 4],
    last_ms: AtomicI64,
}

/// One second of a stream's flow.
pub type Bucket = [u32; 4];

/// A stream's alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Alert {
    /// It was flowing and has stopped.
    ZeroFlow,
    /// Far under its last hour's rate.
    UnderRate,
}

impl Alert {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Alert::ZeroFlow => "zero_flow",
            Alert::UnderRate => "under_rate",
        }
    }
}

/// A change of a stream's alert state, for the log and the gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertChange {
    /// The stream.
    pub stream: String,
    /// The alert before.
    pub was: Option<Alert>,
    /// The alert now.
    pub now: Option<Alert>,
}

#[derive(Debug, Default)]
struct History {
    seen: [u64; 4],
    buckets: VecDeque<Bucket>,
    /// Seconds of history since the stream was first counted.
    age: usize,
    alert: Option<Alert>,
}

/// A stream's flow as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamFlow {
    /// Totals since start, by kind.
    pub totals: BTreeMap<&'static str, u64>,
    /// The last accepted event's arrival, Unix milliseconds (0: none).
    pub last_event_ms: i64,
    /// Per-second counts of the last hour, oldest first, by kind.
    pub series: BTreeMap<&'static str, Vec<u32>>,
    /// Events/s over the last `alert_after` seconds, by kind.
    pub recent_rate: BTreeMap<&'static str, f64>,
    /// The alert, if any.
    pub alert: Option<Alert>,
}

/// The flow of every stream; cheap to clone.
#[derive(Debug, Clone)]
pub struct Flow(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    totals: RwLock<HashMap<Arc<str>, Arc<Totals>>>,
    history: Mutex<HashMap<Arc<str>, History>>,
    alert_after: usize,
    under_ratio: f64,
}

impl Flow {
    /// A flow judged over `alert_after_secs` (at least 1, at most the hour).
    pub fn new(alert_after_secs: u64, under_ratio: f64) -> Self {
        Flow(Arc::new(Inner {
            totals: RwLock::default(),
            history: Mutex::default(),
            alert_after: usize::try_from(alert_after_secs)
                .unwrap_or(HISTORY)
                .clamp(1, HISTORY / 2),
            under_ratio,
        }))
    }

    fn totals(&self, stream: &str) -> Arc<Totals> {
        if let Some(t) = self
            .0
            .totals
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
        {
            return t.clone();
        }
        self.0
            .totals
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(Arc::from(stream))
            .or_default()
            .clone()
    }

    /// Counts `n` events of `stream` of kind `kind` (an index into [`KINDS`]); `now_ms` is
    /// kept as the last event's time for accepted ones.
    pub fn count(&self, stream: &str, kind: usize, n: u64, now_ms: i64) {
        if kind >= KINDS.len() {
            return;
        }
        let t = self.totals(stream);
        t.counts[kind].fetch_add(n, Ordering::Relaxed);
        if kind == 0 {
            t.last_ms.fetch_max(now_ms, Ordering::Relaxed);
        }
    }

    /// Moves the counts since the last tick into a new bucket for every stream
    /// and judges the alerts; returns the alerts that changed.
    pub fn tick(&self) -> Vec<AlertChange> {
        let totals: Vec<(Arc<str>, [u64; 4])> = self
            .0
            .totals
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(s, t)| {
                (
                    s.clone(),
                    std::array::from_fn(|i| t.counts[i].load(Ordering::Relaxed)),
                )
            })
            .collect();
        let mut history = self.0.history.lock().unwrap_or_else(|p| p.into_inner());
        let mut changes = Vec::new();
        for (stream, now) in totals {
            let h = history.entry(stream.clone()).or_default();
            let bucket: Bucket = std::array::from_fn(|i| {
                u32::try_from(now[i].saturating_sub(h.seen[i])).unwrap_or(u32::MAX)
            });
            h.seen = now;
            h.buckets.push_back(bucket);
            if h.buckets.len() > HISTORY {
                h.buckets.pop_front();
            }
            h.age += 1;
            let alert = self.judge(h);
            if alert != h.alert {
                changes.push(AlertChange {
                    stream: stream.to_string(),
                    was: h.alert,
                    now: alert,
                });
                h.alert = alert;
            }
        }
        changes
    }

    fn judge(&self, h: &History) -> Option<Alert> {
        let recent_len = self.0.alert_after;
        if h.age < recent_len || h.buckets.len() <= recent_len {
            return None;
        }
        let accepted = |b: &Bucket| u64::from(b[0]);
        let split = h.buckets.len() - recent_len;
        let before: u64 = h.buckets.iter().take(split).map(accepted).sum();
        let recent: u64 = h.buckets.iter().skip(split).map(accepted).sum();
        if before == 0 {
            return None;
        }
        if recent == 0 {
            return Some(Alert::ZeroFlow);
        }
        let hour_rate = (before + recent) as f64 / h.buckets.len() as f64;
        let recent_rate = recent as f64 / recent_len as f64;
        // Under a minute's worth of events an hour, a rate says little.
        let enough = before + recent >= 60;
        (enough && recent_rate < self.0.under_ratio * hour_rate).then_some(Alert::UnderRate)
    }

    /// Every stream counted, by name.
    pub fn streams(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .totals
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .map(ToString::to_string)
            .collect();
        names.sort();
        names
    }

    /// The alert of every stream that has one.
    pub fn alerts(&self) -> BTreeMap<String, Alert> {
        self.0
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(s, h)| h.alert.map(|a| (s.to_string(), a)))
            .collect()
    }

    /// `stream`'s flow, with `points` seconds of series (at most the hour).
    pub fn stream(&self, stream: &str, points: usize) -> StreamFlow {
        let totals = self
            .0
            .totals
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
            .cloned();
        let history = self.0.history.lock().unwrap_or_else(|p| p.into_inner());
        let h = history.get(stream);
        let buckets: Vec<Bucket> = h
            .map(|h| {
                let skip = h.buckets.len().saturating_sub(points);
                h.buckets.iter().skip(skip).copied().collect()
            })
            .unwrap_or_default();
        let recent_len = self.0.alert_after.min(buckets.len()).max(1);
        let recent = &buckets[buckets.len().saturating_sub(recent_len)..];
        StreamFlow {
            totals: KINDS
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    (
                        *k,
                        totals
                            .as_ref()
                            .map_or(0, |t| t.counts[i].load(Ordering::Relaxed)),
                    )
                })
                .collect(),
            last_event_ms: totals.map_or(0, |t| t.last_ms.load(Ordering::Relaxed)),
            series: KINDS
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, buckets.iter().map(|b| b[i]).collect()))
                .collect(),
            recent_rate: KINDS
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let sum: u64 = recent.iter().map(|b| u64::from(b[i])).sum();
                    (*k, sum as f64 / recent_len as f64)
                })
                .collect(),
            alert: h.and_then(|h| h.alert),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_that_stops_is_alerted_and_cleared_when_it_flows_again() {
        let flow = Flow::new(5, 0.1);
        for s in 0..10 {
            flow.count("a", 0, 10, s * 1000);
            flow.count("a", 1, 1, s * 1000);
            assert!(flow.tick().is_empty(), "flowing at second {s}");
        }
        let f = flow.stream("a", 60);
        assert_eq!(f.totals["accepted"], 100);
        assert_eq!(f.totals["invalid"], 10);
        assert_eq!(f.series["accepted"], vec![10; 10]);
        assert_eq!(f.recent_rate["accepted"], 10.0);
        assert_eq!(f.last_event_ms, 9000);
        // Four quiet seconds: not yet.
        for _ in 0..4 {
            assert!(flow.tick().is_empty());
        }
        let changes = flow.tick();
        assert_eq!(
            changes,
            vec![AlertChange {
                stream: "a".into(),
                was: None,
                now: Some(Alert::ZeroFlow)
            }]
        );
        assert_eq!(flow.alerts()["a"], Alert::ZeroFlow);
        assert_eq!(flow.stream("a", 60).alert, Some(Alert::ZeroFlow));
        flow.count("a", 0, 1, 20_000);
        let changes = flow.tick();
        assert_eq!(
            changes[0].now,
            Some(Alert::UnderRate),
            "0.2/s against 6.3/s"
        );
        for _ in 0..5 {
            flow.count("a", 0, 10, 21_000);
            flow.tick();
        }
        assert!(flow.alerts().is_empty());
    }

    #[test]
    fn a_stream_never_flowing_or_too_young_is_not_alerted() {
        let flow = Flow::new(5, 0.1);
        flow.count("quiet", 1, 1, 0);
        flow.count("young", 0, 5, 0);
        for _ in 0..5 {
            assert!(flow.tick().is_empty());
        }
        assert_eq!(flow.streams(), ["quiet", "young"]);
        // The young stream's one second of flow is now before the last five: it stopped.
        assert_eq!(flow.tick()[0].now, Some(Alert::ZeroFlow));
        assert!(!flow.alerts().contains_key("quiet"));
    }
}
