//! The embedded log as a sink: each group's admitted events are appended
//! (one write per topic), made durable with one `sync`, and only then are
//! their batches answered. A group whose append or sync fails is cut back
//! off every topic it touched, so its retries are not written twice, and
//! its events are answered `failed`. Closed segments past their retention
//! are deleted once a minute. The log is its own dedupe journal: at start
//! the window is rebuilt from the records received within it.

use crate::admit::{Admission, Admit};
use crate::sink::{Finisher, Job, Sink, SinkError};
use sluice_log::{Log, LogError, NewRecord};
use sluice_shared::Timestamp;
use sluice_shared::record_headers::{EVENT_ID, RECEIVED_MS, SCHEMA_URI, STREAM};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// The embedded log, written by the commit loop.
pub struct LogSink {
    log: Log,
    retention: Option<Duration>,
    finisher: Option<Finisher>,
    last_retention: SystemTime,
}

impl LogSink {
    /// A sink writing to `log`, deleting closed segments `retention` after their last write.
    pub fn new(log: Log, retention: Option<Duration>) -> Self {
        LogSink {
            log,
            retention,
            finisher: None,
            last_retention: SystemTime::now(),
        }
    }

    fn retain(&mut self, now: SystemTime) {
        let Some(keep) = self.retention else {
            return;
        };
        let Some(cutoff) = now.checked_sub(keep) else {
            return;
        };
        match self.log.delete_all_segments_before(cutoff) {
            Ok(0) => {}
            Ok(segments) => {
                tracing::info!(
                    segments,
                    "Deleted embedded-log segments past their retention."
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "Could not delete embedded-log segments past their retention.")
            }
        }
    }
}

impl Sink for LogSink {
    fn source(&self) -> &'static str {
        "embedded log"
    }

    fn recall(&self, since_ms: i64, f: &mut dyn FnMut([u8; 16], i64)) -> Result<(), SinkError> {
        recent_ids(&self.log, since_ms, f)
    }

    /// The log dates records by the edges' receive time, which trails admission by
    /// clock skew and by however long a spool held an event: ten minutes covers both
    /// but a spool drained after a long outage.
    fn recall_margin_ms(&self) -> i64 {
        10 * 60 * 1000
    }

    fn begin(&mut self, finisher: Finisher) {
        self.finisher = Some(finisher);
    }

    fn settle(&mut self, _admission: &mut Admission) {}

    fn write_group(
        &mut self,
        group: Vec<Job>,
        admits: Vec<Vec<Admit>>,
        admission: &mut Admission,
        _at: Timestamp,
    ) {
        let mark = self.log.mark();
        let written = write(&mut self.log, &group, &admits);
        if let Err(e) = &written {
            // Nothing of a failed group may stay behind to be written again by its retry.
            self.log.rewind(&mark);
            tracing::error!(error = %e, batches = group.len(), "A group commit failed; its events are answered as failed.");
        }
        for (job, a) in group.iter().zip(&admits) {
            match written {
                Ok(()) => admission.confirm(&job.batch, a),
                Err(_) => admission.forget(&job.batch, a),
            }
        }
        let Some(finisher) = &self.finisher else {
            return;
        };
        finisher.metrics.set_writable(written.is_ok());
        crate::commit::set_dedupe_gauges(&finisher.metrics, admission);
        let reason = written.err().map(|e| e.to_string());
        for (job, a) in group.into_iter().zip(admits) {
            finisher.finish(job, &a, |_| reason.as_deref());
        }
    }

    fn housekeep(&mut self, now: SystemTime) {
        if now
            .duration_since(self.last_retention)
            .is_ok_and(|d| d >= Duration::from_secs(60))
        {
            self.last_retention = now;
            self.retain(now);
        }
    }

    fn close(mut self: Box<Self>) {
        if let Err(e) = self.log.sync() {
            tracing::error!(error = %e, "The last sync of the embedded log failed.");
        }
    }
}

/// A record's headers, of which the first 3 or all 4 are written.
type RecordHeaders<'a> = [(&'a str, &'a [u8]); 4];

/// Appends the group's admitted events, one write per topic, and syncs.
fn write(log: &mut Log, group: &[Job], admits: &[Vec<Admit>]) -> Result<(), LogError> {
    let written: Vec<_> = group
        .iter()
        .zip(admits)
        .flat_map(|(job, a)| job.batch.events.iter().zip(a))
        .filter(|(_, admit)| **admit == Admit::Write)
        .map(|(event, _)| event)
        .collect();
    // The receive time rides along only when the sender set meta.dt, for the dedupe rebuild.
    let received: Vec<[u8; 8]> = written
        .iter()
        .map(|e| e.received_ms.to_le_bytes())
        .collect();
    let headers: Vec<(RecordHeaders<'_>, usize)> = written
        .iter()
        .zip(&received)
        .map(|(e, received)| {
            let all = [
                (SCHEMA_URI, e.schema_uri.as_bytes()),
                (EVENT_ID, &e.id[..]),
                (STREAM, e.stream.as_bytes()),
                (RECEIVED_MS, &received[..]),
            ];
            (all, if e.received_ms == e.dt_ms { 3 } else { 4 })
        })
        .collect();
    let mut by_topic: BTreeMap<&str, Vec<NewRecord<'_>>> = BTreeMap::new();
    for (event, headers) in written.iter().zip(&headers) {
        by_topic.entry(&*event.topic).or_default().push(NewRecord {
            timestamp_ms: event.dt_ms,
            key: event.partition_key.as_deref().map(str::as_bytes),
            headers: &headers.0[..headers.1],
            value: &event.json,
        });
    }
    for (topic, records) in &by_topic {
        log.append(topic, records)?;
    }
    log.sync()
}

/// Calls `f` with the event id header and receive time of every record of
/// every topic received at or after `since_ms`. The receive time is the
/// `received_ms` header where a record has one, else its timestamp.
pub fn recent_ids(
    log: &Log,
    since_ms: i64,
    f: &mut dyn FnMut([u8; 16], i64),
) -> Result<(), LogError> {
    const CHUNK: usize = 10_000;
    let since = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(since_ms).unwrap_or(0));
    let topics: Vec<String> = log.topics().map(str::to_owned).collect();
    for topic in &topics {
        // A segment last written before the window opened holds no record received in it:
        // start at the first one written since, so a start does not read the whole log.
        let mut from = log.first_offset_written_since(topic, since)?;
        loop {
            let records = log.read(topic, from, CHUNK)?;
            let Some(last) = records.last() else {
                break;
            };
            from = last.offset + 1;
            for r in &records {
                let id = r
                    .header(EVENT_ID)
                    .and_then(|v| <[u8; 16]>::try_from(v).ok());
                let at_ms = r
                    .header(RECEIVED_MS)
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map_or(r.timestamp_ms, i64::from_le_bytes);
                if let Some(id) = id.filter(|_| at_ms >= since_ms) {
                    f(id, at_ms);
                }
            }
            if records.len() < CHUNK {
                break;
            }
        }
    }
    Ok(())
}
