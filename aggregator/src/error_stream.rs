//! The error stream: events an edge refused, reported in its batches, become
//! events in Wikimedia's `error` schema shape (`/error/2.1.0`) on one
//! configured stream, and go to the sink beside the good events. A token
//! bucket bounds them, so a flood of bad events cannot take the sink's
//! capacity from good ones; reports over the bound are dropped, counted in
//! `sluice_aggregator_error_reports_total{outcome="dropped"}` and logged.
//! Each error event's id is derived from its batch id and position, so a
//! batch sent twice writes its error events once.

use crate::metrics::Metrics;
use serde_json::{Map, Value, json};
use sluice_host::metrics::Outcome;
use sluice_shared::{
    Batch, BatchError, BatchEvent, EVENT_ID_NAMESPACE, Quota, RateLimiter, StreamConfig, Timestamp,
};
use std::sync::Mutex;

/// The `$schema` of the error events written.
pub const ERROR_SCHEMA_URI: &str = "/error/2.1.0";

/// Settings of the error stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorStreamOptions {
    /// The stream error events are written to.
    pub stream: String,
    /// `emitter_id` of the error events.
    pub emitter_id: String,
    /// Error events written per second, at most, over all edges.
    pub events_per_second: f64,
    /// How many may come at once above that rate.
    pub burst: u32,
}

impl Default for ErrorStreamOptions {
    fn default() -> Self {
        ErrorStreamOptions {
            stream: "sluice.error.validation".into(),
            emitter_id: "sluice".into(),
            events_per_second: 1000.0,
            burst: 1000,
        }
    }
}

/// Turns error reports into bounded error events.
#[derive(Debug)]
pub struct ErrorStream {
    options: ErrorStreamOptions,
    limiter: Mutex<RateLimiter>,
}

impl ErrorStream {
    /// An error stream with these settings.
    pub fn new(options: ErrorStreamOptions) -> Self {
        ErrorStream {
            options,
            limiter: Mutex::new(RateLimiter::new(1, 0)),
        }
    }

    /// Moves `batch.errors` into `batch.events` as error events, as many as
    /// the bound allows at `now`; counts and logs the rest.
    pub fn admit(
        &self,
        batch: &mut Batch,
        streams: &StreamConfig,
        now: Timestamp,
        metrics: &Metrics,
    ) {
        if batch.errors.is_empty() {
            return;
        }
        let reports = std::mem::take(&mut batch.errors);
        for report in &reports {
            if let Some(stream) = &report.stream {
                metrics.count(stream, Outcome::Invalid, 1);
            }
        }
        let quota = Quota::per_second(self.options.events_per_second, self.options.burst);
        let allowed = {
            let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
            reports
                .iter()
                .take_while(|_| limiter.check("errors", quota, now).is_ok())
                .count()
        };
        let dropped = reports.len() - allowed;
        if dropped > 0 {
            metrics.count_error_reports(Outcome::Dropped, dropped as u64);
            tracing::warn!(
                dropped,
                stream = %self.options.stream,
                "Error reports over the error stream's bound were dropped."
            );
        }
        metrics.count_error_reports(Outcome::Admitted, allowed as u64);
        let topic = streams.get(&self.options.stream).map_or_else(
            || self.options.stream.clone(),
            |entry| entry.produce_topic(&self.options.stream),
        );
        for (i, report) in reports.into_iter().take(allowed).enumerate() {
            batch
                .events
                .push(self.event(batch.id, i, report, &topic, now));
        }
    }

