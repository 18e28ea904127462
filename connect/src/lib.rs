//! Sluice's connectors: every stream a sink takes becomes a table in
//! PostgreSQL or MariaDB, laid out from the stream's schema, keys in Redis,
//! or an hourly-partitioned Parquet dataset in a lake ([`lake`]), written
//! exactly once.
//!
//! A sink reads its streams' topics from Kafka (a consumer group per sink)
//! or from the embedded log ([`source`]), lays each event out as a row by
//! its schema version ([`columns`], [`row`]), and writes a batch of rows,
//! the batch's dead letters and the source positions it covers in one
//! transaction of the store ([`store`]); on start and on every partition
//! assignment it reads from the positions the store holds, so a crash, a
//! lost connection or a rebalance never writes a row twice or skips one.

pub mod columns;
pub mod config;
pub mod lake;
pub mod metrics;
pub mod patterns;
pub mod row;
pub mod runner;
pub mod schemas;
pub mod shape;
pub mod source;
pub mod store;
pub mod template;

pub use config::{ConnectConfig, SinkConfig, SinkKind};
pub use metrics::ConnectMetrics;

use patterns::Patterns;
use runner::{Plan, Runner};
use schemas::Schemas;
use sluice_shared::StreamConfig;
use source::{Discover, KafkaSource, LogSource, Lookup, Source};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use store::{MysqlStore, PostgresStore, RedisStore, Store};

/// Connectors that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The stream config cannot be read or is wrong.
    #[error("the stream config {path}: {why}")]
    Streams {
        /// Its file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A sink names a stream the stream config does not have, or none at all.
    #[error("sink `{sink}`: {why}")]
    Sink {
        /// The sink.
        sink: String,
        /// What is wrong.
        why: String,
    },
    /// The schema repositories cannot be read.
    #[error("{0}")]
    Schemas(String),
}

/// The sinks running, each on its own thread.
pub struct Connectors {
    threads: Vec<(String, JoinHandle<()>)>,
}

impl Connectors {
    /// Waits for every sink to stop (after `stop` is set).
    pub fn join(self) {
        for (name, t) in self.threads {
            if t.join().is_err() {
                tracing::error!(sink = %name, "A sink's thread panicked.");
            }
        }
    }
}

/// The streams `sink` takes by name: those it lists and those configured by exact name whose
/// config enables it as a consumer (`patterns` holds those configured by `/regex/`).
fn plans(
    sink: &SinkConfig,
    streams: &StreamConfig,
    patterns: &Patterns,
) -> Result<Vec<Plan>, ConnectError> {
    let mut names: Vec<String> = sink.streams.clone();
    for entry in streams.entries() {
        let enabled = entry
            .raw
            .pointer(&format!("/consumers/{}/enabled", sink.name))
            .and_then(serde_json::Value::as_bool)
            == Some(true);
        let is_pattern = entry.key.starts_with('/');
        if enabled && !is_pattern && !names.contains(&entry.key) {
            names.push(entry.key.clone());
        }
    }
    if names.is_empty() && patterns.is_empty() {
        return Err(ConnectError::Sink {
            sink: sink.name.clone(),
            why: format!(
                "it takes no stream: list some in `streams`, or set `consumers.{}.enabled: true` in a stream's config",
                sink.name
            ),
        });
    }
    names
        .into_iter()
        .map(|stream| {
            let entry = streams.get(&stream).ok_or_else(|| ConnectError::Sink {
                sink: sink.name.clone(),
                why: format!("stream `{stream}` is not in the stream config"),
            })?;
            Ok(Plan {
                title: entry.settings.schema_title.clone(),
                topics: entry.topics(&stream).into_iter().map(Arc::from).collect(),
                stream,
            })
        })
        .collect()
}

/// The store of `sink`, and for the lake the table schemas its runner decodes by.
fn store_for(sink: &SinkConfig) -> Result<(Box<dyn Store>, Option<lake::TableSchemas>), String> {
    let store: Box<dyn Store> = match sink.kind {
        SinkKind::Postgres => Box::new(PostgresStore::new(
            &sink.url,
            &sink.name,
            &sink.positions_table,
            &sink.dead_letter_table,
        )),
        SinkKind::Mysql => Box::new(MysqlStore::new(
            &sink.url,
            &sink.name,
            &sink.positions_table,
            &sink.dead_letter_table,
        )),
        SinkKind::Redis => Box::new(RedisStore::new(
            &sink.url,
            &sink.name,
            sink.value,
            sink.ttl_secs,
        )),
        SinkKind::Parquet => {
            let lake = lake::LakeStore::new(lake::LakeSettings::of(sink))?;
            let schemas = lake.schemas();
            return Ok((Box::new(lake), Some(schemas)));
        }
    };
    Ok((store, None))
}

