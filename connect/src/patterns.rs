//! Streams a sink takes through a `/regex/` key of the stream config (with
//! `consumers.<sink>.enabled: true`): there is no list of them, so they are
//! found by topic. A topic belongs to such a stream when, with one of the
//! entry's topic prefixes taken off, it leaves a name the stream config
//! resolves to that very entry (no exact key, no earlier pattern, claims it).

use sluice_shared::{StreamConfig, StreamEntry};
use std::sync::Arc;

/// The `/regex/` entries a sink takes.
#[derive(Clone)]
pub struct Patterns {
    config: Arc<StreamConfig>,
    entries: Vec<Arc<StreamEntry>>,
}

/// A stream found by its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The stream's name.
    pub stream: String,
    /// Its schema title.
    pub title: String,
}

impl Patterns {
    /// The pattern entries of `config` whose consumers enable `sink`.
    pub fn new(config: Arc<StreamConfig>, sink: &str) -> Patterns {
        let entries = config
            .entries()
            .filter(|e| e.key.starts_with('/'))
            .filter(|e| {
                e.raw
                    .pointer(&format!("/consumers/{sink}/enabled"))
                    .and_then(serde_json::Value::as_bool)
                    == Some(true)
            })
            .cloned()
            .collect();
        Patterns { config, entries }
    }

    /// Whether the sink takes no stream by pattern.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The stream `topic` carries, when it is one of these.
    pub fn stream_of(&self, topic: &str) -> Option<Found> {
        for entry in &self.entries {
            // Streams of an entry with fixed `topics` share them: no name can be read off one.
            if entry.settings.topics.is_some() {
                continue;
            }
            let names: Vec<&str> = if entry.settings.topic_prefixes.is_empty() {
                vec![topic]
            } else {
                entry
                    .settings
                    .topic_prefixes
                    .iter()
                    .filter_map(|p| topic.strip_prefix(p.as_str()))
                    .collect()
            };
            for name in names {
                if name.is_empty() {
                    continue;
                }
                if let Some(found) = self.config.get(name)
                    && Arc::ptr_eq(found, entry)
                {
                    return Some(Found {
                        stream: name.to_owned(),
                        title: entry.settings.schema_title.clone(),
                    });
                }
            }
        }
        None
    }

    /// Kafka subscriptions (librdkafka's `^`-regex topics) covering every topic of these
    /// streams; each topic the broker lists is still checked with [`Patterns::stream_of`].
    pub fn kafka_subscriptions(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.settings.topics.is_none())
            .map(|e| {
                let inner = e.key.trim_matches('/');
                let inner = inner.strip_prefix('^').unwrap_or(inner);
                let inner = inner.strip_suffix('$').unwrap_or(inner);
                let prefixes: Vec<String> = e
                    .settings
                    .topic_prefixes
                    .iter()
                    .map(|p| escape(p))
                    .collect();
                if prefixes.is_empty() {
                    format!("^({inner})$")
                } else {
                    format!("^({})({inner})$", prefixes.join("|"))
                }
            })
            .collect()
    }
}

/// `text` with the characters special in a POSIX extended regex escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if ".[]{}()*+?^$|\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Arc<StreamConfig> {
        let text = "defaults:\n  topic_prefixes: [eqiad., codfw.]\nstreams:\n  \
                    mediawiki.job.special:\n    schema_title: other/job\n  \
                    /^mediawiki\\.job\\..+$/:\n    schema_title: mediawiki/job\n    consumers:\n      lake: {enabled: true}\n  \
                    /^other\\..+$/:\n    schema_title: other/thing\n";
        Arc::new(StreamConfig::parse(text).unwrap())
    }

    #[test]
    fn a_topic_is_a_pattern_stream_only_when_the_config_resolves_its_name_to_that_entry() {
        let p = Patterns::new(config(), "lake");
        let found = |t: &str| p.stream_of(t).map(|f| (f.stream, f.title));
        assert_eq!(
            found("eqiad.mediawiki.job.refresh"),
            Some(("mediawiki.job.refresh".into(), "mediawiki/job".into()))
        );
        assert_eq!(
            found("codfw.mediawiki.job.purge").map(|f| f.0),
            Some("mediawiki.job.purge".into())
        );
        // An exact key wins over the pattern; another prefix, another pattern, or none: not ours.
        assert_eq!(found("eqiad.mediawiki.job.special"), None);
        assert_eq!(found("esams.mediawiki.job.refresh"), None);
        assert_eq!(found("eqiad.other.thing"), None);
        assert_eq!(found("eqiad.mediawiki.job."), None);
        assert!(Patterns::new(config(), "warehouse").is_empty());
    }

    #[test]
    fn kafka_subscriptions_join_the_prefixes_to_the_pattern() {
        let p = Patterns::new(config(), "lake");
        assert_eq!(
            p.kafka_subscriptions(),
            ["^(eqiad\\.|codfw\\.)(mediawiki\\.job\\..+)$"]
        );
    }
}
