//! `sluice bench-connect`: the connectors against each store's own bulk
//! loader, on the same rows in one run. It writes N seven-column events
//! (a UUID, a timestamp and five short fields) into an embedded log and the
//! same rows into the files each loader takes; then, per store, times the
//! loader (`psql \copy`, MariaDB's `LOAD DATA LOCAL INFILE`, `redis-cli
//! --pipe`) into an empty table or keyspace, and the connector, exactly once
//! as it always runs, from the log into an empty table of the same layout.
//! Prints rows/s side by side and the connector's share of the loader's.

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use sluice_connect::config::{RedisValue, SinkConfig, SinkKind};
use sluice_connect::metrics::SinkStream;
use sluice_connect::store::{MariaConn, PgConn, SqlConn};
use sluice_connect::{ConnectConfig, ConnectMetrics};
use sluice_log::{Log, LogOptions, NewRecord};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A store to measure.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// PostgreSQL: `psql \copy` against the connector's COPY and upsert.
    Postgres,
    /// MariaDB: `LOAD DATA LOCAL INFILE` against the connector's multi-row inserts.
    Mysql,
    /// Redis: `redis-cli --pipe` of HSETs against the connector's MULTI/EXEC of hashes.
    Redis,
}

/// Options of `sluice bench-connect`.
#[derive(Args, Debug)]
pub struct BenchConnectArgs {
    /// Rows per store.
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    /// Stores to measure, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "postgres,mysql,redis"
    )]
    stores: Vec<Store>,
    /// PostgreSQL database (its tables `bench_loader`, `bench_row` and `sluice_bench_*` are replaced).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres: String,
    /// MariaDB database (its tables `bench_loader`, `bench_row` and `sluice_bench_*` are replaced); needs `local_infile` on.
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306/test")]
    mysql: String,
    /// Redis database (its keys `sluice_bench*` and `sluice:sluice_bench:*` are replaced).
    #[arg(long, default_value = "redis://127.0.0.1:6379/15")]
    redis: String,
    /// The connector's batch size (its default unless given).
    #[arg(long, default_value_t = 5000)]
    batch_size: usize,
}

const STREAM: &str = "bench.row";
const TOPIC: &str = "bench.row";
const SCHEMA_URI: &str = "/bench/row/1.0.0";
const SINK: &str = "sluice_bench";
const TABLE: &str = "bench_row";
const LOADER_TABLE: &str = "bench_loader";
const POSITIONS: &str = "sluice_bench_positions";
const DEAD: &str = "sluice_bench_dead_letters";
/// The seven columns, in the order the connector lays them out (`meta_id`, then by field name).
const COLUMNS: &str = "meta_id, action, meta_dt, ms, ok, page_id, user_name";

/// The schema every row follows.
fn schema() -> serde_json::Value {
    serde_json::json!({
        "title": "bench/row", "$id": SCHEMA_URI, "$schema": "https://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "meta": {"type": "object", "properties": {
                "id": {"type": "string"}, "dt": {"type": "string", "format": "date-time"}}},
            "action": {"type": "string"},
            "page_id": {"type": "integer"},
            "user_name": {"type": "string"},
            "ms": {"type": "number"},
            "ok": {"type": "boolean"}
        }
    })
}

/// Row `i`'s values.
struct Values {
    id: String,
    dt: time::OffsetDateTime,
    action: &'static str,
    page_id: u64,
    user: String,
    ms: f64,
    ok: bool,
}

fn values(i: u64) -> Values {
    const ACTIONS: [&str; 4] = ["click", "view", "save", "edit"];
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &i.to_be_bytes());
    Values {
        id: id.to_string(),
        dt: time::OffsetDateTime::UNIX_EPOCH + Duration::from_millis(1_796_083_200_000 + i * 7),
        action: ACTIONS[(i % 4) as usize],
        page_id: (i * 7919) % 100_000,
        user: format!("user{}", i % 5000),
        ms: (i % 10_000) as f64 / 8.0,
        ok: i.is_multiple_of(3),
    }
}

/// `2026-12-01T00:00:00.007Z` (with `T` and `Z`) or MariaDB's `2026-12-01 00:00:00.007`.
fn stamp(dt: time::OffsetDateTime, iso: bool) -> String {
    let (sep, zone) = if iso { ('T', "Z") } else { (' ', "") };
    format!(
        "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}.{:03}{zone}",
        dt.year(),
        dt.month() as u8,
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    )
}

