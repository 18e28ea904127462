//! Exactly once under faults, counted: `sluice connect` killed with SIGKILL
//! mid-load and started again, then every database connection it holds
//! killed, must leave every event of the source in PostgreSQL, MariaDB and a
//! Redis stream exactly once (a Redis stream keeps repeats, so it counts
//! them); and two connect processes sharing one sink on a Kafka-protocol
//! broker (librdkafka's mock cluster, served on loopback by the test: tansu
//! 0.6 never expires a killed member's session, so its partitions would stay
//! with the dead member), one killed mid-load, must do the same.

use serde_json::json;
use sluice_log::{Log, LogOptions, NewRecord};
use sluice_tests::{
    MariaDatabase, PgDatabase, kill_redis_clients, metric, redis_db, start_connect, terminate,
    wait_until,
};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const STREAM: &str = "conn.load";
const TOPIC: &str = "local.conn.load";
const SCHEMA: &str = "/conn/load/1.0.0";

/// A schema repository with `conn/load` 1.0.0, and a stream config naming it.
fn deployment(root: &Path) -> (String, std::path::PathBuf) {
    let repo = root.join("repo");
    let dir = repo.join("jsonschema/conn/load");
    std::fs::create_dir_all(&dir).unwrap();
    let schema = json!({
        "title": "conn/load", "$id": SCHEMA, "$schema": "https://json-schema.org/draft-07/schema#",
        "type": "object", "required": ["$schema", "meta"],
        "properties": {
            "$schema": {"type": "string"},
            "meta": {"type": "object", "properties": {"id": {"type": "string"}, "stream": {"type": "string"},
                     "dt": {"type": "string", "format": "date-time"}}},
            "n": {"type": "integer"}, "note": {"type": "string"}}
    });
    std::fs::write(dir.join("1.0.0.yaml"), schema.to_string()).unwrap();
    let streams = root.join("streams.yaml");
    std::fs::write(
        &streams,
        format!("defaults:\n  topic_prefixes: [local.]\nstreams:\n  {STREAM}:\n    schema_title: conn/load\n"),
    )
    .unwrap();
    (format!("[{repo:?}]"), streams)
}

fn event(n: u64) -> Vec<u8> {
    json!({"$schema": SCHEMA, "meta": {"id": format!("e-{n:06}"), "stream": STREAM,
           "dt": "2026-11-27T12:00:00Z"}, "n": n, "note": format!("event {n}")})
    .to_string()
    .into_bytes()
}

/// Appends events `from..to` to the embedded log, synced.
fn append(log: &mut Log, from: u64, to: u64) {
    let headers: [(&str, &[u8]); 2] = [
        ("schema_uri", SCHEMA.as_bytes()),
        ("stream", STREAM.as_bytes()),
    ];
    for chunk in (from..to).collect::<Vec<_>>().chunks(1000) {
        let values: Vec<Vec<u8>> = chunk.iter().map(|&n| event(n)).collect();
        let records: Vec<NewRecord<'_>> = values
            .iter()
            .map(|v| NewRecord {
                timestamp_ms: 1_795_780_800_000,
                key: None,
                headers: &headers,
                value: v,
            })
            .collect();
        log.append(TOPIC, &records).unwrap();
    }
    log.sync().unwrap();
}

