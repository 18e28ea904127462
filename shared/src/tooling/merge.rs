//! Merging `allOf` into one schema, keyword by keyword, the way the
//! materialized files of jsonschema-tools repositories are made: properties
//! merge by name, `required` is the sorted union, `enum` the intersection,
//! lower bounds take the highest and upper bounds the lowest, and anything
//! that cannot be combined (two `pattern`s) stays as an `allOf` of its parts.
//! Every subschema is merged, however deep.

use serde_json::{Map, Value};

/// Returns `schema` with every `allOf` merged away (where it can be).
pub fn merge_all_of(schema: &Value) -> Value {
    merge(vec![schema]).unwrap_or_else(|| schema.clone())
}

/// Keywords whose value is a map of name → schema.
const SCHEMA_GROUPS: &[&str] = &["properties", "patternProperties", "definitions"];
/// Keywords whose value is one schema.
const SCHEMA_VALUED: &[&str] = &[
    "additionalProperties",
    "additionalItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
];
const LOWER_BOUNDS: &[&str] = &[
    "minLength",
    "minimum",
    "exclusiveMinimum",
    "minItems",
    "minProperties",
];
const UPPER_BOUNDS: &[&str] = &[
    "maxLength",
    "maximum",
    "exclusiveMaximum",
    "maxItems",
    "maxProperties",
];

fn flatten<'a>(schema: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(schema);
    if let Some(Value::Array(parts)) = schema.get("allOf") {
        for p in parts {
            flatten(p, out);
        }
    }
}

fn distinct<'a>(values: &[&'a Value]) -> Vec<&'a Value> {
    let mut out: Vec<&Value> = Vec::new();
    for v in values {
        if !out.iter().any(|o| o == v) {
            out.push(v);
        }
    }
    out
}