/// The files the loaders read and the log the connector reads, all holding the same rows.
struct Inputs {
    dir: tempfile::TempDir,
    pg: PathBuf,
    maria: PathBuf,
    resp: PathBuf,
    log: PathBuf,
    repo: PathBuf,
    streams: PathBuf,
}

/// A progress bar of `len` steps labelled `what`.
pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len).with_message(what.to_owned());
    bar.set_style(
        ProgressStyle::with_template("{msg:28} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn resp_arg(out: &mut Vec<u8>, arg: &str) {
    out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
    out.extend_from_slice(arg.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A scratch folder with a schema repository holding `title` 1.0.0 (`schema`) and a stream
/// config giving it to `stream`: (folder, repository, stream config).
pub(crate) fn scratch(
    title: &str,
    schema: &serde_json::Value,
    stream: &str,
) -> anyhow::Result<(tempfile::TempDir, PathBuf, PathBuf)> {
    let dir = tempfile::tempdir().context("cannot make a scratch folder")?;
    let repo = dir.path().join("repo");
    let schema_dir = repo.join("jsonschema").join(title);
    std::fs::create_dir_all(&schema_dir)?;
    std::fs::write(schema_dir.join("1.0.0.yaml"), schema.to_string())?;
    let streams = dir.path().join("streams.yaml");
    std::fs::write(
        &streams,
        format!("streams:\n  {stream}:\n    schema_title: {title}\n"),
    )?;
    Ok((dir, repo, streams))
}

fn prepare_inputs(rows: u64) -> anyhow::Result<Inputs> {
    let (dir, repo, streams) = scratch("bench/row", &schema(), STREAM)?;
    let (pg, maria, resp, log_dir) = (
        dir.path().join("rows.pg.tsv"),
        dir.path().join("rows.mariadb.tsv"),
        dir.path().join("rows.resp"),
        dir.path().join("log"),
    );
    let mut pg_out = std::io::BufWriter::new(std::fs::File::create(&pg)?);
    let mut maria_out = std::io::BufWriter::new(std::fs::File::create(&maria)?);
    let mut resp_out = std::io::BufWriter::new(std::fs::File::create(&resp)?);
    let mut log = Log::open(&log_dir, LogOptions::default())
        .with_context(|| format!("cannot open a log in {}", log_dir.display()))?;
    let headers: [(&str, &[u8]); 2] = [
        ("schema_uri", SCHEMA_URI.as_bytes()),
        ("stream", STREAM.as_bytes()),
    ];
    let progress = bar(rows, "writing the rows");
    let mut events: Vec<(i64, Vec<u8>)> = Vec::with_capacity(1000);
    let mut resp_buf = Vec::with_capacity(512);
    for i in 0..rows {
        let v = values(i);
        let iso = stamp(v.dt, true);
        writeln!(
            pg_out,
            "{}\t{}\t{iso}\t{}\t{}\t{}\t{}",
            v.id,
            v.action,
            v.ms,
            if v.ok { "t" } else { "f" },
            v.page_id,
            v.user
        )?;
        writeln!(
            maria_out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            v.id,
            v.action,
            stamp(v.dt, false),
            v.ms,
            u8::from(v.ok),
            v.page_id,
            v.user
        )?;
        resp_buf.clear();
        resp_buf.extend_from_slice(b"*16\r\n");
        resp_arg(&mut resp_buf, "HSET");
        resp_arg(&mut resp_buf, &format!("sluice_bench_loader:{}", v.id));
        for (field, value) in [
            ("meta_id", v.id.clone()),
            ("action", v.action.to_owned()),
            ("meta_dt", iso.clone()),
            ("ms", v.ms.to_string()),
            ("ok", v.ok.to_string()),
            ("page_id", v.page_id.to_string()),
            ("user_name", v.user.clone()),
        ] {
            resp_arg(&mut resp_buf, field);
            resp_arg(&mut resp_buf, &value);
        }
        resp_out.write_all(&resp_buf)?;
        let event = serde_json::json!({
            "meta": {"id": v.id, "dt": iso},
            "action": v.action, "page_id": v.page_id, "user_name": v.user, "ms": v.ms, "ok": v.ok
        });
        events.push((v.dt.unix_timestamp() * 1000, event.to_string().into_bytes()));
        if events.len() == 1000 || i + 1 == rows {
            let records: Vec<NewRecord<'_>> = events
                .iter()
                .map(|(ts, value)| NewRecord {
                    timestamp_ms: *ts,
                    key: None,
                    headers: &headers,
                    value,
                })
                .collect();
            log.append(TOPIC, &records)?;
            events.clear();
            progress.set_position(i + 1);
        }
    }
    log.sync()?;
    pg_out.flush()?;
    maria_out.flush()?;
    resp_out.flush()?;
    progress.finish_and_clear();
    Ok(Inputs {
        pg,
        maria,
        resp,
        log: log_dir,
        repo,
        streams,
        dir,
    })
}

/// Runs `command` under a spinner saying `doing`, failing with its stderr when it fails;
/// returns how long it took.
fn timed(mut command: Command, what: &str, doing: &str) -> anyhow::Result<Duration> {
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let spinner = ProgressBar::new_spinner().with_message(doing.to_owned());
    spinner.enable_steady_tick(Duration::from_millis(100));
    let started = Instant::now();
    let out = command.output();
    let took = started.elapsed();
    spinner.finish_and_clear();
    let out = out.with_context(|| format!("cannot run {what} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

/// The parts of `mysql://user[:password]@host[:port]/database`.
struct MariaUrl {
    user: String,
    password: Option<String>,
    host: String,
    port: String,
    database: String,
}

fn maria_url(url: &str) -> anyhow::Result<MariaUrl> {
    let rest = url
        .strip_prefix("mysql://")
        .with_context(|| format!("`{url}` is not a mysql:// URL"))?;
    let (auth, rest) = rest
        .rsplit_once('@')
        .with_context(|| format!("`{url}` names no user"))?;
    let (host_port, database) = rest
        .split_once('/')
        .with_context(|| format!("`{url}` names no database"))?;
    let (user, password) = match auth.split_once(':') {
        Some((u, p)) => (u.to_owned(), Some(p.to_owned())),
        None => (auth.to_owned(), None),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.to_owned()),
        None => (host_port.to_owned(), "3306".to_owned()),
    };
    Ok(MariaUrl {
        user,
        password,
        host,
        port,
        database: database.split('?').next().unwrap_or_default().to_owned(),
    })
}

/// The seven columns as the connector makes them.
fn columns() -> anyhow::Result<Vec<sluice_connect::columns::Column>> {
    sluice_connect::columns::layout(&schema()).map_err(|e| anyhow::anyhow!("{e}"))
}

fn fresh_pg(url: &str) -> anyhow::Result<()> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)
        .with_context(|| format!("PostgreSQL at {url} does not answer"))?;
    client.batch_execute(&format!(
        "SET client_min_messages = warning; DROP TABLE IF EXISTS {LOADER_TABLE}, {TABLE}, {POSITIONS}, {DEAD}"
    ))?;
    let mut conn = PgConn::connect(url, POSITIONS, DEAD)?;
    conn.create_table(LOADER_TABLE, &columns()?)?;
    Ok(())
}

fn count_pg(url: &str, table: &str) -> anyhow::Result<i64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    Ok(client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])?
        .get(0))
}

