//! A stream's columns from its JSONSchema, by Wikimedia's Refine rules as far
//! as a SQL table can follow them: top-level properties become columns,
//! nested objects with `properties` are flattened to `parent_child`
//! columns, maps (`additionalProperties` schemas), arrays and objects of no
//! fixed shape are kept whole as JSON, `date-time` strings become UTC
//! timestamps, integers 64-bit, numbers doubles, booleans booleans. Names are
//! lowercased and every character outside `a-z 0-9 _` becomes `_` (so
//! `$schema` is `_schema`), as Hive-backed Refine tables name them.
//!
//! The shapes come from [`crate::shape`], which gives the lake its Arrow schema too.

use crate::shape::{Field, Shape, fields};
use serde_json::Value;
use std::fmt;

/// The column holding `meta.id`: every table's primary key.
pub const ID_COLUMN: &str = "meta_id";

/// Longest column name both PostgreSQL (63 bytes) and MariaDB (64 characters) keep whole.
const MAX_NAME: usize = 63;

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// A string.
    Text,
    /// A `date-time` string, as a UTC timestamp with microseconds.
    Timestamp,
    /// An integer, 64 bits.
    BigInt,
    /// A number, as a double.
    Double,
    /// A boolean.
    Boolean,
    /// An array, a map or an object of no fixed shape, as JSON text.
    Json,
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnType::Text => "string",
            ColumnType::Timestamp => "timestamp (date-time string)",
            ColumnType::BigInt => "integer",
            ColumnType::Double => "number",
            ColumnType::Boolean => "boolean",
            ColumnType::Json => "JSON (array, map or free-form object)",
        })
    }
}

/// One column of a stream's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name in the table.
    pub name: String,
    /// Where its value is in an event: the keys from the top.
    pub path: Vec<String>,
    /// What it holds.
    pub kind: ColumnType,
}

impl Column {
    /// The field's path as the schema writes it, e.g. `meta.id`.
    pub fn field(&self) -> String {
        self.path.join(".")
    }
}

/// A schema whose fields cannot be laid out as columns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Two fields give the same column name.
    #[error(
        "fields `{first}` and `{second}` both become column `{column}`; rename one of them in the schema"
    )]
    Collision {
        /// The column name.
        column: String,
        /// The field that took it first.
        first: String,
        /// The field that wanted it too.
        second: String,
    },
    /// A column name is longer than the stores keep.
    #[error(
        "field `{field}` becomes column `{column}`, longer than the {MAX_NAME} characters a table column may have"
    )]
    TooLong {
        /// The field.
        field: String,
        /// The name it would get.
        column: String,
    },
    /// `meta.id` is not a string.
    #[error("`meta.id` is {kind}, but it must be a string: it is the table's primary key")]
    IdNotText {
        /// What the schema makes of it.
        kind: ColumnType,
    },
}

/// A column the schema wants that the table holds as another type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "field `{field}` (column `{column}`) changes type from {old} in the table to {new} in schema {schema}; a table column's type is not changed by the connector. Either make the schema keep the old type (a new major version or a new field name), or migrate the column by hand (ALTER TABLE) or point the stream at a new table, then restart the connector"
)]
pub struct TypeChange {
    /// The field.
    pub field: String,
    /// Its column.
    pub column: String,
    /// The type the table has.
    pub old: ColumnType,
    /// The type the schema asks for.
    pub new: ColumnType,
    /// The schema version that asks for it.
    pub schema: String,
}

/// The columns of an event schema, `meta_id` first.
pub fn layout(schema: &Value) -> Result<Vec<Column>, LayoutError> {
    let mut columns = vec![Column {
        name: ID_COLUMN.to_owned(),
        path: vec!["meta".to_owned(), "id".to_owned()],
        kind: ColumnType::Text,
    }];
    let mut fields = Vec::new();
    walk(schema, &mut Vec::new(), &mut fields);
    for (path, kind) in fields {
        let name = column_name(&path);
        let field = path.join(".");
        if name == ID_COLUMN {
            if path == ["meta", "id"] {
                if kind != ColumnType::Text {
                    return Err(LayoutError::IdNotText { kind });
                }
                continue;
            }
            return Err(LayoutError::Collision {
                column: name,
                first: "meta.id".to_owned(),
                second: field,
            });
        }
        if name.len() > MAX_NAME {
            return Err(LayoutError::TooLong {
                field,
                column: name,
            });
        }
        if let Some(c) = columns.iter().find(|c| c.name == name) {
            return Err(LayoutError::Collision {
                column: name,
                first: c.field(),
                second: field,
            });
        }
        columns.push(Column { name, path, kind });
    }
    Ok(columns)
}

/// The leaves of `schema`'s properties, depth first, in key order.
fn walk(schema: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, ColumnType)>) {
    walk_fields(&fields(schema), path, out);
}

fn walk_fields(fields: &[Field], path: &mut Vec<String>, out: &mut Vec<(Vec<String>, ColumnType)>) {
    for f in fields {
        path.push(f.name.clone());
        let kind = match &f.shape {
            Shape::Struct(inner) => {
                walk_fields(inner, path, out);
                path.pop();
                continue;
            }
            Shape::Text => ColumnType::Text,
            Shape::Timestamp => ColumnType::Timestamp,
            Shape::BigInt => ColumnType::BigInt,
            Shape::Double => ColumnType::Double,
            Shape::Boolean => ColumnType::Boolean,
            Shape::Map(_) | Shape::List(_) | Shape::Json => ColumnType::Json,
        };
        out.push((path.clone(), kind));
        path.pop();
    }
}

