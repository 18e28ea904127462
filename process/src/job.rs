//! A rule's jobs: what a read event becomes (its steps, a retry once its
//! delay has passed, the next page of a fan-out, a report) and how each
//! runs: requests with the rule's delivery rules, events written through
//! the edge with ids made from what they come from, edges of the dependency
//! index kept, fan-outs paged.

use crate::delivery::{Answer, Next, next};
use crate::emit::{EmitError, Emitter};
use crate::events::{self, Stamp};
use crate::fanout::{self, Index, PAGE, Root};
use crate::metrics::{ProcessMetrics, RuleLabel};
use crate::plan::{Request, Step, fanout_message, plan_rule, requests};
use crate::rules::Rule;
use crate::runner::{OwnStreams, SharedIndex};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// What a job is.
pub(crate) enum Work {
    /// A fresh event's steps.
    Steps { event: Value, steps: Vec<Step> },
    /// A retry, once its delay has passed.
    Retry {
        due_ms: i64,
        attempt: u32,
        original: Value,
        dependent: bool,
    },
    /// The next page of a fan-out.
    Continue {
        target: String,
        cursor: String,
        root: Root,
        original: Value,
    },
    /// An event whose steps could not be made: reported.
    Report { event: Value, why: String },
}

/// What every job of a rule shares.
pub(crate) struct Ctx {
    pub(crate) rule: Rule,
    pub(crate) label: RuleLabel,
    pub(crate) http: reqwest::Client,
    pub(crate) emitter: Option<Emitter>,
    pub(crate) index: Option<SharedIndex>,
    pub(crate) streams: OwnStreams,
    pub(crate) metrics: ProcessMetrics,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) stop: watch::Receiver<bool>,
}

/// How a job's work ended.
pub(crate) enum Outcome {
    /// Done (executed, retried, reported): the offset may be committed.
    Done,
    /// Cut short (the processor stops, or an event could not be written): the offset stays.
    Undone,
}

