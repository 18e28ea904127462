//! MariaDB (and MySQL): a table per stream, filled by multi-row `INSERT …
//! ON DUPLICATE KEY UPDATE meta_id = meta_id` (a repeat changes nothing) in
//! strict mode, with the dead letters and positions in the same InnoDB
//! transaction. A batch the server refuses is written again row by row, each
//! in a savepoint, so only the refused rows go to the dead letters.

use super::sql::{SqlConn, SqlStore};
use super::{DeadLetter, Move, Row, StoreError, TableRows};
use crate::columns::{Column, ColumnType, ID_COLUMN};
use crate::row::{load_text, quote, sql_literal};
use crate::source::Tp;
use mysql::prelude::Queryable;
use mysql::{Conn, LocalInfileHandler, Opts};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Largest statement sent, in bytes (the server's default packet limit is 16 MiB).
const MAX_STATEMENT: usize = 4 * 1024 * 1024;

/// A MariaDB database a sink writes.
pub type MysqlStore = SqlStore<MariaConn>;

/// A session with MariaDB.
pub struct MariaConn {
    conn: Conn,
    /// What the next `LOAD DATA LOCAL INFILE` sends.
    infile: Arc<Mutex<Vec<u8>>>,
    /// The server refused `LOAD DATA LOCAL` (`local_infile` off): multi-row inserts only.
    no_infile: bool,
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

/// The store's failure: a transaction the server rolled back (SQLSTATE class 40, a deadlock
/// with another writer) is written again from the positions over the same connection.
fn lost(e: mysql::Error) -> StoreError {
    match &e {
        mysql::Error::MySqlError(m) if m.state.starts_with("40") => {
            StoreError::Fenced(format!("MariaDB rolled the batch back: {}", m.message))
        }
        _ => StoreError::Lost(e.to_string()),
    }
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

fn insert_head(t: &TableRows) -> String {
    format!(
        "INSERT INTO `{}` ({}) VALUES ",
        t.table,
        columns_list(&t.columns)
    )
}

/// A repeat of a row already there changes nothing.
fn insert_tail() -> String {
    format!(" ON DUPLICATE KEY UPDATE `{ID_COLUMN}` = `{ID_COLUMN}`")
}

/// How a `LOAD DATA` ended.
enum Loaded {
    /// Every row is in, without a warning.
    Done(u64),
    /// The server warned (or refused); the load is undone.
    Warned,
    /// The server does not take `LOCAL` loads.
    Disabled(String),
}

impl MariaConn {
    fn load(&mut self, t: &TableRows) -> Result<Loaded, StoreError> {
        {
            let mut text = String::with_capacity(t.rows.len() * 128);
            for row in &t.rows {
                for (i, c) in row.cells.iter().enumerate() {
                    if i > 0 {
                        text.push('\t');
                    }
                    load_text(c, &mut text);
                }
                text.push('\n');
            }
            let mut data = self.infile.lock().unwrap_or_else(|p| p.into_inner());
            *data = text.into_bytes();
        }
        self.run("SAVEPOINT sluice_load")?;
        let sql = format!(
            "LOAD DATA LOCAL INFILE 'sluice-batch' INTO TABLE `{}` CHARACTER SET utf8mb4 \
             FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({})",
            t.table,
            columns_list(&t.columns)
        );
        let loaded = self.conn.query_drop(sql);
        self.infile
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let outcome = match loaded {
            Ok(()) => {
                let n = self.conn.affected_rows();
                if self.conn.warnings() == 0 && n == t.rows.len() as u64 {
                    self.run("RELEASE SAVEPOINT sluice_load")?;
                    return Ok(Loaded::Done(n));
                }
                Loaded::Warned
            }
            // ER_NOT_ALLOWED_COMMAND, ER_OPTION_PREVENTS_STATEMENT: local_infile is off.
            Err(mysql::Error::MySqlError(e))
                if e.code == 1148 || e.code == 1290 || e.code == 3948 =>
            {
                Loaded::Disabled(e.message)
            }
            Err(e) if refused(&e) => Loaded::Warned,
            Err(e) => return Err(lost(e)),
        };
        self.run("ROLLBACK TO SAVEPOINT sluice_load")?;
        Ok(outcome)
    }

    /// Statements of many rows each, up to [`MAX_STATEMENT`] bytes; `None` when the server refused one.
    fn insert_rows(&mut self, t: &TableRows) -> Result<Option<u64>, StoreError> {
        let (head, tail) = (insert_head(t), insert_tail());
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
            match self.conn.query_drop(&sql) {
                Ok(()) => written += self.conn.affected_rows(),
                Err(e) if refused(&e) => return Ok(None),
                Err(e) => return Err(lost(e)),
            }
        }
        Ok(Some(written))
    }
}

impl SqlConn for MariaConn {
    const NAME: &'static str = "MariaDB";
    const BEGIN: &'static str = "START TRANSACTION";

    fn connect(url: &str, positions: &str, dead: &str) -> Result<Self, StoreError> {
        let opts =
            Opts::from_url(url).map_err(|e| StoreError::Lost(format!("the url is wrong: {e}")))?;
        let mut conn = Conn::new(opts).map_err(lost)?;
        conn.query_drop(
            "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'",
        )
        .map_err(lost)?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {positions} (sink VARCHAR(255) NOT NULL, source_topic VARCHAR(255) NOT NULL, \
             source_partition INT NOT NULL, next_offset BIGINT NOT NULL, \
             updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
             PRIMARY KEY (sink, source_topic, source_partition)) ENGINE=InnoDB"
        ))
        .map_err(lost)?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {dead} (sink VARCHAR(255) NOT NULL, source_topic VARCHAR(255) NOT NULL, \
             source_partition INT NOT NULL, source_offset BIGINT NOT NULL, stream VARCHAR(255) NOT NULL, \
             reason TEXT NOT NULL, event LONGTEXT NOT NULL, at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
             PRIMARY KEY (sink, source_topic, source_partition, source_offset)) ENGINE=InnoDB"
        ))
        .map_err(lost)?;
        let infile = Arc::new(Mutex::new(Vec::new()));
        let source = infile.clone();
        conn.set_local_infile_handler(Some(LocalInfileHandler::new(move |_, out| {
            let data = source.lock().unwrap_or_else(|p| p.into_inner());
            out.write_all(&data)
        })));
        Ok(MariaConn {
            conn,
            infile,
            no_infile: false,
        })
    }

    fn run(&mut self, sql: &str) -> Result<(), StoreError> {
        self.conn.query_drop(sql).map_err(lost)
    }

    fn held(&mut self, table: &str, sink: &str, tp: &Tp) -> Result<Option<i64>, StoreError> {
        self.conn
            .exec_first(
                format!(
                    "SELECT next_offset FROM {table} WHERE sink = ? AND source_topic = ? AND source_partition = ? FOR UPDATE"
                ),
                (sink, &*tp.0, tp.1),
            )
            .map_err(lost)
    }

    fn all_positions(
        &mut self,
        table: &str,
        sink: &str,
    ) -> Result<HashMap<(String, i32), i64>, StoreError> {
        let rows: Vec<(String, i32, i64)> = self
            .conn
            .exec(
                format!(
                    "SELECT source_topic, source_partition, next_offset FROM {table} WHERE sink = ?"
                ),
                (sink,),
            )
            .map_err(lost)?;
        Ok(rows.into_iter().map(|(t, p, n)| ((t, p), n)).collect())
    }

    /// `LOAD DATA LOCAL INFILE` from memory, as the server's own bulk loader; when the
    /// server warns of anything (a key the table has, a value it would truncate: `LOCAL`
    /// turns such errors into warnings) the load is undone and the rows go as inserts,
    /// which skip repeated keys and refuse bad values as strict mode says.
    fn insert_bulk(&mut self, t: &TableRows) -> Result<Option<u64>, StoreError> {
        if !self.no_infile {
            match self.load(t)? {
                Loaded::Done(n) => return Ok(Some(n)),
                Loaded::Warned => {}
                Loaded::Disabled(why) => {
                    tracing::info!(%why, "MariaDB does not take LOAD DATA LOCAL INFILE (local_infile is off); writing multi-row inserts.");
                    self.no_infile = true;
                }
            }
        }
        self.insert_rows(t)
    }

    fn insert_one(&mut self, t: &TableRows, row: &Row) -> Result<Result<u64, String>, StoreError> {
        let mut sql = insert_head(t);
        values(&row.cells, &mut sql);
        sql.push_str(&insert_tail());
        match self.conn.query_drop(&sql) {
            Ok(()) => Ok(Ok(self.conn.affected_rows())),
            Err(e) if refused(&e) => Ok(Err(match e {
                mysql::Error::MySqlError(m) => m.message,
                other => other.to_string(),
            })),
            Err(e) => Err(lost(e)),
        }
    }

    fn write_dead(
        &mut self,
        table: &str,
        sink: &str,
        dead: &[DeadLetter],
    ) -> Result<(), StoreError> {
        for d in dead {
            let ((topic, partition), offset) = &d.at;
            self.conn
                .exec_drop(
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

    fn write_moves(&mut self, table: &str, sink: &str, moves: &[Move]) -> Result<(), StoreError> {
        for m in moves {
            self.conn
                .exec_drop(
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

    fn columns(&mut self, table: &str) -> Result<Vec<(String, Option<ColumnType>)>, StoreError> {
        let mut q = String::from(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ",
        );
        quote(table, &mut q);
        let rows: Vec<(String, String)> = self.conn.query(q).map_err(lost)?;
        Ok(rows
            .into_iter()
            .map(|(n, t)| {
                let kind = column_type(&t);
                (n, kind)
            })
            .collect())
    }

    fn create_table(&mut self, table: &str, columns: &[Column]) -> Result<(), StoreError> {
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
        self.conn
            .query_drop(format!(
                "CREATE TABLE IF NOT EXISTS `{table}` ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                defs.join(", ")
            ))
            .map_err(lost)
    }

    fn add_columns(&mut self, table: &str, added: &[Column]) -> Result<(), StoreError> {
        let adds: Vec<String> = added
            .iter()
            .map(|c| format!("ADD COLUMN IF NOT EXISTS `{}` {} NULL", c.name, sql_type(c)))
            .collect();
        self.conn
            .query_drop(format!("ALTER TABLE `{table}` {}", adds.join(", ")))
            .map_err(lost)
    }
}
