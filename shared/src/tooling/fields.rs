//! A schema as a table of fields, as people read it: one row per property
//! (nested objects as dotted paths, array items as `name[]`), with its type,
//! format, whether it is required, its description and an example value
//! (the field's own `examples`, else its value in the schema's first
//! example). Two versions' tables give a field-by-field diff.

use serde::Serialize;
use serde_json::Value;

/// One field of a schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    /// Dotted path: `meta.stream`, `tags[]`, `items[].id`.
    pub path: String,
    /// JSON type(s), `|`-joined (`string`, `integer|null`); empty when unstated.
    pub kind: String,
    /// `format`, when stated.
    pub format: Option<String>,
    /// Whether its parent object requires it.
    pub required: bool,
    /// `description`, when stated.
    pub description: Option<String>,
    /// An example value as JSON text.
    pub example: Option<String>,
    /// `enum` values as JSON text, when stated.
    pub allowed: Option<String>,
}

/// Every field of `schema`, depth first in the schema's own order.
pub fn fields(schema: &Value) -> Vec<Field> {
    let example = schema
        .get("examples")
        .and_then(Value::as_array)
        .and_then(|e| e.first());
    let mut out = Vec::new();
    walk(schema, "", example, &mut out, 0);
    out
}

fn kind(node: &Value) -> String {
    match node.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("|"),
        _ => String::new(),
    }
}

fn text(node: &Value, key: &str) -> Option<String> {
    node.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn walk(node: &Value, prefix: &str, example: Option<&Value>, out: &mut Vec<Field>, depth: usize) {
    if depth > 32 {
        return;
    }
    let required: Vec<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(Value::Object(props)) = node.get("properties") {
        for (name, child) in props {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            let value = example.and_then(|e| e.get(name));
            field(
                child,
                path,
                required.contains(&name.as_str()),
                value,
                out,
                depth,
            );
        }
    }
}

fn field(
    node: &Value,
    path: String,
    required: bool,
    value: Option<&Value>,
    out: &mut Vec<Field>,
    depth: usize,
) {
    let own = node
        .get("examples")
        .and_then(Value::as_array)
        .and_then(|e| e.first());
    let example = own.or(value).filter(|v| !v.is_object()).map(|v| {
        let s = v.to_string();
        if s.chars().count() > 120 {
            format!("{}…", s.chars().take(120).collect::<String>())
        } else {
            s
        }
    });
    out.push(Field {
        path: path.clone(),
        kind: kind(node),
        format: text(node, "format"),
        required,
        description: text(node, "description"),
        example,
        allowed: node.get("enum").map(Value::to_string),
    });
    walk(node, &path, value, out, depth + 1);
    if let Some(items) = node.get("items").filter(|i| i.is_object()) {
        let first = value.and_then(Value::as_array).and_then(|a| a.first());
        let item_path = format!("{path}[]");
        if items.get("properties").is_some() {
            walk(items, &item_path, first, out, depth + 1);
        } else {
            field(items, item_path, false, first, out, depth + 1);
        }
    }
    if let Some(extra) = node.get("additionalProperties").filter(|a| a.is_object()) {
        field(extra, format!("{path}.*"), false, None, out, depth + 1);
    }
}

/// How a field differs between two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The same in both.
    Same,
    /// Only in the newer version.
    Added,
    /// Only in the older version.
    Removed,
    /// In both, with a different type, format, requirement, description or enum.
    Changed,
}

/// One row of a diff: the field in the older and in the newer version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldDiff {
    /// The field's path.
    pub path: String,
    /// What changed.
    pub change: Change,
    /// The field in the older version.
    pub old: Option<Field>,
    /// The field in the newer version.
    pub new: Option<Field>,
}

