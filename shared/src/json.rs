//! Strict JSON for intake: a body of one event or an array of them, events
//! parsed without duplicate keys, and server-filled fields spliced into the
//! raw bytes so that accepted events are never re-serialized.
//!
//! serde_json bounds nesting (128 levels) and refuses NaN-like literals,
//! numbers beyond f64 and invalid UTF-8; this module adds duplicate-key
//! detection and limits on body size, event count and event size.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

/// Size and count limits for one request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BodyLimits {
    /// Largest body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most events in one body.
    pub max_events: usize,
    /// Largest single event, in bytes.
    pub max_event_bytes: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            max_body_bytes: 4 * 1024 * 1024,
            max_events: 10_000,
            max_event_bytes: 1024 * 1024,
        }
    }
}

/// Why a whole body was refused before any event in it was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Nothing but white space was sent.
    #[error("the body is empty: send one JSON event object or an array of them")]
    Empty,
    /// The body is over the size limit.
    #[error("the body is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Body size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The array holds more events than allowed.
    #[error("the body holds more than {limit} events: send at most {limit} per request")]
    TooManyEvents {
        /// The limit.
        limit: usize,
    },
    /// `[]`.
    #[error("the body is an empty array: send at least one event")]
    EmptyArray,
    /// Not JSON.
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Malformed {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser found wrong.
        message: String,
    },
    /// JSON, but a scalar rather than an object or array.
    #[error("the body is a JSON {found}: send one event object or an array of them")]
    NotEventOrArray {
        /// The JSON type found.
        found: &'static str,
    },
}

impl BodyError {
    fn malformed(e: &serde_json::Error) -> Self {
        let text = e.to_string();
        // serde_json appends " at line L column C"; keep the message alone.
        let message = match text.rfind(" at line ") {
            Some(i) => text[..i].to_owned(),
            None => text,
        };
        BodyError::Malformed {
            line: e.line(),
            column: e.column(),
            message,
        }
    }
}

/// Splits a body into the raw JSON text of each event, without parsing the events.
///
/// A body that starts with `[` is an array of events; anything else is one event.
pub fn split_body<'a>(body: &'a [u8], limits: &BodyLimits) -> Result<Vec<&'a RawValue>, BodyError> {
    if body.len() > limits.max_body_bytes {
        return Err(BodyError::TooLarge {
            size: body.len(),
            limit: limits.max_body_bytes,
        });
    }
    let first = body.iter().position(|b| !b.is_ascii_whitespace());
    match first.map(|i| body[i]) {
        None => Err(BodyError::Empty),
        Some(b'[') => {
            let mut de = serde_json::Deserializer::from_slice(body);
            let events = de
                .deserialize_seq(BoundedArray { limit: limits.max_events })
                .map_err(|e| {
                    if e.is_data() && e.to_string().starts_with(TOO_MANY) {
                        BodyError::TooManyEvents { limit: limits.max_events }
                    } else {
                        BodyError::malformed(&e)
                    }
                })?;
            de.end().map_err(|e| BodyError::malformed(&e))?;
            if events.is_empty() {
                return Err(BodyError::EmptyArray);
            }
            Ok(events)
        }
        Some(b'{') => {
            let raw: &RawValue = serde_json::from_slice(body).map_err(|e| BodyError::malformed(&e))?;
            Ok(vec![raw])
        }
        Some(_) => {
            let value: Value = serde_json::from_slice(body).map_err(|e| BodyError::malformed(&e))?;
            Err(BodyError::NotEventOrArray {
                found: json_type_name(&value),
            })
        }
    }
}

const TOO_MANY: &str = "too many events";

struct BoundedArray {
    limit: usize,
}

impl<'de> Visitor<'de> for BoundedArray {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.limit).min(1024));
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            if out.len() == self.limit {
                return Err(de::Error::custom(TOO_MANY));
            }
            out.push(raw);
        }
        Ok(out)
    }
}

