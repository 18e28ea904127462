//! The lake: a `parquet` sink turns a stream into hourly-partitioned Parquet
//! files that DuckDB reads with nothing but `read_parquet`: events posted to
//! the edge land in their `meta.dt` hour with typed columns (timestamps,
//! nested structs, lists, maps); a complete hour's small files are compacted
//! and it is marked `_SUCCESS`, and a late event joins it in a file of its
//! own. The same sink writes an S3-compatible store (moto). Killed with
//! SIGKILL mid-file and started again, it leaves every event in the dataset
//! once and no partial file visible; stopped gracefully, it commits every
//! open file. A minor version widens the table (older files read null); a
//! type change stops the stream.

use serde_json::{Value, json};
use sluice_log::{Log, LogOptions, NewRecord};
use sluice_tests::{
    Edge, S3Server, Scratch, dataset, duckdb, duckdb_count, metric, post_events_created, signal,
    start_connect, start_connect_logging, terminate, wait_until,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const STREAM: &str = "lake.click";
const TOPIC: &str = "local.lake.click";
const TABLE: &str = "lake_click";

/// Version `version` of `lake/click`; `extra` adds properties.
fn write_schema(repo: &Path, version: &str, extra: Value) {
    let mut props = json!({
        "$schema": {"type": "string"},
        "dt": {"type": "string", "format": "date-time"},
        "meta": {"type": "object", "required": ["id", "dt", "stream"], "properties": {
            "id": {"type": "string"}, "dt": {"type": "string", "format": "date-time"},
            "stream": {"type": "string"}, "domain": {"type": "string"}, "request_id": {"type": "string"}}},
        "action": {"type": "string"},
        "n": {"type": "integer"},
        "page": {"type": "object", "properties": {"id": {"type": "integer"}, "title": {"type": "string"}}},
        "tags": {"type": "array", "items": {"type": "string"}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    });
    if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    let dir = repo.join("jsonschema/lake/click");
    std::fs::create_dir_all(&dir).unwrap();
    let doc = json!({
        "title": "lake/click", "$id": format!("/lake/click/{version}"),
        "$schema": "https://json-schema.org/draft-07/schema#", "type": "object",
        "required": ["$schema", "meta", "dt"], "properties": props,
    });
    std::fs::write(dir.join(format!("{version}.yaml")), doc.to_string()).unwrap();
}

/// Event `n` of hour `hour` on 2026-12-05.
fn click(n: u64, hour: u32, version: &str) -> Value {
    let dt = format!("2026-12-05T{hour:02}:{:02}:{:02}.250Z", n % 60, n % 59);
    json!({
        "$schema": format!("/lake/click/{version}"),
        "meta": {"stream": STREAM, "id": format!("c-{n:06}"), "dt": dt},
        "dt": dt,
        "action": if n.is_multiple_of(2) { "view" } else { "click" },
        "n": n,
        "page": {"id": n % 7, "title": format!("title {n}")},
        "tags": ["a", format!("t{n}")],
        "labels": {"k": format!("v{n}")},
    })
}

/// Milliseconds of 2026-12-05 at `hour`:00 UTC.
fn hour_ms(hour: u32) -> i64 {
    1_796_428_800_000 + i64::from(hour) * 3_600_000
}

fn hour_dir(lake: &Path, hour: u32) -> PathBuf {
    lake.join(TABLE)
        .join(format!("year=2026/month=12/day=5/hour={hour}"))
}

/// The Parquet files of an hour, by name.
fn parquet_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".parquet"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A `[[sink]]` of kind parquet.
fn lake_sink(url: &str, extra: &str) -> String {
    format!(
        "[[sink]]\nname = \"lake\"\nkind = \"parquet\"\nurl = {url:?}\nstreams = [{STREAM:?}]\nflush_interval_ms = 100\n{extra}\n"
    )
}

#[test]
fn a_stream_through_the_edge_lands_in_hourly_parquet_that_duckdb_reads() {
    let scratch = Scratch::with_streams(&format!(
        "defaults:\n  topic_prefixes: [local.]\nstreams:\n  {STREAM}:\n    schema_title: lake/click\n"
    ));
    let repo = scratch.root.join("repo");
    write_schema(&repo, "1.0.0", json!({}));
    let repos = format!("[{repo:?}]");
    let lake = scratch.root.join("lake");
    let config = scratch.root.join("connect.toml");
    std::fs::write(
        &config,
        format!(
            "streams = {:?}\nrepositories = {repos}\n[source]\nlog_dir = {:?}\n{}",
            scratch.streams,
            scratch.data.join("log"),
            lake_sink(
                &format!("file://{}", lake.display()),
                "max_file_age_secs = 1\nhour_grace_secs = 8\n"
            )
        ),
    )
    .unwrap();
    let mut aggregator = scratch.aggregator(
        "lake-token",
        &[("SLUICE_AGGREGATOR_REPOSITORIES", repos.as_ref())],
    );
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(&aggregator, &[]);
    let mut connect = start_connect(&config, &[]);
    let ds = dataset(&lake.join(TABLE));
    let count = || duckdb_count(&format!("SELECT count(*) FROM {ds}"));

    // Round 1: ten events of 10:00. The partition has not passed the hour, so it stays open.
    post_events_created(
        edge,
        &(0..10).map(|n| click(n, 10, "1.0.0")).collect::<Vec<_>>(),
    );
    wait_until("DuckDB reads 10 events", || count() == 10);
    assert_eq!(parquet_files(&hour_dir(&lake, 10)).len(), 1);
    assert!(!hour_dir(&lake, 10).join("_SUCCESS").exists());

    // Round 2: ten more of 10:00, twenty of 11:00, thirty of 12:00: hours 10 and 11 are passed.
    let mut events: Vec<Value> = (10..20).map(|n| click(n, 10, "1.0.0")).collect();
    events.extend((20..40).map(|n| click(n, 11, "1.0.0")));
    events.extend((40..70).map(|n| click(n, 12, "1.0.0")));
    post_events_created(edge, &events);
    wait_until("DuckDB reads 70 events", || count() == 70);
    wait_until("hours 10, 11 and 12 are marked _SUCCESS", || {
        [10, 11, 12]
            .iter()
            .all(|h| hour_dir(&lake, *h).join("_SUCCESS").exists())
    });
    // Hour 10's two files were compacted into one before it was marked.
    let files = parquet_files(&hour_dir(&lake, 10));
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("compacted-"), "{files:?}");
    assert_eq!(count(), 70);

    // A late event of 10:00 joins the marked hour in a file of its own.
    post_events_created(edge, &[click(70, 10, "1.0.0")]);
    wait_until("DuckDB reads 71 events", || count() == 71);
    assert_eq!(parquet_files(&hour_dir(&lake, 10)).len(), 2);
    assert!(hour_dir(&lake, 10).join("_SUCCESS").exists());

    // Hive partitions, a GROUP BY hour, typed columns.
    assert_eq!(
        duckdb(&format!(
            "SELECT year, month, day, hour, count(*) FROM {ds} GROUP BY ALL ORDER BY hour"
        )),
        vec![
            vec![json!(2026), json!(12), json!(5), json!(10), json!(21)],
            vec![json!(2026), json!(12), json!(5), json!(11), json!(20)],
            vec![json!(2026), json!(12), json!(5), json!(12), json!(30)],
        ]
    );
    let row = duckdb(&format!(
        "SELECT typeof(meta.dt), epoch_ms(meta.dt), typeof(dt), page.title, page.id, tags[2], \
         labels['k'], action, n, typeof(n), \"$schema\" FROM {ds} WHERE meta.id = 'c-000045'"
    ));
    assert_eq!(
        row,
        vec![vec![
            json!("TIMESTAMP WITH TIME ZONE"),
            json!(hour_ms(12) + 45 * 60_000 + 45 * 1000 + 250),
            json!("TIMESTAMP WITH TIME ZONE"),
            json!("title 45"),
            json!(3),
            json!("t45"),
            json!("v45"),
            json!("click"),
            json!(45),
            json!("BIGINT"),
            json!("/lake/click/1.0.0"),
        ]]
    );
    assert_eq!(
        duckdb_count(&format!("SELECT count(DISTINCT meta.id) FROM {ds}")),
        71
    );
    wait_until("the metric counts 71 rows", || {
        rows_written(connect.metrics) == 71.0
    });
    terminate(&mut connect.child);
    terminate(&mut edge_child);
    terminate(&mut aggregator.child);
}

/// Appends `events` (with their schema URI) to the log, synced; `raw` records go as they are.
fn append(log: &mut Log, events: &[Value], raw: &[&[u8]]) {
    let mut values: Vec<(String, Vec<u8>, i64)> = events
        .iter()
        .map(|e| {
            let uri = e["$schema"].as_str().unwrap().to_owned();
            let dt = e["meta"]["dt"].as_str().unwrap();
            let hour: i64 = dt[11..13].parse().unwrap();
            let (m, s): (i64, i64) = (dt[14..16].parse().unwrap(), dt[17..19].parse().unwrap());
            let ms = hour_ms(hour as u32) + m * 60_000 + s * 1000 + 250;
            (uri, e.to_string().into_bytes(), ms)
        })
        .collect();
    values.extend(
        raw.iter()
            .map(|r| ("/lake/click/1.0.0".to_owned(), r.to_vec(), hour_ms(9))),
    );
    let headers: Vec<[(&str, &[u8]); 2]> = values
        .iter()
        .map(|(uri, _, _)| {
            [
                ("schema_uri", uri.as_bytes()),
                ("stream", STREAM.as_bytes()),
            ]
        })
        .collect();
    let records: Vec<NewRecord<'_>> = values
        .iter()
        .zip(&headers)
        .map(|((_, v, ms), h)| NewRecord {
            timestamp_ms: *ms,
            key: None,
            headers: h,
            value: v,
        })
        .collect();
    log.append(TOPIC, &records).unwrap();
    log.sync().unwrap();
}

/// A scratch folder with `lake/click` 1.0.0, a stream config, a log and a connect config
/// whose one sink writes `url` with `extra` settings.
struct LogSetup {
    dir: tempfile::TempDir,
    repo: PathBuf,
    log_dir: PathBuf,
}

impl LogSetup {
    fn new() -> LogSetup {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        write_schema(&repo, "1.0.0", json!({}));
        std::fs::write(
            dir.path().join("streams.yaml"),
            format!("defaults:\n  topic_prefixes: [local.]\nstreams:\n  {STREAM}:\n    schema_title: lake/click\n"),
        )
        .unwrap();
        LogSetup {
            log_dir: dir.path().join("log"),
            repo,
            dir,
        }
    }

    fn lake(&self) -> PathBuf {
        self.dir.path().join("lake")
    }

    fn config(&self, url: &str, extra: &str) -> PathBuf {
        let path = self.dir.path().join("connect.toml");
        std::fs::write(
            &path,
            format!(
                "streams = {:?}\nrepositories = [{:?}]\n[source]\nlog_dir = {:?}\n{}",
                self.dir.path().join("streams.yaml"),
                self.repo,
                self.log_dir,
                lake_sink(url, extra)
            ),
        )
        .unwrap();
        path
    }

    fn log(&self) -> Log {
        Log::open(&self.log_dir, LogOptions::default()).unwrap()
    }
}

fn rows_written(metrics: std::net::SocketAddr) -> f64 {
    metric(
        metrics,
        &format!("sluice_connect_rows_written_total{{sink=\"lake\",stream=\"{STREAM}\"}}"),
    )
}

#[test]
fn the_same_sink_writes_an_s3_compatible_store() {
    let setup = LogSetup::new();
    let s3 = S3Server::start("lake");
    let config = setup.config(
        "s3://lake/events",
        &format!(
            "max_file_age_secs = 1\nhour_grace_secs = 1\n[sink.options]\naws_endpoint = {:?}\naws_allow_http = \"true\"\naws_region = \"us-east-1\"\naws_access_key_id = \"test\"\naws_secret_access_key = \"test\"\n",
            s3.endpoint
        ),
    );
    let mut log = setup.log();
    let events: Vec<Value> = (0..3000)
        .map(|n| click(n, if n < 1000 { 8 } else { 9 }, "1.0.0"))
        .collect();
    append(&mut log, &events, &[]);
    let mut connect = start_connect(&config, &[]);
    wait_until("the sink committed 3000 rows", || {
        rows_written(connect.metrics) == 3000.0
    });
    wait_until("hours 8 and 9 are marked", || {
        let keys = s3.keys();
        [8, 9].iter().all(|h| {
            keys.iter()
                .any(|k| k == &format!("events/{TABLE}/year=2026/month=12/day=5/hour={h}/_SUCCESS"))
        })
    });
    // Nothing half-written or staged is in a dataset; the sink's own files are under _sluice/.
    for k in s3.keys() {
        assert!(
            k.starts_with("events/_sluice/")
                || (k.starts_with(&format!("events/{TABLE}/year=2026/month=12/day=5/hour="))
                    && (k.ends_with(".zstd.parquet") || k.ends_with("/_SUCCESS"))),
            "unexpected key {k}"
        );
    }
    let local = setup.dir.path().join("fetched");
    s3.download(&format!("events/{TABLE}"), &local);
    let ds = dataset(&local);
    assert_eq!(
        duckdb(&format!(
            "SELECT hour, count(*), count(DISTINCT meta.id) FROM {ds} GROUP BY hour ORDER BY hour"
        )),
        vec![
            vec![json!(8), json!(1000), json!(1000)],
            vec![json!(9), json!(2000), json!(2000)]
        ]
    );
    terminate(&mut connect.child);
}

#[test]
fn killed_mid_file_and_restarted_the_sink_leaves_every_event_once_and_no_partial_file() {
    let setup = LogSetup::new();
    let lake = setup.lake();
    let config = setup.config(
        &format!("file://{}", lake.display()),
        "batch_size = 500\nmax_file_age_secs = 1\nhour_grace_secs = 1\n",
    );
    let mut log = setup.log();
    const TOTAL: u64 = 20_000;
    // Ten records the schema's types cannot take (n a string; not JSON) go to the dead letters.
    let bad_n: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            let mut e = click(900_000 + i, 9, "1.0.0");
            e["n"] = json!("many");
            e.to_string().into_bytes()
        })
        .collect();
    let mut raw: Vec<&[u8]> = bad_n.iter().map(Vec::as_slice).collect();
    raw.extend([&b"not json"[..]; 5]);
    append(
        &mut log,
        &(0..1000).map(|n| click(n, 8, "1.0.0")).collect::<Vec<_>>(),
        &raw,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 1000;
            while n < TOTAL {
                let to = (n + 500).min(TOTAL);
                let batch: Vec<Value> = (n..to)
                    .map(|i| click(i, 8 + (i / 5000) as u32, "1.0.0"))
                    .collect();
                append(&mut log, &batch, &[]);
                n = to;
                if !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(60));
                }
            }
        })
    };
    let ds = dataset(&lake.join(TABLE));
    let mut connect = start_connect(&config, &[]);
    wait_until(
        "some files are committed while more are being written",
        || {
            let n = rows_written(connect.metrics);
            n >= 2000.0
        },
    );
    signal(connect.child.0.id(), "KILL");
    let _ = connect.child.0.wait();
    let seen = duckdb_count(&format!("SELECT count(*) FROM {ds}"));
    assert!(
        seen > 0 && seen < TOTAL as i64,
        "killed with {seen} rows visible"
    );
    stop.store(true, Ordering::Relaxed);
    let mut connect = start_connect(&config, &[]);
    feeder.join().unwrap();
    wait_until("DuckDB reads every event", || {
        duckdb_count(&format!("SELECT count(*) FROM {ds}")) == TOTAL as i64
    });
    assert_eq!(
        duckdb_count(&format!("SELECT count(DISTINCT meta.id) FROM {ds}")),
        TOTAL as i64
    );
    assert_eq!(
        duckdb(&format!(
            "SELECT hour, count(*) FROM {ds} GROUP BY hour ORDER BY hour"
        )),
        vec![
            vec![json!(8), json!(5000)],
            vec![json!(9), json!(5000)],
            vec![json!(10), json!(5000)],
            vec![json!(11), json!(5000)]
        ]
    );
    // Every visible file is whole (DuckDB read each); nothing but Parquet and markers is in the hours.
    for entry in walk(&lake.join(TABLE)) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".zstd.parquet") || name == "_SUCCESS",
            "{}",
            entry.display()
        );
    }
    let dead = dataset(&lake.join("sluice_dead_letters"));
    wait_until("ten dead letters are readable", || {
        duckdb_count(&format!("SELECT count(*) FROM {dead}")) == 10
    });
    let reasons = duckdb(&format!(
        "SELECT count(*) FILTER (reason LIKE '%not a JSON event%'), count(*) FILTER (reason LIKE '%does not fit table%') FROM {dead}"
    ));
    assert_eq!(reasons, vec![vec![json!(5), json!(5)]]);
    terminate(&mut connect.child);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_minor_version_widens_the_table_a_type_change_stops_it_and_a_graceful_stop_commits() {
    let setup = LogSetup::new();
    let lake = setup.lake();
    // Files are committed only by size, age (an hour: never here) or a stop.
    let config = setup.config(
        &format!("file://{}", lake.display()),
        "max_file_age_secs = 3600\nhour_grace_secs = 3600\n",
    );
    let mut log = setup.log();
    append(
        &mut log,
        &(0..100).map(|n| click(n, 8, "1.0.0")).collect::<Vec<_>>(),
        &[],
    );
    let log_file = setup.dir.path().join("connect.log");
    let mut connect =
        start_connect_logging(&config, &[], std::fs::File::create(&log_file).unwrap());
    // 1.1.0 adds an optional field; its events widen the table.
    write_schema(&setup.repo, "1.1.0", json!({"score": {"type": "number"}}));
    let newer: Vec<Value> = (100..150)
        .map(|n| {
            let mut e = click(n, 8, "1.1.0");
            e["score"] = json!(n as f64 + 0.5);
            e
        })
        .collect();
    append(&mut log, &newer, &[]);
    // The table's schema takes `score` when the first 1.1.0 event is laid out, after every
    // 1.0.0 event was read: all 150 are in the sink's open files from then on.
    let table_schema = lake.join(format!("_sluice/lake/tables/{TABLE}.json"));
    wait_until("the table's schema has score", || {
        std::fs::read_to_string(&table_schema).is_ok_and(|t| t.contains("\"score\""))
    });
    assert_eq!(rows_written(connect.metrics), 0.0);
    assert_eq!(parquet_files(&hour_dir(&lake, 8)).len(), 0);
    // SIGTERM: the open files are committed before the process ends.
    terminate(&mut connect.child);
    let ds = dataset(&lake.join(TABLE));
    assert_eq!(
        duckdb(&format!(
            "SELECT count(*), count(score), sum(score) FILTER (n = 120) FROM {ds}"
        )),
        vec![vec![json!(150), json!(50), json!(120.5)]]
    );
    // 2.0.0 makes `n` a string: the stream stops with an error naming the field.
    write_schema(&setup.repo, "2.0.0", json!({"n": {"type": "string"}}));
    let mut connect = start_connect_logging(
        &config,
        &[],
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log_file)
            .unwrap(),
    );
    let changed: Vec<Value> = (150..160)
        .map(|n| {
            let mut e = click(n, 8, "2.0.0");
            e["n"] = json!(format!("n{n}"));
            e
        })
        .collect();
    append(&mut log, &changed, &[]);
    let stopped = format!("sluice_connect_stream_stopped{{sink=\"lake\",stream=\"{STREAM}\"}}");
    wait_until("the stream is stopped", || {
        metric(connect.metrics, &stopped) == 1.0
    });
    terminate(&mut connect.child);
    let text = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        text.contains("field `n` changes type from Int64") && text.contains("/lake/click/2.0.0"),
        "{text}"
    );
    assert_eq!(duckdb_count(&format!("SELECT count(*) FROM {ds}")), 150);
}
