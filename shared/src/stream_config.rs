//! Stream configuration in the shape of Wikimedia's EventStreamConfig: settings
//! keyed by stream name or `/regex/` (an exact name wins, then patterns in
//! the order given), with `defaults` merged recursively under every stream,
//! plus Sluice's own keys (`enabled`, `rate_limit`, `partition_key`,
//! `dedupe`, `windows`). Every wrong type or value is reported with its
//! stream and key path.

use crate::FastMap;
use crate::field_path::FieldPath;
use crate::timestamp::Timestamp;
use crate::windows::{self, Window};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A stream's settings, defaults merged in.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamSettings {
    /// The schema title every event of the stream must have.
    pub schema_title: String,
    /// The service that accepts the stream's events (EventStreamConfig).
    #[serde(default)]
    pub destination_event_service: Option<String>,
    /// Topic prefixes, e.g. a datacenter name and a dot.
    #[serde(default)]
    pub topic_prefixes: Vec<String>,
    /// Topics, when set explicitly instead of computed from `topic_prefixes`.
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    /// Whether canary events are sent to the stream.
    #[serde(default)]
    pub canary_events_enabled: bool,
    /// Deterministic sampling.
    #[serde(default)]
    pub sample: Option<Sample>,
    /// Settings for producers.
    #[serde(default)]
    pub producers: Producers,
    /// Whether the stream takes events at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Rate limits: one object or a list.
    #[serde(default, deserialize_with = "one_or_many")]
    pub rate_limit: Vec<RateLimit>,
    /// The field whose value is the Kafka message key.
    #[serde(default)]
    pub partition_key: Option<FieldPath>,
    /// Whether the aggregator drops repeated event ids.
    #[serde(default = "yes")]
    pub dedupe: bool,
    /// Producing windows; none means always open.
    #[serde(default)]
    pub windows: Vec<Window>,
}

fn yes() -> bool {
    true
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<RateLimit>, D::Error> {
    // Deserialize through Value so that the message names the real problem.
    let v = Value::deserialize(d)?;
    match v {
        Value::Array(_) => Vec::<RateLimit>::deserialize(v).map_err(serde::de::Error::custom),
        Value::Object(_) => RateLimit::deserialize(v)
            .map(|r| vec![r])
            .map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!(
            "expected a rate limit object or a list of them, found {}",
            crate::json::json_type_name(&other)
        ))),
    }
}

/// `sample: {unit, rate}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// The sampling unit: a name from `sample_units`, e.g. `session`.
    pub unit: String,
    /// The share of units kept, from 0 to 1.
    pub rate: f64,
}

/// `producers`: per-producer settings; only `eventgate` is read here.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Producers {
    /// EventGate-compatible intake settings.
    #[serde(default)]
    pub eventgate: EventGateProducer,
}

/// `producers.eventgate`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventGateProducer {
    /// Event field path → HTTP header to fill it from (or `false` to turn a default off).
    #[serde(default)]
    pub enrich_fields_from_http_headers: BTreeMap<String, HeaderSource>,
}

/// A header name, or `false`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HeaderSource {
    /// Fill from this header (lower-case).
    Header(String),
    /// Do not fill.
    Off(bool),
}

/// `rate_limit: {events_per_second, burst, key}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained events per second.
    pub events_per_second: f64,
    /// Events allowed at once after a quiet spell; defaults to one second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Whom the limit is per: absent for the whole stream, `client` for each
    /// client address, or a field path for each value of that field.
    #[serde(default)]
    pub key: Option<String>,
}

impl RateLimit {
    /// The burst in effect.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or_else(|| {
            self.events_per_second
                .ceil()
                .clamp(1.0, f64::from(u32::MAX)) as u32
        })
    }
}

/// Which field identifies each sampling unit, by unit name.
pub fn default_sample_units() -> BTreeMap<String, FieldPath> {
    [
        ("pageview", "performer.pageview_id"),
        ("session", "performer.session_id"),
        ("device", "agent.app_install_id"),
        ("event", "meta.id"),
    ]
    .into_iter()
    .filter_map(|(u, p)| Some((u.to_owned(), FieldPath::parse(p).ok()?)))
    .collect()
}

