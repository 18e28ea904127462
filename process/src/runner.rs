//! The first runner: rules over the embedded log, one thread per rule and
//! stream, each a named consumer of the stream's topic (`process.<rule>`),
//! committing its position after each event it finished. HTTP steps are
//! sent with a blocking client; an answer the rule retries is tried again
//! after its delay, in order (the stream waits); one it reports is logged
//! and counted. Repeated `meta.id`s within an hour run once.
//!
//! Not yet: Kafka consumer groups, concurrency and per-key order, the retry
//! and error streams (retries wait in the thread; reports are log lines),
//! `produce` (a rule file with one is refused at start), `/metrics`.

use crate::delivery::{Answer, Next, SeenIds, next};
use crate::plan::{Request, Step, plan_rule};
use crate::rules::{Rule, RuleSet};
use serde_json::Value;
use sluice_log::{ConsumerPosition, LogError, LogOptions, Reader, Start};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Why processing could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The rules ask for what this runner does not do yet.
    #[error(
        "rule `{0}` produces events, which `sluice process` does not do yet; only `exec` rules run"
    )]
    Produce(String),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Counts per rule, for the log and the caller.
#[derive(Debug, Default)]
pub struct Counts {
    /// Events that matched.
    pub matched: AtomicU64,
    /// Requests answered as done.
    pub executed: AtomicU64,
    /// Retries made.
    pub retried: AtomicU64,
    /// Events reported (a status the rule does not retry, retries exhausted, a template that failed).
    pub failed: AtomicU64,
    /// Repeated ids skipped.
    pub duplicate: AtomicU64,
}

/// Sends one request; its answer.
fn send(agent: &ureq::Agent, r: &Request) -> Answer {
    let mut b = ureq::http::Request::builder()
        .method(r.method.as_str())
        .uri(&r.uri);
    for (k, v) in &r.headers {
        b = b.header(k, v);
    }
    let answer = match &r.body {
        Some(body) => b.body(body.clone()).map(|req| agent.run(req)),
        None => b.body(()).map(|req| agent.run(req)),
    };
    match answer {
        Ok(Ok(a)) => Answer::Status(a.status().as_u16()),
        Ok(Err(e)) => {
            tracing::debug!(uri = %r.uri, error = %e, "A request got no answer.");
            Answer::NoAnswer
        }
        Err(e) => {
            tracing::warn!(uri = %r.uri, error = %e, "A request could not be made.");
            Answer::NoAnswer
        }
    }
}

/// Waits `ms`, or less if asked to stop; whether it waited it all.
fn wait(ms: u64, stop: &AtomicBool) -> bool {
    let mut left = ms;
    while left > 0 {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let step = left.min(100);
        std::thread::sleep(Duration::from_millis(step));
        left -= step;
    }
    true
}

/// One rule over one topic until `stop`.
struct Worker {
    rule: Arc<Rule>,
    agent: ureq::Agent,
    seen: SeenIds,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    /// Runs one event through the rule; false when asked to stop before it finished.
    fn handle(&mut self, raw: &[u8]) -> bool {
        let Ok(event) = serde_json::from_slice::<Value>(raw) else {
            self.counts.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(rule = %self.rule.name, "An event that is not JSON was passed over.");
            return true;
        };
        let Some(planned) = plan_rule(&self.rule, &event) else {
            return true;
        };
        if let Some(id) = event.pointer("/meta/id").and_then(Value::as_str)
            && !self.seen.first(id, sluice_host::clock::unix_millis())
        {
            self.counts.duplicate.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.counts.matched.fetch_add(1, Ordering::Relaxed);
        let steps = match planned.steps {
            Ok(s) => s,
            Err(e) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(rule = %self.rule.name, error = %e, "An event could not be made into the rule's requests; reported.");
                return true;
            }
        };
        for step in steps {
            let Step::Http(request) = step else { continue };
            let mut attempt = 0;
            loop {
                match next(&self.rule, attempt, send(&self.agent, &request)) {
                    Next::Done => {
                        self.counts.executed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Next::Retry {
                        attempt: a,
                        delay_ms,
                    } => {
                        self.counts.retried.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(rule = %self.rule.name, uri = %request.uri, attempt = a, delay_ms, "A request is retried after its delay.");
                        if !wait(delay_ms, &self.stop) {
                            return false;
                        }
                        attempt = a;
                    }
                    Next::Report(why) => {
                        self.counts.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(rule = %self.rule.name, uri = %request.uri, %why, "A request failed; reported.");
                        break;
                    }
                }
            }
        }
        true
    }

    fn run(&mut self, log_dir: &Path, topic: &str) -> Result<(), RunError> {
        let consumer = format!("process.{}", self.rule.name);
        let position = ConsumerPosition::new(log_dir, topic, &consumer)?;
        let mut reader = Reader::resume(
            log_dir,
            topic,
            &position,
            Start::Earliest,
            LogOptions::default(),
        )?;
        while !self.stop.load(Ordering::Relaxed) {
            let records = reader.poll(100)?;
            if records.is_empty() {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            for r in records {
                if !self.handle(&r.value) {
                    return Ok(());
                }
                position.commit(r.offset + 1, false)?;
            }
        }
        Ok(())
    }
}

/// Runs `rules` over the embedded log in `log_dir` until `stop`; `topic`
/// names each stream's topic. Returns each rule's counts once stopped.
pub fn run_log(
    rules: &RuleSet,
    log_dir: PathBuf,
    topic: impl Fn(&str) -> String,
    stop: Arc<AtomicBool>,
) -> Result<Vec<(String, Arc<Counts>)>, RunError> {
    if let Some(r) = rules
        .rules
        .iter()
        .find(|r| r.cases.iter().any(|c| !c.produce.is_empty()))
    {
        return Err(RunError::Produce(r.name.clone()));
    }
    let mut threads = Vec::new();
    let mut counts = Vec::new();
    for rule in &rules.rules {
        let rule = Arc::new(rule.clone());
        let c = Arc::new(Counts::default());
        counts.push((rule.name.clone(), c.clone()));
        for stream in &rule.topics {
            let t = topic(stream);
            let dir = log_dir.clone();
            let mut worker = Worker {
                agent: ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_millis(rule.timeout_ms)))
                    .build()
                    .new_agent(),
                rule: rule.clone(),
                seen: SeenIds::new(3_600_000),
                counts: c.clone(),
                stop: stop.clone(),
            };
            threads.push(std::thread::spawn(move || {
                let done = worker.run(&dir, &t);
                if let Err(e) = &done {
                    tracing::error!(rule = %worker.rule.name, topic = %t, error = %e, "A rule stopped; the processor stops.");
                    worker.stop.store(true, Ordering::Relaxed);
                }
                done
            }));
        }
    }
    let mut first_error = None;
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => stop.store(true, Ordering::Relaxed),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(counts),
    }
}
