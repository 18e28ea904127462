//! PostgreSQL: a table per stream, filled by text `COPY` into a temporary
//! staging table and `INSERT … ON CONFLICT (meta_id) DO NOTHING`, with the
//! dead letters and the positions in the same transaction. A batch the
//! database refuses is written again row by row, each in a savepoint, so
//! that only the refused rows go to the dead letters, with the database's reason.

use super::{
    Batch, DeadLetter, Move, PrepareError, Row, Store, StoreError, TableRows, Written, count,
    tp_name,
};
use crate::columns::{Column, ColumnType, ID_COLUMN, additions};
use crate::row::{copy_text, plain_text};
use crate::source::Tp;
use postgres::error::SqlState;
use postgres::{Client, NoTls, Transaction};
use std::collections::HashMap;
use std::io::Write;

/// A PostgreSQL database a sink writes.
pub struct PostgresStore {
    url: String,
    sink: String,
    positions: String,
    dead: String,
    client: Option<Client>,
    /// Staging tables made in this session, by table.
    stages: HashMap<String, String>,
}

fn sql_type(kind: ColumnType) -> &'static str {
    match kind {
        ColumnType::Text => "text",
        ColumnType::Timestamp => "timestamptz",
        ColumnType::BigInt => "bigint",
        ColumnType::Double => "double precision",
        ColumnType::Boolean => "boolean",
        ColumnType::Json => "jsonb",
    }
}

fn column_type(data_type: &str) -> Option<ColumnType> {
    Some(match data_type {
        "text" => ColumnType::Text,
        "timestamp with time zone" => ColumnType::Timestamp,
        "bigint" => ColumnType::BigInt,
        "double precision" => ColumnType::Double,
        "boolean" => ColumnType::Boolean,
        "jsonb" => ColumnType::Json,
        _ => return None,
    })
}

/// Whether the database refused the data itself (not the connection or the statement).
fn refused(e: &postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

fn lost(e: postgres::Error) -> StoreError {
    let text = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    StoreError::Lost(text)
}

/// The database's reason for refusing a row.
fn reason(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("PostgreSQL refused the row: {} ({d})", db.message()),
            None => format!("PostgreSQL refused the row: {}", db.message()),
        },
        None => format!("PostgreSQL refused the row: {e}"),
    }
}

fn columns_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

impl PostgresStore {
    /// A store at `url` for sink `sink`, keeping positions and dead letters in these tables.
    pub fn new(url: &str, sink: &str, positions: &str, dead: &str) -> Self {
        PostgresStore {
            url: url.to_owned(),
            sink: sink.to_owned(),
            positions: positions.to_owned(),
            dead: dead.to_owned(),
            client: None,
            stages: HashMap::new(),
        }
    }

    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.is_none() {
            let mut client = Client::connect(&self.url, NoTls).map_err(lost)?;
            // `CREATE … IF NOT EXISTS` of what exists is not worth a notice per batch.
            client
                .batch_execute("SET client_min_messages = warning")
                .map_err(lost)?;
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {p} (sink text NOT NULL, source_topic text NOT NULL, \
                 source_partition integer NOT NULL, next_offset bigint NOT NULL, \
                 updated_at timestamptz NOT NULL DEFAULT now(), \
                 PRIMARY KEY (sink, source_topic, source_partition));\n\
                 CREATE TABLE IF NOT EXISTS {d} (sink text NOT NULL, source_topic text NOT NULL, \
                 source_partition integer NOT NULL, source_offset bigint NOT NULL, stream text NOT NULL, \
                 reason text NOT NULL, event text NOT NULL, at timestamptz NOT NULL DEFAULT now(), \
                 PRIMARY KEY (sink, source_topic, source_partition, source_offset));",
                p = self.positions,
                d = self.dead
            );
            if let Err(e) = client.batch_execute(&ddl) {
                // Two connectors starting together race on CREATE TABLE; the loser finds the tables made.
                if e.code() != Some(&SqlState::UNIQUE_VIOLATION) {
                    return Err(lost(e));
                }
            }
            self.stages.clear();
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Lost("no connection".into()))
    }

    /// Runs `f`; a connection error drops the connection so the next call reconnects.
    fn guard<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if matches!(r, Err(StoreError::Lost(_))) {
            self.client = None;
        }
        r
    }

    fn stage_of(stages: &mut HashMap<String, String>, table: &str) -> String {
        let n = stages.len();
        stages
            .entry(table.to_owned())
            .or_insert_with(|| format!("sluice_stage_{n}"))
            .clone()
    }
}

/// Checks that every partition is where `moves` expects, locking the rows.
fn check_positions(
    tx: &mut Transaction<'_>,
    table: &str,
    sink: &str,
    moves: &[Move],
) -> Result<(), StoreError> {
    let q = format!(
        "SELECT next_offset FROM {table} WHERE sink = $1 AND source_topic = $2 AND source_partition = $3 FOR UPDATE"
    );
    for m in moves {
        let row = tx
            .query_opt(&q, &[&sink, &&*m.tp.0, &m.tp.1])
            .map_err(lost)?;
        let held: Option<i64> = row.map(|r| r.get(0));
        if held != m.from {
            return Err(StoreError::Fenced(format!(
                "{} is at {held:?} in the store, not {:?}",
                tp_name(&m.tp),
                m.from
            )));
        }
    }
    Ok(())
}