/// Every `n` in a Redis stream's entries, with repeats.
fn redis_stream_ns(redis: &mut redis::Connection, key: &str) -> Vec<u64> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(redis)
        .unwrap();
    entries
        .iter()
        .map(|(_, fields)| {
            let event = &fields.iter().find(|(k, _)| k == "event").unwrap().1;
            serde_json::from_str::<serde_json::Value>(event).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// `ns` holds every `n` below `events`, and `records` entries in all (a record the
/// source itself holds twice is one entry per record).
fn assert_exactly(ns: &[u64], events: u64, records: u64, what: &str) {
    let distinct: BTreeSet<u64> = ns.iter().copied().collect();
    assert_eq!(
        distinct.len() as u64,
        events,
        "{what}: {} distinct of {events}",
        distinct.len()
    );
    assert_eq!(
        ns.len() as u64,
        records,
        "{what}: {} entries for {records} records",
        ns.len()
    );
    assert_eq!(distinct.iter().next_back().copied(), Some(events - 1));
}

/// Waits until every store holds `events` events, then checks each holds each exactly once and
/// that every sink's positions sum to `records`, the number of records in the source.
fn every_event_once(
    pg: &PgDatabase,
    maria: &MariaDatabase,
    redis: &mut redis::Connection,
    events: u64,
    records: u64,
) {
    let total = events as i64;
    let counts = |redis: &mut redis::Connection| {
        (
            pg.count("SELECT count(*) FROM conn_load"),
            maria.count("SELECT count(*) FROM conn_load"),
            redis::cmd("XLEN")
                .arg("load")
                .query::<i64>(redis)
                .unwrap_or(0),
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (p, m, r) = counts(redis);
        if p == total && m == total && r >= records as i64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {total} events ({records} records) in every store: PostgreSQL {p}, MariaDB {m}, Redis {r}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(pg.count("SELECT count(DISTINCT n) FROM conn_load"), total);
    assert_eq!(
        maria.count("SELECT count(DISTINCT n) FROM conn_load"),
        total
    );
    assert_eq!(
        pg.count("SELECT sum(next_offset)::bigint FROM sluice_positions WHERE sink = 'pg'"),
        records as i64
    );
    assert_eq!(
        maria.count(
            "SELECT CAST(sum(next_offset) AS SIGNED) FROM sluice_positions WHERE sink = 'maria'"
        ),
        records as i64
    );
    let ns = redis_stream_ns(redis, "load");
    assert_exactly(&ns, events, records, "the Redis stream");
    assert_eq!(pg.count("SELECT count(*) FROM sluice_dead_letters"), 0);
    assert_eq!(maria.count("SELECT count(*) FROM sluice_dead_letters"), 0);
}

fn sinks(pg: &str, maria: &str, redis: &str, batch: usize) -> String {
    format!(
        "[[sink]]\nname = \"pg\"\nkind = \"postgres\"\nurl = {pg:?}\nstreams = [{STREAM:?}]\nbatch_size = {batch}\nflush_interval_ms = 100\n\
         [[sink]]\nname = \"maria\"\nkind = \"mysql\"\nurl = {maria:?}\nstreams = [{STREAM:?}]\nbatch_size = {batch}\nflush_interval_ms = 100\n\
         [[sink]]\nname = \"stream\"\nkind = \"redis\"\nurl = {redis:?}\nstreams = [{STREAM:?}]\nkey = \"load\"\nvalue = \"stream\"\nbatch_size = {batch}\nflush_interval_ms = 100\n"
    )
}

#[test]
fn connect_killed_mid_load_and_its_connections_killed_writes_every_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let (repos, streams) = deployment(dir.path());
    let pg = PgDatabase::create("faults");
    let maria = MariaDatabase::create("faults");
    let (redis_url, mut redis) = redis_db(12);
    let log_dir = dir.path().join("log");
    let mut log = Log::open(&log_dir, LogOptions::default()).unwrap();
    append(&mut log, 0, 20_000);
    let config = dir.path().join("connect.toml");
    std::fs::write(
        &config,
        format!(
            "streams = {streams:?}\nrepositories = {repos}\n[source]\nlog_dir = {log_dir:?}\n{}",
            sinks(&pg.url, &maria.url, &redis_url, 500)
        ),
    )
    .unwrap();
    let table = "SELECT count(*) FROM conn_load";

    let mut connect = start_connect(&config, &[]);
    wait_until("some rows are written", || pg.count(table) >= 3_000);
    connect.child.0.kill().unwrap();
    let _ = connect.child.0.wait();
    let at_kill = pg.count(table);
    assert!(
        at_kill < 20_000,
        "the load was over before the kill ({at_kill} rows)"
    );
    append(&mut log, 20_000, 30_000);

    let mut connect = start_connect(&config, &[]);
    wait_until("more rows are written", || pg.count(table) >= 12_000);
    // Every connection the connector holds dies, as when a server restarts or a network drops.
    let killed = pg.kill_sessions() + maria.kill_sessions() + kill_redis_clients(&mut redis, 12);
    assert!(killed >= 3, "only {killed} connections were killed");
    append(&mut log, 30_000, 40_000);

    every_event_once(&pg, &maria, &mut redis, 40_000, 40_000);
    assert!(terminate(&mut connect.child).success());
}

/// A producer of numbered events into the test topic, with the headers the aggregator writes.
struct Feed(rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>);

impl Feed {
    fn new(brokers: &str) -> Feed {
        Feed(
            rdkafka::config::ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("acks", "all")
                .create()
                .unwrap(),
        )
    }

    /// Events `from..to`, keyed by number, flushed.
    fn send(&self, from: u64, to: u64) {
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::{BaseRecord, Producer};
        for n in from..to {
            let value = event(n);
            let key = n.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "schema_uri",
                    value: Some(SCHEMA),
                })
                .insert(Header {
                    key: "stream",
                    value: Some(STREAM),
                });
            let mut record = BaseRecord::to(TOPIC)
                .key(&key)
                .payload(&value)
                .headers(headers);
            loop {
                match self.0.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        record = r;
                        self.0.poll(std::time::Duration::from_millis(10));
                    }
                }
            }
        }
        self.0.flush(std::time::Duration::from_secs(60)).unwrap();
    }
}

