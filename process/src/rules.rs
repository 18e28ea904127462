//! A rule file in change-propagation's shape: `rules: {<name>: {...}}`, each
//! rule with `topic` or `topics` (stream names), `match` and `match_not`,
//! either `exec` (HTTP requests: `method`, `uri`, `headers`, `query`,
//! `body`) or `cases` (`[{match, match_not, exec}]`, the first that matches
//! runs), Sluice's `produce` (`{stream, event}`), `derive` (`{stream,
//! fields}`: the event itself with fields set from templates), `track`
//! (`{dependent, add, remove}`: edges of the dependency index) and `fanout`
//! (`{target, exec}`: one request per dependent of a changed target, its
//! templates over `{{message.dependent}}`, `{{message.target}}` and
//! `{{message.event…}}`), and change-propagation's
//! delivery settings with its defaults: `retry_on {status: [5xx]}`,
//! `ignore {status: [412]}`, `retry_limit` 2, `retry_delay` 60000 ms,
//! `retry_factor` 6, `concurrency` 30, `timeout` 7 minutes, canary events
//! skipped. Every problem is reported with the rule and the field.

use crate::matcher::Matcher;
use crate::template::Template;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A rule file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Not YAML of the expected shape.
    #[error("the rule file: {0}")]
    Shape(String),
    /// One rule is wrong.
    #[error("rule `{rule}`: {message}")]
    Rule {
        /// The rule's name.
        rule: String,
        /// What is wrong.
        message: String,
    },
}

/// A set of HTTP statuses: codes (`412`) and classes (`5xx`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Statuses(Vec<(u16, u16)>);

impl Statuses {
    fn parse(items: &[Value]) -> Result<Statuses, String> {
        items
            .iter()
            .map(|v| match v {
                Value::Number(n) => n
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .map(|n| (n, n))
                    .ok_or_else(|| format!("{n} is not an HTTP status")),
                Value::String(s) => {
                    let b = s.as_bytes();
                    if b.len() == 3 && b[0].is_ascii_digit() && &s[1..] == "xx" {
                        let h = u16::from(b[0] - b'0') * 100;
                        Ok((h, h + 99))
                    } else {
                        s.parse::<u16>()
                            .map(|n| (n, n))
                            .map_err(|_| format!("`{s}` is not a status or a class like `5xx`"))
                    }
                }
                other => Err(format!("{other} is not an HTTP status")),
            })
            .collect::<Result<_, _>>()
            .map(Statuses)
    }

    /// Whether `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// One HTTP request a rule makes.
#[derive(Debug, Clone, PartialEq)]
pub struct Exec {
    /// `GET`, `POST`, …
    pub method: String,
    /// The address.
    pub uri: Template,
    /// Header name → value.
    pub headers: Vec<(String, Template)>,
    /// Query parameter → value.
    pub query: Vec<(String, Template)>,
    /// The body, sent as JSON (a string as text).
    pub body: Option<Template>,
}

/// An event a rule produces to a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Produce {
    /// The stream.
    pub stream: String,
    /// The event.
    pub event: Template,
}

/// The event itself, with fields set, to another stream (simple enrichment).
#[derive(Debug, Clone, PartialEq)]
pub struct Derive {
    /// The stream.
    pub stream: String,
    /// Dotted field path → value.
    pub fields: Vec<(String, Template)>,
}

/// Edges of the dependency index an event adds and removes.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Who uses the targets.
    pub dependent: Template,
    /// Targets it now uses (a string or a list of them).
    pub add: Option<Template>,
    /// Targets it no longer uses.
    pub remove: Option<Template>,
}

/// A changed target's dependents, each sent the same requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Fanout {
    /// What changed.
    pub target: Template,
    /// Requests per dependent, over `{dependent, target, root_event, event}`.
    pub exec: Vec<Exec>,
}

/// What a rule (or one of its cases) does with a matching event.
#[derive(Debug, Clone)]
pub struct Action {
    /// Which events.
    pub matcher: Matcher,
    /// HTTP requests, in order.
    pub exec: Vec<Exec>,
    /// Events produced.
    pub produce: Vec<Produce>,
    /// Events derived from this one.
    pub derive: Vec<Derive>,
    /// Index edges kept up from the event.
    pub track: Option<Track>,
    /// A fan-out to the target's dependents.
    pub fanout: Option<Fanout>,
}

