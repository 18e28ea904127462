//! The IO shell: each rule reads its streams through a source of its own
//! (a Kafka consumer group `sluice-process.<rule>`, so that every process
//! running the rule set shares the partitions, or the embedded log with the
//! named position `process.<rule>`), plus the retry stream (and, for
//! fan-outs, the continue stream) for its own entries. A blocking thread
//! polls the source; an async dispatcher plans each event, runs up to the
//! rule's `concurrency` jobs at once (in order per key), and commits each
//! partition up to its lowest offset not finished.
//!
//! A request the rule retries goes to the retry stream and is tried again
//! when it comes back and its delay has passed; one it reports goes to the
//! error stream. Events a rule writes go through the edge (see [`emit`]),
//! with ids made from what they come from, so a repeat after a crash is
//! dropped by the aggregator's dedupe.
//!
//! [`emit`]: crate::emit

use crate::delivery::{RootCutoff, SeenIds};
use crate::emit::Emitter;
use crate::events;
use crate::fanout::Index;
use crate::job::{Ctx, Outcome, Work, event_id, event_ms};
use crate::metrics::{ProcessMetrics, RuleLabel};
use crate::plan::{Step, plan_rule};
use crate::progress::{Lanes, Progress};
use crate::reader::read;
use crate::rules::RuleSet;
use serde_json::Value;
use sluice_connect::source::{SourceRecord, Tp};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};

/// Why processing could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A rule writes events but no edge was given to write them through.
    #[error(
        "rule `{0}` writes events (produce, derive, retries, errors or continuations) and no edge is given: pass --edge"
    )]
    NoEdge(String),
    /// A rule keeps or reads the dependency index and none is configured.
    #[error("rule `{0}` uses the dependency index and none is configured")]
    NoIndex(String),
    /// The source failed.
    #[error("rule `{rule}`: {source}")]
    Source {
        /// The rule.
        rule: String,
        /// What failed.
        source: sluice_connect::source::SourceError,
    },
    /// The embedded log's positions failed.
    #[error("rule `{rule}`: the embedded log: {source}")]
    Log {
        /// The rule.
        rule: String,
        /// What failed.
        source: sluice_log::LogError,
    },
    /// A produce-only rule's transactions failed.
    #[error("rule `{rule}`: {source}")]
    Transactional {
        /// The rule.
        rule: String,
        /// What failed.
        source: crate::exactly_once::ExactlyOnceError,
    },
    /// A thread could not be started.
    #[error("cannot start a reader thread: {0}")]
    Thread(std::io::Error),
    /// The HTTP client could not be made.
    #[error("the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Where the rules read.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// The embedded log in this folder.
    Log(PathBuf),
    /// Kafka: bootstrap servers and more librdkafka settings.
    Kafka {
        /// `host:port,…`
        brokers: String,
        /// More librdkafka settings.
        extra: BTreeMap<String, String>,
    },
}

/// The streams a processor writes to besides the rules' own.
#[derive(Debug, Clone)]
pub struct OwnStreams {
    /// Retries, read back by the rule that wrote them.
    pub retry: String,
    /// Fan-out continuations, read back likewise.
    pub cont: String,
    /// Events a rule could not process.
    pub error: String,
}

impl Default for OwnStreams {
    fn default() -> Self {
        OwnStreams {
            retry: "sluice.process.retry".into(),
            cont: "sluice.process.continue".into(),
            error: "sluice.process.error".into(),
        }
    }
}

/// A dependency index shared by the rules, behind a lock (its stores are blocking).
pub type SharedIndex = Arc<Mutex<Box<dyn Index<Error = String> + Send>>>;

/// An index whose errors are text, to be shared whatever store holds it.
pub struct Texted<I>(pub I);

