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
    /// A pattern over schema `$id`s or `title/version`s.
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
                    // A .yaml and a .json of one version carry the same schema; keep the first.
                    slot.entry(v).or_insert(file);
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
        if let Some(skips) = config.get("skipSchemaTestCases").and_then(Value::as_object) {
            for (pattern, cases) in skips {
                let anchored = format!("^/?(?:{})$", pattern.trim_start_matches('/'));
                let pattern = regex::Regex::new(&anchored).map_err(|e| {
                    format!("skipSchemaTestCases pattern `{pattern}` is not a regex: {e}")
                })?;
                let cases = cases
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                self.skip.push(SkipRule { pattern, cases });
            }
        }
        Ok(())
    }

    /// Whether `.jsonschema-tools.yaml` skips `case` for the schema `/title/version`.
    pub fn skips(&self, title: &str, version: Version, case: &str) -> bool {
        let id = format!("/{title}/{version}");
        self.skip
            .iter()
            .any(|r| r.cases.iter().any(|c| c == case) && r.pattern.is_match(&id))
    }

    /// Number of materialized versions.
    pub fn version_count(&self) -> usize {
        self.versions.values().map(BTreeMap::len).sum()
    }
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
                let meta = std::fs::metadata(&path)?;
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
