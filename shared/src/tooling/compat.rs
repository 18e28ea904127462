//! Compatibility of consecutive versions within a major, by the rule
//! jsonschema-tools applies: everything the older version says must still be
//! said, unchanged, by the newer one. New properties may be added (they are
//! not in the old version to compare), `required` may not change, an `enum`
//! may only grow, and only `$id`, `description` and `examples` may differ.
//! One deliberate difference: a bound may be widened (a `maxLength` raised,
//! a `minimum` lowered), since every event valid before stays valid.

use crate::json::json_type_name;
use serde_json::Value;

/// Keys that may change between compatible versions.
const FREE: &[&str] = &["$id", "description", "examples"];
/// Bounds that may be raised: every event valid before stays valid.
const MAY_RISE: &[&str] = &[
    "maxLength",
    "maximum",
    "exclusiveMaximum",
    "maxItems",
    "maxProperties",
];
/// Bounds that may be lowered.
const MAY_FALL: &[&str] = &[
    "minLength",
    "minimum",
    "exclusiveMinimum",
    "minItems",
    "minProperties",
];

/// One incompatible change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CompatBreak {
    /// Where, as a JSON pointer into the schema (`#/properties/meta/required`).
    pub path: String,
    /// What changed.
    pub message: String,
}

/// Every incompatible change from `old` to `new`.
pub fn compare_versions(new: &Value, old: &Value) -> Vec<CompatBreak> {
    let mut out = Vec::new();
    walk(new, old, &mut String::from("#"), &mut out);
    out
}

fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

fn push(out: &mut Vec<CompatBreak>, path: &str, message: String) {
    out.push(CompatBreak {
        path: path.to_owned(),
        message,
    });
}

fn names(v: &Value) -> Vec<String> {
    let mut s: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
        .collect();
    s.sort();
    s
}

fn walk(new: &Value, old: &Value, path: &mut String, out: &mut Vec<CompatBreak>) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (key, old_value) in o {
                if FREE.contains(&key.as_str()) {
                    continue;
                }
                let len = path.len();
                path.push('/');
                path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                match (key.as_str(), n.get(key)) {
                    (_, None) => push(
                        out,
                        path,
                        format!("`{key}` was removed (it was {})", show(old_value)),
                    ),
                    ("required", Some(new_value)) => {
                        let (was, now) = (names(old_value), names(new_value));
                        if was != now {
                            let added: Vec<&String> =
                                now.iter().filter(|x| !was.contains(x)).collect();
                            let removed: Vec<&String> =
                                was.iter().filter(|x| !now.contains(x)).collect();
                            push(
                                out,
                                path,
                                format!(
                                    "required properties changed (added {added:?}, removed {removed:?}); \
                                     within a major version a new property must be optional and a \
                                     required one stays required"
                                ),
                            );
                        }
                    }
                    ("enum", Some(new_value)) => {
                        let now = new_value.as_array();
                        let lost: Vec<String> = old_value
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|v| !now.is_some_and(|n| n.contains(v)))
                            .map(show)
                            .collect();
                        if !lost.is_empty() {
                            push(
                                out,
                                path,
                                format!(
                                    "enum values were removed: {}; an enum may only grow",
                                    lost.join(", ")
                                ),
                            );
                        }
                    }
                    (k, Some(new_value))
                        if (MAY_RISE.contains(&k) || MAY_FALL.contains(&k))
                            && new_value.is_number()
                            && old_value.is_number() =>
                    {
                        let (was, now) = (
                            old_value.as_f64().unwrap_or(0.0),
                            new_value.as_f64().unwrap_or(0.0),
                        );
                        let widened = if MAY_RISE.contains(&k) {
                            now >= was
                        } else {
                            now <= was
                        };
                        if !widened {
                            push(
                                out,
                                path,
                                format!(
                                    "`{k}` narrowed from {} to {}; events valid before would be refused",
                                    show(old_value),
                                    show(new_value)
                                ),
                            );
                        }
                    }
                    (_, Some(new_value)) => walk(new_value, old_value, path, out),
                }
                path.truncate(len);
            }
        }
        (Value::Array(o), Value::Array(n)) => {
            for (i, old_value) in o.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                match n.get(i) {
                    Some(new_value) => walk(new_value, old_value, path, out),
                    None => push(
                        out,
                        path,
                        format!("item {i} was removed (it was {})", show(old_value)),
                    ),
                }
                path.truncate(len);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        _ if json_type_name(old) != json_type_name(new) => push(
            out,
            path,
            format!(
                "changed from {} {} to {} {}",
                json_type_name(old),
                show(old),
                json_type_name(new),
                show(new)
            ),
        ),
        _ if old != new => push(
            out,
            path,
            format!("changed from {} to {}", show(old), show(new)),
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn additive_optional_changes_pass() {
        let old = json!({"$id": "/a/1.0.0", "required": ["x"], "properties": {"x": {"type": "string", "enum": ["a"]}}});
        let new = json!({"$id": "/a/1.1.0", "description": "now", "required": ["x"],
            "properties": {"x": {"type": "string", "enum": ["a", "b"]}, "y": {"type": "integer"}}});
        assert_eq!(compare_versions(&new, &old), vec![]);
        let wider =
            json!({"properties": {"x": {"type": "string", "maxLength": 100, "minLength": 0}}});
        let narrow =
            json!({"properties": {"x": {"type": "string", "maxLength": 64, "minLength": 1}}});
        assert_eq!(compare_versions(&wider, &narrow), vec![]);
        let paths: Vec<String> = compare_versions(&narrow, &wider)
            .into_iter()
            .map(|b| b.path)
            .collect();
        assert_eq!(
            paths,
            ["#/properties/x/maxLength", "#/properties/x/minLength"]
        );
    }

    #[test]
    fn breaks_name_their_path() {
        let old = json!({"required": ["x"], "properties": {"x": {"type": "string", "enum": ["a", "b"]}, "z": {"type": "string"}}});
        let new = json!({"required": ["x", "y"], "properties": {"x": {"type": "integer", "enum": ["a"]}, "y": {"type": "string"}}});
        let paths: Vec<String> = compare_versions(&new, &old)
            .into_iter()
            .map(|b| b.path)
            .collect();
        assert_eq!(
            paths,
            [
                "#/properties/x/enum",
                "#/properties/x/type",
                "#/properties/z",
                "#/required"
            ]
        );
    }
}