/// A `meta.id` made from what an event comes from, so that a repeat has the same id.
pub(crate) fn derived_id(parts: &[&str]) -> String {
    let name = parts.join("\u{1f}");
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

fn now_iso() -> String {
    sluice_host::clock::now().to_rfc3339_millis()
}

pub(crate) fn event_id(event: &Value) -> &str {
    event
        .pointer("/meta/id")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The time of an event for the root cut-off: its `dt`, else its `meta.dt`, else `fallback`.
pub(crate) fn event_ms(event: &Value, fallback: i64) -> i64 {
    ["/dt", "/meta/dt"]
        .iter()
        .filter_map(|p| event.pointer(p).and_then(Value::as_str))
        .find_map(|t| sluice_shared::Timestamp::parse_rfc3339(t).ok())
        .map_or(fallback, |t| t.unix_millis())
}

impl Ctx {
    /// Writes `events` (filled with their stream, id and time); false when they could not be.
    async fn write(&self, mut events: Vec<(String, Value)>, why: &str) -> Result<(), EmitError> {
        let Some(emitter) = &self.emitter else {
            return Err(EmitError::Refused(vec![format!(
                "no edge to write {why} through"
            )]));
        };
        let n = events.len() as u64;
        let dt = now_iso();
        let filled: Vec<Value> = events
            .drain(..)
            .map(|(stream, mut e)| {
                if !e.is_object() {
                    e = json!({"value": e});
                }
                let meta = e
                    .as_object_mut()
                    .map(|m| m.entry("meta").or_insert_with(|| json!({})));
                if let Some(Value::Object(meta)) = meta {
                    meta.insert("stream".into(), Value::String(stream));
                }
                if e.get("dt").is_none() {
                    e["dt"] = Value::String(dt.clone());
                }
                e
            })
            .collect();
        emitter.emit(filled).await?;
        self.metrics.produced.get_or_create(&self.label).inc_by(n);
        Ok(())
    }

    /// Reports `original` to the error stream for `why`.
    async fn report(&self, original: &Value, why: &str, seq: &str) -> Outcome {
        self.metrics.failed.get_or_create(&self.label).inc();
        tracing::warn!(rule = %self.rule.name, id = event_id(original), %why, "An event could not be processed; it goes to the error stream.");
        let id = derived_id(&[&self.rule.name, event_id(original), "error", seq]);
        let dt = now_iso();
        let e = events::error(
            Stamp {
                stream: &self.streams.error,
                id: &id,
                dt: &dt,
            },
            &self.rule.name,
            original,
            why,
        );
        match self
            .write(vec![(self.streams.error.clone(), e)], "an error event")
            .await
        {
            Ok(()) => Outcome::Done,
            Err(EmitError::Refused(r)) => {
                // Written nowhere: the log line above and the count are what remains.
                tracing::error!(rule = %self.rule.name, reasons = ?r, "The error stream refused the report.");
                Outcome::Done
            }
            Err(EmitError::Stopped) => Outcome::Undone,
        }
    }

    /// Sends `original` to the retry stream as `attempt`.
    async fn retry(&self, original: &Value, attempt: u32, why: &str, dependent: bool) -> Outcome {
        self.metrics.retried.get_or_create(&self.label).inc();
        let seq = attempt.to_string();
        let key = if dependent {
            original
                .get("dependent")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        } else {
            String::new()
        };
        let id = derived_id(&[&self.rule.name, event_id(original), &key, "retry", &seq]);
        let dt = now_iso();
        let mut e = events::retry(
            Stamp {
                stream: &self.streams.retry,
                id: &id,
                dt: &dt,
            },
            &self.rule.name,
            original,
            attempt,
            self.rule.retry_limit.saturating_sub(attempt),
            why,
        );
        if dependent {
            e["job"] = json!("dependent");
        }
        tracing::info!(rule = %self.rule.name, attempt, %why, "A request is retried through the retry stream.");
        match self
            .write(vec![(self.streams.retry.clone(), e)], "a retry")
            .await
        {
            Ok(()) => Outcome::Done,
            Err(EmitError::Refused(r)) => {
                self.report(
                    original,
                    &format!("{why}; the retry could not be written: {}", r.join("; ")),
                    &seq,
                )
                .await
            }
            Err(EmitError::Stopped) => Outcome::Undone,
        }
    }

    /// Sends one request; its answer.
    async fn send(&self, r: &Request) -> Answer {
        let Ok(method) = reqwest::Method::from_bytes(r.method.as_bytes()) else {
            return Answer::Status(0);
        };
        let mut b = self
            .http
            .request(method, &r.uri)
            .timeout(Duration::from_millis(self.rule.timeout_ms));
        for (k, v) in &r.headers {
            b = b.header(k, v);
        }
        if let Some(body) = &r.body {
            b = b.body(body.clone());
        }
        match b.send().await {
            Ok(a) => Answer::Status(a.status().as_u16()),
            Err(e) => {
                tracing::debug!(uri = %r.uri, error = %e, "A request got no answer.");
                Answer::NoAnswer
            }
        }
    }

    /// Runs `requests` for `original` as `attempt`: done, retried or reported.
    async fn requests(
        &self,
        requests: Vec<Request>,
        original: &Value,
        attempt: u32,
        dependent: bool,
    ) -> Outcome {
        for r in requests {
            let Ok(_slot) = self.slots.acquire().await else {
                return Outcome::Undone;
            };
            let answer = self.send(&r).await;
            drop(_slot);
            match next(&self.rule, attempt, answer) {
                Next::Done => {
                    self.metrics.executed.get_or_create(&self.label).inc();
                }
                Next::Retry { attempt: a, .. } => {
                    let why = match answer {
                        Answer::Status(s) => format!("status {s}"),
                        Answer::NoAnswer => "no answer".to_owned(),
                    };
                    return self.retry(original, a, &why, dependent).await;
                }
                Next::Report(why) => {
                    return self
                        .report(
                            original,
                            &format!("{} {}: {why}", r.method, r.uri),
                            &attempt.to_string(),
                        )
                        .await;
                }
            }
        }
        Outcome::Done
    }

    async fn index<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut (dyn Index<Error = String> + Send)) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let Some(index) = self.index.clone() else {
            return Err("no dependency index is configured".into());
        };
        tokio::task::spawn_blocking(move || {
            let mut guard = index
                .lock()
                .map_err(|_| "the index lock is poisoned".to_owned())?;
            f(guard.as_mut())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Sends the fan-out's requests to the dependents of `target` after `cursor`, then writes
    /// the continue event for the rest.
    async fn fanout(
        &self,
        target: &str,
        cursor: Option<&str>,
        root: &Root,
        original: &Value,
    ) -> Outcome {
        let Some(fan) = self.rule.cases.iter().find_map(|c| c.fanout.as_ref()) else {
            return Outcome::Done;
        };
        let (t, c) = (target.to_owned(), cursor.map(str::to_owned));
        let page = match self
            .index(move |i| fanout::expand(i, &t, c.as_deref(), PAGE))
            .await
        {
            Ok(p) => p,
            Err(why) => {
                return self
                    .report(original, &format!("the dependency index: {why}"), "fanout")
                    .await;
            }
        };
        tracing::debug!(rule = %self.rule.name, %target, dependents = page.dependents.len(), more = page.cont.is_some(), "A fan-out page.");
        let messages: Vec<Value> = page
            .dependents
            .iter()
            .map(|d| fanout_message(d, target, root, original))
            .collect();
        let outcomes: Vec<Outcome> = futures_util::stream::iter(messages)
            .map(|msg: Value| async move {
                match requests(&fan.exec, &msg, &Value::Null) {
                    Ok(reqs) => self.requests(reqs, &msg, 0, true).await,
                    Err(e) => self.report(&msg, &e.to_string(), "fanout").await,
                }
            })
            .buffer_unordered(self.rule.concurrency)
            .collect()
            .await;
        if outcomes.iter().any(|o| matches!(o, Outcome::Undone)) {
            return Outcome::Undone;
        }
        if let Some(next_cursor) = page.cont {
            let id = derived_id(&[
                &self.rule.name,
                &root.signature,
                &root.dt_ms.to_string(),
                &next_cursor,
            ]);
            let dt = now_iso();
            let e = events::cont(
                Stamp {
                    stream: &self.streams.cont,
                    id: &id,
                    dt: &dt,
                },
                &self.rule.name,
                target,
                &next_cursor,
                root,
                original,
            );
            match self
                .write(vec![(self.streams.cont.clone(), e)], "a continue event")
                .await
            {
                Ok(()) => {}
                Err(EmitError::Refused(r)) => {
                    return self
                        .report(
                            original,
                            &format!("the fan-out's continue event was refused: {}", r.join("; ")),
                            "continue",
                        )
                        .await;
                }
                Err(EmitError::Stopped) => return Outcome::Undone,
            }
        }
        Outcome::Done
    }

    /// A fresh event's steps, in order.
    async fn steps(&self, event: &Value, steps: Vec<Step>, record_ms: i64) -> Outcome {
        let mut http = Vec::new();
        let mut produced = Vec::new();
        let mut later = Vec::new();
        for s in steps {
            match s {
                Step::Http(r) => http.push(r),
                Step::Produce {
                    stream,
                    event: mut e,
                } => {
                    let n = produced.len().to_string();
                    let id = derived_id(&[&self.rule.name, event_id(event), "produce", &n]);
                    if let Some(m) = e.as_object_mut() {
                        let meta = m.entry("meta").or_insert_with(|| json!({}));
                        if let Some(meta) = meta.as_object_mut() {
                            meta.insert("id".into(), Value::String(id));
                        }
                    }
                    produced.push((stream, e));
                }
                other => later.push(other),
            }
        }
        if let Outcome::Undone = self.requests(http, event, 0, false).await {
            return Outcome::Undone;
        }
        if !produced.is_empty() {
            match self.write(produced, "produced events").await {
                Ok(()) => {}
                Err(EmitError::Refused(r)) => {
                    return self
                        .report(
                            event,
                            &format!("a produced event was refused: {}", r.join("; ")),
                            "produce",
                        )
                        .await;
                }
                Err(EmitError::Stopped) => return Outcome::Undone,
            }
        }
        for s in later {
            match s {
                Step::Track {
                    dependent,
                    add,
                    remove,
                } => {
                    let done = self
                        .index(move |i| {
                            for t in &add {
                                i.add(t, &dependent)?;
                            }
                            for t in &remove {
                                i.remove(t, &dependent)?;
                            }
                            i.sync()
                        })
                        .await;
                    match done {
                        Ok(()) => {
                            self.metrics.executed.get_or_create(&self.label).inc();
                        }
                        Err(why) => {
                            return self
                                .report(event, &format!("the dependency index: {why}"), "track")
                                .await;
                        }
                    }
                }
                Step::Fanout { target } => {
                    let root = Root {
                        signature: target.clone(),
                        dt_ms: event_ms(event, record_ms),
                    };
                    if let Outcome::Undone = self.fanout(&target, None, &root, event).await {
                        return Outcome::Undone;
                    }
                }
                Step::Http(_) | Step::Produce { .. } => {}
            }
        }
        Outcome::Done
    }

    /// Runs one job.
    pub(crate) async fn work(&self, work: Work, record_ms: i64) -> Outcome {
        match work {
            Work::Steps { event, steps } => self.steps(&event, steps, record_ms).await,
            Work::Report { event, why } => self.report(&event, &why, "plan").await,
            Work::Retry {
                due_ms,
                attempt,
                original,
                dependent,
            } => {
                let mut stop = self.stop.clone();
                let wait = (due_ms - sluice_host::clock::unix_millis()).max(0) as u64;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    _ = stop.wait_for(|s| *s) => return Outcome::Undone,
                }
                let reqs = if dependent {
                    self.rule
                        .cases
                        .iter()
                        .find_map(|c| c.fanout.as_ref())
                        .map(|f| requests(&f.exec, &original, &Value::Null))
                } else {
                    plan_rule(&self.rule, &original).map(|p| {
                        p.steps.map(|s| {
                            s.into_iter()
                                .filter_map(|s| match s {
                                    Step::Http(r) => Some(r),
                                    _ => None,
                                })
                                .collect()
                        })
                    })
                };
                match reqs {
                    None => Outcome::Done,
                    Some(Ok(r)) => self.requests(r, &original, attempt, dependent).await,
                    Some(Err(e)) => self.report(&original, &e.to_string(), "retry").await,
                }
            }
            Work::Continue {
                target,
                cursor,
                root,
                original,
            } => self.fanout(&target, Some(&cursor), &root, &original).await,
        }
    }
}
