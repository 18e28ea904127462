//! `sluice send`: sends events to an edge the way an offline mobile app
//! flushes its queue. Every event gets its `meta.id` before the first try,
//! so retries are deduplicated; batches go as guaranteed requests; 429, 503
//! and network errors are retried with exponential backoff and jitter,
//! honouring `Retry-After`; events the edge refuses are reported, not
//! retried. A progress bar on stderr, a summary on stdout.

use crate::client::Client;
use anyhow::Context;
use clap::Args;
use hyper::body::Bytes;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Options of `sluice send`.
#[derive(Args, Debug)]
pub struct SendArgs {
    /// The stream the events go to (`meta.stream` is filled where absent).
    #[arg(long)]
    stream: String,
    /// Events to send, one JSON object per line.
    #[arg(long, conflicts_with = "count")]
    file: Option<PathBuf>,
    /// Or this many generated test events (schema `--schema`).
    #[arg(long)]
    count: Option<usize>,
    /// The schema of generated events.
    #[arg(long, default_value = "/sluice/test/event/1.0.0")]
    schema: String,
    /// The edge's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8420")]
    edge: String,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Stop retrying after this many seconds.
    #[arg(long, default_value_t = 600)]
    give_up_after: u64,
}

#[derive(Default)]
struct Summary {
    accepted: usize,
    invalid: usize,
    retried: usize,
    failed: usize,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn new_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string())
}

/// The events to send, each with a `meta.id` (kept when given) and `meta.stream`.
fn load(args: &SendArgs) -> anyhow::Result<Vec<Value>> {
    let mut events = Vec::new();
    if let Some(path) = &args.file {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let event: Value = serde_json::from_str(&line)
                .with_context(|| format!("{} line {}: not JSON", path.display(), n + 1))?;
            events.push(event);
        }
    } else {
        let count = args.count.unwrap_or(1);
        let dt = now_rfc3339();
        for i in 0..count {
            events.push(json!({
                "$schema": args.schema,
                "dt": dt,
                "message": format!("sluice send {i}"),
                "count": i,
            }));
        }
    }
    for event in &mut events {
        let Some(obj) = event.as_object_mut() else {
            continue;
        };
        let meta = obj.entry("meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            if !meta.contains_key("id") {
                meta.insert("id".into(), Value::String(new_id()?));
            }
            meta.entry("stream")
                .or_insert_with(|| Value::String(args.stream.clone()));
        }
    }
    Ok(events)
}

fn id_of(event: &Value) -> Option<String> {
    event
        .pointer("/meta/id")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Runs `sluice send`.
pub fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let events = load(&args)?;
    let total = events.len();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let summary = runtime.block_on(send_all(&args, events, &bar))?;
    bar.finish_and_clear();
    println!(
        "sent {total} events to {}: accepted={} invalid={} retried={} failed={}",
        args.stream, summary.accepted, summary.invalid, summary.retried, summary.failed
    );
    Ok(if summary.invalid == 0 && summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn send_all(
    args: &SendArgs,
    events: Vec<Value>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Summary> {
    let mut client = Client::new(&args.edge)?;
    let path = format!(
        "/v1/events?stream={}",
        percent_encoding::utf8_percent_encode(&args.stream, percent_encoding::NON_ALPHANUMERIC)
    );
    let mut queue: VecDeque<Value> = events.into();
    let mut summary = Summary::default();
    let give_up = Instant::now() + Duration::from_secs(args.give_up_after);
    let mut failures = 0u32;
    while !queue.is_empty() {
        let n = args.batch.max(1).min(queue.len());
        let batch: Vec<Value> = queue.drain(..n).collect();
        let body = Bytes::from(serde_json::to_vec(&batch)?);
        let answer = client
            .request("POST", &path, Some("application/json"), body)
            .await;
        let (retry, wait): (Vec<Value>, Option<Duration>) = match answer {
            Err(e) => {
                bar.set_message(format!("edge unreachable ({e}); retrying"));
                (batch, None)
            }
            Ok(a) if a.status == 201 => {
                summary.accepted += batch.len();
                bar.inc(batch.len() as u64);
                (Vec::new(), None)
            }
            Ok(a) if matches!(a.status, 207 | 400) => {
                let body: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
                let listed = |key: &str| -> Vec<String> {
                    body[key]
                        .as_array()
                        .map(|items| items.iter().filter_map(|i| id_of(&i["event"])).collect())
                        .unwrap_or_default()
                };
                let invalid = listed("invalid");
                let errors = listed("error");
                for item in body["invalid"].as_array().into_iter().flatten() {
                    bar.println(format!(
                        "invalid: {}",
                        item["context"]["message"].as_str().unwrap_or("refused")
                    ));
                }
                let mut by_id: HashMap<String, Value> = batch
                    .into_iter()
                    .filter_map(|e| Some((id_of(&e)?, e)))
                    .collect();
                let retry: Vec<Value> = errors.iter().filter_map(|id| by_id.remove(id)).collect();
                let mut refused = invalid
                    .iter()
                    .filter(|id| by_id.remove(*id).is_some())
                    .count();
                // A 400 took nothing: whatever is not listed was refused too.
                let rest = by_id.len();
                if a.status == 400 {
                    refused += rest;
                } else {
                    summary.accepted += rest;
                }
                summary.invalid += refused;
                bar.inc((refused + if a.status == 400 { 0 } else { rest }) as u64);
                let wait =
                    (!retry.is_empty()).then(|| Duration::from_secs(a.retry_after.unwrap_or(1)));
                (retry, wait)
            }
            Ok(a) if matches!(a.status, 429 | 503) => {
                bar.set_message(format!("edge answered {}; retrying", a.status));
                let wait = a.retry_after.map(Duration::from_secs);
                (batch, wait)
            }
            Ok(a) => {
                let text = String::from_utf8_lossy(&a.body).into_owned();
                bar.println(format!("the edge answered {}: {text}", a.status));
                summary.failed += batch.len();
                bar.inc(batch.len() as u64);
                (Vec::new(), None)
            }
        };
        if retry.is_empty() {
            failures = 0;
            continue;
        }
        if Instant::now() >= give_up {
            summary.failed += retry.len() + queue.len();
            bar.println(format!("gave up after {} s", args.give_up_after));
            break;
        }
        summary.retried += retry.len();
        failures = failures.saturating_add(1);
        // Exponential backoff with jitter, unless the edge said how long to wait.
        let backoff = Duration::from_millis(200)
            .saturating_mul(1 << failures.min(8))
            .min(Duration::from_secs(30))
            .mul_f64(0.5 + fastrand_f64() * 0.5);
        tokio::time::sleep(
            wait.unwrap_or(backoff)
                .min(give_up.saturating_duration_since(Instant::now())),
        )
        .await;
        for event in retry.into_iter().rev() {
            queue.push_front(event);
        }
    }
    Ok(summary)
}

fn fastrand_f64() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}
