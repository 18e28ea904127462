//! The lake: every stream a typed dataset of hourly-partitioned Parquet
//! files on a filesystem or an object store, written exactly once.
//!
//! Events are decoded straight into Arrow arrays ([`arrow`]) by the table's
//! schema, which is the union of the schema versions seen ([`arrow::widen`]),
//! and written into one open file per source partition, table and hour.
//! When a partition's files are due (a file reached `max_file_bytes`, the
//! oldest event waited `max_file_age_secs`, or the sink stops) they are all
//! closed under staging names and committed together with the partition's
//! position in one manifest ([`commit`]), then renamed into their hours.
//! An hour every partition has passed gets its small files compacted and a
//! `_SUCCESS` marker ([`hours`]).

mod arrow;
mod commit;
mod hours;
mod layout;

pub use self::arrow::{Conflict, Misfit, arrow_fields, decode, widen};
pub use self::layout::{Hour, hour_dir, hour_of};

use self::commit::{CommittedFile, Manifest, lost};
use self::layout::{HOUR_MS, Layout, owner};
use crate::config::SinkConfig;
use crate::source::Tp;
use crate::store::{Batch, DeadLetter, PrepareError, Store, StoreError, Written, count};
use arrow_array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes of encoded data a row group holds at most: large enough to scan well, small
/// enough that every open file's buffer stays modest.
const ROW_GROUP_BYTES: usize = 64 << 20;
/// How often complete hours are looked for.
const HOURS_EVERY: Duration = Duration::from_secs(2);

/// What a lake sink is told by its config.
#[derive(Debug, Clone)]
pub struct LakeSettings {
    /// The lake's URL.
    pub url: String,
    /// Object store settings.
    pub options: BTreeMap<String, String>,
    /// The sink.
    pub sink: String,
    /// The dataset of dead letters.
    pub dead_letter_table: String,
    /// A file is committed at this size.
    pub max_file_bytes: u64,
    /// A file is committed this long after its first event.
    pub max_file_age: Duration,
    /// An hour is complete this long after its end.
    pub grace: Duration,
}

impl LakeSettings {
    /// The settings of a `parquet` sink.
    pub fn of(sink: &SinkConfig) -> LakeSettings {
        LakeSettings {
            url: sink.url.clone(),
            options: sink.options.clone(),
            sink: sink.name.clone(),
            dead_letter_table: sink.dead_letter_table.clone(),
            max_file_bytes: sink.max_file_bytes,
            max_file_age: Duration::from_secs(sink.max_file_age_secs),
            grace: Duration::from_secs(sink.hour_grace_secs),
        }
    }
}

/// A file being written.
struct OpenFile {
    stream: String,
    table: String,
    hour: Hour,
    schema: SchemaRef,
    staging: Path,
    path: Path,
    writer: AsyncArrowWriter<BufWriter>,
    rows: u64,
}

impl OpenFile {
    fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    /// Finishes the file under its staging name.
    async fn close(self) -> Result<(CommittedFile, String), StoreError> {
        let OpenFile {
            stream,
            table,
            hour,
            staging,
            path,
            writer,
            rows,
            ..
        } = self;
        writer
            .close()
            .await
            .map_err(|e| lost("finishing a Parquet file", e))?;
        let f = CommittedFile {
            staging: staging.to_string(),
            path: path.to_string(),
            table,
            hour,
            rows,
        };
        Ok((f, stream))
    }

    /// Drops the file: its upload is aborted, its rows are read again from the source.
    async fn abort(self) {
        let mut w = self.writer.into_inner();
        if let Err(e) = w.abort().await {
            tracing::debug!(error = %e, "An unfinished upload could not be aborted; the store drops it.");
        }
    }
}

