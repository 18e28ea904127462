//! The bundle an aggregator serves to edges: the stream config and every
//! schema repository file, in one JSON document that an edge (a Worker
//! included) turns back into a registry and a stream config with no file
//! system.

use crate::registry::{SchemaLoadError, SchemaRegistry};
use crate::repository::{RepositoryError, SchemaRepository};
use crate::stream_config::{StreamConfig, StreamConfigError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Stream config and schema repositories, as served at `/v1/bundle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// The stream config text (YAML or JSON).
    pub streams: String,
    /// The repositories, in resolution order.
    pub repositories: Vec<BundleRepository>,
}

/// One repository's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRepository {
    /// The repository's name.
    pub name: String,
    /// Path inside the repository → file text.
    pub files: BTreeMap<String, String>,
}

/// A bundle that does not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// A file of a repository is unusable.
    #[error("bundle: {0}")]
    Repository(#[from] RepositoryError),
    /// A schema does not compile.
    #[error("bundle: {0}")]
    Schema(#[from] SchemaLoadError),
    /// The stream config is wrong.
    #[error("bundle: stream config: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Streams(Vec<StreamConfigError>),
}

impl Bundle {
    /// The repositories as loaded, and any file that could not be read.
    pub fn repositories(&self) -> (Vec<SchemaRepository>, Vec<RepositoryError>) {
        let mut repos = Vec::new();
        let mut errors = Vec::new();
        for r in &self.repositories {
            let (repo, errs) = SchemaRepository::from_files(
                &r.name,
                r.files.iter().map(|(p, t)| (p.as_str(), t.as_bytes())),
            );
            repos.push(repo);
            errors.extend(errs);
        }
        (repos, errors)
    }

    /// Compiles the bundle; any bad file, schema or stream setting refuses it whole,
    /// so a host keeps its previous bundle rather than run on half of a new one.
    pub fn load(&self) -> Result<(SchemaRegistry, StreamConfig), BundleError> {
        let (repos, errors) = self.repositories();
        if let Some(e) = errors.into_iter().next() {
            return Err(e.into());
        }
        let (registry, errors) = SchemaRegistry::load(&repos);
        if let Some(e) = errors.into_iter().next() {
            return Err(e.into());
        }
        let streams = StreamConfig::parse(&self.streams).map_err(BundleError::Streams)?;
        Ok((registry, streams))
    }
}