/// Starts every sink of `config`; they run until `stop` is set.
pub fn start(
    config: &ConnectConfig,
    metrics: &ConnectMetrics,
    stop: Arc<AtomicBool>,
) -> Result<Connectors, ConnectError> {
    let text = std::fs::read_to_string(&config.streams).map_err(|e| ConnectError::Streams {
        path: config.streams.display().to_string(),
        why: e.to_string(),
    })?;
    let streams = StreamConfig::parse(&text).map_err(|errors| ConnectError::Streams {
        path: config.streams.display().to_string(),
        why: errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    // Checked once here, so that a wrong folder is reported before anything starts.
    Schemas::load(config.repositories.clone()).map_err(ConnectError::Schemas)?;
    let streams = Arc::new(streams);
    let mut threads = Vec::new();
    for sink in &config.sinks {
        let patterns = Patterns::new(streams.clone(), &sink.name);
        let plans = plans(sink, &streams, &patterns)?;
        let (sink, config, metrics, stop) =
            (sink.clone(), config.clone(), metrics.clone(), stop.clone());
        let name = sink.name.clone();
        let t = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || run_sink(sink, &config, &plans, &patterns, metrics, &stop))
            .map_err(|e| ConnectError::Sink {
                sink: name.clone(),
                why: format!("cannot start its thread: {e}"),
            })?;
        threads.push((name, t));
    }
    Ok(Connectors { threads })
}

/// One sink: connects (again and again while the store or source is away), then runs.
fn run_sink(
    sink: SinkConfig,
    config: &ConnectConfig,
    plans: &[Plan],
    patterns: &Patterns,
    metrics: ConnectMetrics,
    stop: &AtomicBool,
) {
    let mut wait = Duration::from_millis(500);
    while !stop.load(Ordering::Relaxed) {
        match open(&sink, config, plans, patterns, &metrics) {
            Ok(runner) => {
                tracing::info!(sink = %sink.name, streams = plans.len(), "Sink running.");
                if let Err(e) = runner.run(stop) {
                    tracing::error!(sink = %sink.name, error = %e, "The sink stopped.");
                }
                return;
            }
            Err(e) => {
                tracing::error!(sink = %sink.name, error = %e, "The sink cannot start yet; trying again.");
                let until = std::time::Instant::now() + wait;
                while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(100));
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn open(
    sink: &SinkConfig,
    config: &ConnectConfig,
    plans: &[Plan],
    patterns: &Patterns,
    metrics: &ConnectMetrics,
) -> Result<Runner, String> {
    let (store, lake_schemas) = store_for(sink)?;
    let store = Arc::new(Mutex::new(store));
    let lookup: Lookup = {
        let store = store.clone();
        Box::new(move |tps| {
            store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .positions(tps)
                .map_err(|e| e.to_string())
        })
    };
    let topics: Vec<Arc<str>> = plans
        .iter()
        .flat_map(|p| p.topics.iter().cloned())
        .collect();
    let schemas = Schemas::load(config.repositories.clone())?;
    // Tables first: a store that is away is found before the source is opened.
    let source: Box<dyn Source> = if config.source.brokers.trim().is_empty() {
        let discover: Option<Discover> = (!patterns.is_empty()).then(|| {
            let patterns = patterns.clone();
            Box::new(move |topic: &str| patterns.stream_of(topic).is_some()) as Discover
        });
        Box::new(
            LogSource::open(config.source.log_dir.clone(), topics, lookup, discover)
                .map_err(|e| e.to_string())?,
        )
    } else {
        Box::new(
            KafkaSource::open(
                &config.source.brokers,
                &format!("sluice-connect-{}", sink.name),
                &config.source.kafka,
                topics,
                &patterns.kafka_subscriptions(),
                lookup,
            )
            .map_err(|e| e.to_string())?,
        )
    };
    let mut runner = Runner::new(
        sink.clone(),
        plans,
        patterns.clone(),
        store,
        source,
        schemas,
        metrics.clone(),
    )?;
    if let Some(s) = lake_schemas {
        runner.decode_for(s);
    }
    Ok(runner)
}

/// Serves `/metrics` at `listen` until `stop` resolves.
pub async fn serve_metrics(
    listen: std::net::SocketAddr,
    metrics: &ConnectMetrics,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<std::net::SocketAddr> {
    serve_registry(listen, metrics.registry(), stop).await
}

/// Serves `registry` on `/metrics` at `listen` until `stop` resolves (the connectors' and the
/// processors' servers).
pub async fn serve_registry(
    listen: std::net::SocketAddr,
    registry: std::sync::Arc<prometheus_client::registry::Registry>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<std::net::SocketAddr> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    sluice_host::metrics::encode(&registry),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let at = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "The metrics server failed.");
        }
    });
    Ok(at)
}