/// The column name of a field path: parts joined by `_`, lowercased, every
/// character outside `a-z 0-9 _` made `_`, and a leading digit prefixed by `_`.
pub fn column_name(path: &[String]) -> String {
    let mut name = String::new();
    for (i, part) in path.iter().enumerate() {
        if i > 0 {
            name.push('_');
        }
        name.extend(part.chars().map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        }));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        name.insert(0, '_');
    }
    name
}

/// The columns `wanted` adds to a table that has `existing` (name, type; `None`
/// for a type the connector does not make, e.g. one a person changed by hand,
/// which is left alone), or the first type change. Columns the table has and
/// the schema does not stay.
pub fn additions(
    existing: &[(String, Option<ColumnType>)],
    wanted: &[Column],
    schema: &str,
) -> Result<Vec<Column>, TypeChange> {
    let mut added = Vec::new();
    for c in wanted {
        match existing.iter().find(|(name, _)| *name == c.name) {
            None => added.push(c.clone()),
            Some((_, None)) => {}
            Some((_, Some(old))) if *old == c.kind => {}
            Some((_, Some(old))) => {
                return Err(TypeChange {
                    field: c.field(),
                    column: c.name.clone(),
                    old: *old,
                    new: c.kind,
                    schema: schema.to_owned(),
                });
            }
        }
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(cols: &[Column]) -> Vec<(&str, ColumnType)> {
        cols.iter().map(|c| (c.name.as_str(), c.kind)).collect()
    }

    #[test]
    fn each_refine_rule_gives_its_column() {
        let schema = json!({
            "type": "object",
            "properties": {
                "$schema": {"type": "string"},
                "dt": {"type": "string", "format": "date-time"},
                "meta": {"type": "object", "properties": {
                    "id": {"type": "string"}, "dt": {"type": "string", "format": "date-time"},
                    "stream": {"type": "string"}}},
                "count": {"type": "integer"},
                "ratio": {"type": "number"},
                "ok": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object"},
                "maybe": {"type": ["null", "integer"]},
                "either": {"type": ["string", "integer"]},
                "Performer": {"type": "object", "properties": {
                    "user-Id": {"type": "integer"},
                    "groups": {"type": "array"},
                    "edit": {"type": "object", "properties": {"count": {"type": "integer"}}}}},
            }
        });
        let cols = layout(&schema).unwrap();
        assert_eq!(
            names(&cols),
            vec![
                ("meta_id", ColumnType::Text),
                ("_schema", ColumnType::Text),
                ("performer_edit_count", ColumnType::BigInt),
                ("performer_groups", ColumnType::Json),
                ("performer_user_id", ColumnType::BigInt),
                ("count", ColumnType::BigInt),
                ("dt", ColumnType::Timestamp),
                ("either", ColumnType::Json),
                ("free", ColumnType::Json),
                ("labels", ColumnType::Json),
                ("maybe", ColumnType::BigInt),
                ("meta_dt", ColumnType::Timestamp),
                ("meta_stream", ColumnType::Text),
                ("ok", ColumnType::Boolean),
                ("ratio", ColumnType::Double),
                ("tags", ColumnType::Json),
            ]
        );
        let edit = cols
            .iter()
            .find(|c| c.name == "performer_edit_count")
            .unwrap();
        assert_eq!(edit.path, ["Performer", "edit", "count"]);
        assert_eq!(edit.field(), "Performer.edit.count");
    }

    #[test]
    fn colliding_and_overlong_names_are_refused_with_both_fields() {
        let schema = json!({"properties": {
            "a_b": {"type": "string"},
            "a": {"type": "object", "properties": {"b": {"type": "integer"}}}}});
        assert_eq!(
            layout(&schema).unwrap_err(),
            LayoutError::Collision {
                column: "a_b".into(),
                first: "a.b".into(),
                second: "a_b".into()
            }
        );
        let long = "x".repeat(64);
        let schema = json!({"properties": {long.clone(): {"type": "string"}}});
        assert!(
            matches!(layout(&schema).unwrap_err(), LayoutError::TooLong { field, .. } if field == long)
        );
        let schema = json!({"properties": {"meta": {"properties": {"id": {"type": "integer"}}}}});
        assert_eq!(
            layout(&schema).unwrap_err(),
            LayoutError::IdNotText {
                kind: ColumnType::BigInt
            }
        );
    }

    #[test]
    fn a_minor_version_adds_columns_and_a_type_change_names_the_field() {
        let v1 = layout(&json!({"properties": {"a": {"type": "string"}}})).unwrap();
        let existing: Vec<_> = v1.iter().map(|c| (c.name.clone(), Some(c.kind))).collect();
        let v2 = layout(&json!({"properties": {
            "a": {"type": "string"}, "b": {"type": "object", "properties": {"c": {"type": "boolean"}}}}}))
        .unwrap();
        let added = additions(&existing, &v2, "/t/1.1.0").unwrap();
        assert_eq!(names(&added), vec![("b_c", ColumnType::Boolean)]);
        // A field the newer version dropped stays in the table.
        assert_eq!(additions(&existing, &v1[..1], "/t/1.0.0").unwrap(), vec![]);
        let v3 = layout(&json!({"properties": {"a": {"type": "integer"}}})).unwrap();
        let err = additions(&existing, &v3, "/t/2.0.0").unwrap_err();
        assert_eq!(err.field, "a");
        assert_eq!(err.old, ColumnType::Text);
        assert_eq!(err.new, ColumnType::BigInt);
        let text = err.to_string();
        assert!(
            text.contains("field `a`") && text.contains("/t/2.0.0"),
            "{text}"
        );
    }
}