/// The JSON type name of a value, for messages.
pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parses one event's JSON, refusing duplicate object keys anywhere in it.
pub fn parse_strict(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictSeed.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Builds a [`Value`] from any serde format, refusing duplicate keys; YAML
/// integers beyond 64 bits become floats, as they do in JavaScript tools.
#[derive(Clone, Copy)]
pub(crate) struct StrictSeed;

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        match i64::try_from(v) {
            Ok(i) => Ok(Value::from(i)),
            Err(_) => self.visit_f64(v as f64),
        }
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        match u64::try_from(v) {
            Ok(u) => Ok(Value::from(u)),
            Err(_) => self.visit_f64(v as f64),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(StrictSeed)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            let value = map.next_value_seed(StrictSeed)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A field the server fills, as a path of object keys and its JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addition {
    /// Object keys from the root, e.g. `["meta", "id"]`.
    pub path: Vec<String>,
    /// The value's JSON text.
    pub json: String,
}

/// Inserts `additions` into the JSON object `raw` without re-serializing it.
///
/// `raw` must be a valid JSON object and each addition's path must be absent
/// from it; parents that are missing are created, and parents that exist must
/// be objects (the caller checks both on the parsed value).
pub fn splice(raw: &str, additions: &[Addition]) -> String {
    let mut tree = Tree::default();
    for a in additions {
        tree.insert(&a.path, &a.json);
    }
    let mut out = String::with_capacity(raw.len() + additions.iter().map(|a| a.json.len() + 24).sum::<usize>());
    let bytes = raw.as_bytes();
    let start = skip_ws(bytes, 0);
    out.push_str(&raw[..start]);
    let end = splice_object(raw, start, &tree, &mut out);
    out.push_str(&raw[end..]);
    out
}

#[derive(Default)]
struct Tree<'a> {
    children: Vec<(&'a str, Node<'a>)>,
}

enum Node<'a> {
    Leaf(&'a str),
    Branch(Tree<'a>),
}

impl<'a> Tree<'a> {
    fn insert(&mut self, path: &'a [String], json: &'a str) {
        let Some((head, rest)) = path.split_first() else {
            return;
        };
        let pos = self.children.iter().position(|(k, _)| k == head);
        if rest.is_empty() {
            match pos {
                Some(i) => self.children[i].1 = Node::Leaf(json),
                None => self.children.push((head, Node::Leaf(json))),
            }
            return;
        }
        let i = match pos {
            Some(i) => i,
            None => {
                self.children.push((head, Node::Branch(Tree::default())));
                self.children.len() - 1
            }
        };
        if let Node::Leaf(_) = self.children[i].1 {
            self.children[i].1 = Node::Branch(Tree::default());
        }
        if let Node::Branch(t) = &mut self.children[i].1 {
            t.insert(rest, json);
        }
    }

    fn write_new(&self, out: &mut String) {
        out.push('{');
        for (n, (k, node)) in self.children.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            write_key(k, out);
            match node {
                Node::Leaf(j) => out.push_str(j),
                Node::Branch(t) => t.write_new(out),
            }
        }
        out.push('}');
    }
}

fn write_key(k: &str, out: &mut String) {
    // Keys come from configuration; serde_json escapes them correctly.
    out.push_str(&Value::String(k.to_owned()).to_string());
    out.push(':');
}

/// Copies the object starting at `open` with `tree` merged in; returns the offset after it.
fn splice_object(raw: &str, open: usize, tree: &Tree<'_>, out: &mut String) -> usize {
    let bytes = raw.as_bytes();
    let members = scan_members(raw, open);
    let mut present = vec![false; tree.children.len()];
    for m in &members.list {
        if let Some(i) = tree.children.iter().position(|(k, _)| *k == m.key) {
            present[i] = true;
        }
    }
    out.push('{');
    let mut wrote = false;
    for ((k, node), here) in tree.children.iter().zip(&present) {
        if *here {
            continue;
        }
        if wrote {
            out.push(',');
        }
        write_key(k, out);
        match node {
            Node::Leaf(j) => out.push_str(j),
            Node::Branch(t) => t.write_new(out),
        }
        wrote = true;
    }
    if wrote && !members.list.is_empty() {
        out.push(',');
    }
    let mut cursor = open + 1;
    for m in &members.list {
        let nested = tree.children.iter().find_map(|(k, node)| match node {
            Node::Branch(t) if *k == m.key && bytes[m.value_start] == b'{' => Some(t),
            _ => None,
        });
        if let Some(t) = nested {
            out.push_str(&raw[cursor..m.value_start]);
            cursor = splice_object(raw, m.value_start, t, out);
        }
    }
    out.push_str(&raw[cursor..members.end]);
    members.end
}

struct Member {
    key: String,
    value_start: usize,
}

struct Members {
    list: Vec<Member>,
    /// Offset just after the closing brace.
    end: usize,
}

fn scan_members(raw: &str, open: usize) -> Members {
    let bytes = raw.as_bytes();
    let mut list = Vec::new();
    let mut i = skip_ws(bytes, open + 1);
    if bytes.get(i) == Some(&b'}') {
        return Members { list, end: i + 1 };
    }
    while i < bytes.len() {
        let key_end = skip_string(bytes, i);
        let key_text = &raw[i..key_end];
        let key = if key_text.contains('\\') {
            serde_json::from_str::<String>(key_text).unwrap_or_default()
        } else {
            key_text[1..key_text.len().saturating_sub(1)].to_owned()
        };
        i = skip_ws(bytes, key_end);
        i = skip_ws(bytes, i + 1); // the colon
        let value_start = i;
        i = skip_ws(bytes, skip_value(bytes, i));
        list.push(Member { key, value_start });
        match bytes.get(i) {
            Some(b',') => i = skip_ws(bytes, i + 1),
            _ => return Members { list, end: i + 1 },
        }
    }
    Members { list, end: bytes.len() }
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `i` is at an opening quote; returns the offset after the closing quote.
fn skip_string(bytes: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Skips one valid JSON value starting at `i`, without recursion.
fn skip_value(bytes: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i = skip_string(bytes, i);
                if depth == 0 {
                    return i;
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if depth == 0 {
                    return i;
                }
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            b',' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => return i,
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(path: &str, json: &str) -> Addition {
        Addition {
            path: path.split('.').map(str::to_owned).collect(),
            json: json.to_owned(),
        }
    }

    #[test]
    fn splices_into_existing_and_missing_objects() {
        let raw = r#" {"a": 1, "meta": {"stream": "s"}, "z": [1, {"meta": 2}]} "#;
        let out = splice(raw, &[add("meta.id", "\"x\""), add("meta.dt", "\"t\""), add("http.ua", "\"u\"")]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["meta"]["id"], "x");
        assert_eq!(v["meta"]["dt"], "t");
        assert_eq!(v["meta"]["stream"], "s");
        assert_eq!(v["http"]["ua"], "u");
        assert_eq!(v["z"][1]["meta"], 2);
        assert_eq!(v["a"], 1);
    }

    #[test]
    fn splices_into_empty_objects() {
        let out = splice("{}", &[add("meta.id", "1")]);
        assert_eq!(out, r#"{"meta":{"id":1}}"#);
        let out = splice(r#"{"meta":{}}"#, &[add("meta.id", "1")]);
        assert_eq!(out, r#"{"meta":{"id":1}}"#);
    }

    #[test]
    fn splices_past_escaped_keys_and_strings() {
        let raw = r#"{"q\"uote": "}{\"", "m\u0065ta": {"k": "]"}}"#;
        let out = splice(raw, &[add("meta.id", "7")]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["meta"]["id"], 7);
        assert_eq!(v["meta"]["k"], "]");
        assert_eq!(v["q\"uote"], "}{\"");
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        let err = parse_strict(r#"{"a": {"b": 1, "b": 2}}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate key `b`"), "{err}");
    }

    #[test]
    fn body_errors_name_the_problem() {
        let limits = BodyLimits::default();
        let split_body = |b: &'static [u8], l: &BodyLimits| split_body(b, l).map(|v| v.len());
        assert_eq!(split_body(b"  ", &limits), Err(BodyError::Empty));
        assert_eq!(split_body(b"[]", &limits), Err(BodyError::EmptyArray));
        assert!(matches!(split_body(b"42", &limits), Err(BodyError::NotEventOrArray { found: "number" })));
        match split_body(b"{\n \"a\": }", &limits) {
            Err(BodyError::Malformed { line: 2, column, .. }) => assert!(column > 0),
            other => panic!("{other:?}"),
        }
        let small = BodyLimits { max_events: 2, ..limits };
        assert_eq!(split_body(b"[{},{},{}]", &small), Err(BodyError::TooManyEvents { limit: 2 }));
        let tiny = BodyLimits { max_body_bytes: 3, ..limits };
        assert_eq!(split_body(b"[{},{}]", &tiny), Err(BodyError::TooLarge { size: 7, limit: 3 }));
    }
}
