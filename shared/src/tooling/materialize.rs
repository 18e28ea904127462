//! Turning a `current.yaml` into the materialized `<version>.yaml` that
//! jsonschema-tools would write: `$ref`s dereferenced (across repositories),
//! `allOf` merged, only the root's `examples` kept, numeric bounds added, and
//! an example generated when asked for and there is none.

use super::ToolError;
use super::deref::{Documents, dereference};
use super::merge::merge_all_of;
use crate::repository::{SchemaRepository, ToolsConfig};
use crate::schema_uri::{SchemaUri, Version, VersionSpec};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// A materialized schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Materialized {
    /// The schema's title.
    pub title: String,
    /// The version from its `$id`.
    pub version: Version,
    /// The materialized document.
    pub schema: Value,
    /// Whether its `examples` were generated rather than written by hand.
    pub generated_example: bool,
}

/// The version a schema's `$id` names: its last path segment, coerced to
/// `X.Y.Z` as jsonschema-tools does (`1.2` is `1.2.0`).
pub fn id_version(schema: &Value) -> Option<Version> {
    let id = schema.get("$id")?.as_str()?;
    let last = id.trim_end_matches('#').rsplit('/').next()?;
    let last = ["yaml", "json"]
        .iter()
        .find_map(|e| last.strip_suffix(&format!(".{e}")))
        .unwrap_or(last);
    let nums: Vec<u32> = last
        .split('.')
        .map(|p| p.parse::<u32>().ok())
        .collect::<Option<Vec<_>>>()?;
    match nums.as_slice() {
        [a] => Some(Version {
            major: *a,
            minor: 0,
            patch: 0,
        }),
        [a, b] => Some(Version {
            major: *a,
            minor: *b,
            patch: 0,
        }),
        [a, b, c] => Some(Version {
            major: *a,
            minor: *b,
            patch: *c,
        }),
        _ => None,
    }
}

/// Materializes schemas of a set of repositories. `$ref`s resolve in the
/// repositories in order; a version that only exists as a `current.yaml`
/// (a fragment bumped in the same change) is materialized on the way.
pub struct Materializer<'a> {
    repos: Vec<&'a SchemaRepository>,
    made: RefCell<BTreeMap<(String, Version), Value>>,
    making: RefCell<Vec<String>>,
}

impl<'a> Materializer<'a> {
    /// A materializer resolving in `repos`, in that order.
    pub fn new(repos: impl IntoIterator<Item = &'a SchemaRepository>) -> Self {
        Materializer {
            repos: repos.into_iter().collect(),
            made: RefCell::default(),
            making: RefCell::default(),
        }
    }

    /// Materializes `current` (a `current.yaml` document) under `config`.
    pub fn materialize(
        &self,
        current: &Value,
        config: &ToolsConfig,
    ) -> Result<Materialized, ToolError> {
        let title = current
            .get("title")
            .and_then(Value::as_str)
            .ok_or(ToolError::Missing("title"))?
            .to_owned();
        let version = id_version(current).ok_or(ToolError::Missing("$id with a version"))?;
        let key = format!("/{title}/{version}");
        if self.making.borrow().contains(&key) {
            return Err(ToolError::Ref {
                reference: key,
                reason: "the schema refers to itself".to_owned(),
            });
        }
        self.making.borrow_mut().push(key);
        let out = self.build(current, config, title, version);
        self.making.borrow_mut().pop();
        out
    }

    fn build(
        &self,
        current: &Value,
        config: &ToolsConfig,
        title: String,
        version: Version,
    ) -> Result<Materialized, ToolError> {
        let dereferenced = dereference(current, self)?;
        let mut schema = merge_all_of(&dereferenced);
        if let Value::Object(map) = &mut schema {
            match dereferenced.get("examples") {
                Some(e) => map.insert("examples".to_owned(), e.clone()),
                None => map.remove("examples"),
            };
        }
        if let Some((lo, hi)) = config.numeric_bounds {
            enforce_numeric_bounds(&mut schema, lo, hi);
        }
        let mut generated_example = false;
        if config.generate_example && schema.get("examples").is_none() {
            let id = schema.get("$id").cloned().unwrap_or(Value::Null);
            if let (Some(example), Value::Object(map)) = (sample(&schema, &id, 0), &mut schema) {
                map.insert("examples".to_owned(), Value::Array(vec![example]));
                generated_example = true;
            }
        }
        self.made
            .borrow_mut()
            .insert((title.clone(), version), schema.clone());
        Ok(Materialized {
            title,
            version,
            schema,
            generated_example,
        })
    }

