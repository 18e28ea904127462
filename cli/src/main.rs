//! The `sluice` command: runs and checks a Sluice deployment.

mod aggregator;
mod bench;
mod bench_connect;
mod bench_dedupe;
mod bench_lake;
mod bench_process;
mod client;
mod connect;
mod edge;
mod loadgen;
mod process;
mod schema;
mod send;
mod streams;
mod tail;
mod up;

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
    /// Run the whole platform on a laptop: an aggregator on the embedded log and an edge.
    Up(up::UpArgs),
    /// Send events to an edge as an offline app flushes its queue, retrying what can be retried.
    Send(send::SendArgs),
    /// Write streams into PostgreSQL, MariaDB, Redis or a Parquet lake, exactly once.
    Connect(connect::ConnectArgs),
    /// Run change-propagation rules over streams (HTTP actions), from the embedded log.
    Process(process::ProcessArgs),
    /// Print a stream's events from the embedded log (or Kafka).
    Tail(tail::TailArgs),
    /// Print the effective stream config.
    Streams(streams::StreamsArgs),
    /// Send a canary event to every stream with canary_events_enabled.
    Canary(streams::CanaryArgs),
    /// Load an edge with batches of events and report throughput and latency.
    Loadgen(loadgen::LoadgenArgs),
    /// Benchmark the whole pipeline: edge, aggregator and load generator as processes.
    Bench(bench::BenchArgs),
    /// Benchmark the connectors against each store's bulk loader on the same rows.
    BenchConnect(bench_connect::BenchConnectArgs),
    /// Benchmark the aggregator's dedupe window: ids/s, memory per held id, exactness, restart.
    BenchDedupe(bench_dedupe::BenchDedupeArgs),
    /// Benchmark the Parquet sink against DuckDB turning the same events into Parquet.
    BenchLake(bench_lake::BenchLakeArgs),
    /// Benchmark the processor: HTTP executions and produced events per second against their anchors.
    BenchProcess(bench_process::BenchProcessArgs),
}

fn main() -> ExitCode {
    sluice_host::process::no_huge_pages();
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
        Command::Up(args) => up::run(args),
        Command::Send(args) => send::run(args),
        Command::Connect(args) => connect::run(args),
        Command::Process(args) => process::run(args),
        Command::Tail(args) => tail::run(args),
        Command::Streams(args) => streams::streams(args),
        Command::Canary(args) => streams::canary(args),
        Command::Loadgen(args) => loadgen::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchConnect(args) => bench_connect::run(args),
        Command::BenchLake(args) => bench_lake::run(args),
        Command::BenchProcess(args) => bench_process::run(args),
        Command::BenchDedupe(args) => bench_dedupe::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