fn write_moves(
    tx: &mut Transaction<'_>,
    table: &str,
    sink: &str,
    moves: &[Move],
) -> Result<(), StoreError> {
    let q = format!(
        "INSERT INTO {table} (sink, source_topic, source_partition, next_offset) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sink, source_topic, source_partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()"
    );
    for m in moves {
        tx.execute(&q, &[&sink, &&*m.tp.0, &m.tp.1, &m.to])
            .map_err(lost)?;
    }
    Ok(())
}

fn write_dead(
    tx: &mut Transaction<'_>,
    table: &str,
    sink: &str,
    dead: &[DeadLetter],
) -> Result<(), StoreError> {
    if dead.is_empty() {
        return Ok(());
    }
    let q = format!(
        "INSERT INTO {table} (sink, source_topic, source_partition, source_offset, stream, reason, event) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
    );
    let stmt = tx.prepare(&q).map_err(lost)?;
    for d in dead {
        let ((topic, partition), offset) = &d.at;
        // PostgreSQL text holds no NUL: such an event is kept with its NULs escaped.
        let event = d.event.replace('\0', "\\u0000");
        let reason = d.reason.replace('\0', "\\u0000");
        tx.execute(
            &stmt,
            &[
                &sink, &&**topic, partition, offset, &d.stream, &reason, &event,
            ],
        )
        .map_err(lost)?;
    }
    Ok(())
}

/// How a table's rows went in.
enum Bulk {
    Done(u64),
    Refused,
}

fn copy_rows(tx: &mut Transaction<'_>, t: &TableRows, stage: &str) -> Result<Bulk, StoreError> {
    let cols = columns_list(&t.columns);
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE \"{table}\") ON COMMIT DELETE ROWS",
        table = t.table
    ))
    .map_err(lost)?;
    let mut text = String::with_capacity(t.rows.len() * 256);
    for row in &t.rows {
        for (i, c) in row.cells.iter().enumerate() {
            if i > 0 {
                text.push('\t');
            }
            copy_text(c, &mut text);
        }
        text.push('\n');
    }
    let mut w = match tx.copy_in(&format!("COPY {stage} ({cols}) FROM STDIN")) {
        Ok(w) => w,
        Err(e) => {
            return if refused(&e) {
                Ok(Bulk::Refused)
            } else {
                Err(lost(e))
            };
        }
    };
    if w.write_all(text.as_bytes()).is_err() {
        // The server ended the copy; the row-by-row pass finds out why (or that the connection is gone).
        return Ok(Bulk::Refused);
    }
    if let Err(e) = w.finish() {
        return if refused(&e) {
            Ok(Bulk::Refused)
        } else {
            Err(lost(e))
        };
    }
    let inserted = tx.execute(
        &format!(
            "INSERT INTO \"{table}\" ({cols}) SELECT {cols} FROM {stage} ON CONFLICT (\"{ID_COLUMN}\") DO NOTHING",
            table = t.table
        ),
        &[],
    );
    match inserted {
        Ok(n) => Ok(Bulk::Done(n)),
        Err(e) if refused(&e) => Ok(Bulk::Refused),
        Err(e) => Err(lost(e)),
    }
}

/// Writes `t`'s rows one by one, each in a savepoint; refused ones become dead letters.
fn careful_rows(
    tx: &mut Transaction<'_>,
    t: &TableRows,
    dead: &mut Vec<DeadLetter>,
) -> Result<u64, StoreError> {
    let cols = columns_list(&t.columns);
    let values: Vec<String> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("(${}::text)::{}", i + 1, sql_type(c.kind)))
        .collect();
    let stmt = tx
        .prepare(&format!(
            "INSERT INTO \"{table}\" ({cols}) VALUES ({}) ON CONFLICT (\"{ID_COLUMN}\") DO NOTHING",
            values.join(", "),
            table = t.table
        ))
        .map_err(lost)?;
    let mut written = 0;
    for row in &t.rows {
        let texts: Vec<Option<String>> = row.cells.iter().map(plain_text).collect();
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = texts
            .iter()
            .map(|t| t as &(dyn postgres::types::ToSql + Sync))
            .collect();
        tx.batch_execute("SAVEPOINT sluice_row").map_err(lost)?;
        match tx.execute(&stmt, &params) {
            Ok(n) => {
                written += n;
                tx.batch_execute("RELEASE SAVEPOINT sluice_row")
                    .map_err(lost)?;
            }
            Err(e) if refused(&e) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT sluice_row")
                    .map_err(lost)?;
                dead.push(refusal(t, row, reason(&e)));
            }
            Err(e) => return Err(lost(e)),
        }
    }
    Ok(written)
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

