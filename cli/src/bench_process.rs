//! `sluice bench-process`: the processor's two paths against their anchors,
//! in one run.
//!
//! - **HTTP**: N events in an embedded log, one `exec` rule that posts each
//!   to a local endpoint answering 200 at once; matched events executed per
//!   second, against the anchor of the same HTTP client alone sending as
//!   many requests to the same endpoint at the same concurrency (what the
//!   machine's HTTP costs without the processor).
//! - **Produce**: N events in a Kafka-protocol broker (librdkafka's mock
//!   cluster, in this process), one produce-only rule in Kafka transactions
//!   (`--exactly-once`: each event validated by the edge's pipeline, written
//!   with the group's offsets); produced events per second, against the
//!   anchor of an idempotent producer writing the same events to the same
//!   broker.

use anyhow::Context;
use clap::Args;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use sluice_log::{Log, LogOptions, NewRecord};
use sluice_process::RuleSet;
use sluice_process::metrics::{ProcessMetrics, RuleLabel};
use sluice_process::runner::{OwnStreams, Settings, SourceKind};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `sluice bench-process`.
#[derive(Args, Debug)]
pub struct BenchProcessArgs {
    /// Events per path (the mock cluster keeps 5 MB a partition: beyond about 300,000 of these
    /// events in its 16 partitions, its oldest are dropped before they are read).
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Requests under way at once (the rule's `concurrency`, and the anchor's).
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Which paths to run (`http`, `produce`); both by default.
    #[arg(long, value_delimiter = ',', default_values_t = [Path::Http, Path::Produce])]
    paths: Vec<Path>,
    /// The schema repository (holding `sluice/test/event`).
    #[arg(long, default_value = "schemas")]
    repo: PathBuf,
}

/// A path of the processor the bench measures.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// An `exec` rule posting to a local endpoint.
    Http,
    /// A produce-only rule in Kafka transactions.
    Produce,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Path::Http => "http",
            Path::Produce => "produce",
        })
    }
}

const STREAMS: &str = "defaults:\n  topic_prefixes: [bench.]\nstreams:\n  in:\n    schema_title: sluice/test/event\n  out:\n    schema_title: sluice/test/event\n  sluice.process.error:\n    schema_title: error\n";

fn event(n: u64) -> Vec<u8> {
    format!(
        r#"{{"$schema":"/sluice/test/event/1.1.0","meta":{{"id":"00000000-0000-4000-8000-{n:012}","stream":"in","dt":"2026-12-06T12:00:00.000Z"}},"dt":"2026-12-06T12:00:00.000Z","count":{n},"message":"bench"}}"#
    )
    .into_bytes()
}

/// Serves 200 with an empty body to every request until the runtime ends.
async fn endpoint() -> anyhow::Result<std::net::SocketAddr> {
    let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::OK });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let at = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(at)
}

/// A processor running in this process.
type Running = tokio::task::JoinHandle<Result<(), sluice_process::runner::RunError>>;

