//! A stream's Arrow schema from the shape of its event schema
//! ([`crate::shape`]), the widening of that schema as minor versions add
//! fields, and the decoding of events (JSON text) straight into Arrow arrays
//! with arrow-json's decoder: an event that does not fit is found and set
//! aside with the decoder's reason, never the batch beside it.

use crate::shape::{Field, Shape};
use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field as ArrowField, Fields, Schema, SchemaRef, TimeUnit};
use std::sync::Arc;

/// The Arrow fields of `fields`, and the paths of those left out (no fixed shape).
pub fn arrow_fields(fields: &[Field]) -> (Vec<ArrowField>, Vec<String>) {
    let mut left_out = Vec::new();
    let out = fields
        .iter()
        .filter_map(|f| {
            let field = field_of(&f.name, &f.shape, !f.required, &f.name, &mut left_out);
            if field.is_none() {
                left_out.push(f.name.clone());
            }
            field
        })
        .collect();
    (out, left_out)
}

fn field_of(
    name: &str,
    shape: &Shape,
    nullable: bool,
    path: &str,
    left_out: &mut Vec<String>,
) -> Option<ArrowField> {
    Some(ArrowField::new(
        name,
        type_of(shape, path, left_out)?,
        nullable,
    ))
}

fn type_of(shape: &Shape, path: &str, left_out: &mut Vec<String>) -> Option<DataType> {
    Some(match shape {
        Shape::Text => DataType::Utf8,
        Shape::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        Shape::BigInt => DataType::Int64,
        Shape::Double => DataType::Float64,
        Shape::Boolean => DataType::Boolean,
        Shape::Struct(inner) => {
            let mut fields = Vec::new();
            for f in inner {
                let sub = format!("{path}.{}", f.name);
                match field_of(&f.name, &f.shape, !f.required, &sub, left_out) {
                    Some(a) => fields.push(a),
                    None => left_out.push(sub),
                }
            }
            if fields.is_empty() {
                return None;
            }
            DataType::Struct(Fields::from(fields))
        }
        Shape::List(item) => {
            let t = type_of(item, &format!("{path}[]"), left_out)?;
            DataType::List(Arc::new(ArrowField::new("item", t, true)))
        }
        Shape::Map(value) => {
            let t = type_of(value, &format!("{path}{{}}"), left_out)?;
            let entries = ArrowField::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    ArrowField::new("key", DataType::Utf8, false),
                    ArrowField::new("value", t, true),
                ])),
                false,
            );
            DataType::Map(Arc::new(entries), false)
        }
        Shape::Json => return None,
    })
}

/// A field whose type differs between the table and a newer schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "field `{field}` changes type from {old} in the table's files to {new} in schema {schema}; Parquet files keep their types, so the stream stops. Either keep the old type in the schema (a new major version or a new field name), or point the stream at a new table, then restart the connector"
)]
pub struct Conflict {
    /// The field, dotted.
    pub field: String,
    /// Its type in the table.
    pub old: String,
    /// Its type in the schema.
    pub new: String,
    /// The schema version.
    pub schema: String,
}

/// `old` widened by the fields `new` adds (each nullable, as files without it read it as
/// null), or the first field whose type `new` changes. Fields `new` lacks stay.
pub fn widen(old: &Schema, new: &Schema, uri: &str) -> Result<Schema, Conflict> {
    let fields = merge_fields(old.fields(), new.fields(), "", uri)?;
    Ok(Schema::new(fields))
}

fn merge_fields(old: &Fields, new: &Fields, path: &str, uri: &str) -> Result<Fields, Conflict> {
    let mut out: Vec<ArrowField> = old.iter().map(|f| f.as_ref().clone()).collect();
    for n in new {
        let at = if path.is_empty() {
            n.name().clone()
        } else {
            format!("{path}.{}", n.name())
        };
        match out.iter().position(|o| o.name() == n.name()) {
            None => out.push(n.as_ref().clone().with_nullable(true)),
            Some(i) => {
                let t = merge_type(out[i].data_type(), n.data_type(), &at, uri)?;
                let nullable = out[i].is_nullable() || n.is_nullable();
                out[i] = out[i].clone().with_data_type(t).with_nullable(nullable);
            }
        }
    }
    Ok(Fields::from(out))
}

fn merge_type(old: &DataType, new: &DataType, path: &str, uri: &str) -> Result<DataType, Conflict> {
    match (old, new) {
        (DataType::Struct(a), DataType::Struct(b)) => {
            Ok(DataType::Struct(merge_fields(a, b, path, uri)?))
        }
        (DataType::List(a), DataType::List(b)) => {
            let t = merge_type(a.data_type(), b.data_type(), &format!("{path}[]"), uri)?;
            Ok(DataType::List(Arc::new(
                a.as_ref().clone().with_data_type(t),
            )))
        }
        (DataType::Map(a, sorted), DataType::Map(b, _)) => {
            let t = merge_type(a.data_type(), b.data_type(), path, uri)?;
            Ok(DataType::Map(
                Arc::new(a.as_ref().clone().with_data_type(t)),
                *sorted,
            ))
        }
        (a, b) if a == b => Ok(a.clone()),
        (a, b) => Err(Conflict {
            field: path.to_owned(),
            old: a.to_string(),
            new: b.to_string(),
            schema: uri.to_owned(),
        }),
    }
}

/// Why an event was not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misfit {
    /// The record is not one JSON object.
    NotJson(String),
    /// A value does not fit its column's type (or a required field is missing).
    Type(String),
}