/// The records in every partition of the topic: the sum of its high watermarks.
fn records_in(brokers: &str, partitions: i32) -> u64 {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sluice-test-watermarks")
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(TOPIC, p, std::time::Duration::from_secs(10))
                .unwrap();
            assert_eq!(low, 0, "partition {p} starts at {low}");
            high as u64
        })
        .sum()
}

/// Two `sluice connect` processes run the same three sinks against `brokers`; one is killed
/// with SIGKILL mid-load. When the group expires its session, the survivor takes its
/// partitions, and every record of the topic is written exactly once.
fn two_processes_share_a_sink(brokers: &str, tag: &str, redis_db_no: u8) {
    let dir = tempfile::tempdir().unwrap();
    let (repos, streams) = deployment(dir.path());
    let pg = PgDatabase::create(tag);
    let maria = MariaDatabase::create(tag);
    let (redis_url, mut redis) = redis_db(redis_db_no);
    let config = dir.path().join("connect.toml");
    std::fs::write(
        &config,
        format!(
            "streams = {streams:?}\nrepositories = {repos}\n[source]\nbrokers = {brokers:?}\n\
             kafka = {{ \"session.timeout.ms\" = \"6000\", \"heartbeat.interval.ms\" = \"500\" }}\n{}",
            sinks(&pg.url, &maria.url, &redis_url, 300)
        ),
    )
    .unwrap();
    // Events keep coming, 500 every 100 ms, until 5,000 more have come after the kill.
    let killed = Arc::new(AtomicBool::new(false));
    let feed = {
        let (killed, brokers) = (killed.clone(), brokers.to_owned());
        std::thread::spawn(move || {
            let feed = Feed::new(&brokers);
            let (mut sent, mut after) = (0, 0);
            while after < 5_000 {
                feed.send(sent, sent + 500);
                sent += 500;
                if killed.load(Ordering::Relaxed) {
                    after += 500;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            sent
        })
    };
    let mut first = start_connect(&config, &[]);
    let mut second = start_connect(&config, &[]);
    // Both members hold partitions of every sink's group, and write them, before one dies.
    wait_until("both processes write every sink", || {
        ["pg", "maria", "stream"].iter().all(|sink| {
            [&first, &second].iter().all(|c| {
                metric(
                    c.metrics,
                    &format!(
                        "sluice_connect_rows_written_total{{sink=\"{sink}\",stream=\"{STREAM}\"}}"
                    ),
                ) > 0.0
            })
        })
    });
    second.child.0.kill().unwrap();
    let _ = second.child.0.wait();
    killed.store(true, Ordering::Relaxed);
    let events = feed.join().unwrap();
    let records = records_in(brokers, 4);
    every_event_once(&pg, &maria, &mut redis, events, records);
    assert!(terminate(&mut first.child).success());
}

#[test]
fn two_connect_processes_on_a_mock_kafka_cluster_one_killed_write_every_record_once() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;
    // librdkafka's mock cluster listens on loopback like a broker and runs the group protocol
    // with session timeouts, so the killed member's partitions move to the survivor.
    let cluster = MockCluster::<DefaultProducerContext>::new(1).unwrap();
    cluster.create_topic(TOPIC, 4, 1).unwrap();
    two_processes_share_a_sink(&cluster.bootstrap_servers(), "kmock", 13);
}