/// A source partition as the lake holds it.
struct Part {
    /// Its last commit's number (0: none).
    seq: u64,
    /// The position its last commit holds.
    position: Option<i64>,
    /// The position after the records written into its open files.
    buffered_to: Option<i64>,
    open: Vec<OpenFile>,
    /// Files finished but not committed (a file closed when its table's schema widened).
    closed: Vec<(CommittedFile, String)>,
    /// When its oldest uncommitted record came.
    first_at: Option<Instant>,
    /// The newest `meta.dt` it read, and when it last read one.
    newest_ms: i64,
    last_record: Instant,
    /// Hours it wrote that have no marker yet.
    unmarked: BTreeSet<(String, Hour)>,
}

impl Part {
    fn new(m: Option<&Manifest>) -> Part {
        Part {
            seq: m.map_or(0, |m| m.seq),
            position: m.map(|m| m.position),
            buffered_to: m.map(|m| m.position),
            open: Vec::new(),
            closed: Vec::new(),
            first_at: None,
            newest_ms: i64::MIN,
            last_record: Instant::now(),
            unmarked: m
                .map(|m| m.unmarked.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }

    fn holds(&self, table: &str, hour: Hour) -> bool {
        self.open.iter().any(|f| f.table == table && f.hour == hour)
            || self
                .closed
                .iter()
                .any(|(f, _)| f.table == table && f.hour == hour)
    }
}

/// The object store and where the lake is in it.
struct Opened {
    store: Arc<dyn ObjectStore>,
    layout: Layout,
}

/// A `parquet` sink's store.
pub struct LakeStore {
    rt: Arc<tokio::runtime::Runtime>,
    settings: LakeSettings,
    opened: Option<Opened>,
    /// Each table's schema (all versions seen, widened), shared with the runner that decodes.
    tables: TableSchemas,
    parts: HashMap<Tp, Part>,
    /// Hours written that have no marker yet, over every partition.
    unmarked: BTreeSet<(String, Hour)>,
    hours_at: Instant,
    /// Compactions left unfinished by an earlier run are finished once, on first use.
    recovered: bool,
}

impl LakeStore {
    /// A lake store for `settings`; the store is reached on first use.
    pub fn new(settings: LakeSettings) -> Result<LakeStore, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lake-io")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the lake's IO runtime: {e}"))?;
        Ok(LakeStore {
            rt: Arc::new(rt),
            settings,
            opened: None,
            tables: TableSchemas::default(),
            parts: HashMap::new(),
            unmarked: BTreeSet::new(),
            hours_at: Instant::now(),
            recovered: false,
        })
    }

    /// The tables' schemas, for a runner to decode events ahead of the store ([`stage`]).
    pub fn schemas(&self) -> TableSchemas {
        self.tables.clone()
    }

    fn table_schema(&self, table: &str) -> Option<SchemaRef> {
        lock(&self.tables).get(table).cloned()
    }

    fn open(&mut self) -> Result<(Arc<dyn ObjectStore>, Layout), StoreError> {
        if self.opened.is_none() {
            let (store, root) =
                open_store(&self.settings.url, &self.settings.options).map_err(StoreError::Lost)?;
            self.opened = Some(Opened {
                store,
                layout: Layout {
                    root,
                    sink: self.settings.sink.clone(),
                },
            });
        }
        let o = self
            .opened
            .as_ref()
            .ok_or_else(|| StoreError::Lost("the lake is not open".into()))?;
        Ok((o.store.clone(), o.layout.clone()))
    }

    /// The stored schema of `table`, if an earlier run wrote one.
    async fn stored_schema(&mut self, table: &str) -> Result<Option<Schema>, StoreError> {
        let (store, layout) = self.open()?;
        match store.get(&layout.schema(table)).await {
            Ok(r) => {
                let bytes = r
                    .bytes()
                    .await
                    .map_err(|e| lost("reading a table schema", e))?;
                let s = serde_json::from_slice(&bytes).map_err(|e| {
                    StoreError::Lost(format!("the table schema of `{table}` cannot be read: {e}"))
                })?;
                Ok(Some(s))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(lost("reading a table schema", e)),
        }
    }

    async fn prepare_async(
        &mut self,
        table: &str,
        uri: &str,
        doc: &serde_json::Value,
    ) -> Result<(), PrepareError> {
        let (fields, left_out) = arrow_fields(&crate::shape::fields(doc));
        let new = Schema::new(fields);
        let old = match self.table_schema(table) {
            Some(s) => Some(s.as_ref().clone()),
            None => self.stored_schema(table).await?,
        };
        if !left_out.is_empty() && old.is_none() {
            tracing::warn!(%table, schema = %uri, fields = ?left_out, "Fields of no fixed type (several types, free-form objects, arrays without items) are left out of the Parquet table.");
        }
        let merged = match &old {
            None => new,
            Some(old) => widen(old, &new, uri).map_err(|c| PrepareError::Refused(c.to_string()))?,
        };
        if old.as_ref() != Some(&merged) {
            let (store, layout) = self.open()?;
            let body =
                serde_json::to_vec(&merged).map_err(|e| lost("encoding a table schema", e))?;
            store
                .put(&layout.schema(table), PutPayload::from(body))
                .await
                .map_err(|e| lost("writing a table schema", e))?;
            tracing::info!(%table, schema = %uri, "The table's schema takes a new version.");
        }
        lock(&self.tables).insert(table.to_owned(), Arc::new(merged));
        Ok(())
    }

    async fn positions_async(&mut self, tps: &[Tp]) -> Result<Vec<Option<i64>>, StoreError> {
        let (store, layout) = self.open()?;
        if !self.recovered {
            hours::recover(store.as_ref(), &layout).await?;
            self.recovered = true;
        }
        let mut out = Vec::with_capacity(tps.len());
        for tp in tps {
            if let Some(old) = self.parts.remove(tp) {
                for f in old.open {
                    f.abort().await;
                }
            }
            let m = commit::latest(store.as_ref(), &layout, tp).await?;
            if let Some(m) = &m {
                commit::publish(store.as_ref(), &layout, tp, m).await?;
            }
            let keep = m.as_ref().map(|m| m.files.clone()).unwrap_or_default();
            let swept = commit::sweep(store.as_ref(), &layout, tp, &keep).await?;
            if swept > 0 {
                tracing::info!(partition = %owner(tp), files = swept, "Staging files no commit names were deleted.");
            }
            let part = Part::new(m.as_ref());
            self.unmarked.extend(part.unmarked.iter().cloned());
            out.push(part.position);
            self.parts.insert(tp.clone(), part);
        }
        Ok(out)
    }

    async fn write_async(&mut self, batch: &Batch) -> Result<Written, StoreError> {
        let r = self.write_inner(batch).await;
        if r.is_err() {
            // What was buffered is read again from the committed positions.
            for (_, p) in self.parts.drain() {
                for f in p.open {
                    f.abort().await;
                }
            }
        }
        r
    }

    async fn write_inner(&mut self, batch: &Batch) -> Result<Written, StoreError> {
        let mut written = Written::default();
        let mut dead: Vec<DeadLetter> = batch.dead.clone();
        for m in &batch.moves {
            let part = self
                .parts
                .get(&m.tp)
                .ok_or_else(|| StoreError::Fenced(format!("{} is not held here", owner(&m.tp))))?;
            if part.buffered_to != m.from {
                return Err(StoreError::Fenced(format!(
                    "{} continues at {:?}, not {:?}",
                    owner(&m.tp),
                    part.buffered_to,
                    m.from
                )));
            }
        }
        for t in &batch.tables {
            let schema = self
                .table_schema(&t.table)
                .ok_or_else(|| StoreError::Lost(format!("table `{}` was not prepared", t.table)))?;
            // Decoded by the runner while the last batch was written, unless the table's
            // schema widened since.
            let staged = if !t.staged.is_empty() && t.staged.iter().all(|g| g.schema == schema) {
                t.staged.clone()
            } else {
                stage(&schema, t).map_err(|e| lost("decoding", e))?
            };
            for g in staged {
                for (i, why) in g.misfits {
                    let row = &t.rows[g.rows[i]];
                    let reason = match why {
                        Misfit::NotJson(e) => format!("the record is not a JSON event: {e}"),
                        Misfit::Type(e) => {
                            format!("the event does not fit table `{}`: {e}", t.table)
                        }
                    };
                    dead.push(DeadLetter {
                        stream: t.stream.clone(),
                        at: row.at.clone(),
                        reason,
                        event: row.event.clone(),
                    });
                }
                if let Some(rb) = g.batch {
                    self.append(&g.tp, &t.stream, &t.table, g.hour, &schema, &rb)
                        .await?;
                }
            }
        }
        if !dead.is_empty() {
            let table = self.settings.dead_letter_table.clone();
            let schema = dead_letter_schema();
            let now = sluice_host::clock::unix_millis();
            let mut by_tp: BTreeMap<Tp, Vec<&DeadLetter>> = BTreeMap::new();
            for d in &dead {
                by_tp.entry(d.at.0.clone()).or_default().push(d);
                count(&mut written.dead, &d.stream, 1);
            }
            for (tp, letters) in by_tp {
                let rb = dead_letter_batch(&schema, &letters, now)?;
                self.append(&tp, "", &table, hour_of(now), &schema, &rb)
                    .await?;
            }
        }
        for m in &batch.moves {
            if let Some(p) = self.parts.get_mut(&m.tp) {
                p.buffered_to = Some(m.to);
                p.first_at.get_or_insert_with(Instant::now);
                p.last_record = Instant::now();
            }
        }
        for t in &batch.tables {
            for row in &t.rows {
                if let Some(p) = self.parts.get_mut(&row.at.0) {
                    p.newest_ms = p.newest_ms.max(row.dt_ms);
                }
            }
        }
        let committed = self.maintain(false).await?;
        Ok(Written {
            rows: committed,
            dead: written.dead,
        })
    }

    /// Writes `rb` into the partition's open file of `table` and `hour`.
    async fn append(
        &mut self,
        tp: &Tp,
        stream: &str,
        table: &str,
        hour: Hour,
        schema: &SchemaRef,
        rb: &RecordBatch,
    ) -> Result<(), StoreError> {
        let (store, layout) = self.open()?;
        let part = self
            .parts
            .get_mut(tp)
            .ok_or_else(|| StoreError::Fenced(format!("{} is not held here", owner(tp))))?;
        let at = part
            .open
            .iter()
            .position(|f| f.table == table && f.hour == hour);
        let at = match at {
            Some(i) if part.open[i].schema == *schema => i,
            found => {
                if let Some(i) = found {
                    // The table's schema widened: this file ends with the narrower one.
                    let f = part.open.swap_remove(i);
                    part.closed.push(f.close().await?);
                }
                let from = part.buffered_to.unwrap_or(0);
                let staging = layout.staging(&owner(tp));
                let path = layout.data_file(table, hour, tp, from);
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
                    .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
                    .build();
                let out = BufWriter::new(store.clone(), staging.clone());
                let writer = AsyncArrowWriter::try_new(out, schema.clone(), Some(props))
                    .map_err(|e| lost("starting a Parquet file", e))?;
                part.open.push(OpenFile {
                    stream: stream.to_owned(),
                    table: table.to_owned(),
                    hour,
                    schema: schema.clone(),
                    staging,
                    path,
                    writer,
                    rows: 0,
                });
                part.open.len() - 1
            }
        };
        let f = &mut part.open[at];
        f.writer
            .write(rb)
            .await
            .map_err(|e| lost("writing a Parquet file", e))?;
        f.rows += rb.num_rows() as u64;
        Ok(())
    }

    /// Commits every partition whose files are due (all with `all`), then marks and compacts
    /// the hours that are complete; returns the rows committed by stream.
    async fn maintain(&mut self, all: bool) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut rows = BTreeMap::new();
        let due: Vec<Tp> = self
            .parts
            .iter()
            .filter(|(_, p)| {
                let moved = p.buffered_to != p.position;
                let aged = p
                    .first_at
                    .is_some_and(|t| t.elapsed() >= self.settings.max_file_age);
                let full = p
                    .open
                    .iter()
                    .any(|f| f.size() >= self.settings.max_file_bytes);
                moved && (all || aged || full)
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            self.commit(&tp, &mut rows).await?;
        }
        if !all && self.hours_at.elapsed() >= HOURS_EVERY {
            self.hours_at = Instant::now();
            self.complete_hours().await?;
        }
        Ok(rows)
    }

    /// Closes a partition's files and commits them with its position.
    async fn commit(
        &mut self,
        tp: &Tp,
        rows: &mut BTreeMap<String, u64>,
    ) -> Result<(), StoreError> {
        let (store, layout) = self.open()?;
        let Some(mut part) = self.parts.remove(tp) else {
            return Ok(());
        };
        let Some(position) = part.buffered_to else {
            self.parts.insert(tp.clone(), part);
            return Ok(());
        };
        let mut files = std::mem::take(&mut part.closed);
        for f in std::mem::take(&mut part.open) {
            files.push(f.close().await?);
        }
        for (f, _) in &files {
            part.unmarked.insert((f.table.clone(), f.hour));
        }
        part.unmarked.retain(|h| {
            self.unmarked.contains(h)
                || files.iter().any(|(f, _)| (&f.table, f.hour) == (&h.0, h.1))
        });
        let m = Manifest {
            seq: part.seq + 1,
            position,
            files: files.iter().map(|(f, _)| f.clone()).collect(),
            unmarked: part.unmarked.iter().cloned().collect(),
        };
        commit::put(store.as_ref(), &layout, tp, &m).await?;
        commit::publish(store.as_ref(), &layout, tp, &m).await?;
        for (f, stream) in &files {
            if !stream.is_empty() {
                count(rows, stream, f.rows);
            }
            self.unmarked.insert((f.table.clone(), f.hour));
        }
        tracing::debug!(partition = %owner(tp), seq = m.seq, position, files = files.len(), "Files committed.");
        part.seq = m.seq;
        part.position = Some(position);
        part.first_at = None;
        self.parts.insert(tp.clone(), part);
        Ok(())
    }

    /// Marks (after compacting) every hour each partition has passed by the grace period.
    async fn complete_hours(&mut self) -> Result<(), StoreError> {
        let (store, layout) = self.open()?;
        let now = sluice_host::clock::unix_millis();
        let grace = self.settings.grace;
        let grace_ms = grace.as_millis() as i64;
        let ready: Vec<(String, Hour)> = self
            .unmarked
            .iter()
            .filter(|(table, hour)| {
                let end = hour + HOUR_MS;
                now >= end + grace_ms
                    && self.parts.values().all(|p| {
                        !p.holds(table, *hour)
                            && (p.newest_ms >= end || p.last_record.elapsed() >= grace)
                    })
            })
            .cloned()
            .collect();
        for (table, hour) in ready {
            hours::complete(&store, &layout, &table, hour, self.settings.max_file_bytes).await?;
            self.unmarked.remove(&(table.clone(), hour));
            for p in self.parts.values_mut() {
                p.unmarked.remove(&(table.clone(), hour));
            }
        }
        Ok(())
    }
}

