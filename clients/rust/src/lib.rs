//! `sluice-client`: a producer for apps and services that flush offline.
//!
//! Events are kept in a durable on-disk queue (a `sluice-log` topic, synced
//! before [`Client::submit`] returns), so a killed process loses none; each
//! gets its `meta.id` when it is queued, so that every resend is a duplicate
//! the aggregator drops, and delivery is exactly once end to end. Before an
//! event is queued, the stream config (fetched from the edge's `/v1/streams`
//! with conditional requests, kept beside the queue for the next start, or
//! given) is applied through `sluice-shared`, exactly as the edge applies
//! it: unknown and disabled streams, closed producing windows and units out
//! of sample are withheld and counted. [`Client::flush`] sends batches,
//! retries 429, 503, 5xx and network failures with exponential backoff and
//! jitter (honouring `Retry-After`), drops and counts the events a 207 or
//! 400 lists as invalid, and queues again those it lists as failed. A full
//! queue drops its oldest events, counted.
//!
//! The same client is exported through UniFFI ([`ffi`]) for Kotlin, Swift
//! and Python apps.

pub mod ffi;
mod queue;

use queue::Queue;
use serde_json::{Map, Value};
use sluice_shared::{StreamConfig, Timestamp, Withheld};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

uniffi::setup_scaffolding!();

/// What can go wrong in the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The queue on disk cannot be read or written.
    #[error("the queue on disk: {0}")]
    Queue(#[from] sluice_log::LogError),
    /// A submitted event is not a JSON object.
    #[error("an event must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    /// A submitted event is not JSON at all.
    #[error("the event is not JSON: {0}")]
    NotJson(String),
    /// The settings make no sense.
    #[error("{0}")]
    Config(String),
}

/// How a client is set up.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The edge's base URL, e.g. `http://127.0.0.1:8420` (`https://` too).
    pub edge: String,
    /// The folder of the durable queue (and of the last stream config fetched).
    pub queue_dir: PathBuf,
    /// Events held at most; beyond it the oldest are dropped, counted.
    pub max_queued: u64,
    /// Events per request at most.
    pub batch_events: usize,
    /// Bytes per request at most (about; one event always goes).
    pub batch_bytes: usize,
    /// The stream config, when given instead of fetched from the edge.
    pub stream_config: Option<StreamConfig>,
    /// How long a fetched stream config is used before it is asked for again.
    pub config_refresh: Duration,
    /// The longest wait between tries.
    pub max_backoff: Duration,
}

impl ClientConfig {
    /// The defaults for `edge` with the queue in `queue_dir`.
    pub fn new(edge: impl Into<String>, queue_dir: impl Into<PathBuf>) -> Self {
        ClientConfig {
            edge: edge.into(),
            queue_dir: queue_dir.into(),
            max_queued: 100_000,
            batch_events: 100,
            batch_bytes: 1024 * 1024,
            stream_config: None,
            config_refresh: Duration::from_secs(300),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What became of a submitted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Queued on disk, with this `meta.id`.
    Queued(String),
    /// Not queued: the stream config says it would not be taken.
    Withheld(Withheld),
}

/// Counts since the client was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events waiting in the queue.
    pub queued: u64,
    /// Events the edge took (201, 202, or accepted in a 207).
    pub accepted: u64,
    /// Events the edge refused as invalid, dropped.
    pub invalid: u64,
    /// Events sent again after a refusal or a failure.
    pub retried: u64,
    /// Events dropped because the queue was full.
    pub dropped_oldest: u64,
    /// Events withheld by the stream config, by reason.
    pub withheld: BTreeMap<&'static str, u64>,
    /// The reasons the edge gave for the first invalid events (at most 20).
    pub invalid_reasons: Vec<String>,
}

/// What one flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Events the edge took.
    pub accepted: u64,
    /// Events refused as invalid, dropped.
    pub invalid: u64,
    /// Events sent again.
    pub retried: u64,
    /// Events still queued (the deadline came first).
    pub remaining: u64,
}

/// The stream config in use and where it came from.
#[derive(Default)]
struct Config {
    streams: Option<StreamConfig>,
    etag: Option<String>,
    fetched: Option<Instant>,
}

/// A producer with a durable queue.
pub struct Client {
    settings: ClientConfig,
    queue: Mutex<Queue>,
    config: Mutex<Config>,
    stats: Mutex<Stats>,
    flushing: Mutex<()>,
    http: ureq::Agent,
}