impl Action {
    /// Whether the action only writes events (exactly once is possible on Kafka).
    pub fn produce_only(&self) -> bool {
        self.exec.is_empty() && self.track.is_none() && self.fanout.is_none()
    }
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its name.
    pub name: String,
    /// The streams it reads.
    pub topics: Vec<String>,
    /// The rule's own `match`, then its cases (or itself, without cases).
    pub matcher: Matcher,
    /// The first case whose match holds runs; without `cases`, one action.
    pub cases: Vec<Action>,
    /// Statuses retried.
    pub retry_on: Statuses,
    /// Statuses taken as done.
    pub ignore: Statuses,
    /// Retries after the first attempt.
    pub retry_limit: u32,
    /// Milliseconds before the first retry.
    pub retry_delay_ms: u64,
    /// Each retry waits this many times longer than the one before.
    pub retry_factor: f64,
    /// Events worked on at once.
    pub concurrency: usize,
    /// Milliseconds a request may take.
    pub timeout_ms: u64,
    /// Events of one key are done in order, when set.
    pub key: Option<Template>,
    /// Whether canary events (`meta.domain: canary`) are worked on.
    pub canaries: bool,
    /// Only a share of the events, chosen by a hash of a template.
    pub sample: Option<Sample>,
}

/// change-propagation's `sample: {rate, hash_template}`: an event is worked on when the hash
/// of its expanded template falls under the rate, so every event of one value gets the same
/// verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The share kept, 0 to 1.
    pub rate: f64,
    /// What is hashed.
    pub hash_template: Template,
}

impl Sample {
    /// Whether an event whose template expands to `text` is in the sample.
    pub fn keeps(&self, text: &str) -> bool {
        // FNV-1a, 64 bits, then MurmurHash3's finalizer so that similar texts spread over the
        // whole range: stable across processes and versions.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        (h as f64) / (u64::MAX as f64) < self.rate
    }
}

impl Rule {
    /// Whether every case only writes events.
    pub fn produce_only(&self) -> bool {
        self.cases.iter().all(Action::produce_only)
    }

    /// Milliseconds to wait before retry `n` (from 0): `retry_delay · retry_factorⁿ`.
    pub fn retry_delay(&self, n: u32) -> u64 {
        let factor = self.retry_factor.powi(i32::try_from(n).unwrap_or(i32::MAX));
        (self.retry_delay_ms as f64 * factor).min(u64::MAX as f64) as u64
    }
}

#[derive(Deserialize)]
struct File {
    rules: BTreeMap<String, Value>,
}

/// Every rule of a file, by name.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// The rules, in name order.
    pub rules: Vec<Rule>,
}

fn strings(v: Option<&Value>) -> Result<Vec<String>, String> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{x} is not a stream name"))
            })
            .collect(),
        Some(other) => Err(format!("{other} is not a stream name or a list of them")),
    }
}

fn pairs(v: Option<&Value>, what: &str) -> Result<Vec<(String, Template)>, String> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                Template::new(v)
                    .map(|t| (k.clone(), t))
                    .map_err(|e| format!("{what}.{k}: {e}"))
            })
            .collect(),
        Some(other) => Err(format!("{what} must be a map, not {other}")),
    }
}

/// One item or a list of them, as change-propagation takes `exec`.
fn one_or_many(v: Option<&Value>) -> Vec<&Value> {
    match v {
        None => Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(one) => vec![one],
    }
}

