//! An event's values for its table's columns: found by path, checked
//! against the column's type, and written out in the forms the stores'
//! bulk paths read (PostgreSQL's text `COPY`, MariaDB's SQL literals).

use crate::columns::{Column, ColumnType};
use serde_json::Value;
use std::fmt::Write;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// One value, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Absent or null.
    Null,
    /// A string.
    Text(String),
    /// A UTC time.
    Timestamp(OffsetDateTime),
    /// An integer.
    Int(i64),
    /// A number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// JSON text.
    Json(String),
}

/// The cells of `event` for `columns`, or why a value does not fit its column.
pub fn cells(event: &Value, columns: &[Column]) -> Result<Vec<Cell>, String> {
    columns
        .iter()
        .map(|c| {
            let mut v = event;
            for key in &c.path {
                match v.get(key) {
                    Some(next) => v = next,
                    None => return Ok(Cell::Null),
                }
            }
            cell(v, c)
        })
        .collect()
}

fn cell(v: &Value, c: &Column) -> Result<Cell, String> {
    let wrong = |what: &str| {
        Err(format!(
            "field `{}` is {}, but its column `{}` holds {what}",
            c.field(),
            short(v),
            c.name
        ))
    };
    Ok(match (c.kind, v) {
        (_, Value::Null) => Cell::Null,
        (ColumnType::Text, Value::String(s)) => Cell::Text(s.clone()),
        (ColumnType::Timestamp, Value::String(s)) => match OffsetDateTime::parse(s, &Rfc3339) {
            Ok(t) => Cell::Timestamp(t.to_offset(time::UtcOffset::UTC)),
            Err(e) => {
                return Err(format!(
                    "field `{}` is {}, not an ISO-8601 date-time ({e})",
                    c.field(),
                    short(v)
                ));
            }
        },
        (ColumnType::BigInt, Value::Number(n)) => match n.as_i64() {
            Some(i) => Cell::Int(i),
            None => return wrong("64-bit integers"),
        },
        (ColumnType::Double, Value::Number(n)) => match n.as_f64() {
            Some(f) => Cell::Float(f),
            None => return wrong("numbers"),
        },
        (ColumnType::Boolean, Value::Bool(b)) => Cell::Bool(*b),
        (ColumnType::Json, v) => Cell::Json(v.to_string()),
        (ColumnType::Text, _) => return wrong("strings"),
        (ColumnType::Timestamp, _) => return wrong("date-time strings"),
        (ColumnType::BigInt, _) => return wrong("integers"),
        (ColumnType::Double, _) => return wrong("numbers"),
        (ColumnType::Boolean, _) => return wrong("booleans"),
    })
}

/// A value as an error message shows it: at most 60 characters.
fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 60 {
        let mut end = 57;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// A timestamp as `YYYY-MM-DD HH:MM:SS.ffffff` (UTC), which both stores read.
pub fn write_timestamp(t: &OffsetDateTime, out: &mut String) {
    let _ = write!(
        out,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    );
}

/// Appends a string as a field of a tab-separated bulk load: backslash, tab, newline and
/// carriage return escaped (and NUL, with `nul`; PostgreSQL refuses NUL in text either way).
fn escape_field(s: &str, nul: bool, out: &mut String) {
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' if nul => out.push_str("\\0"),
            c => out.push(c),
        }
    }
}

/// Appends `cell` in PostgreSQL's text `COPY` form (tab-separated, `\N` for null).
pub fn copy_text(cell: &Cell, out: &mut String) {
    match cell {
        Cell::Null => out.push_str("\\N"),
        Cell::Text(s) | Cell::Json(s) => escape_field(s, false, out),
        Cell::Timestamp(t) => {
            write_timestamp(t, out);
            out.push_str("+00");
        }
        Cell::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Cell::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        Cell::Bool(b) => out.push(if *b { 't' } else { 'f' }),
    }
}

