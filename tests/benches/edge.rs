//! The edge as a Cloudflare Worker under workerd: CPU time per 50-event
//! request of about 1 KB events (`sluice/test/event`), hasty and guaranteed,
//! against a real `sluice aggregator`. The native edge under load is
//! `sluice bench` (edge, aggregator and load generator as processes).
//! Needs the Worker built (`scripts/test` builds it) and `SLUICE_WORKERD`;
//! `SLUICE_BENCH_SECS` sets each phase's length (default 10).

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use sluice_tests::{Scratch, Workerd, rebuild_binary, workspace};
use std::net::SocketAddr;
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

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: u32) -> f64 {
    sluice_host::process::usage(pid).map_or(0.0, |u| u.cpu_seconds)
}

fn main() {
    let secs: u64 = std::env::var("SLUICE_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let built = workspace().join("edge/build/index_bg.wasm").exists();
    let workerd = std::env::var_os("SLUICE_WORKERD").is_some();
    if !(built && workerd) {
        println!("Worker: skipped (build it with scripts/test, and set SLUICE_WORKERD)");
        return;
    }
    rebuild_binary("sluice");
    let scratch = Scratch::new("sluice.test.event");
    let aggregator = scratch.aggregator(TOKEN, &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let url = format!("http://{}", aggregator.http);
    let worker = Workerd::start(&[("AGGREGATOR_URL", &url), ("AGGREGATOR_TOKEN", TOKEN)]);
    let pid = worker.child.0.id();
    for (mode, path) in [
        ("hasty", "/v1/events?hasty=true"),
        ("guaranteed", "/v1/events"),
    ] {
        let body = body();
        // Warm the isolate, then count CPU over sequential requests.
        rt.block_on(async {
            let mut sender = connect(worker.http).await;
            for _ in 0..20 {
                let _ = send(&mut sender, worker.http, path, &body).await;
            }
        });
        let before = cpu_secs(pid);
        let start = Instant::now();
        let n = rt.block_on(async {
            let mut sender = connect(worker.http).await;
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
