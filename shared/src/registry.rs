//! The schema registry: an ordered list of repositories, every materialized
//! version compiled once, `$schema` URIs resolved against them in order, and
//! `$ref`s resolved only to documents of those repositories.

use crate::FastMap;
use crate::fast_check::{FastSchema, KeywordCache};
use crate::repository::SchemaRepository;
use crate::schema_uri::{SchemaUri, SchemaUriError, Version, VersionSpec};
use crate::tape::Tape;
use crate::tape_json::{TapeJson, TapeNode};
use crate::validation::{SchemaViolation, Violations};
use jsonschema::{Draft, Retrieve, Uri, Validator};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Base URI that relative schema `$id`s and `$ref`s are resolved against.
/// The `.invalid` domain never resolves, and the retriever refuses every other host.
pub const BASE_URI: &str = "https://schemas.sluice.invalid";

/// A compiled schema version.
#[derive(Debug)]
pub struct CompiledSchema {
    /// `/title/version`; shared by the accepted events that name their schema by it.
    pub uri: Arc<str>,
    /// Title, e.g. `analytics/test`.
    pub title: String,
    /// Version.
    pub version: Version,
    /// Name of the repository it came from.
    pub repository: String,
    /// Path of the file inside that repository.
    pub path: String,
    /// The schema document.
    pub document: Arc<Value>,
    validator: Validator<TapeJson>,
    /// Checks that pass most valid events without the full validator.
    fast: Option<FastSchema>,
}

impl CompiledSchema {
    /// Validates an event on a tape; on failure returns every violation found.
    pub fn validate_node(&self, event: TapeNode<'_>) -> Result<(), Violations> {
        if let (Some(fast), TapeNode::At(tape, node)) = (&self.fast, event)
            && fast.passes(tape, node)
        {
            return Ok(());
        }
        if self.validator.is_valid(event) {
            return Ok(());
        }
        Err(Violations(
            self.validator
                .iter_errors(event)
                .map(|e| SchemaViolation::from_error(&e))
                .collect(),
        ))
    }

    /// Validates an event given as a value (off the hot path: it is re-encoded first).
    pub fn validate(&self, event: &Value) -> Result<(), Violations> {
        let text = event.to_string();
        match Tape::parse(&text) {
            Ok(tape) => self.validate_node(TapeNode::new(&tape, 0)),
            Err(e) => Err(Violations(vec![SchemaViolation {
                instance_path: String::new(),
                schema_path: String::new(),
                keyword: "type".to_owned(),
                message: format!("the value cannot be validated: {e}"),
            }])),
        }
    }

    /// Whether the schema declares the property at `path` (object keys from the root),
    /// by name or, in a map type, through `additionalProperties`.
    pub fn has_property(&self, path: &[impl AsRef<str>]) -> bool {
        let mut node = self.document.as_ref();
        for key in path {
            let named = node.get("properties").and_then(|p| p.get(key.as_ref()));
            let map_values = node.get("additionalProperties").filter(|a| a.is_object());
            match named.or(map_values) {
                Some(next) => node = next,
                None => return false,
            }
        }
        true
    }
}

/// A schema that could not be loaded or compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{repository}: {path}: {message}")]
pub struct SchemaLoadError {
    /// The repository's name.
    pub repository: String,
    /// The file's path inside it.
    pub path: String,
    /// What went wrong, naming any `$ref` that failed.
    pub message: String,
}

/// Why a `$schema` URI does not resolve to a loaded schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Not a repository URI at all.
    #[error(transparent)]
    Uri(#[from] SchemaUriError),
    /// No repository has that title.
    #[error("no schema titled `{0}` is loaded")]
    UnknownTitle(String),
    /// The title exists but not at that version.
    #[error("schema `{title}` has no version {version} (latest is {latest})")]
    UnknownVersion {
        /// The title.
        title: String,
        /// The version asked for.
        version: Version,
        /// The latest loaded.
        latest: Version,
    },
}