/// One wrong value in a stream config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}key `{path}`: {message}", .stream.as_ref().map(|s| format!("stream `{s}`, ")).unwrap_or_default())]
pub struct StreamConfigError {
    /// The stream (or pattern) the error is in; `None` for top-level keys.
    pub stream: Option<String>,
    /// Dotted key path inside the stream's settings.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// A stream's settings as looked up by name.
#[derive(Debug, Clone)]
pub struct StreamEntry {
    /// The key it was configured under: the name or the `/regex/`.
    pub key: String,
    /// Fields filled from request headers: (path of keys, lower-case header name).
    pub header_fields: Vec<(Vec<String>, String)>,
    /// The stream's name and produce topic, for streams configured by exact name:
    /// the events of such a stream share them.
    named: Option<(Arc<str>, Arc<str>)>,
    /// The path of the sampling unit's id, when the stream samples.
    sample_path: Option<FieldPath>,
    /// Settings with defaults merged.
    pub settings: StreamSettings,
    /// The merged settings as given, for serving EventStreamConfig.
    pub raw: Value,
}

impl StreamEntry {
    /// The topics of stream `name`: `topics`, or prefix + name for each prefix, or the name.
    pub fn topics(&self, name: &str) -> Vec<String> {
        if let Some(t) = &self.settings.topics {
            return t.clone();
        }
        if self.settings.topic_prefixes.is_empty() {
            return vec![name.to_owned()];
        }
        self.settings
            .topic_prefixes
            .iter()
            .map(|p| format!("{p}{name}"))
            .collect()
    }

    /// The topic events of stream `name` are produced to: the first of [`Self::topics`].
    pub fn produce_topic(&self, name: &str) -> String {
        match (&self.settings.topics, self.settings.topic_prefixes.first()) {
            (Some(t), _) if !t.is_empty() => t[0].clone(),
            (_, Some(p)) => format!("{p}{name}"),
            _ => name.to_owned(),
        }
    }

    /// Stream `name`'s name and produce topic as shared strings: the precomputed pair
    /// when `name` is the name this entry is configured under, else new ones.
    pub(crate) fn shared_name_and_topic(&self, name: &str) -> (Arc<str>, Arc<str>) {
        match &self.named {
            Some((n, t)) if &**n == name => (n.clone(), t.clone()),
            _ => (name.into(), self.produce_topic(name).into()),
        }
    }

    /// Where the sampling unit's id is in an event, when the stream samples by a known unit.
    pub fn sample_path(&self) -> Option<&FieldPath> {
        self.sample_path.as_ref()
    }

