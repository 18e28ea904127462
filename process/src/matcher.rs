//! Whether an event matches a rule, as change-propagation decides it:
//! `match` is a pattern of the event's fields (constants, nested objects,
//! arrays whose every pattern must match some element, and `/regex/`
//! strings), `match_not` one or more patterns none of which may match. A
//! match yields its captures, shaped like the pattern: a regex field gives
//! `{0: whole, 1: …, name: …}`, so a template reads `{{match.meta.uri.title}}`.

use regex::Regex;
use serde_json::{Map, Value};

/// A pattern that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct MatchError {
    /// Where in the pattern, as a dotted path.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// A compiled pattern.
#[derive(Debug, Clone)]
enum Node {
    Const(Value),
    Regex(Regex),
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
}

/// A rule's `match` and `match_not`, compiled.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    want: Option<Node>,
    not: Vec<Node>,
}

fn compile(v: &Value, path: &str) -> Result<Node, MatchError> {
    let at = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    Ok(match v {
        Value::String(s) if s.len() >= 2 && s.starts_with('/') => {
            let Some(end) = s.rfind('/').filter(|&e| e > 0) else {
                return Ok(Node::Const(v.clone()));
            };
            let flags = &s[end + 1..];
            if !flags
                .chars()
                .all(|c| matches!(c, 'i' | 'm' | 's' | 'u' | 'g'))
            {
                return Ok(Node::Const(v.clone()));
            }
            let mut pattern = String::new();
            for f in flags.chars().filter(|c| matches!(c, 'i' | 'm' | 's')) {
                pattern.push_str(&format!("(?{f})"));
            }
            pattern.push_str(&s[1..end]);
            Node::Regex(Regex::new(&pattern).map_err(|e| MatchError {
                path: path.to_owned(),
                message: format!("`{s}` is not a regular expression: {e}"),
            })?)
        }
        Value::Object(map) => Node::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), compile(v, &at(k))?)))
                .collect::<Result<_, MatchError>>()?,
        ),
        Value::Array(items) => Node::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| compile(v, &at(&i.to_string())))
                .collect::<Result<_, _>>()?,
        ),
        other => Node::Const(other.clone()),
    })
}

/// `node` against `v`: its captures when it matches.
fn test(node: &Node, v: &Value) -> Option<Value> {
    match node {
        Node::Const(c) => (c == v).then(|| v.clone()),
        Node::Regex(re) => {
            let text = v.as_str()?;
            let caps = re.captures(text)?;
            let mut out = Map::new();
            for (i, m) in caps.iter().enumerate() {
                out.insert(
                    i.to_string(),
                    m.map_or(Value::Null, |m| Value::String(m.as_str().to_owned())),
                );
            }
            for name in re.capture_names().flatten() {
                if let Some(m) = caps.name(name) {
                    out.insert(name.to_owned(), Value::String(m.as_str().to_owned()));
                }
            }
            Some(Value::Object(out))
        }
        Node::Object(fields) => {
            let obj = v.as_object()?;
            let mut out = Map::new();
            for (k, n) in fields {
                out.insert(k.clone(), test(n, obj.get(k)?)?);
            }
            Some(Value::Object(out))
        }
        Node::Array(patterns) => {
            let items = v.as_array()?;
            patterns
                .iter()
                .map(|p| items.iter().find_map(|i| test(p, i)))
                .collect::<Option<Vec<_>>>()
                .map(Value::Array)
        }
    }
}

impl Matcher {
    /// Compiles `want` (`match`) and `not` (`match_not`: one pattern or a list of them).
    pub fn new(want: Option<&Value>, not: Option<&Value>) -> Result<Matcher, MatchError> {
        let not = match not {
            None => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, p)| compile(p, &format!("match_not.{i}")))
                .collect::<Result<_, _>>()?,
            Some(p) => vec![compile(p, "match_not")?],
        };
        Ok(Matcher {
            want: want.map(|w| compile(w, "match")).transpose()?,
            not,
        })
    }

    /// The captures when `event` matches (an empty object without a `match`).
    pub fn matches(&self, event: &Value) -> Option<Value> {
        if self.not.iter().any(|n| test(n, event).is_some()) {
            return None;
        }
        match &self.want {
            None => Some(Value::Object(Map::new())),
            Some(n) => test(n, event),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn constants_objects_arrays_and_regexes_match_with_their_captures() {
        let m = Matcher::new(
            Some(&json!({
                "meta": {"uri": "/^https?:\\/\\/[^\\/]+\\/wiki\\/(?<title>.+)$/", "domain": "en.wikipedia.org"},
                "tags": ["purge"],
                "page_namespace": 0
            })),
            Some(&json!({"meta": {"domain": "/\\.wikidata\\.org$/"}})),
        )
        .unwrap();
        let event = json!({
            "meta": {"uri": "https://en.wikipedia.org/wiki/Main_Page", "domain": "en.wikipedia.org"},
            "tags": ["edit", "purge"],
            "page_namespace": 0
        });
        let caps = m.matches(&event).unwrap();
        assert_eq!(caps["meta"]["uri"]["title"], "Main_Page");
        assert_eq!(caps["meta"]["uri"]["1"], "Main_Page");
        assert_eq!(
            caps["meta"]["uri"]["0"],
            "https://en.wikipedia.org/wiki/Main_Page"
        );
        assert_eq!(caps["meta"]["domain"], "en.wikipedia.org");

        let mut other = event.clone();
        other["page_namespace"] = json!(1);
        assert!(m.matches(&other).is_none(), "a constant differs");
        let mut other = event.clone();
        other["tags"] = json!(["edit"]);
        assert!(m.matches(&other).is_none(), "no element matches");
        let mut other = event.clone();
        other.as_object_mut().unwrap().remove("tags");
        assert!(m.matches(&other).is_none(), "a field is missing");
    }

    #[test]
    fn match_not_excludes_and_flags_apply() {
        let m = Matcher::new(
            Some(&json!({"title": "/^main/i"})),
            Some(&json!([{"bot": true}, {"meta": {"domain": "canary"}}])),
        )
        .unwrap();
        assert!(m.matches(&json!({"title": "Main page"})).is_some());
        assert!(m.matches(&json!({"title": "Main", "bot": true})).is_none());
        assert!(
            m.matches(&json!({"title": "Main", "meta": {"domain": "canary"}}))
                .is_none()
        );
        assert!(
            Matcher::new(None, None)
                .unwrap()
                .matches(&json!({}))
                .is_some()
        );
        // A string that only starts with a slash is a constant.
        let path = Matcher::new(Some(&json!({"p": "/wiki/x"})), None).unwrap();
        assert!(path.matches(&json!({"p": "/wiki/x"})).is_some());
    }

    #[test]
    fn a_bad_regex_is_named_by_its_place() {
        let e = Matcher::new(Some(&json!({"meta": {"uri": "/(unclosed/"}})), None).unwrap_err();
        assert_eq!(e.path, "match.meta.uri");
        assert!(e.message.contains("not a regular expression"), "{e}");
    }
}