/// All loaded schemas, compiled.
#[derive(Debug, Default)]
pub struct SchemaRegistry {
    schemas: FastMap<String, BTreeMap<Version, Arc<CompiledSchema>>>,
    /// Every version by its canonical URI `/title/X.Y.Z`, the form events use.
    by_uri: FastMap<String, Arc<CompiledSchema>>,
}

impl SchemaRegistry {
    /// Compiles every materialized version of `repos`; the first repository
    /// holding a title and version wins. Returns the registry of what compiled
    /// and an error for each version that did not.
    pub fn load(repos: &[SchemaRepository]) -> (SchemaRegistry, Vec<SchemaLoadError>) {
        let documents = Arc::new(Documents::new(repos));
        let mut registry = SchemaRegistry::default();
        let mut errors = Vec::new();
        let mut keywords = KeywordCache::new();
        for repo in repos {
            for (title, versions) in &repo.versions {
                for (version, file) in versions {
                    let slot = registry.schemas.entry(title.clone()).or_default();
                    if slot.contains_key(version) {
                        continue;
                    }
                    match compile(&documents, title, *version, &file.document) {
                        Ok(validator) => {
                            slot.insert(
                                *version,
                                Arc::new(CompiledSchema {
                                    uri: format!("/{title}/{version}").into(),
                                    title: title.clone(),
                                    version: *version,
                                    repository: repo.name.clone(),
                                    path: file.path.clone(),
                                    document: Arc::new(file.document.clone()),
                                    validator,
                                    fast: FastSchema::compile(&file.document, &mut keywords),
                                }),
                            );
                        }
                        Err(message) => errors.push(SchemaLoadError {
                            repository: repo.name.clone(),
                            path: file.path.clone(),
                            message,
                        }),
                    }
                }
            }
        }
        registry.schemas.retain(|_, v| !v.is_empty());
        registry.by_uri = registry
            .iter()
            .map(|s| (s.uri.to_string(), s.clone()))
            .collect();
        // A schema whose `$id` names another path (Wikimedia's development/webrequest
        // says `/webrequest/1.0.0`) is also found by its `$id`, as its events name it,
        // unless that URI is a schema's own path.
        let aliases: Vec<(String, Arc<CompiledSchema>)> = registry
            .iter()
            .filter_map(|s| {
                let id = s.document.get("$id")?.as_str()?;
                let id = id.strip_suffix('#').unwrap_or(id);
                (id != &*s.uri && SchemaUri::parse(id).is_ok()).then(|| (id.to_owned(), s.clone()))
            })
            .collect();
        for (id, schema) in aliases {
            registry.by_uri.entry(id).or_insert(schema);
        }
        (registry, errors)
    }

    /// Compiles a schema document that is not itself a loaded version, such as
    /// a `current.yaml`, resolving its `$ref`s against `repos`.
    pub fn compile_document(
        repos: &[SchemaRepository],
        title: &str,
        version: Version,
        document: &Value,
    ) -> Result<(), String> {
        let documents = Documents::new(repos);
        compile(&Arc::new(documents), title, version, document).map(|_| ())
    }

    /// Compiles one schema document on its own (a materialized file not yet
    /// written, say), resolving its `$ref`s against `repos`.
    pub fn compile_standalone(
        repos: &[SchemaRepository],
        title: &str,
        version: Version,
        document: &Value,
    ) -> Result<CompiledSchema, String> {
        let documents = Arc::new(Documents::new(repos));
        let validator = compile(&documents, title, version, document)?;
        Ok(CompiledSchema {
            uri: format!("/{title}/{version}").into(),
            title: title.to_owned(),
            version,
            repository: String::new(),
            path: String::new(),
            document: Arc::new(document.clone()),
            validator,
            fast: FastSchema::compile(document, &mut KeywordCache::new()),
        })
    }

    /// Resolves a `$schema` URI to a compiled schema.
    pub fn resolve(&self, uri: &str) -> Result<&Arc<CompiledSchema>, ResolveError> {
        if let Some(schema) = self.by_uri.get(uri) {
            return Ok(schema);
        }
        let parsed = SchemaUri::parse(uri)?;
        self.get(&parsed)
    }

