//! Schema repository tooling, jsonschema-tools' work done in Rust:
//! materializing `current.yaml` into versions, linting a repository against
//! the structure and robustness rules, and checking that versions within a
//! major stay compatible. All of it works on loaded repositories; reading and
//! writing files is the host's part.

mod compat;
mod deref;
mod fields;
mod lint;
mod materialize;
mod merge;

pub use compat::{CompatBreak, compare_versions};
pub use deref::{Documents, dereference, pointed};
pub use fields::{Change, Field, FieldDiff, diff_fields, fields};
pub use lint::{Finding, LintReport, Listing, Rule, lint};
pub use materialize::{
    Materialized, Materializer, enforce_numeric_bounds, example, id_version, schema_paths,
};
pub use merge::merge_all_of;

use serde_json::Value;

/// Why a schema could not be materialized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// A `$ref` does not resolve inside the loaded repositories.
    #[error("$ref `{reference}` does not resolve: {reason}")]
    Ref {
        /// The `$ref` as written.
        reference: String,
        /// Why not.
        reason: String,
    },
    /// A field every schema needs is missing.
    #[error("the schema has no {0}")]
    Missing(&'static str),
}

/// Order of the top keys in written schemas, as jsonschema-tools writes them;
/// other keys follow in name order.
const KEY_ORDER: &[&str] = &[
    "title",
    "description",
    "$id",
    "$schema",
    "type",
    "additionalProperties",
    "required",
    "properties",
    "allOf",
    "examples",
];

fn ordered(value: &Value) -> serde_yaml_ng::Value {
    use serde_yaml_ng::Value as Y;
    match value {
        Value::Null => Y::Null,
        Value::Bool(b) => Y::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Y::Number(i.into())
            } else if let Some(u) = n.as_u64() {
                Y::Number(u.into())
            } else {
                Y::Number(n.as_f64().unwrap_or(0.0).into())
            }
        }
        Value::String(s) => Y::String(s.clone()),
        Value::Array(a) => Y::Sequence(a.iter().map(ordered).collect()),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by_key(|k| {
                (
                    KEY_ORDER
                        .iter()
                        .position(|o| o == k)
                        .unwrap_or(KEY_ORDER.len()),
                    (*k).clone(),
                )
            });
            let mut out = serde_yaml_ng::Mapping::new();
            for k in keys {
                out.insert(Y::String(k.clone()), ordered(&m[k]));
            }
            Y::Mapping(out)
        }
    }
}

/// Writes a schema as YAML, keys in jsonschema-tools' order.
pub fn to_yaml(schema: &Value) -> String {
    serde_yaml_ng::to_string(&ordered(schema)).unwrap_or_default()
}

/// Writes a schema as indented JSON, keys in jsonschema-tools' order.
pub fn to_json(schema: &Value) -> String {
    let mut s = serde_json::to_string_pretty(&ordered(schema)).unwrap_or_default();
    s.push('\n');
    s
}

/// Whether two schemas are the same data: numbers equal by value, key order
/// ignored; `examples` left out when `skip_examples`.
pub fn same_schema(a: &Value, b: &Value, skip_examples: bool) -> bool {
    fn eq(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                x == y || (x.as_f64().is_some() && x.as_f64() == y.as_f64())
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| eq(a, b))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| eq(v, w)))
            }
            _ => a == b,
        }
    }
    if skip_examples {
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Value::Object(m) = &mut v {
                m.remove("examples");
            }
            v
        };
        eq(&strip(a), &strip(b))
    } else {
        eq(a, b)
    }
}

/// The first difference between two schemas as a JSON pointer, for messages.
pub fn first_difference(a: &Value, b: &Value) -> Option<String> {
    fn walk(a: &Value, b: &Value, path: &mut String) -> bool {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    match (x.get(k), y.get(k)) {
                        (Some(v), Some(w)) if !walk(v, w, path) => return false,
                        (Some(_), Some(_)) => {}
                        _ => return false,
                    }
                    path.truncate(len);
                }
                true
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (v, w)) in x.iter().zip(y).enumerate() {
                    let len = path.len();
                    path.push_str(&format!("/{i}"));
                    if !walk(v, w, path) {
                        return false;
                    }
                    path.truncate(len);
                }
                true
            }
            _ => same_schema(a, b, false),
        }
    }
    let mut path = String::new();
    (!walk(a, b, &mut path)).then(|| {
        if path.is_empty() {
            "/".to_owned()
        } else {
            path
        }
    })
}
