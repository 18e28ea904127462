//! The aggregator's ingest benchmark: QUIC (TLS 1.3, loopback) batches of
//! 500 events of about 1 KB each, through dedupe, rate limits and the sink,
//! first into the embedded log, then into Kafka (librdkafka's mock cluster).
//! For each sink: the most events/s that closed-loop senders get
//! acknowledged, then an open-loop run at half that rate with ack latency
//! percentiles measured from each batch's scheduled send time (so a stall
//! is not hidden by senders that wait). Before that, the disk's sequential
//! write rate with one fsync, as the bound the embedded log cannot beat.
//! Last, the dedupe window's memory per id and for one hour at 50,000/s.
//!
//! `cargo bench -p sluice-aggregator --bench ingest`; `SLUICE_BENCH_SECS`
//! sets each run's length (default 5), `SLUICE_BENCH_SINKS` the sinks
//! (`log,kafka`), `SLUICE_BENCH_LZ4=1` sends LZ4-compressed frames, and
//! `SLUICE_BENCH_RATE` sets the open-loop rate (events/s) instead of half
//! the maximum, and `SLUICE_BENCH_DIR` where the data goes.

use hdrhistogram::Histogram;

// As the `sluice` binary runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use sluice_aggregator::quic::{self, QuicLimits};
use sluice_aggregator::{
    CommitLoop, CommitOptions, DedupeJournal, KafkaOptions, KafkaSink, Live, LogSink, Metrics, Sink,
};
use sluice_host::tls::DevCa;
use sluice_log::{Log, LogOptions};
use sluice_shared::link::status;
use sluice_shared::{
    Batch, BatchAck, BatchEvent, DedupeSet, EventAck, StreamConfig, Timestamp, WireLimits,
};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PER_BATCH: usize = 500;
const SENDERS: usize = 8;
const STREAMS: &str = r#"
streams:
  bench.event:
    schema_title: sluice/test/event
    rate_limit: {events_per_second: 100000000}
"#;

/// A 1 KB event body, as an edge would forward it.
fn event_json(n: u64) -> Vec<u8> {
    let mut json = format!(
        r#"{{"$schema":"/sluice/test/event/1.0.0","meta":{{"stream":"bench.event","id":"00000000-0000-4000-8000-{n:012x}","dt":"2026-11-27T12:00:00.000Z","domain":"bench.example.org","request_id":"5b8c2d1e-7f3a-4e9b-a2c4-d6e8f0a1b3c5"}},"dt":"2026-11-27T11:59:59.500Z","action":"click","session_id":"a1b2c3d4e5f6a7b8c9d0","page":{{"title":"Special:Benchmark","namespace":0,"revision_id":123456789}},"user":{{"edit_count_bucket":"100-999 edits","is_logged_in":true}},"ua":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36","padding":""#
    );
    // Padding that compresses about as badly as ids, hashes and free text do.
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while json.len() < 1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        json.push_str(&format!("{:x}", x));
    }
    json.truncate(1000);
    json.push_str(r#""}"#);
    json.into_bytes()
}

/// Frames of fresh events, made the way a load generator would: one batch
/// is encoded once, uncompressed, and each frame is a copy of it with new
/// batch and event ids written where the template's are (the aggregator
/// reads ids from the frame, not from the JSON). With `lz4`, each frame is
/// then compressed as edges send it.
struct Frames {
    template: Vec<u8>,
    batch_id_at: usize,
    id_offsets: Vec<usize>,
    lz4: bool,
}

impl Frames {
    fn new(lz4: bool) -> Frames {
        let marker = |i: u64| -> [u8; 16] {
            let mut m = [0xa5u8; 16];
            m[..8].copy_from_slice(&i.to_be_bytes());
            m[8] = 0x5a;
            m
        };
        let events = (0..PER_BATCH as u64)
            .map(|n| BatchEvent {
                stream: "bench.event".into(),
                topic: "local.bench.event".into(),
                partition_key: None,
                rate_key: None,
                id: marker(n),
                received_ms: 1_795_780_800_000,
                dt_ms: 1_795_780_800_000,
                schema_uri: "/sluice/test/event/1.0.0".into(),
                dedupe: true,
                json: event_json(n).into(),
            })
            .collect();
        let template = Batch {
            id: marker(u64::MAX),
            events,
            errors: Vec::new(),
        }
        .encode(false);
        let find = |from: usize, m: [u8; 16]| {
            template[from..]
                .windows(16)
                .position(|w| w == m)
                .map(|p| p + from)
                .expect("the template holds every marker")
        };
        let batch_id_at = find(0, marker(u64::MAX));
        let mut id_offsets = Vec::with_capacity(PER_BATCH);
        let mut from = batch_id_at + 16;
        for n in 0..PER_BATCH as u64 {
            let at = find(from, marker(n));
            id_offsets.push(at);
            from = at + 16;
        }
        Frames {
            template,
            batch_id_at,
            id_offsets,
            lz4,
        }
    }