/// Waits until `done()` reaches `n`, with a progress bar, then stops the processor; events
/// per second from the first done. A processor that stops before is an error.
async fn until(
    n: u64,
    what: &str,
    done: impl Fn() -> u64,
    mut run: Running,
    stop: tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<f64> {
    let bar = crate::bench_connect::bar(n, what);
    // The clock starts at the first event done: joining the group (seconds on a Kafka
    // broker's first rebalance) is not the processor's rate.
    let mut start = None;
    loop {
        let d = done();
        bar.set_position(d);
        if d > 0 && start.is_none() {
            start = Some((Instant::now(), d));
        }
        if d >= n {
            break;
        }
        tokio::select! {
            ended = &mut run => {
                bar.finish_and_clear();
                ended??;
                anyhow::bail!("the processor stopped after {d} of {n} events ({what})");
            }
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    let (at, first) = start.unwrap_or((Instant::now(), 0));
    // Events per second from the first done to the last.
    let rate = (n - first) as f64 / at.elapsed().as_secs_f64().max(1e-9);
    bar.finish_and_clear();
    let _ = stop.send(true);
    run.await??;
    Ok(rate)
}

fn settings(source: SourceKind, edge: Option<String>) -> Settings {
    Settings {
        source,
        topic: Arc::new(|s: &str| format!("bench.{s}")),
        edge,
        streams: OwnStreams::default(),
        index: None,
        dedupe_window_ms: 3_600_000,
        group_prefix: "sluice-bench".into(),
        intake: None,
    }
}

/// The HTTP path: (anchor requests/s, processor executions/s).
async fn http(args: &BenchProcessArgs) -> anyhow::Result<(f64, f64)> {
    let at = endpoint().await?;
    // The anchor: the same client, the same endpoint, the same concurrency.
    let client = sluice_process::runner::http_client()?;
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, sent, n) = (client.clone(), sent.clone(), args.events);
        workers.push(tokio::spawn(async move {
            loop {
                let i = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let _ = client
                    .post(format!("http://{at}/x/{i}"))
                    .body("{}")
                    .send()
                    .await;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let anchor = args.events as f64 / started.elapsed().as_secs_f64();

    let dir = tempfile::tempdir()?;
    let log_dir = dir.path().join("log");
    {
        let mut log = Log::open(&log_dir, LogOptions::default())
            .with_context(|| format!("cannot open a log in {}", log_dir.display()))?;
        let mut values = Vec::with_capacity(1000);
        for n in 0..args.events {
            values.push(event(n));
            if values.len() == 1000 || n + 1 == args.events {
                let records: Vec<NewRecord<'_>> = values
                    .iter()
                    .map(|v| NewRecord {
                        timestamp_ms: 1_796_558_400_000,
                        key: None,
                        headers: &[],
                        value: v,
                    })
                    .collect();
                log.append("bench.in", &records)?;
                values.clear();
            }
        }
        log.sync()?;
    }
    let rules = RuleSet::parse(&format!(
        "rules:\n  call:\n    topic: in\n    exec: {{method: post, uri: 'http://{at}/purge/{{{{message.count}}}}', body: {{id: '{{{{message.meta.id}}}}'}}}}\n    concurrency: {}\n",
        args.concurrency
    ))?;
    let metrics = ProcessMetrics::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(sluice_process::runner::run(
        rules,
        settings(SourceKind::Log(log_dir), Some("http://127.0.0.1:9".into())),
        metrics.clone(),
        stop_rx,
    ));
    let label = RuleLabel {
        rule: "call".into(),
    };
    let executed = metrics.executed.get_or_create(&label).clone();
    let rate = until(
        args.events,
        "processor: HTTP",
        || executed.get(),
        run,
        stop_tx,
    )
    .await?;
    Ok((anchor, rate))
}

/// Hands `record` to `producer`, waiting while its queue is full.
fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, str, [u8]>,
) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Waits until every record `producer` was given is acknowledged (its own thread serves the
/// acknowledgements; the client's flush would wait in steps of 100 ms).
fn settle(producer: &ThreadedProducer<DefaultProducerContext>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while producer.in_flight_count() > 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the broker did not acknowledge {} records within a minute",
            producer.in_flight_count()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Partitions of each topic in the mock cluster.
const PARTITIONS: i32 = 16;

/// The produce path: (anchor events/s, processor events/s).
async fn produce(args: &BenchProcessArgs) -> anyhow::Result<(f64, f64)> {
    let cluster = MockCluster::<DefaultProducerContext>::new(1)?;
    for topic in ["bench.in", "bench.out", "bench.anchor"] {
        cluster.create_topic(topic, PARTITIONS, 1)?;
    }
    let brokers = cluster.bootstrap_servers();
    let feed = |topic: &str| -> anyhow::Result<f64> {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()?;
        // Connected and holding a producer id before the clock starts, as the processor is
        // when its clock starts (at its first event done).
        let warm = event(u64::MAX);
        send(
            &producer,
            BaseRecord::to(topic).key("warm").payload(&warm[..]),
        )?;
        settle(&producer)?;
        let started = Instant::now();
        for n in 0..args.events {
            let value = event(n);
            let key = n.to_string();
            send(
                &producer,
                BaseRecord::to(topic).key(key.as_str()).payload(&value[..]),
            )?;
        }
        settle(&producer)?;
        Ok(args.events as f64 / started.elapsed().as_secs_f64())
    };
    let anchor = feed("bench.anchor")?;
    feed("bench.in")?;
    let streams_file = tempfile::NamedTempFile::new()?;
    std::fs::write(streams_file.path(), STREAMS)?;
    let intake = crate::process::intake(std::slice::from_ref(&args.repo), streams_file.path())?;
    let rules = RuleSet::parse(
        "rules:\n  copy:\n    topic: in\n    derive: {stream: out, fields: {message: copied}}\n",
    )?;
    let mut s = settings(
        SourceKind::Kafka {
            brokers: brokers.clone(),
            extra: BTreeMap::new(),
        },
        None,
    );
    s.intake = Some(intake);
    let metrics = ProcessMetrics::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(sluice_process::runner::run(
        rules,
        s,
        metrics.clone(),
        stop_rx,
    ));
    let produced = metrics
        .produced
        .get_or_create(&RuleLabel {
            rule: "copy".into(),
        })
        .clone();
    let rate = until(
        args.events,
        "processor: produce",
        || produced.get(),
        run,
        stop_tx,
    )
    .await?;
    Ok((anchor, rate))
}

/// Runs `sluice bench-process`.
pub fn run(args: BenchProcessArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let http = if args.paths.contains(&Path::Http) {
        Some(runtime.block_on(http(&args))?)
    } else {
        None
    };
    let produce = if args.paths.contains(&Path::Produce) {
        Some(runtime.block_on(produce(&args))?)
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "events={} concurrency={} cores={}",
        args.events,
        args.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    if let Some((anchor, rate)) = http {
        writeln!(
            out,
            "http     anchor (client alone) {:>9.0} req/s   processor {:>9.0} executed/s   ({:.0}% of the anchor; target 50000)",
            anchor,
            rate,
            100.0 * rate / anchor
        )?;
    }
    if let Some((anchor, rate)) = produce {
        writeln!(
            out,
            "produce  anchor (producer)     {:>9.0} ev/s    processor {:>9.0} produced/s   ({:.0}% of the anchor; target 200000)",
            anchor,
            rate,
            100.0 * rate / anchor
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
