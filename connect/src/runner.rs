//! One sink at work: read a batch from the source, lay every event out for
//! its stream's table (making or widening the table first when its schema
//! version is new), and write rows, dead letters and positions in one
//! transaction; after a lost connection or a lost race, start again from
//! the positions the store holds.

use crate::columns::{Column, layout};
use crate::config::{SinkConfig, SinkKind};
use crate::metrics::{ConnectMetrics, SinkStream};
use crate::patterns::Patterns;
use crate::row::cells;
use crate::schemas::{SchemaMiss, Schemas};
use crate::source::{Assignment, Source, SourceRecord, Tp};
use crate::store::{
    Batch, DeadLetter, Move, PrepareError, Row, Store, StoreError, TableRows, Written,
};
use crate::template::Template;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(2);
/// Longest pause between attempts while the store is away.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A stream a sink writes.
pub struct Plan {
    /// The stream's name.
    pub stream: String,
    /// Its schema title.
    pub title: String,
    /// Its topics.
    pub topics: Vec<Arc<str>>,
}

/// A stream's table as the sink knows it.
struct Table {
    name: String,
    columns: Vec<Column>,
    /// Schema URIs whose columns the table has.
    versions: HashSet<String>,
    stopped: Option<String>,
}

/// One sink's loop.
pub struct Runner {
    config: SinkConfig,
    store: Arc<Mutex<Box<dyn Store>>>,
    source: Box<dyn Source>,
    schemas: Schemas,
    metrics: ConnectMetrics,
    /// Stream by topic.
    streams: HashMap<Arc<str>, String>,
    /// Streams taken by `/regex/`, found by topic as their records come.
    patterns: Patterns,
    tables: BTreeMap<String, Table>,
    key: Option<Template>,
    /// Where each partition stands in the store, as far as this process knows.
    next: Assignment,
    /// Timestamp of the newest record written, by partition.
    newest: HashMap<Tp, i64>,
    /// The writer thread: batches go to it, results come back, one batch at a time.
    writer: Writer,
    /// The batch being written while the next is laid out.
    inflight: Option<InFlight>,
    /// The lake: events are decoded by the store, and it is given empty batches while the
    /// source is quiet, so that its files are committed when they are due.
    lake: bool,
    /// The lake's table schemas, to decode events before they go to the writer thread.
    lake_schemas: Option<crate::lake::TableSchemas>,
}

