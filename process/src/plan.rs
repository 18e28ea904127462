//! From an event to what the rules do with it: the rules that read its
//! stream and match it (canary events skipped unless a rule takes them),
//! the first of each rule's cases that holds, and that case's steps with
//! their templates expanded: HTTP requests, events to produce, edges of the
//! dependency index to keep, and fan-outs.

use crate::fanout::Root;
use crate::rules::{Exec, Rule, RuleSet};
use crate::template::TemplateError;
use serde_json::Value;

/// An HTTP request, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The address with its query.
    pub uri: String,
    /// Header name and value.
    pub headers: Vec<(String, String)>,
    /// The body: JSON, or the text of a string template.
    pub body: Option<Vec<u8>>,
}

/// One thing a rule does for an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send a request.
    Http(Request),
    /// Produce an event to a stream.
    Produce {
        /// The stream.
        stream: String,
        /// The event.
        event: Value,
    },
    /// Add and remove edges of the dependency index.
    Track {
        /// Who uses the targets.
        dependent: String,
        /// Targets it now uses.
        add: Vec<String>,
        /// Targets it no longer uses.
        remove: Vec<String>,
    },
    /// Send the fan-out's requests to each dependent of `target`.
    Fanout {
        /// What changed.
        target: String,
    },
}

/// A rule's work on one event.
#[derive(Debug, Clone)]
pub struct Planned<'r> {
    /// The rule.
    pub rule: &'r Rule,
    /// Its steps, in order, or why they could not be made (the event goes to the error stream).
    pub steps: Result<Vec<Step>, TemplateError>,
    /// The ordering key, when the rule names one.
    pub key: Option<String>,
}

fn is_canary(event: &Value) -> bool {
    event.pointer("/meta/domain").and_then(Value::as_str) == Some("canary")
}

/// The requests of `execs` for `message` and the match's captures.
pub fn requests(
    execs: &[Exec],
    message: &Value,
    caps: &Value,
) -> Result<Vec<Request>, TemplateError> {
    let mut out = Vec::with_capacity(execs.len());
    for e in execs {
        let mut uri = e.uri.expand_text(message, caps)?;
        if !e.query.is_empty() {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, t) in &e.query {
                q.append_pair(k, &t.expand_text(message, caps)?);
            }
            uri.push(if uri.contains('?') { '&' } else { '?' });
            uri.push_str(&q.finish());
        }
        let headers = e
            .headers
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.expand_text(message, caps)?)))
            .collect::<Result<_, TemplateError>>()?;
        let body = match &e.body {
            None => None,
            Some(t) => Some(match t.expand(message, caps)? {
                Value::String(s) => s.into_bytes(),
                other => other.to_string().into_bytes(),
            }),
        };
        out.push(Request {
            method: e.method.clone(),
            uri,
            headers,
            body,
        });
    }
    Ok(out)
}

/// Names from a template's value: a string, or the strings of a list (other items skipped).
fn names(v: Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s],
        Value::Array(a) => a
            .into_iter()
            .filter_map(|x| match x {
                Value::String(s) => Some(s),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        Value::Null => Vec::new(),
        other => vec![other.to_string()],
    }
}

/// Sets the dotted `path` of `event` to `value`, making objects on the way.
fn set_path(event: &mut Value, path: &str, value: Value) {
    let mut at = event;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !at.is_object() {
            *at = Value::Object(Default::default());
        }
        let Value::Object(map) = at else { return };
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        at = map.entry(part.to_owned()).or_insert(Value::Null);
    }
}

/// The job message of one dependent in a fan-out, the value its templates read as `message`.
pub fn fanout_message(dependent: &str, target: &str, root: &Root, event: &Value) -> Value {
    serde_json::json!({
        "dependent": dependent,
        "target": target,
        "root_event": {"signature": root.signature, "dt_ms": root.dt_ms},
        "event": event,
    })
}

