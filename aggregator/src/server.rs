//! Runs the aggregator: loads stream config, opens the sink (Kafka when
//! brokers are configured, else the embedded log, recovering it), starts the commit loop and serves HTTP batch ingest
//! until the shutdown future completes.

use crate::commit::{CommitLoop, CommitOptions};
use crate::config::{AggregatorConfig, ConfigError};
use crate::console::{Access, Console, ConsoleOptions, Flow, TailSource};
use crate::http::BatchService;
use crate::journal::DedupeJournal;
use crate::kafka::{KafkaSink, KafkaSinkError};
use crate::log_sink::LogSink;
use crate::metrics::Metrics;
use crate::quic::{self, QuicLimits};
use crate::schemas::SchemaService;
use crate::sink::Sink;
use sluice_host::quic::QuicError;
use sluice_host::signals::Hangups;
use sluice_host::tls::{Identity, TlsError, ca_from_pem, ensure_dev_pki};
use sluice_host::token::Token;
use sluice_log::{Log, LogError, LogOptions};
use sluice_shared::{Bundle, Live, StreamConfig, WireLimits};
use std::future::Future;
use std::net::SocketAddr;

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
    /// The schema repositories do not load together with the stream config.
    #[error("{0}")]
    Bundle(String),
    /// The embedded log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The Kafka producer.
    #[error(transparent)]
    Kafka(#[from] KafkaSinkError),
    /// Certificates.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// QUIC setup.
    #[error(transparent)]
    Quic(#[from] QuicError),
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

/// Reads the stream config and schema repositories and checks they load together.
pub fn load_bundle(config: &AggregatorConfig) -> Result<(Bundle, StreamConfig), ServerError> {
    if let Some(file) = &config.bundle {
        let bytes = std::fs::read(file).map_err(|source| ServerError::Io {
            action: format!("reading the bundle {}", file.display()),
            source,
        })?;
        let bundle: Bundle = serde_json::from_slice(&bytes)
            .map_err(|e| ServerError::Bundle(format!("{} is not a bundle: {e}", file.display())))?;
        let (_, streams) = bundle
            .load()
            .map_err(|e| ServerError::Bundle(e.to_string()))?;
        return Ok((bundle, streams));
    }
    let path = config.streams.display().to_string();
    let text = std::fs::read_to_string(&config.streams).map_err(|e| ServerError::Streams {
        path,
        errors: e.to_string(),
    })?;
    let bundle =
        crate::schemas::bundle_from_disk(&config.repositories, text).map_err(|source| {
            ServerError::Io {
                action: "reading the schema repositories".into(),
                source,
            }
        })?;
    let (_, streams) = bundle
        .load()
        .map_err(|e| ServerError::Bundle(e.to_string()))?;
    Ok((bundle, streams))
}

/// Reloads stream config and schemas on SIGHUP and every `reload_secs`; a
/// set that does not load is refused with a log line and the old one kept.
async fn reload_loop(
    config: AggregatorConfig,
    streams: Live<StreamConfig>,
    schemas: SchemaService,
    console: Option<Console>,
    mut hangups: Hangups,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(config.reload_secs.max(1)));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = hangups.next() => tracing::info!("SIGHUP: reloading stream config and schemas."),
        }
        // Reading and compiling every schema takes a while: off the threads that answer batches.
        let c = config.clone();
        let loaded = tokio::task::spawn_blocking(move || load_bundle(&c))
            .await
            .unwrap_or_else(|e| Err(ServerError::Bundle(format!("the reload task failed: {e}"))));
        match loaded {
            Ok((bundle, new_streams)) => {
                let before = schemas.etag();
                schemas.replace(&bundle);
                if schemas.etag() != before {
                    if let Some(c) = &console {
                        c.replace(&bundle);
                    }
                    streams.set(new_streams);
                    tracing::info!(etag = %schemas.etag(), "Reloaded stream config and schemas.");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "Refused a new stream config or schema set; keeping the one in use.")
            }
        }
    }
}

/// Where the aggregator listens.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    /// HTTP batch ingest and services.
    pub http: SocketAddr,
    /// QUIC batch ingest.
    pub quic: SocketAddr,
}