impl<I: Index> Index for Texted<I> {
    type Error = String;
    fn add(&mut self, target: &str, dependent: &str) -> Result<(), String> {
        self.0.add(target, dependent).map_err(|e| e.to_string())
    }
    fn remove(&mut self, target: &str, dependent: &str) -> Result<(), String> {
        self.0.remove(target, dependent).map_err(|e| e.to_string())
    }
    fn page(
        &mut self,
        target: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, String> {
        self.0.page(target, after, limit).map_err(|e| e.to_string())
    }
    fn sync(&mut self) -> Result<(), String> {
        self.0.sync().map_err(|e| e.to_string())
    }
}

/// What a processor needs besides its rules.
#[derive(Clone)]
pub struct Settings {
    /// Where the rules read.
    pub source: SourceKind,
    /// A stream's topic.
    pub topic: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// The edge events are written through (`http://host:port`).
    pub edge: Option<String>,
    /// The processor's own streams.
    pub streams: OwnStreams,
    /// The dependency index, when a rule uses one.
    pub index: Option<SharedIndex>,
    /// Repeats of a `meta.id` within this many milliseconds run once.
    pub dedupe_window_ms: i64,
    /// The Kafka consumer group of a rule is this prefix, a dot, and the rule's name.
    pub group_prefix: String,
    /// The edge's pipeline, for rules that only produce, over Kafka: they write in Kafka
    /// transactions of their own (exactly once) rather than through the edge.
    pub intake: Option<Arc<sluice_shared::Intake>>,
}

/// Events of a source thread for its dispatcher.
pub(crate) enum Feed {
    /// The partitions now read (after a rebalance).
    Assigned(Vec<Tp>),
    /// Records, in order per partition.
    Records(Vec<SourceRecord>),
    /// The end of each partition, for lag.
    Ends(Vec<(Tp, i64)>),
}

/// A job and where it came from.
struct Job {
    tp: Tp,
    offset: i64,
    key: Option<String>,
    work: Work,
}

/// A job's end: whether its offset may be committed.
struct Finished {
    tp: Tp,
    offset: i64,
    key: Option<String>,
    done: bool,
}

/// One rule's reading, planning and bookkeeping.
struct Dispatcher {
    ctx: Arc<Ctx>,
    retry_topic: String,
    cont_topic: String,
    seen: SeenIds,
    cutoff: RootCutoff,
    progress: Progress<Tp>,
    lanes: Lanes<Job>,
    ends: HashMap<Tp, i64>,
    done_tx: mpsc::UnboundedSender<Finished>,
    times: HashMap<(Tp, i64), i64>,
}

impl Dispatcher {
    /// A record read: finished at once, or a job (run now, or after its key's).
    fn plan(&mut self, r: SourceRecord) -> Option<Job> {
        let tp: Tp = (r.topic.clone(), r.partition);
        self.progress.begin(&tp, r.offset);
        let rule = &self.ctx.rule;
        let Ok(event) = serde_json::from_slice::<Value>(&r.value) else {
            self.ctx.metrics.failed.get_or_create(&self.ctx.label).inc();
            tracing::warn!(rule = %rule.name, topic = %r.topic, offset = r.offset, "A record that is not JSON was passed over.");
            self.progress.finish(&tp, r.offset);
            return None;
        };
        let own = |e: &Value| e.get("rule").and_then(Value::as_str) == Some(rule.name.as_str());
        let job = |work, key| {
            Some(Job {
                tp: tp.clone(),
                offset: r.offset,
                key,
                work,
            })
        };
        if *r.topic == *self.retry_topic || *r.topic == *self.cont_topic {
            if !own(&event) {
                self.progress.finish(&tp, r.offset);
                return None;
            }
            if *r.topic == *self.retry_topic {
                let attempt = event.get("attempt").and_then(Value::as_u64).unwrap_or(1) as u32;
                let due_ms = r.timestamp_ms + rule.retry_delay(attempt.saturating_sub(1)) as i64;
                let dependent = event.get("job").and_then(Value::as_str) == Some("dependent");
                let original = event.get("original_event").cloned().unwrap_or(Value::Null);
                return job(
                    Work::Retry {
                        due_ms,
                        attempt,
                        original,
                        dependent,
                    },
                    None,
                );
            }
            let Some((target, cursor, root, original)) = events::read_cont(&event) else {
                self.progress.finish(&tp, r.offset);
                return None;
            };
            if !self.cutoff.admit(&root.signature, root.dt_ms) {
                self.ctx
                    .metrics
                    .cut_off
                    .get_or_create(&self.ctx.label)
                    .inc();
                tracing::debug!(rule = %rule.name, signature = %root.signature, "A newer root event has run; the rest of this fan-out is cut off.");
                self.progress.finish(&tp, r.offset);
                return None;
            }
            let (target, cursor, original) =
                (target.to_owned(), cursor.to_owned(), original.clone());
            return job(
                Work::Continue {
                    target,
                    cursor,
                    root,
                    original,
                },
                None,
            );
        }
        let Some(planned) = plan_rule(rule, &event) else {
            self.progress.finish(&tp, r.offset);
            return None;
        };
        let now = sluice_host::clock::unix_millis();
        let id = event_id(&event);
        if !id.is_empty() && !self.seen.first(id, now) {
            self.ctx
                .metrics
                .duplicate
                .get_or_create(&self.ctx.label)
                .inc();
            self.progress.finish(&tp, r.offset);
            return None;
        }
        self.ctx
            .metrics
            .matched
            .get_or_create(&self.ctx.label)
            .inc();
        let key = planned.key;
        match planned.steps {
            Err(e) => job(
                Work::Report {
                    event,
                    why: e.to_string(),
                },
                key,
            ),
            Ok(steps) => {
                for s in &steps {
                    if let Step::Fanout { target } = s {
                        // A root event runs by being read: older fan-outs of its target stop
                        // here, and it does not run at all after a newer one.
                        if !self.cutoff.admit(target, event_ms(&event, r.timestamp_ms)) {
                            self.ctx
                                .metrics
                                .cut_off
                                .get_or_create(&self.ctx.label)
                                .inc();
                            self.progress.finish(&tp, r.offset);
                            return None;
                        }
                    }
                }
                self.times.insert((tp.clone(), r.offset), r.timestamp_ms);
                job(Work::Steps { event, steps }, key)
            }
        }
    }