/// The steps of `rule` for `event`, when it matches.
pub fn plan_rule<'r>(rule: &'r Rule, event: &Value) -> Option<Planned<'r>> {
    if !rule.canaries && is_canary(event) {
        return None;
    }
    let top = rule.matcher.matches(event)?;
    if let Some(sample) = &rule.sample {
        // An event whose template cannot be expanded is kept: dropping it would be silent.
        if let Ok(text) = sample.hash_template.expand_text(event, &top)
            && !sample.keeps(&text)
        {
            return None;
        }
    }
    let (case, caps) = rule
        .cases
        .iter()
        .find_map(|c| c.matcher.matches(event).map(|m| (c, m)))?;
    // The rule's own captures, with a case's over them.
    let caps = match (top, caps) {
        (Value::Object(mut a), Value::Object(b)) => {
            a.extend(b);
            Value::Object(a)
        }
        (a, _) => a,
    };
    let steps = (|| {
        let mut steps: Vec<Step> = requests(&case.exec, event, &caps)?
            .into_iter()
            .map(Step::Http)
            .collect();
        for p in &case.produce {
            steps.push(Step::Produce {
                stream: p.stream.clone(),
                event: p.event.expand(event, &caps)?,
            });
        }
        for d in &case.derive {
            let mut derived = event.clone();
            for (path, t) in &d.fields {
                set_path(&mut derived, path, t.expand(event, &caps)?);
            }
            steps.push(Step::Produce {
                stream: d.stream.clone(),
                event: derived,
            });
        }
        if let Some(t) = &case.track {
            let list =
                |tpl: &Option<crate::template::Template>| -> Result<Vec<String>, TemplateError> {
                    Ok(match tpl {
                        None => Vec::new(),
                        Some(t) => names(t.expand(event, &caps)?),
                    })
                };
            steps.push(Step::Track {
                dependent: t.dependent.expand_text(event, &caps)?,
                add: list(&t.add)?,
                remove: list(&t.remove)?,
            });
        }
        if let Some(f) = &case.fanout {
            steps.push(Step::Fanout {
                target: f.target.expand_text(event, &caps)?,
            });
        }
        Ok(steps)
    })();
    let key = rule
        .key
        .as_ref()
        .and_then(|k| k.expand_text(event, &caps).ok());
    Some(Planned { rule, steps, key })
}

/// Every rule's work on `event` of `stream`.
pub fn plan<'r>(rules: &'r RuleSet, stream: &str, event: &Value) -> Vec<Planned<'r>> {
    rules
        .rules
        .iter()
        .filter(|r| r.topics.iter().any(|t| t == stream))
        .filter_map(|r| plan_rule(r, event))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RULES: &str = r#"
rules:
  purge:
    topic: page.change
    match: {meta: {uri: '/\/wiki\/(?<title>[^?]+)$/'}}
    exec:
      method: post
      uri: 'http://cache/purge'
      query: {title: '{{match.meta.uri.title}}', rev: '{{message.rev}}'}
      headers: {content-type: application/json}
      body: {uri: '{{message.meta.uri}}'}
    key: '{{match.meta.uri.title}}'
  derive:
    topic: page.change
    cases:
      - match: {rev: 1}
        produce: {stream: page.created, event: {title: '{{message.title}}', first: true}}
      - produce: {stream: page.edited, event: {title: '{{message.title}}'}}
  canaries:
    topic: page.change
    canaries: true
    exec: {uri: 'http://canary/{{message.meta.domain}}'}
  other:
    topic: elsewhere
    exec: {uri: 'http://never'}