/// Events decoded: one batch of those that fit (none when no event does), and the index
/// of each that does not, with the decoder's reason.
pub type Decoded = (Option<RecordBatch>, Vec<(usize, Misfit)>);

/// Events (JSON texts) decoded into one batch of `schema`, and those that do not fit,
/// by index, each with the decoder's reason.
pub fn decode(schema: &SchemaRef, events: &[&[u8]]) -> Result<Decoded, String> {
    match decode_all(schema, events) {
        Ok(batch) => Ok((batch, Vec::new())),
        // One event spoils the whole batch: decode them one by one to set it aside.
        Err(_) => {
            let mut good = Vec::new();
            let mut bad = Vec::new();
            for (i, e) in events.iter().enumerate() {
                match decode_all(schema, std::slice::from_ref(e)) {
                    Ok(Some(b)) => good.push(b),
                    Ok(None) => bad.push((i, Misfit::NotJson("the record is empty".to_owned()))),
                    Err(why) => bad.push((i, why)),
                }
            }
            if good.is_empty() {
                return Ok((None, bad));
            }
            let batch = arrow_select_concat(schema, &good)?;
            Ok((Some(batch), bad))
        }
    }
}

fn decode_all(schema: &SchemaRef, events: &[&[u8]]) -> Result<Option<RecordBatch>, Misfit> {
    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(events.len().max(1))
        .build_decoder()
        .map_err(|e| Misfit::Type(e.to_string()))?;
    let not_json = |e: arrow_schema::ArrowError| Misfit::NotJson(e.to_string());
    for e in events {
        let mut at = 0;
        while at < e.len() {
            let n = decoder.decode(&e[at..]).map_err(not_json)?;
            if n == 0 {
                break;
            }
            at += n;
        }
        // Each event is one value: a text that holds more, or part of one, is refused.
        let n = decoder.decode(b"\n").map_err(not_json)?;
        if n == 0 || decoder.has_partial_record() {
            return Err(Misfit::NotJson(
                "the record is not one whole JSON object".to_owned(),
            ));
        }
    }
    decoder.flush().map_err(|e| Misfit::Type(e.to_string()))
}

/// The rows of `batches` in one batch.
fn arrow_select_concat(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch, String> {
    let columns = (0..schema.fields().len())
        .map(|i| {
            let parts: Vec<&dyn arrow_array::Array> =
                batches.iter().map(|b| b.column(i).as_ref()).collect();
            arrow_select::concat::concat(&parts)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::fields;
    use serde_json::json;

    fn schema_of(doc: serde_json::Value) -> SchemaRef {
        Arc::new(Schema::new(arrow_fields(&fields(&doc)).0))
    }

    #[test]
    fn wikimedia_rules_give_arrow_types_and_events_decode_into_them() {
        let schema = schema_of(json!({"required": ["meta"], "properties": {
            "meta": {"type": "object", "required": ["dt"], "properties": {
                "dt": {"type": "string", "format": "date-time"}, "stream": {"type": "string"}}},
            "n": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "labels": {"type": "object", "additionalProperties": {"type": "number"}},
            "free": {"type": "object"}}}));
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["labels", "meta", "n", "tags"]);
        let meta = schema.field_with_name("meta").unwrap();
        assert!(!meta.is_nullable());
        assert_eq!(
            meta.data_type().to_string(),
            r#"Struct("dt": non-null Timestamp(µs, "+00:00"), "stream": Utf8)"#
        );
        assert!(matches!(
            schema.field_with_name("labels").unwrap().data_type(),
            DataType::Map(..)
        ));
        let good = br#"{"meta": {"dt": "2026-12-06T10:20:30.5Z", "stream": "s"}, "n": 3, "tags": ["a"], "labels": {"x": 1.5}, "free": {"y": 1}}"#;
        let wrong = br#"{"meta": {"dt": "2026-12-06T10:20:30Z"}, "n": "three"}"#;
        let torn = br#"{"meta": {"dt": "2026-12-06T10:20:30Z"}"#;
        let (batch, bad) = decode(&schema, &[good, wrong, good, torn]).unwrap();
        let batch = batch.unwrap_or_else(|| panic!("no rows; refused: {bad:?}"));
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(bad.iter().map(|b| b.0).collect::<Vec<_>>(), [1, 3]);
        assert!(
            matches!(&bad[0].1, Misfit::Type(t) if t.contains("three")),
            "{:?}",
            bad[0].1
        );
        assert!(matches!(bad[1].1, Misfit::NotJson(_)), "{:?}", bad[1].1);
    }

    #[test]
    fn a_minor_version_widens_and_a_type_change_is_a_conflict() {
        let v1 = schema_of(json!({"properties": {"a": {"type": "string"},
            "s": {"type": "object", "properties": {"x": {"type": "integer"}}}}}));
        let v2 = schema_of(
            json!({"required": ["b"], "properties": {"a": {"type": "string"},
            "b": {"type": "boolean"},
            "s": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "string"}}}}}),
        );
        let w = widen(&v1, &v2, "/t/1.1.0").unwrap();
        assert!(w.field_with_name("b").unwrap().is_nullable());
        assert_eq!(
            w.field_with_name("s").unwrap().data_type().to_string(),
            r#"Struct("x": Int64, "y": Utf8)"#
        );
        let v3 = schema_of(
            json!({"properties": {"s": {"type": "object", "properties": {"x": {"type": "string"}}}}}),
        );
        let err = widen(&w, &v3, "/t/2.0.0").unwrap_err();
        assert_eq!(err.field, "s.x");
        assert!(err.to_string().contains("/t/2.0.0"), "{err}");
    }
}
