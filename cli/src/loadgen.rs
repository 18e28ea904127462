//! `sluice loadgen`: load for an edge, as its own process so that the
//! numbers include real sockets. HTTP/1.1 keep-alive POSTs of batches built
//! from schema examples (or a mix file), each event with a unique `meta.id`.
//! Open loop at a fixed rate, each request timed from when it was due (so a
//! stall shows as latency instead of hiding as fewer requests), or closed
//! loop at the most the edge answers.

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};
use sluice_shared::{SchemaRepository, StreamConfig, fs};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Output for people or programs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// A few lines for people.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// Options of `sluice loadgen`.
#[derive(Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// The edge's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8420")]
    pub edge: String,
    /// Events per second to offer, open loop (`50000` or `50000/s`).
    #[arg(long, conflicts_with = "max")]
    pub rate: Option<String>,
    /// Send as fast as the edge answers (closed loop). The default without `--rate`.
    #[arg(long)]
    pub max: bool,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Events per request.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Hasty requests (`?hasty=true`): answered 202 before the aggregator has them.
    #[arg(long)]
    pub hasty: bool,
    /// A mix file: a YAML list of `{stream, event, weight}` (event: a JSON object
    /// with its `$schema`). Default: every example of the schemas the streams
    /// of `--streams` take, from `--repo`.
    #[arg(long)]
    pub mix: Option<PathBuf>,
    /// Schema repositories for the default mix.
    #[arg(long = "repo", default_value = "schemas")]
    pub repos: Vec<PathBuf>,
    /// The stream config for the default mix.
    #[arg(long, default_value = "schemas/streams.yaml")]
    pub streams: PathBuf,
    /// Threads sending requests. One thread late to send (descheduled on a busy
    /// machine) makes every request due meanwhile late: two keep that out of
    /// the edge's numbers at the cost of a little CPU.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// One kind of event in the mix: its JSON split around the `meta.id` value.
struct Template {
    before: String,
    after: String,
    weight: u32,
}

const ID_MARK: &str = "\u{1}sluice-loadgen-id\u{1}";

impl Template {
    fn new(stream: &str, mut event: Value, weight: u32) -> anyhow::Result<Template> {
        let obj = event
            .as_object_mut()
            .with_context(|| format!("an event of stream {stream} is not a JSON object"))?;
        let meta = obj.entry("meta").or_insert_with(|| json!({}));
        let meta = meta
            .as_object_mut()
            .with_context(|| format!("meta of an event of stream {stream} is not an object"))?;
        meta.insert("stream".into(), json!(stream));
        meta.insert("id".into(), json!(ID_MARK));
        let text = serde_json::to_string(&event)?;
        let quoted = serde_json::to_string(ID_MARK)?;
        let Some((before, after)) = text.split_once(&quoted) else {
            bail!("cannot place meta.id in an event of stream {stream}");
        };
        Ok(Template {
            before: format!("{before}\""),
            after: format!("\"{after}"),
            weight: weight.max(1),
        })
    }
}

/// The events to send, chosen by weight in a fixed rotation.
struct Mix {
    rotation: Vec<usize>,
    templates: Vec<Template>,
}

