//! `sluice bench-lake`: the Parquet sink against DuckDB on the same events in
//! one run. It writes N events of about 1 KB (nested objects, a list, a map,
//! timestamps, a long text) into an embedded log and the same events as
//! NDJSON; then times DuckDB's `COPY (SELECT * FROM read_json_auto(…)) TO …
//! (FORMAT parquet)` (the `duckdb` Python package) and the connector, as it
//! always runs, from the log until it has read every event and, stopped
//! gracefully, committed them all in the lake.
//! Prints events/s and bytes of Parquet side by side.

use crate::bench_connect::bar;
use anyhow::{Context, bail};
use clap::Args;
use indicatif::ProgressBar;
use sluice_connect::config::{SinkConfig, SinkKind};
use sluice_connect::metrics::SinkStream;
use sluice_connect::{ConnectConfig, ConnectMetrics};
use sluice_log::{Log, LogOptions, NewRecord};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Options of `sluice bench-lake`.
#[derive(Args, Debug)]
pub struct BenchLakeArgs {
    /// Events to write.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// The connector's batch size.
    #[arg(long, default_value_t = 5000)]
    batch_size: usize,
}

const STREAM: &str = "bench.page_view";
const SCHEMA_URI: &str = "/bench/page_view/1.0.0";
const SINK: &str = "bench_lake";
const TABLE: &str = "bench_page_view";

fn schema() -> serde_json::Value {
    serde_json::json!({
        "title": "bench/page_view", "$id": SCHEMA_URI,
        "$schema": "https://json-schema.org/draft-07/schema#", "type": "object",
        "required": ["$schema", "meta", "dt"],
        "properties": {
            "$schema": {"type": "string"},
            "dt": {"type": "string", "format": "date-time"},
            "meta": {"type": "object", "required": ["id", "dt", "stream"], "properties": {
                "id": {"type": "string"}, "dt": {"type": "string", "format": "date-time"},
                "stream": {"type": "string"}, "domain": {"type": "string"},
                "request_id": {"type": "string"}}},
            "action": {"type": "string"},
            "page": {"type": "object", "properties": {
                "id": {"type": "integer"}, "title": {"type": "string"},
                "namespace": {"type": "integer"}, "revision_id": {"type": "integer"}}},
            "performer": {"type": "object", "properties": {
                "name": {"type": "string"}, "id": {"type": "integer"},
                "edit_count": {"type": "integer"}, "is_bot": {"type": "boolean"}}},
            "tags": {"type": "array", "items": {"type": "string"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "user_agent": {"type": "string"},
            "summary": {"type": "string"},
            "ms": {"type": "number"}
        }
    })
}

const WORDS: [&str; 16] = [
    "river", "stone", "edit", "page", "history", "talk", "archive", "bridge", "north", "cloud",
    "signal", "garden", "engine", "market", "letter", "harbour",
];

/// Event `i`, about 1 KB.
fn event(i: u64) -> (i64, String) {
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &i.to_be_bytes());
    let ms = 1_796_083_200_000 + (i as i64) * 3;
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let mut summary = String::new();
    let mut w = i;
    while summary.len() < 420 {
        summary.push_str(WORDS[(w % 16) as usize]);
        summary.push(' ');
        w = w
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            >> 7;
    }
    let action = ["view", "click", "save", "edit"][(i % 4) as usize];
    let e = serde_json::json!({
        "$schema": SCHEMA_URI,
        "meta": {"id": id.to_string(), "dt": dt, "stream": STREAM, "domain": "en.wikipedia.org",
                 "request_id": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_DNS, &i.to_be_bytes()).to_string()},
        "dt": dt,
        "action": action,
        "page": {"id": (i * 7919) % 1_000_000, "title": format!("{}_{}", WORDS[(i % 16) as usize], i % 50_000),
                 "namespace": i % 4, "revision_id": 1_200_000_000 + i},
        "performer": {"name": format!("user{}", i % 20_000), "id": i % 20_000, "edit_count": (i * 31) % 100_000,
                      "is_bot": i.is_multiple_of(97)},
        "tags": ["mobile edit", format!("tag{}", i % 40)],
        "labels": {"skin": "vector-2022", "source": format!("s{}", i % 9)},
        "user_agent": format!("Mozilla/5.0 (X11; Linux x86_64; rv:{}.0) Gecko/20100101 Firefox/{}.0", 120 + i % 20, 120 + i % 20),
        "summary": summary,
        "ms": (i % 10_000) as f64 / 8.0,
    });
    (ms, e.to_string())
}

