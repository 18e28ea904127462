//! The schema versions a connector lays tables out from: read from the
//! repository folders the aggregator serves, again when an event names a
//! version not seen yet (a new minor version deployed since the start).

use serde_json::Value;
use sluice_shared::{SchemaUri, Version, VersionSpec};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reading the folders again at most this often.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// A schema an event names and the repositories do not give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaMiss {
    /// The name itself is wrong: no repository will ever hold it.
    Wrong(String),
    /// Not there (yet), or the repositories cannot be read now.
    Missing(String),
}

/// Materialized schema versions by title.
pub struct Schemas {
    dirs: Vec<PathBuf>,
    versions: BTreeMap<String, BTreeMap<Version, Arc<Value>>>,
    loaded: Instant,
    /// Answers given, by the URI as events name it. An exact version never changes;
    /// a URI without one names the latest known when it was first asked (a reload clears this).
    found: HashMap<String, (String, Arc<Value>)>,
}

impl Schemas {
    /// Loads `dirs` (the first repository holding a title and version wins).
    pub fn load(dirs: Vec<PathBuf>) -> Result<Schemas, String> {
        let mut s = Schemas {
            dirs,
            versions: BTreeMap::new(),
            loaded: Instant::now(),
            found: HashMap::new(),
        };
        s.reload()?;
        Ok(s)
    }

    fn reload(&mut self) -> Result<(), String> {
        let mut versions: BTreeMap<String, BTreeMap<Version, Arc<Value>>> = BTreeMap::new();
        for dir in &self.dirs {
            let (repo, errors) = sluice_shared::fs::load_dir(dir)
                .map_err(|e| format!("cannot read the schema repository {}: {e}", dir.display()))?;
            for e in errors {
                tracing::warn!(error = %e, "A schema file cannot be read; its version is left out.");
            }
            for (title, by_version) in repo.versions {
                let slot = versions.entry(title).or_default();
                for (v, file) in by_version {
                    slot.entry(v).or_insert_with(|| Arc::new(file.document));
                }
            }
        }
        self.versions = versions;
        self.loaded = Instant::now();
        self.found.clear();
        Ok(())
    }

    /// The latest version of `title` and its URI.
    pub fn latest(&self, title: &str) -> Option<(String, Arc<Value>)> {
        let (v, doc) = self.versions.get(title)?.iter().next_back()?;
        Some((format!("/{title}/{v}"), doc.clone()))
    }

    /// The schema `uri` names, reading the folders again (at most every
    /// second) when it is not known yet.
    pub fn get(&mut self, uri: &str) -> Result<(String, Arc<Value>), SchemaMiss> {
        if let Some(found) = self.found.get(uri) {
            return Ok(found.clone());
        }
        let found = self.look_up(uri)?;
        self.found.insert(uri.to_owned(), found.clone());
        Ok(found)
    }

    fn look_up(&mut self, uri: &str) -> Result<(String, Arc<Value>), SchemaMiss> {
        let parsed = SchemaUri::parse(uri)
            .map_err(|e| SchemaMiss::Wrong(format!("the schema URI `{uri}` is wrong: {e}")))?;
        if let Some(found) = self.find(&parsed) {
            return Ok(found);
        }
        if self.loaded.elapsed() >= RELOAD_EVERY {
            self.reload().map_err(SchemaMiss::Missing)?;
            if let Some(found) = self.find(&parsed) {
                return Ok(found);
            }
        }
        Err(SchemaMiss::Missing(format!(
            "schema `{uri}` is not in the schema repositories"
        )))
    }

    fn find(&self, uri: &SchemaUri) -> Option<(String, Arc<Value>)> {
        match uri.version {
            VersionSpec::Latest => self.latest(&uri.title),
            VersionSpec::Exact(v) => {
                let doc = self.versions.get(&uri.title)?.get(&v)?;
                Some((format!("/{}/{v}", uri.title), doc.clone()))
            }
        }
    }
}
