//! The native edge host: tokio and axum in front, a QUIC link to one or
//! more aggregators behind, and a disk spool between them that every hasty
//! request's events are synced to before its 202. [`run`] starts it all
//! from an [`EdgeConfig`] and stops it cleanly: on the shutdown signal no
//! new requests are taken, requests in progress are answered, and the
//! spool is forwarded for up to 5 s (what is left waits for the next start).

pub mod bundle;
pub mod config;
pub mod forward;
pub mod http;
pub mod link;
pub mod metrics;
pub mod spool;

pub use config::{ConfigError, EdgeConfig};
pub use forward::{ForwardOptions, Forwarder};
pub use link::Link;
pub use metrics::Metrics;
pub use spool::Spool;

use crate::request::TrustedProxies;
use sluice_host::quic::{QuicError, client_endpoint};
use sluice_host::tls::{Identity, TlsError, ca_from_pem};
use sluice_shared::{IntakeOptions, Live, WireLimits};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why the edge could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Certificates or keys.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The QUIC socket.
    #[error(transparent)]
    Quic(#[from] QuicError),
    /// The spool directory.
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    /// Schemas and stream config.
    #[error("edge: no schemas and stream config: {0}")]
    Bundle(#[from] bundle::BundleFetchError),
    /// The listener.
    #[error("edge: {action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// How long stopping waits for guaranteed batches to be answered and the spool to be forwarded.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the edge until `shutdown` resolves; `on_listening` gets the bound HTTP address.
pub async fn run(
    config: EdgeConfig,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), EdgeError> {
    let token = config.token()?;
    let ca = ca_from_pem(&config.tls.ca)?;
    let identity = match (&token, &config.tls.cert, &config.tls.key) {
        (None, Some(cert), Some(key)) => Some(Identity::from_pem_files(cert, key)?),
        (None, _, _) => {
            return Err(ConfigError::Unusable(
                "set tls.cert and tls.key (a client certificate), or token_file, so that aggregators accept this edge".into(),
            )
            .into());
        }
        (Some(_), _, _) => None,
    };
    let limits = WireLimits::default();
    let endpoint = client_endpoint(ca, identity)?;
    let metrics = Metrics::default();
    let link = Arc::new(Link::new(
        endpoint.clone(),
        config.aggregators.clone(),
        config.server_name.clone(),
        token,
        limits,
        metrics.clone(),
    ));
    let spool = Arc::new(Spool::open(
        &config.data_dir.join("spool"),
        config.spool.max_bytes,
        config.spool.segment_bytes,
        metrics.clone(),
    )?);
    let options = IntakeOptions {
        limits: config.limits,
        client_hash_seed: config.client_hash_seed,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|source| EdgeError::Io {
        action: format!("creating {}", config.data_dir.display()),
        source,
    })?;
    let cache = config.data_dir.join("bundle.json");
    let (intake, etag) =
        bundle::first(&config.bundle, &options, &cache, Duration::from_secs(60)).await?;
    let live = Live::new(intake);
    let refresher = tokio::spawn(bundle::refresh(
        config.bundle.clone(),
        options,
        live.clone(),
        etag,
        cache,
    ));
    let b = &config.batch;
    let (forwarder, drained) = Forwarder::start(
        link,
        spool.clone(),
        ForwardOptions {
            max_events: b.max_events,
            max_bytes: b.max_bytes,
            guaranteed_age: Duration::from_millis(b.guaranteed_age_ms),
            hasty_age: Duration::from_millis(b.hasty_age_ms),
            in_flight: b.in_flight,
            forward_timeout: Duration::from_millis(b.forward_timeout_ms),
            compress: b.compress,
        },
        limits,
        metrics.clone(),
    );
    let state = http::EdgeState::new(
        live,
        forwarder,
        TrustedProxies::new(config.trusted_proxies.clone()),
        metrics,
    );
    let app = http::router(
        state,
        &http::HttpOptions {
            max_body_bytes: config.limits.max_body_bytes,
            cors_origins: config.cors_origins.clone(),
            timeout: Duration::from_secs(config.request_timeout_secs.max(1)),
        },
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| EdgeError::Io {
            action: format!("listening on {}", config.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| EdgeError::Io {
        action: "reading the bound address".into(),
        source,
    })?;
    tracing::info!(%addr, aggregators = ?config.aggregators, "Edge listening.");
    on_listening(addr);
    // Answers go out at once: no Nagle delay behind a client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "Could not set TCP_NODELAY on a connection.");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(|source| EdgeError::Io {
        action: "serving HTTP".into(),
        source,
    })?;
    refresher.abort();
    if !drained.wait(DRAIN_TIMEOUT).await {
        tracing::warn!("Stopped before every spooled batch was sent; the spool keeps the rest.");
    }
    if !spool.is_empty() {
        tracing::info!(
            bytes = spool.bytes(),
            "The spool keeps batches for the next start."
        );
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"edge stopping");
    Ok(())
}