    /// Whether the stream takes events at `t`.
    pub fn is_open(&self, t: Timestamp) -> bool {
        windows::is_open(&self.settings.windows, t)
    }
}

/// All configured streams.
#[derive(Debug, Clone, Default)]
pub struct StreamConfig {
    exact: FastMap<String, Arc<StreamEntry>>,
    patterns: Vec<(regex::Regex, Arc<StreamEntry>)>,
    /// Sampling unit name → field holding the unit's id.
    pub sample_units: BTreeMap<String, FieldPath>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    defaults: Option<Value>,
    #[serde(default)]
    sample_units: Option<Value>,
    streams: Map<String, Value>,
}

impl StreamConfig {
    /// Parses a YAML or JSON config; all errors are returned together.
    pub fn parse(text: &str) -> Result<StreamConfig, Vec<StreamConfigError>> {
        let top = |path: &str, message: String| StreamConfigError {
            stream: None,
            path: path.to_owned(),
            message,
        };
        let doc: Value = crate::repository::parse_document(text.as_bytes(), "yaml")
            .map_err(|m| vec![top("", m)])?;
        let doc: Document = serde_path_to_error::deserialize(doc)
            .map_err(|e| vec![top(&e.path().to_string(), e.inner().to_string())])?;
        let mut errors = Vec::new();
        let defaults = match doc.defaults {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v,
            Some(other) => {
                errors.push(top(
                    "defaults",
                    format!(
                        "must be a map of settings, not {}",
                        crate::json::json_type_name(&other)
                    ),
                ));
                Value::Object(Map::new())
            }
        };
        let mut sample_units = default_sample_units();
        if let Some(units) = doc.sample_units {
            match serde_path_to_error::deserialize::<_, BTreeMap<String, FieldPath>>(units) {
                Ok(u) => sample_units.extend(u),
                Err(e) => errors.push(top(
                    &format!("sample_units.{}", e.path()),
                    e.inner().to_string(),
                )),
            }
        }
        let mut config = StreamConfig {
            sample_units,
            ..Default::default()
        };
        for (key, value) in doc.streams {
            let mut raw = defaults.clone();
            merge(&mut raw, value);
            let err = |path: String, message: String| StreamConfigError {
                stream: Some(key.clone()),
                path,
                message,
            };
            let settings: StreamSettings = match serde_path_to_error::deserialize(raw.clone()) {
                Ok(s) => s,
                Err(e) => {
                    let path = e.path().to_string();
                    errors.push(err(
                        if path == "." { String::new() } else { path },
                        e.inner().to_string(),
                    ));
                    continue;
                }
            };
            for (path, message) in check(&settings, &config.sample_units) {
                errors.push(err(path, message));
            }
            let header_fields = settings
                .producers
                .eventgate
                .enrich_fields_from_http_headers
                .iter()
                .filter_map(|(field, source)| match source {
                    HeaderSource::Header(h) => Some((
                        field.split('.').map(str::to_owned).collect(),
                        h.to_ascii_lowercase(),
                    )),
                    HeaderSource::Off(_) => None,
                })
                .collect();
            let sample_path = settings
                .sample
                .as_ref()
                .and_then(|s| config.sample_units.get(&s.unit))
                .cloned();
            let mut entry = StreamEntry {
                key: key.clone(),
                header_fields,
                named: None,
                sample_path,
                settings,
                raw,
            };
            if !key.starts_with('/') {
                entry.named = Some((key.as_str().into(), entry.produce_topic(&key).into()));
            }
            let entry = Arc::new(entry);
            if let Some(pattern) = key.strip_prefix('/').and_then(|k| k.strip_suffix('/')) {
                match regex::Regex::new(pattern) {
                    Ok(re) => config.patterns.push((re, entry)),
                    Err(e) => errors.push(err(
                        String::new(),
                        format!("the stream pattern is not a valid regex: {e}"),
                    )),
                }
            } else if key.is_empty() {
                errors.push(err(
                    String::new(),
                    "stream names cannot be empty".to_owned(),
                ));
            } else {
                config.exact.insert(key, entry);
            }
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// The settings for stream `name`: an exact key first, then the first matching pattern.
    pub fn get(&self, name: &str) -> Option<&Arc<StreamEntry>> {
        self.exact.get(name).or_else(|| {
            self.patterns
                .iter()
                .find(|(re, _)| re.is_match(name))
                .map(|(_, e)| e)
        })
    }

    /// Every configured entry: names, then patterns.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<StreamEntry>> {
        let mut names: Vec<_> = self.exact.values().collect();
        names.sort_by(|a, b| a.key.cmp(&b.key));
        names
            .into_iter()
            .chain(self.patterns.iter().map(|(_, e)| e))
    }
}

/// Merges `over` into `base`: objects key by key, recursively; anything else replaces.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn check(s: &StreamSettings, units: &BTreeMap<String, FieldPath>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if s.schema_title.is_empty() || s.schema_title.starts_with('/') {
        out.push((
            "schema_title".into(),
            "must be a schema title such as `analytics/test`, without a leading /".into(),
        ));
    }
    if let Some(sample) = &s.sample {
        if !(0.0..=1.0).contains(&sample.rate) {
            out.push((
                "sample.rate".into(),
                format!("must be between 0 and 1, not {}", sample.rate),
            ));
        }
        if !units.contains_key(&sample.unit) {
            let known: Vec<_> = units.keys().map(String::as_str).collect();
            out.push((
                "sample.unit".into(),
                format!(
                    "`{}` is not a sampling unit; known units: {}",
                    sample.unit,
                    known.join(", ")
                ),
            ));
        }
    }
    for (i, r) in s.rate_limit.iter().enumerate() {
        if !(r.events_per_second.is_finite() && r.events_per_second > 0.0) {
            out.push((
                format!("rate_limit[{i}].events_per_second"),
                format!("must be above 0, not {}", r.events_per_second),
            ));
        }
        if r.burst == Some(0) {
            out.push((
                format!("rate_limit[{i}].burst"),
                "must be at least 1".into(),
            ));
        }
        if let Some(k) = &r.key
            && k != "client"
            && let Err(m) = FieldPath::parse(k)
        {
            out.push((
                format!("rate_limit[{i}].key"),
                format!("must be `client` or a field path: {m}"),
            ));
        }
    }
    for (i, w) in s.windows.iter().enumerate() {
        if let Err(m) = w.check() {
            out.push((format!("windows[{i}]"), m));
        }
    }
    for (field, source) in &s.producers.eventgate.enrich_fields_from_http_headers {
        if let Err(m) = FieldPath::parse(field) {
            out.push((
                format!("producers.eventgate.enrich_fields_from_http_headers.{field}"),
                m,
            ));
        }
        if source == &HeaderSource::Off(true) {
            out.push((
                format!("producers.eventgate.enrich_fields_from_http_headers.{field}"),
                "must be a header name or false".into(),
            ));
        }
    }
    if let Some(topics) = &s.topics
        && topics.is_empty()
    {
        out.push((
            "topics".into(),
            "is empty: list at least one topic or leave it out".into(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
defaults:
  topic_prefixes: [local.]
  producers:
    eventgate:
      enrich_fields_from_http_headers:
        http.request_headers.user-agent: user-agent
streams:
  test.event:
    schema_title: test/event
    sample: {unit: session, rate: 0.5}
    rate_limit: {events_per_second: 100, key: client}
    partition_key: meta.domain
  /^mediawiki\.job\..+/:
    schema_title: mediawiki/job
    producers:
      eventgate:
        enrich_fields_from_http_headers:
          http.request_headers.user-agent: false
  mediawiki.job.special:
    schema_title: mediawiki/job
    enabled: false
    topics: [only.this]
"#;

    #[test]
    fn merges_defaults_and_matches_exact_before_patterns() {
        let c = StreamConfig::parse(CONFIG).unwrap();
        let t = c.get("test.event").unwrap();
        assert_eq!(t.topics("test.event"), vec!["local.test.event"]);
        assert_eq!(t.settings.rate_limit[0].burst(), 100);
        assert_eq!(
            t.settings
                .producers
                .eventgate
                .enrich_fields_from_http_headers["http.request_headers.user-agent"],
            HeaderSource::Header("user-agent".into())
        );
        let job = c.get("mediawiki.job.refresh").unwrap();
        assert_eq!(job.key, "/^mediawiki\\.job\\..+/");
        assert_eq!(
            job.produce_topic("mediawiki.job.refresh"),
            "local.mediawiki.job.refresh"
        );
        assert_eq!(
            job.settings
                .producers
                .eventgate
                .enrich_fields_from_http_headers["http.request_headers.user-agent"],
            HeaderSource::Off(false)
        );
        let special = c.get("mediawiki.job.special").unwrap();
        assert!(!special.settings.enabled);
        assert_eq!(special.produce_topic("mediawiki.job.special"), "only.this");
        assert!(c.get("nope").is_none());
    }

    #[test]
    fn answers_like_the_eventstreamconfig_api() {
        let c = StreamConfig::parse(CONFIG).unwrap();
        let all = c.to_api(None, &[]);
        let keys: Vec<&String> = all["streams"].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        let some = c.to_api(Some(&["test.event", "mediawiki.job.refresh", "nope"]), &[]);
        let s = &some["streams"];
        assert_eq!(s.as_object().unwrap().len(), 2);
        assert_eq!(s["test.event"]["schema_title"], "test/event");
        assert_eq!(
            s["test.event"]["topics"],
            serde_json::json!(["local.test.event"])
        );
        assert_eq!(
            s["mediawiki.job.refresh"]["stream"],
            "mediawiki.job.refresh"
        );
        assert_eq!(
            s["mediawiki.job.refresh"]["topics"],
            serde_json::json!(["local.mediawiki.job.refresh"])
        );
        let constrained = c.to_api(
            None,
            &[("schema_title", "mediawiki/job"), ("enabled", "false")],
        );
        let keys: Vec<&String> = constrained["streams"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["mediawiki.job.special"]);
        let by_prefix = c.to_api(None, &[("topic_prefixes", "local.")]);
        assert_eq!(by_prefix["streams"].as_object().unwrap().len(), 3);
    }

    #[test]
    fn errors_name_stream_and_key_path() {
        let bad = r#"
streams:
  a:
    schema_title: a/b
    rate_limit: {events_per_second: "fast"}
  b:
    schema_title: a/b
    sample: {unit: session, rate: 1.5}
  c:
    schema_title: a/b
    windows: [{hours: "25:00-26:00"}]
  d: {schema_title: 7}
"#;
        let errs = StreamConfig::parse(bad).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|t| t.starts_with("stream `a`, key `rate_limit")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("stream `b`, key `sample.rate`: must be between 0 and 1")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("stream `c`, key `windows[0].hours`")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("stream `d`, key `schema_title`")),
            "{text:?}"
        );
    }

    #[test]
    fn unknown_sampling_units_and_top_level_keys_are_refused() {
        let errs = StreamConfig::parse(
            "streams: {a: {schema_title: a/b, sample: {unit: moon, rate: 0.1}}}",
        )
        .unwrap_err();
        assert!(
            errs[0]
                .to_string()
                .contains("`moon` is not a sampling unit"),
            "{errs:?}"
        );
        let errs = StreamConfig::parse("stream: {}").unwrap_err();
        assert!(errs[0].to_string().contains("unknown field"), "{errs:?}");
    }
}
