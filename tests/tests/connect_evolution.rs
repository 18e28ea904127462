//! A schema change a table cannot take stops that stream only: a new
//! version that turns a field's type from integer to string leaves the
//! stream's later events unwritten (its position stays at the first of them,
//! the stopped metric is 1, and the error names the field, both types and
//! what to do), while another stream of the same sink keeps flowing into
//! PostgreSQL and MariaDB. An event the log holds twice (an aggregator wrote
//! it again) is one row. Streams a `/regex/` entry of the stream config gives
//! to the sink are taken as their topics appear, in the embedded log and on
//! Kafka (librdkafka's mock cluster).

use serde_json::json;
use sluice_log::{Log, LogOptions, NewRecord};
use sluice_tests::{
    MariaDatabase, PgDatabase, metric, start_connect_logging, terminate, wait_until,
};
use std::path::{Path, PathBuf};

/// Writes version `version` of schema `title` with field `n` of type `n_type`.
fn schema(repo: &Path, title: &str, version: &str, n_type: &str) {
    let dir = repo.join("jsonschema").join(title);
    std::fs::create_dir_all(&dir).unwrap();
    let doc = json!({
        "title": title, "$id": format!("/{title}/{version}"),
        "$schema": "https://json-schema.org/draft-07/schema#", "type": "object",
        "properties": {
            "meta": {"type": "object", "properties": {"id": {"type": "string"}}},
            "n": {"type": n_type}}
    });
    std::fs::write(dir.join(format!("{version}.yaml")), doc.to_string()).unwrap();
}

/// Appends events `from..to` of `stream` (schema `uri`, `n` as given by `n`), synced.
fn append(
    log: &mut Log,
    stream: &str,
    uri: &str,
    from: u64,
    to: u64,
    n: fn(u64) -> serde_json::Value,
) {
    let topic = format!("local.{stream}");
    let headers: [(&str, &[u8]); 2] = [
        ("schema_uri", uri.as_bytes()),
        ("stream", stream.as_bytes()),
    ];
    let values: Vec<Vec<u8>> = (from..to)
        .map(|i| {
            json!({"meta": {"id": format!("{stream}-{i}")}, "n": n(i)})
                .to_string()
                .into_bytes()
        })
        .collect();
    let records: Vec<NewRecord<'_>> = values
        .iter()
        .map(|v| NewRecord {
            timestamp_ms: 1_796_083_200_000,
            key: None,
            headers: &headers,
            value: v,
        })
        .collect();
    log.append(&topic, &records).unwrap();
    log.sync().unwrap();
}

/// A scratch folder with a schema repository (each of `titles` at 1.0.0, `n` an integer),
/// the stream config `streams` (topic prefix `local.`) and a log folder.
struct Setup {
    dir: tempfile::TempDir,
    repo: PathBuf,
    streams: PathBuf,
    log_dir: PathBuf,
}

impl Setup {
    fn new(streams: &str, titles: &[&str]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        for title in titles {
            schema(&repo, title, "1.0.0", "integer");
        }
        let path = dir.path().join("streams.yaml");
        std::fs::write(
            &path,
            format!("defaults:\n  topic_prefixes: [local.]\nstreams:\n{streams}"),
        )
        .unwrap();
        Setup {
            log_dir: dir.path().join("log"),
            repo,
            streams: path,
            dir,
        }
    }

    /// A connect config: `source` (the embedded log when empty), then `sinks`.
    fn config(&self, source: &str, sinks: &[String]) -> PathBuf {
        let source = if source.is_empty() {
            format!("log_dir = {:?}", self.log_dir)
        } else {
            source.to_owned()
        };
        let path = self.dir.path().join("connect.toml");
        std::fs::write(
            &path,
            format!(
                "streams = {:?}\nrepositories = [{:?}]\n[source]\n{source}\n{}",
                self.streams,
                self.repo,
                sinks.concat()
            ),
        )
        .unwrap();
        path
    }
}

/// A `[[sink]]` table flushing every 100 ms.
fn sink(name: &str, kind: &str, url: &str, streams: &[&str]) -> String {
    format!(
        "[[sink]]\nname = {name:?}\nkind = {kind:?}\nurl = {url:?}\nstreams = {streams:?}\nflush_interval_ms = 100\n"
    )
}

