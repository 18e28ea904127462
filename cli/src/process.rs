//! `sluice process --rules FILE`: runs change-propagation rules over the
//! streams of the embedded log an aggregator (or `sluice up`) writes, or of
//! Kafka with `--kafka` (each rule a consumer group, shared by every process
//! running the rule set), until Ctrl-C or SIGTERM; serves its metrics and
//! prints each rule's counts when it stops. `--check` reads the rule file
//! and says what it holds. `sluice up --process FILE` runs the same inside.

use anyhow::Context;
use clap::Args;
use sluice_process::RuleSet;
use sluice_process::journal_index::JournalIndex;
use sluice_process::metrics::ProcessMetrics;
use sluice_process::pg_index::PgIndex;
use sluice_process::runner::{OwnStreams, Settings, SharedIndex, SourceKind, Texted};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

/// Options of `sluice process`.
#[derive(Args, Debug)]
pub struct ProcessArgs {
    /// The rule file (`rules: {<name>: {...}}`, change-propagation's shape).
    #[arg(long)]
    rules: PathBuf,
    /// Read the rule file, print its rules, and stop.
    #[arg(long)]
    check: bool,
    /// The data folder of `sluice up` (the log is under `aggregator/log`, the embedded
    /// dependency index under `process/index`).
    #[arg(long, default_value = ".sluice")]
    data_dir: PathBuf,
    /// The embedded log folder, when not the one under `--data-dir`.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Read Kafka at these bootstrap servers instead of the embedded log.
    #[arg(long, env = "SLUICE_PROCESS_KAFKA")]
    kafka: Option<String>,
    /// A librdkafka setting for the consumers (`name=value`, repeatable).
    #[arg(long = "kafka-option", value_name = "NAME=VALUE")]
    kafka_options: Vec<String>,
    /// The edge the rules' events (produced, retries, errors, continuations) are sent to.
    #[arg(
        long,
        env = "SLUICE_PROCESS_EDGE",
        default_value = "http://127.0.0.1:8420"
    )]
    edge: String,
    /// The dependency index: a folder (the embedded store) or a `postgres://` URL.
    #[arg(long, env = "SLUICE_PROCESS_INDEX")]
    index: Option<String>,
    /// Where `/metrics` is served (port 0: any free port, printed at start).
    #[arg(long, env = "SLUICE_PROCESS_METRICS", default_value = "127.0.0.1:0")]
    metrics_listen: SocketAddr,
    /// Repeats of a `meta.id` within this many seconds run once.
    #[arg(long, default_value_t = 3600)]
    dedupe_window_secs: u64,
    /// The stream config that names each stream's topic.
    #[arg(long, default_value = "schemas/streams.yaml")]
    streams: PathBuf,
    /// Over Kafka, rules that only produce (`produce`, `derive`) write in Kafka transactions of
    /// their own, with the group's offsets (exactly once), validating their events with the
    /// edge's pipeline over `--repo`. The broker must support transactions (tansu does not);
    /// without this, they write through the edge, and repeats are dropped by the aggregator's
    /// dedupe (their ids are made from the events they come from).
    #[arg(long, env = "SLUICE_PROCESS_EXACTLY_ONCE")]
    exactly_once: bool,
    /// A schema repository folder (repeatable, in resolution order), for `--exactly-once`.
    #[arg(long = "repo", default_value = "schemas")]
    repos: Vec<PathBuf>,
}

/// Reads a rule file.
pub fn read_rules(path: &Path) -> anyhow::Result<RuleSet> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the rule file {}", path.display()))?;
    RuleSet::parse(&text).with_context(|| format!("{}", path.display()))
}

/// The dependency index `spec` names: a `postgres://` URL or a folder.
pub fn open_index(spec: &str) -> anyhow::Result<SharedIndex> {
    let index: Box<dyn sluice_process::fanout::Index<Error = String> + Send> =
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            Box::new(Texted(
                PgIndex::connect(spec, "sluice_dependencies")
                    .context("cannot open the dependency index in PostgreSQL")?,
            ))
        } else {
            Box::new(Texted(
                JournalIndex::open(Path::new(spec)).context("cannot open the dependency index")?,
            ))
        };
    Ok(Arc::new(Mutex::new(index)))
}