/// Appends `cell` in the form MariaDB's `LOAD DATA` reads by default (tab-separated,
/// backslash escapes, `\N` for null).
pub fn load_text(cell: &Cell, out: &mut String) {
    match cell {
        Cell::Null => out.push_str("\\N"),
        Cell::Text(s) | Cell::Json(s) => escape_field(s, true, out),
        Cell::Timestamp(t) => write_timestamp(t, out),
        Cell::Bool(b) => out.push(if *b { '1' } else { '0' }),
        Cell::Int(_) | Cell::Float(_) => copy_text(cell, out),
    }
}

/// `cell` as plain text, as a SQL cast from text reads it; `None` for null.
pub fn plain_text(cell: &Cell) -> Option<String> {
    let mut out = String::new();
    match cell {
        Cell::Null => return None,
        Cell::Text(s) | Cell::Json(s) => out.push_str(s),
        other => copy_text(other, &mut out),
    }
    Some(out)
}

/// Appends `cell` as a MariaDB SQL literal.
pub fn sql_literal(cell: &Cell, out: &mut String) {
    match cell {
        Cell::Null => out.push_str("NULL"),
        Cell::Text(s) | Cell::Json(s) => quote(s, out),
        Cell::Timestamp(t) => {
            out.push('\'');
            write_timestamp(t, out);
            out.push('\'');
        }
        Cell::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Cell::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        Cell::Bool(b) => out.push(if *b { '1' } else { '0' }),
    }
}

/// A string as a quoted MariaDB literal (backslash escapes, the server's default mode).
pub fn quote(s: &str, out: &mut String) {
    out.push('\'');
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{1a}' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::layout;
    use serde_json::json;

    #[test]
    fn values_are_found_by_path_and_typed() {
        let schema = json!({"properties": {
            "dt": {"type": "string", "format": "date-time"},
            "n": {"type": "integer"}, "x": {"type": "number"}, "ok": {"type": "boolean"},
            "tags": {"type": "array"}, "meta": {"properties": {"id": {"type": "string"}}},
            "p": {"properties": {"name": {"type": "string"}}}}});
        let cols = layout(&schema).unwrap();
        let event = json!({"meta": {"id": "a\tb"}, "dt": "2026-11-27T13:00:00.5+01:00",
            "n": 7, "x": 1.5, "ok": true, "tags": ["a"], "p": {}});
        let got = cells(&event, &cols).unwrap();
        let names: Vec<_> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["meta_id", "dt", "n", "ok", "p_name", "tags", "x"]);
        let mut line = String::new();
        for (i, c) in got.iter().enumerate() {
            if i > 0 {
                line.push('\t');
            }
            copy_text(c, &mut line);
        }
        assert_eq!(
            line,
            "a\\tb\t2026-11-27 12:00:00.500000+00\t7\tt\t\\N\t[\"a\"]\t1.5"
        );
        let mut lit = String::new();
        sql_literal(&got[0], &mut lit);
        sql_literal(&Cell::Text("it's\\".into()), &mut lit);
        sql_literal(&got[1], &mut lit);
        assert_eq!(lit, "'a\tb''it\\'s\\\\''2026-11-27 12:00:00.500000'");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_field_and_column() {
        let cols = layout(&json!({"properties": {
            "n": {"type": "integer"}, "dt": {"type": "string", "format": "date-time"}}}))
        .unwrap();
        let err = cells(&json!({"n": 1.5}), &cols).unwrap_err();
        assert!(
            err.contains("field `n` is 1.5") && err.contains("integers"),
            "{err}"
        );
        let err = cells(&json!({"dt": "yesterday"}), &cols).unwrap_err();
        assert!(err.contains("not an ISO-8601 date-time"), "{err}");
        let err = cells(&json!({"n": 1e300}), &cols).unwrap_err();
        assert!(err.contains("64-bit"), "{err}");
    }
}
