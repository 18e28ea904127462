//! Redis: a key per event or per entity (a key template over event fields),
//! its value a hash of the flattened fields, the event as JSON, or an entry
//! of a Redis stream; with an optional time to live. A batch is one
//! `MULTI`/`EXEC` with the positions (a hash `sluice:<sink>:positions`),
//! under `WATCH` of that hash, so a process that lost a partition cannot
//! write it. Dead letters go to the stream `sluice:<sink>:dead_letters`.

use super::{
    Batch, DeadLetter, PrepareError, Row, Session, Store, StoreError, TableRows, Written, count,
    fenced, tp_name,
};
use crate::columns::Column;
use crate::config::RedisValue;
use crate::row::{Cell, copy_text};
use crate::source::Tp;
use std::collections::{BTreeSet, HashMap};

/// A Redis database a sink writes.
pub struct RedisStore {
    url: String,
    positions: String,
    dead: String,
    value: RedisValue,
    ttl_secs: u64,
    conn: Session<redis::Connection>,
}

fn lost(e: redis::RedisError) -> StoreError {
    StoreError::Lost(e.to_string())
}

impl RedisStore {
    /// A store at `url` for sink `sink`, writing values as `value` with `ttl_secs` (0: none).
    pub fn new(url: &str, sink: &str, value: RedisValue, ttl_secs: u64) -> Self {
        RedisStore {
            url: url.to_owned(),
            positions: format!("sluice:{sink}:positions"),
            dead: format!("sluice:{sink}:dead_letters"),
            value,
            ttl_secs,
            conn: Session::default(),
        }
    }

    fn conn(&mut self) -> Result<&mut redis::Connection, StoreError> {
        let url = &self.url;
        self.conn.get(|| {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .map_err(lost)
        })
    }

