//! MariaDB (and MySQL): a table per stream, filled by multi-row `INSERT …
//! ON DUPLICATE KEY UPDATE meta_id = meta_id` (a repeat changes nothing) in
//! strict mode, with the dead letters and positions in the same InnoDB
//! transaction. A batch the server refuses is written again row by row, each
//! in a savepoint, so only the refused rows go to the dead letters.

use super::postgres::refusal;
use super::{
    Batch, DeadLetter, Move, PrepareError, Store, StoreError, TableRows, Written, count, tp_name,
};
use crate::columns::{Column, ColumnType, ID_COLUMN, additions};
use crate::row::{quote, sql_literal};
use crate::source::Tp;
use mysql::prelude::Queryable;
use mysql::{Conn, Opts};
use std::collections::HashMap;

/// Largest statement sent, in bytes (the server's default packet limit is 16 MiB).
const MAX_STATEMENT: usize = 4 * 1024 * 1024;

/// A MariaDB database a sink writes.
pub struct MysqlStore {
    url: String,
    sink: String,
    positions: String,
    dead: String,
    conn: Option<Conn>,
}

fn sql_type(c: &Column) -> &'static str {
    match c.kind {
        // The key must be indexable whole.
        ColumnType::Text if c.name == ID_COLUMN => "VARCHAR(255)",
        ColumnType::Text => "MEDIUMTEXT",
        ColumnType::Timestamp => "DATETIME(6)",
        ColumnType::BigInt => "BIGINT",
        ColumnType::Double => "DOUBLE",
        ColumnType::Boolean => "BOOLEAN",
        ColumnType::Json => "JSON",
    }
}

fn column_type(column_type: &str) -> Option<ColumnType> {
    let t = column_type.to_ascii_lowercase();
    Some(match t.as_str() {
        "mediumtext" | "varchar(255)" => ColumnType::Text,
        "datetime(6)" => ColumnType::Timestamp,
        "double" => ColumnType::Double,
        "tinyint(1)" => ColumnType::Boolean,
        // MariaDB keeps JSON as LONGTEXT with a validity check.
        "longtext" => ColumnType::Json,
        _ if t.starts_with("bigint") => ColumnType::BigInt,
        _ => return None,
    })
}

/// Whether the server refused the data (SQLSTATE classes 22 and 23, e.g. a
/// value too long, out of range, or breaking a constraint).
fn refused(e: &mysql::Error) -> bool {
    matches!(e, mysql::Error::MySqlError(m) if m.state.starts_with("22") || m.state.starts_with("23"))
}

fn lost(e: mysql::Error) -> StoreError {
    StoreError::Lost(e.to_string())
}

fn columns_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| format!("`{}`", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Appends a row's values as `(…)`.
fn values(cells: &[crate::row::Cell], out: &mut String) {
    out.push('(');
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        sql_literal(c, out);
    }
    out.push(')');
}

impl MysqlStore {
    /// A store at `url` for sink `sink`, keeping positions and dead letters in these tables.
    pub fn new(url: &str, sink: &str, positions: &str, dead: &str) -> Self {
        MysqlStore {
            url: url.to_owned(),
            sink: sink.to_owned(),
            positions: positions.to_owned(),
            dead: dead.to_owned(),
            conn: None,
        }
    }

    fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        if self.conn.is_none() {
            let opts = Opts::from_url(&self.url)
                .map_err(|e| StoreError::Lost(format!("the url is wrong: {e}")))?;
            let mut conn = Conn::new(opts).map_err(lost)?;
            conn.query_drop(
                "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'",
            )
            .map_err(lost)?;
            conn.query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {p} (sink VARCHAR(255) NOT NULL, source_topic VARCHAR(255) NOT NULL, \
                 source_partition INT NOT NULL, next_offset BIGINT NOT NULL, \
                 updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
                 PRIMARY KEY (sink, source_topic, source_partition)) ENGINE=InnoDB",
                p = self.positions
            ))
            .map_err(lost)?;
            conn.query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {d} (sink VARCHAR(255) NOT NULL, source_topic VARCHAR(255) NOT NULL, \
                 source_partition INT NOT NULL, source_offset BIGINT NOT NULL, stream VARCHAR(255) NOT NULL, \
                 reason TEXT NOT NULL, event LONGTEXT NOT NULL, at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
                 PRIMARY KEY (sink, source_topic, source_partition, source_offset)) ENGINE=InnoDB",
                d = self.dead
            ))
            .map_err(lost)?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Lost("no connection".into()))
    }

    fn guard<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if matches!(r, Err(StoreError::Lost(_))) {
            self.conn = None;
        }
        r
    }

    fn write_once(&mut self, batch: &Batch, careful: bool) -> Result<Option<Written>, StoreError> {
        let (sink, positions, dead_table) =
            (self.sink.clone(), self.positions.clone(), self.dead.clone());
        let conn = self.conn()?;
        conn.query_drop("START TRANSACTION").map_err(lost)?;
        let r = (|| {
            check_positions(conn, &positions, &sink, &batch.moves)?;
            let mut written = Written::default();
            let mut dead = batch.dead.clone();
            for t in &batch.tables {
                if t.rows.is_empty() {
                    continue;
                }
                let n = if careful {
                    careful_rows(conn, t, &mut dead)?
                } else {
                    match insert_rows(conn, t)? {
                        Some(n) => n,
                        None => return Ok(None),
                    }
                };
                count(&mut written.rows, &t.stream, n);
            }
            write_dead(conn, &dead_table, &sink, &dead)?;
            for d in &dead {
                count(&mut written.dead, &d.stream, 1);
            }
            write_moves(conn, &positions, &sink, &batch.moves)?;
            conn.query_drop("COMMIT").map_err(lost)?;
            Ok(Some(written))
        })();
        if !matches!(r, Ok(Some(_))) {
            // Best effort: a lost connection rolls back by itself.
            let _ = conn.query_drop("ROLLBACK");
        }
        r
    }
}

