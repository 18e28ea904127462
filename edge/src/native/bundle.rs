//! Where the native edge's schemas and stream config come from: an
//! aggregator's `/v1/bundle` (fetched again every `refresh_secs` with
//! `If-None-Match`, so an unchanged bundle costs a 304) or local files. A
//! bundle that does not load is refused whole and the one in use kept.

use super::config::BundleConfig;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use sluice_shared::{Bundle, Intake, IntakeOptions, Live};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Why a bundle could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BundleFetchError {
    /// The URL is not `http://host:port/path`.
    #[error("bundle.url `{0}` is not an http:// URL with a host and port")]
    Url(String),
    /// The request failed.
    #[error("fetching {url}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// Local files could not be read.
    #[error("reading the local bundle: {0}")]
    Files(String),
    /// The bundle does not load.
    #[error(transparent)]
    Load(#[from] sluice_shared::BundleError),
}

/// Largest bundle taken.
const MAX_BUNDLE_BYTES: usize = 256 * 1024 * 1024;

/// Fetches the bundle at `url` unless its ETag is still `etag`: `None` when unchanged.
pub async fn fetch(
    url: &str,
    etag: Option<&str>,
) -> Result<Option<(Bundle, Option<String>)>, BundleFetchError> {
    let err = |message: String| BundleFetchError::Http {
        url: url.to_owned(),
        message,
    };
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| BundleFetchError::Url(url.to_owned()))?;
    if uri.scheme_str() != Some("http") {
        return Err(BundleFetchError::Url(url.to_owned()));
    }
    let host = uri
        .host()
        .ok_or_else(|| BundleFetchError::Url(url.to_owned()))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| err("no connection within 5 s".into()))?
    .map_err(|e| err(e.to_string()))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| err(e.to_string()))?;
    tokio::spawn(conn);
    let mut request = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, format!("{host}:{port}"));
    if let Some(tag) = etag {
        request = request.header(hyper::header::IF_NONE_MATCH, tag);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| err(e.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .map_err(|_| err("no answer within 30 s".into()))?
        .map_err(|e| err(e.to_string()))?;
    match response.status() {
        hyper::StatusCode::NOT_MODIFIED => return Ok(None),
        hyper::StatusCode::OK => {}
        other => return Err(err(format!("answered {other}"))),
    }
    let new_tag = response
        .headers()
        .get(hyper::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(response.into_body(), MAX_BUNDLE_BYTES)
        .collect()
        .await
        .map_err(|e| err(e.to_string()))?
        .to_bytes();
    let bundle: Bundle =
        serde_json::from_slice(&body).map_err(|e| err(format!("not a bundle: {e}")))?;
    Ok(Some((bundle, new_tag)))
}

/// Reads the bundle from local files.
pub fn from_files(config: &BundleConfig) -> Result<Bundle, BundleFetchError> {
    let streams_path = config
        .streams
        .as_ref()
        .ok_or_else(|| BundleFetchError::Files("bundle.streams is not set".into()))?;
    let streams = std::fs::read_to_string(streams_path)
        .map_err(|e| BundleFetchError::Files(format!("{}: {e}", streams_path.display())))?;
    sluice_shared::fs::read_bundle(&config.repositories, streams)
        .map_err(|e| BundleFetchError::Files(e.to_string()))
}

/// Builds the intake pipeline of a bundle.
pub fn intake(bundle: &Bundle, options: &IntakeOptions) -> Result<Intake, BundleFetchError> {
    let (registry, streams) = bundle.load()?;
    Ok(Intake::new(
        Arc::new(registry),
        Arc::new(streams),
        options.clone(),
    ))
}

/// Keeps the last bundle fetched, so that an edge can start while no aggregator answers.
fn save_cache(cache: &Path, bundle: &Bundle) {
    let tmp = cache.with_extension("json.tmp");
    let written = serde_json::to_vec(bundle)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, cache));
    if let Err(e) = written {
        tracing::warn!(path = %cache.display(), error = %e, "Cannot keep a copy of the bundle; a restart will need an aggregator.");
    }
}

fn load_cache(cache: &Path, options: &IntakeOptions) -> Option<Intake> {
    let bytes = std::fs::read(cache).ok()?;
    let bundle: Bundle = serde_json::from_slice(&bytes).ok()?;
    intake(&bundle, options).ok()
}

/// Loads the first bundle: from files; or from the aggregator, falling back
/// to the copy kept in `cache` from an earlier run, else retrying every
/// second (and saying so) until one answers or `give_up` passes.
pub async fn first(
    config: &BundleConfig,
    options: &IntakeOptions,
    cache: &Path,
    give_up: Duration,
) -> Result<(Intake, Option<String>), BundleFetchError> {
    if !config.repositories.is_empty() {
        return Ok((intake(&from_files(config)?, options)?, None));
    }
    let start = tokio::time::Instant::now();
    loop {
        match fetch(&config.url, None).await {
            Ok(Some((bundle, tag))) => {
                let loaded = intake(&bundle, options)?;
                save_cache(cache, &bundle);
                return Ok((loaded, tag));
            }
            Ok(None) => {}
            Err(e) if let Some(kept) = load_cache(cache, options) => {
                tracing::warn!(error = %e, path = %cache.display(), "No aggregator answers; starting from the bundle kept from an earlier run.");
                return Ok((kept, None));
            }
            Err(e) if start.elapsed() < give_up => {
                tracing::warn!(error = %e, "Waiting for the aggregator's bundle; retrying in a second.");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Refreshes `live` every `refresh_secs` until the task is dropped.
pub async fn refresh(
    config: BundleConfig,
    options: IntakeOptions,
    live: Live<Intake>,
    mut etag: Option<String>,
    cache: std::path::PathBuf,
) {
    let every = Duration::from_secs(config.refresh_secs.max(1));
    let mut last_files: Option<Bundle> = None;
    loop {
        tokio::time::sleep(every).await;
        let fresh = if config.repositories.is_empty() {
            fetch(&config.url, etag.as_deref()).await.map(|r| {
                r.map(|(b, tag)| {
                    etag = tag;
                    b
                })
            })
        } else {
            // Files unchanged since the last read are not compiled again.
            let c = config.clone();
            off_runtime(move || from_files(&c)).await.map(|b| {
                let changed = last_files.as_ref() != Some(&b);
                last_files = Some(b.clone());
                changed.then_some(b)
            })
        };
        let from_aggregator = config.repositories.is_empty();
        // Compiling a repository takes a while: off the threads that answer requests.
        let compiled = match fresh {
            Ok(Some(b)) => {
                let options = options.clone();
                off_runtime(move || intake(&b, &options).map(|i| Some((i, b)))).await
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match compiled {
            Ok(Some((intake, bundle))) => {
                if from_aggregator {
                    save_cache(&cache, &bundle);
                }
                live.set(intake);
                tracing::debug!("Refreshed schemas and stream config.");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Kept the schemas and stream config in use: the new ones are unusable.")
            }
        }
    }
}

/// Runs blocking work (file reads, schema compilation) on tokio's blocking pool.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BundleFetchError> + Send + 'static,
) -> Result<T, BundleFetchError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(BundleFetchError::Files(format!(
            "the reload task failed: {e}"
        )))
    })
}