/// The same events in a log and in an NDJSON file.
struct Inputs {
    dir: tempfile::TempDir,
    repo: PathBuf,
    streams: PathBuf,
    log: PathBuf,
    ndjson: PathBuf,
}

fn prepare(events: u64) -> anyhow::Result<Inputs> {
    let (dir, repo, streams) = crate::bench_connect::scratch("bench/page_view", &schema(), STREAM)?;
    let (log_dir, ndjson) = (dir.path().join("log"), dir.path().join("events.ndjson"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&ndjson)?);
    let mut log = Log::open(&log_dir, LogOptions::default())
        .with_context(|| format!("cannot open a log in {}", log_dir.display()))?;
    let headers: [(&str, &[u8]); 2] = [
        ("schema_uri", SCHEMA_URI.as_bytes()),
        ("stream", STREAM.as_bytes()),
    ];
    let progress = bar(events, "writing the events");
    let mut chunk: Vec<(i64, String)> = Vec::with_capacity(1000);
    for i in 0..events {
        let (ms, text) = event(i);
        out.write_all(text.as_bytes())?;
        out.write_all(b"\n")?;
        chunk.push((ms, text));
        if chunk.len() == 1000 || i + 1 == events {
            let records: Vec<NewRecord<'_>> = chunk
                .iter()
                .map(|(ms, v)| NewRecord {
                    timestamp_ms: *ms,
                    key: None,
                    headers: &headers,
                    value: v.as_bytes(),
                })
                .collect();
            log.append(STREAM, &records)?;
            chunk.clear();
            progress.set_position(i + 1);
        }
    }
    log.sync()?;
    out.flush()?;
    progress.finish_and_clear();
    Ok(Inputs {
        dir,
        repo,
        streams,
        log: log_dir,
        ndjson,
    })
}

/// DuckDB's time for the COPY alone (as it reports it) and the file's size.
fn duckdb(inputs: &Inputs) -> anyhow::Result<(Duration, u64)> {
    let out = inputs.dir.path().join("duckdb.parquet");
    let spinner = ProgressBar::new_spinner().with_message("DuckDB: read_json_auto → Parquet");
    spinner.enable_steady_tick(Duration::from_millis(100));
    let run = Command::new("python3")
        .arg("-c")
        .arg("import duckdb, sys, time\nc = duckdb.connect()\nt = time.perf_counter()\nc.sql(\"COPY (SELECT * FROM read_json_auto('\" + sys.argv[1] + \"')) TO '\" + sys.argv[2] + \"' (FORMAT parquet)\")\nprint(time.perf_counter() - t)")
        .arg(&inputs.ndjson)
        .arg(&out)
        .output()
        .context("cannot run python3 (install the duckdb package: pip install duckdb)")?;
    spinner.finish_and_clear();
    if !run.status.success() {
        bail!(
            "DuckDB failed: {}",
            String::from_utf8_lossy(&run.stderr).trim()
        );
    }
    let secs: f64 = String::from_utf8_lossy(&run.stdout)
        .trim()
        .parse()
        .context("DuckDB's time")?;
    let size = std::fs::metadata(&out)?.len();
    Ok((Duration::from_secs_f64(secs), size))
}