impl Store for LakeStore {
    fn positions(&mut self, tps: &[Tp]) -> Result<Vec<Option<i64>>, StoreError> {
        let rt = self.rt.clone();
        rt.block_on(self.positions_async(tps))
    }

    fn prepare(
        &mut self,
        table: &str,
        _columns: &[crate::columns::Column],
        schema: &str,
        doc: &serde_json::Value,
    ) -> Result<(), PrepareError> {
        let rt = self.rt.clone();
        rt.block_on(self.prepare_async(table, schema, doc))
    }

    fn write(&mut self, batch: &Batch) -> Result<Written, StoreError> {
        let rt = self.rt.clone();
        rt.block_on(self.write_async(batch))
    }

    fn finish(&mut self) -> Result<Written, StoreError> {
        let rt = self.rt.clone();
        let rows = rt.block_on(self.maintain(true))?;
        Ok(Written {
            rows,
            dead: BTreeMap::new(),
        })
    }
}

/// Each table's schema, shared by a lake store and the runner that decodes for it.
pub type TableSchemas = Arc<Mutex<HashMap<String, SchemaRef>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The rows of one source partition and hour of a table, decoded into Arrow arrays.
#[derive(Debug, Clone)]
pub struct Staged {
    /// The partition.
    pub tp: Tp,
    /// The hour.
    pub hour: Hour,
    /// The rows, as indexes into their [`TableRows`](crate::store::TableRows).
    pub rows: Vec<usize>,
    /// The schema they were decoded by.
    pub schema: SchemaRef,
    /// Those that fit.
    pub batch: Option<RecordBatch>,
    /// Those that do not, as indexes into `rows`, with why.
    pub misfits: Vec<(usize, Misfit)>,
}