fn execs(v: Option<&Value>) -> Result<Vec<Exec>, String> {
    one_or_many(v)
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let at = format!("exec.{i}");
            let uri = e
                .get("uri")
                .ok_or_else(|| format!("{at} has no uri"))
                .and_then(|u| Template::new(u).map_err(|x| format!("{at}.uri: {x}")))?;
            let method = match e.get("method") {
                None => "GET".to_owned(),
                Some(Value::String(m)) => m.to_ascii_uppercase(),
                Some(other) => return Err(format!("{at}.method: {other} is not a method")),
            };
            Ok(Exec {
                method,
                uri,
                headers: pairs(e.get("headers"), &format!("{at}.headers"))?,
                query: pairs(e.get("query"), &format!("{at}.query"))?,
                body: e
                    .get("body")
                    .map(Template::new)
                    .transpose()
                    .map_err(|x| format!("{at}.body: {x}"))?,
            })
        })
        .collect()
}

fn produces(v: Option<&Value>) -> Result<Vec<Produce>, String> {
    one_or_many(v)
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let at = format!("produce.{i}");
            let stream = p
                .get("stream")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at} names no stream"))?;
            let event = p
                .get("event")
                .ok_or_else(|| format!("{at} has no event"))
                .and_then(|e| Template::new(e).map_err(|x| format!("{at}.event: {x}")))?;
            Ok(Produce {
                stream: stream.to_owned(),
                event,
            })
        })
        .collect()
}

fn derives(v: Option<&Value>) -> Result<Vec<Derive>, String> {
    one_or_many(v)
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let at = format!("derive.{i}");
            let stream = d
                .get("stream")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at} names no stream"))?;
            let fields = pairs(d.get("fields"), &format!("{at}.fields"))?;
            Ok(Derive {
                stream: stream.to_owned(),
                fields,
            })
        })
        .collect()
}

fn template(body: &Value, key: &str, at: &str) -> Result<Option<Template>, String> {
    body.get(key)
        .map(Template::new)
        .transpose()
        .map_err(|e| format!("{at}.{key}: {e}"))
}

fn track(v: Option<&Value>) -> Result<Option<Track>, String> {
    let Some(t) = v else { return Ok(None) };
    let dependent = template(t, "dependent", "track")?.ok_or("track names no `dependent`")?;
    let add = template(t, "add", "track")?;
    let remove = template(t, "remove", "track")?;
    if add.is_none() && remove.is_none() {
        return Err("track needs `add` or `remove`".into());
    }
    Ok(Some(Track {
        dependent,
        add,
        remove,
    }))
}

fn fanout(v: Option<&Value>) -> Result<Option<Fanout>, String> {
    let Some(f) = v else { return Ok(None) };
    let target = template(f, "target", "fanout")?.ok_or("fanout names no `target`")?;
    let exec = execs(f.get("exec")).map_err(|e| format!("fanout.{e}"))?;
    if exec.is_empty() {
        return Err("fanout needs `exec`: what to send for each dependent".into());
    }
    Ok(Some(Fanout { target, exec }))
}

fn action(body: &Value, with_match: bool) -> Result<Action, String> {
    let matcher = if with_match {
        Matcher::new(body.get("match"), body.get("match_not")).map_err(|e| e.to_string())?
    } else {
        Matcher::default()
    };
    let a = Action {
        matcher,
        exec: execs(body.get("exec"))?,
        produce: produces(body.get("produce"))?,
        derive: derives(body.get("derive"))?,
        track: track(body.get("track"))?,
        fanout: fanout(body.get("fanout"))?,
    };
    if a.produce_only() && a.produce.is_empty() && a.derive.is_empty() {
        return Err(
            "it does nothing: give it `exec`, `produce`, `derive`, `track` or `fanout`".into(),
        );
    }
    Ok(a)
}

fn number<T: TryFrom<u64>>(body: &Value, key: &str, default: T) -> Result<T, String> {
    match body.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| format!("{key}: {v} is not a whole number in range")),
    }
}

fn status_set(body: &Value, key: &str, default: &[Value]) -> Result<Statuses, String> {
    match body.get(key) {
        None => Statuses::parse(default),
        Some(v) => match v.get("status") {
            Some(Value::Array(a)) => Statuses::parse(a),
            Some(one) => Statuses::parse(std::slice::from_ref(one)),
            None => Err(format!("{key} needs `status: [...]`")),
        }
        .map_err(|e| format!("{key}: {e}")),
    }
}

