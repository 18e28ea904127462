//! `GET /v1/streams`, as EventStreamConfig's API answers it, for every host
//! that serves it (the native edge, the Worker, the aggregator): which
//! streams (`streams=a|b`), which of them (`constraints=key=value|…`), and
//! how much of each (`all_settings`).

use crate::stream_config::{StreamConfig, StreamEntry};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The parameters of a `/v1/streams` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamsQuery {
    /// `streams=a|b`: only these (a concrete name matches a `/regex/` key).
    pub names: Option<Vec<String>>,
    /// `constraints=key=value|…`: only streams whose setting at each dotted key equals the value.
    pub constraints: Vec<(String, String)>,
    /// `all_settings=true|false`, when given.
    pub all_settings: Option<bool>,
}

/// A `/v1/streams` query that cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamsQueryError {
    /// A constraint without `=`.
    #[error("constraint `{0}` is not key=value")]
    Constraint(String),
}

/// The settings a browser needs of each stream, what `all_settings=false` keeps:
/// EventStreamConfig's client settings (`schema_title`, `destination_event_service`,
/// `sample`, `producers`) and Sluice's `enabled` and `windows`, which clients apply
/// before they send.
const CLIENT_SETTINGS: [&str; 6] = [
    "schema_title",
    "destination_event_service",
    "sample",
    "producers",
    "enabled",
    "windows",
];

impl StreamsQuery {
    /// Parses a query string (without the `?`), form-encoded.
    pub fn parse(query: Option<&str>) -> Result<StreamsQuery, StreamsQueryError> {
        let mut q = StreamsQuery::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "streams" => {
                    q.names = Some(
                        v.split('|')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    );
                }
                "constraints" => {
                    for c in v.split('|').filter(|c| !c.is_empty()) {
                        let (key, value) = c
                            .split_once('=')
                            .ok_or_else(|| StreamsQueryError::Constraint(c.to_owned()))?;
                        q.constraints.push((key.to_owned(), value.to_owned()));
                    }
                }
                "all_settings" => q.all_settings = Some(v == "true" || v == "1"),
                _ => {}
            }
        }
        Ok(q)
    }
}

impl StreamConfig {
    /// The answer to `query`. Without `all_settings`, a host serving browsers
    /// (`all_by_default` false: the edges) gives only the settings a client
    /// needs, `sample` and `producers`, as EventStreamConfig does for
    /// EventLogging; a host serving services (the aggregator) gives them all.
    pub fn answer(&self, query: &StreamsQuery, all_by_default: bool) -> Value {
        let names: Option<Vec<&str>> = query
            .names
            .as_ref()
            .map(|n| n.iter().map(String::as_str).collect());
        let constraints: Vec<(&str, &str)> = query
            .constraints
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut api = self.to_api(names.as_deref(), &constraints);
        if !query.all_settings.unwrap_or(all_by_default)
            && let Some(Value::Object(streams)) = api.get_mut("streams")
        {
            for settings in streams.values_mut() {
                if let Value::Object(map) = settings {
                    map.retain(|k, _| CLIENT_SETTINGS.contains(&k.as_str()));
                }
            }
        }
        api
    }

    /// The config as EventStreamConfig's API answers it: `{"streams": {key: settings}}`.
    ///
    /// `names` (the `streams=a|b` parameter) selects streams: an exact key, or a
    /// concrete name matched by a `/regex/` key, which is then listed under that
    /// name. `constraints` (`constraints=key=value|…`) keeps only streams whose
    /// setting at the dotted key equals the value (compared as text).
    pub fn to_api(&self, names: Option<&[&str]>, constraints: &[(&str, &str)]) -> Value {
        let selected: Vec<(String, &Arc<StreamEntry>)> = match names {
            None => self.entries().map(|e| (e.key.clone(), e)).collect(),
            Some(names) => names
                .iter()
                .filter_map(|n| self.get(n).map(|e| ((*n).to_owned(), e)))
                .collect(),
        };
        let mut streams = Map::new();
        for (name, entry) in selected {
            let mut settings = entry.raw.clone();
            if let Value::Object(map) = &mut settings {
                map.insert("stream".to_owned(), Value::String(name.clone()));
                if !name.starts_with('/') {
                    map.insert("topics".to_owned(), entry.topics(&name).into());
                }
            }
            let keep = constraints.iter().all(|(path, want)| {
                path.split('.')
                    .try_fold(&settings, |v, k| v.get(k))
                    .is_some_and(|got| matches_text(got, want))
            });
            if keep {
                streams.insert(name, settings);
            }
        }
        let mut out = Map::new();
        out.insert("streams".to_owned(), Value::Object(streams));
        Value::Object(out)
    }
}

/// Whether a setting equals a constraint's text: strings as they are, other
/// values as JSON, and arrays when any element does.
fn matches_text(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Array(items) => items.iter().any(|i| matches_text(i, want)),
        other => serde_json::from_str::<Value>(want).is_ok_and(|w| &w == other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
streams:
  edge.test:
    schema_title: test/event
    sample: {unit: session, rate: 0.5}
    producers: {eventgate: {enrich_fields_from_http_headers: {}}}
  other.test:
    schema_title: other/event
    enabled: false
    windows: [{hours: '08:00-20:00'}]
    rate_limit: {events_per_second: 10}
    topic_prefixes: [dc1.]
"#;

    #[test]
    fn queries_select_constrain_and_trim_as_eventstreamconfig_does() {
        let c = StreamConfig::parse(CONFIG).unwrap();
        let q = StreamsQuery::parse(Some(
            "streams=edge.test%7Cnope&constraints=schema_title%3Dtest/event&all_settings=false",
        ))
        .unwrap();
        assert_eq!(
            q.names.as_deref(),
            Some(&["edge.test".to_owned(), "nope".to_owned()][..])
        );
        let a = c.answer(&q, true);
        let s = a["streams"].as_object().unwrap();
        assert_eq!(s.len(), 1);
        let mut keys: Vec<&String> = s["edge.test"].as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["producers", "sample", "schema_title"]);
        // Without all_settings, each host's default; with it, everything.
        let none = StreamsQuery::parse(None).unwrap();
        let services = &c.answer(&none, true)["streams"]["other.test"];
        assert_eq!(services["rate_limit"]["events_per_second"], 10);
        assert!(services["topics"].is_array());
        let mut keys: Vec<String> = c.answer(&none, false)["streams"]["other.test"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        assert_eq!(keys, ["enabled", "schema_title", "windows"]);
        let all = StreamsQuery::parse(Some("all_settings=true")).unwrap();
        assert_eq!(
            c.answer(&all, false)["streams"]["other.test"]["rate_limit"]["events_per_second"],
            10
        );
        assert_eq!(
            StreamsQuery::parse(Some("constraints=oops")),
            Err(StreamsQueryError::Constraint("oops".into()))
        );
    }
}
