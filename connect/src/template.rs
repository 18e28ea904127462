//! Key templates (`user:{performer.id}`, `{stream}:{meta.id}`): literal text
//! and `{…}` parts, each the stream's name or a field's value by its dotted path.

use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Stream,
    Field(Vec<String>),
}

impl Template {
    /// Parses `text`; `{` and `}` must pair up around a non-empty name.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("`{text}` opens a `{{` it does not close"))?;
            let name = &after[..close];
            if name.is_empty() || name.contains('{') {
                return Err(format!("`{text}` has an empty or nested `{{}}`"));
            }
            parts.push(if name == "stream" {
                Part::Stream
            } else {
                Part::Field(name.split('.').map(str::to_owned).collect())
            });
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{text}` closes a `}}` it did not open"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The template filled from `event` of `stream`, or which field is missing or not a scalar.
    pub fn render(&self, stream: &str, event: &Value) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Stream => out.push_str(stream),
                Part::Field(path) => {
                    let mut v = event;
                    for key in path {
                        v = v.get(key).ok_or_else(|| {
                            format!(
                                "the key template needs field `{}`, which the event lacks",
                                path.join(".")
                            )
                        })?;
                    }
                    match v {
                        Value::String(s) => out.push_str(s),
                        Value::Number(n) => out.push_str(&n.to_string()),
                        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                        _ => {
                            return Err(format!(
                                "the key template needs field `{}` as a string, number or boolean, not {}",
                                path.join("."),
                                sluice_shared::json_kind(v)
                            ));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_fill_from_fields_and_name_what_is_missing() {
        let t = Template::parse("user:{performer.id}:{stream}").unwrap();
        let event = json!({"performer": {"id": 42}});
        assert_eq!(t.render("s.x", &event).unwrap(), "user:42:s.x");
        let err = t.render("s", &json!({})).unwrap_err();
        assert!(err.contains("`performer.id`"), "{err}");
        let err = t
            .render("s", &json!({"performer": {"id": [1]}}))
            .unwrap_err();
        assert!(err.contains("array"), "{err}");
        assert!(Template::parse("a{b").is_err());
        assert!(Template::parse("a}b").is_err());
        assert!(Template::parse("a{}b").is_err());
        assert_eq!(
            Template::parse("plain")
                .unwrap()
                .render("s", &event)
                .unwrap(),
            "plain"
        );
    }
}
