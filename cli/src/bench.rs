//! `sluice bench`: the whole pipeline under load. Starts an aggregator and
//! an edge (this binary, as separate processes) on the embedded log and
//! then on Kafka (librdkafka's mock cluster, run by this process), and for
//! hasty and guaranteed requests runs `sluice loadgen` (a third process) at
//! the most the edge answers, then at half of that. Prints one table:
//! events/s, request p50/p99 at half load, the aggregator's batch-ack p99,
//! peak RSS of edge and aggregator, and their CPU seconds per million events.
//! Each row (sink and mode) starts its own edge and aggregator on a data
//! directory of its own, so its memory figures are its own.

use crate::loadgen::Report;
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Where the aggregator writes.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// The embedded log (fsync before acknowledging).
    Log,
    /// Kafka: librdkafka's mock cluster (3 brokers) in the bench process.
    Kafka,
}

/// Request kind.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `?hasty=true`: 202 once validated and synced to the edge's spool.
    Hasty,
    /// 201 once the aggregator has made the events durable.
    Guaranteed,
}

/// Options of `sluice bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Under a minute: 3-second phases.
    #[arg(long)]
    quick: bool,
    /// Seconds per phase (default 10, or 3 with --quick).
    #[arg(long)]
    secs: Option<f64>,
    /// Load generator connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Events per request.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Sinks to measure, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "log,kafka")]
    sinks: Vec<Sink>,
    /// Request kinds to measure, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "hasty,guaranteed"
    )]
    modes: Vec<Mode>,
    /// The schema repository (holding `sluice/test/event`).
    #[arg(long, default_value = "schemas")]
    repo: PathBuf,
    /// Also measure what one open console tail costs the aggregator: four more
    /// phases at half load, without, with, with and without a tail of the bench
    /// stream open.
    #[arg(long)]
    console: bool,
    /// Append the rows to this markdown file (e.g. bench/RESULTS.md).
    #[arg(long)]
    record: Option<PathBuf>,
}

