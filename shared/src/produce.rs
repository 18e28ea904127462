//! What a client decides before it sends an event, from the stream config
//! alone: whether the stream is configured and enabled, whether one of its
//! producing windows is open, and whether the event's sampling unit is in
//! sample. The edge decides the same way (shared/src/intake/event.rs), so an
//! event a client withholds is one the edge would have thrown away; the
//! browser library (`@sluice/client`) follows the same rules, checked on the
//! same vectors (`clients/vectors.json`).

use crate::sampling;
use crate::stream_config::{StreamConfig, StreamEntry};
use crate::timestamp::Timestamp;
use serde_json::Value;
use std::sync::Arc;

/// Why a client does not send an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Withheld {
    /// No stream of that name (or pattern) is configured.
    UnknownStream,
    /// The stream is configured with `enabled: false`.
    Disabled,
    /// None of the stream's producing windows is open.
    Closed,
    /// The event's sampling unit is out of the stream's sample.
    OutOfSample,
}

impl Withheld {
    /// The reason's name, as metrics and summaries print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Withheld::UnknownStream => "unknown_stream",
            Withheld::Disabled => "disabled",
            Withheld::Closed => "closed",
            Withheld::OutOfSample => "out_of_sample",
        }
    }
}

impl StreamConfig {
    /// The settings of `stream` if a client should send `event` to it at `at`,
    /// else why not. The sampling unit's id is read where the edge reads it
    /// (`performer.session_id` for `session`, …); without one the event's
    /// `meta.id` decides, as at the edge.
    pub fn produce_verdict(
        &self,
        stream: &str,
        event: &Value,
        at: Timestamp,
    ) -> Result<&Arc<StreamEntry>, Withheld> {
        let entry = self.get(stream).ok_or(Withheld::UnknownStream)?;
        if !entry.settings.enabled {
            return Err(Withheld::Disabled);
        }
        if !entry.is_open(at) {
            return Err(Withheld::Closed);
        }
        if let Some(sample) = &entry.settings.sample {
            let position_of =
                |v: Option<&Value>| v.and_then(Value::as_str).and_then(sampling::unit_position);
            let position = position_of(entry.sample_path().and_then(|p| p.get(event)))
                .or_else(|| position_of(event.pointer("/meta/id")))
                .unwrap_or(0.0);
            if !sampling::position_in_sample(position, sample.rate) {
                return Err(Withheld::OutOfSample);
            }
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CONFIG: &str = r#"
streams:
  app.events:
    schema_title: app/event
    sample: {unit: device, rate: 0.5}
  app.off:
    schema_title: app/event
    enabled: false
  app.nights:
    schema_title: app/event
    windows: [{hours: '22:00-06:00'}]
  /^app\.by_event\./:
    schema_title: app/event
    sample: {unit: event, rate: 0.25}
"#;

    #[test]
    fn a_client_withholds_what_the_edge_would_drop() {
        let c = StreamConfig::parse(CONFIG).unwrap();
        let noon = Timestamp::parse_rfc3339("2026-12-06T12:00:00Z").unwrap();
        let night = Timestamp::parse_rfc3339("2026-12-06T23:00:00Z").unwrap();
        let device = |id: &str| json!({"agent": {"app_install_id": id}, "meta": {"id": "00000000-0000-4000-8000-000000000000"}});
        assert!(
            c.produce_verdict("app.events", &device("7fffffff00"), noon)
                .is_ok()
        );
        assert_eq!(
            c.produce_verdict("app.events", &device("80000000aa"), noon)
                .err(),
            Some(Withheld::OutOfSample)
        );
        // No device id: the event's id decides (in sample here).
        assert!(
            c.produce_verdict(
                "app.events",
                &json!({"meta": {"id": "10000000-0000-4000-8000-000000000000"}}),
                noon
            )
            .is_ok()
        );
        assert_eq!(
            c.produce_verdict("app.nope", &json!({}), noon).err(),
            Some(Withheld::UnknownStream)
        );
        assert_eq!(
            c.produce_verdict("app.off", &json!({}), noon).err(),
            Some(Withheld::Disabled)
        );
        assert_eq!(
            c.produce_verdict("app.nights", &json!({}), noon).err(),
            Some(Withheld::Closed)
        );
        assert!(c.produce_verdict("app.nights", &json!({}), night).is_ok());
        let by_event = |id: &str| json!({"meta": {"id": id}});
        assert!(
            c.produce_verdict(
                "app.by_event.x",
                &by_event("3fffffff-0000-4000-8000-000000000000"),
                noon
            )
            .is_ok()
        );
        assert_eq!(
            c.produce_verdict(
                "app.by_event.x",
                &by_event("40000000-0000-4000-8000-000000000000"),
                noon
            )
            .err()
            .map(Withheld::as_str),
            Some("out_of_sample")
        );
    }
}
