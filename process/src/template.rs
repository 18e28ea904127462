//! Templates over an event and a match's captures, as change-propagation
//! writes them: `{{message.meta.uri}}`, `{{match.meta.uri.title}}`,
//! `{{message.tags[0]}}`, `{{message['odd key']}}`. A string that is one
//! expression and nothing else takes the value as it is (a number stays a
//! number); within other text a string is inserted as it is and any other
//! value as JSON. Objects and arrays are templates field by field.

use serde_json::{Map, Value};

/// A template that does not parse, or an expansion that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template text is malformed.
    #[error("template `{text}`: {message}")]
    Syntax {
        /// The template.
        text: String,
        /// What is wrong.
        message: String,
    },
    /// An expression names a field the event (or match) does not have.
    #[error("template expression `{0}` names a field the event does not have")]
    Missing(String),
}

/// Where an expression starts looking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Message,
    Match,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Expr {
    text: String,
    root: Root,
    path: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Expr(Expr),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Node);

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A string with expressions in it.
    Text(Vec<Part>),
    /// Anything else, field by field.
    Object(Vec<(String, Node)>),
    /// Item by item.
    Array(Vec<Node>),
    /// A value with nothing to expand.
    Const(Value),
}

fn parse_expr(text: &str) -> Result<Expr, String> {
    let t = text.trim();
    let mut path = Vec::new();
    let mut rest = t;
    let root_end = rest.find(['.', '[']).unwrap_or(rest.len());
    let root = match &rest[..root_end] {
        "message" => Root::Message,
        "match" => Root::Match,
        other => {
            return Err(format!(
                "`{other}` is not `message` or `match` (expressions read the event or the match)"
            ));
        }
    };
    rest = &rest[root_end..];
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Err("an empty field name".into());
            }
            path.push(r[..end].to_owned());
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or("a `[` without its `]`")?;
            let key = r[..end].trim();
            let key = key
                .strip_prefix('\'')
                .and_then(|k| k.strip_suffix('\''))
                .or_else(|| key.strip_prefix('"').and_then(|k| k.strip_suffix('"')))
                .unwrap_or(key);
            path.push(key.to_owned());
            rest = &r[end + 1..];
        } else {
            return Err(format!("unexpected `{rest}`"));
        }
    }
    Ok(Expr {
        text: t.to_owned(),
        root,
        path,
    })
}

fn parse_text(text: &str) -> Result<Vec<Part>, TemplateError> {
    let syntax = |message: String| TemplateError::Syntax {
        text: text.to_owned(),
        message,
    };
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_owned()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| syntax("a `{{` without its `}}`".into()))?;
        parts.push(Part::Expr(parse_expr(&after[..end]).map_err(syntax)?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

fn lookup<'v>(
    expr: &Expr,
    message: &'v Value,
    matched: &'v Value,
) -> Result<&'v Value, TemplateError> {
    let mut at = match expr.root {
        Root::Message => message,
        Root::Match => matched,
    };
    for key in &expr.path {
        at = match at {
            Value::Object(m) => m.get(key),
            Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or_else(|| TemplateError::Missing(expr.text.clone()))?;
    }
    Ok(at)
}

impl Node {
    fn new(value: &Value) -> Result<Node, TemplateError> {
        Ok(match value {
            Value::String(s) if s.contains("{{") => Node::Text(parse_text(s)?),
            Value::Object(m) => Node::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), Node::new(v)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            Value::Array(a) => Node::Array(a.iter().map(Node::new).collect::<Result<_, _>>()?),
            other => Node::Const(other.clone()),
        })
    }

    fn expand(&self, message: &Value, matched: &Value) -> Result<Value, TemplateError> {
        Ok(match self {
            Node::Const(v) => v.clone(),
            Node::Text(parts) => match parts.as_slice() {
                [Part::Expr(e)] => lookup(e, message, matched)?.clone(),
                _ => {
                    let mut out = String::new();
                    for p in parts {
                        match p {
                            Part::Text(t) => out.push_str(t),
                            Part::Expr(e) => match lookup(e, message, matched)? {
                                Value::String(s) => out.push_str(s),
                                other => out.push_str(&other.to_string()),
                            },
                        }
                    }
                    Value::String(out)
                }
            },
            Node::Object(fields) => {
                let mut out = Map::new();
                for (k, t) in fields {
                    out.insert(k.clone(), t.expand(message, matched)?);
                }
                Value::Object(out)
            }
            Node::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.expand(message, matched))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

impl Template {
    /// Compiles `value`: strings holding `{{…}}` become expressions.
    pub fn new(value: &Value) -> Result<Template, TemplateError> {
        Node::new(value).map(Template)
    }

    /// The value for `message` and its match's captures.
    pub fn expand(&self, message: &Value, matched: &Value) -> Result<Value, TemplateError> {
        self.0.expand(message, matched)
    }

    /// The expansion as text: a string as it is, anything else as JSON.
    pub fn expand_text(&self, message: &Value, matched: &Value) -> Result<String, TemplateError> {
        Ok(match self.expand(message, matched)? {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expressions_read_the_message_and_the_match() {
        let message = json!({"meta": {"uri": "https://x/wiki/A", "odd key": 1}, "rev": 42, "tags": ["a", "b"]});
        let matched = json!({"meta": {"uri": {"title": "A", "0": "https://x/wiki/A", "1": "A"}}});
        let t = Template::new(&json!({
            "uri": "http://purge/{{match.meta.uri.title}}?rev={{message.rev}}",
            "rev": "{{message.rev}}",
            "second": "{{ message.tags[1] }}",
            "odd": "{{message.meta['odd key']}}",
            "first": "{{match.meta.uri[1]}}",
            "fixed": [1, "plain"]
        }))
        .unwrap();
        let v = t.expand(&message, &matched).unwrap();
        assert_eq!(v["uri"], "http://purge/A?rev=42");
        assert_eq!(v["rev"], 42, "one expression keeps the value's type");
        assert_eq!(v["second"], "b");
        assert_eq!(v["odd"], 1);
        assert_eq!(v["first"], "A");
        assert_eq!(v["fixed"], json!([1, "plain"]));
    }

    #[test]
    fn bad_templates_and_missing_fields_are_named() {
        let e = Template::new(&json!("{{message.a")).unwrap_err();
        assert!(e.to_string().contains("without its `}}`"), "{e}");
        let e = Template::new(&json!("{{event.a}}")).unwrap_err();
        assert!(
            e.to_string()
                .contains("`event` is not `message` or `match`"),
            "{e}"
        );
        let t = Template::new(&json!("x{{message.nope.deeper}}")).unwrap();
        assert_eq!(
            t.expand(&json!({}), &json!({})).unwrap_err(),
            TemplateError::Missing("message.nope.deeper".into())
        );
    }
}
