//! From an event to what the rules do with it: the rules that read its
//! stream and match it (canary events skipped unless a rule takes them),
//! the first of each rule's cases that holds, and that case's steps with
//! their templates expanded: HTTP requests and events to produce.

use crate::rules::{Rule, RuleSet};
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

/// The steps of `rule` for `event`, when it matches.
pub fn plan_rule<'r>(rule: &'r Rule, event: &Value) -> Option<Planned<'r>> {
    if !rule.canaries && is_canary(event) {
        return None;
    }
    let top = rule.matcher.matches(event)?;
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
        let mut steps = Vec::new();
        for e in &case.exec {
            let mut uri = e.uri.expand_text(event, &caps)?;
            if !e.query.is_empty() {
                let mut q = form_urlencoded::Serializer::new(String::new());
                for (k, t) in &e.query {
                    q.append_pair(k, &t.expand_text(event, &caps)?);
                }
                uri.push(if uri.contains('?') { '&' } else { '?' });
                uri.push_str(&q.finish());
            }
            let headers = e
                .headers
                .iter()
                .map(|(k, t)| Ok((k.clone(), t.expand_text(event, &caps)?)))
                .collect::<Result<_, TemplateError>>()?;
            let body = match &e.body {
                None => None,
                Some(t) => Some(match t.expand(event, &caps)? {
                    Value::String(s) => s.into_bytes(),
                    other => other.to_string().into_bytes(),
                }),
            };
            steps.push(Step::Http(Request {
                method: e.method.clone(),
                uri,
                headers,
                body,
            }));
        }
        for p in &case.produce {
            steps.push(Step::Produce {
                stream: p.stream.clone(),
                event: p.event.expand(event, &caps)?,
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