    fn guard<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        self.conn.guard(r)
    }

    fn write_once(&mut self, batch: &Batch) -> Result<Written, StoreError> {
        let (positions, dead_key, value, ttl) = (
            self.positions.clone(),
            self.dead.clone(),
            self.value,
            self.ttl_secs,
        );
        let conn = self.conn()?;
        redis::cmd("WATCH")
            .arg(&positions)
            .exec(conn)
            .map_err(lost)?;
        let fields: Vec<String> = batch.moves.iter().map(|m| tp_name(&m.tp)).collect();
        if !fields.is_empty() {
            let held: Vec<Option<i64>> = redis::cmd("HMGET")
                .arg(&positions)
                .arg(&fields)
                .query(conn)
                .map_err(lost)?;
            for (m, held) in batch.moves.iter().zip(held) {
                if let Err(e) = fenced(m, held) {
                    let _ = redis::cmd("UNWATCH").exec(conn);
                    return Err(e);
                }
            }
        }
        // Redis runs the rest of a transaction when one command fails, so a command that
        // would fail must not be sent: an XADD to a key holding another type is refused here.
        let refused = match value {
            RedisValue::Stream => wrong_types(conn, batch)?,
            RedisValue::Hash | RedisValue::Json => HashMap::new(),
        };
        let mut dead = batch.dead.clone();
        // The transaction is packed by hand, as `redis-cli --pipe` input is, and sent in
        // pieces as it grows; the replies are read once it is all sent.
        let mut tx = Packed::default();
        tx.command(&[b"MULTI"]);
        let mut written = Written::default();
        // The row each command writes, to name it if the command fails.
        let mut writes: Vec<Option<(&TableRows, &Row)>> = Vec::new();
        let mut text = String::new();
        for t in &batch.tables {
            let mut rows = 0;
            for row in &t.rows {
                let Some(key) = &row.key else { continue };
                if let Some(kind) = refused.get(key) {
                    dead.push(super::refusal(
                        t,
                        row,
                        format!("Redis refused the row: key `{key}` holds a {kind}, not a stream"),
                    ));
                    continue;
                }
                rows += 1;
                // Sent as it is packed, so that Redis queues the first commands while the
                // rest are packed.
                if tx.bytes.len() >= SEND_BYTES {
                    conn.send_packed_command(&tx.bytes).map_err(lost)?;
                    tx.bytes.clear();
                }
                let key = key.as_bytes();
                match value {
                    RedisValue::Hash => {
                        let set = row
                            .cells
                            .iter()
                            .filter(|c| !matches!(c, Cell::Null))
                            .count();
                        // The hash is the latest event's fields: an event that sets every
                        // column overwrites every field the key can hold; one with nulls
                        // replaces the hash, so no field of an older event is left.
                        if set < t.columns.len() {
                            tx.command(&[b"DEL", key]);
                            writes.push(Some((t, row)));
                        }
                        if set > 0 {
                            tx.start(2 + 2 * set);
                            tx.arg(b"HSET");
                            tx.arg(key);
                            for (c, v) in t.columns.iter().zip(&row.cells) {
                                match v {
                                    Cell::Null => continue,
                                    Cell::Text(v) | Cell::Json(v) => {
                                        tx.arg(c.name.as_bytes());
                                        tx.arg(v.as_bytes());
                                    }
                                    other => {
                                        text.clear();
                                        copy_text(other, &mut text);
                                        tx.arg(c.name.as_bytes());
                                        tx.arg(text.as_bytes());
                                    }
                                }
                            }
                            writes.push(Some((t, row)));
                        }
                    }
                    RedisValue::Json if ttl > 0 => {
                        text.clear();
                        text.push_str(&ttl.to_string());
                        tx.command(&[b"SET", key, row.event.as_bytes(), b"EX", text.as_bytes()]);
                        writes.push(Some((t, row)));
                    }
                    RedisValue::Json => {
                        tx.command(&[b"SET", key, row.event.as_bytes()]);
                        writes.push(Some((t, row)));
                    }
                    RedisValue::Stream => {
                        tx.command(&[b"XADD", key, b"*", b"event", row.event.as_bytes()]);
                        writes.push(Some((t, row)));
                    }
                }
                if ttl > 0 && value != RedisValue::Json {
                    text.clear();
                    text.push_str(&ttl.to_string());
                    tx.command(&[b"EXPIRE", key, text.as_bytes()]);
                    writes.push(None);
                }
            }
            count(&mut written.rows, &t.stream, rows);
        }
        for d in &dead {
            let ((topic, partition), offset) = &d.at;
            let (partition, offset) = (partition.to_string(), offset.to_string());
            tx.command(&[
                b"XADD",
                dead_key.as_bytes(),
                b"*",
                b"stream",
                d.stream.as_bytes(),
                b"topic",
                topic.as_bytes(),
                b"partition",
                partition.as_bytes(),
                b"offset",
                offset.as_bytes(),
                b"reason",
                d.reason.as_bytes(),
                b"event",
                d.event.as_bytes(),
            ]);
            writes.push(None);
            count(&mut written.dead, &d.stream, 1);
        }
        for m in &batch.moves {
            let (field, to) = (tp_name(&m.tp), m.to.to_string());
            tx.command(&[
                b"HSET",
                positions.as_bytes(),
                field.as_bytes(),
                to.as_bytes(),
            ]);
            writes.push(None);
        }
        tx.command(&[b"EXEC"]);
        conn.send_packed_command(&tx.bytes).map_err(lost)?;
        // MULTI's answer and one per queued command, then EXEC's.
        let mut refused_at_queue = None;
        for _ in 1..tx.commands {
            if let redis::Value::ServerError(e) = conn.recv_response().map_err(lost)? {
                refused_at_queue.get_or_insert(e);
            }
        }
        let exec = conn.recv_response().map_err(lost)?;
        if let Some(e) = refused_at_queue {
            return Err(StoreError::Lost(format!(
                "Redis refused a command of the batch, so none was run: {e:?}"
            )));
        }
        // EXEC answers nil when the watched positions changed since WATCH.
        let results = match exec {
            redis::Value::Array(results) => results,
            redis::Value::Nil => {
                return Err(StoreError::Fenced(
                    "the positions changed while the batch was being written".into(),
                ));
            }
            other => {
                return Err(StoreError::Lost(format!(
                    "EXEC answered {other:?}, not the transaction's results"
                )));
            }
        };
        // Redis ran the rest of the transaction past a command that failed (which the checks
        // above make unexpected): the rows it failed for go to the dead letters now.
        let mut failed = Vec::new();
        for (result, write) in results.iter().zip(&writes) {
            if let (redis::Value::ServerError(e), Some((t, row))) = (result, write) {
                failed.push(super::refusal(
                    t,
                    row,
                    format!("Redis refused the row: {e:?}"),
                ));
            }
        }
        if !failed.is_empty() {
            self.late_dead_letters(&failed, &mut written);
        }
        Ok(written)
    }

    /// Dead letters for rows whose command failed inside a transaction that otherwise
    /// committed (positions included): written on their own, and logged in any case.
    fn late_dead_letters(&mut self, failed: &[DeadLetter], written: &mut Written) {
        let dead_key = self.dead.clone();
        for d in failed {
            tracing::error!(stream = %d.stream, at = %format!("{}@{}", tp_name(&d.at.0), d.at.1), reason = %d.reason, "A Redis command failed inside a committed batch; its row goes to the dead letters.");
            if let Some(n) = written.rows.get_mut(&d.stream) {
                *n = n.saturating_sub(1);
            }
            count(&mut written.dead, &d.stream, 1);
        }
        let r = (|| {
            let conn = self.conn()?;
            let mut pipe = redis::pipe();
            for d in failed {
                let ((topic, partition), offset) = &d.at;
                pipe.cmd("XADD")
                    .arg(&dead_key)
                    .arg("*")
                    .arg("stream")
                    .arg(&d.stream)
                    .arg("topic")
                    .arg(&**topic)
                    .arg("partition")
                    .arg(*partition)
                    .arg("offset")
                    .arg(*offset)
                    .arg("reason")
                    .arg(&d.reason)
                    .arg("event")
                    .arg(&d.event)
                    .ignore();
            }
            pipe.exec(conn).map_err(lost)
        })();
        if let Err(e) = self.guard(r) {
            tracing::error!(error = %e, count = failed.len(), "The dead letters of failed Redis commands could not be written; the rows are only in this log.");
        }
    }
}