/// Bytes of every `*.parquet` under `dir`, and their count.
fn parquet_bytes(dir: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                let (b, n) = parquet_bytes(&p);
                total = (total.0 + b, total.1 + n);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                total = (
                    total.0 + e.metadata().map(|m| m.len()).unwrap_or(0),
                    total.1 + 1,
                );
            }
        }
    }
    total
}

/// The connector's time until every event is committed, and the dataset's bytes and files.
fn connector(inputs: &Inputs, args: &BenchLakeArgs) -> anyhow::Result<(Duration, u64, u64)> {
    let lake = inputs.dir.path().join("lake");
    let sink = SinkConfig {
        streams: vec![STREAM.to_owned()],
        batch_size: args.batch_size,
        table: TABLE.to_owned(),
        ..SinkConfig::new(
            SINK,
            SinkKind::Parquet,
            &format!("file://{}", lake.display()),
        )
    };
    let config = ConnectConfig::on_log(
        inputs.streams.clone(),
        inputs.repo.clone(),
        inputs.log.clone(),
        vec![sink],
    );
    let metrics = ConnectMetrics::default();
    let stop = Arc::new(AtomicBool::new(false));
    let labels = SinkStream {
        sink: SINK.to_owned(),
        stream: STREAM.to_owned(),
    };
    let progress = bar(args.events, "the Parquet sink");
    let started = Instant::now();
    let connectors = sluice_connect::start(&config, &metrics, stop.clone())?;
    let deadline = started + Duration::from_secs(600);
    // Once every event is read, a graceful stop commits the open files: the time is the
    // whole conversion, not the wait for `max_file_age`.
    loop {
        let read = metrics.read.get_or_create(&labels).get();
        let dead = metrics.dead_letters.get_or_create(&labels).get();
        progress.set_position(read);
        if read + dead >= args.events {
            break;
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            connectors.join();
            bail!(
                "the sink read {read} of {} events in 10 minutes",
                args.events
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    connectors.join();
    let took = started.elapsed();
    progress.finish_and_clear();
    let written = metrics.rows.get_or_create(&labels).get();
    if written != args.events {
        bail!(
            "the sink committed {written} events of {}; the rest went to the dead letters",
            args.events
        );
    }
    let (bytes, files) = parquet_bytes(&lake.join(TABLE));
    Ok((took, bytes, files))
}

/// Runs `sluice bench-lake`.
pub fn run(args: BenchLakeArgs) -> anyhow::Result<ExitCode> {
    if args.events == 0 {
        bail!("--events must be at least 1");
    }
    let inputs = prepare(args.events)?;
    let ndjson = std::fs::metadata(&inputs.ndjson)
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "{} events, {:.0} bytes each on average ({:.1} MiB of NDJSON):",
        args.events,
        ndjson as f64 / args.events as f64,
        ndjson as f64 / (1024.0 * 1024.0)
    );
    let (duck_took, duck_bytes) = duckdb(&inputs)?;
    let (sink_took, sink_bytes, files) = connector(&inputs, &args)?;
    let rate = |d: Duration| args.events as f64 / d.as_secs_f64();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "{:<44} {:>8} {:>10} {:>10}",
        "", "seconds", "events/s", "MiB"
    );
    println!(
        "{:<44} {:>8.2} {:>10.0} {:>10.1}",
        "DuckDB COPY read_json_auto → Parquet",
        duck_took.as_secs_f64(),
        rate(duck_took),
        mib(duck_bytes)
    );
    println!(
        "{:<44} {:>8.2} {:>10.0} {:>10.1}",
        format!("sluice parquet sink, log → lake ({files} files)"),
        sink_took.as_secs_f64(),
        rate(sink_took),
        mib(sink_bytes)
    );
    println!(
        "sink/DuckDB: {:.0}% of DuckDB's events/s, files {:+.0}% in size",
        100.0 * duck_took.as_secs_f64() / sink_took.as_secs_f64(),
        100.0 * (sink_bytes as f64 / duck_bytes as f64 - 1.0)
    );
    drop(inputs.dir);
    Ok(ExitCode::SUCCESS)
}
