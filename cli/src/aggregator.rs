//! `sluice aggregator`: runs the aggregator until Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::Args;
use sluice_aggregator::AggregatorConfig;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `sluice aggregator`.
#[derive(Args, Debug)]
pub struct AggregatorArgs {
    /// A TOML config file; `SLUICE_AGGREGATOR_*` variables override it (see `aggregator.example.toml`).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Runs the aggregator.
pub fn run(args: AggregatorArgs) -> anyhow::Result<ExitCode> {
    let config = AggregatorConfig::load(args.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = async {
            sluice_host::signals::stop().await;
            tracing::info!("Stopping: no new batches; in-flight batches finish.");
        };
        sluice_aggregator::run(
            config,
            |at| {
                // Scripts and tests read these lines to find the ports; a closed stdout is no reason to stop.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "aggregator listening on quic://{}", at.quic);
                let _ = writeln!(out, "aggregator listening on http://{}", at.http);
                let _ = out.flush();
            },
            shutdown,
        )
        .await
    })?;
    Ok(ExitCode::SUCCESS)
}
