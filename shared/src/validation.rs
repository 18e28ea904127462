//! Structured validation errors, as EventGate reports them: each violation
//! with its instance path, schema path, keyword and message, and the
//! AJV-style `errorsText` summary.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One way an event breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaViolation {
    /// JSON pointer into the event, e.g. `/meta/dt`.
    #[serde(rename = "instancePath")]
    pub instance_path: String,
    /// JSON pointer into the schema, e.g. `/properties/meta/required`.
    #[serde(rename = "schemaPath")]
    pub schema_path: String,
    /// The failing keyword, e.g. `required`.
    pub keyword: String,
    /// What is wrong.
    pub message: String,
}

impl SchemaViolation {
    pub(crate) fn from_error(e: &jsonschema::ValidationError<'_>) -> Self {
        SchemaViolation {
            instance_path: e.instance_path().to_string(),
            schema_path: e.schema_path().to_string(),
            keyword: e.kind().keyword().to_owned(),
            message: truncate(&e.to_string(), 512),
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// All violations of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violations(pub Vec<SchemaViolation>);

impl Violations {
    /// AJV's `errorsText`: `data/meta/dt must match format "date-time", …`.
    pub fn errors_text(&self) -> String {
        let mut out = String::new();
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str("data");
            out.push_str(&v.instance_path);
            out.push(' ');
            out.push_str(&v.message);
        }
        out
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.errors_text())
    }
}