fn fresh_maria(url: &str) -> anyhow::Result<()> {
    use mysql::prelude::Queryable;
    let mut conn = mysql::Conn::new(mysql::Opts::from_url(url)?)
        .with_context(|| format!("MariaDB at {url} does not answer"))?;
    conn.query_drop(format!(
        "DROP TABLE IF EXISTS {LOADER_TABLE}, {TABLE}, {POSITIONS}, {DEAD}"
    ))?;
    let mut c = MariaConn::connect(url, POSITIONS, DEAD)?;
    c.create_table(LOADER_TABLE, &columns()?)?;
    Ok(())
}

fn count_maria(url: &str, table: &str) -> anyhow::Result<i64> {
    use mysql::prelude::Queryable;
    let mut conn = mysql::Conn::new(mysql::Opts::from_url(url)?)?;
    let n: Option<i64> = conn.query_first(format!("SELECT count(*) FROM {table}"))?;
    Ok(n.unwrap_or(0))
}

/// Deletes the bench's keys; returns how many keys match `pattern` before.
fn redis_clear(url: &str, pattern: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(url)?;
    let mut conn = client
        .get_connection()
        .with_context(|| format!("Redis at {url} does not answer"))?;
    let mut cursor: u64 = 0;
    let mut found = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(10_000)
            .query(&mut conn)?;
        found += keys.len() as u64;
        if !keys.is_empty() {
            redis::cmd("UNLINK").arg(&keys).exec(&mut conn)?;
        }
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

/// Runs the connector with one sink until it has written `rows` rows; returns how long it took.
fn connector(
    inputs: &Inputs,
    kind: SinkKind,
    url: &str,
    rows: u64,
    batch_size: usize,
) -> anyhow::Result<Duration> {
    let sink = SinkConfig {
        streams: vec![STREAM.to_owned()],
        batch_size,
        table: TABLE.to_owned(),
        dead_letter_table: DEAD.to_owned(),
        positions_table: POSITIONS.to_owned(),
        key: "sluice_bench:{meta.id}".to_owned(),
        value: RedisValue::Hash,
        ..SinkConfig::new(SINK, kind, url)
    };
    let config = ConnectConfig::on_log(
        inputs.streams.clone(),
        inputs.repo.clone(),
        inputs.log.clone(),
        vec![sink],
    );
    let metrics = ConnectMetrics::default();
    let stop = Arc::new(AtomicBool::new(false));
    let labels = SinkStream {
        sink: SINK.to_owned(),
        stream: STREAM.to_owned(),
    };
    let progress = bar(rows, "the connector");
    let started = Instant::now();
    let connectors = sluice_connect::start(&config, &metrics, stop.clone())?;
    let deadline = started + Duration::from_secs(600);
    let written = loop {
        let written = metrics.rows.get_or_create(&labels).get();
        let dead = metrics.dead_letters.get_or_create(&labels).get();
        progress.set_position(written);
        if written + dead >= rows {
            break written;
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            connectors.join();
            bail!("the connector wrote {written} of {rows} rows in 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    connectors.join();
    progress.finish_and_clear();
    if written != rows {
        bail!("the connector wrote {written} rows of {rows}; the rest went to the dead letters");
    }
    Ok(took)
}

/// One store's result.
struct Line {
    store: &'static str,
    loader: &'static str,
    loader_took: Duration,
    connector_took: Duration,
}

fn postgres(args: &BenchConnectArgs, inputs: &Inputs) -> anyhow::Result<Line> {
    fresh_pg(&args.postgres)?;
    let mut psql = Command::new("psql");
    psql.arg(&args.postgres)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg(format!(
            "\\copy {LOADER_TABLE} ({COLUMNS}) FROM '{}'",
            inputs.pg.display()
        ));
    let loader_took = timed(psql, "psql", "psql \\copy")?;
    let connector_took = connector(
        inputs,
        SinkKind::Postgres,
        &args.postgres,
        args.rows,
        args.batch_size,
    )?;
    for table in [LOADER_TABLE, TABLE] {
        let n = count_pg(&args.postgres, table)?;
        if n != args.rows as i64 {
            bail!("PostgreSQL table {table} holds {n} rows, not {}", args.rows);
        }
    }
    Ok(Line {
        store: "PostgreSQL",
        loader: "psql \\copy",
        loader_took,
        connector_took,
    })
}

fn mariadb(args: &BenchConnectArgs, inputs: &Inputs) -> anyhow::Result<Line> {
    fresh_maria(&args.mysql)?;
    let url = maria_url(&args.mysql)?;
    let mut client = Command::new("mariadb");
    client
        .arg("--local-infile=1")
        .args(["-h", &url.host, "-P", &url.port, "-u", &url.user]);
    if let Some(p) = &url.password {
        client.env("MYSQL_PWD", p);
    }
    client.arg(&url.database).arg("-e").arg(format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE {LOADER_TABLE} ({COLUMNS})",
        inputs.maria.display()
    ));
    let loader_took = timed(client, "mariadb", "LOAD DATA LOCAL INFILE")?;
    let connector_took = connector(
        inputs,
        SinkKind::Mysql,
        &args.mysql,
        args.rows,
        args.batch_size,
    )?;
    for table in [LOADER_TABLE, TABLE] {
        let n = count_maria(&args.mysql, table)?;
        if n != args.rows as i64 {
            bail!("MariaDB table {table} holds {n} rows, not {}", args.rows);
        }
    }
    Ok(Line {
        store: "MariaDB",
        loader: "LOAD DATA LOCAL INFILE",
        loader_took,
        connector_took,
    })
}

fn redis(args: &BenchConnectArgs, inputs: &Inputs) -> anyhow::Result<Line> {
    redis_clear(&args.redis, "sluice_bench*")?;
    redis_clear(&args.redis, &format!("sluice:{SINK}:*"))?;
    let mut cli = Command::new("redis-cli");
    cli.args(["-u", &args.redis, "--pipe"])
        .stdin(std::fs::File::open(&inputs.resp)?);
    let loader_took = timed(cli, "redis-cli", "redis-cli --pipe")?;
    let connector_took = connector(
        inputs,
        SinkKind::Redis,
        &args.redis,
        args.rows,
        args.batch_size,
    )?;
    for pattern in ["sluice_bench_loader:*", "sluice_bench:*"] {
        let n = redis_clear(&args.redis, pattern)?;
        if n != args.rows {
            bail!("Redis holds {n} keys {pattern}, not {}", args.rows);
        }
    }
    redis_clear(&args.redis, &format!("sluice:{SINK}:*"))?;
    Ok(Line {
        store: "Redis",
        loader: "redis-cli --pipe",
        loader_took,
        connector_took,
    })
}

fn drop_tables(args: &BenchConnectArgs) {
    let tables = format!("{LOADER_TABLE}, {TABLE}, {POSITIONS}, {DEAD}");
    if args.stores.contains(&Store::Postgres)
        && let Ok(mut c) = postgres::Client::connect(&args.postgres, postgres::NoTls)
    {
        let _ = c.batch_execute(&format!("DROP TABLE IF EXISTS {tables}"));
    }
    if args.stores.contains(&Store::Mysql)
        && let Ok(opts) = mysql::Opts::from_url(&args.mysql)
        && let Ok(mut c) = mysql::Conn::new(opts)
    {
        use mysql::prelude::Queryable;
        let _ = c.query_drop(format!("DROP TABLE IF EXISTS {tables}"));
    }
}

/// Runs `sluice bench-connect`.
pub fn run(args: BenchConnectArgs) -> anyhow::Result<ExitCode> {
    if args.rows == 0 {
        bail!("--rows must be at least 1");
    }
    let inputs = prepare_inputs(args.rows)?;
    let bytes = std::fs::metadata(&inputs.pg).map(|m| m.len()).unwrap_or(0);
    println!(
        "{} rows of seven columns ({:.1} MiB as text), the same rows for each loader and the connector (batch size {}):",
        args.rows,
        bytes as f64 / (1024.0 * 1024.0),
        args.batch_size
    );
    let mut lines = Vec::new();
    for store in &args.stores {
        let line = match store {
            Store::Postgres => postgres(&args, &inputs),
            Store::Mysql => mariadb(&args, &inputs),
            Store::Redis => redis(&args, &inputs),
        };
        match line {
            Ok(l) => lines.push(l),
            Err(e) => {
                drop_tables(&args);
                return Err(e.context(format!("measuring {store:?}")));
            }
        }
    }
    drop_tables(&args);
    println!(
        "{:<11} {:<23} {:>9} {:>12} {:>11} {:>14} {:>10}",
        "store", "loader", "loader s", "loader rows/s", "connector s", "connector rows/s", "share"
    );
    for l in &lines {
        let rate = |d: Duration| args.rows as f64 / d.as_secs_f64();
        println!(
            "{:<11} {:<23} {:>9.2} {:>13.0} {:>11.2} {:>16.0} {:>9.0}%",
            l.store,
            l.loader,
            l.loader_took.as_secs_f64(),
            rate(l.loader_took),
            l.connector_took.as_secs_f64(),
            rate(l.connector_took),
            100.0 * l.loader_took.as_secs_f64() / l.connector_took.as_secs_f64()
        );
    }
    drop(inputs.dir);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_urls_are_split_into_the_client_s_options() {
        let u = maria_url("mysql://root@127.0.0.1:3306/test").unwrap();
        assert_eq!(
            (
                u.user.as_str(),
                u.password,
                u.host.as_str(),
                u.port.as_str(),
                u.database.as_str()
            ),
            ("root", None, "127.0.0.1", "3306", "test")
        );
        let u = maria_url("mysql://app:s3:cret@db.example/events?ssl=true").unwrap();
        assert_eq!(u.password.as_deref(), Some("s3:cret"));
        assert_eq!((u.host.as_str(), u.port.as_str()), ("db.example", "3306"));
        assert_eq!(u.database, "events");
        assert!(maria_url("postgres://x@y/z").is_err());
        assert!(maria_url("mysql://root@host").is_err());
    }

    #[test]
    fn rows_stamp_both_ways_and_the_layout_is_the_seven_columns_loaded() {
        let v = values(1);
        assert_eq!(stamp(v.dt, true), "2026-12-01T00:00:00.007Z");
        assert_eq!(stamp(v.dt, false), "2026-12-01 00:00:00.007");
        let names: Vec<String> = columns().unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names.join(", "), COLUMNS);
    }
}