impl Mix {
    fn load(args: &LoadgenArgs) -> anyhow::Result<Mix> {
        let mut templates = Vec::new();
        if let Some(file) = &args.mix {
            let text = std::fs::read(file)
                .with_context(|| format!("cannot read the mix {}", file.display()))?;
            let items = sluice_shared::parse_document(&text, "yaml")
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let Value::Array(items) = items else {
                bail!(
                    "{}: a mix is a list of {{stream, event, weight}}",
                    file.display()
                );
            };
            for (i, item) in items.into_iter().enumerate() {
                let stream = item
                    .get("stream")
                    .and_then(Value::as_str)
                    .with_context(|| format!("{}: item {i} has no stream", file.display()))?;
                let event = item
                    .get("event")
                    .cloned()
                    .with_context(|| format!("{}: item {i} has no event", file.display()))?;
                let weight = item.get("weight").and_then(Value::as_u64).unwrap_or(1);
                templates.push(Template::new(stream, event, weight.min(1000) as u32)?);
            }
        } else {
            let streams_text = std::fs::read_to_string(&args.streams)
                .with_context(|| format!("cannot read {}", args.streams.display()))?;
            let streams = StreamConfig::parse(&streams_text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {}",
                    args.streams.display(),
                    e.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?;
            let mut repos: Vec<SchemaRepository> = Vec::new();
            for dir in &args.repos {
                let (repo, _) = fs::load_dir(dir)
                    .with_context(|| format!("cannot read schema repository {}", dir.display()))?;
                repos.push(repo);
            }
            for entry in streams.entries() {
                if entry.key.starts_with('/') {
                    continue;
                }
                let title = &entry.settings.schema_title;
                let latest = repos
                    .iter()
                    .find_map(|r| r.versions.get(title).and_then(|v| v.values().next_back()));
                let examples = latest
                    .and_then(|f| f.document.get("examples"))
                    .and_then(Value::as_array);
                for e in examples.into_iter().flatten() {
                    templates.push(Template::new(&entry.key, e.clone(), 1)?);
                }
            }
        }
        if templates.is_empty() {
            bail!("the mix is empty: no stream of the config takes a schema with examples");
        }
        let rotation = templates
            .iter()
            .enumerate()
            .flat_map(|(i, t)| std::iter::repeat_n(i, t.weight as usize))
            .collect();
        Ok(Mix {
            rotation,
            templates,
        })
    }

    /// A request body of `n` events, ids `run`-`next…`.
    fn body(&self, n: usize, run: u64, next: &AtomicU64) -> Bytes {
        let first = next.fetch_add(n as u64, Ordering::Relaxed);
        let mut out = String::with_capacity(n * 1200);
        out.push('[');
        for k in 0..n {
            let seq = first + k as u64;
            let t = &self.templates[self.rotation[(seq as usize) % self.rotation.len()]];
            if k > 0 {
                out.push(',');
            }
            out.push_str(&t.before);
            // A UUID-shaped id: the run's 64 random bits, then the sequence number.
            let mut id = *b"00000000-0000-4000-8000-000000000000";
            let hex = |at: &mut [u8], mut v: u64| {
                for b in at.iter_mut().rev() {
                    *b = b"0123456789abcdef"[(v & 0xf) as usize];
                    v >>= 4;
                }
            };
            hex(&mut id[0..8], run >> 32);
            hex(&mut id[9..13], (run >> 16) & 0xffff);
            hex(&mut id[15..18], run & 0xfff);
            hex(&mut id[20..23], (seq >> 48) & 0xfff);
            hex(&mut id[24..36], seq & 0xffff_ffff_ffff);
            out.push_str(std::str::from_utf8(&id).unwrap_or_default());
            out.push_str(&t.after);
        }
        out.push(']');
        Bytes::from(out)
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> std::io::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request's outcome: its status (0 for a client-side error) and how
/// many of its events the edge refused (listed in a 207 or 400 body).
async fn send(
    sender: &mut Option<Sender>,
    addr: SocketAddr,
    path: &str,
    body: Bytes,
) -> (u16, usize) {
    if sender.is_none() {
        *sender = connect(addr).await.ok();
    }
    let Some(s) = sender.as_mut() else {
        return (0, 0);
    };
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body));
    let Ok(req) = req else { return (0, 0) };
    match s.send_request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
            let refused = match (status, body) {
                (207 | 400, Ok(b)) => serde_json::from_slice::<Value>(&b)
                    .ok()
                    .map(|v| {
                        ["invalid", "error"]
                            .iter()
                            .filter_map(|k| v.get(k).and_then(Value::as_array).map(Vec::len))
                            .sum()
                    })
                    .unwrap_or(0),
                _ => 0,
            };
            (status, refused)
        }
        Err(_) => {
            *sender = None;
            (0, 0)
        }
    }
}

/// What one connection saw.
struct Seen {
    latency: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    requests: u64,
    refused: u64,
    client_errors: u64,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            latency: Histogram::<u64>::new(3).expect("3 significant figures is a valid precision"),
            statuses: BTreeMap::new(),
            requests: 0,
            refused: 0,
            client_errors: 0,
        }
    }

    fn add(&mut self, other: Seen) {
        let _ = self.latency.add(other.latency);
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.requests += other.requests;
        self.refused += other.refused;
        self.client_errors += other.client_errors;
    }
}

/// The report of a run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// `max` or `rate`.
    pub mode: String,
    /// Events/s offered (open loop), if any.
    pub offered_events_per_sec: Option<f64>,
    /// Seconds the run took.
    pub seconds: f64,
    /// Requests sent.
    pub requests: u64,
    /// Events sent.
    pub events: u64,
    /// Requests by status (`0`: no answer: connection refused or broken).
    pub statuses: BTreeMap<u16, u64>,
    /// Events the edge took (in 2xx answers, less those a 207 listed).
    pub accepted_events: u64,
    /// Accepted events per second.
    pub events_per_sec: f64,
    /// Request latency in milliseconds (answered requests).
    pub latency_ms: BTreeMap<String, f64>,
    /// Requests that got no HTTP answer.
    pub client_errors: u64,
}

