//! The stores a sink writes: each takes a batch of rows, the dead letters
//! beside them and the source positions they move, and writes all of it in
//! one transaction of its own (a SQL transaction, Redis `MULTI`/`EXEC`), after
//! checking that the positions are still where this sink left them, so that
//! a row is written once even when two processes raced for a partition.

mod mysql;
mod postgres;
mod redis;
mod sql;

pub use self::mysql::{MariaConn, MysqlStore};
pub use self::postgres::{PgConn, PostgresStore};
pub use self::redis::RedisStore;
pub use self::sql::{SqlConn, SqlStore};

use crate::columns::{Column, TypeChange};
use crate::row::Cell;
use crate::source::Tp;
use std::collections::BTreeMap;

/// One event to write.
#[derive(Debug, Clone)]
pub struct Row {
    /// Its values, one per column of its table.
    pub cells: Vec<Cell>,
    /// Where it was read.
    pub at: (Tp, i64),
    /// Its key (Redis).
    pub key: Option<String>,
    /// The event as read, for dead letters and JSON values.
    pub event: String,
    /// Its `meta.dt` (the record's timestamp), Unix milliseconds.
    pub dt_ms: i64,
}

/// The rows of one stream.
#[derive(Debug, Clone)]
pub struct TableRows {
    /// The stream.
    pub stream: String,
    /// Its table.
    pub table: String,
    /// Every column the table has that the connector knows, in the rows' order.
    pub columns: Vec<Column>,
    /// The rows.
    pub rows: Vec<Row>,
    /// The lake: the rows already decoded into Arrow arrays by the runner (empty: the
    /// store decodes them, as every other store lays out its own).
    pub staged: Vec<crate::lake::Staged>,
}

/// An event that cannot be written, with why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The stream.
    pub stream: String,
    /// Where it was read.
    pub at: (Tp, i64),
    /// Why it was not written.
    pub reason: String,
    /// The event as read.
    pub event: String,
}

/// A partition's position moved by a batch: from where the sink last left it to after the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The partition.
    pub tp: Tp,
    /// Where the store should hold it now (`None`: no row yet).
    pub from: Option<i64>,
    /// Where it holds it after the batch.
    pub to: i64,
}

/// A batch to write in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Rows by stream.
    pub tables: Vec<TableRows>,
    /// Events that go to the dead letters.
    pub dead: Vec<DeadLetter>,
    /// Positions moved.
    pub moves: Vec<Move>,
}

/// What a batch wrote, by stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// New rows (repeats of rows already there are not counted).
    pub rows: BTreeMap<String, u64>,
    /// Dead letters, the store's refusals among them.
    pub dead: BTreeMap<String, u64>,
}

/// A write or read that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The connection failed or the store is away: reconnect, then start again from the stored positions.
    #[error("the store is unreachable or failed: {0}")]
    Lost(String),
    /// Another process moved a position this batch expected, or the store rolled the batch
    /// back in a conflict with another writer: start again from the stored positions.
    #[error("another process wrote this partition, or the store rolled the batch back: {0}")]
    Fenced(String),
}

/// A table that cannot be made to fit a schema.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// A column would change type.
    #[error(transparent)]
    TypeChange(#[from] TypeChange),
    /// The store cannot take the schema (the lake: a field changes type).
    #[error("{0}")]
    Refused(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A store a sink writes.
pub trait Store: Send {
    /// The positions held for `tps`.
    fn positions(&mut self, tps: &[Tp]) -> Result<Vec<Option<i64>>, StoreError>;
    /// Creates `table` with `columns` (laid out from `doc`, the schema at URI `schema`)
    /// when missing, or adds the columns it lacks.
    fn prepare(
        &mut self,
        table: &str,
        columns: &[Column],
        schema: &str,
        doc: &serde_json::Value,
    ) -> Result<(), PrepareError>;
    /// Writes a batch, its dead letters and its moves in one transaction. (The lake
    /// buffers rows in open files and commits them when they are due: it is called with
    /// empty batches too, so that files close on time.)
    fn write(&mut self, batch: &Batch) -> Result<Written, StoreError>;
    /// Commits what is buffered, at a graceful stop.
    fn finish(&mut self) -> Result<Written, StoreError> {
        Ok(Written::default())
    }
}

/// Adds one to `map[key]`.
pub(crate) fn count(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    if n > 0 {
        *map.entry(key.to_owned()).or_default() += n;
    }
}

/// A partition's field in Redis and its text in messages: `topic/partition`.
pub(crate) fn tp_name(tp: &Tp) -> String {
    format!("{}/{}", tp.0, tp.1)
}

/// Whether the store still holds `m.tp` where this process left it; `Fenced` when
/// another process moved it (this process lost the partition and must not write it).
pub(crate) fn fenced(m: &Move, held: Option<i64>) -> Result<(), StoreError> {
    if held == m.from {
        Ok(())
    } else {
        Err(StoreError::Fenced(format!(
            "{} is at {held:?} in the store, not {:?}",
            tp_name(&m.tp),
            m.from
        )))
    }
}

/// A dead letter for a row the store refused.
pub(crate) fn refusal(t: &TableRows, row: &Row, reason: String) -> DeadLetter {
    DeadLetter {
        stream: t.stream.clone(),
        at: row.at.clone(),
        reason,
        event: row.event.clone(),
    }
}

/// A connection made on first use and dropped after a failure that is not the data's,
/// so that the next use reconnects.
pub(crate) struct Session<C>(Option<C>);

impl<C> Default for Session<C> {
    fn default() -> Self {
        Session(None)
    }
}

impl<C> Session<C> {
    /// The connection, made by `connect` when there is none.
    pub(crate) fn get(
        &mut self,
        connect: impl FnOnce() -> Result<C, StoreError>,
    ) -> Result<&mut C, StoreError> {
        if self.0.is_none() {
            self.0 = Some(connect()?);
        }
        self.0
            .as_mut()
            .ok_or_else(|| StoreError::Lost("no connection".into()))
    }

    /// Passes `r` on, dropping the connection when it says the store was lost.
    pub(crate) fn guard<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if matches!(r, Err(StoreError::Lost(_))) {
            self.0 = None;
        }
        r
    }
}
