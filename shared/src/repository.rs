//! One schema repository in the jsonschema-tools layout, read from
//! `(path, bytes)` pairs that its host supplies: `jsonschema/<title>/<X.Y.Z>.yaml`
//! materialized versions, `current.yaml` sources and `.jsonschema-tools.yaml`
//! settings. Extensionless and `latest` copies are not read: they repeat a
//! materialized version, and `latest` is computed.

use crate::schema_uri::Version;
use serde_json::Value;
use std::collections::BTreeMap;

/// One schema document as loaded: a materialized version or a `current.yaml`.
#[derive(Debug, Clone)]
pub struct SchemaFile {
    /// Path inside the repository, with `/` separators.
    pub path: String,
    /// The parsed document.
    pub document: Value,
}

/// Per-schema exceptions from `.jsonschema-tools.yaml` `skipSchemaTestCases`.
#[derive(Debug, Clone)]
pub struct SkipRule {
    /// A pattern searched for in schema `$id`s (unanchored, as jsonschema-tools does).
    pub pattern: regex::Regex,
    /// The jsonschema-tools test case names skipped, e.g. `schema-deterministic-types`.
    pub cases: Vec<String>,
}

/// A repository's schemas, keyed by title then version.
#[derive(Debug, Clone, Default)]
pub struct SchemaRepository {
    /// Name used in messages and in the HTTP schema service.
    pub name: String,
    /// Materialized versions by title.
    pub versions: BTreeMap<String, BTreeMap<Version, SchemaFile>>,
    /// `current.yaml` sources by title.
    pub current: BTreeMap<String, SchemaFile>,
    /// Skipped test cases from `.jsonschema-tools.yaml`.
    pub skip: Vec<SkipRule>,
    /// Where schemas live inside the repository (`schemaBasePath`), e.g. `jsonschema/`.
    pub base_path: String,
    /// How the schema tools materialize this repository.
    pub tools: ToolsConfig,
}

/// The `.jsonschema-tools.yaml` settings that shape materialized files.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolsConfig {
    /// `contentTypes`: the file types written per version, the first one the
    /// target of the extensionless and `latest` links. Default `[yaml, json]`.
    pub content_types: Vec<String>,
    /// `enforcedNumericBounds`: `minimum`/`maximum` given to every number and
    /// integer field that lacks one. Default ±(2^53 − 1); `false` turns it off.
    pub numeric_bounds: Option<(f64, f64)>,
    /// `shouldGenerateExample`: give a schema with no `examples` a generated one.
    pub generate_example: bool,
    /// `shouldSymlinkExtensionless`: link `X.Y.Z` to `X.Y.Z.<first type>`.
    pub link_extensionless: bool,
    /// `shouldSymlinkLatest`: link `latest` and `latest.<type>` to the highest version.
    pub link_latest: bool,
}

/// The largest integer a JSON number holds exactly (2^53 − 1).
pub const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

impl Default for ToolsConfig {
    fn default() -> Self {
        ToolsConfig {
            content_types: vec!["yaml".to_owned(), "json".to_owned()],
            numeric_bounds: Some((-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)),
            generate_example: false,
            link_extensionless: true,
            link_latest: true,
        }
    }
}