fn parse_rate(s: &str) -> anyhow::Result<f64> {
    let n = s.trim().trim_end_matches("/s").replace('_', "");
    let r: f64 = n
        .parse()
        .with_context(|| format!("--rate {s}: not a number of events per second"))?;
    if !(r.is_finite() && r > 0.0) {
        bail!("--rate {s}: must be above zero");
    }
    Ok(r)
}

/// Runs the load and returns its report.
pub fn run_load(args: &LoadgenArgs) -> anyhow::Result<Report> {
    let url: hyper::Uri = args
        .edge
        .parse()
        .with_context(|| format!("--edge {}: not a URL", args.edge))?;
    let host = url.host().context("--edge has no host")?;
    let port = url.port_u16().unwrap_or(80);
    let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} resolves to nothing"))?;
    if args.batch == 0 || args.connections == 0 {
        bail!("--batch and --connections must be at least 1");
    }
    let rate = args.rate.as_deref().map(parse_rate).transpose()?;
    let mix = Arc::new(Mix::load(args)?);
    let path: &'static str = if args.hasty {
        "/v1/events?hasty=true"
    } else {
        "/v1/events"
    };
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
    let run = u64::from_le_bytes(seed);
    let next = Arc::new(AtomicU64::new(0));
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let (connections, batch, duration) = (args.connections, args.batch, args.duration);
    let (seen, seconds) = rt.block_on(async move {
        let start = Instant::now() + Duration::from_millis(50);
        let end = start + Duration::from_secs_f64(duration);
        let period = rate.map(|r| Duration::from_secs_f64(connections as f64 * batch as f64 / r));
        let tasks: Vec<_> = (0..connections)
            .map(|c| {
                let (mix, next) = (mix.clone(), next.clone());
                tokio::spawn(async move {
                    let mut seen = Seen::new();
                    let mut sender = None;
                    let mut due = start
                        + period
                            .map_or(Duration::ZERO, |p| p.mul_f64(c as f64 / connections as f64));
                    tokio::time::sleep_until(start).await;
                    while due < end {
                        if period.is_some() {
                            tokio::time::sleep_until(due).await;
                        } else {
                            due = Instant::now();
                        }
                        let body = mix.body(batch, run, &next);
                        let (status, refused) = send(&mut sender, addr, path, body).await;
                        seen.requests += 1;
                        *seen.statuses.entry(status).or_default() += 1;
                        if status == 0 {
                            seen.client_errors += 1;
                        } else {
                            let micros = due.elapsed().as_micros() as u64;
                            let _ = seen.latency.record(micros.max(1));
                            seen.refused += refused as u64;
                        }
                        if let Some(p) = period {
                            due += p;
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut all = Seen::new();
        for t in tasks {
            if let Ok(s) = t.await {
                all.add(s);
            }
        }
        (all, start.elapsed().as_secs_f64())
    });
    let ok_requests: u64 = seen
        .statuses
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    let accepted = (ok_requests * batch as u64).saturating_sub(seen.refused);
    let q = |q: f64| seen.latency.value_at_quantile(q) as f64 / 1000.0;
    let latency_ms = [
        ("p50", q(0.5)),
        ("p90", q(0.9)),
        ("p99", q(0.99)),
        ("p99.9", q(0.999)),
        ("max", seen.latency.max() as f64 / 1000.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Ok(Report {
        mode: if rate.is_some() { "rate" } else { "max" }.to_owned(),
        offered_events_per_sec: rate,
        seconds,
        requests: seen.requests,
        events: seen.requests * batch as u64,
        statuses: seen.statuses,
        accepted_events: accepted,
        events_per_sec: accepted as f64 / seconds.max(1e-9),
        latency_ms,
        client_errors: seen.client_errors,
    })
}

/// `sluice loadgen`.
pub fn run(args: LoadgenArgs) -> anyhow::Result<ExitCode> {
    let report = run_load(&args)?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => {
            let statuses: Vec<String> = report
                .statuses
                .iter()
                .map(|(s, n)| format!("{s}:{n}"))
                .collect();
            println!(
                "{} requests ({} events) in {:.1} s; statuses {}; client errors {}",
                report.requests,
                report.events,
                report.seconds,
                statuses.join(" "),
                report.client_errors
            );
            println!(
                "accepted {} events, {:.0} events/s",
                report.accepted_events, report.events_per_sec
            );
            let l = &report.latency_ms;
            let g = |k: &str| l.get(k).copied().unwrap_or(0.0);
            println!(
                "request latency ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
                g("p50"),
                g("p90"),
                g("p99"),
                g("p99.9"),
                g("max")
            );
        }
    }
    Ok(if report.accepted_events > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