/// Starts the aggregator; `on_listening` is told the bound addresses.
pub async fn run(
    config: AggregatorConfig,
    on_listening: impl FnOnce(Listening),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let token = config.token()?;
    let (bundle, streams) = load_bundle(&config)?;
    let mut metrics = Metrics::new();
    metrics.flow = Flow::new(
        config.console.alert_after_secs,
        config.console.alert_under_ratio,
    );
    let console_token = config.console.token()?;
    let sink: Box<dyn Sink> = if config.kafka.brokers.trim().is_empty() {
        let log = Log::open(
            &config.data_dir.join("log"),
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
        tracing::info!(dir = %config.data_dir.join("log").display(), "Sink: the embedded log.");
        Box::new(LogSink::new(log, config.log_retention()))
    } else {
        let journal = DedupeJournal::open(
            &config.data_dir.join("dedupe"),
            std::time::Duration::from_secs(config.dedupe_window_secs),
        )?;
        tracing::info!(brokers = %config.kafka.brokers, "Sink: Kafka.");
        Box::new(KafkaSink::connect(&config.kafka, journal, &metrics)?)
    };
    let streams = Live::new(streams);
    let schemas = SchemaService::new(&bundle);
    let console = config.console.enabled.then(|| {
        let tails = if config.kafka.brokers.trim().is_empty() {
            TailSource::Log(config.data_dir.join("log"))
        } else {
            TailSource::Kafka(
                config.kafka.brokers.clone(),
                config
                    .kafka
                    .properties
                    .iter()
                    .filter(|(k, _)| {
                        ["security.", "sasl.", "ssl.", "client."]
                            .iter()
                            .any(|p| k.starts_with(p))
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        };
        let access = Console::access(console_token.clone(), config.http.listen);
        if matches!(access, Access::Closed) {
            tracing::warn!(listen = %config.http.listen, "The console is off: the HTTP port is reachable from other hosts and no console token is set (console.token_file).");
        }
        Console::new(
            &bundle,
            streams.clone(),
            metrics.clone(),
            ConsoleOptions {
                access,
                tails,
                error_stream: config.error_stream.stream.clone(),
                connectors: config.console.connectors.clone(),
                alert_after_secs: config.console.alert_after_secs,
            },
        )
    });
    // Each second's counts into the streams' flow, and their alerts judged.
    {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                Console::tick(&metrics);
            }
        });
    }
    // Listened for before the addresses are announced, so an early SIGHUP reloads rather than kills.
    tokio::spawn(reload_loop(
        config.clone(),
        streams.clone(),
        schemas.clone(),
        console.clone(),
        Hangups::listen(),
    ));
    let sink = CommitLoop::start(
        sink,
        streams.clone(),
        CommitOptions {
            queue: config.sink_queue,
            max_in_flight_bytes: config.max_in_flight_bytes,
            dedupe_window_nanos: i64::try_from(
                config.dedupe_window_secs.saturating_mul(1_000_000_000),
            )
            .unwrap_or(i64::MAX),
            seed: std::process::id().into(),
            errors: config.error_stream.options(),
            dedupe_dir: Some(config.data_dir.join("dedupe-slices")),
            dedupe_slice_ids: config.dedupe_slice_ids,
            ..CommitOptions::default()
        },
        metrics,
    );
    let (server_id, client_ca) = match (&config.quic.cert, &config.quic.key, &config.quic.client_ca)
    {
        (Some(cert), Some(key), Some(ca)) => {
            (Identity::from_pem_files(cert, key)?, ca_from_pem(ca)?)
        }
        _ => {
            let pki = ensure_dev_pki(&config.data_dir.join("tls"))?;
            (pki.server, pki.ca)
        }
    };
    let quic_limits = QuicLimits {
        max_connections: config.quic.max_connections,
        max_streams_per_connection: config.quic.max_streams_per_connection,
    };
    let endpoint = quic::server_endpoint(config.quic.listen, server_id, client_ca, quic_limits)?;
    let quic_addr = endpoint.local_addr().map_err(|source| ServerError::Io {
        action: "reading the bound QUIC address".into(),
        source,
    })?;
    let stopped = sink.stopped();
    // One stop signal for both listeners.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let token = Token::new(&token);
    let quic_task = tokio::spawn(quic::serve_until(
        endpoint.clone(),
        sink.clone(),
        Some(token.clone()),
        WireLimits::default(),
        quic_limits,
        stop.clone(),
    ));
    let http_stop = {
        let mut stop = stop;
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let mut app = BatchService::new(sink, token, WireLimits::default(), streams)
        .router()
        .merge(schemas.router());
    if let Some(c) = console {
        app = app.merge(c.router());
    }
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
    tracing::info!(http = %addr, quic = %quic_addr, data_dir = %config.data_dir.display(), "Aggregator listening for batches.");
    on_listening(Listening {
        http: addr,
        quic: quic_addr,
    });
    // Acknowledgements go out at once: no Nagle delay behind a client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "Could not set TCP_NODELAY on a connection.");
        }
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(http_stop)
        .await
        .map_err(|source| ServerError::Io {
            action: "serving HTTP".into(),
            source,
        });
    // QUIC batches on their way are answered before their connections close; then, with
    // the listeners gone, so are the handles to the sink, which answers what it took.
    let drained = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let _ = quic_task.await;
        endpoint.close(0u32.into(), b"shutting down");
        endpoint.wait_idle().await;
        let mut stopped = stopped;
        let _ = stopped.wait_for(|s| *s).await;
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("The sink is drained; the aggregator stops."),
        Err(_) => {
            endpoint.close(0u32.into(), b"shutting down");
            tracing::warn!(
                "The sink did not drain within 60 s; unanswered batches will be retried by their edges."
            )
        }
    }
    served
}