/// The answer to one request, sorted.
enum Answer {
    /// Every event was taken.
    Taken,
    /// Some were refused (their reasons), some failed (their ids, to send again).
    Partly {
        invalid: Vec<(Option<String>, String)>,
        failed: Vec<String>,
        after: Option<Duration>,
    },
    /// Nothing was taken; try again after the wait, when the edge named one.
    Again(Option<Duration>),
    /// Nothing will ever be taken: the batch is dropped with this reason.
    Refused(String),
}

impl Client {
    /// Opens the queue (recovering what a killed process left) and, unless
    /// the config is given, the stream config kept beside it.
    pub fn open(settings: ClientConfig) -> Result<Client, ClientError> {
        if !(settings.edge.starts_with("http://") || settings.edge.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "the edge `{}` is not an http:// or https:// URL",
                settings.edge
            )));
        }
        std::fs::create_dir_all(&settings.queue_dir).map_err(|e| {
            ClientError::Config(format!(
                "cannot create {}: {e}",
                settings.queue_dir.display()
            ))
        })?;
        let queue = Queue::open(&settings.queue_dir, settings.max_queued)?;
        let mut config = Config {
            streams: settings.stream_config.clone(),
            ..Config::default()
        };
        if config.streams.is_none()
            && let Ok(text) = std::fs::read_to_string(settings.queue_dir.join("streams.json"))
            && let Ok(kept) = serde_json::from_str::<Value>(&text)
        {
            config.etag = kept["etag"].as_str().map(str::to_owned);
            config.streams = parse_streams(&kept["config"]);
        }
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Ok(Client {
            settings,
            queue: Mutex::new(queue),
            config: Mutex::new(config),
            stats: Mutex::new(Stats::default()),
            flushing: Mutex::new(()),
            http,
        })
    }

    /// The settings of `stream` in the config in use, if there is one and it names the stream.
    pub fn stream_settings(&self, stream: &str) -> Option<sluice_shared::StreamEntry> {
        self.refresh_config();
        let config = lock(&self.config);
        config
            .streams
            .as_ref()
            .and_then(|c| c.get(stream))
            .map(|e| (**e).clone())
    }

    /// Asks the edge for its stream config when the one in use is old (or
    /// missing): a conditional request, so an unchanged config costs a 304.
    /// Offline, the config in use (or none) stays.
    fn refresh_config(&self) {
        if self.settings.stream_config.is_some() {
            return;
        }
        let etag = {
            let config = lock(&self.config);
            if config
                .fetched
                .is_some_and(|t| t.elapsed() < self.settings.config_refresh)
            {
                return;
            }
            config.etag.clone()
        };
        let url = format!("{}/v1/streams", self.settings.edge.trim_end_matches('/'));
        let mut request = self.http.get(&url);
        if let Some(tag) = &etag {
            request = request.header("If-None-Match", tag);
        }
        let answer = request.call();
        let mut config = lock(&self.config);
        match answer {
            Ok(mut r) if r.status() == 200 => {
                let tag = r
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body: Option<Value> = r
                    .body_mut()
                    .read_to_string()
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok());
                if let Some(streams) = body.as_ref().and_then(parse_streams) {
                    config.streams = Some(streams);
                    config.etag = tag.clone();
                    let kept = serde_json::json!({"etag": tag, "config": body});
                    let path = self.settings.queue_dir.join("streams.json");
                    if let Err(e) = std::fs::write(&path, kept.to_string()) {
                        tracing::warn!(error = %e, "Cannot keep the stream config beside the queue.");
                    }
                }
                config.fetched = Some(Instant::now());
            }
            Ok(r) if r.status() == 304 => config.fetched = Some(Instant::now()),
            Ok(r) => {
                tracing::warn!(
                    status = r.status().as_u16(),
                    "The edge did not give its stream config."
                );
                config.fetched = Some(Instant::now());
            }
            Err(e) => tracing::debug!(error = %e, "The edge is unreachable for its stream config."),
        }
    }

    /// Applies the stream config to `event` and queues it (synced to disk)
    /// with `meta.id`, `meta.stream` and `dt` filled, and the stream's
    /// `sample` copied in.
    pub fn submit(&self, stream: &str, event: Value) -> Result<Submitted, ClientError> {
        let mut out = self.submit_all(stream, vec![event])?;
        Ok(out
            .pop()
            .unwrap_or(Submitted::Withheld(Withheld::UnknownStream)))
    }

    /// [`Client::submit`] for many events, with one sync for all of them.
    pub fn submit_all(
        &self,
        stream: &str,
        events: Vec<Value>,
    ) -> Result<Vec<Submitted>, ClientError> {
        self.refresh_config();
        let now = now();
        let dt = now.to_rfc3339_millis();
        let mut verdicts = Vec::with_capacity(events.len());
        let mut bytes = Vec::with_capacity(events.len());
        {
            let config = lock(&self.config);
            let mut stats = lock(&self.stats);
            for mut event in events {
                let Some(obj) = event.as_object_mut() else {
                    return Err(ClientError::NotAnObject(sluice_shared::json_kind(&event)));
                };
                let meta = obj
                    .entry("meta")
                    .or_insert_with(|| Value::Object(Map::new()));
                let Some(meta) = meta.as_object_mut() else {
                    return Err(ClientError::NotAnObject("meta must be an object"));
                };
                let id = match meta.get("id").and_then(Value::as_str) {
                    Some(id) => id.to_owned(),
                    None => {
                        let id = uuid::Uuid::new_v4().hyphenated().to_string();
                        meta.insert("id".into(), Value::String(id.clone()));
                        id
                    }
                };
                meta.insert("stream".into(), Value::String(stream.to_owned()));
                obj.entry("dt").or_insert_with(|| Value::String(dt.clone()));
                // Without any config (never online yet) the event goes and the edge decides.
                if let Some(streams) = &config.streams {
                    match streams.produce_verdict(stream, &event, now) {
                        Err(why) => {
                            *stats.withheld.entry(why.as_str()).or_default() += 1;
                            verdicts.push(Submitted::Withheld(why));
                            continue;
                        }
                        Ok(entry) => {
                            if let (Some(sample), Some(obj)) =
                                (&entry.settings.sample, event.as_object_mut())
                            {
                                obj.insert(
                                    "sample".into(),
                                    serde_json::json!({"unit": sample.unit, "rate": sample.rate}),
                                );
                            }
                        }
                    }
                }
                bytes.push(
                    serde_json::to_vec(&event).map_err(|e| ClientError::NotJson(e.to_string()))?,
                );
                verdicts.push(Submitted::Queued(id));
            }
        }
        let mut queue = lock(&self.queue);
        queue.push(&bytes, now.unix_millis())?;
        lock(&self.stats).dropped_oldest = queue.dropped_oldest;
        Ok(verdicts)
    }

    /// Counts so far.
    pub fn stats(&self) -> Stats {
        let queued = lock(&self.queue).len();
        Stats {
            queued,
            ..lock(&self.stats).clone()
        }
    }

    /// Sends the queue until it is empty or `deadline` has passed, waiting
    /// between tries as the edge asks (`Retry-After`) or with exponential
    /// backoff and jitter. One flush at a time; events may be submitted
    /// meanwhile.
    pub fn flush(&self, deadline: Duration) -> Result<FlushReport, ClientError> {
        let _one = lock(&self.flushing);
        let give_up = Instant::now() + deadline;
        let mut report = FlushReport::default();
        let mut failures = 0u32;
        let mut batch_events = self.settings.batch_events.max(1);
        loop {
            let taken = lock(&self.queue).peek(batch_events, self.settings.batch_bytes)?;
            if taken.events.is_empty() {
                break;
            }
            let answer = self.post(&taken.events);
            let wait = match answer {
                Answer::Taken => {
                    report.accepted += taken.events.len() as u64;
                    lock(&self.queue).advance(taken.end)?;
                    None
                }
                Answer::Refused(why) if taken.events.len() > 1 && why.starts_with("413") => {
                    // Too large a request: the same events, in smaller ones.
                    batch_events = (taken.events.len() / 2).max(1);
                    continue;
                }
                Answer::Refused(why) => {
                    tracing::warn!(events = taken.events.len(), reason = %why, "The edge refused a batch; dropped.");
                    report.invalid += taken.events.len() as u64;
                    self.note_invalid(taken.events.len(), std::iter::once(why));
                    lock(&self.queue).advance(taken.end)?;
                    None
                }
                Answer::Partly {
                    invalid,
                    failed,
                    after,
                } => {
                    let again: Vec<Vec<u8>> = taken
                        .events
                        .iter()
                        .filter(|e| id_of(e).is_some_and(|id| failed.contains(&id)))
                        .cloned()
                        .collect();
                    let refused = invalid.len();
                    report.invalid += refused as u64;
                    report.retried += again.len() as u64;
                    report.accepted +=
                        (taken.events.len() - again.len()).saturating_sub(refused) as u64;
                    self.note_invalid(refused, invalid.into_iter().map(|(_, why)| why));
                    lock(&self.stats).retried += again.len() as u64;
                    let mut queue = lock(&self.queue);
                    // The failed ones go to the back of the queue, synced, before the batch is marked answered.
                    queue.push(&again, now().unix_millis())?;
                    queue.advance(taken.end)?;
                    (!again.is_empty()).then_some(after)
                }
                Answer::Again(after) => {
                    report.retried += taken.events.len() as u64;
                    lock(&self.stats).retried += taken.events.len() as u64;
                    Some(after)
                }
            };
            match wait {
                None => failures = 0,
                Some(after) => {
                    failures = failures.saturating_add(1);
                    let backoff = Duration::from_millis(200)
                        .saturating_mul(1 << failures.min(10))
                        .min(self.settings.max_backoff)
                        .mul_f64(0.5 + fastrand::f64() * 0.5);
                    let pause = after.unwrap_or(backoff);
                    let left = give_up.saturating_duration_since(Instant::now());
                    if left < pause {
                        break;
                    }
                    std::thread::sleep(pause);
                }
            }
            if Instant::now() >= give_up {
                break;
            }
        }
        let mut stats = lock(&self.stats);
        stats.accepted += report.accepted;
        stats.invalid += report.invalid;
        report.remaining = lock(&self.queue).len();
        Ok(report)
    }

    fn note_invalid(&self, n: usize, reasons: impl Iterator<Item = String>) {
        if n == 0 {
            return;
        }
        let mut stats = lock(&self.stats);
        for why in reasons {
            if stats.invalid_reasons.len() < 20 {
                stats.invalid_reasons.push(why);
            }
        }
    }

    /// Posts one batch (guaranteed: answered once the events are durable) and sorts the answer.
    fn post(&self, events: &[Vec<u8>]) -> Answer {
        let mut body = Vec::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(e);
        }
        body.push(b']');
        let url = format!("{}/v1/events", self.settings.edge.trim_end_matches('/'));
        let answer = self
            .http
            .post(&url)
            .header("Content-Type", "application/json")
            .send(&body[..]);
        let mut r = match answer {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "The edge cannot be reached.");
                return Answer::Again(None);
            }
        };
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = r.body_mut().read_to_string().unwrap_or_default();
        sort_answer(status, retry_after, &text)
    }
}