    fn event(
        &self,
        batch_id: [u8; 16],
        index: usize,
        report: BatchError,
        topic: &str,
        now: Timestamp,
    ) -> BatchEvent {
        let mut name = batch_id.to_vec();
        name.extend_from_slice(b"error");
        name.extend_from_slice(&(index as u64).to_be_bytes());
        let id = uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, &name);
        let mut meta = Map::new();
        meta.insert("stream".into(), json!(self.options.stream));
        meta.insert("id".into(), json!(id.hyphenated().to_string()));
        meta.insert("dt".into(), json!(now.to_rfc3339_millis()));
        if let Some(request_id) = &report.request_id {
            meta.insert("request_id".into(), json!(request_id));
        }
        let mut event = Map::new();
        event.insert("$schema".into(), json!(ERROR_SCHEMA_URI));
        event.insert("meta".into(), Value::Object(meta));
        event.insert(
            "dt".into(),
            json!(Timestamp::from_unix_millis(report.received_ms).to_rfc3339_millis()),
        );
        event.insert("emitter_id".into(), json!(self.options.emitter_id));
        event.insert("error_type".into(), json!(report.error_type));
        event.insert("message".into(), json!(report.message));
        if let Some(uri) = report.schema_uri {
            event.insert("errored_schema_uri".into(), json!(uri));
        }
        if let Some(stream) = report.stream {
            event.insert("errored_stream_name".into(), json!(stream));
        }
        event.insert("raw_event".into(), json!(report.raw_event));
        BatchEvent {
            stream: self.options.stream.as_str().into(),
            topic: topic.into(),
            partition_key: None,
            rate_key: None,
            id: *id.as_bytes(),
            received_ms: now.unix_millis(),
            dt_ms: now.unix_millis(),
            schema_uri: ERROR_SCHEMA_URI.into(),
            dedupe: true,
            json: Value::Object(event).to_string().into_bytes().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(n: usize) -> BatchError {
        BatchError {
            stream: Some("sluice.test.event".into()),
            schema_uri: Some("/sluice/test/event/1.0.0".into()),
            error_type: "invalid".into(),
            message: format!("'/n' must be integer ({n})"),
            raw_event: format!(r#"{{"n":"{n}"}}"#),
            received_ms: 1_795_780_800_000,
            request_id: Some("req-7".into()),
        }
    }

    #[test]
    fn reports_become_error_events_within_the_bound() {
        let errors = ErrorStream::new(ErrorStreamOptions {
            events_per_second: 1.0,
            burst: 3,
            ..ErrorStreamOptions::default()
        });
        let metrics = Metrics::new();
        let streams = StreamConfig::parse("streams: {}").unwrap();
        let now = Timestamp::from_unix_millis(1_795_780_801_000);
        let mut batch = Batch {
            id: [4; 16],
            events: Vec::new(),
            errors: (0..5).map(report).collect(),
        };
        errors.admit(&mut batch, &streams, now, &metrics);
        assert!(batch.errors.is_empty());
        assert_eq!(
            batch.events.len(),
            3,
            "the burst of 3 passes, the rest is dropped"
        );
        let e = &batch.events[0];
        assert_eq!(&*e.stream, "sluice.error.validation");
        assert_eq!(&*e.topic, "sluice.error.validation");
        let v: Value = serde_json::from_slice(&e.json).unwrap();
        assert_eq!(v["$schema"], "/error/2.1.0");
        assert_eq!(v["meta"]["stream"], "sluice.error.validation");
        assert_eq!(v["meta"]["request_id"], "req-7");
        assert_eq!(
            v["meta"]["id"],
            uuid::Uuid::from_bytes(e.id).hyphenated().to_string()
        );
        assert_eq!(v["dt"], "2026-11-27T12:00:00.000Z");
        assert_eq!(v["errored_stream_name"], "sluice.test.event");
        assert_eq!(v["errored_schema_uri"], "/sluice/test/event/1.0.0");
        assert_eq!(v["raw_event"], r#"{"n":"0"}"#);
        assert_eq!(v["error_type"], "invalid");
        let text = metrics.encode();
        assert!(
            text.contains(r#"sluice_aggregator_error_reports_total{outcome="dropped"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sluice_aggregator_error_reports_total{outcome="admitted"} 3"#),
            "{text}"
        );

        // The same batch again (a retry) gets the same ids, so dedupe writes it once.
        let mut again = Batch {
            id: [4; 16],
            events: Vec::new(),
            errors: (0..1).map(report).collect(),
        };
        errors.admit(&mut again, &streams, now.add_nanos(5_000_000_000), &metrics);
        assert_eq!(again.events[0].id, batch.events[0].id);
    }
}
