//! What the console knows of the schemas: the repositories as loaded from
//! the bundle the aggregator serves, and the intake pipeline over them, so a
//! pasted event (or an invalid one from the error stream) gets the verdict
//! an edge gives. Rebuilt whole on reload.

use sluice_shared::{
    Bundle, EventIds, EventOutcome, Intake, IntakeOptions, RequestMeta, SchemaFile,
    SchemaRepository, Timestamp, Version,
};
use std::sync::{Arc, Mutex};

/// Schemas and the pipeline over them.
pub struct Catalog {
    /// The repositories, in resolution order.
    pub repos: Vec<SchemaRepository>,
    /// The edge's pipeline, or why the bundle does not load.
    intake: Result<Intake, String>,
    ids: Mutex<EventIds>,
}

impl Catalog {
    /// The catalog of `bundle`.
    pub fn new(bundle: &Bundle) -> Self {
        let (repos, _) = bundle.repositories();
        let intake = bundle
            .load()
            .map(|(registry, streams)| {
                Intake::new(
                    Arc::new(registry),
                    Arc::new(streams),
                    IntakeOptions::default(),
                )
            })
            .map_err(|e| e.to_string());
        Catalog {
            repos,
            intake,
            ids: Mutex::new(EventIds::with_seed(u64::from(std::process::id()))),
        }
    }

    /// The repository named `name`.
    pub fn repo(&self, name: &str) -> Option<&SchemaRepository> {
        self.repos.iter().find(|r| r.name == name)
    }

    /// A materialized version's document.
    pub fn version(&self, repo: &str, title: &str, version: &str) -> Option<&SchemaFile> {
        let v = Version::parse(version)?;
        self.repo(repo)?.versions.get(title)?.get(&v)
    }

    /// Runs `body` through the edge's pipeline at `now`, with the request's
    /// `stream` and `schema_uri` parameters; nothing is sent anywhere.
    pub fn check(
        &self,
        body: &[u8],
        stream: Option<String>,
        schema_uri: Option<String>,
        now: Timestamp,
    ) -> Result<Vec<EventOutcome>, String> {
        let intake = self.intake.as_ref().map_err(Clone::clone)?;
        let req = RequestMeta {
            headers: vec![("user-agent".into(), "sluice-console".into())],
            stream,
            schema_uri,
            client_ip: Some("127.0.0.1".into()),
            received: now,
        };
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        intake
            .process(&req, body, &mut ids)
            .map_err(|e| e.to_string())
    }
}