"#;

    #[test]
    fn an_event_becomes_each_matching_rules_steps() {
        let rules = RuleSet::parse(RULES).unwrap();
        let event =
            json!({"meta": {"uri": "https://x/wiki/A B", "domain": "x"}, "rev": 1, "title": "A B"});
        let planned = plan(&rules, "page.change", &event);
        let names: Vec<&str> = planned.iter().map(|p| p.rule.name.as_str()).collect();
        assert_eq!(names, ["canaries", "derive", "purge"]);
        let purge = &planned[2];
        assert_eq!(purge.key.as_deref(), Some("A B"));
        let Ok(steps) = &purge.steps else { panic!() };
        assert_eq!(
            steps[0],
            Step::Http(Request {
                method: "POST".into(),
                uri: "http://cache/purge?rev=1&title=A+B".into(),
                headers: vec![("content-type".into(), "application/json".into())],
                body: Some(br#"{"uri":"https://x/wiki/A B"}"#.to_vec()),
            })
        );
        let Ok(derived) = &planned[1].steps else {
            panic!()
        };
        assert_eq!(
            derived,
            &[Step::Produce {
                stream: "page.created".into(),
                event: json!({"title": "A B", "first": true})
            }]
        );
        let mut edit = event.clone();
        edit["rev"] = json!(2);
        let Ok(derived) = &plan(&rules, "page.change", &edit)[1].steps else {
            panic!()
        };
        assert!(matches!(&derived[0], Step::Produce { stream, .. } if stream == "page.edited"));
    }

    const INDEXED: &str = r#"
rules:
  links:
    topic: links
    track: {dependent: '{{message.page}}', add: '{{message.added}}', remove: '{{message.removed}}'}
  rerender:
    topic: edits
    match: {title: '/^Template:/'}
    fanout:
      target: '{{message.title}}'
      exec: {method: post, uri: 'http://render/{{message.dependent}}', body: {of: '{{message.event.title}}'}}
  enrich:
    topic: edits
    derive: {stream: edits.enriched, fields: {meta.domain: x.org, extra.by: '{{message.user}}'}}
  sampled:
    topic: edits
    sample: {rate: 0.5, hash_template: '{{message.title}}'}
    exec: {uri: 'http://s/{{message.title}}'}
"#;

    #[test]
    fn track_fanout_derive_and_sample_become_steps() {
        let rules = RuleSet::parse(INDEXED).unwrap();
        let link = json!({"page": "P", "added": ["T1", "T2", 3], "removed": "T0"});
        let planned = plan(&rules, "links", &link);
        let Ok(steps) = &planned[0].steps else {
            panic!()
        };
        assert_eq!(
            steps,
            &[Step::Track {
                dependent: "P".into(),
                add: vec!["T1".into(), "T2".into(), "3".into()],
                remove: vec!["T0".into()],
            }]
        );
        let edit = json!({"title": "Template:A", "user": "u1", "meta": {"id": "e1"}});
        let planned = plan(&rules, "edits", &edit);
        let names: Vec<&str> = planned.iter().map(|p| p.rule.name.as_str()).collect();
        assert!(names.starts_with(&["enrich", "rerender"]), "{names:?}");
        let Ok(derived) = &planned[0].steps else {
            panic!()
        };
        assert_eq!(
            derived,
            &[Step::Produce {
                stream: "edits.enriched".into(),
                event: json!({"title": "Template:A", "user": "u1", "meta": {"id": "e1", "domain": "x.org"}, "extra": {"by": "u1"}}),
            }]
        );
        let Ok(fan) = &planned[1].steps else { panic!() };
        assert_eq!(
            fan,
            &[Step::Fanout {
                target: "Template:A".into()
            }]
        );
        let rerender = &rules.rules.iter().find(|r| r.name == "rerender").unwrap();
        let fanout = rerender.cases[0].fanout.as_ref().unwrap();
        let root = Root {
            signature: "Template:A".into(),
            dt_ms: 5,
        };
        let msg = fanout_message("Page1", "Template:A", &root, &edit);
        let reqs = requests(&fanout.exec, &msg, &Value::Null).unwrap();
        assert_eq!(reqs[0].uri, "http://render/Page1");
        assert_eq!(
            reqs[0].body.as_deref(),
            Some(br#"{"of":"Template:A"}"#.as_slice())
        );
        assert!(!rerender.produce_only());
        assert!(
            rules
                .rules
                .iter()
                .find(|r| r.name == "enrich")
                .unwrap()
                .produce_only()
        );

        // The sample keeps a share of titles, the same verdict for every event of one title.
        let kept = (0..1000)
            .filter(|i| {
                let e = json!({"title": format!("T{i}")});
                let first = plan(&rules, "edits", &e)
                    .iter()
                    .any(|p| p.rule.name == "sampled");
                let again = plan(&rules, "edits", &e)
                    .iter()
                    .any(|p| p.rule.name == "sampled");
                assert_eq!(first, again);
                first
            })
            .count();
        assert!((400..600).contains(&kept), "{kept} of 1000 in a 0.5 sample");
    }

    #[test]
    fn canaries_are_skipped_unless_taken_and_missing_fields_are_errors() {
        let rules = RuleSet::parse(RULES).unwrap();
        let canary = json!({"meta": {"uri": "https://x/wiki/A", "domain": "canary"}, "rev": 1, "title": "A"});
        let names: Vec<String> = plan(&rules, "page.change", &canary)
            .iter()
            .map(|p| p.rule.name.clone())
            .collect();
        assert_eq!(names, ["canaries"]);
        let no_title = json!({"meta": {"uri": "https://x/wiki/A", "domain": "x"}, "rev": 1});
        let planned = plan(&rules, "page.change", &no_title);
        assert!(planned[1].steps.is_err(), "derive needs message.title");
        assert!(planned[2].steps.is_ok());
        assert!(plan(&rules, "unknown", &no_title).is_empty());
    }
}