/// A table's rows grouped by partition and hour (in the order read) and decoded by `schema`.
pub fn stage(schema: &SchemaRef, t: &crate::store::TableRows) -> Result<Vec<Staged>, String> {
    let mut groups: BTreeMap<(Tp, Hour), Vec<usize>> = BTreeMap::new();
    for (i, row) in t.rows.iter().enumerate() {
        groups
            .entry((row.at.0.clone(), hour_of(row.dt_ms)))
            .or_default()
            .push(i);
    }
    groups
        .into_iter()
        .map(|((tp, hour), rows)| {
            let events: Vec<&[u8]> = rows.iter().map(|&i| t.rows[i].event.as_bytes()).collect();
            let (batch, misfits) = decode(schema, &events)?;
            Ok(Staged {
                tp,
                hour,
                rows,
                schema: schema.clone(),
                batch,
                misfits,
            })
        })
        .collect()
}

/// The dead letters' table: where each event was read, why it was set aside, and the event.
fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("stream", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("event", DataType::Utf8, false),
        Field::new(
            "dt",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            false,
        ),
    ]))
}

fn dead_letter_batch(
    schema: &SchemaRef,
    letters: &[&DeadLetter],
    now_ms: i64,
) -> Result<RecordBatch, StoreError> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|d| d.stream.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|d| d.at.0.0.as_ref()),
        )),
        Arc::new(Int32Array::from_iter_values(
            letters.iter().map(|d| d.at.0.1),
        )),
        Arc::new(Int64Array::from_iter_values(letters.iter().map(|d| d.at.1))),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|d| d.reason.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|d| d.event.as_str()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(letters.iter().map(|_| now_ms * 1000))
                .with_timezone("+00:00"),
        ),
    ];
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| lost("laying out dead letters", e))
}

