//! What the SQL stores share: one transaction per batch that locks and
//! checks the positions, writes every table's rows (in bulk, or row by row in
//! savepoints once the server refused a row), the dead letters and the new
//! positions; tables made or widened from the columns; a connection dropped
//! on any failure that is not the data's own, so the next call reconnects.
//! [`SqlConn`] is what PostgreSQL and MariaDB each say their own way.

use super::{Batch, DeadLetter, Move, PrepareError, Row, Store, StoreError, TableRows, Written};
use super::{Session, count, fenced, refusal};
use crate::columns::{Column, ColumnType, additions};
use crate::source::Tp;
use std::collections::HashMap;

/// A connection to one SQL server, in its dialect.
pub trait SqlConn: Sized + Send {
    /// The server's name in messages.
    const NAME: &'static str;
    /// Connects and makes the positions and dead-letter tables when missing.
    fn connect(url: &str, positions: &str, dead: &str) -> Result<Self, StoreError>;
    /// The statement that starts a transaction.
    const BEGIN: &'static str;
    /// Runs statements that return no rows.
    fn run(&mut self, sql: &str) -> Result<(), StoreError>;
    /// Starts a transaction.
    fn begin(&mut self) -> Result<(), StoreError> {
        self.run(Self::BEGIN)
    }
    /// Commits it.
    fn commit(&mut self) -> Result<(), StoreError> {
        self.run("COMMIT")
    }
    /// Rolls it back, as far as the connection still can (a lost one rolls back by itself).
    fn rollback(&mut self) {
        let _ = self.run("ROLLBACK");
    }
    /// The position held for `tp`, its row locked until the transaction ends.
    fn held(&mut self, table: &str, sink: &str, tp: &Tp) -> Result<Option<i64>, StoreError>;
    /// Every position the sink holds.
    fn all_positions(
        &mut self,
        table: &str,
        sink: &str,
    ) -> Result<HashMap<(String, i32), i64>, StoreError>;
    /// Inserts the rows in bulk; `None` when the server refused one (the transaction is then spoilt).
    fn insert_bulk(&mut self, t: &TableRows) -> Result<Option<u64>, StoreError>;
    /// Inserts `row`; `Err(reason)` inside `Ok` when the server refused it (the caller
    /// holds a savepoint around it).
    fn insert_one(&mut self, t: &TableRows, row: &Row) -> Result<Result<u64, String>, StoreError>;
    /// Writes dead letters.
    fn write_dead(
        &mut self,
        table: &str,
        sink: &str,
        dead: &[DeadLetter],
    ) -> Result<(), StoreError>;
    /// Sets the positions after a batch.
    fn write_moves(&mut self, table: &str, sink: &str, moves: &[Move]) -> Result<(), StoreError>;
    /// The table's columns and their types (`None`: a type the connector does not make); empty when it is missing.
    fn columns(&mut self, table: &str) -> Result<Vec<(String, Option<ColumnType>)>, StoreError>;
    /// Creates the table.
    fn create_table(&mut self, table: &str, columns: &[Column]) -> Result<(), StoreError>;
    /// Adds nullable columns.
    fn add_columns(&mut self, table: &str, added: &[Column]) -> Result<(), StoreError>;
}

/// A SQL database a sink writes.
pub struct SqlStore<C> {
    url: String,
    sink: String,
    positions: String,
    dead: String,
    conn: Session<C>,
}

impl<C: SqlConn> SqlStore<C> {
    /// A store at `url` for sink `sink`, keeping positions and dead letters in these tables.
    pub fn new(url: &str, sink: &str, positions: &str, dead: &str) -> Self {
        SqlStore {
            url: url.to_owned(),
            sink: sink.to_owned(),
            positions: positions.to_owned(),
            dead: dead.to_owned(),
            conn: Session::default(),
        }
    }

    fn conn(&mut self) -> Result<&mut C, StoreError> {
        let (url, positions, dead) = (&self.url, &self.positions, &self.dead);
        self.conn.get(|| C::connect(url, positions, dead))
    }

    fn guard<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        self.conn.guard(r)
    }

    /// One transaction; `None` when the bulk insert was refused and the batch must go row by row.
    fn write_once(&mut self, batch: &Batch, careful: bool) -> Result<Option<Written>, StoreError> {
        let (sink, positions, dead_table) =
            (self.sink.clone(), self.positions.clone(), self.dead.clone());
        let conn = self.conn()?;
        conn.begin()?;
        let r = (|| {
            for m in &batch.moves {
                fenced(m, conn.held(&positions, &sink, &m.tp)?)?;
            }
            let mut written = Written::default();
            let mut dead = batch.dead.clone();
            for t in batch.tables.iter().filter(|t| !t.rows.is_empty()) {
                let n = if careful {
                    let mut n = 0;
                    for row in &t.rows {
                        conn.run("SAVEPOINT sluice_row")?;
                        match conn.insert_one(t, row)? {
                            Ok(k) => {
                                n += k;
                                conn.run("RELEASE SAVEPOINT sluice_row")?;
                            }
                            Err(why) => {
                                conn.run("ROLLBACK TO SAVEPOINT sluice_row")?;
                                dead.push(refusal(
                                    t,
                                    row,
                                    format!("{} refused the row: {why}", C::NAME),
                                ));
                            }
                        }
                    }
                    n
                } else {
                    match conn.insert_bulk(t)? {
                        Some(n) => n,
                        None => return Ok(None),
                    }
                };
                count(&mut written.rows, &t.stream, n);
            }
            conn.write_dead(&dead_table, &sink, &dead)?;
            for d in &dead {
                count(&mut written.dead, &d.stream, 1);
            }
            conn.write_moves(&positions, &sink, &batch.moves)?;
            conn.commit()?;
            Ok(Some(written))
        })();
        if !matches!(r, Ok(Some(_))) {
            conn.rollback();
        }
        r
    }
}

impl<C: SqlConn> Store for SqlStore<C> {
    fn positions(&mut self, tps: &[Tp]) -> Result<Vec<Option<i64>>, StoreError> {
        let (sink, table) = (self.sink.clone(), self.positions.clone());
        let r = (|| self.conn()?.all_positions(&table, &sink))();
        let held = self.guard(r)?;
        Ok(tps
            .iter()
            .map(|(t, p)| held.get(&(t.to_string(), *p)).copied())
            .collect())
    }

    fn prepare(
        &mut self,
        table: &str,
        columns: &[Column],
        schema: &str,
        _doc: &serde_json::Value,
    ) -> Result<(), PrepareError> {
        let r = (|| self.conn()?.columns(table))();
        let existing = self.guard(r)?;
        let r = if existing.is_empty() {
            tracing::info!(%table, %schema, columns = columns.len(), "Creating a stream's table.");
            (|| self.conn()?.create_table(table, columns))()
        } else {
            let added = additions(&existing, columns, schema)?;
            if added.is_empty() {
                return Ok(());
            }
            let names: Vec<&str> = added.iter().map(|c| c.name.as_str()).collect();
            tracing::info!(%table, %schema, added = ?names, "Adding nullable columns for a new schema version.");
            (|| self.conn()?.add_columns(table, &added))()
        };
        Ok(self.guard(r)?)
    }

    fn write(&mut self, batch: &Batch) -> Result<Written, StoreError> {
        let r = match self.write_once(batch, false) {
            Ok(Some(w)) => Ok(w),
            Ok(None) => {
                tracing::info!(
                    "{} refused a row of a batch; writing it row by row.",
                    C::NAME
                );
                self.write_once(batch, true).map(Option::unwrap_or_default)
            }
            Err(e) => Err(e),
        };
        self.guard(r)
    }
}
