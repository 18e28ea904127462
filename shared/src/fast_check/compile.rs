//! Compiling a draft-07 schema into checks: what the fast path takes apart
//! itself, what it hands to jsonschema keyword by keyword, and what it leaves
//! to jsonschema whole.

use super::names::{NOT_DECLARED, NameWords, name_hash};
use super::*;

/// Compiles `keyword: value` alone with jsonschema, once per distinct pair.
fn keyword_validator(
    cache: &mut KeywordCache,
    keyword: &str,
    value: &Value,
) -> Result<Arc<Validator<TapeJson>>, NoFastPath> {
    let mut schema = Map::new();
    schema.insert(keyword.to_owned(), value.clone());
    whole_validator(cache, &Value::Object(schema))
}

/// Compiles a subschema with jsonschema, once per distinct subschema.
pub(super) fn whole_validator(
    cache: &mut KeywordCache,
    schema: &Value,
) -> Result<Arc<Validator<TapeJson>>, NoFastPath> {
    let key = schema.to_string();
    if let Some(v) = cache.get(&key) {
        return Ok(v.clone());
    }
    let validator = jsonschema::options_for::<TapeJson>()
        .with_draft(Draft::Draft7)
        .should_validate_formats(true)
        .build(schema)
        .map_err(|_| NoFastPath)?;
    let validator = Arc::new(validator);
    cache.insert(key, validator.clone());
    Ok(validator)
}

/// Whether `schema` holds a `$ref` anywhere, which only the full validator resolves.
pub(super) fn has_ref(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k == "$ref" || (!ANNOTATIONS.contains(&k.as_str()) && has_ref(v))),
        Value::Array(items) => items.iter().any(has_ref),
        _ => false,
    }
}

fn non_negative(v: &Value) -> Result<u64, NoFastPath> {
    v.as_u64().ok_or(NoFastPath)
}

pub(super) fn compile(schema: &Value, cache: &mut KeywordCache) -> Result<Check, NoFastPath> {
    let map = match schema {
        Value::Bool(true) => return Ok(Check::Any),
        Value::Bool(false) => return Ok(Check::Never),
        Value::Object(map) => map,
        _ => return Err(NoFastPath),
    };
    let needs_whole = map.keys().any(|k| WHOLE.contains(&k.as_str()))
        || map.get("items").is_some_and(Value::is_array)
        || map
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| r.len() > 64);
    if needs_whole {
        return whole_validator(cache, schema).map(Check::Whole);
    }
    let mut node = NodeCheck {
        types: ANY,
        max_length: u64::MAX,
        ..NodeCheck::default()
    };
    let mut any_check = false;
    for (keyword, value) in map {
        let keyword = keyword.as_str();
        if ANNOTATIONS.contains(&keyword) {
            continue;
        }
        any_check = true;
        match keyword {
            "type" => {
                node.types = match value {
                    Value::String(s) => type_bits(s).ok_or(NoFastPath)?,
                    Value::Array(names) => names.iter().try_fold(0, |bits, n| {
                        n.as_str()
                            .and_then(type_bits)
                            .map(|b| bits | b)
                            .ok_or(NoFastPath)
                    })?,
                    _ => return Err(NoFastPath),
                }
            }
            "enum" => {
                let options = value.as_array().ok_or(NoFastPath)?;
                if options.iter().all(Value::is_string) {
                    node.one_of_strings = Some(
                        options
                            .iter()
                            .filter_map(Value::as_str)
                            .map(Box::from)
                            .collect(),
                    );
                } else {
                    node.one_of_values = Some(options.clone());
                }
            }
            "const" => node.one_of_values = Some(vec![value.clone()]),
            "minLength" => node.min_length = non_negative(value)?,
            "maxLength" => node.max_length = non_negative(value)?,
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                let bound = value.as_number().and_then(Bound::new).ok_or(NoFastPath)?;
                let slot = match keyword {
                    "minimum" => &mut node.minimum,
                    "maximum" => &mut node.maximum,
                    "exclusiveMinimum" => &mut node.exclusive_minimum,
                    _ => &mut node.exclusive_maximum,
                };
                *slot = Some(bound);
            }
            "properties"
            | "required"
            | "additionalProperties"
            | "minProperties"
            | "maxProperties"
            | "propertyNames" => {
                let object = node.object.get_or_insert_with(ObjectCheck::default);
                match keyword {
                    "minProperties" => object.min_properties = Some(non_negative(value)?),
                    "maxProperties" => object.max_properties = Some(non_negative(value)?),
                    "additionalProperties" => object.additional = Some(compile(value, cache)?),
                    "propertyNames" => object.property_names = Some(compile(value, cache)?),
                    // Names are gathered below, once both keywords are seen.
                    _ => {}
                }
            }
            "items" | "minItems" | "maxItems" => {
                let array = node.array.get_or_insert_with(ArrayCheck::default);
                match keyword {
                    "items" => array.items = Some(compile(value, cache)?),
                    "minItems" => array.min_items = Some(non_negative(value)?),
                    _ => array.max_items = Some(non_negative(value)?),
                }
            }
            // Standing alone, jsonschema checks these exactly as in context.
            _ => {
                let kinds = match keyword {
                    "pattern" | "format" | "contentMediaType" | "contentEncoding" => STRING,
                    "multipleOf" => INTEGER | FRACTION,
                    "uniqueItems" => ARRAY,
                    _ => ANY,
                };
                let shortcut = match (keyword, value.as_str()) {
                    ("format", Some("date-time")) => Shortcut::DateTime,
                    ("pattern", Some(pattern)) => Shortcut::for_pattern(pattern),
                    _ => Shortcut::None,
                };
                node.delegated.push(Delegated {
                    kinds,
                    shortcut,
                    validator: keyword_validator(cache, keyword, value)?,
                });
            }
        }
    }
    if let Some(object) = &mut node.object {
        let properties = match map.get("properties") {
            Some(Value::Object(p)) => Some(p),
            None => None,
            Some(_) => return Err(NoFastPath),
        };
        for (name, subschema) in properties.into_iter().flatten() {
            object.properties.push(compile(subschema, cache)?);
            object.names.push(Name {
                hash: name_hash(name.as_bytes()),
                words: NameWords::of(name.as_bytes()),
                text: name.as_str().into(),
                property: u32::try_from(object.properties.len() - 1).map_err(|_| NoFastPath)?,
                required_mask: 0,
            });
        }
        let required = match map.get("required") {
            Some(Value::Array(r)) => r.as_slice(),
            None => &[],
            Some(_) => return Err(NoFastPath),
        };
        let mut bits = 0u32;
        for name in required {
            let name = name.as_str().ok_or(NoFastPath)?;
            let at = match object.names.iter().position(|n| &*n.text == name) {
                Some(at) => at,
                None => {
                    object.names.push(Name {
                        hash: name_hash(name.as_bytes()),
                        words: NameWords::of(name.as_bytes()),
                        text: name.into(),
                        property: NOT_DECLARED,
                        required_mask: 0,
                    });
                    object.names.len() - 1
                }
            };
            if object.names[at].required_mask == 0 {
                object.names[at].required_mask = 1 << bits;
                object.required |= 1 << bits;
                bits += 1;
            }
        }
        object.index_names()?;
    }
    if !any_check {
        return Ok(Check::Any);
    }
    Ok(shape(node))
}