    /// Looks up a parsed URI.
    pub fn get(&self, uri: &SchemaUri) -> Result<&Arc<CompiledSchema>, ResolveError> {
        let versions = self
            .schemas
            .get(&uri.title)
            .ok_or_else(|| ResolveError::UnknownTitle(uri.title.clone()))?;
        let latest = versions.iter().next_back().map(|(_, s)| s);
        match uri.version {
            VersionSpec::Latest => {
                latest.ok_or_else(|| ResolveError::UnknownTitle(uri.title.clone()))
            }
            VersionSpec::Exact(v) => versions
                .get(&v)
                .ok_or_else(|| ResolveError::UnknownVersion {
                    title: uri.title.clone(),
                    version: v,
                    latest: latest.map(|s| s.version).unwrap_or(v),
                }),
        }
    }

    /// Every compiled schema, by title then version.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<CompiledSchema>> {
        self.schemas.values().flat_map(BTreeMap::values)
    }

    /// Number of compiled versions.
    pub fn len(&self) -> usize {
        self.schemas.values().map(BTreeMap::len).sum()
    }

    /// Whether nothing compiled.
    pub fn is_empty(&self) -> bool {
        self.schemas.is_empty()
    }
}

/// Every document of the repositories by `/title/version`, for `$ref` resolution.
struct Documents {
    by_uri: HashMap<String, Value>,
    latest: HashMap<String, Version>,
}

impl Documents {
    fn new(repos: &[SchemaRepository]) -> Self {
        let mut by_uri = HashMap::new();
        let mut latest: HashMap<String, Version> = HashMap::new();
        for repo in repos {
            for (title, versions) in &repo.versions {
                for (version, file) in versions {
                    by_uri
                        .entry(format!("/{title}/{version}"))
                        .or_insert_with(|| normalize_draft(&file.document));
                    let l = latest.entry(title.clone()).or_insert(*version);
                    *l = (*l).max(*version);
                }
            }
        }
        Documents { by_uri, latest }
    }
}

struct RepoRetriever(Arc<Documents>);

impl Retrieve for RepoRetriever {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let text = uri.as_str();
        let outside = || -> Box<dyn std::error::Error + Send + Sync> {
            format!("`{text}` is outside the loaded schema repositories; only /<title>/<version> paths in them resolve").into()
        };
        let path = text.strip_prefix(BASE_URI).ok_or_else(outside)?;
        let parsed = SchemaUri::parse(path).map_err(|e| e.to_string())?;
        let version = match parsed.version {
            VersionSpec::Exact(v) => v,
            VersionSpec::Latest => *self.0.latest.get(&parsed.title).ok_or_else(outside)?,
        };
        self.0
            .by_uri
            .get(&format!("/{}/{}", parsed.title, version))
            .cloned()
            .ok_or_else(|| format!("`{path}` is not in the loaded schema repositories").into())
    }
}

/// Draft-07 is declared as `https://json-schema.org/draft-07/schema#` in many
/// repositories; the canonical meta-schema URI is `http://`. Point both at the
/// built-in draft so that no meta-schema is ever fetched.
fn normalize_draft(document: &Value) -> Value {
    let mut doc = document.clone();
    if let Some(obj) = doc.as_object_mut() {
        obj.insert(
            "$schema".to_owned(),
            Value::String("http://json-schema.org/draft-07/schema#".to_owned()),
        );
    }
    doc
}

fn compile(
    documents: &Arc<Documents>,
    title: &str,
    version: Version,
    document: &Value,
) -> Result<Validator<TapeJson>, String> {
    let doc = normalize_draft(document);
    jsonschema::options_for::<TapeJson>()
        .with_draft(Draft::Draft7)
        .with_base_uri(format!("{BASE_URI}/{title}/{version}"))
        .with_retriever(RepoRetriever(documents.clone()))
        .should_validate_formats(true)
        .build(&doc)
        .map_err(|e| format!("schema does not compile: {e}"))
}