    /// A frame of events numbered from `first`.
    fn make(&self, first: u64) -> Vec<u8> {
        let mut f = self.template.clone();
        f[self.batch_id_at..self.batch_id_at + 16]
            .copy_from_slice(&(u128::from(first) + 1).to_be_bytes());
        for (j, &at) in self.id_offsets.iter().enumerate() {
            let id = u128::from(first) + j as u128 + 1;
            f[at..at + 16].copy_from_slice(&id.to_be_bytes());
        }
        if !self.lz4 {
            return f;
        }
        // The frame layout: version, flags (bit 0: LZ4), decompressed length (u32 LE), LZ4 block.
        let body = &f[2..];
        let mut out = Vec::with_capacity(body.len() / 2);
        out.push(f[0]);
        out.push(1);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&lz4_flex::block::compress(body));
        out
    }
}

/// Sends a frame; true when every event was accepted.
async fn send(conn: &quinn::Connection, frame: Vec<u8>) -> bool {
    let limits = WireLimits::default();
    match sluice_host::quic::send_frame(conn, frame.into(), None, &limits).await {
        Ok(answer) => match answer.split_first() {
            Some((&status::OK, ack)) => BatchAck::decode(ack, &limits).is_ok_and(|a| {
                a.verdicts.len() == PER_BATCH && a.verdicts.iter().all(|v| *v == EventAck::Accepted)
            }),
            _ => false,
        },
        Err(_) => false,
    }
}

struct Run {
    events_per_sec: f64,
    failed: u64,
    latency: Histogram<u64>,
}

/// Closed loop: `SENDERS` tasks send back to back for `secs`.
async fn at_max(
    conn: &quinn::Connection,
    frames: &Arc<Frames>,
    next: &Arc<AtomicU64>,
    secs: u64,
) -> Run {
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let conn = conn.clone();
        let next = next.clone();
        let frames = frames.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("a histogram");
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < end {
                let f = frames.make(next.fetch_add(PER_BATCH as u64, Ordering::Relaxed));
                let t = Instant::now();
                if send(&conn, f).await {
                    ok += 1;
                    let _ = hist.record(t.elapsed().as_micros() as u64);
                } else {
                    failed += 1;
                }
            }
            (ok, failed, hist)
        }));
    }
    let mut run = Run {
        events_per_sec: 0.0,
        failed: 0,
        latency: Histogram::new(3).expect("a histogram"),
    };
    let mut ok = 0;
    for t in tasks {
        if let Ok((o, f, h)) = t.await {
            ok += o;
            run.failed += f;
            let _ = run.latency.add(h);
        }
    }
    run.events_per_sec = (ok * PER_BATCH as u64) as f64 / start.elapsed().as_secs_f64();
    run
}