fn check_positions(
    conn: &mut Conn,
    table: &str,
    sink: &str,
    moves: &[Move],
) -> Result<(), StoreError> {
    for m in moves {
        let held: Option<i64> = conn
            .exec_first(
                format!(
                    "SELECT next_offset FROM {table} WHERE sink = ? AND source_topic = ? AND source_partition = ? FOR UPDATE"
                ),
                (sink, &*m.tp.0, m.tp.1),
            )
            .map_err(lost)?;
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

fn write_moves(conn: &mut Conn, table: &str, sink: &str, moves: &[Move]) -> Result<(), StoreError> {
    for m in moves {
        conn.exec_drop(
            format!(
                "INSERT INTO {table} (sink, source_topic, source_partition, next_offset) VALUES (?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset), updated_at = CURRENT_TIMESTAMP(6)"
            ),
            (sink, &*m.tp.0, m.tp.1, m.to),
        )
        .map_err(lost)?;
    }
    Ok(())
}

fn write_dead(
    conn: &mut Conn,
    table: &str,
    sink: &str,
    dead: &[DeadLetter],
) -> Result<(), StoreError> {
    for d in dead {
        let ((topic, partition), offset) = &d.at;
        conn.exec_drop(
            format!(
                "INSERT INTO {table} (sink, source_topic, source_partition, source_offset, stream, reason, event) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE sink = sink"
            ),
            (sink, &**topic, partition, offset, &d.stream, &d.reason, &d.event),
        )
        .map_err(lost)?;
    }
    Ok(())
}

/// Inserts `t`'s rows in statements of many rows; `None` when the server refused one.
fn insert_rows(conn: &mut Conn, t: &TableRows) -> Result<Option<u64>, StoreError> {
    let head = format!(
        "INSERT INTO `{}` ({}) VALUES ",
        t.table,
        columns_list(&t.columns)
    );
    let tail = format!(" ON DUPLICATE KEY UPDATE `{ID_COLUMN}` = `{ID_COLUMN}`");
    let mut written = 0;
    let mut sql = String::with_capacity(MAX_STATEMENT + 64 * 1024);
    let mut rows = t.rows.iter().peekable();
    while rows.peek().is_some() {
        sql.clear();
        sql.push_str(&head);
        let mut first = true;
        while let Some(row) = rows.peek() {
            if !first && sql.len() >= MAX_STATEMENT {
                break;
            }
            if !first {
                sql.push(',');
            }
            values(&row.cells, &mut sql);
            first = false;
            rows.next();
        }
        sql.push_str(&tail);
        match conn.query_drop(&sql) {
            Ok(()) => written += conn.affected_rows(),
            Err(e) if refused(&e) => return Ok(None),
            Err(e) => return Err(lost(e)),
        }
    }
    Ok(Some(written))
}

/// Writes `t`'s rows one by one, each in a savepoint; refused ones become dead letters.
fn careful_rows(
    conn: &mut Conn,
    t: &TableRows,
    dead: &mut Vec<DeadLetter>,
) -> Result<u64, StoreError> {
    let head = format!(
        "INSERT INTO `{}` ({}) VALUES ",
        t.table,
        columns_list(&t.columns)
    );
    let tail = format!(" ON DUPLICATE KEY UPDATE `{ID_COLUMN}` = `{ID_COLUMN}`");
    let mut written = 0;
    for row in &t.rows {
        let mut sql = head.clone();
        values(&row.cells, &mut sql);
        sql.push_str(&tail);
        conn.query_drop("SAVEPOINT sluice_row").map_err(lost)?;
        match conn.query_drop(&sql) {
            Ok(()) => {
                written += conn.affected_rows();
                conn.query_drop("RELEASE SAVEPOINT sluice_row")
                    .map_err(lost)?;
            }
            Err(e) if refused(&e) => {
                conn.query_drop("ROLLBACK TO SAVEPOINT sluice_row")
                    .map_err(lost)?;
                let why = match &e {
                    mysql::Error::MySqlError(m) => m.message.clone(),
                    other => other.to_string(),
                };
                dead.push(refusal(t, row, format!("MariaDB refused the row: {why}")));
            }
            Err(e) => return Err(lost(e)),
        }
    }
    Ok(written)
}

impl Store for MysqlStore {
    fn positions(&mut self, tps: &[Tp]) -> Result<Vec<Option<i64>>, StoreError> {
        let (sink, table) = (self.sink.clone(), self.positions.clone());
        let r = (|| {
            let conn = self.conn()?;
            let rows: Vec<(String, i32, i64)> = conn
                .exec(
                    format!("SELECT source_topic, source_partition, next_offset FROM {table} WHERE sink = ?"),
                    (sink,),
                )
                .map_err(lost)?;
            let held: HashMap<(String, i32), i64> =
                rows.into_iter().map(|(t, p, n)| ((t, p), n)).collect();
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
            let conn = self.conn()?;
            let mut q = String::from(
                "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = ",
            );
            quote(table, &mut q);
            let rows: Vec<(String, String)> = conn.query(q).map_err(lost)?;
            Ok(rows
                .into_iter()
                .map(|(n, t)| {
                    let kind = column_type(&t);
                    (n, kind)
                })
                .collect::<Vec<_>>())
        })();
        let existing = self.guard(r)?;
        let ddl = if existing.is_empty() {
            let defs: Vec<String> = columns
                .iter()
                .map(|c| {
                    let key = if c.name == ID_COLUMN {
                        " NOT NULL PRIMARY KEY"
                    } else {
                        " NULL"
                    };
                    format!("`{}` {}{key}", c.name, sql_type(c))
                })
                .collect();
            tracing::info!(%table, %schema, columns = columns.len(), "Creating a stream's table.");
            format!(
                "CREATE TABLE IF NOT EXISTS `{table}` ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
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
                .map(|c| format!("ADD COLUMN IF NOT EXISTS `{}` {} NULL", c.name, sql_type(c)))
                .collect();
            format!("ALTER TABLE `{table}` {}", adds.join(", "))
        };
        let r = (|| self.conn()?.query_drop(ddl).map_err(lost))();
        Ok(self.guard(r)?)
    }

    fn write(&mut self, batch: &Batch) -> Result<Written, StoreError> {
        let r = match self.write_once(batch, false) {
            Ok(Some(w)) => Ok(w),
            Ok(None) => {
                tracing::info!("MariaDB refused a row of a batch; writing it row by row.");
                self.write_once(batch, true).map(Option::unwrap_or_default)
            }
            Err(e) => Err(e),
        };
        self.guard(r)
    }
}
