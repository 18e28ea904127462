//! `sluice up`: an aggregator and a native edge together in one process, on
//! the embedded log and a development PKI, with everything under one data
//! folder. Ctrl-C (or SIGTERM) stops the edge first, so that what it holds
//! reaches the aggregator, then the aggregator, which answers every batch
//! it took before it exits.

use anyhow::Context;
use clap::Args;
use sluice_aggregator::AggregatorConfig;
use sluice_edge::native::EdgeConfig;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Options of `sluice up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where the log, certificates, spool and token live.
    #[arg(long, default_value = ".sluice")]
    data_dir: PathBuf,
    /// A schema repository folder (repeatable, in resolution order).
    #[arg(long = "repo", default_value = "schemas")]
    repos: Vec<PathBuf>,
    /// The stream config file.
    #[arg(long, default_value = "schemas/streams.yaml")]
    streams: PathBuf,
    /// Where the edge takes events (HTTP).
    #[arg(long, default_value = "127.0.0.1:8420")]
    edge_addr: SocketAddr,
    /// Where the aggregator serves batches over HTTP, the schemas, stream config and metrics.
    #[arg(long, default_value = "127.0.0.1:8421")]
    aggregator_addr: SocketAddr,
    /// Where the aggregator takes batches over QUIC (UDP).
    #[arg(long, default_value = "127.0.0.1:8422")]
    quic_addr: SocketAddr,
    /// Also run the sinks of this connect config (see `connect.example.toml`), reading the embedded log.
    #[arg(long)]
    connect: Option<PathBuf>,
    /// Also run the processing rules of this file (see `sluice process`), over the embedded
    /// log, writing through the edge.
    #[arg(long)]
    process: Option<PathBuf>,
    /// Where the processor serves its metrics (with `--process`).
    #[arg(long, default_value = "127.0.0.1:8423")]
    process_metrics_addr: SocketAddr,
}

/// The token Workers present to this aggregator: kept in the data folder, made on first start.
fn token(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("aggregator.token");
    if !path.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&path, format!("{text}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(path)
}

/// Runs the platform until Ctrl-C or SIGTERM.
pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let mut aggregator = AggregatorConfig::load(None)?;
    aggregator.data_dir = args.data_dir.join("aggregator");
    aggregator.repositories = args.repos.clone();
    aggregator.streams = args.streams.clone();
    aggregator.http.listen = args.aggregator_addr;
    aggregator.quic.listen = args.quic_addr;
    aggregator.http.token = None;
    aggregator.http.token_file = Some(token(&args.data_dir)?);
    let tls = aggregator.data_dir.join("tls");
    let mut edge = EdgeConfig::load(None)?;
    edge.listen = args.edge_addr;
    edge.data_dir = args.data_dir.join("edge");
    edge.tls.ca = tls.join("ca.pem");
    edge.tls.cert = Some(tls.join("edge.pem"));
    edge.tls.key = Some(tls.join("edge.key.pem"));
    edge.token = None;
    edge.token_file = None;
    let connect = match &args.connect {
        Some(file) => {
            let mut c = sluice_connect::ConnectConfig::load(Some(file))?;
            c.source.log_dir = aggregator.data_dir.join("log");
            c.source.brokers.clear();
            c.streams = args.streams.clone();
            c.repositories = args.repos.clone();
            aggregator.console.connectors = vec![format!("http://{}/metrics", c.metrics_listen)];
            Some(c)
        }
        None => None,
    };
    let sinks_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let process = match &args.process {
        Some(file) => {
            let rules = crate::process::read_rules(file)?;
            let indexed = rules.rules.iter().any(|r| {
                r.cases
                    .iter()
                    .any(|c| c.track.is_some() || c.fanout.is_some())
            });
            let index = if indexed {
                let dir = args.data_dir.join("process").join("index");
                Some(crate::process::open_index(&dir.to_string_lossy())?)
            } else {
                None
            };
            let settings = crate::process::settings(
                &args.streams,
                sluice_process::runner::SourceKind::Log(aggregator.data_dir.join("log")),
                &format!("http://{}", args.edge_addr),
                index,
                3600,
            )?;
            Some((rules, settings))
        }
        None => None,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (edge_done_tx, edge_done_rx) = tokio::sync::watch::channel(false);
        let (listening_tx, listening_rx) = tokio::sync::oneshot::channel();
        // The aggregator stops once the edge has (or at once if the edge never started).
        let aggregator_stop = {
            let mut edge_done = edge_done_rx.clone();
            async move {
                let _ = edge_done.wait_for(|d| *d).await;
            }
        };
        let aggregator_task = tokio::spawn(sluice_aggregator::run(
            aggregator,
            move |at| {
                let _ = listening_tx.send(at);
            },
            aggregator_stop,
        ));
        let signal = tokio::spawn(async move {
            sluice_host::signals::stop().await;
            tracing::info!("Stopping: the edge first, then the aggregator; nothing acknowledged is lost.");
            let _ = stop_tx.send(true);
        });
        let at = match listening_rx.await {
            Ok(at) => at,
            Err(_) => {
                signal.abort();
                return match aggregator_task.await {
                    Ok(Err(e)) => Err(anyhow::Error::new(e).context("the aggregator did not start")),
                    _ => Err(anyhow::anyhow!("the aggregator did not start")),
                };
            }
        };
        let connectors = match &connect {
            Some(c) => {
                let metrics = sluice_connect::ConnectMetrics::default();
                let mut stop = stop_rx.clone();
                let served = sluice_connect::serve_metrics(c.metrics_listen, &metrics, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
                .with_context(|| format!("cannot serve the connectors' metrics on {}", c.metrics_listen))?;
                let started = sluice_connect::start(c, &metrics, sinks_stop.clone())?;
                println!("connectors: {} sink(s), metrics on http://{served}/metrics", c.sinks.len());
                Some(started)
            }
            None => None,
        };
        // The processor stops before the edge it writes through.
        let (processed_tx, processed_rx) = tokio::sync::watch::channel(process.is_none());
        if let Some((rules, settings)) = process {
            let metrics = sluice_process::metrics::ProcessMetrics::default();
            let mut server_stop = processed_rx.clone();
            let served = sluice_connect::serve_registry(args.process_metrics_addr, metrics.registry(), async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
            .with_context(|| format!("cannot serve the processor's metrics on {}", args.process_metrics_addr))?;
            let _ = writeln!(std::io::stdout().lock(), "processor: {} rule(s), metrics on http://{served}/metrics", rules.rules.len());
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                if let Err(e) = sluice_process::runner::run(rules.clone(), settings, metrics.clone(), stop).await {
                    tracing::error!(error = %e, "The processor stopped.");
                }
                // Stdout may be closed by now (a pipe its reader left): the counts are not worth a panic.
                let _ = write!(std::io::stdout().lock(), "{}", crate::process::summary(&rules, &metrics));
                let _ = processed_tx.send(true);
            });
        }
        edge.aggregators = vec![at.quic.to_string()];
        edge.bundle.url = format!("http://{}/v1/bundle", at.http);
        let edge_stop = {
            let mut stop = stop_rx.clone();
            let mut processed = processed_rx.clone();
            async move {
                let _ = stop.wait_for(|s| *s).await;
                let _ = processed.wait_for(|s| *s).await;
            }
        };
        let edge_result = sluice_edge::native::run(
            edge,
            |edge_at| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "Sluice is up.\n\
                     \n  console          http://{http}/console/   (schemas, streams, live tail, try an event)\
                     \n  send events to   http://{edge_at}/v1/events   (EventGate-compatible; ?hasty=true answers once synced at the edge)\
                     \n  stream config    http://{edge_at}/v1/streams and http://{http}/v1/streams\
                     \n  schemas          http://{http}/repositories/<repo>/jsonschema/<title>/<version>.yaml\
                     \n  metrics          http://{edge_at}/metrics and http://{http}/metrics\
                     \n  batch ingest     quic://{quic} and http://{http}/v1/batches (for Workers)\
                     \n\nTry:\n  curl -i -X POST http://{edge_at}/v1/events -H 'Content-Type: application/json' -d '{{\"$schema\": \"/sluice/test/event/1.0.0\", \"meta\": {{\"stream\": \"sluice.test.event\"}}, \"dt\": \"2026-11-27T12:00:00Z\", \"message\": \"hello\"}}'\
                     \n\nedge listening on http://{edge_at}\nCtrl-C stops both.",
                    http = at.http,
                    quic = at.quic,
                );
                let _ = out.flush();
            },
            edge_stop,
        )
        .await;
        let _ = edge_done_tx.send(true);
        let aggregator_result = aggregator_task.await;
        // The sinks last: they write what the aggregator wrote before it stopped, then stop.
        sinks_stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(c) = connectors {
            let _ = tokio::task::spawn_blocking(move || c.join()).await;
        }
        signal.abort();
        edge_result.context("the edge failed")?;
        match aggregator_result {
            Ok(r) => r.context("the aggregator failed")?,
            Err(e) => return Err(anyhow::anyhow!("the aggregator task failed: {e}")),
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
