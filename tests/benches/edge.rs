//! The native edge under load over HTTP on loopback: a real `sluice
//! aggregator` and `sluice edge` (release builds, separate processes) and
//! an HTTP/1.1 keep-alive load client in this process, all on one machine.
//! Requests carry 50 events of about 1 KB (`sluice/test/event`, no
//! `meta.id`, so the edge makes a fresh one for each).
//!
//! For hasty and then guaranteed requests: the most events/s the edge
//! answers (closed loop, `SLUICE_BENCH_CONNECTIONS` connections, default
//! 32), then request latency percentiles at half that rate, open loop
//! (each request timed from when it was due, so a stall is not hidden).
//! Then, when the Worker is built and workerd is at hand (`SLUICE_WORKERD`),
//! the Worker's CPU time per 50-event request under workerd.
//! `SLUICE_BENCH_SECS` sets each phase's length (default 10); `SLUICE_BENCH_LZ4=0`
//! sends the edge's batches uncompressed.

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use sluice_tests::{Scratch, Workerd, metric, rebuild_binary, workspace};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-token";
const PER_REQUEST: usize = 50;

/// 900 characters of hexadecimal noise for event `i`: about as compressible as real text fields, unlike a run of one letter.
fn message(i: usize) -> String {
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

fn body() -> Bytes {
    let events: Vec<String> = (0..PER_REQUEST)
        .map(|i| {
            let message = message(i);
            format!(
                r#"{{"$schema":"/sluice/test/event/1.0.0","meta":{{"stream":"sluice.test.event"}},"dt":"2026-11-27T12:00:00.000Z","count":{i},"message":"{message}"}}"#
            )
        })
        .collect();
    Bytes::from(format!("[{}]", events.join(",")))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the edge accepts");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    sender
}

/// Sends one request; its status.
async fn send(sender: &mut Sender, addr: SocketAddr, path: &str, body: &Bytes) -> u16 {
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))
        .expect("a request");
    match sender.send_request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            status
        }
        Err(_) => 0,
    }
}

struct Tally {
    ok: AtomicU64,
    other: AtomicU64,
}