    fn find_current(&self, title: &str) -> Option<(&'a SchemaRepository, &'a Value)> {
        self.repos
            .iter()
            .find_map(|r| r.current.get(title).map(|f| (*r, &f.document)))
    }
}

impl Documents for Materializer<'_> {
    fn document(&self, uri: &SchemaUri) -> Result<Value, String> {
        let title = &uri.title;
        let current = self.find_current(title);
        let current_version = current.and_then(|(_, d)| id_version(d));
        let wanted = match uri.version {
            VersionSpec::Exact(v) => Some(v),
            VersionSpec::Latest => self
                .repos
                .iter()
                .filter_map(|r| r.versions.get(title))
                .filter_map(|vs| vs.keys().next_back().copied())
                .chain(current_version)
                .max(),
        };
        let Some(version) = wanted else {
            return Err(format!("no loaded repository has a schema titled {title}"));
        };
        // Committed files first: they are what a $ref means today.
        for repo in &self.repos {
            if let Some(file) = repo.versions.get(title).and_then(|vs| vs.get(&version)) {
                return Ok(file.document.clone());
            }
        }
        if let Some(doc) = self.made.borrow().get(&(title.clone(), version)) {
            return Ok(doc.clone());
        }
        if let Some((repo, doc)) = current
            && current_version == Some(version)
        {
            return self
                .materialize(doc, &repo.tools)
                .map(|m| m.schema)
                .map_err(|e| e.to_string());
        }
        Err(format!(
            "no loaded repository has /{title}/{version} (nor a current.yaml of that version)"
        ))
    }
}

/// Gives every `number` and `integer` field without a `minimum` or `maximum` one.
pub fn enforce_numeric_bounds(schema: &mut Value, lo: f64, hi: f64) {
    let mut numbers = Vec::new();
    schema_paths(schema, "", &mut |node, path| {
        if matches!(
            node.get("type").and_then(Value::as_str),
            Some("number" | "integer")
        ) {
            numbers.push(path.to_owned());
        }
    });
    for path in numbers {
        let Some(Value::Object(map)) = schema.pointer_mut(&path) else {
            continue;
        };
        for (key, bound) in [("minimum", lo), ("maximum", hi)] {
            map.entry(key).or_insert_with(|| number(bound));
        }
    }
}

/// A bound as JSON: an integer when it is one.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() <= crate::repository::MAX_SAFE_INTEGER {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

/// Calls `f` on `schema` and every subschema in it, with its JSON pointer
/// below `path` (not on `examples`, `enum`, `const` or `default`, which hold
/// data rather than schemas).
pub fn schema_paths(node: &Value, path: &str, f: &mut dyn FnMut(&Value, &str)) {
    f(node, path);
    let Value::Object(map) = node else { return };
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    for (key, value) in map {
        let here = format!("{path}/{}", escape(key));
        match (key.as_str(), value) {
            (
                "properties" | "patternProperties" | "definitions" | "dependencies",
                Value::Object(children),
            ) => {
                for (name, child) in children.iter().filter(|(_, c)| c.is_object()) {
                    schema_paths(child, &format!("{here}/{}", escape(name)), f);
                }
            }
            ("items" | "allOf" | "anyOf" | "oneOf", Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    schema_paths(item, &format!("{here}/{i}"), f);
                }
            }
            (
                "items"
                | "additionalProperties"
                | "additionalItems"
                | "contains"
                | "propertyNames"
                | "not"
                | "if"
                | "then"
                | "else",
                Value::Object(_),
            ) => schema_paths(value, &here, f),
            _ => {}
        }
    }
}

