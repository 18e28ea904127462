//! The shape of an event schema by Wikimedia's Refine rules, written once for
//! every sink: properties make a struct, an `additionalProperties` schema a
//! map of strings to its values, `items` a list, integers 64-bit, numbers
//! doubles, `date-time` strings UTC timestamps, and a field is nullable
//! unless its object lists it in `required`. A field of no fixed shape
//! (several types, an object with neither, an array without `items`) is
//! [`Shape::Json`]. The SQL sinks flatten the structs into columns
//! ([`crate::columns`]); the lake maps the tree onto Arrow types.

use serde_json::Value;

/// What a field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// A string.
    Text,
    /// A `date-time` string: a UTC timestamp with microseconds.
    Timestamp,
    /// An integer, 64 bits.
    BigInt,
    /// A number, as a double.
    Double,
    /// A boolean.
    Boolean,
    /// An object with fixed properties.
    Struct(Vec<Field>),
    /// An object whose keys are free and whose values all have one shape.
    Map(Box<Shape>),
    /// An array whose items all have one shape.
    List(Box<Shape>),
    /// No fixed shape: kept as JSON text where a store can, left out where it cannot.
    Json,
}

/// One property of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Its key in the event.
    pub name: String,
    /// What it holds.
    pub shape: Shape,
    /// Whether its object lists it in `required`.
    pub required: bool,
}

/// The properties of an object schema, in key order.
pub fn fields(schema: &Value) -> Vec<Field> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    props
        .iter()
        .map(|(name, sub)| Field {
            name: name.clone(),
            shape: shape_of(sub),
            required: required.contains(&name.as_str()),
        })
        .collect()
}

/// The shape of one (sub)schema.
pub fn shape_of(schema: &Value) -> Shape {
    let ty = match schema.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        // `[string, null]`: nullable; the one other type decides, more than one is JSON.
        Some(Value::Array(types)) => {
            let mut named = types
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null");
            match (named.next(), named.next()) {
                (Some(t), None) => Some(t),
                _ => return Shape::Json,
            }
        }
        _ => None,
    };
    let has_props = schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty());
    let map_of = schema.get("additionalProperties").filter(|v| v.is_object());
    match ty {
        Some("string") => {
            if schema.get("format").and_then(Value::as_str) == Some("date-time") {
                Shape::Timestamp
            } else {
                Shape::Text
            }
        }
        Some("integer") => Shape::BigInt,
        Some("number") => Shape::Double,
        Some("boolean") => Shape::Boolean,
        Some("array") => match schema.get("items").filter(|i| i.is_object()) {
            Some(items) => Shape::List(Box::new(shape_of(items))),
            None => Shape::Json,
        },
        Some("object") | None if has_props && map_of.is_none() => Shape::Struct(fields(schema)),
        Some("object") | None => match map_of {
            Some(values) if !has_props => Shape::Map(Box::new(shape_of(values))),
            _ => Shape::Json,
        },
        _ => Shape::Json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_refine_rule_gives_its_shape() {
        let schema = json!({
            "type": "object",
            "required": ["meta"],
            "properties": {
                "meta": {"type": "object", "required": ["id"], "properties": {
                    "id": {"type": "string"}, "dt": {"type": "string", "format": "date-time"}}},
                "n": {"type": ["null", "integer"]},
                "x": {"type": "number"},
                "ok": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
                "free": {"type": "object"},
                "either": {"type": ["string", "integer"]},
                "loose": {"type": "array"},
            }
        });
        let f = fields(&schema);
        let by = |n: &str| f.iter().find(|x| x.name == n).unwrap().clone();
        assert_eq!(
            by("meta"),
            Field {
                name: "meta".into(),
                required: true,
                shape: Shape::Struct(vec![
                    Field {
                        name: "dt".into(),
                        shape: Shape::Timestamp,
                        required: false
                    },
                    Field {
                        name: "id".into(),
                        shape: Shape::Text,
                        required: true
                    },
                ])
            }
        );
        assert_eq!(by("n").shape, Shape::BigInt);
        assert!(!by("n").required);
        assert_eq!(by("x").shape, Shape::Double);
        assert_eq!(by("ok").shape, Shape::Boolean);
        assert_eq!(by("tags").shape, Shape::List(Box::new(Shape::Text)));
        assert_eq!(by("labels").shape, Shape::Map(Box::new(Shape::BigInt)));
        assert_eq!(by("free").shape, Shape::Json);
        assert_eq!(by("either").shape, Shape::Json);
        assert_eq!(by("loose").shape, Shape::Json);
    }
}