/// Packed commands are sent once this many bytes wait.
const SEND_BYTES: usize = 256 * 1024;

/// Commands in the Redis protocol, packed into one buffer.
#[derive(Default)]
struct Packed {
    bytes: Vec<u8>,
    commands: usize,
}

impl Packed {
    /// Starts a command of `args` arguments (name included).
    fn start(&mut self, args: usize) {
        self.bytes.push(b'*');
        self.number(args);
        self.commands += 1;
    }

    fn arg(&mut self, arg: &[u8]) {
        self.bytes.push(b'$');
        self.number(arg.len());
        self.bytes.extend_from_slice(arg);
        self.bytes.extend_from_slice(b"\r\n");
    }

    /// A count in decimal, then CRLF.
    fn number(&mut self, n: usize) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = n;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.bytes.extend_from_slice(&digits[at..]);
        self.bytes.extend_from_slice(b"\r\n");
    }

    fn command(&mut self, args: &[&[u8]]) {
        self.start(args.len());
        for a in args {
            self.arg(a);
        }
    }
}

/// The keys of the batch's rows that hold something other than a stream, with what they hold.
fn wrong_types(
    conn: &mut redis::Connection,
    batch: &Batch,
) -> Result<HashMap<String, String>, StoreError> {
    let keys: BTreeSet<&str> = batch
        .tables
        .iter()
        .flat_map(|t| t.rows.iter().filter_map(|r| r.key.as_deref()))
        .collect();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("TYPE").arg(*k);
    }
    let kinds: Vec<String> = pipe.query(conn).map_err(lost)?;
    Ok(keys
        .into_iter()
        .zip(kinds)
        .filter(|(_, kind)| kind != "none" && kind != "stream")
        .map(|(k, kind)| (k.to_owned(), kind))
        .collect())
}

impl Store for RedisStore {
    fn positions(&mut self, tps: &[Tp]) -> Result<Vec<Option<i64>>, StoreError> {
        if tps.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.positions.clone();
        let fields: Vec<String> = tps.iter().map(tp_name).collect();
        let r = (|| {
            redis::cmd("HMGET")
                .arg(&key)
                .arg(&fields)
                .query::<Vec<Option<i64>>>(self.conn()?)
                .map_err(lost)
        })();
        self.guard(r)
    }

    fn prepare(
        &mut self,
        _table: &str,
        _columns: &[Column],
        _schema: &str,
        _doc: &serde_json::Value,
    ) -> Result<(), PrepareError> {
        Ok(())
    }

    fn write(&mut self, batch: &Batch) -> Result<Written, StoreError> {
        let r = self.write_once(batch);
        self.guard(r)
    }
}

#[cfg(test)]
mod tests {
    use super::Packed;

    #[test]
    fn commands_are_packed_as_the_redis_protocol_says() {
        let mut p = Packed::default();
        p.command(&[b"MULTI"]);
        p.command(&[b"SET", b"k", &[b'x'; 12]]);
        p.command(&[b"GET", b""]);
        assert_eq!(p.commands, 3);
        assert_eq!(
            String::from_utf8(p.bytes).unwrap(),
            "*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$12\r\nxxxxxxxxxxxx\r\n*2\r\n$3\r\nGET\r\n$0\r\n\r\n"
        );
    }
}