#[test]
fn a_type_change_stops_its_stream_only_and_says_what_to_do() {
    let setup = Setup::new(
        "  evo.kept:\n    schema_title: evo/kept\n  evo.other:\n    schema_title: evo/other\n",
        &["evo/kept", "evo/other"],
    );
    let pg = PgDatabase::create("evo");
    let maria = MariaDatabase::create("evo");
    let mut log = Log::open(&setup.log_dir, LogOptions::default()).unwrap();
    let int = |i: u64| json!(i);
    let text = |i: u64| json!(format!("n{i}"));
    append(&mut log, "evo.kept", "/evo/kept/1.0.0", 0, 10, int);
    append(&mut log, "evo.other", "/evo/other/1.0.0", 0, 10, int);
    let both_streams = ["evo.kept", "evo.other"];
    let config = setup.config(
        "",
        &[
            sink("pg", "postgres", &pg.url, &both_streams),
            sink("maria", "mysql", &maria.url, &both_streams),
        ],
    );
    let log_file = setup.dir.path().join("connect.log");
    let mut connect =
        start_connect_logging(&config, &[], std::fs::File::create(&log_file).unwrap());
    let both = |db: &dyn Fn(&str) -> i64, kept: i64, other: i64| {
        db("SELECT count(*) FROM evo_kept") == kept && db("SELECT count(*) FROM evo_other") == other
    };
    let pg_count = |sql: &str| pg.count(sql);
    let maria_count = |sql: &str| maria.count(sql);
    wait_until("both streams are written", || {
        both(&pg_count, 10, 10) && both(&maria_count, 10, 10)
    });

    // evo/other 1.1.0 makes `n` a string: that stream stops; evo.kept flows on.
    schema(&setup.repo, "evo/other", "1.1.0", "string");
    append(&mut log, "evo.other", "/evo/other/1.1.0", 10, 15, text);
    append(&mut log, "evo.kept", "/evo/kept/1.0.0", 10, 30, int);
    wait_until("evo.other is stopped in both sinks", || {
        ["pg", "maria"].iter().all(|sink| {
            metric(
                connect.metrics,
                &format!("sluice_connect_stream_stopped{{sink=\"{sink}\",stream=\"evo.other\"}}"),
            ) == 1.0
        })
    });
    // Events of the stopped stream appended later are not written either.
    append(&mut log, "evo.other", "/evo/other/1.0.0", 15, 20, int);
    append(&mut log, "evo.kept", "/evo/kept/1.0.0", 30, 40, int);
    wait_until("evo.kept has every event in both stores", || {
        both(&pg_count, 40, 10) && both(&maria_count, 40, 10)
    });
    assert_eq!(
        pg.count("SELECT next_offset FROM sluice_positions WHERE sink = 'pg' AND source_topic = 'local.evo.other'"),
        10
    );
    assert_eq!(
        maria.count("SELECT next_offset FROM sluice_positions WHERE sink = 'maria' AND source_topic = 'local.evo.other'"),
        10
    );
    assert_eq!(pg.count("SELECT count(*) FROM sluice_dead_letters"), 0);
    for sink in ["pg", "maria"] {
        assert_eq!(
            metric(
                connect.metrics,
                &format!("sluice_connect_stream_stopped{{sink=\"{sink}\",stream=\"evo.kept\"}}"),
            ),
            0.0
        );
    }
    assert!(terminate(&mut connect.child).success());
    let logged = std::fs::read_to_string(&log_file).unwrap();
    let line = logged
        .lines()
        .find(|l| l.contains("A stream is stopped") && l.contains("evo_other"))
        .unwrap_or_else(|| panic!("no stop line in:\n{logged}"));
    for part in [
        "field `n`",
        "from integer",
        "to string",
        "/evo/other/1.1.0",
        "migrate the column by hand",
    ] {
        assert!(line.contains(part), "`{part}` is not in: {line}");
    }
}

#[test]
fn an_event_the_log_holds_twice_is_one_row() {
    let setup = Setup::new(
        "  evo.twice:\n    schema_title: evo/twice\n",
        &["evo/twice"],
    );
    let pg = PgDatabase::create("twice");
    let maria = MariaDatabase::create("twice");
    let mut log = Log::open(&setup.log_dir, LogOptions::default()).unwrap();
    let int = |i: u64| json!(i);
    // 0..100, then 50..150: 50 repeats of rows already written.
    append(&mut log, "evo.twice", "/evo/twice/1.0.0", 0, 100, int);
    let config = setup.config(
        "",
        &[
            sink("pg", "postgres", &pg.url, &["evo.twice"]),
            sink("maria", "mysql", &maria.url, &["evo.twice"]),
        ],
    );
    let mut connect = start_connect_logging(&config, &[], std::process::Stdio::inherit());
    let at = |sql: &str, db: &dyn Fn(&str) -> i64| db(sql);
    let pg_count = |sql: &str| pg.count(sql);
    let maria_count = |sql: &str| maria.count(sql);
    let position =
        "SELECT next_offset FROM sluice_positions WHERE source_topic = 'local.evo.twice'";
    wait_until("the first 100 are written", || {
        at(position, &pg_count) == 100 && at(position, &maria_count) == 100
    });
    append(&mut log, "evo.twice", "/evo/twice/1.0.0", 50, 150, int);
    wait_until("the repeats are read", || {
        at(position, &pg_count) == 200 && at(position, &maria_count) == 200
    });
    for db in [&pg_count as &dyn Fn(&str) -> i64, &maria_count] {
        assert_eq!(db("SELECT count(*) FROM evo_twice"), 150);
        assert_eq!(db("SELECT count(DISTINCT n) FROM evo_twice"), 150);
        assert_eq!(db("SELECT count(*) FROM sluice_dead_letters"), 0);
    }
    // Repeats are not counted as rows (the metric follows the commit by a moment).
    for sink in ["pg", "maria"] {
        wait_until(&format!("{sink} counts 150 rows"), || {
            metric(
                connect.metrics,
                &format!(
                    "sluice_connect_rows_written_total{{sink=\"{sink}\",stream=\"evo.twice\"}}"
                ),
            ) == 150.0
        });
    }
    assert!(terminate(&mut connect.child).success());
}