/// The fast path against the full validator on Wikimedia's repositories: every
/// example and many broken copies of it (each value swapped for values of other
/// types and sizes, each member removed, a member added to each object). The
/// fast path may never pass an event the full validator refuses, and it must
/// pass the valid ones, or it saves nothing.
#[cfg(all(test, feature = "fs"))]
mod fast_path_agreement {
    use super::*;
    use crate::repository::fs;
    use serde_json::json;
    use std::path::Path;

    /// Copies of `event` with one change each.
    fn mutations(event: &Value) -> Vec<Value> {
        let swaps = [
            json!(null),
            json!(true),
            json!(-1),
            json!(0),
            json!(1.5),
            json!(9007199254740993_u64),
            json!(-9007199254740993_i64),
            json!(""),
            json!("x"),
            json!("2026-11-27T12:00:00Z"),
            json!("Kafka_(software)"),
            json!("x".repeat(300)),
            json!([]),
            json!(["x", 1]),
            json!({}),
            json!({"k": "v"}),
        ];
        let mut out = Vec::new();
        let mut paths = Vec::new();
        collect_paths(event, &mut Vec::new(), &mut paths);
        for path in &paths {
            for swap in &swaps {
                let mut copy = event.clone();
                if let Some(slot) = pointer_mut(&mut copy, path) {
                    *slot = swap.clone();
                    out.push(copy);
                }
            }
            if let Some((last, parent)) = path.split_last() {
                let mut copy = event.clone();
                if let Some(Value::Object(o)) = pointer_mut(&mut copy, parent) {
                    o.remove(last);
                    out.push(copy);
                }
            }
            let mut copy = event.clone();
            if let Some(Value::Object(o)) = pointer_mut(&mut copy, path) {
                o.insert("zz_added".into(), json!(1));
                out.push(copy);
            }
        }
        out
    }

    fn collect_paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(at.clone());
        match v {
            Value::Object(o) => {
                for (k, child) in o {
                    at.push(k.clone());
                    collect_paths(child, at, out);
                    at.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    at.push(i.to_string());
                    collect_paths(child, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }

    fn pointer_mut<'v>(v: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
        path.iter().try_fold(v, |node, key| match node {
            Value::Object(o) => o.get_mut(key),
            Value::Array(items) => items.get_mut(key.parse::<usize>().ok()?),
            _ => None,
        })
    }

    #[test]
    fn the_fast_path_never_passes_what_the_full_validator_refuses() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/wmf-schemas");
        let corpus = std::env::var_os("SLUICE_CORPUS").map_or(corpus, Into::into);
        let repos: Vec<SchemaRepository> = ["primary", "secondary"]
            .iter()
            .map(|name| {
                fs::load_dir(&corpus.join(name))
                    .expect("the corpus is readable")
                    .0
            })
            .collect();
        let (registry, errors) = SchemaRegistry::load(&repos);
        assert!(errors.is_empty(), "{errors:?}");
        let (mut with_fast, mut events, mut valid, mut fast_passed) = (0, 0, 0, 0);
        for schema in registry.iter() {
            let Some(fast) = &schema.fast else {
                continue;
            };
            with_fast += 1;
            let examples = schema.document.get("examples").and_then(Value::as_array);
            for example in examples.into_iter().flatten() {
                for event in std::iter::once(example.clone()).chain(mutations(example)) {
                    let text = event.to_string();
                    let tape = Tape::parse(&text).expect("a serialized value parses");
                    let full = schema.validator.is_valid(TapeNode::new(&tape, 0));
                    let quick = fast.passes(&tape, 0);
                    assert!(
                        full || !quick,
                        "{}: the fast path passed an event the full validator refuses: {text}",
                        schema.uri
                    );
                    events += 1;
                    valid += usize::from(full);
                    fast_passed += usize::from(quick);
                }
            }
        }
        // Every materialized version of the corpus has a fast path, and it passes
        // nearly every valid event by itself.
        assert_eq!(with_fast, registry.len());
        assert!(events > 100_000, "{events} events");
        assert!(
            fast_passed * 100 >= valid * 99,
            "the fast path passed {fast_passed} of {valid} valid events"
        );
    }
}