const KNOWN: &[&str] = &[
    "topic",
    "topics",
    "match",
    "match_not",
    "cases",
    "exec",
    "produce",
    "derive",
    "track",
    "fanout",
    "retry_on",
    "ignore",
    "retry_limit",
    "retry_delay",
    "retry_factor",
    "concurrency",
    "timeout",
    "key",
    "canaries",
    "sample",
];

fn sample(v: Option<&Value>) -> Result<Option<Sample>, String> {
    let Some(v) = v else { return Ok(None) };
    let rate = v
        .get("rate")
        .and_then(Value::as_f64)
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or("sample.rate must be a number from 0 to 1")?;
    let hash_template =
        template(v, "hash_template", "sample")?.ok_or("sample names no `hash_template`")?;
    Ok(Some(Sample {
        rate,
        hash_template,
    }))
}

fn rule(name: &str, body: &Value) -> Result<Rule, String> {
    let map = body.as_object().ok_or("a rule must be a map")?;
    if let Some(k) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!(
            "unknown setting `{k}` (known: {})",
            KNOWN.join(", ")
        ));
    }
    let mut topics = strings(body.get("topic"))?;
    topics.extend(strings(body.get("topics"))?);
    if topics.is_empty() {
        return Err("it reads no stream: give it `topic` or `topics`".into());
    }
    let matcher =
        Matcher::new(body.get("match"), body.get("match_not")).map_err(|e| e.to_string())?;
    let cases = match body.get("cases") {
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, c)| action(c, true).map_err(|e| format!("cases.{i}: {e}")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(format!("cases must be a list, not {other}")),
        None => vec![action(body, false)?],
    };
    let retry_factor = match body.get("retry_factor") {
        None => 6.0,
        Some(v) => v
            .as_f64()
            .filter(|f| *f >= 1.0)
            .ok_or_else(|| format!("retry_factor: {v} is not a number of at least 1"))?,
    };
    Ok(Rule {
        name: name.to_owned(),
        topics,
        matcher,
        cases,
        retry_on: status_set(body, "retry_on", &[Value::from("5xx")])?,
        ignore: status_set(body, "ignore", &[Value::from(412)])?,
        retry_limit: number(body, "retry_limit", 2)?,
        retry_delay_ms: number(body, "retry_delay", 60_000)?,
        retry_factor,
        concurrency: number(body, "concurrency", 30usize)?.max(1),
        timeout_ms: number(body, "timeout", 420_000)?,
        key: body
            .get("key")
            .map(Template::new)
            .transpose()
            .map_err(|e| format!("key: {e}"))?,
        canaries: body
            .get("canaries")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        sample: sample(body.get("sample"))?,
    })
}

