//! Dotted paths to event fields, such as `performer.session_id`, as stream
//! config names them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt;

/// A path of object keys from the event's root.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    /// Parses `a.b.c`; empty segments are refused.
    pub fn parse(s: &str) -> Result<FieldPath, String> {
        if s.is_empty() || s.split('.').any(str::is_empty) {
            return Err(format!(
                "`{s}` is not a dotted field path such as `meta.domain`"
            ));
        }
        Ok(FieldPath(s.split('.').map(str::to_owned).collect()))
    }

    /// The keys from the root.
    pub fn keys(&self) -> &[String] {
        &self.0
    }

    /// The value at this path, if present.
    pub fn get<'v>(&self, event: &'v Value) -> Option<&'v Value> {
        self.0.iter().try_fold(event, |v, k| v.get(k))
    }

    /// The value at this path as text: strings as they are, numbers and booleans printed.
    pub fn get_text(&self, event: &Value) -> Option<String> {
        match self.get(event)? {
            Value::String(s) => Some(s.clone()),
            v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
            _ => None,
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

impl Serialize for FieldPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FieldPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FieldPath::parse(&s).map_err(serde::de::Error::custom)
    }
}
