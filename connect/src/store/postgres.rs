//! PostgreSQL: a table per stream, filled by text `COPY` straight into it,
//! with the dead letters and the positions in the same transaction. A batch
//! holding a key the table has goes again through a temporary staging table
//! and `INSERT … ON CONFLICT (meta_id) DO NOTHING`; a batch the database
//! refuses is written again row by row, each in a savepoint, so that only the
//! refused rows go to the dead letters, with the database's reason.

use super::sql::{SqlConn, SqlStore};
use super::{DeadLetter, Move, Row, StoreError, TableRows};
use crate::columns::{Column, ColumnType, ID_COLUMN};
use crate::row::{copy_text, plain_text};
use crate::source::Tp;
use postgres::error::SqlState;
use postgres::{Client, NoTls};
use std::collections::HashMap;
use std::io::Write;

/// A PostgreSQL database a sink writes.
pub type PostgresStore = SqlStore<PgConn>;

/// A session with PostgreSQL.
pub struct PgConn {
    client: Client,
    /// Staging tables made in this session, by table.
    stages: HashMap<String, String>,
    /// Row-by-row inserts prepared in this session, by their text.
    prepared: HashMap<String, postgres::Statement>,
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

/// The store's failure: a transaction the server rolled back (SQLSTATE class 40, a deadlock
/// or serialization failure) is written again from the positions over the same connection.
fn lost(e: postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) if db.code().code().starts_with("40") => StoreError::Fenced(format!(
            "PostgreSQL rolled the batch back: {}",
            db.message()
        )),
        Some(db) => StoreError::Lost(format!("{}: {}", db.code().code(), db.message())),
        None => StoreError::Lost(e.to_string()),
    }
}

/// The database's reason for refusing a row.
fn reason(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_owned(),
        },
        None => e.to_string(),
    }
}

fn columns_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

impl PgConn {
    fn stage_of(&mut self, table: &str) -> String {
        let n = self.stages.len();
        self.stages
            .entry(table.to_owned())
            .or_insert_with(|| format!("sluice_stage_{n}"))
            .clone()
    }

    /// Runs DDL on `table`, dropping its staging table first (it copies the table's columns).
    fn ddl(&mut self, table: &str, ddl: &str) -> Result<(), StoreError> {
        let drop = self
            .stages
            .get(table)
            .map(|s| format!("DROP TABLE IF EXISTS {s};"))
            .unwrap_or_default();
        match self.client.batch_execute(&format!("{drop}{ddl}")) {
            // Two connectors making the same table race on `CREATE … IF NOT EXISTS`; the loser
            // finds it made.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(()),
            r => r.map_err(lost),
        }
    }
}

/// How a `COPY` ended.
enum Copied {
    /// Every row is in.
    Done(u64),
    /// The server refused the data (the transaction is spoilt).
    Refused(postgres::Error),
}

impl PgConn {
    /// Copies `text` (COPY text format) into `target`.
    fn copy(&mut self, target: &str, cols: &str, text: &str) -> Result<Copied, StoreError> {
        let judge = |e: postgres::Error| {
            if refused(&e) {
                Ok(Copied::Refused(e))
            } else {
                Err(lost(e))
            }
        };
        let mut w = match self
            .client
            .copy_in(&format!("COPY {target} ({cols}) FROM STDIN"))
        {
            Ok(w) => w,
            Err(e) => return judge(e),
        };
        // A write the server cut short is explained by `finish`.
        let written = w.write_all(text.as_bytes());
        match w.finish() {
            Ok(n) if written.is_ok() => Ok(Copied::Done(n)),
            Ok(_) => Err(StoreError::Lost(
                "the server stopped reading a COPY without saying why".into(),
            )),
            Err(e) => judge(e),
        }
    }
}

impl SqlConn for PgConn {
    const NAME: &'static str = "PostgreSQL";
    const BEGIN: &'static str = "BEGIN";

