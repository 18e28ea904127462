//! `sluice tail STREAM`: prints a stream's events, one JSON document per
//! line, from the embedded log an aggregator (or `sluice up`) writes, or
//! from Kafka when brokers are given. Follows new events until Ctrl-C,
//! unless `--no-follow`.

use anyhow::Context;
use clap::Args;
use sluice_log::{LogOptions, Reader, Start};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Options of `sluice tail`.
#[derive(Args, Debug)]
pub struct TailArgs {
    /// The stream.
    stream: String,
    /// Print the events already there, not only new ones.
    #[arg(long)]
    from_beginning: bool,
    /// Stop once caught up instead of following.
    #[arg(long)]
    no_follow: bool,
    /// The data folder of `sluice up` (the log is under `aggregator/log`).
    #[arg(long, default_value = ".sluice")]
    data_dir: PathBuf,
    /// The embedded log folder, when not the one under `--data-dir`.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// The stream config that names the stream's topic.
    #[arg(long, default_value = "schemas/streams.yaml")]
    streams: PathBuf,
    /// Read from Kafka at these brokers instead of the embedded log.
    #[arg(long, env = "SLUICE_AGGREGATOR_KAFKA__BROKERS")]
    brokers: Option<String>,
}

/// The topic a stream's events are written to.
fn topic(args: &TailArgs) -> anyhow::Result<String> {
    let config = crate::streams::load_streams(&args.streams)?;
    Ok(config
        .get(&args.stream)
        .map_or_else(|| args.stream.clone(), |e| e.produce_topic(&args.stream)))
}

/// The embedded log folder: `log_dir`, else the one under `sluice up`'s `data_dir`; it must exist.
pub(crate) fn embedded_log(
    data_dir: &std::path::Path,
    log_dir: Option<&std::path::Path>,
) -> anyhow::Result<PathBuf> {
    let dir = log_dir.map_or_else(
        || data_dir.join("aggregator/log"),
        std::path::Path::to_path_buf,
    );
    if !dir.is_dir() {
        anyhow::bail!(
            "no embedded log at {}: is `sluice up` running from here, or pass --data-dir/--log-dir",
            dir.display()
        );
    }
    Ok(dir)
}

/// Runs `sluice tail`.
pub fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let topic = topic(&args)?;
    match args.brokers.as_deref().filter(|b| !b.trim().is_empty()) {
        Some(brokers) => kafka(&args, brokers, &topic),
        None => log(&args, &topic),
    }
}

fn log(args: &TailArgs, topic: &str) -> anyhow::Result<ExitCode> {
    let dir = embedded_log(&args.data_dir, args.log_dir.as_deref())?;
    let start = if args.from_beginning {
        Start::Earliest
    } else {
        Start::Latest
    };
    let mut tail = Reader::open(&dir, topic, start, LogOptions::default())?;
    let mut out = std::io::stdout().lock();
    loop {
        let records = tail.poll(10_000)?;
        for r in &records {
            out.write_all(&r.value)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        if records.is_empty() {
            if args.no_follow {
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn kafka(args: &TailArgs, brokers: &str, topic: &str) -> anyhow::Result<ExitCode> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("sluice-tail-{:016x}", u64::from_le_bytes(id)),
        )
        .set("enable.auto.commit", "false")
        .set(
            "auto.offset.reset",
            if args.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        )
        .create()
        .context("cannot create a Kafka consumer")?;
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("cannot subscribe to {topic}"))?;
    let mut out = std::io::stdout().lock();
    let mut idle = 0;
    loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle = 0;
                out.write_all(m.payload().unwrap_or_default())?;
                out.write_all(b"\n")?;
                out.flush()?;
            }
            Some(Err(e)) => tracing::warn!(error = %e, "Kafka consumer error."),
            None => {
                // Caught up: nothing for two seconds once the group has given this
                // consumer its partitions (which can take a while after subscribing).
                let assigned = consumer
                    .assignment()
                    .map(|a| a.count() > 0)
                    .unwrap_or(false);
                idle = if assigned { idle + 1 } else { 0 };
                if args.no_follow && idle >= 4 {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
}