/// Closed loop: every connection sends as fast as answers come; events/s answered 2xx.
async fn max_rate(
    addr: SocketAddr,
    path: &'static str,
    connections: usize,
    secs: u64,
) -> (f64, u64) {
    let tally = Arc::new(Tally {
        ok: AtomicU64::new(0),
        other: AtomicU64::new(0),
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let body = body();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (tally, body) = (tally.clone(), body.clone());
            tokio::spawn(async move {
                let mut sender = connect(addr).await;
                while Instant::now() < deadline {
                    let status = send(&mut sender, addr, path, &body).await;
                    if (200..300).contains(&status) {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.other.fetch_add(1, Ordering::Relaxed);
                        if status == 0 {
                            sender = connect(addr).await;
                        }
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = tally.ok.load(Ordering::Relaxed);
    (
        ok as f64 * PER_REQUEST as f64 / elapsed,
        tally.other.load(Ordering::Relaxed),
    )
}

/// Open loop at `rate` requests/s spread over the connections; latencies in microseconds from when each request was due.
async fn at_rate(
    addr: SocketAddr,
    path: &'static str,
    connections: usize,
    rate: f64,
    secs: u64,
) -> (Histogram<u64>, u64) {
    let period = Duration::from_secs_f64(connections as f64 / rate.max(1.0));
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs(secs);
    let body = body();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let body = body.clone();
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new(3).expect("a histogram");
                let mut failed = 0u64;
                let mut sender = connect(addr).await;
                let mut due = start + period.mul_f64(c as f64 / connections as f64);
                while due < end {
                    tokio::time::sleep_until(due).await;
                    let status = send(&mut sender, addr, path, &body).await;
                    let latency = due.elapsed().as_micros() as u64;
                    if (200..300).contains(&status) {
                        let _ = h.record(latency.max(1));
                    } else {
                        failed += 1;
                        if status == 0 {
                            sender = connect(addr).await;
                        }
                    }
                    due += period;
                }
                (h, failed)
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new(3).expect("a histogram");
    let mut failed = 0;
    for t in tasks {
        if let Ok((h, f)) = t.await {
            let _ = all.add(h);
            failed += f;
        }
    }
    (all, failed)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

fn main() {
    let secs: u64 = std::env::var("SLUICE_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let connections: usize = std::env::var("SLUICE_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    rebuild_binary("sluice");
    // A rate limit would measure the limiter, not the edge: the test stream without one.
    let scratch = Scratch::new("sluice.test.event");
    let aggregator = scratch.aggregator(TOKEN, &[]);
    // Batches are LZ4-compressed, the edge's default, unless SLUICE_BENCH_LZ4=0.
    let compress = std::env::var("SLUICE_BENCH_LZ4").map_or(true, |v| v != "0");
    let edge = scratch.edge(
        &aggregator,
        &[
            ("SLUICE_EDGE_BATCH__HASTY_AGE_MS", "10".as_ref()),
            (
                "SLUICE_EDGE_BATCH__COMPRESS",
                if compress { "true" } else { "false" }.as_ref(),
            ),
        ],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "edge over HTTP on loopback: {PER_REQUEST}-event requests of ~1 KB events, {connections} connections, {secs} s per phase, LZ4 batches: {compress}"
    );
    println!(
        "{:<12} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10}",
        "mode", "max ev/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "spooled"
    );
    let spooled = |http| metric(http, "sluice_edge_events_total{outcome=\"spooled\"}") as u64;
    let settled = |http| {
        // Half load is measured on a settled pipeline: the spool replayed, the aggregator caught up.
        let deadline = Instant::now() + Duration::from_secs(300);
        while metric(http, "sluice_edge_spool_bytes") > 0.0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    for (mode, path) in [
        ("hasty", "/v1/events?hasty=true"),
        ("guaranteed", "/v1/events"),
    ] {
        let spooled_before = spooled(edge.http);
        let (max, errors) = rt.block_on(max_rate(edge.http, path, connections, secs));
        settled(edge.http);
        let half = max / 2.0 / PER_REQUEST as f64;
        let (h, failed) = rt.block_on(at_rate(edge.http, path, connections, half, secs));
        println!(
            "{mode:<12} {max:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>10}",
            ms(&h, 0.5),
            ms(&h, 0.9),
            ms(&h, 0.99),
            ms(&h, 0.999),
            h.max() as f64 / 1000.0,
            errors + failed,
            spooled(edge.http) - spooled_before
        );
    }
    let lost = metric(
        edge.http,
        "sluice_edge_hasty_dropped_total{outcome=\"lost\"}",
    );
    println!(
        "spooled: events the edge answered and wrote to its spool because the aggregator was busy past 5 s (replayed before the half-load phase); lost: {lost}"
    );

    let built = workspace().join("edge/build/index_bg.wasm").exists();
    let workerd = std::env::var_os("SLUICE_WORKERD").is_some();
    if !(built && workerd) {
        println!("Worker: skipped (build it with scripts/test, and set SLUICE_WORKERD)");
        return;
    }
    let url = format!("http://{}", aggregator.http);
    let worker = Workerd::start(&[("AGGREGATOR_URL", &url), ("AGGREGATOR_TOKEN", TOKEN)]);
    let pid = worker.child.0.id();
    for (mode, path) in [
        ("hasty", "/v1/events?hasty=true"),
        ("guaranteed", "/v1/events"),
    ] {
        // Warm the isolate, then count CPU over sequential requests.
        let _ = rt.block_on(max_rate(worker.http, path, 1, 1));
        let before = cpu_secs(pid);
        let start = Instant::now();
        let n = rt.block_on(async {
            let mut sender = connect(worker.http).await;
            let body = body();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_secs(secs) {
                if (200..300).contains(&send(&mut sender, worker.http, path, &body).await) {
                    n += 1;
                }
            }
            n
        });
        let cpu = cpu_secs(pid) - before;
        println!(
            "Worker under workerd, {mode}: {n} requests, workerd CPU {:.3} ms per {PER_REQUEST}-event request (HTTP in and out included), {:.0} events/s on one connection",
            cpu * 1000.0 / n.max(1) as f64,
            (n as f64 * PER_REQUEST as f64) / start.elapsed().as_secs_f64()
        );
    }
}
