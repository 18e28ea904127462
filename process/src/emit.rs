//! Events a processor writes (a rule's `produce` and `derive`, retries,
//! error reports, fan-out continuations) go to the edge's intake, so they
//! are validated like every other event and land wherever the platform
//! writes (the embedded log or Kafka). Jobs hand their events to one sender
//! that gathers them into batches; a job hears back once its events are
//! acknowledged (accepted or a repeat of an id already taken), or which of
//! them the edge refused and why. Backpressure (429, 503) and an edge that
//! does not answer are waited out, so an event a job was told is written is.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Events gathered into one request at most.
const BATCH: usize = 1000;
/// Requests under way at once.
const IN_FLIGHT: usize = 4;
/// The longest wait between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why events were not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The edge refused some of them: each one's reason.
    #[error("the edge refused {} event(s): {}", .0.len(), .0.join("; "))]
    Refused(Vec<String>),
    /// The processor is stopping; the events may not have been written.
    #[error("the processor stopped before the edge took the events")]
    Stopped,
}

struct Job {
    events: Vec<Value>,
    done: oneshot::Sender<Result<(), EmitError>>,
}

/// The sender of a processor's events.
#[derive(Clone)]
pub struct Emitter {
    tx: mpsc::Sender<Job>,
}

impl Emitter {
    /// A sender to the edge at `edge` (`http://host:port`), until `stop` is dropped or sent.
    pub fn start(
        client: reqwest::Client,
        edge: &str,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let url = format!("{}/v1/events", edge.trim_end_matches('/'));
        tokio::spawn(gather(client, url, rx, stop));
        Emitter { tx }
    }

    /// Writes `events`; returns once the edge has them all, or said which it refused.
    pub async fn emit(&self, events: Vec<Value>) -> Result<(), EmitError> {
        if events.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Job { events, done })
            .await
            .map_err(|_| EmitError::Stopped)?;
        answer.await.unwrap_or(Err(EmitError::Stopped))
    }
}

async fn gather(
    client: reqwest::Client,
    url: String,
    mut rx: mpsc::Receiver<Job>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let url: Arc<str> = Arc::from(url);
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let mut n = jobs[0].events.len();
        while n < BATCH {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.events.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        tokio::spawn(async move {
            send(&client, &url, jobs, stop).await;
            drop(slot);
        });
    }
}

/// The `meta.id` of an event.
fn id_of(event: &Value) -> Option<&str> {
    event.pointer("/meta/id").and_then(Value::as_str)
}

/// Posts the jobs' events until every one is acknowledged or refused, then answers each job.
async fn send(
    client: &reqwest::Client,
    url: &str,
    jobs: Vec<Job>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut pending: Vec<Value> = jobs.iter().flat_map(|j| j.events.clone()).collect();
    let mut refused: HashMap<String, String> = HashMap::new();
    let mut backoff = Duration::from_millis(100);
    while !pending.is_empty() {
        if *stop.borrow() {
            for j in jobs {
                let _ = j.done.send(Err(EmitError::Stopped));
            }
            return;
        }
        let body = serde_json::to_vec(&pending).unwrap_or_default();
        let request = client
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        let wait = match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                match status {
                    201 | 202 => {
                        pending.clear();
                        None
                    }
                    207 | 400 => {
                        let body: Value = match r.bytes().await {
                            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
                            Err(_) => Value::Null,
                        };
                        let (bad, again) = sorted(&body, &pending, status);
                        refused.extend(bad);
                        pending.retain(|e| id_of(e).is_some_and(|id| again.contains(id)));
                        (!pending.is_empty()).then_some(backoff)
                    }
                    429 | 503 => Some(after.unwrap_or(backoff)),
                    s if s >= 500 => Some(backoff),
                    s => {
                        // Not an answer an edge gives for events: every one is refused with it.
                        let why = format!("the edge answered {s}");
                        for e in pending.drain(..) {
                            refused.insert(id_of(&e).unwrap_or_default().to_owned(), why.clone());
                        }
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "The edge did not answer; its events are sent again.");
                Some(backoff)
            }
        };
        if let Some(w) = wait {
            tokio::time::sleep(w).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    for j in jobs {
        let bad: Vec<String> = j
            .events
            .iter()
            .filter_map(|e| {
                let id = id_of(e)?;
                refused.get(id).map(|why| format!("{id}: {why}"))
            })
            .collect();
        let _ = j.done.send(if bad.is_empty() {
            Ok(())
        } else {
            Err(EmitError::Refused(bad))
        });
    }
}

/// From a 207 or 400 answer: the refused events' ids with their reasons, and the ids to send
/// again (those the edge could not take now).
fn sorted(
    body: &Value,
    sent: &[Value],
    status: u16,
) -> (HashMap<String, String>, std::collections::HashSet<String>) {
    let items = |key: &str| -> Vec<(String, String)> {
        body.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|i| {
                        let id = i.get("event").and_then(id_of)?.to_owned();
                        let why = i
                            .pointer("/context/message")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                            .unwrap_or_else(|| {
                                i.get("context").map(Value::to_string).unwrap_or_default()
                            });
                        Some((id, why))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut bad: HashMap<String, String> = items("invalid").into_iter().collect();
    let again = items("error").into_iter().map(|(id, _)| id).collect();
    if status == 400 && bad.is_empty() {
        // The whole body was refused (it did not parse as events): each is named.
        let why = body
            .pointer("/error")
            .or_else(|| body.pointer("/message"))
            .map(|v| v.to_string())
            .unwrap_or_else(|| "the edge refused the batch".into());
        for e in sent {
            bad.insert(id_of(e).unwrap_or_default().to_owned(), why.clone());
        }
    }
    (bad, again)
}