/// An example instance of a materialized schema, built from its types,
/// enums, defaults, bounds and formats (`$schema` set to its `$id`).
pub fn example(schema: &Value) -> Option<Value> {
    let id = schema.get("$id").cloned().unwrap_or(Value::Null);
    sample(schema, &id, 0)
}

/// An instance of `schema` built from its types, enums, defaults and formats.
fn sample(schema: &Value, id: &Value, depth: usize) -> Option<Value> {
    if depth > 32 {
        return None;
    }
    if let Some(c) = schema.get("const") {
        return Some(c.clone());
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return Some(first.clone());
    }
    if let Some(d) = schema.get("default") {
        return Some(d.clone());
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null")?,
        _ if schema.get("properties").is_some() => "object",
        _ => return None,
    };
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    Some(match ty {
        "object" => {
            let mut out = Map::new();
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (name, prop) in props {
                    if name == "$schema" && id.is_string() {
                        out.insert(name.clone(), id.clone());
                    } else if let Some(v) = sample(prop, id, depth + 1) {
                        out.insert(name.clone(), v);
                    }
                }
            }
            Value::Object(out)
        }
        "array" => Value::Array(
            schema
                .get("items")
                .and_then(|i| sample(i, id, depth + 1))
                .into_iter()
                .collect(),
        ),
        "string" => {
            let s = match schema.get("format").and_then(Value::as_str) {
                Some("date-time") => "2020-01-01T00:00:00Z".to_owned(),
                Some("date") => "2020-01-01".to_owned(),
                Some("uri" | "uri-reference" | "iri" | "iri-reference") => {
                    "https://example.org/".to_owned()
                }
                Some("email") => "someone@example.org".to_owned(),
                Some("uuid") => "00000000-0000-4000-8000-000000000000".to_owned(),
                _ => "example".to_owned(),
            };
            let min = bound("minLength").unwrap_or(0.0) as usize;
            let max = bound("maxLength").map_or(usize::MAX, |m| m as usize);
            let mut s = s;
            while s.chars().count() < min {
                s.push('x');
            }
            Value::String(s.chars().take(max).collect())
        }
        "integer" => {
            let lo = bound("minimum").unwrap_or(f64::MIN);
            let hi = bound("maximum").unwrap_or(f64::MAX);
            Value::from(0f64.clamp(lo.ceil(), hi.floor().max(lo.ceil())) as i64)
        }
        "number" => {
            let lo = bound("minimum").unwrap_or(f64::MIN);
            let hi = bound("maximum").unwrap_or(f64::MAX);
            number(0f64.clamp(lo, hi.max(lo)))
        }
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coerces_versions_like_semver() {
        assert_eq!(
            id_version(&json!({"$id": "/a/b/1.2.3"})).map(|v| v.to_string()),
            Some("1.2.3".to_owned())
        );
        assert_eq!(
            id_version(&json!({"$id": "/a/b/2"})).map(|v| v.to_string()),
            Some("2.0.0".to_owned())
        );
        assert_eq!(id_version(&json!({"$id": "/a/b/latest"})), None);
    }

    #[test]
    fn bounds_only_numbers_without_them() {
        let mut s = json!({"type": "object", "properties": {
            "n": {"type": "integer", "minimum": 0},
            "f": {"type": "number"},
            "s": {"type": "string"},
            "a": {"type": "array", "items": {"type": "integer"}}
        }});
        enforce_numeric_bounds(&mut s, -10.0, 10.0);
        assert_eq!(
            s["properties"]["n"],
            json!({"type": "integer", "minimum": 0, "maximum": 10})
        );
        assert_eq!(s["properties"]["f"]["minimum"], json!(-10));
        assert!(s["properties"]["s"].get("minimum").is_none());
        assert_eq!(s["properties"]["a"]["items"]["maximum"], json!(10));
    }
}