/// Sorts an edge's answer to a batch by what the client does next.
fn sort_answer(status: u16, retry_after: Option<Duration>, body: &str) -> Answer {
    match status {
        200..=202 => Answer::Taken,
        207 | 400 => {
            let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            let items = |key: &str| -> Vec<(Option<String>, String)> {
                body[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| {
                        let id = i["event"]["meta"]["id"].as_str().map(str::to_owned);
                        let context = &i["context"];
                        let mut why = context["message"]
                            .as_str()
                            .or_else(|| context.as_str())
                            .unwrap_or("refused")
                            .to_owned();
                        if let Some(errors) = context["errorsText"].as_str() {
                            why = format!("{why}: {errors}");
                        }
                        (id, why)
                    })
                    .collect()
            };
            let invalid = items("invalid");
            let failed: Vec<String> = items("error")
                .into_iter()
                .filter_map(|(id, _)| id)
                .collect();
            if status == 400 && invalid.is_empty() {
                let why = body["error"].as_str().unwrap_or("the edge answered 400");
                return Answer::Refused(format!("400: {why}"));
            }
            Answer::Partly {
                invalid,
                failed,
                after: retry_after,
            }
        }
        429 | 503 => Answer::Again(retry_after),
        500..=599 => Answer::Again(None),
        other => Answer::Refused(format!("{other}: {}", body.trim())),
    }
}

fn id_of(event: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(event).ok()?;
    v.pointer("/meta/id")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// A stream config from the edge's `/v1/streams` answer (`{"streams": {…}}`).
fn parse_streams(answer: &Value) -> Option<StreamConfig> {
    let text =
        serde_json::to_string(&serde_json::json!({"streams": answer.get("streams")?})).ok()?;
    match StreamConfig::parse(&text) {
        Ok(c) => Some(c),
        Err(errors) => {
            tracing::warn!(errors = ?errors, "The edge's stream config does not parse; not used.");
            None
        }
    }
}

fn now() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    Timestamp::from_unix_nanos(nanos)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
