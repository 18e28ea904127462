//! Redis: a key per event or per entity (a key template over event fields),
//! its value a hash of the flattened fields, the event as JSON, or an entry
//! of a Redis stream; with an optional time to live. A batch is one
//! `MULTI`/`EXEC` with the positions (a hash `sluice:<sink>:positions`),
//! under `WATCH` of that hash, so a process that lost a partition cannot
//! write it. Dead letters go to the stream `sluice:<sink>:dead_letters`.

use super::{Batch, PrepareError, Store, StoreError, Written, count, fenced, tp_name};
use crate::columns::Column;
use crate::config::RedisValue;
use crate::row::plain_text;
use crate::source::Tp;
use std::collections::{BTreeSet, HashMap};

/// A Redis database a sink writes.
pub struct RedisStore {
    url: String,
    positions: String,
    dead: String,
    value: RedisValue,
    ttl_secs: u64,
    conn: Option<redis::Connection>,
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
            conn: None,
        }
    }

    fn conn(&mut self) -> Result<&mut redis::Connection, StoreError> {
        if self.conn.is_none() {
            let client = redis::Client::open(self.url.as_str()).map_err(lost)?;
            self.conn = Some(client.get_connection().map_err(lost)?);
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
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut written = Written::default();
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
                match value {
                    RedisValue::Hash => {
                        let pairs: Vec<(&str, String)> = t
                            .columns
                            .iter()
                            .zip(&row.cells)
                            .filter_map(|(c, v)| Some((c.name.as_str(), plain_text(v)?)))
                            .collect();
                        // The hash is the latest event's fields: an event that sets every
                        // column overwrites every field the key can hold; one with nulls
                        // replaces the hash, so no field of an older event is left.
                        if pairs.len() < t.columns.len() {
                            pipe.del(key).ignore();
                        }
                        if !pairs.is_empty() {
                            pipe.hset_multiple(key, &pairs).ignore();
                        }
                        if ttl > 0 {
                            pipe.expire(key, ttl as i64).ignore();
                        }
                    }
                    RedisValue::Json => {
                        if ttl > 0 {
                            pipe.set_ex(key, &row.event, ttl).ignore();
                        } else {
                            pipe.set(key, &row.event).ignore();
                        }
                    }
                    RedisValue::Stream => {
                        pipe.cmd("XADD")
                            .arg(key)
                            .arg("*")
                            .arg("event")
                            .arg(&row.event)
                            .ignore();
                        if ttl > 0 {
                            pipe.expire(key, ttl as i64).ignore();
                        }
                    }
                }
            }
            count(&mut written.rows, &t.stream, rows);
        }
        for d in &dead {
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
            count(&mut written.dead, &d.stream, 1);
        }
        for m in &batch.moves {
            pipe.hset(&positions, tp_name(&m.tp), m.to).ignore();
        }
        // EXEC answers nil when the watched positions changed since WATCH.
        let done: Option<()> = pipe.query(conn).map_err(lost)?;
        match done {
            Some(()) => Ok(written),
            None => Err(StoreError::Fenced(
                "the positions changed while the batch was being written".into(),
            )),
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
    ) -> Result<(), PrepareError> {
        Ok(())
    }

    fn write(&mut self, batch: &Batch) -> Result<Written, StoreError> {
        let r = self.write_once(batch);
        self.guard(r)
    }
}