/// The fields of `old` and `new` side by side, in the newer version's order
/// with removed fields after the field they followed.
pub fn diff_fields(old: &Value, new: &Value) -> Vec<FieldDiff> {
    let before = fields(old);
    let after = fields(new);
    let mut out: Vec<FieldDiff> = Vec::new();
    let mut placed = vec![false; before.len()];
    for f in &after {
        let found = before.iter().position(|b| b.path == f.path);
        let change = match found {
            None => Change::Added,
            Some(i) => {
                placed[i] = true;
                let b = &before[i];
                if (&b.kind, &b.format, b.required, &b.description, &b.allowed)
                    == (&f.kind, &f.format, f.required, &f.description, &f.allowed)
                {
                    Change::Same
                } else {
                    Change::Changed
                }
            }
        };
        out.push(FieldDiff {
            path: f.path.clone(),
            change,
            old: found.map(|i| before[i].clone()),
            new: Some(f.clone()),
        });
    }
    for (i, b) in before.iter().enumerate().filter(|(i, _)| !placed[*i]) {
        // After the row of the field that came before it in the older version.
        let at = before[..i]
            .iter()
            .rev()
            .find_map(|p| out.iter().position(|d| d.path == p.path))
            .map_or(0, |p| p + 1);
        out.insert(
            at,
            FieldDiff {
                path: b.path.clone(),
                change: Change::Removed,
                old: Some(b.clone()),
                new: None,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(extra: bool) -> Value {
        let mut props = json!({
            "$schema": {"type": "string", "description": "The schema URI."},
            "meta": {
                "type": "object",
                "required": ["stream"],
                "properties": {
                    "stream": {"type": "string"},
                    "dt": {"type": "string", "format": "date-time"}
                }
            },
            "tags": {"type": "array", "items": {"type": "string"}},
            "items": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": ["integer", "null"]}}}},
        });
        if extra {
            props["count"] = json!({"type": "integer", "examples": [3]});
        }
        json!({
            "title": "t",
            "type": "object",
            "required": ["$schema", "meta"],
            "properties": props,
            "examples": [{"$schema": "/t/1.0.0", "meta": {"stream": "s", "dt": "2026-01-01T00:00:00Z"}, "tags": ["a"]}]
        })
    }

    #[test]
    fn a_schema_becomes_a_table_of_fields() {
        let f = fields(&schema(false));
        let mut paths: Vec<&str> = f.iter().map(|f| f.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "$schema",
                "items",
                "items[].id",
                "meta",
                "meta.dt",
                "meta.stream",
                "tags",
                "tags[]"
            ]
        );
        let get = |p: &str| f.iter().find(|f| f.path == p).unwrap();
        // A parent comes before its children.
        let at = |p: &str| f.iter().position(|f| f.path == p).unwrap();
        assert!(at("meta") < at("meta.dt") && at("tags") < at("tags[]"));
        assert!(get("$schema").required && get("meta").required && get("meta.stream").required);
        assert!(!get("meta.dt").required && !get("tags").required);
        assert_eq!(
            get("$schema").description.as_deref(),
            Some("The schema URI.")
        );
        assert_eq!(get("meta.dt").format.as_deref(), Some("date-time"));
        assert_eq!(
            get("meta.dt").example.as_deref(),
            Some("\"2026-01-01T00:00:00Z\"")
        );
        assert_eq!(get("tags[]").example.as_deref(), Some("\"a\""));
        assert_eq!(get("items[].id").kind, "integer|null");
        assert_eq!(
            get("meta").example,
            None,
            "objects are shown by their fields"
        );
    }

    #[test]
    fn a_diff_shows_the_added_and_removed_fields() {
        let d = diff_fields(&schema(false), &schema(true));
        let added: Vec<&FieldDiff> = d.iter().filter(|d| d.change == Change::Added).collect();
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].path, "count");
        assert_eq!(added[0].new.as_ref().unwrap().example.as_deref(), Some("3"));
        assert_eq!(d.iter().filter(|d| d.change == Change::Same).count(), 8);

        let back = diff_fields(&schema(true), &schema(false));
        let removed: Vec<&FieldDiff> = back
            .iter()
            .filter(|d| d.change == Change::Removed)
            .collect();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].path, "count");
        assert_eq!(back.len(), 9);

        let mut changed = schema(false);
        changed["properties"]["meta"]["properties"]["dt"]["format"] = json!("date");
        let d = diff_fields(&schema(false), &changed);
        let c: Vec<&str> = d
            .iter()
            .filter(|d| d.change == Change::Changed)
            .map(|d| d.path.as_str())
            .collect();
        assert_eq!(c, ["meta.dt"]);
    }
}
