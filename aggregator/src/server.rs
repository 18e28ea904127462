//! Runs the aggregator: loads stream config, opens the embedded log
//! (recovering it), starts the commit loop and serves HTTP batch ingest
//! until the shutdown future completes.

use crate::config::{AggregatorConfig, ConfigError};
use crate::http::BatchService;
use crate::log::{EmbeddedLog, LogError, LogOptions};
use crate::metrics::Metrics;
use crate::sink::{Sink, SinkOptions};
use sluice_shared::{StreamConfig, WireLimits};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why the aggregator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The stream config does not parse.
    #[error("stream config {path}: {errors}")]
    Streams {
        /// The file.
        path: String,
        /// Every problem found.
        errors: String,
    },
    /// The embedded log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A socket failed.
    #[error("aggregator: {action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Starts the aggregator; `on_listening` is told the bound HTTP address.
pub async fn run(
    config: AggregatorConfig,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let token = config.token()?;
    let path = config.streams.display().to_string();
    let text = std::fs::read_to_string(&config.streams).map_err(|e| ServerError::Streams {
        path: path.clone(),
        errors: e.to_string(),
    })?;
    let streams = StreamConfig::parse(&text).map_err(|errs| ServerError::Streams {
        path,
        errors: errs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    let log_dir = config.data_dir.join("log");
    let log = EmbeddedLog::open(
        &log_dir,
        LogOptions {
            segment_bytes: config.segment_bytes,
            ..LogOptions::default()
        },
    )?;
    if log.recovered_bytes() > 0 {
        tracing::warn!(
            bytes = log.recovered_bytes(),
            "Recovered the embedded log after an unclean stop."
        );
    }
    let streams = Arc::new(streams);
    let sink = Sink::start(
        log,
        streams.clone(),
        SinkOptions {
            queue: config.sink_queue,
            dedupe_window_nanos: i64::try_from(
                config.dedupe_window_secs.saturating_mul(1_000_000_000),
            )
            .unwrap_or(i64::MAX),
            seed: std::process::id().into(),
            ..SinkOptions::default()
        },
        Metrics::new(),
    );
    let app = BatchService::new(sink, &token, WireLimits::default(), streams).router();
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| ServerError::Io {
            action: format!("listening on {}", config.http.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Io {
        action: "reading the bound address".into(),
        source,
    })?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "Aggregator listening for batches over HTTP.");
    on_listening(addr);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServerError::Io {
            action: "serving HTTP".into(),
            source,
        })
}