/// The object store of `url` and the lake's root in it: `file://` a local folder (made
/// when missing; every file and folder synced), `s3://`, `gs://`, `az://` (and the other
/// forms object_store knows) with `options` and the provider's environment variables.
fn open_store(
    url: &str,
    options: &BTreeMap<String, String>,
) -> Result<(Arc<dyn ObjectStore>, Path), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("the lake URL `{url}`: {e}"))?;
    if parsed.scheme() == "file" {
        let dir = parsed
            .to_file_path()
            .map_err(|()| format!("the lake URL `{url}` is not a local path"))?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot make the lake folder {}: {e}", dir.display()))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| format!("the lake folder {}: {e}", dir.display()))?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        return Ok((Arc::new(fs), Path::default()));
    }
    // The HTTP client's TLS runs on ring, as the rest of Sluice; set once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut opts: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("AWS_") || k.starts_with("GOOGLE_") || k.starts_with("AZURE_")
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    opts.extend(options.iter().map(|(k, v)| (k.clone(), v.clone())));
    let (store, root) = object_store::parse_url_opts(&parsed, opts)
        .map_err(|e| format!("the lake URL `{url}`: {e}"))?;
    Ok((Arc::from(store), root))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Move, Row, TableRows};
    use serde_json::json;

    fn settings(dir: &std::path::Path) -> LakeSettings {
        LakeSettings {
            url: format!("file://{}", dir.display()),
            options: BTreeMap::new(),
            sink: "lake".into(),
            dead_letter_table: "dead".into(),
            max_file_bytes: 128 << 20,
            // Every write commits.
            max_file_age: Duration::ZERO,
            grace: Duration::from_secs(3600),
        }
    }

    fn batch(tp: &Tp, from: Option<i64>, to: i64) -> Batch {
        let start = from.unwrap_or(0);
        let rows = (start..to)
            .map(|i| Row {
                cells: Vec::new(),
                at: (tp.clone(), i),
                key: None,
                event: json!({"meta": {"id": format!("e{i}")}, "n": i}).to_string(),
                dt_ms: 1_796_428_800_000,
            })
            .collect();
        Batch {
            tables: vec![TableRows {
                stream: "s".into(),
                table: "t".into(),
                columns: Vec::new(),
                rows,
                staged: Vec::new(),
            }],
            dead: Vec::new(),
            moves: vec![Move {
                tp: tp.clone(),
                from,
                to,
            }],
        }
    }

    fn visible_rows(dir: &std::path::Path) -> usize {
        let hour = dir.join("t").join(hour_dir(1_796_428_800_000));
        std::fs::read_dir(hour)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
                    .map(|e| {
                        let f = std::fs::File::open(e.path()).unwrap();
                        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                            .unwrap()
                            .build()
                            .unwrap()
                            .map(|b| b.unwrap().num_rows())
                            .sum::<usize>()
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    #[test]
    fn two_writers_of_one_partition_commit_once_and_the_loser_resumes_after_the_winner() {
        let dir = tempfile::tempdir().unwrap();
        let doc = json!({"properties": {"meta": {"properties": {"id": {"type": "string"}}},
                                        "n": {"type": "integer"}}});
        let tp: Tp = (Arc::from("topic"), 0);
        let mut a = LakeStore::new(settings(dir.path())).unwrap();
        let mut b = LakeStore::new(settings(dir.path())).unwrap();
        for s in [&mut a, &mut b] {
            s.prepare("t", &[], "/t/1.0.0", &doc).unwrap();
            assert_eq!(s.positions(std::slice::from_ref(&tp)).unwrap(), vec![None]);
        }
        let written = a.write(&batch(&tp, None, 10)).unwrap();
        assert_eq!(written.rows.get("s"), Some(&10));
        assert_eq!(visible_rows(dir.path()), 10);
        // B read the same records from the same position: its commit is refused, nothing shows.
        assert!(matches!(
            b.write(&batch(&tp, None, 10)),
            Err(StoreError::Fenced(_))
        ));
        assert_eq!(visible_rows(dir.path()), 10);
        // Starting again from what the lake holds, B goes on after A's records.
        assert_eq!(
            b.positions(std::slice::from_ref(&tp)).unwrap(),
            vec![Some(10)]
        );
        b.write(&batch(&tp, Some(10), 15)).unwrap();
        assert_eq!(visible_rows(dir.path()), 15);
        // A's next batch from where it left off is now refused in turn.
        assert!(matches!(
            a.write(&batch(&tp, Some(10), 15)),
            Err(StoreError::Fenced(_))
        ));
        assert_eq!(visible_rows(dir.path()), 15);
    }
}