/// A file that could not be read as part of a repository.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{repository}: {path}: {message}")]
pub struct RepositoryError {
    /// The repository's name.
    pub repository: String,
    /// The file's path inside it.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// Largest schema file read, so that a hostile repository cannot exhaust memory.
pub const MAX_SCHEMA_FILE_BYTES: usize = 8 * 1024 * 1024;

impl SchemaRepository {
    /// Reads a repository from its files; bad files are returned beside the repository.
    pub fn from_files<P, B>(
        name: &str,
        files: impl IntoIterator<Item = (P, B)>,
    ) -> (SchemaRepository, Vec<RepositoryError>)
    where
        P: AsRef<str>,
        B: AsRef<[u8]>,
    {
        let mut repo = SchemaRepository {
            name: name.to_owned(),
            base_path: "jsonschema/".to_owned(),
            ..Default::default()
        };
        let mut errors = Vec::new();
        let mut schema_files = Vec::new();
        for (path, bytes) in files {
            let path = path.as_ref().trim_start_matches("./").replace('\\', "/");
            if path == ".jsonschema-tools.yaml" {
                if let Err(message) = repo.read_tools_config(bytes.as_ref()) {
                    errors.push(repo.error(&path, message));
                }
            } else {
                schema_files.push((path, bytes));
            }
        }
        for (path, bytes) in schema_files {
            let bytes = bytes.as_ref();
            let Some(rel) = path.strip_prefix(repo.base_path.as_str()) else {
                continue;
            };
            let Some((title, file)) = rel.rsplit_once('/') else {
                continue;
            };
            let (stem, ext) = match file.rsplit_once('.') {
                Some((stem, ext)) if matches!(ext, "yaml" | "yml" | "json") => (stem, ext),
                _ => continue,
            };
            let version = Version::parse(stem);
            if version.is_none() && stem != "current" {
                continue;
            }
            if bytes.len() > MAX_SCHEMA_FILE_BYTES {
                errors
                    .push(repo.error(&path, format!("file is over {MAX_SCHEMA_FILE_BYTES} bytes")));
                continue;
            }
            let document = match parse_document(bytes, ext) {
                Ok(d) => d,
                Err(message) => {
                    errors.push(repo.error(&path, message));
                    continue;
                }
            };
            if !document.is_object() {
                errors.push(repo.error(&path, "a schema must be a YAML or JSON object".to_owned()));
                continue;
            }
            let file = SchemaFile {
                path: path.clone(),
                document,
            };
            match version {
                Some(v) => {
                    let slot = repo.versions.entry(title.to_owned()).or_default();
                    // A .yaml and a .json of one version carry the same schema; keep
                    // the YAML, the file people read and tools name first.
                    match slot.get(&v) {
                        Some(kept) if !(kept.path.ends_with(".json") && ext != "json") => {}
                        _ => {
                            slot.insert(v, file);
                        }
                    }
                }
                None => {
                    repo.current.insert(title.to_owned(), file);
                }
            }
        }
        (repo, errors)
    }

    fn error(&self, path: &str, message: String) -> RepositoryError {
        RepositoryError {
            repository: self.name.clone(),
            path: path.to_owned(),
            message,
        }
    }

    fn read_tools_config(&mut self, bytes: &[u8]) -> Result<(), String> {
        let config: Value = parse_document(bytes, "yaml")?;
        if let Some(base) = config.get("schemaBasePath").and_then(Value::as_str) {
            let base = base.trim_start_matches("./").trim_end_matches('/');
            self.base_path = if base.is_empty() {
                String::new()
            } else {
                format!("{base}/")
            };
        }
        if let Some(types) = config.get("contentTypes") {
            let types = strings(types);
            if types.is_empty() || types.iter().any(|t| t != "yaml" && t != "json") {
                return Err("contentTypes must be a non-empty list of yaml and json".to_owned());
            }
            self.tools.content_types = types;
        }
        match config.get("enforcedNumericBounds") {
            None => {}
            Some(Value::Bool(false)) | Some(Value::Null) => self.tools.numeric_bounds = None,
            Some(Value::Array(b)) if b.len() == 2 && b.iter().all(Value::is_number) => {
                let (lo, hi) = (b[0].as_f64(), b[1].as_f64());
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    self.tools.numeric_bounds = Some((lo, hi));
                }
            }
            Some(_) => {
                return Err(
                    "enforcedNumericBounds must be false or a [minimum, maximum] pair".to_owned(),
                );
            }
        }
        for (key, slot) in [
            ("shouldGenerateExample", &mut self.tools.generate_example),
            (
                "shouldSymlinkExtensionless",
                &mut self.tools.link_extensionless,
            ),
            ("shouldSymlinkLatest", &mut self.tools.link_latest),
        ] {
            match config.get(key) {
                None => {}
                Some(Value::Bool(b)) => *slot = *b,
                Some(_) => return Err(format!("{key} must be true or false")),
            }
        }
        if let Some(skips) = config.get("skipSchemaTestCases").and_then(Value::as_object) {
            for (pattern, cases) in skips {
                // jsonschema-tools searches `$id`s for these patterns, unanchored.
                let pattern = regex::Regex::new(pattern).map_err(|e| {
                    format!("skipSchemaTestCases pattern `{pattern}` is not a regex: {e}")
                })?;
                let cases = strings(cases);
                self.skip.push(SkipRule { pattern, cases });
            }
        }
        Ok(())
    }

