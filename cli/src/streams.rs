//! `sluice streams` prints the effective stream config; `sluice canary`
//! sends one canary event to every stream with `canary_events_enabled`, as
//! Wikimedia's canary events do, and reports which streams took it.

use crate::client::Client;
use anyhow::Context;
use clap::Args;
use hyper::body::Bytes;
use serde_json::Value;
use sluice_shared::{SchemaRegistry, StreamConfig};
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `sluice streams`.
#[derive(Args, Debug)]
pub struct StreamsArgs {
    /// The stream config file.
    #[arg(long, default_value = "schemas/streams.yaml")]
    streams: PathBuf,
    /// Ask a running aggregator or edge (its base URL) instead of reading the file.
    #[arg(long)]
    from: Option<String>,
}

/// Options of `sluice canary`.
#[derive(Args, Debug)]
pub struct CanaryArgs {
    /// The edge's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8420")]
    edge: String,
    /// The stream config file.
    #[arg(long, default_value = "schemas/streams.yaml")]
    streams: PathBuf,
    /// Schema repository folders (repeatable), for the examples canaries are made of.
    #[arg(long = "repo", default_value = "schemas")]
    repos: Vec<PathBuf>,
}

/// Reads and parses a stream config file, naming every problem.
pub(crate) fn load_streams(path: &std::path::Path) -> anyhow::Result<StreamConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the stream config {}", path.display()))?;
    StreamConfig::parse(&text).map_err(|errors| {
        anyhow::anyhow!(
            "the stream config {} is wrong: {}",
            path.display(),
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })
}

/// Runs `sluice streams`.
pub fn streams(args: StreamsArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.from {
        Some(url) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let answer = runtime.block_on(async {
                let mut client = Client::new(url)?;
                client
                    .request("GET", "/v1/streams?all_settings=true", None, Bytes::new())
                    .await
            })?;
            anyhow::ensure!(
                answer.status == 200,
                "{url}/v1/streams answered {}",
                answer.status
            );
            serde_json::from_slice(&answer.body).context("the answer is not JSON")?
        }
        None => load_streams(&args.streams)?.to_api(None, &[]),
    };
    println!("{}", serde_json::to_string_pretty(&config)?);
    Ok(ExitCode::SUCCESS)
}

/// A canary for `stream` made from the first example of `schema_title`'s latest version.
fn canary_event(
    registry: &SchemaRegistry,
    stream: &str,
    title: &str,
    now: &str,
) -> Result<Value, String> {
    let schema = registry
        .iter()
        .filter(|s| s.title == title)
        .max_by(|a, b| a.version.cmp(&b.version))
        .ok_or_else(|| format!("schema title `{title}` is in no repository"))?;
    let mut event = schema
        .document
        .get("examples")
        .and_then(|e| e.get(0))
        .cloned()
        .ok_or_else(|| format!("{} has no example to make a canary of", schema.uri))?;
    let Some(obj) = event.as_object_mut() else {
        return Err(format!("the example of {} is not an object", schema.uri));
    };
    obj.insert("$schema".into(), Value::String(schema.uri.to_string()));
    if obj.contains_key("dt") {
        obj.insert("dt".into(), Value::String(now.to_owned()));
    }
    let meta = obj
        .entry("meta")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(meta) = meta.as_object_mut() {
        meta.remove("id");
        meta.remove("dt");
        meta.insert("stream".into(), Value::String(stream.to_owned()));
        meta.insert("domain".into(), Value::String("canary".into()));
    }
    Ok(event)
}

/// Runs `sluice canary`.
pub fn canary(args: CanaryArgs) -> anyhow::Result<ExitCode> {
    let config = load_streams(&args.streams)?;
    let (repos, _) = crate::schema::load_repos(&args.repos)?;
    let (registry, errors) = SchemaRegistry::load(&repos);
    for e in &errors {
        eprintln!("warning: {e}");
    }
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut client = Client::new(&args.edge)?;
    let (mut ok, mut failed) = (0, 0);
    for entry in config.entries() {
        if !entry.settings.canary_events_enabled || entry.key.starts_with('/') {
            continue;
        }
        let stream = &entry.key;
        let result = match canary_event(&registry, stream, &entry.settings.schema_title, &now) {
            Err(why) => Err(why),
            Ok(event) => {
                let body = Bytes::from(serde_json::to_vec(&event)?);
                match runtime.block_on(client.request(
                    "POST",
                    "/v1/events",
                    Some("application/json"),
                    body,
                )) {
                    Ok(a) if a.status == 201 => Ok(()),
                    Ok(a) => Err(format!(
                        "{}: {}",
                        a.status,
                        String::from_utf8_lossy(&a.body).trim()
                    )),
                    Err(e) => Err(format!("the edge cannot be reached: {e}")),
                }
            }
        };
        match result {
            Ok(()) => {
                ok += 1;
                println!("ok      {stream}");
            }
            Err(why) => {
                failed += 1;
                println!("FAILED  {stream}: {why}");
            }
        }
    }
    println!("canaries: {ok} streams answered, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