    fn connect(url: &str, positions: &str, dead: &str) -> Result<Self, StoreError> {
        let mut client = Client::connect(url, NoTls).map_err(lost)?;
        // `CREATE … IF NOT EXISTS` of what exists is not worth a notice per batch.
        client
            .batch_execute("SET client_min_messages = warning")
            .map_err(lost)?;
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {positions} (sink text NOT NULL, source_topic text NOT NULL, \
             source_partition integer NOT NULL, next_offset bigint NOT NULL, \
             updated_at timestamptz NOT NULL DEFAULT now(), \
             PRIMARY KEY (sink, source_topic, source_partition));\n\
             CREATE TABLE IF NOT EXISTS {dead} (sink text NOT NULL, source_topic text NOT NULL, \
             source_partition integer NOT NULL, source_offset bigint NOT NULL, stream text NOT NULL, \
             reason text NOT NULL, event text NOT NULL, at timestamptz NOT NULL DEFAULT now(), \
             PRIMARY KEY (sink, source_topic, source_partition, source_offset));"
        );
        if let Err(e) = client.batch_execute(&ddl) {
            // Two connectors starting together race on CREATE TABLE; the loser finds the tables made.
            if e.code() != Some(&SqlState::UNIQUE_VIOLATION) {
                return Err(lost(e));
            }
        }
        Ok(PgConn {
            client,
            stages: HashMap::new(),
            prepared: HashMap::new(),
        })
    }

    fn run(&mut self, sql: &str) -> Result<(), StoreError> {
        self.client.batch_execute(sql).map_err(lost)
    }

    fn held(&mut self, table: &str, sink: &str, tp: &Tp) -> Result<Option<i64>, StoreError> {
        let row = self
            .client
            .query_opt(
                &format!(
                    "SELECT next_offset FROM {table} WHERE sink = $1 AND source_topic = $2 AND source_partition = $3 FOR UPDATE"
                ),
                &[&sink, &&*tp.0, &tp.1],
            )
            .map_err(lost)?;
        Ok(row.map(|r| r.get(0)))
    }

    fn all_positions(
        &mut self,
        table: &str,
        sink: &str,
    ) -> Result<HashMap<(String, i32), i64>, StoreError> {
        let rows = self
            .client
            .query(
                &format!("SELECT source_topic, source_partition, next_offset FROM {table} WHERE sink = $1"),
                &[&sink],
            )
            .map_err(lost)?;
        Ok(rows
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect())
    }

    fn insert_bulk(&mut self, t: &TableRows) -> Result<Option<u64>, StoreError> {
        let cols = columns_list(&t.columns);
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
        // Straight into the table, as a bulk load would. A key already there (an event the
        // aggregators wrote twice) fails the whole copy; then the rows go again through a
        // staging table and an insert that skips such keys.
        self.run("SAVEPOINT sluice_copy")?;
        match self.copy(&format!("\"{}\"", t.table), &cols, &text)? {
            Copied::Done(n) => {
                self.run("RELEASE SAVEPOINT sluice_copy")?;
                return Ok(Some(n));
            }
            Copied::Refused(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                self.run("ROLLBACK TO SAVEPOINT sluice_copy")?;
            }
            Copied::Refused(_) => return Ok(None),
        }
        let stage = self.stage_of(&t.table);
        self.client
            .batch_execute(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE \"{table}\") ON COMMIT DELETE ROWS",
                table = t.table
            ))
            .map_err(lost)?;
        if let Copied::Refused(_) = self.copy(&stage, &cols, &text)? {
            return Ok(None);
        }
        let inserted = self.client.execute(
            &format!(
                "INSERT INTO \"{table}\" ({cols}) SELECT {cols} FROM {stage} ON CONFLICT (\"{ID_COLUMN}\") DO NOTHING",
                table = t.table
            ),
            &[],
        );
        match inserted {
            Ok(n) => Ok(Some(n)),
            Err(e) if refused(&e) => Ok(None),
            Err(e) => Err(lost(e)),
        }
    }

    fn insert_one(&mut self, t: &TableRows, row: &Row) -> Result<Result<u64, String>, StoreError> {
        let cols = columns_list(&t.columns);
        let values: Vec<String> = t
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("(${}::text)::{}", i + 1, sql_type(c.kind)))
            .collect();
        let sql = format!(
            "INSERT INTO \"{table}\" ({cols}) VALUES ({}) ON CONFLICT (\"{ID_COLUMN}\") DO NOTHING",
            values.join(", "),
            table = t.table
        );
        // Prepared once per session and table shape (prepared statements outlive a rollback).
        let stmt = match self.prepared.get(&sql) {
            Some(stmt) => stmt.clone(),
            None => {
                let stmt = self.client.prepare(&sql).map_err(lost)?;
                self.prepared.insert(sql, stmt.clone());
                stmt
            }
        };
        let texts: Vec<Option<String>> = row.cells.iter().map(plain_text).collect();
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = texts
            .iter()
            .map(|t| t as &(dyn postgres::types::ToSql + Sync))
            .collect();
        match self.client.execute(&stmt, &params) {
            Ok(n) => Ok(Ok(n)),
            Err(e) if refused(&e) => Ok(Err(reason(&e))),
            Err(e) => Err(lost(e)),
        }
    }

    fn write_dead(
        &mut self,
        table: &str,
        sink: &str,
        dead: &[DeadLetter],
    ) -> Result<(), StoreError> {
        if dead.is_empty() {
            return Ok(());
        }
        let stmt = self
            .client
            .prepare(&format!(
                "INSERT INTO {table} (sink, source_topic, source_partition, source_offset, stream, reason, event) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
            ))
            .map_err(lost)?;
        for d in dead {
            let ((topic, partition), offset) = &d.at;
            // PostgreSQL text holds no NUL: such an event is kept with its NULs escaped.
            let event = d.event.replace('\0', "\\u0000");
            let reason = d.reason.replace('\0', "\\u0000");
            self.client
                .execute(
                    &stmt,
                    &[
                        &sink, &&**topic, partition, offset, &d.stream, &reason, &event,
                    ],
                )
                .map_err(lost)?;
        }
        Ok(())
    }

    fn write_moves(&mut self, table: &str, sink: &str, moves: &[Move]) -> Result<(), StoreError> {
        let q = format!(
            "INSERT INTO {table} (sink, source_topic, source_partition, next_offset) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sink, source_topic, source_partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()"
        );
        for m in moves {
            self.client
                .execute(&q, &[&sink, &&*m.tp.0, &m.tp.1, &m.to])
                .map_err(lost)?;
        }
        Ok(())
    }

    fn columns(&mut self, table: &str) -> Result<Vec<(String, Option<ColumnType>)>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT column_name, data_type FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1",
                &[&table],
            )
            .map_err(lost)?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), column_type(r.get::<_, &str>(1))))
            .collect())
    }

    fn create_table(&mut self, table: &str, columns: &[Column]) -> Result<(), StoreError> {
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
        self.ddl(
            table,
            &format!(
                "CREATE TABLE IF NOT EXISTS \"{table}\" ({})",
                defs.join(", ")
            ),
        )
    }

    fn add_columns(&mut self, table: &str, added: &[Column]) -> Result<(), StoreError> {
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
        self.ddl(
            table,
            &format!("ALTER TABLE \"{table}\" {}", adds.join(", ")),
        )
    }
}