/// A child process stopped (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(
            process = self.name,
            "did not stop within 30 s of SIGTERM; killing it"
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sluice <command>` with `env`, and reads its stdout until `want`
/// has seen every address it waits for; the rest of stdout is drained.
fn start(
    name: &'static str,
    args: &[&str],
    env: &[(&str, String)],
    mut want: impl FnMut(&str) -> bool,
) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe().context("cannot find the sluice binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let stdout = child.stdout.take().context("stdout is piped")?;
    let proc = Proc { child, name };
    let mut lines = std::io::BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) => {
                if want(&line) {
                    break;
                }
            }
            _ => bail!("{name} exited before it listened"),
        }
    }
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Ok(proc)
}

/// The `/metrics` of the service at `addr`, scraped with the CLI's HTTP client.
fn scrape(addr: SocketAddr) -> anyhow::Result<prometheus_parse::Scrape> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(async {
        crate::client::Client::new(&format!("http://{addr}"))?
            .request("GET", "/metrics", None, Default::default())
            .await
    })?;
    if answer.status != 200 {
        bail!("{addr}/metrics answered {}", answer.status);
    }
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    Ok(prometheus_parse::Scrape::parse(
        text.lines().map(|l| Ok(l.to_owned())),
    )?)
}

/// Sum of the samples of `name` whose labels include every one of `labels`.
fn metric(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
        .sum()
}

/// A histogram's cumulative buckets: upper bound in µs → count.
fn buckets(scrape: &prometheus_parse::Scrape, name: &str) -> BTreeMap<u64, f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter_map(|s| match &s.value {
            prometheus_parse::Value::Histogram(counts) => Some(counts),
            _ => None,
        })
        .flatten()
        .map(|b| {
            let le = if b.less_than.is_infinite() {
                u64::MAX
            } else {
                (b.less_than * 1e6) as u64
            };
            (le, b.count)
        })
        .collect()
}

/// The p99 bucket bound (ms) of what a histogram counted between two scrapes.
fn p99_between(before: &BTreeMap<u64, f64>, after: &BTreeMap<u64, f64>) -> Option<f64> {
    let total = after.get(&u64::MAX)? - before.get(&u64::MAX).unwrap_or(&0.0);
    if total <= 0.0 {
        return None;
    }
    after
        .iter()
        .find(|(le, n)| *n - before.get(le).unwrap_or(&0.0) >= total * 0.99)
        .map(|(le, _)| {
            if *le == u64::MAX {
                f64::INFINITY
            } else {
                *le as f64 / 1000.0
            }
        })
}

/// (CPU seconds used, peak RSS in MB) of a process.
fn usage(pid: u32) -> (f64, f64) {
    sluice_host::process::usage(pid).map_or((0.0, 0.0), |u| {
        (
            u.cpu_seconds,
            u.peak_resident_bytes as f64 / (1 << 20) as f64,
        )
    })
}

/// 900 characters of hexadecimal noise for event `i`: about as compressible
/// as real text fields, unlike a run of one letter.
fn noise(i: usize) -> String {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..900)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap_or('0')
        })
        .collect()
}

/// The table's header and rule, as printed and recorded.
const HEADER: &str = "| sink  | mode       |  max ev/s |  errors |  p50 ms |  p99 ms | edge p99 |  ack p99 |  edge MB |   agg MB | CPU s/Mev |";
const RULE: &str = "|-------|------------|-----------|---------|---------|---------|----------|----------|----------|----------|-----------|";

/// One row of the table.
struct Row {
    sink: Sink,
    mode: Mode,
    max: Report,
    half: Report,
    ack_p99_ms: Option<f64>,
    edge_p99_ms: Option<f64>,
    cpu_per_million: f64,
    console: Option<ConsoleCost>,
}

/// The aggregator's CPU at one rate without and with a console tail open.
struct ConsoleCost {
    rate: f64,
    secs: f64,
    without: f64,
    with: f64,
    shown: u64,
}

/// A console tail of `stream` read (and counted) until the flag is set.
fn open_tail(
    aggregator: SocketAddr,
    stream: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<u64>> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(aggregator)?;
    write!(
        tcp,
        "GET /console/api/tail?stream={stream} HTTP/1.1\r\nHost: {aggregator}\r\nAccept: text/event-stream\r\n\r\n"
    )?;
    tcp.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(std::thread::spawn(move || {
        let mut shown = 0;
        let mut buf = vec![0u8; 64 << 10];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(n) = tcp.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                shown += text.matches("\"kind\":\"event\"").count() as u64;
            }
        }
        shown
    }))
}

fn loadgen(
    edge: SocketAddr,
    mix: &Path,
    args: &BenchArgs,
    secs: f64,
    mode: Mode,
    rate: Option<f64>,
) -> anyhow::Result<Report> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("loadgen")
        .args(["--edge", &format!("http://{edge}")])
        .args(["--duration", &secs.to_string()])
        .args(["--connections", &args.connections.to_string()])
        .args(["--batch", &args.batch.to_string()])
        .arg("--mix")
        .arg(mix)
        .args(["--format", "json"]);
    if mode == Mode::Hasty {
        cmd.arg("--hasty");
    }
    match rate {
        Some(r) => cmd.args(["--rate", &format!("{r:.0}")]),
        None => cmd.arg("--max"),
    };
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run sluice loadgen")?;
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "sluice loadgen printed no report: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn run_sink(
    sink: Sink,
    modes: &[Mode],
    args: &BenchArgs,
    secs: f64,
    dir: &Path,
) -> anyhow::Result<(Vec<Row>, f64, f64)> {
    // A data directory of its own: an aggregator started on an earlier run's log would
    // rebuild that run's dedupe window.
    let name: Vec<String> = std::iter::once(format!("{sink:?}"))
        .chain(modes.iter().map(|m| format!("{m:?}")))
        .collect();
    let data = dir.join(name.join("-").to_lowercase());
    std::fs::create_dir_all(&data)?;
    let streams = data.join("streams.yaml");
    std::fs::write(
        &streams,
        "defaults:\n  topic_prefixes: [local.]\nstreams:\n  sluice.bench.event:\n    schema_title: sluice/test/event\n",
    )?;
    // Fifty ~1 KB events that differ as real ones do.
    let mut mix = String::new();
    for i in 0..50 {
        mix.push_str(&format!(
            "- stream: sluice.bench.event\n  event: {{\"$schema\": \"/sluice/test/event/1.0.0\", \"dt\": \"2026-11-27T12:00:00.000Z\", \"count\": {i}, \"message\": \"{}\"}}\n",
            noise(i)
        ));
    }
    let mix_file = data.join("mix.yaml");
    std::fs::write(&mix_file, mix)?;
    let token = "bench-token".to_owned();
    let repo = std::path::absolute(&args.repo)?;
    let mut env = vec![
        (
            "SLUICE_AGGREGATOR_DATA_DIR",
            data.join("aggregator").display().to_string(),
        ),
        ("SLUICE_AGGREGATOR_STREAMS", streams.display().to_string()),
        (
            "SLUICE_AGGREGATOR_REPOSITORIES",
            format!("[{:?}]", repo.display().to_string()),
        ),
        ("SLUICE_AGGREGATOR_HTTP__TOKEN", token.clone()),
        ("SLUICE_AGGREGATOR_HTTP__LISTEN", "127.0.0.1:0".into()),
        ("SLUICE_AGGREGATOR_QUIC__LISTEN", "127.0.0.1:0".into()),
        ("SLUICE_AGGREGATOR_DEDUPE_WINDOW_SECS", "3600".into()),
    ];
    let cluster = match sink {
        Sink::Log => None,
        Sink::Kafka => {
            let cluster =
                rdkafka::mocking::MockCluster::<rdkafka::producer::DefaultProducerContext>::new(3)
                    .context("cannot start librdkafka's mock cluster")?;
            cluster
                .create_topic("local.sluice.bench.event", 6, 3)
                .context("cannot create the bench topic")?;
            env.push((
                "SLUICE_AGGREGATOR_KAFKA__BROKERS",
                cluster.bootstrap_servers(),
            ));
            Some(cluster)
        }
    };
    let (mut quic, mut http): (Option<SocketAddr>, Option<SocketAddr>) = (None, None);
    let aggregator = start("aggregator", &["aggregator"], &env, |line| {
        if let Some(a) = line.strip_prefix("aggregator listening on quic://") {
            quic = a.parse().ok();
        }
        if let Some(a) = line.strip_prefix("aggregator listening on http://") {
            http = a.parse().ok();
        }
        quic.is_some() && http.is_some()
    })?;
    let (Some(quic), Some(agg_http)) = (quic, http) else {
        bail!("the aggregator did not print its addresses");
    };
    let tls = data.join("aggregator/tls");
    let edge_env = vec![
        ("SLUICE_EDGE_LISTEN", "127.0.0.1:0".to_owned()),
        (
            "SLUICE_EDGE_DATA_DIR",
            data.join("edge").display().to_string(),
        ),
        ("SLUICE_EDGE_AGGREGATORS", format!("[\"{quic}\"]")),
        (
            "SLUICE_EDGE_BUNDLE__URL",
            format!("http://{agg_http}/v1/bundle"),
        ),
        (
            "SLUICE_EDGE_TLS__CA",
            tls.join("ca.pem").display().to_string(),
        ),
        (
            "SLUICE_EDGE_TLS__CERT",
            tls.join("edge.pem").display().to_string(),
        ),
        (
            "SLUICE_EDGE_TLS__KEY",
            tls.join("edge.key.pem").display().to_string(),
        ),
    ];
    let mut edge_http: Option<SocketAddr> = None;
    let edge = start("edge", &["edge"], &edge_env, |line| {
        edge_http = line
            .strip_prefix("edge listening on http://")
            .and_then(|a| a.parse().ok());
        edge_http.is_some()
    })?;
    let Some(edge_http) = edge_http else {
        bail!("the edge did not print its address");
    };
    let mut rows = Vec::new();
    for &mode in modes {
        let cpu_before = usage(edge.pid()).0 + usage(aggregator.pid()).0;
        let max = loadgen(edge_http, &mix_file, args, secs, mode, None)?;
        let cpu = usage(edge.pid()).0 + usage(aggregator.pid()).0 - cpu_before;
        settle(edge_http, agg_http);
        let histograms = || {
            let of = |addr, name| scrape(addr).map(|s| buckets(&s, name)).unwrap_or_default();
            (
                of(agg_http, "sluice_aggregator_batch_ack_seconds"),
                of(edge_http, "sluice_edge_request_seconds"),
            )
        };
        let before = histograms();
        let half = loadgen(
            edge_http,
            &mix_file,
            args,
            secs,
            mode,
            Some((max.events_per_sec / 2.0).max(1.0)),
        )?;
        let after = histograms();
        settle(edge_http, agg_http);
        let console = if args.console {
            // Without, with, with, without: the aggregator's cost per event grows as its
            // dedupe window fills, and this order cancels that trend from the comparison.
            let rate = (max.events_per_sec / 2.0).max(1.0);
            let cpu = || usage(aggregator.pid()).0;
            let (mut without, mut with, mut shown) = (0.0, 0.0, 0);
            for tail_open in [false, true, true, false] {
                let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let tail = if tail_open {
                    Some(open_tail(agg_http, "sluice.bench.event", stop.clone())?)
                } else {
                    None
                };
                let before = cpu();
                loadgen(edge_http, &mix_file, args, secs, mode, Some(rate))?;
                let used = cpu() - before;
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                if let Some(t) = tail {
                    shown += t.join().unwrap_or(0);
                    with += used;
                } else {
                    without += used;
                }
                settle(edge_http, agg_http);
            }
            Some(ConsoleCost {
                rate,
                secs: 2.0 * secs,
                without,
                with,
                shown,
            })
        } else {
            None
        };
        rows.push(Row {
            console,
            sink,
            mode,
            ack_p99_ms: p99_between(&before.0, &after.0),
            edge_p99_ms: p99_between(&before.1, &after.1),
            cpu_per_million: cpu / (max.accepted_events.max(1) as f64) * 1e6,
            max,
            half,
        });
    }
    let (edge_rss, agg_rss) = (usage(edge.pid()).1, usage(aggregator.pid()).1);
    let dropped = scrape(edge_http)
        .map(|m| metric(&m, "sluice_edge_hasty_dropped_total", &[]))
        .unwrap_or(0.0);
    if dropped > 0.0 {
        println!("warning: the edge dropped {dropped} hasty events after answering 202");
    }
    drop(edge);
    drop(aggregator);
    drop(cluster);
    Ok((rows, edge_rss, agg_rss))
}

/// Waits (two minutes at most) until the edge's spool is empty and the
/// aggregator has no batch waiting, so that each phase starts settled.
fn settle(edge: SocketAddr, aggregator: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let spool = scrape(edge)
            .map(|m| metric(&m, "sluice_edge_spool_bytes", &[]))
            .unwrap_or(0.0);
        let queue = scrape(aggregator)
            .map(|m| metric(&m, "sluice_aggregator_sink_queue_depth", &[]))
            .unwrap_or(0.0);
        if spool == 0.0 && queue == 0.0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = sluice_host::process::machine_memory_bytes()
        .map_or(0.0, |b| b as f64 / f64::from(1u32 << 30));
    format!("{cores} cores, {mem_gib:.0} GiB")
}

/// `sluice bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let secs = args.secs.unwrap_or(if args.quick { 3.0 } else { 10.0 });
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    println!(
        "sluice bench: edge, aggregator and load generator on one machine ({}); {}-event requests of ~1 KB events, {} connections, {secs} s per phase; dedupe window 1 h",
        machine(),
        args.batch,
        args.connections
    );
    let mut all = Vec::new();
    let mut result = Ok(());
    // Each row starts its own edge and aggregator: a row's RSS is its own phases' peak,
    // not grown by the dedupe window the rows before it filled.
    'rows: for &sink in &args.sinks {
        for &mode in &args.modes {
            match run_sink(sink, &[mode], &args, secs, &dir) {
                Ok(r) => all.push(r),
                Err(e) => {
                    result = Err(e);
                    break 'rows;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    println!("{HEADER}\n{RULE}");
    let mut lines = Vec::new();
    for (rows, edge_rss, agg_rss) in &all {
        for r in rows {
            let errors: u64 = r
                .max
                .statuses
                .iter()
                .chain(r.half.statuses.iter())
                .filter(|(s, _)| !(200..300).contains(*s))
                .map(|(_, n)| n)
                .sum();
            let bound = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("≤{v}"));
            let (edge_p99, ack) = (bound(r.edge_p99_ms), bound(r.ack_p99_ms));
            let line = format!(
                "| {:<5} | {:<10} | {:>9.0} | {:>7} | {:>7.2} | {:>7.2} | {:>8} | {:>8} | {:>8.0} | {:>8.0} | {:>9.1} |",
                format!("{:?}", r.sink).to_lowercase(),
                format!("{:?}", r.mode).to_lowercase(),
                r.max.events_per_sec,
                errors,
                r.half.latency_ms.get("p50").copied().unwrap_or(0.0),
                r.half.latency_ms.get("p99").copied().unwrap_or(0.0),
                edge_p99,
                ack,
                edge_rss,
                agg_rss,
                r.cpu_per_million
            );
            println!("{line}");
            lines.push(line);
        }
    }
    println!(
        "max ev/s: events/s the edge accepted, closed loop; errors: non-2xx answers in both phases; p50/p99: request latency at half that rate, open loop, as the load generator saw it; edge p99: the same requests inside the edge, body read to answer (histogram bucket bound, ms); ack p99: the aggregator's batch-ack p99 at half load (histogram bucket bound, ms); MB: peak RSS over the row's two phases (each row starts its own edge and aggregator); CPU s/Mev: edge + aggregator CPU seconds per million events at max. {:.0} s in all.",
        started.elapsed().as_secs_f64()
    );
    for (rows, _, _) in &all {
        for r in rows {
            if let Some(c) = &r.console {
                println!(
                    "console ({} {}): the aggregator used {:.2} CPU s without a tail and {:.2} s with one open ({} events shown) over {} s at {:.0} ev/s: {:+.1}% of its CPU, {:+.2}% of one core",
                    format!("{:?}", r.sink).to_lowercase(),
                    format!("{:?}", r.mode).to_lowercase(),
                    c.without,
                    c.with,
                    c.shown,
                    c.secs,
                    c.rate,
                    (c.with - c.without) / c.without.max(1e-9) * 100.0,
                    (c.with - c.without) / c.secs * 100.0,
                );
            }
        }
    }
    if let Some(file) = &args.record {
        record(file, &lines, secs, &args)?;
        println!("recorded in {}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn record(file: &Path, lines: &[String], secs: f64, args: &BenchArgs) -> anyhow::Result<()> {
    let date = time::OffsetDateTime::now_utc().date();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "–".into());
    let mut text = if file.exists() {
        std::fs::read_to_string(file)?
    } else {
        "# Benchmark results\n\nRows are appended by `sluice bench --record bench/RESULTS.md`; earlier rows stay, so regressions show.\n".to_owned()
    };
    text.push_str(&format!(
        "\n## {date}, commit {commit}, {}, {secs} s phases, {} connections{}\n\n",
        machine(),
        args.connections,
        if args.quick { ", --quick" } else { "" }
    ));
    text.push_str(HEADER);
    text.push('\n');
    text.push_str(RULE);
    text.push('\n');
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))
}