/// The most compact check that does what `node` does.
fn shape(mut node: NodeCheck) -> Check {
    let lengths = node.min_length != 0 || node.max_length != u64::MAX;
    let bounds = node.minimum.is_some()
        || node.maximum.is_some()
        || node.exclusive_minimum.is_some()
        || node.exclusive_maximum.is_some();
    let values =
        node.one_of_strings.is_some() || node.one_of_values.is_some() || !node.delegated.is_empty();
    let (object, array) = (node.object.is_some(), node.array.is_some());
    node.only_type = !(lengths || bounds || values || object || array);
    if node.only_type {
        return Check::Kinds(node.types);
    }
    if values
        && node.types == STRING
        && !bounds
        && !object
        && !array
        && node.one_of_values.is_none()
    {
        return Check::Str(Box::new(StrCheck {
            min_length: node.min_length,
            max_length: node.max_length,
            one_of: node.one_of_strings,
            delegated: node
                .delegated
                .into_iter()
                .filter(|d| d.kinds & STRING != 0)
                .collect(),
        }));
    }
    if values || array || (object && (lengths || bounds)) {
        return Check::Node(Box::new(node));
    }
    if node.types == STRING && lengths && !bounds && !object {
        return Check::Text {
            min: node.min_length,
            max: node.max_length,
        };
    }
    if node.types == OBJECT
        && let Some(o) = node.object.take()
        && !(lengths || bounds)
    {
        return Check::Object(Box::new(o));
    }
    let int_bound = |b: Option<Bound>| match b {
        None => Some(None),
        Some(Bound::Int(n)) => i64::try_from(n).ok().map(Some),
        Some(Bound::Float(_)) => None,
    };
    if node.types == INTEGER
        && !lengths
        && !object
        && node.exclusive_minimum.is_none()
        && node.exclusive_maximum.is_none()
        && let (Some(min), Some(max)) = (int_bound(node.minimum), int_bound(node.maximum))
    {
        return Check::Integer {
            min: min.unwrap_or(i64::MIN),
            max: max.unwrap_or(i64::MAX),
        };
    }
    Check::Node(Box::new(node))
}
