//! `$ref` dereferencing as jsonschema-tools does it: every `$ref` in a
//! document (examples included) is replaced by what it points at, `#/...`
//! inside the same document and `/title/version#/...` in the repositories,
//! searched in order. Keys beside a `$ref` are kept and win over the target's.
//! Nothing is fetched: a `$ref` that names no loaded schema is an error.

use super::ToolError;
use crate::schema_uri::SchemaUri;
use serde_json::{Map, Value};

/// Finds the (materialized) document a `/title/version` URI names.
pub trait Documents {
    /// The document for `uri`, or why there is none.
    fn document(&self, uri: &SchemaUri) -> Result<Value, String>;
}

/// Deepest `$ref` chain followed before giving up.
const MAX_DEPTH: usize = 64;

/// Replaces every `$ref` in `doc`.
pub fn dereference(doc: &Value, docs: &dyn Documents) -> Result<Value, ToolError> {
    let mut walk = Walk {
        docs,
        chain: Vec::new(),
    };
    walk.node(doc, doc)
}

struct Walk<'a> {
    docs: &'a dyn Documents,
    /// The `$ref`s being followed, to report cycles.
    chain: Vec<String>,
}

impl Walk<'_> {
    fn node(&mut self, node: &Value, root: &Value) -> Result<Value, ToolError> {
        match node {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    let target = self.reference(r, root)?;
                    let rest: Map<String, Value> = map
                        .iter()
                        .filter(|(k, _)| k.as_str() != "$ref")
                        .map(|(k, v)| Ok((k.clone(), self.node(v, root)?)))
                        .collect::<Result<_, ToolError>>()?;
                    if rest.is_empty() {
                        return Ok(target);
                    }
                    let Value::Object(mut merged) = target else {
                        return Ok(target);
                    };
                    merged.extend(rest);
                    return Ok(Value::Object(merged));
                }
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.node(v, root)?)))
                    .collect::<Result<Map<_, _>, ToolError>>()
                    .map(Value::Object)
            }
            Value::Array(items) => items
                .iter()
                .map(|v| self.node(v, root))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => Ok(other.clone()),
        }
    }

    fn reference(&mut self, r: &str, root: &Value) -> Result<Value, ToolError> {
        if self.chain.iter().any(|c| c == r) {
            return Err(ToolError::Ref {
                reference: r.to_owned(),
                reason: format!("it refers to itself through {}", self.chain.join(" → ")),
            });
        }
        if self.chain.len() >= MAX_DEPTH {
            return Err(ToolError::Ref {
                reference: r.to_owned(),
                reason: format!("more than {MAX_DEPTH} nested $refs"),
            });
        }
        self.chain.push(r.to_owned());
        let out = self.resolve(r, root);
        self.chain.pop();
        out
    }

    fn resolve(&mut self, r: &str, root: &Value) -> Result<Value, ToolError> {
        let err = |reason: String| ToolError::Ref {
            reference: r.to_owned(),
            reason,
        };
        let (path, pointer) = r.split_once('#').unwrap_or((r, ""));
        // `#/…`, `./#/…`: inside this document.
        if path.is_empty() || path == "." || path == "./" {
            let target = pointed(root, pointer)
                .ok_or_else(|| err(format!("`#{pointer}` points at nothing in this document")))?;
            return self.node(&target.clone(), root);
        }
        let uri = SchemaUri::parse(path).map_err(|e| err(e.to_string()))?;
        let doc = self.docs.document(&uri).map_err(err)?;
        let doc = self.node(&doc, &doc)?;
        pointed(&doc, pointer)
            .cloned()
            .ok_or_else(|| err(format!("`#{pointer}` points at nothing in {path}")))
    }
}

/// Follows a JSON pointer (`/a/b`, `~0`/`~1` escapes); empty means the root.
pub fn pointed<'a>(root: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() || pointer == "/" {
        return Some(root);
    }
    let mut node = root;
    for raw in pointer.strip_prefix('/')?.split('/') {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        node = match node {
            Value::Object(m) => m.get(&seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}
