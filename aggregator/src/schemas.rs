//! The schema service: repository files at
//! `/repositories/<name>/<path>` (`.json` answered from the YAML when only
//! that exists) and the whole bundle at `/v1/bundle` with an ETag. Files are
//! read once at start into memory, so no request can make the aggregator
//! open a path it names.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sluice_shared::Live;
use sluice_shared::{Bundle, BundleRepository, parse_document};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the schema service serves; replaced whole on reload.
#[derive(Clone)]
pub struct SchemaService(Live<Served>);

/// One bundle, ready to serve.
struct Served {
    bundle_json: Arc<str>,
    etag: Arc<str>,
    files: BTreeMap<String, BTreeMap<String, String>>,
}

impl SchemaService {
    /// Serves `bundle`.
    pub fn new(bundle: &Bundle) -> Self {
        SchemaService(Live::new(Served::new(bundle)))
    }

    /// Serves `bundle` from now on.
    pub fn replace(&self, bundle: &Bundle) {
        self.0.set(Served::new(bundle));
    }

    /// The ETag of the bundle being served.
    pub fn etag(&self) -> String {
        self.0.get().etag.to_string()
    }

    /// The routes: `GET /v1/bundle` and `GET /repositories/{name}/{*path}`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/bundle", get(bundle))
            .route("/repositories/{name}/{*path}", get(file))
            .with_state(self)
    }
}

impl Served {
    fn new(bundle: &Bundle) -> Self {
        let bundle_json = serde_json::to_string(bundle).unwrap_or_else(|_| "{}".to_owned());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(bundle_json.as_bytes());
        let etag = format!("\"{:08x}-{:x}\"", hasher.finalize(), bundle_json.len());
        let files = bundle
            .repositories
            .iter()
            .map(|r: &BundleRepository| (r.name.clone(), r.files.clone()))
            .collect();
        Served {
            bundle_json: Arc::from(bundle_json),
            etag: Arc::from(etag),
            files,
        }
    }
}

async fn bundle(State(svc): State<SchemaService>, headers: HeaderMap) -> Response {
    let svc = svc.0.get();
    let etag =
        HeaderValue::from_str(&svc.etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == svc.etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag),
        ],
        svc.bundle_json.to_string(),
    )
        .into_response()
}

async fn file(
    State(svc): State<SchemaService>,
    Path((name, path)): Path<(String, String)>,
) -> Response {
    let svc = svc.0.get();
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            format!("no file {path} in repository {name}\n"),
        )
            .into_response()
    };
    let Some(files) = svc.files.get(&name) else {
        return not_found();
    };
    if let Some(text) = files.get(&path) {
        let kind = if path.ends_with(".json") {
            "application/json"
        } else {
            "application/yaml"
        };
        return (StatusCode::OK, [(header::CONTENT_TYPE, kind)], text.clone()).into_response();
    }
    // `…/1.0.0` and `…/1.0.0.json` are answered from `…/1.0.0.yaml`, as the schema service does.
    let stem = path.strip_suffix(".json").unwrap_or(&path);
    let Some(yaml) = files.get(&format!("{stem}.yaml")) else {
        return not_found();
    };
    if path.ends_with(".json") {
        return match parse_document(yaml.as_bytes(), "yaml") {
            Ok(doc) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                doc.to_string(),
            )
                .into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        };
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/yaml")],
        yaml.clone(),
    )
        .into_response()
}

pub use sluice_shared::fs::read_bundle as bundle_from_disk;