    fn start(&mut self, job: Job) {
        let ctx = self.ctx.clone();
        let done = self.done_tx.clone();
        let record_ms = self
            .times
            .remove(&(job.tp.clone(), job.offset))
            .unwrap_or(0);
        tokio::spawn(async move {
            let outcome = ctx.work(job.work, record_ms).await;
            let _ = done.send(Finished {
                tp: job.tp,
                offset: job.offset,
                key: job.key,
                done: matches!(outcome, Outcome::Done),
            });
        });
    }

    fn finished(&mut self, f: Finished) {
        if f.done {
            self.progress.finish(&f.tp, f.offset);
        }
        if let Some(next) = self.lanes.done(f.key.as_deref()) {
            self.start(next);
        }
    }

    fn lag(&self) -> i64 {
        self.ends
            .iter()
            .map(|(tp, end)| {
                let at = self.progress.position(tp).unwrap_or(*end);
                (end - at).max(0)
            })
            .sum()
    }
}

/// The HTTP client rules send their requests with (kept-alive connections, no delay).
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    // Rules may call https endpoints; the HTTP client's TLS is rustls on ring, as the rest of
    // Sluice's (an error means another part of the process installed it first).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
}

/// Runs `rules` with `settings` until `stop` turns true; then waits for the jobs under way
/// (a few seconds at most) and commits what finished.
pub async fn run(
    rules: RuleSet,
    settings: Settings,
    metrics: ProcessMetrics,
    stop: watch::Receiver<bool>,
) -> Result<(), RunError> {
    for r in &rules.rules {
        let writes = r.cases.iter().any(|c| {
            !c.produce.is_empty()
                || !c.derive.is_empty()
                || c.fanout.is_some()
                || !c.exec.is_empty()
        });
        let transactional = settings.intake.is_some()
            && r.produce_only()
            && matches!(settings.source, SourceKind::Kafka { .. });
        if writes && !transactional && settings.edge.is_none() {
            return Err(RunError::NoEdge(r.name.clone()));
        }
        let indexed = r
            .cases
            .iter()
            .any(|c| c.track.is_some() || c.fanout.is_some());
        if indexed && settings.index.is_none() {
            return Err(RunError::NoIndex(r.name.clone()));
        }
    }
    let http = http_client()?;
    let emitter = settings
        .edge
        .as_deref()
        .map(|e| Emitter::start(http.clone(), e, stop.clone()));
    let mut tasks = Vec::new();
    let mut transactional = Vec::new();
    for rule in rules.rules {
        if let (Some(intake), true) = (&settings.intake, rule.produce_only()) {
            let name = rule.name.clone();
            let opened = crate::exactly_once::ExactlyOnce::open(
                rule.clone(),
                intake.clone(),
                &settings,
                metrics.clone(),
            )
            .map_err(|e| RunError::Transactional {
                rule: name.clone(),
                source: e,
            })?;
            if let Some(eos) = opened {
                tracing::info!(rule = %name, "The rule only produces: it writes in Kafka transactions, exactly once.");
                let stop = stop.clone();
                transactional.push(tokio::task::spawn_blocking(move || {
                    eos.run(stop).map_err(|e| RunError::Transactional {
                        rule: name,
                        source: e,
                    })
                }));
                continue;
            }
        }
        let ctx = Arc::new(Ctx {
            label: RuleLabel {
                rule: rule.name.clone(),
            },
            slots: Arc::new(Semaphore::new(rule.concurrency)),
            rule,
            http: http.clone(),
            emitter: emitter.clone(),
            index: settings.index.clone(),
            streams: settings.streams.clone(),
            metrics: metrics.clone(),
            stop: stop.clone(),
        });
        tasks.push(tokio::spawn(run_rule(ctx, settings.clone(), stop.clone())));
    }
    let mut first = None;
    for t in transactional {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first.get_or_insert(e);
            }
            Err(e) => tracing::error!(error = %e, "A rule's task failed."),
        }
    }
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first.get_or_insert(e);
            }
            Err(e) => tracing::error!(error = %e, "A rule's task failed."),
        }
    }
    first.map_or(Ok(()), Err)
}

