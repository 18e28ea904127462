//! `sluice edge`: runs the native edge until Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::Args;
use sluice_edge::native::EdgeConfig;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `sluice edge`.
#[derive(Args, Debug)]
pub struct EdgeArgs {
    /// A TOML config file; `SLUICE_EDGE_*` variables override it (see `edge.example.toml`).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Runs the edge.
pub fn run(args: EdgeArgs) -> anyhow::Result<ExitCode> {
    let config = EdgeConfig::load(args.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        sluice_edge::native::run(
            config,
            |at| {
                // Scripts and tests read this line to find the port; a closed stdout is no reason to stop.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "edge listening on http://{at}");
                let _ = out.flush();
            },
            async {
                sluice_host::signals::stop().await;
                tracing::info!("Stopping: no new requests; guaranteed batches are answered and the spool is forwarded.");
            },
        )
        .await
    })?;
    Ok(ExitCode::SUCCESS)
}