/// Merges schemas that must all hold; `None` when there are none.
fn merge(schemas: Vec<&Value>) -> Option<Value> {
    let mut flat = Vec::new();
    for s in schemas {
        flatten(s, &mut flat);
    }
    if flat.is_empty() {
        return None;
    }
    if flat.iter().any(|s| **s == Value::Bool(false)) {
        return Some(Value::Bool(false));
    }
    let objects: Vec<&Map<String, Value>> = flat.iter().filter_map(|s| s.as_object()).collect();
    if objects.is_empty() {
        return Some(Value::Bool(true));
    }
    let mut keys: Vec<&str> = Vec::new();
    for o in &objects {
        for k in o.keys() {
            if k != "allOf" && !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
    }
    let mut out = Map::new();
    let mut unresolved: Vec<Value> = Vec::new();
    for key in keys {
        let values: Vec<&Value> = objects.iter().filter_map(|o| o.get(key)).collect();
        let uniq = distinct(&values);
        let merged = if SCHEMA_GROUPS.contains(&key) {
            merge_group(&uniq)
        } else if SCHEMA_VALUED.contains(&key) {
            merge(uniq)
        } else {
            match key {
                "items" => merge_items(&uniq),
                "dependencies" => merge_dependencies(&uniq),
                "anyOf" | "oneOf" if uniq.len() == 1 => uniq[0].as_array().map(|a| {
                    Value::Array(
                        a.iter()
                            .map(|s| merge(vec![s]).unwrap_or_else(|| s.clone()))
                            .collect(),
                    )
                }),
                _ if uniq.len() == 1 => Some(uniq[0].clone()),
                "required" => Some(sorted_union(&uniq)),
                "enum" => intersection(&uniq),
                "type" => type_intersection(&uniq),
                k if LOWER_BOUNDS.contains(&k) => extreme(&uniq, |a, b| a > b),
                k if UPPER_BOUNDS.contains(&k) => extreme(&uniq, |a, b| a < b),
                "uniqueItems" => Some(Value::Bool(uniq.iter().any(|v| **v == Value::Bool(true)))),
                "examples" => Some(Value::Array(
                    distinct(
                        &uniq
                            .iter()
                            .flat_map(|v| v.as_array().into_iter().flatten())
                            .collect::<Vec<_>>(),
                    )
                    .into_iter()
                    .cloned()
                    .collect(),
                )),
                "pattern" | "anyOf" | "oneOf" | "multipleOf" | "const" | "format" => {
                    // Cannot be combined into one value: each must still hold.
                    unresolved.extend(uniq.iter().map(|v| {
                        let mut m = Map::new();
                        m.insert(key.to_owned(), (*v).clone());
                        Value::Object(m)
                    }));
                    None
                }
                // title, description, $id, $schema, default and the rest: the first one.
                _ => Some(uniq[0].clone()),
            }
        };
        if let Some(v) = merged {
            out.insert(key.to_owned(), v);
        }
    }
    if !unresolved.is_empty() {
        out.insert("allOf".to_owned(), Value::Array(unresolved));
    }
    Some(Value::Object(out))
}

fn merge_group(values: &[&Value]) -> Option<Value> {
    let maps: Vec<&Map<String, Value>> = values.iter().filter_map(|v| v.as_object()).collect();
    let mut names: Vec<&str> = Vec::new();
    for m in &maps {
        for k in m.keys() {
            if !names.contains(&k.as_str()) {
                names.push(k);
            }
        }
    }
    let mut out = Map::new();
    for name in names {
        let parts: Vec<&Value> =
            distinct(&maps.iter().filter_map(|m| m.get(name)).collect::<Vec<_>>());
        if let Some(v) = merge(parts) {
            out.insert(name.to_owned(), v);
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

fn merge_items(values: &[&Value]) -> Option<Value> {
    if values.iter().all(|v| v.is_object() || v.is_boolean()) {
        return merge(values.to_vec());
    }
    // Tuple forms: merge position by position; mixed forms keep the first.
    let arrays: Vec<&Vec<Value>> = values.iter().filter_map(|v| v.as_array()).collect();
    if arrays.len() != values.len() {
        return values.first().map(|v| (*v).clone());
    }
    let longest = arrays.iter().map(|a| a.len()).max().unwrap_or(0);
    Some(Value::Array(
        (0..longest)
            .filter_map(|i| merge(arrays.iter().filter_map(|a| a.get(i)).collect()))
            .collect(),
    ))
}

fn merge_dependencies(values: &[&Value]) -> Option<Value> {
    let maps: Vec<&Map<String, Value>> = values.iter().filter_map(|v| v.as_object()).collect();
    let mut out = Map::new();
    for m in &maps {
        for k in m.keys() {
            if out.contains_key(k) {
                continue;
            }
            let parts: Vec<&Value> =
                distinct(&maps.iter().filter_map(|m| m.get(k)).collect::<Vec<_>>());
            let v = if parts.iter().all(|p| p.is_array()) {
                sorted_union(&parts)
            } else {
                merge(parts).unwrap_or(Value::Bool(true))
            };
            out.insert(k.clone(), v);
        }
    }
    Some(Value::Object(out))
}

fn sorted_union(values: &[&Value]) -> Value {
    let mut all: Vec<Value> = Vec::new();
    for v in values.iter().filter_map(|v| v.as_array()).flatten() {
        if !all.contains(v) {
            all.push(v.clone());
        }
    }
    all.sort_by_key(sort_key);
    Value::Array(all)
}

fn intersection(values: &[&Value]) -> Option<Value> {
    let arrays: Vec<&Vec<Value>> = values.iter().filter_map(|v| v.as_array()).collect();
    let first = arrays.first()?;
    let mut common: Vec<Value> = first
        .iter()
        .filter(|v| arrays.iter().all(|a| a.contains(v)))
        .cloned()
        .collect();
    common.dedup();
    common.sort_by_key(sort_key);
    Some(Value::Array(common))
}

fn type_intersection(values: &[&Value]) -> Option<Value> {
    let sets: Vec<Vec<&Value>> = values
        .iter()
        .map(|v| match v {
            Value::Array(a) => a.iter().collect(),
            other => vec![*other],
        })
        .collect();
    let common: Vec<&Value> = sets
        .first()?
        .iter()
        .copied()
        .filter(|t| sets.iter().all(|s| s.contains(t)))
        .collect();
    match common.as_slice() {
        [] => values.first().map(|v| (*v).clone()),
        [one] => Some((*one).clone()),
        many => Some(Value::Array(many.iter().map(|v| (*v).clone()).collect())),
    }
}

fn extreme(values: &[&Value], better: fn(f64, f64) -> bool) -> Option<Value> {
    let mut best: Option<&Value> = None;
    for v in values {
        let (Some(x), cur) = (v.as_f64(), best.and_then(Value::as_f64)) else {
            continue;
        };
        if cur.is_none_or(|c| better(x, c)) {
            best = Some(v);
        }
    }
    best.or(values.first().copied()).cloned()
}

fn sort_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_properties_required_and_bounds() {
        let s = json!({
            "title": "t", "type": "object",
            "allOf": [
                {"type": "object", "required": ["b"], "properties": {"b": {"type": "string", "maxLength": 10}}},
                {"required": ["a", "b"], "properties": {"b": {"maxLength": 5, "description": "later"}, "a": {"type": "integer"}}}
            ]
        });
        let m = merge_all_of(&s);
        assert_eq!(m["required"], json!(["a", "b"]));
        assert_eq!(m["properties"]["b"]["maxLength"], json!(5));
        assert_eq!(m["properties"]["b"]["description"], json!("later"));
        assert_eq!(m["properties"]["a"]["type"], json!("integer"));
        assert!(m.get("allOf").is_none());
    }

    #[test]
    fn keeps_what_cannot_be_combined_as_all_of() {
        let s = json!({"allOf": [{"pattern": "^a"}, {"pattern": "b$"}], "enum": ["x"]});
        let m = merge_all_of(&s);
        assert_eq!(m["allOf"], json!([{"pattern": "^a"}, {"pattern": "b$"}]));
        let e = merge_all_of(&json!({"allOf": [{"enum": ["b", "a", "c"]}, {"enum": ["c", "b"]}]}));
        assert_eq!(e["enum"], json!(["b", "c"]));
    }

    #[test]
    fn merges_nested_all_of_inside_properties() {
        let s = json!({"properties": {"p": {"allOf": [{"type": "string"}, {"minLength": 2}]}}});
        assert_eq!(
            merge_all_of(&s)["properties"]["p"],
            json!({"type": "string", "minLength": 2})
        );
    }
}