/// How long a stopping processor waits for the jobs under way.
const GRACE: Duration = Duration::from_secs(5);

async fn run_rule(
    ctx: Arc<Ctx>,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let rule = &ctx.rule;
    let mut streams: Vec<String> = rule.topics.clone();
    let retries = rule
        .cases
        .iter()
        .any(|c| !c.exec.is_empty() || c.fanout.is_some());
    if retries {
        streams.push(settings.streams.retry.clone());
    }
    if rule.cases.iter().any(|c| c.fanout.is_some()) {
        streams.push(settings.streams.cont.clone());
    }
    let topics: Vec<Arc<str>> = streams
        .iter()
        .map(|s| Arc::from((settings.topic)(s)))
        .collect();
    let (feed_tx, mut feed_rx) = mpsc::channel::<Feed>(8);
    let (commit_tx, commit_rx) = std::sync::mpsc::channel::<Vec<(Tp, i64)>>();
    let name = rule.name.clone();
    let source_stop = stop.clone();
    let source_settings = settings.clone();
    let reader = std::thread::Builder::new()
        .name(format!("process-{name}"))
        .spawn(move || {
            read(
                &name,
                &source_settings,
                topics,
                feed_tx,
                commit_rx,
                source_stop,
            )
        })
        .map_err(RunError::Thread)?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut d = Dispatcher {
        ctx: ctx.clone(),
        retry_topic: (settings.topic)(&settings.streams.retry),
        cont_topic: (settings.topic)(&settings.streams.cont),
        seen: SeenIds::new(settings.dedupe_window_ms),
        cutoff: RootCutoff::default(),
        progress: Progress::default(),
        lanes: Lanes::default(),
        ends: HashMap::new(),
        done_tx,
        times: HashMap::new(),
    };
    // Records under way (running, waiting for their key or for a retry's delay) at most.
    let window = (rule.concurrency * 64).max(4096);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut feed_open = true;
    loop {
        tokio::select! {
            feed = feed_rx.recv(), if feed_open && d.progress.under_way() < window => match feed {
                Some(Feed::Records(records)) => {
                    for r in records {
                        if let Some(job) = d.plan(r) {
                            let key = job.key.clone();
                            if let Some(job) = d.lanes.admit(key.as_deref(), job) {
                                d.start(job);
                            }
                        }
                    }
                }
                Some(Feed::Assigned(tps)) => {
                    d.progress.keep_only(|tp| tps.contains(tp));
                    d.ends.retain(|tp, _| tps.contains(tp));
                }
                Some(Feed::Ends(ends)) => {
                    d.ends.extend(ends);
                    ctx.metrics.lag.get_or_create(&ctx.label).set(d.lag());
                }
                None => feed_open = false,
            },
            Some(f) = done_rx.recv() => d.finished(f),
            _ = tick.tick() => {
                let moved = d.progress.committable();
                if !moved.is_empty() {
                    let _ = commit_tx.send(moved);
                }
            }
            _ = stop.wait_for(|s| *s) => break,
        }
        if !feed_open {
            break;
        }
    }
    // The reader stops handing records over (a send it is blocked in returns).
    drop(feed_rx);
    // The jobs under way get a moment to finish, so their offsets are committed.
    let deadline = tokio::time::Instant::now() + GRACE;
    while d.progress.under_way() > 0 {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(f)) => d.finished(f),
            _ => break,
        }
    }
    let moved = d.progress.committable();
    if !moved.is_empty() {
        let _ = commit_tx.send(moved);
    }
    drop(commit_tx);
    match tokio::task::spawn_blocking(move || reader.join()).await {
        Ok(Ok(r)) => r,
        _ => {
            tracing::error!(rule = %ctx.rule.name, "The rule's reader panicked.");
            Ok(())
        }
    }
}