impl PostgresStore {
    fn write_once(&mut self, batch: &Batch, careful: bool) -> Result<Option<Written>, StoreError> {
        let (sink, positions, dead_table) =
            (self.sink.clone(), self.positions.clone(), self.dead.clone());
        let stages: Vec<String> = batch
            .tables
            .iter()
            .map(|t| Self::stage_of(&mut self.stages, &t.table))
            .collect();
        let client = self.client()?;
        let mut tx = client.transaction().map_err(lost)?;
        check_positions(&mut tx, &positions, &sink, &batch.moves)?;
        let mut written = Written::default();
        let mut dead = batch.dead.clone();
        for (t, stage) in batch.tables.iter().zip(&stages) {
            if t.rows.is_empty() {
                continue;
            }
            let n = if careful {
                careful_rows(&mut tx, t, &mut dead)?
            } else {
                match copy_rows(&mut tx, t, stage)? {
                    Bulk::Done(n) => n,
                    // The transaction is aborted: start again, row by row.
                    Bulk::Refused => return Ok(None),
                }
            };
            count(&mut written.rows, &t.stream, n);
        }
        write_dead(&mut tx, &dead_table, &sink, &dead)?;
        for d in &dead {
            count(&mut written.dead, &d.stream, 1);
        }
        write_moves(&mut tx, &positions, &sink, &batch.moves)?;
        tx.commit().map_err(lost)?;
        Ok(Some(written))
    }
}

impl Store for PostgresStore {
    fn positions(&mut self, tps: &[Tp]) -> Result<Vec<Option<i64>>, StoreError> {
        let (sink, table) = (self.sink.clone(), self.positions.clone());
        let r = (|| {
            let client = self.client()?;
            let rows = client
                .query(
                    &format!("SELECT source_topic, source_partition, next_offset FROM {table} WHERE sink = $1"),
                    &[&sink],
                )
                .map_err(lost)?;
            let held: HashMap<(String, i32), i64> = rows
                .iter()
                .map(|r| ((r.get(0), r.get(1)), r.get(2)))
                .collect();
            Ok(tps
                .iter()
                .map(|(t, p)| held.get(&(t.to_string(), *p)).copied())
                .collect())
        })();
        self.guard(r)
    }

    fn prepare(
        &mut self,
        table: &str,
        columns: &[Column],
        schema: &str,
    ) -> Result<(), PrepareError> {
        let r = (|| {
            let client = self.client()?;
            let rows = client
                .query(
                    "SELECT column_name, data_type FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1",
                    &[&table],
                )
                .map_err(lost)?;
            let existing: Vec<(String, Option<ColumnType>)> = rows
                .iter()
                .map(|r| (r.get::<_, String>(0), column_type(r.get::<_, &str>(1))))
                .collect();
            Ok(existing)
        })();
        let existing = self.guard(r)?;
        let ddl = if existing.is_empty() {
            let defs: Vec<String> = columns
                .iter()
                .map(|c| {
                    let key = if c.name == ID_COLUMN {
                        " PRIMARY KEY"
                    } else {
                        ""
                    };
                    format!("\"{}\" {}{key}", c.name, sql_type(c.kind))
                })
                .collect();
            tracing::info!(%table, %schema, columns = columns.len(), "Creating a stream's table.");
            format!(
                "CREATE TABLE IF NOT EXISTS \"{table}\" ({})",
                defs.join(", ")
            )
        } else {
            let added = additions(&existing, columns, schema)?;
            if added.is_empty() {
                return Ok(());
            }
            let names: Vec<&str> = added.iter().map(|c| c.name.as_str()).collect();
            tracing::info!(%table, %schema, added = ?names, "Adding nullable columns for a new schema version.");
            let adds: Vec<String> = added
                .iter()
                .map(|c| {
                    format!(
                        "ADD COLUMN IF NOT EXISTS \"{}\" {}",
                        c.name,
                        sql_type(c.kind)
                    )
                })
                .collect();
            format!("ALTER TABLE \"{table}\" {}", adds.join(", "))
        };
        // The staging table copies the table's columns: make it again after a change.
        let drop = self
            .stages
            .get(table)
            .map(|s| format!("DROP TABLE IF EXISTS {s};"))
            .unwrap_or_default();
        let r = (|| {
            let client = self.client()?;
            client.batch_execute(&format!("{drop}{ddl}")).map_err(lost)
        })();
        Ok(self.guard(r)?)
    }

    fn write(&mut self, batch: &Batch) -> Result<Written, StoreError> {
        let r = match self.write_once(batch, false) {
            Ok(Some(w)) => Ok(w),
            Ok(None) => {
                tracing::info!("PostgreSQL refused a row of a batch; writing it row by row.");
                self.write_once(batch, true).map(Option::unwrap_or_default)
            }
            Err(e) => Err(e),
        };
        self.guard(r)
    }
}
