//! `sluice send`: sends events to an edge the way an offline app flushes its
//! queue, on `sluice-client`: every event is queued on disk with its
//! `meta.id` first (so a killed run loses nothing and a rerun with the same
//! `--queue` sends what was left, each event once), the stream config the
//! edge serves is applied before sending, batches are retried with backoff
//! and jitter honouring `Retry-After`, and the events the edge refuses are
//! reported with its reasons. Generated events (`--count`) are made from the
//! first example of the stream's own schema. A progress bar on stderr, a
//! summary on stdout.

use crate::schema::load_repos;
use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
use sluice_client::{Client, ClientConfig, Submitted};
use sluice_shared::{SchemaRegistry, StreamConfig};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Options of `sluice send`.
#[derive(Args, Debug)]
pub struct SendArgs {
    /// The stream the events go to (`meta.stream` is set to it).
    #[arg(long)]
    stream: String,
    /// Events to send, one JSON object per line.
    #[arg(long, conflicts_with = "count")]
    file: Option<PathBuf>,
    /// Or this many generated events, made from the first example of the stream's schema.
    #[arg(long)]
    count: Option<usize>,
    /// Generate events of this schema (with `message` and `count` fields) instead.
    #[arg(long, requires = "count")]
    schema: Option<String>,
    /// The edge's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8420")]
    edge: String,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Stop retrying after this many seconds (what is left stays in `--queue`).
    #[arg(long, default_value_t = 600)]
    give_up_after: u64,
    /// The queue folder: events are kept there until the edge has taken them,
    /// and a run with the same folder sends what an earlier run left. Without
    /// it, a temporary queue that goes when the command ends.
    #[arg(long)]
    queue: Option<PathBuf>,
    /// Schema repository folders (repeatable), for generated events.
    #[arg(long = "repo", default_value = "schemas")]
    repos: Vec<PathBuf>,
    /// The stream config file naming the stream's schema, when the edge cannot be asked.
    #[arg(long, default_value = "schemas/streams.yaml")]
    streams: PathBuf,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// The schema title of `stream`: from the config the edge serves, else from the local file.
fn schema_title(client: &Client, args: &SendArgs) -> anyhow::Result<String> {
    if let Some(entry) = client.stream_settings(&args.stream) {
        return Ok(entry.settings.schema_title);
    }
    let text = std::fs::read_to_string(&args.streams).with_context(|| {
        format!(
            "the edge did not give its stream config, and {} cannot be read",
            args.streams.display()
        )
    })?;
    let config = StreamConfig::parse(&text)
        .map_err(|e| anyhow::anyhow!("{} is wrong: {e:?}", args.streams.display()))?;
    let entry = config.get(&args.stream).with_context(|| {
        format!(
            "stream `{}` is configured neither at the edge nor in {}",
            args.stream,
            args.streams.display()
        )
    })?;
    Ok(entry.settings.schema_title.clone())
}

/// `count` events of `stream`: copies of the first example of its schema's
/// latest version, each with its own `dt` (and `meta.id`, filled when queued).
fn generated(client: &Client, args: &SendArgs, count: usize) -> anyhow::Result<Vec<Value>> {
    let dt = now_rfc3339();
    if let Some(schema) = &args.schema {
        return Ok((0..count)
            .map(|i| json!({"$schema": schema, "dt": dt, "message": format!("sluice send {i}"), "count": i}))
            .collect());
    }
    let title = schema_title(client, args)?;
    let (repos, _) = load_repos(&args.repos)?;
    let (registry, _) = SchemaRegistry::load(&repos);
    let schema = registry
        .iter()
        .filter(|s| s.title == title)
        .max_by(|a, b| a.version.cmp(&b.version))
        .with_context(|| {
            format!(
                "stream `{}` takes schema `{title}`, which is in none of {:?}; pass --file, or --schema with --count",
                args.stream, args.repos
            )
        })?;
    let mut example = schema
        .document
        .get("examples")
        .and_then(|e| e.get(0))
        .cloned()
        .with_context(|| {
            format!(
                "{} has no example to make events of; pass --file",
                schema.uri
            )
        })?;
    let obj = example
        .as_object_mut()
        .with_context(|| format!("the example of {} is not an object", schema.uri))?;
    obj.insert("$schema".into(), Value::String(schema.uri.to_string()));
    obj.insert("dt".into(), Value::String(dt));
    if let Some(meta) = obj.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("id");
        meta.remove("dt");
        meta.remove("request_id");
    }
    Ok(vec![example; count])
}

fn from_file(path: &PathBuf) -> anyhow::Result<Vec<Value>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut events = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let event: Value = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), n + 1))?;
        anyhow::ensure!(
            event.is_object(),
            "{} line {}: an event is a JSON object",
            path.display(),
            n + 1
        );
        events.push(event);
    }
    Ok(events)
}

/// Runs `sluice send`.
pub fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let scratch;
    let queue_dir = match &args.queue {
        Some(dir) => dir.clone(),
        None => {
            scratch = tempfile::tempdir().context("cannot make a temporary queue folder")?;
            scratch.path().to_owned()
        }
    };
    let mut config = ClientConfig::new(args.edge.clone(), &queue_dir);
    config.batch_events = args.batch.max(1);
    let client = Client::open(config)?;
    let events = match (&args.file, args.count) {
        (Some(path), _) => from_file(path)?,
        (None, Some(count)) => generated(&client, &args, count)?,
        (None, None) => Vec::new(),
    };
    let submitted = events.len();
    let mut withheld = 0usize;
    for chunk in events.chunks(1000) {
        for s in client.submit_all(&args.stream, chunk.to_vec())? {
            if let Submitted::Withheld(why) = s {
                withheld += 1;
                if withheld <= 5 {
                    eprintln!("withheld: {} (the stream config)", why.as_str());
                }
            }
        }
    }
    let queued = client.stats().queued;
    anyhow::ensure!(
        submitted > 0 || queued > 0 || args.queue.is_some(),
        "nothing to send: give --file or --count (or --queue with events an earlier run left)"
    );
    println!("queued {queued} events in {}", queue_dir.display());

    let bar = indicatif::ProgressBar::new(queued);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = std::thread::scope(|s| {
        let flushing = s.spawn(|| client.flush(Duration::from_secs(args.give_up_after)));
        while !flushing.is_finished() {
            let st = client.stats();
            bar.set_position(queued.saturating_sub(st.queued));
            if st.retried > 0 {
                bar.set_message(format!("{} retried", st.retried));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        flushing
            .join()
            .map_err(|_| anyhow::anyhow!("the flush thread failed"))
    })??;
    bar.finish_and_clear();
    let stats = client.stats();
    for why in &stats.invalid_reasons {
        eprintln!("invalid: {why}");
    }
    if report.remaining > 0 {
        match &args.queue {
            Some(dir) => eprintln!(
                "gave up after {} s: {} events are left in {}; run again with --queue {} to send them",
                args.give_up_after,
                report.remaining,
                dir.display(),
                dir.display()
            ),
            None => eprintln!(
                "gave up after {} s: {} events were not sent (pass --queue DIR to keep them for a rerun)",
                args.give_up_after, report.remaining
            ),
        }
    }
    println!(
        "sent {queued} events to {}: accepted={} invalid={} retried={} failed={} withheld={withheld} dropped_oldest={}",
        args.stream,
        report.accepted,
        report.invalid,
        report.retried,
        report.remaining,
        stats.dropped_oldest
    );
    Ok(if report.invalid == 0 && report.remaining == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