/// A processor's settings over the embedded log at `log_dir`, or Kafka at `kafka`.
pub fn settings(
    streams_file: &Path,
    source: SourceKind,
    edge: &str,
    index: Option<SharedIndex>,
    dedupe_window_secs: u64,
) -> anyhow::Result<Settings> {
    let streams = crate::streams::load_streams(streams_file)?;
    Ok(Settings {
        source,
        topic: Arc::new(move |s: &str| {
            streams
                .get(s)
                .map_or_else(|| s.to_owned(), |e| e.produce_topic(s))
        }),
        edge: Some(edge.trim_end_matches('/').to_owned()),
        streams: OwnStreams::default(),
        index,
        dedupe_window_ms: i64::try_from(dedupe_window_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        group_prefix: "sluice-process".into(),
        intake: None,
    })
}

/// The edge's pipeline over `repos` and the stream config in `streams_file`.
pub fn intake(
    repos: &[PathBuf],
    streams_file: &Path,
) -> anyhow::Result<Arc<sluice_shared::Intake>> {
    let text = std::fs::read_to_string(streams_file)
        .with_context(|| format!("cannot read the stream config {}", streams_file.display()))?;
    let bundle = sluice_shared::fs::read_bundle(repos, text)
        .context("cannot read the schema repositories")?;
    let (registry, streams) = bundle
        .load()
        .context("the schemas and stream config do not load")?;
    Ok(Arc::new(sluice_shared::Intake::new(
        Arc::new(registry),
        Arc::new(streams),
        sluice_shared::IntakeOptions::default(),
    )))
}

/// Each rule's counts, one line a rule.
pub fn summary(rules: &RuleSet, metrics: &ProcessMetrics) -> String {
    let mut out = String::new();
    for r in &rules.rules {
        let counts: Vec<String> = metrics
            .counts(&r.name)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!("{}: {}\n", r.name, counts.join(" ")));
    }
    out
}

/// Runs `sluice process`.
pub fn run(args: ProcessArgs) -> anyhow::Result<ExitCode> {
    let rules = read_rules(&args.rules)?;
    if args.check {
        for r in &rules.rules {
            println!(
                "{}: {} case(s) over {}",
                r.name,
                r.cases.len(),
                r.topics.join(", ")
            );
        }
        println!("rules={}", rules.rules.len());
        return Ok(ExitCode::SUCCESS);
    }
    let (source, where_) = match &args.kafka {
        Some(brokers) => {
            let mut extra = BTreeMap::new();
            for o in &args.kafka_options {
                let (k, v) = o
                    .split_once('=')
                    .with_context(|| format!("--kafka-option `{o}` is not NAME=VALUE"))?;
                extra.insert(k.to_owned(), v.to_owned());
            }
            (
                SourceKind::Kafka {
                    brokers: brokers.clone(),
                    extra,
                },
                format!("Kafka at {brokers}"),
            )
        }
        None => {
            let log_dir = crate::tail::embedded_log(&args.data_dir, args.log_dir.as_deref())?;
            let at = format!("the embedded log at {}", log_dir.display());
            (SourceKind::Log(log_dir), at)
        }
    };
    let uses_index = rules.rules.iter().any(|r| {
        r.cases
            .iter()
            .any(|c| c.track.is_some() || c.fanout.is_some())
    });
    let index = match (&args.index, uses_index) {
        (Some(spec), _) => Some(open_index(spec)?),
        (None, true) => {
            let dir = args.data_dir.join("process").join("index");
            Some(open_index(&dir.to_string_lossy())?)
        }
        (None, false) => None,
    };
    let kafka = matches!(source, SourceKind::Kafka { .. });
    let mut settings = settings(
        &args.streams,
        source,
        &args.edge,
        index,
        args.dedupe_window_secs,
    )?;
    if args.exactly_once && !kafka {
        anyhow::bail!("--exactly-once needs --kafka: the embedded log has no transactions");
    }
    if args.exactly_once && rules.rules.iter().any(|r| r.produce_only()) {
        settings.intake = Some(intake(&args.repos, &args.streams)?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let metrics = ProcessMetrics::default();
    runtime.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut server_stop = stop_rx.clone();
        let at = sluice_connect::serve_registry(args.metrics_listen, metrics.registry(), async move {
            let _ = server_stop.wait_for(|s| *s).await;
        })
        .await
        .with_context(|| format!("cannot serve metrics on {}", args.metrics_listen))?;
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "processing {} rule(s) over {where_}, writing through {}\nprocess metrics on http://{at}/metrics",
                rules.rules.len(),
                args.edge
            );
            let _ = out.flush();
        }
        let signal = tokio::spawn(async move {
            sluice_host::signals::stop().await;
            tracing::info!("Stopping: each rule finishes the events under way.");
            let _ = stop_tx.send(true);
        });
        let done = sluice_process::runner::run(rules.clone(), settings, metrics.clone(), stop_rx).await;
        signal.abort();
        done.context("processing stopped")
    })?;
    let _ = write!(std::io::stdout().lock(), "{}", summary(&rules, &metrics));
    Ok(ExitCode::SUCCESS)
}