#[test]
fn streams_a_pattern_enables_are_taken_as_their_topics_appear() {
    let setup = Setup::new(
        "  evo.pat.kept:\n    schema_title: evo/pat\n  \
         /^evo\\.pat\\..+$/:\n    schema_title: evo/pat\n    consumers:\n      pg: {enabled: true}\n",
        &["evo/pat"],
    );
    let pg = PgDatabase::create("pattern");
    let mut log = Log::open(&setup.log_dir, LogOptions::default()).unwrap();
    let int = |i: u64| json!(i);
    append(&mut log, "evo.pat.a", "/evo/pat/1.0.0", 0, 10, int);
    // Configured by exact name without the sink as a consumer: not taken.
    append(&mut log, "evo.pat.kept", "/evo/pat/1.0.0", 0, 5, int);
    let config = setup.config("", &[sink("pg", "postgres", &pg.url, &[])]);
    let mut connect = start_connect_logging(&config, &[], std::process::Stdio::inherit());
    wait_until("the first stream's 10 rows are written", || {
        pg.count("SELECT count(*) FROM evo_pat_a") == 10
    });
    // A stream that appears later, while the first goes on.
    append(&mut log, "evo.pat.b", "/evo/pat/1.0.0", 0, 7, int);
    append(&mut log, "evo.pat.a", "/evo/pat/1.0.0", 10, 20, int);
    wait_until(
        "the new stream's 7 rows and the first's 20 are written",
        || {
            pg.count("SELECT count(*) FROM evo_pat_b") == 7
                && pg.count("SELECT count(*) FROM evo_pat_a") == 20
        },
    );
    assert_eq!(
        pg.count(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'evo_pat_kept'"
        ),
        0
    );
    assert_eq!(
        pg.count("SELECT sum(next_offset)::bigint FROM sluice_positions WHERE sink = 'pg'"),
        27
    );
    // The metric counts a batch once the sink hears back from its writer, just after the commit.
    wait_until("the metric counts the new stream's 7 rows", || {
        metric(
            connect.metrics,
            "sluice_connect_rows_written_total{sink=\"pg\",stream=\"evo.pat.b\"}",
        ) == 7.0
    });
    assert!(terminate(&mut connect.child).success());
}

/// Sends events `from..to` of `stream` (prefix `local.`) to Kafka at `brokers`.
fn produce(brokers: &str, stream: &str, from: u64, to: u64) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let topic = format!("local.{stream}");
    for i in from..to {
        let value = json!({"meta": {"id": format!("{stream}-{i}")}, "n": i}).to_string();
        let headers = OwnedHeaders::new().insert(Header {
            key: "schema_uri",
            value: Some("/evo/pat/1.0.0"),
        });
        producer
            .send(
                BaseRecord::<(), _>::to(&topic)
                    .payload(&value)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(std::time::Duration::from_secs(30)).unwrap();
}

#[test]
fn on_kafka_a_pattern_subscribes_to_the_topics_it_matches_as_they_appear() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;
    let cluster = MockCluster::<DefaultProducerContext>::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("local.evo.pat.a", 2, 1).unwrap();
    cluster.create_topic("local.evo.other", 1, 1).unwrap();
    let setup = Setup::new(
        "  evo.other:\n    schema_title: evo/pat\n  \
         /^evo\\.pat\\..+$/:\n    schema_title: evo/pat\n    consumers:\n      pg: {enabled: true}\n",
        &["evo/pat"],
    );
    let pg = PgDatabase::create("kpattern");
    produce(&brokers, "evo.pat.a", 0, 10);
    produce(&brokers, "evo.other", 0, 5);
    let config = setup.config(
        &format!(
            "brokers = {brokers:?}\nkafka = {{ \"topic.metadata.refresh.interval.ms\" = \"1000\", \
             \"session.timeout.ms\" = \"6000\", \"heartbeat.interval.ms\" = \"500\" }}"
        ),
        &[sink("pg", "postgres", &pg.url, &[])],
    );
    let mut connect = start_connect_logging(&config, &[], std::process::Stdio::inherit());
    wait_until("the first stream's 10 rows are written", || {
        pg.count("SELECT count(*) FROM evo_pat_a") == 10
    });
    cluster.create_topic("local.evo.pat.b", 1, 1).unwrap();
    produce(&brokers, "evo.pat.b", 0, 7);
    wait_until("the new topic's 7 rows are written", || {
        pg.count("SELECT count(*) FROM evo_pat_b") == 7
    });
    assert_eq!(
        pg.count("SELECT count(*) FROM information_schema.tables WHERE table_name = 'evo_other'"),
        0
    );
    assert_eq!(
        pg.count("SELECT sum(next_offset)::bigint FROM sluice_positions WHERE sink = 'pg'"),
        17
    );
    assert!(terminate(&mut connect.child).success());
}
