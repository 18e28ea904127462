//! `sluice connect`: runs the sinks of a connect config until Ctrl-C or
//! SIGTERM (each finishes the batch it holds), or with `--status` prints
//! what a running one reports: rows written, dead letters and lag per sink
//! and stream.

use anyhow::Context;
use clap::Args;
use sluice_connect::{ConnectConfig, ConnectMetrics};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Options of `sluice connect`.
#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// The connect config (TOML, see `connect.example.toml`); `SLUICE_CONNECT_*` variables override it.
    #[arg(long)]
    config: PathBuf,
    /// Print the running connector's rows written, dead letters and lag, then exit.
    #[arg(long)]
    status: bool,
}

/// Runs `sluice connect`.
pub fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let config = ConnectConfig::load(Some(&args.config))?;
    if args.status {
        return status(&config);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let metrics = ConnectMetrics::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let server_stop = {
            let mut done = done_rx.clone();
            async move {
                let _ = done.wait_for(|d| *d).await;
            }
        };
        let at = sluice_connect::serve_metrics(config.metrics_listen, &metrics, server_stop)
            .await
            .with_context(|| format!("cannot serve metrics on {}", config.metrics_listen))?;
        let connectors = sluice_connect::start(&config, &metrics, stop.clone())?;
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "connect metrics on http://{at}/metrics");
            let _ = out.flush();
        }
        let signal_stop = stop.clone();
        let signal = tokio::spawn(async move {
            sluice_host::signals::stop().await;
            tracing::info!("Stopping: every sink writes the batch it holds.");
            signal_stop.store(true, Ordering::Relaxed);
        });
        let joined = tokio::task::spawn_blocking(move || connectors.join()).await;
        signal.abort();
        let _ = done_tx.send(true);
        joined.map_err(|e| anyhow::anyhow!("the sinks' task failed: {e}"))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the running connector's metrics as a table.
fn status(config: &ConnectConfig) -> anyhow::Result<ExitCode> {
    let base = format!("http://{}", config.metrics_listen);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let answer = runtime
        .block_on(async {
            crate::client::Client::new(&base)?
                .request("GET", "/metrics", None, Default::default())
                .await
        })
        .with_context(|| {
            format!("no connector answers at {base}/metrics: is `sluice connect` running with this config?")
        })?;
    let text = String::from_utf8_lossy(&answer.body);
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).context("the metrics do not parse")?;
    let mut rows: BTreeMap<(String, String), [f64; 5]> = BTreeMap::new();
    for s in &scrape.samples {
        let col = match s.metric.as_str() {
            "sluice_connect_rows_written_total" => 0,
            "sluice_connect_dead_letters_total" => 1,
            "sluice_connect_lag_records" => 2,
            "sluice_connect_lag_seconds" => 3,
            "sluice_connect_stream_stopped" => 4,
            _ => continue,
        };
        let (Some(sink), Some(stream)) = (s.labels.get("sink"), s.labels.get("stream")) else {
            continue;
        };
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        rows.entry((sink.to_owned(), stream.to_owned()))
            .or_default()[col] = v;
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<16} {:<32} {:>12} {:>12} {:>12} {:>10}  state",
        "sink", "stream", "rows", "dead", "lag", "lag (s)"
    )?;
    for ((sink, stream), v) in rows {
        writeln!(
            out,
            "{sink:<16} {stream:<32} {:>12} {:>12} {:>12} {:>10.1}  {}",
            v[0] as u64,
            v[1] as u64,
            v[2] as u64,
            v[3],
            if v[4] > 0.0 { "stopped" } else { "flowing" }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