/// The thread that writes batches, so that the next batch is read and laid out while
/// the store takes the last.
struct Writer {
    batches: std::sync::mpsc::SyncSender<Batch>,
    results: std::sync::mpsc::Receiver<Result<Written, StoreError>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(store: Arc<Mutex<Box<dyn Store>>>, sink: &str) -> Result<Writer, String> {
        let (batches, batch_rx) = std::sync::mpsc::sync_channel::<Batch>(1);
        let (result_tx, results) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(format!("write-{sink}"))
            .spawn(move || {
                for batch in batch_rx {
                    let r = lock(&store).write(&batch);
                    if result_tx.send(r).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        Ok(Writer {
            batches,
            results,
            thread: Some(thread),
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has written what it holds.
        let (closed, _) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.batches, closed));
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("A sink's writer thread panicked.");
        }
    }
}

/// What to do once the batch in flight is written.
struct InFlight {
    /// Positions it moves, for the source's bookkeeping.
    done: Vec<(Tp, i64)>,
    /// The newest record timestamp per partition it holds.
    newest: Vec<(Tp, i64)>,
    records: usize,
}

/// Locks the shared store (a panic elsewhere poisons nothing this loop relies on).
fn lock(store: &Mutex<Box<dyn Store>>) -> std::sync::MutexGuard<'_, Box<dyn Store>> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

impl Runner {
    /// A runner for `config` over `plans`, already connected to its source.
    pub fn new(
        config: SinkConfig,
        plans: &[Plan],
        patterns: Patterns,
        store: Arc<Mutex<Box<dyn Store>>>,
        source: Box<dyn Source>,
        schemas: Schemas,
        metrics: ConnectMetrics,
    ) -> Result<Runner, String> {
        let key = match config.kind {
            SinkKind::Redis => Some(Template::parse(&config.key)?),
            _ => None,
        };
        let writer = Writer::start(store.clone(), &config.name)?;
        let lake = config.kind == SinkKind::Parquet;
        let mut runner = Runner {
            streams: plans
                .iter()
                .flat_map(|p| p.topics.iter().map(|t| (t.clone(), p.stream.clone())))
                .collect(),
            patterns,
            tables: BTreeMap::new(),
            config,
            store,
            source,
            schemas,
            metrics,
            key,
            next: Assignment::new(),
            newest: HashMap::new(),
            writer,
            inflight: None,
            lake,
            lake_schemas: None,
        };
        for p in plans {
            runner
                .take_stream(&p.stream, &p.title)
                .map_err(|e| format!("stream {}: {e}", p.stream))?;
        }
        Ok(runner)
    }

    /// Decodes the lake's events on this thread, by the schemas the lake store keeps.
    pub fn decode_for(&mut self, schemas: crate::lake::TableSchemas) {
        self.lake_schemas = Some(schemas);
    }

    /// Sets a stream's table up from the latest version of its schema.
    fn take_stream(&mut self, stream: &str, title: &str) -> Result<(), StoreError> {
        let table = Table {
            name: self.config.table_of(stream),
            columns: Vec::new(),
            versions: HashSet::new(),
            stopped: None,
        };
        self.tables.insert(stream.to_owned(), table);
        self.labels(stream);
        match self.schemas.latest(title) {
            Some((uri, doc)) => self.prepare(stream, &uri, &doc),
            None => {
                tracing::warn!(%stream, %title, "The stream's schema title is in no repository; its table is made from the first event's schema.");
                Ok(())
            }
        }
    }

    /// Whether `topic`'s records are written: a topic of a stream taken by pattern is
    /// taken on its first record.
    fn takes(&mut self, topic: &Arc<str>) -> bool {
        if self.streams.contains_key(topic) {
            return true;
        }
        let Some(found) = self.patterns.stream_of(topic) else {
            return false;
        };
        tracing::info!(sink = %self.config.name, stream = %found.stream, %topic, "Taking a stream its pattern matches.");
        self.streams.insert(topic.clone(), found.stream.clone());
        if !self.tables.contains_key(&found.stream)
            && let Err(e) = self.take_stream(&found.stream, &found.title)
        {
            // Made on its first batch instead (each event's schema prepares the table).
            tracing::warn!(sink = %self.config.name, stream = %found.stream, error = %e, "A stream's table could not be made yet.");
        }
        true
    }

    fn labels(&self, stream: &str) -> SinkStream {
        let l = SinkStream {
            sink: self.config.name.clone(),
            stream: stream.to_owned(),
        };
        // Present from the start, so a scrape shows every stream the sink takes.
        let _ = self.metrics.rows.get_or_create(&l);
        let _ = self.metrics.dead_letters.get_or_create(&l);
        l
    }

    /// Makes the stream's table fit schema `uri`; a change it cannot take stops the stream.
    fn prepare(
        &mut self,
        stream: &str,
        uri: &str,
        doc: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let Some(table) = self.tables.get_mut(stream) else {
            return Ok(());
        };
        if table.versions.contains(uri) || table.stopped.is_some() {
            return Ok(());
        }
        // The lake keeps the schema's own shape; only the SQL stores flatten it into columns.
        let wanted = if self.lake {
            Vec::new()
        } else {
            match layout(doc) {
                Ok(c) => c,
                Err(e) => {
                    self.stop(stream, format!("schema {uri}: {e}"));
                    return Ok(());
                }
            }
        };
        let name = table.name.clone();
        let r = lock(&self.store).prepare(&name, &wanted, uri, doc);
        match r {
            Ok(()) => {
                let Some(table) = self.tables.get_mut(stream) else {
                    return Ok(());
                };
                for c in wanted {
                    if !table.columns.iter().any(|k| k.name == c.name) {
                        table.columns.push(c);
                    }
                }
                table.versions.insert(uri.to_owned());
                Ok(())
            }
            Err(PrepareError::TypeChange(e)) => {
                self.stop(stream, format!("table `{name}`: {e}"));
                Ok(())
            }
            Err(PrepareError::Refused(e)) => {
                self.stop(stream, format!("table `{name}`: {e}"));
                Ok(())
            }
            Err(PrepareError::Store(e)) => Err(e),
        }
    }

    fn stop(&mut self, stream: &str, why: String) {
        tracing::error!(sink = %self.config.name, %stream, %why, "A stream is stopped: its table cannot take its schema. Other streams keep flowing.");
        let l = self.labels(stream);
        self.metrics.stopped.get_or_create(&l).set(1);
        if let Some(t) = self.tables.get_mut(stream) {
            t.stopped = Some(why);
        }
        let topics: Vec<Arc<str>> = self
            .streams
            .iter()
            .filter(|(_, s)| *s == stream)
            .map(|(t, _)| t.clone())
            .collect();
        for t in topics {
            self.source.pause(&t);
        }
    }

    /// Runs until `stop` is set; writes what it read before it returns.
    pub fn run(mut self, stop: &AtomicBool) -> Result<(), String> {
        let flush = Duration::from_millis(self.config.flush_interval_ms);
        let mut pending: Vec<SourceRecord> = Vec::new();
        let mut first_at: Option<Instant> = None;
        let mut lag_at = Instant::now();
        let mut tick_at = Instant::now();
        let mut backoff = Duration::from_millis(200);
        while !stop.load(Ordering::Relaxed) {
            let mut wait = match first_at {
                Some(t) => flush.saturating_sub(t.elapsed()),
                None => flush.min(Duration::from_millis(500)),
            };
            if self.inflight.is_some() {
                // Look back soon: the batch in flight is accounted for once it is written.
                wait = wait.min(Duration::from_millis(20));
            }
            let room = self.config.batch_size - pending.len();
            let got = match self.source.poll(room, wait) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(sink = %self.config.name, error = %e, "Reading the source failed; trying again.");
                    pause(stop, backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if let Some(a) = self.source.take_assignment() {
                // Every partition now starts where the store says: what was read before is read again.
                pending.clear();
                first_at = None;
                self.next = a;
            }
            for r in got {
                if !self.takes(&r.topic) {
                    continue;
                }
                let tp = (r.topic.clone(), r.partition);
                match self.next.get(&tp) {
                    Some(Some(n)) if r.offset < *n => continue,
                    Some(_) => {}
                    None => continue,
                }
                pending.push(r);
            }
            if !pending.is_empty() && first_at.is_none() {
                first_at = Some(Instant::now());
            }
            let due = first_at.is_some_and(|t| t.elapsed() >= flush)
                || pending.len() >= self.config.batch_size
                || (self.lake
                    && pending.is_empty()
                    && self.inflight.is_none()
                    && tick_at.elapsed() >= flush);
            if due {
                tick_at = Instant::now();
            }
            if due {
                match self.flush(&pending) {
                    Ok(()) => backoff = Duration::from_millis(200),
                    Err(e) => {
                        self.recover(e, stop, &mut backoff);
                    }
                }
                pending.clear();
                first_at = None;
            }
            // A batch written while nothing new came: account for it now.
            if let Err(e) = self.settle(false) {
                pending.clear();
                first_at = None;
                self.recover(e, stop, &mut backoff);
            }
            if lag_at.elapsed() >= LAG_EVERY {
                self.measure_lag();
                lag_at = Instant::now();
            }
        }
        let last = if pending.is_empty() {
            Ok(())
        } else {
            self.flush(&pending)
        };
        if let Err(e) = last.and_then(|()| self.settle(true)) {
            tracing::warn!(sink = %self.config.name, error = %e, "The last batch was not written; the next start reads it again.");
            return Ok(());
        }
        let finished = lock(&self.store).finish();
        match finished {
            Ok(w) => {
                for (stream, n) in &w.rows {
                    let l = self.labels(stream);
                    self.metrics.rows.get_or_create(&l).inc_by(*n);
                }
            }
            Err(e) => {
                tracing::warn!(sink = %self.config.name, error = %e, "What was buffered was not committed; the next start reads it again.");
            }
        }
        Ok(())
    }

    /// After a batch that was not written: wait (while the store is away or a schema is
    /// missing), then start again from the store's positions.
    fn recover(&mut self, e: Stall, stop: &AtomicBool, backoff: &mut Duration) {
        match &e {
            Stall::Schema(why) => {
                tracing::warn!(sink = %self.config.name, %why, "An event's schema is not in the repositories here yet; waiting for them before reading on.");
                pause(stop, *backoff);
                *backoff = (*backoff * 2).min(MAX_BACKOFF);
            }
            Stall::Store(StoreError::Fenced(why)) => {
                tracing::warn!(sink = %self.config.name, %why, "Another process got to a partition first, or the store rolled the batch back; starting again from the store's positions.");
            }
            Stall::Store(StoreError::Lost(why)) => {
                tracing::error!(sink = %self.config.name, %why, "Writing to the store failed; reconnecting and starting again from its positions.");
                pause(stop, *backoff);
                *backoff = (*backoff * 2).min(MAX_BACKOFF);
                // Tables may have to be made again (a server restored from an older state).
                for t in self.tables.values_mut() {
                    t.versions.clear();
                }
            }
        }
        while !stop.load(Ordering::Relaxed) {
            match self.source.rewind() {
                Ok(a) => {
                    self.next = a;
                    return;
                }
                Err(e) => {
                    tracing::error!(sink = %self.config.name, error = %e, "Cannot read the store's positions; trying again.");
                    pause(stop, *backoff);
                    *backoff = (*backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Lays `records` out and writes them in one transaction.
    fn flush(&mut self, records: &[SourceRecord]) -> Result<(), Stall> {
        let mut batch = Batch::default();
        let mut by_stream: BTreeMap<String, TableRows> = BTreeMap::new();
        let mut moves: BTreeMap<Tp, Move> = BTreeMap::new();
        for r in records {
            let tp = (r.topic.clone(), r.partition);
            let Some(stream) = self.streams.get(&r.topic).cloned() else {
                continue;
            };
            if self.tables.get(&stream).is_none_or(|t| t.stopped.is_some()) {
                continue;
            }
            let event_text = match std::str::from_utf8(&r.value) {
                Ok(text) => text.to_owned(),
                Err(_) => String::from_utf8_lossy(&r.value).into_owned(),
            };
            let dead = |reason: String| DeadLetter {
                stream: stream.clone(),
                at: (tp.clone(), r.offset),
                reason,
                event: event_text.clone(),
            };
            match self.lay_out(&stream, r) {
                Ok(Laid::Row { cells, key }) => {
                    let t = self.tables.get(&stream);
                    let entry = by_stream
                        .entry(stream.clone())
                        .or_insert_with(|| TableRows {
                            stream: stream.clone(),
                            table: t.map(|t| t.name.clone()).unwrap_or_default(),
                            columns: Vec::new(),
                            rows: Vec::new(),
                            staged: Vec::new(),
                        });
                    entry.rows.push(Row {
                        cells,
                        at: (tp.clone(), r.offset),
                        key,
                        event: event_text.clone(),
                        dt_ms: r.timestamp_ms,
                    });
                }
                Ok(Laid::Stopped) => continue,
                Err(Refuse::Dead(reason)) => batch.dead.push(dead(reason)),
                Err(Refuse::Stall(e)) => return Err(e),
            }
            let from = self.next.get(&tp).copied().flatten();
            moves
                .entry(tp.clone())
                .and_modify(|m| m.to = m.to.max(r.offset + 1))
                .or_insert(Move {
                    tp: tp.clone(),
                    from,
                    to: r.offset + 1,
                });
        }
        // Rows were laid out against the columns known when each was read; pad to the table's whole width.
        for (stream, mut t) in by_stream {
            let Some(table) = self.tables.get(&stream) else {
                continue;
            };
            if table.stopped.is_some() {
                continue;
            }
            t.columns = table.columns.clone();
            for row in &mut t.rows {
                row.cells.resize(t.columns.len(), crate::row::Cell::Null);
            }
            // The lake's events are decoded here, while the writer thread encodes the last batch.
            let schema = self.lake_schemas.as_ref().and_then(|s| {
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&t.table)
                    .cloned()
            });
            if let Some(schema) = schema {
                t.staged = crate::lake::stage(&schema, &t).unwrap_or_default();
            }
            batch.tables.push(t);
        }
        // Records of a stream stopped during this batch leave its partitions where they were.
        batch.moves = moves
            .into_values()
            .filter(|m| {
                self.streams
                    .get(&m.tp.0)
                    .and_then(|s| self.tables.get(s))
                    .is_some_and(|t| t.stopped.is_none())
            })
            .collect();
        // This batch starts where the one in flight ends: if that one failed, this one is void.
        self.settle(true)?;
        if batch.moves.is_empty() && !self.lake {
            return Ok(());
        }
        for m in &batch.moves {
            self.next.insert(m.tp.clone(), Some(m.to));
        }
        let mut newest: HashMap<Tp, i64> = HashMap::new();
        for r in records {
            newest.insert((r.topic.clone(), r.partition), r.timestamp_ms);
        }
        for t in &batch.tables {
            let l = self.labels(&t.stream);
            self.metrics
                .read
                .get_or_create(&l)
                .inc_by(t.rows.len() as u64);
        }
        let inflight = InFlight {
            done: batch.moves.iter().map(|m| (m.tp.clone(), m.to)).collect(),
            newest: newest.into_iter().collect(),
            records: records.len(),
        };
        if self.writer.batches.send(batch).is_err() {
            return Err(Stall::Store(StoreError::Lost(
                "the writer thread stopped".into(),
            )));
        }
        self.inflight = Some(inflight);
        Ok(())
    }

    /// Accounts for the batch in flight once it is written (waiting for it with `block`);
    /// its failure is this call's.
    fn settle(&mut self, block: bool) -> Result<(), Stall> {
        let Some(inflight) = self.inflight.take() else {
            return Ok(());
        };
        let result = if block {
            self.writer
                .results
                .recv()
                .map_err(|_| StoreError::Lost("the writer thread stopped".into()))
        } else {
            match self.writer.results.try_recv() {
                Ok(r) => Ok(r),
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    self.inflight = Some(inflight);
                    return Ok(());
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    Err(StoreError::Lost("the writer thread stopped".into()))
                }
            }
        };
        let written = result.and_then(|r| r).map_err(Stall::Store)?;
        for (tp, ts) in inflight.newest {
            self.newest.insert(tp, ts);
        }
        self.source.written(&inflight.done);
        for (stream, n) in &written.rows {
            let l = self.labels(stream);
            self.metrics.rows.get_or_create(&l).inc_by(*n);
        }
        for (stream, n) in &written.dead {
            let l = self.labels(stream);
            self.metrics.dead_letters.get_or_create(&l).inc_by(*n);
            tracing::warn!(sink = %self.config.name, %stream, count = n, "Events went to the dead letters, each with its reason.");
        }
        tracing::debug!(sink = %self.config.name, records = inflight.records, "Batch written.");
        Ok(())
    }

    /// An event's cells (and key), or why it goes to the dead letters.
    fn lay_out(&mut self, stream: &str, r: &SourceRecord) -> Result<Laid, Refuse> {
        if self.lake {
            // The lake decodes the event into Arrow arrays itself; only its schema is read here.
            let uri = match &r.schema_uri {
                Some(u) => u.clone(),
                None => schema_of(&r.value)?,
            };
            self.ready(stream, &uri)?;
            return Ok(match self.tables.get(stream) {
                Some(t) if t.stopped.is_none() => Laid::Row {
                    cells: Vec::new(),
                    key: None,
                },
                _ => Laid::Stopped,
            });
        }
        let event: serde_json::Value = serde_json::from_slice(&r.value)
            .map_err(|e| Refuse::Dead(format!("the record is not a JSON event: {e}")))?;
        let uri = match &r.schema_uri {
            Some(u) => u.clone(),
            None => event
                .get("$schema")
                .and_then(|s| s.as_str())
                .map(str::to_owned)
                .ok_or_else(|| {
                    Refuse::Dead(
                        "the event names no schema (no `$schema`, no schema_uri header)".into(),
                    )
                })?,
        };
        self.ready(stream, &uri)?;
        let Some(table) = self.tables.get(stream) else {
            return Ok(Laid::Stopped);
        };
        if table.stopped.is_some() {
            return Ok(Laid::Stopped);
        }
        let cells = cells(&event, &table.columns).map_err(Refuse::Dead)?;
        let key = match &self.key {
            Some(t) => Some(t.render(stream, &event).map_err(Refuse::Dead)?),
            None => None,
        };
        Ok(Laid::Row { cells, key })
    }

    /// Makes the stream's table fit the schema at `uri`.
    fn ready(&mut self, stream: &str, uri: &str) -> Result<(), Refuse> {
        // The edge validated the event against this schema, so the repositories here lag
        // behind the aggregator's: wait for them rather than refuse the event.
        let (uri, doc) = self.schemas.get(uri).map_err(|miss| match miss {
            SchemaMiss::Wrong(why) => Refuse::Dead(why),
            SchemaMiss::Missing(why) => Refuse::Stall(Stall::Schema(why)),
        })?;
        self.prepare(stream, &uri, &doc)
            .map_err(|e| Refuse::Stall(Stall::Store(e)))
    }

    fn measure_lag(&mut self) {
        let now_ms = sluice_host::clock::unix_millis();
        let mut by_stream: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for (tp, end) in self.source.ends() {
            let Some(stream) = self.streams.get(&tp.0) else {
                continue;
            };
            let at = self.next.get(&tp).copied().flatten().unwrap_or(0);
            let behind = (end - at).max(0);
            let e = by_stream.entry(stream.clone()).or_default();
            e.0 += behind;
            if behind > 0 {
                let newest = self.newest.get(&tp).copied().unwrap_or(now_ms);
                e.1 = e.1.max(now_ms - newest);
            }
        }
        for (stream, (records, ms)) in by_stream {
            let l = self.labels(&stream);
            self.metrics.lag_records.get_or_create(&l).set(records);
            self.metrics
                .lag_seconds
                .get_or_create(&l)
                .set(ms.max(0) as f64 / 1000.0);
        }
    }
}

/// What an event became.
enum Laid {
    Row {
        cells: Vec<crate::row::Cell>,
        key: Option<String>,
    },
    Stopped,
}

/// Why an event is not a row.
enum Refuse {
    /// It goes to the dead letters, with this reason.
    Dead(String),
    /// The batch cannot be written now.
    Stall(Stall),
}

/// Why a batch was not written: it is read again from the store's positions after a pause.
#[derive(Debug, thiserror::Error)]
pub enum Stall {
    /// The store failed or another process wrote first.
    #[error(transparent)]
    Store(StoreError),
    /// An event names a schema the repositories here do not hold (yet).
    #[error("{0}; waiting for it")]
    Schema(String),
}

/// The `$schema` of an event, read without building the event.
fn schema_of(value: &[u8]) -> Result<String, Refuse> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "$schema")]
        schema: Option<String>,
    }
    let head: Head = serde_json::from_slice(value)
        .map_err(|e| Refuse::Dead(format!("the record is not a JSON event: {e}")))?;
    head.schema.ok_or_else(|| {
        Refuse::Dead("the event names no schema (no `$schema`, no schema_uri header)".into())
    })
}

/// Sleeps `d`, or less when `stop` is set meanwhile.
fn pause(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(100)));
    }
}