/// Open loop: one batch every `1/rate` of a second, each timed from when it was due.
async fn at_rate(
    conn: &quinn::Connection,
    frames: &Frames,
    next: &Arc<AtomicU64>,
    events_per_sec: f64,
    secs: u64,
) -> Run {
    let interval = Duration::from_secs_f64(PER_BATCH as f64 / events_per_sec);
    let count = (secs as f64 / interval.as_secs_f64()) as u64;
    // Made before the clock starts, as an edge has its batch ready when it sends it.
    let ready: Vec<Vec<u8>> = (0..count)
        .map(|_| frames.make(next.fetch_add(PER_BATCH as u64, Ordering::Relaxed)))
        .collect();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(count as usize);
    for (i, f) in ready.into_iter().enumerate() {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let ok = send(&conn, f).await;
            (ok, due.elapsed())
        }));
    }
    let mut run = Run {
        events_per_sec: 0.0,
        failed: 0,
        latency: Histogram::new(3).expect("a histogram"),
    };
    let mut ok = 0u64;
    for t in tasks {
        if let Ok((good, took)) = t.await {
            if good {
                ok += 1;
                let _ = run.latency.record(took.as_micros() as u64);
            } else {
                run.failed += 1;
            }
        }
    }
    run.events_per_sec = (ok * PER_BATCH as u64) as f64 / start.elapsed().as_secs_f64();
    run
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Sequential write rate of the disk under `dir`: 1 GiB in 1 MiB writes, then one fsync.
fn disk_rate(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("disk-rate.tmp");
    let chunk = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    for _ in 0..1024 {
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    let rate = 1024.0 * 1.048_576 / start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(rate)
}

async fn bench_sink(
    lz4: bool,
    name: &str,
    sink: Box<dyn Sink>,
    metrics: Metrics,
    secs: u64,
) -> anyhow::Result<()> {
    let streams = Live::new(StreamConfig::parse(STREAMS).map_err(|e| anyhow::anyhow!("{e:?}"))?);
    let sink = CommitLoop::start(sink, streams, CommitOptions::default(), metrics);
    let ca = DevCa::generate("bench CA")?;
    let (server_id, _, _) = ca.issue(&["localhost"], false)?;
    let limits = QuicLimits::default();
    let endpoint =
        quic::server_endpoint("127.0.0.1:0".parse()?, server_id, ca.certificate(), limits)?;
    let addr = endpoint.local_addr()?;
    tokio::spawn(quic::serve(
        endpoint,
        sink,
        None,
        WireLimits::default(),
        limits,
    ));
    let (edge_id, _, _) = ca.issue(&["bench-edge"], true)?;
    let client = sluice_host::quic::client_endpoint(ca.certificate(), Some(edge_id))?;
    let conn = client.connect(addr, "localhost")?.await?;
    let next = Arc::new(AtomicU64::new(0));
    let frames = Arc::new(Frames::new(lz4));

    // A short warm-up, so the first run does not pay for first touches.
    let _ = at_max(&conn, &frames, &next, 1).await;
    let max = at_max(&conn, &frames, &next, secs).await;
    // `SLUICE_BENCH_RATE` fixes the open-loop rate instead of half the maximum.
    let rate = std::env::var("SLUICE_BENCH_RATE")
        .ok()
        .and_then(|r| r.parse::<f64>().ok())
        .unwrap_or(max.events_per_sec / 2.0);
    let half = at_rate(&conn, &frames, &next, rate, secs).await;
    println!(
        "{name:<6} max: {:>9.0} events/s ({:>6.1} MB/s of event JSON), ack p50 {:>6.2} ms p99 {:>6.2} ms, failed batches {}",
        max.events_per_sec,
        max.events_per_sec * 1024.0 / 1e6,
        ms(&max.latency, 0.5),
        ms(&max.latency, 0.99),
        max.failed
    );
    println!(
        "{name:<6} half: {:>8.0} events/s offered {:>9.0}, ack p50 {:>6.2} ms p90 {:>6.2} ms p99 {:>6.2} ms p99.9 {:>6.2} ms max {:>6.2} ms, failed batches {}",
        half.events_per_sec,
        rate,
        ms(&half.latency, 0.5),
        ms(&half.latency, 0.9),
        ms(&half.latency, 0.99),
        ms(&half.latency, 0.999),
        half.latency.max() as f64 / 1000.0,
        half.failed
    );
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    Ok(())
}

/// The dedupe window in steady state, on a simulated clock: 50,000 ids a
/// second for 120 s through an 80 s window (so the first, grown generation
/// has left and later ones were sized from their predecessors, as in a long
/// run). Memory per id does not depend on the window's length, so the hour
/// is extrapolated from it.
fn dedupe_memory() {
    const PER_SEC: u64 = 50_000;
    const SECS: u64 = 120;
    let mut set = DedupeSet::new(80_000_000_000, 7);
    let start = Timestamp::from_unix_millis(1_795_780_800_000);
    let mut worst = Duration::ZERO;
    for i in 0..PER_SEC * SECS {
        let at = start.add_nanos((i * 1_000_000_000 / PER_SEC) as i64);
        let id = u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        let t = Instant::now();
        set.check_and_insert(id, at);
        worst = worst.max(t.elapsed());
    }
    let per_id = set.memory_bytes() as f64 / set.len() as f64;
    let hour = (PER_SEC * 3600) as f64;
    println!(
        "dedupe: steady state {per_id:.1} bytes per held id ({} ids, {:.1} MB); one hour at 50,000 events/s ({hour:.0} ids) is about {:.2} GB; slowest insert {:.2} ms",
        set.len(),
        set.memory_bytes() as f64 / 1e6,
        per_id * hour / 1e9,
        worst.as_secs_f64() * 1000.0
    );
}

fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("SLUICE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let lz4 = std::env::var("SLUICE_BENCH_LZ4").is_ok_and(|v| v == "1");
    let sinks = std::env::var("SLUICE_BENCH_SINKS").unwrap_or_else(|_| "log,kafka".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // `SLUICE_BENCH_DIR` puts the data on another disk (say a tmpfs, to take the disk out).
    let dir = match std::env::var_os("SLUICE_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base)?,
        None => tempfile::tempdir()?,
    };
    println!(
        "QUIC ingest, {PER_BATCH}-event batches of ~1 KB events ({}), {SENDERS} senders, {secs} s per run, {} cores",
        if lz4 { "LZ4 frames" } else { "plain frames" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "disk: {:.0} MB/s sequential write with fsync",
        disk_rate(dir.path())?
    );
    for sink in sinks.split(',').filter(|s| !s.is_empty()) {
        match sink {
            "log" => {
                let log = Log::open(&dir.path().join("log"), LogOptions::default())?;
                runtime.block_on(bench_sink(
                    lz4,
                    "log",
                    Box::new(LogSink::new(log, None)),
                    Metrics::new(),
                    secs,
                ))?;
            }
            "kafka" => {
                let cluster = MockCluster::<DefaultProducerContext>::new(3)?;
                cluster.create_topic("local.bench.event", 6, 3)?;
                let metrics = Metrics::new();
                let options = KafkaOptions {
                    brokers: cluster.bootstrap_servers(),
                    properties: Default::default(),
                };
                let journal =
                    DedupeJournal::open(&dir.path().join("dedupe"), Duration::from_secs(3600))?;
                let kafka = KafkaSink::connect(&options, journal, &metrics)?;
                runtime.block_on(bench_sink(lz4, "kafka", Box::new(kafka), metrics, secs))?;
            }
            other => anyhow::bail!("unknown sink `{other}`: use log or kafka"),
        }
    }
    dedupe_memory();
    Ok(())
}
