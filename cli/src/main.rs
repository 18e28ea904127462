//! The `sluice` command: runs and checks a Sluice deployment.

mod aggregator;
mod edge;
mod schema;
mod signals;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// Batches of large frames come and go all the time; mimalloc serves them without the
// mmap and page-fault churn of the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sluice: an open event platform.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Work with schema repositories.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Run the aggregator: batch ingest into the embedded log or Kafka.
    Aggregator(aggregator::AggregatorArgs),
    /// Run the native edge: EventGate-compatible intake, forwarding over QUIC.
    Edge(edge::EdgeArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Schema(cmd) => schema::run(cmd),
        Command::Aggregator(args) => aggregator::run(args),
        Command::Edge(args) => edge::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