impl RuleSet {
    /// Reads a rule file's text.
    pub fn parse(text: &str) -> Result<RuleSet, RuleError> {
        let file: File =
            serde_yaml_ng::from_str(text).map_err(|e| RuleError::Shape(e.to_string()))?;
        let rules = file
            .rules
            .iter()
            .map(|(name, body)| {
                rule(name, body).map_err(|message| RuleError::Rule {
                    rule: name.clone(),
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RuleSet { rules })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILE: &str = r#"
rules:
  purge:
    topic: mediawiki.page_change
    match:
      meta:
        uri: '/^https?:\/\/[^\/]+\/wiki\/(?<title>.+)$/'
    match_not:
      meta:
        domain: /wikidata\.org$/
    exec:
      method: post
      uri: 'http://cache.local/purge/{{match.meta.uri.title}}'
      headers:
        x-request-id: '{{message.meta.request_id}}'
      body:
        uris: ['{{message.meta.uri}}']
    retry_delay: 500
    key: '{{message.page_id}}'
  enrich:
    topics: [a.stream, b.stream]
    cases:
      - match: {kind: edit}
        produce:
          stream: derived.stream
          event: {$schema: /derived/1.0.0, of: '{{message.meta.id}}'}
      - match: {kind: delete}
        exec: {uri: 'http://x/{{message.id}}'}
    retry_on: {status: [503, 429]}
    ignore: {status: ['4xx']}
"#;

    #[test]
    fn a_rule_file_reads_with_change_propagations_defaults() {
        let set = RuleSet::parse(FILE).unwrap();
        let [enrich, purge] = &set.rules[..] else {
            panic!("two rules")
        };
        assert_eq!(purge.topics, ["mediawiki.page_change"]);
        assert_eq!(purge.retry_limit, 2);
        assert_eq!(purge.retry_delay(0), 500);
        assert_eq!(purge.retry_delay(1), 3000);
        assert!(purge.retry_on.contains(503) && !purge.retry_on.contains(429));
        assert!(purge.ignore.contains(412) && !purge.ignore.contains(404));
        assert_eq!(purge.concurrency, 30);
        assert!(!purge.canaries);
        let exec = &purge.cases[0].exec[0];
        assert_eq!(exec.method, "POST");
        let event = json!({"meta": {"uri": "https://en.wikipedia.org/wiki/Foo", "domain": "en.wikipedia.org", "request_id": "r1"}, "page_id": 7});
        let caps = purge.matcher.matches(&event).unwrap();
        assert_eq!(
            exec.uri.expand_text(&event, &caps).unwrap(),
            "http://cache.local/purge/Foo"
        );
        assert_eq!(
            exec.body.as_ref().unwrap().expand(&event, &caps).unwrap(),
            json!({"uris": ["https://en.wikipedia.org/wiki/Foo"]})
        );
        assert_eq!(
            purge
                .key
                .as_ref()
                .unwrap()
                .expand_text(&event, &caps)
                .unwrap(),
            "7"
        );
        let mut wikidata = event.clone();
        wikidata["meta"]["domain"] = json!("www.wikidata.org");
        assert!(purge.matcher.matches(&wikidata).is_none());

        assert_eq!(enrich.topics, ["a.stream", "b.stream"]);
        assert_eq!(enrich.cases.len(), 2);
        assert_eq!(enrich.cases[0].produce[0].stream, "derived.stream");
        assert!(
            enrich.cases[1]
                .matcher
                .matches(&json!({"kind": "delete"}))
                .is_some()
        );
        assert!(enrich.retry_on.contains(429) && !enrich.retry_on.contains(500));
        assert!(enrich.ignore.contains(404));
    }

    #[test]
    fn mistakes_are_named_by_rule_and_field() {
        let bad = |text: &str| RuleSet::parse(text).unwrap_err().to_string();
        assert!(bad("nope: 1").contains("the rule file"));
        let e = bad("rules: {r: {exec: {uri: x}}}");
        assert!(e.contains("rule `r`") && e.contains("topic"), "{e}");
        let e = bad("rules: {r: {topic: s}}");
        assert!(e.contains("does nothing"), "{e}");
        let e = bad("rules: {r: {topic: s, exec: {uri: x}, retries: 3}}");
        assert!(e.contains("unknown setting `retries`"), "{e}");
        let e = bad("rules: {r: {topic: s, exec: {uri: '{{message.a'}}}");
        assert!(e.contains("exec.0.uri"), "{e}");
        let e = bad("rules: {r: {topic: s, exec: {uri: x}, retry_on: {status: [6xy]}}}");
        assert!(e.contains("retry_on"), "{e}");
        let e = bad("rules: {r: {topic: s, match: {a: '/(/'}, exec: {uri: x}}}");
        assert!(e.contains("match.a"), "{e}");
        let e = bad("rules: {r: {topic: s, track: {add: x}}}");
        assert!(e.contains("dependent"), "{e}");
        let e = bad("rules: {r: {topic: s, track: {dependent: x}}}");
        assert!(e.contains("`add` or `remove`"), "{e}");
        let e = bad("rules: {r: {topic: s, fanout: {target: x}}}");
        assert!(e.contains("fanout needs `exec`"), "{e}");
        let e = bad("rules: {r: {topic: s, exec: {uri: x}, sample: {rate: 2, hash_template: x}}}");
        assert!(e.contains("sample.rate"), "{e}");
        let e = bad("rules: {r: {topic: s, derive: {fields: {a: b}}}}");
        assert!(e.contains("derive.0 names no stream"), "{e}");
    }
}