    /// Whether `.jsonschema-tools.yaml` skips `case` for the schema `/title/version`.
    pub fn skips(&self, title: &str, version: Version, case: &str) -> bool {
        self.skips_id(&format!("/{title}/{version}"), case)
    }

    /// Whether `.jsonschema-tools.yaml` skips `case` for the schema whose
    /// `$id` is `id` (jsonschema-tools matches its patterns against `$id`s).
    pub fn skips_id(&self, id: &str, case: &str) -> bool {
        self.skip
            .iter()
            .any(|r| r.cases.iter().any(|c| c == case) && r.pattern.is_match(id))
    }

    /// Number of materialized versions.
    pub fn version_count(&self) -> usize {
        self.versions.values().map(BTreeMap::len).sum()
    }
}

/// The strings of a YAML list (anything else in it ignored).
fn strings(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// Parses a YAML or JSON schema document.
pub fn parse_document(bytes: &[u8], ext: &str) -> Result<Value, String> {
    use serde::de::DeserializeSeed;
    if ext == "json" {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        return crate::json::StrictSeed
            .deserialize(&mut de)
            .and_then(|v| de.end().map(|()| v))
            .map_err(|e| format!("not valid JSON: {e}"));
    }
    crate::json::StrictSeed
        .deserialize(serde_yaml_ng::Deserializer::from_slice(bytes))
        .map_err(|e| format!("not valid YAML: {e}"))
}

/// Reading repositories from directories on disk.
#[cfg(feature = "fs")]
pub mod fs {
    use super::{RepositoryError, SchemaRepository};
    use std::path::{Path, PathBuf};

    /// Reads every file under `dir` (following links) as `(relative path, bytes)`.
    pub fn read_tree(dir: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let path = entry?.path();
                let meta = match std::fs::metadata(&path) {
                    Ok(m) => m,
                    // A dangling link (say `latest.json` to a deleted file) is not a
                    // schema; the lint reports the missing file.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file() {
                    let rel = path.strip_prefix(dir).unwrap_or(&path);
                    let rel = rel.to_string_lossy().replace('\\', "/");
                    if is_wanted(&rel) {
                        out.push((rel, std::fs::read(&path)?));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn is_wanted(rel: &str) -> bool {
        let file = rel.rsplit('/').next().unwrap_or(rel);
        file.ends_with(".yaml") || file.ends_with(".yml") || file.ends_with(".json")
    }

    /// Reads repository folders and the stream config into a bundle.
    pub fn read_bundle(
        repositories: &[std::path::PathBuf],
        streams: String,
    ) -> std::io::Result<crate::Bundle> {
        let mut repos = Vec::new();
        for dir in repositories {
            let name = dir
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "repository".to_owned());
            let files = read_tree(dir)?
                .into_iter()
                .filter_map(|(path, bytes)| String::from_utf8(bytes).ok().map(|text| (path, text)))
                .collect();
            repos.push(crate::BundleRepository { name, files });
        }
        Ok(crate::Bundle {
            streams,
            repositories: repos,
        })
    }

    /// Loads the repository at `dir`, named after its folder.
    pub fn load_dir(dir: &Path) -> std::io::Result<(SchemaRepository, Vec<RepositoryError>)> {
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "repository".to_owned());
        let files = read_tree(dir)?;
        Ok(SchemaRepository::from_files(&name, files))
    }
}
