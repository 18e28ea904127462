//! Events posted to a native edge reach PostgreSQL, MariaDB and Redis
//! through `sluice connect` reading the aggregator's embedded log: typed
//! columns laid out from the schema, a new minor version's field added as a
//! column before its first event is written, and rows the store refuses in
//! the dead letters with the store's reason while their neighbours are written.

use serde_json::{Value, json};
use sluice_tests::{
    Edge, MariaDatabase, PgDatabase, Scratch, http_get, metric, post_events_created, redis_db,
    signal, start_connect, terminate, wait_until,
};
use std::path::Path;

const TOKEN: &str = "connect-stores-token";
const STREAM: &str = "conn.widget";
/// Redis database number of this test.
const REDIS_DB: u8 = 11;

/// Version `minor` of the test schema `conn/widget`; 1.1 adds `score`.
fn widget_schema(minor: u32) -> Value {
    let mut props = json!({
        "$schema": {"type": "string"},
        "dt": {"type": "string", "format": "date-time"},
        "meta": {"type": "object", "required": ["id", "dt", "stream"], "properties": {
            "id": {"type": "string"}, "dt": {"type": "string", "format": "date-time"},
            "stream": {"type": "string"}, "domain": {"type": "string"}, "request_id": {"type": "string"}}},
        "count": {"type": "integer"},
        "ratio": {"type": "number"},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "performer": {"type": "object", "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}}},
    });
    if minor >= 1 {
        props["score"] = json!({"type": "number"});
    }
    json!({
        "title": "conn/widget",
        "$id": format!("/conn/widget/1.{minor}.0"),
        "$schema": "https://json-schema.org/draft-07/schema#",
        "type": "object",
        "required": ["$schema", "meta", "dt"],
        "properties": props,
    })
}

fn write_schema(repo: &Path, minor: u32) {
    let dir = repo.join("jsonschema/conn/widget");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("1.{minor}.0.yaml")),
        serde_json::to_string_pretty(&widget_schema(minor)).unwrap(),
    )
    .unwrap();
}

fn widget(n: u64, minor: u32) -> Value {
    let mut e = json!({
        "$schema": format!("/conn/widget/1.{minor}.0"),
        "meta": {"stream": STREAM, "id": format!("w-{n}")},
        "dt": "2026-11-27T12:00:00.250+01:00",
        "count": n,
        "ratio": n as f64 / 4.0,
        "ok": n.is_multiple_of(2),
        "tags": ["a", format!("t{n}")],
        "labels": {"k": format!("v{n}")},
        "performer": {"id": n % 5, "name": format!("p{n}")},
    });
    if minor >= 1 {
        e["score"] = json!(n as f64 + 0.5);
    }
    e
}

#[test]
fn events_through_the_edge_become_typed_rows_new_columns_and_dead_letters() {
    let pg = PgDatabase::create("stores");
    let maria = MariaDatabase::create("stores");
    let (redis_url, mut redis) = redis_db(REDIS_DB);
    let scratch = Scratch::with_streams(&format!(
        "defaults:\n  topic_prefixes: [local.]\nstreams:\n  {STREAM}:\n    schema_title: conn/widget\n    consumers:\n      reporting: {{enabled: true}}\n"
    ));
    let repo = scratch.root.join("repo");
    write_schema(&repo, 0);
    let repos = format!("[{:?}]", repo);
    let config = scratch.root.join("connect.toml");
    std::fs::write(
        &config,
        format!(
            "streams = {streams:?}\nrepositories = {repos}\n[source]\nlog_dir = {log:?}\n\
             [[sink]]\nname = \"warehouse\"\nkind = \"postgres\"\nurl = {pg:?}\nstreams = [{STREAM:?}]\nflush_interval_ms = 200\n\
             [[sink]]\nname = \"reporting\"\nkind = \"mysql\"\nurl = {maria:?}\nflush_interval_ms = 200\n\
             [[sink]]\nname = \"state\"\nkind = \"redis\"\nurl = {redis_url:?}\nstreams = [{STREAM:?}]\nkey = \"widget:{{performer.id}}\"\nflush_interval_ms = 200\n\
             [[sink]]\nname = \"feed\"\nkind = \"redis\"\nurl = {redis_url:?}\nstreams = [{STREAM:?}]\nkey = \"feed:{{performer.id}}\"\nvalue = \"stream\"\nflush_interval_ms = 200\n",
            streams = scratch.streams,
            log = scratch.data.join("log"),
            pg = pg.url,
            maria = maria.url,
        ),
    )
    .unwrap();
    let mut aggregator =
        scratch.aggregator(TOKEN, &[("SLUICE_AGGREGATOR_REPOSITORIES", repos.as_ref())]);
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(&aggregator, &[]);
    // A key the feed's streams would use already holds a string: XADD to it would fail.
    redis::cmd("SET")
        .arg("feed:3")
        .arg("not a stream")
        .exec(&mut redis)
        .unwrap();
    let mut connect = start_connect(&config, &[]);

    // 20 plain events; one PostgreSQL refuses (a NUL in a string), one MariaDB refuses
    // (a meta.id longer than its key column), one Redis cannot key (no performer).
    let mut events: Vec<Value> = (0..20).map(|n| widget(n, 0)).collect();
    let mut nul = widget(100, 0);
    nul["performer"] = json!({"id": 100, "name": "a\u{0}b"});
    let mut long_id = widget(101, 0);
    long_id["meta"]["id"] = json!("x".repeat(300));
    long_id["performer"]["id"] = json!(101);
    let mut anonymous = widget(102, 0);
    anonymous.as_object_mut().unwrap().remove("performer");
    events.extend([nul, long_id, anonymous]);
    post_events_created(edge, &events);

    let table = "conn_widget";
    wait_until("PostgreSQL has 22 rows and 1 dead letter", || {
        pg.count(&format!("SELECT count(*) FROM {table}")) == 22
            && pg.count("SELECT count(*) FROM sluice_dead_letters") == 1
    });
    wait_until("MariaDB has 22 rows and 1 dead letter", || {
        maria.count(&format!("SELECT count(*) FROM {table}")) == 22
            && maria.count("SELECT count(*) FROM sluice_dead_letters") == 1
    });
    let keys = |redis: &mut redis::Connection| -> Vec<String> {
        let mut k: Vec<String> = redis::cmd("KEYS").arg("widget:*").query(redis).unwrap();
        k.sort();
        k
    };
    wait_until("Redis has 7 keys and 1 dead letter", || {
        keys(&mut redis).len() == 7
            && redis::cmd("XLEN")
                .arg("sluice:state:dead_letters")
                .query::<i64>(&mut redis)
                .unwrap_or(0)
                == 1
    });

    // PostgreSQL: the columns and their types, from the schema.
    let mut c = pg.client();
    let cols: Vec<(String, String)> = c
        .query(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want: Vec<(String, String)> = [
        ("meta_id", "text"),
        ("_schema", "text"),
        ("count", "bigint"),
        ("dt", "timestamp with time zone"),
        ("labels", "jsonb"),
        ("meta_domain", "text"),
        ("meta_dt", "timestamp with time zone"),
        ("meta_request_id", "text"),
        ("meta_stream", "text"),
        ("ok", "boolean"),
        ("performer_id", "bigint"),
        ("performer_name", "text"),
        ("ratio", "double precision"),
        ("tags", "jsonb"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(cols, want);
    let row = c
        .query_one(
            "SELECT count, ratio, ok, tags::text, labels->>'k', performer_id, performer_name, \
             extract(epoch from dt)::float8, meta_stream FROM conn_widget WHERE meta_id = 'w-6'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 6);
    assert_eq!(row.get::<_, f64>(1), 1.5);
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, String>(3), r#"["a", "t6"]"#);
    assert_eq!(row.get::<_, String>(4), "v6");
    assert_eq!(row.get::<_, i64>(5), 1);
    assert_eq!(row.get::<_, String>(6), "p6");
    // 2026-11-27T12:00:00.250+01:00 is 11:00:00.25 UTC: 1795777200.25.
    assert_eq!(row.get::<_, f64>(7), 1_795_777_200.25);
    assert_eq!(row.get::<_, String>(8), STREAM);
    let dead = c
        .query_one("SELECT stream, reason, event FROM sluice_dead_letters", &[])
        .unwrap();
    assert_eq!(dead.get::<_, String>(0), STREAM);
    assert!(
        dead.get::<_, String>(1).contains("0x00"),
        "{}",
        dead.get::<_, String>(1)
    );
    assert!(dead.get::<_, String>(2).contains("\"w-100\""));

    // MariaDB: the same rows; the long id is its dead letter, with MariaDB's reason.
    {
        use mysql::prelude::Queryable;
        let mut m = maria.conn();
        let got: Option<(i64, f64, bool, String, String)> = m
            .query_first("SELECT count, ratio, ok, performer_name, DATE_FORMAT(dt, '%Y-%m-%d %H:%i:%s.%f') FROM conn_widget WHERE meta_id = 'w-6'")
            .unwrap();
        assert_eq!(
            got,
            Some((
                6,
                1.5,
                true,
                "p6".into(),
                "2026-11-27 11:00:00.250000".into()
            ))
        );
        let reason: Option<String> = m
            .query_first("SELECT reason FROM sluice_dead_letters")
            .unwrap();
        let reason = reason.unwrap();
        assert!(reason.contains("meta_id"), "{reason}");
        assert_eq!(
            maria.count("SELECT count(*) FROM conn_widget WHERE performer_id = 100"),
            1
        );
    }

    // Redis: a hash per performer, the latest event's fields; the keyless event is a dead letter.
    let mut want_keys: Vec<String> = (0..5)
        .chain([100, 101])
        .map(|i| format!("widget:{i}"))
        .collect();
    want_keys.sort();
    assert_eq!(keys(&mut redis), want_keys);
    let name: String = redis::cmd("HGET")
        .arg("widget:1")
        .arg("performer_name")
        .query(&mut redis)
        .unwrap();
    assert_eq!(name, "p16");
    let reason: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("sluice:state:dead_letters")
        .arg("-")
        .arg("+")
        .query(&mut redis)
        .unwrap();
    assert!(
        reason[0]
            .1
            .iter()
            .any(|(k, v)| k == "reason" && v.contains("`performer.id`"))
    );

    // Redis streams per performer: the events of performer 3 (whose key holds a string) and
    // the keyless event are dead letters, with the reason; every other event is an entry.
    let feed_dead = |redis: &mut redis::Connection| {
        redis::cmd("XRANGE")
            .arg("sluice:feed:dead_letters")
            .arg("-")
            .arg("+")
            .query::<Vec<(String, Vec<(String, String)>)>>(redis)
            .unwrap_or_default()
    };
    wait_until("the feed has 5 dead letters", || {
        feed_dead(&mut redis).len() == 5
    });
    let mut entries = 0;
    for id in [0, 1, 2, 4, 100, 101] {
        entries += redis::cmd("XLEN")
            .arg(format!("feed:{id}"))
            .query::<i64>(&mut redis)
            .unwrap();
    }
    assert_eq!(entries, 18);
    let reasons: Vec<String> = feed_dead(&mut redis)
        .into_iter()
        .map(|(_, fields)| {
            fields
                .into_iter()
                .find(|(k, _)| k == "reason")
                .map(|(_, v)| v)
                .unwrap()
        })
        .collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("key `feed:3` holds a string, not a stream"))
            .count(),
        4,
        "{reasons:?}"
    );
    let value: String = redis::cmd("GET").arg("feed:3").query(&mut redis).unwrap();
    assert_eq!(value, "not a stream");

    // A new minor version adds `score`: the column comes before the first event that has it.
    write_schema(&repo, 1);
    signal(aggregator.child.0.id(), "HUP");
    wait_until("the aggregator serves 1.1.0", || {
        let name = repo.file_name().unwrap().to_string_lossy().into_owned();
        http_get(
            aggregator.http,
            &format!("/repositories/{name}/jsonschema/conn/widget/1.1.0.yaml"),
        )
        .is_ok_and(|(s, _)| s == 200)
    });
    assert!(terminate(&mut edge_child).success());
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(&aggregator, &[]);
    post_events_created(edge, &(200..203).map(|n| widget(n, 1)).collect::<Vec<_>>());
    wait_until("PostgreSQL has the 3 new rows with their score", || {
        pg.count(&format!("SELECT count(score)::bigint FROM {table}")) == 3
    });
    assert_eq!(
        pg.count(&format!("SELECT count(*) FROM {table} WHERE score IS NULL")),
        22
    );
    assert_eq!(
        pg.count(&format!("SELECT count(*) FROM {table} WHERE score = 200.5")),
        1
    );
    wait_until("MariaDB has the 3 new rows with their score", || {
        maria.count(&format!("SELECT count(score) FROM {table}")) == 3
    });
    assert_eq!(maria.count(&format!("SELECT count(*) FROM {table}")), 25);

    // `sluice connect --status` prints every sink's counts.
    wait_until("the metrics count every row written", || {
        ["warehouse", "reporting"].iter().all(|sink| {
            metric(
                connect.metrics,
                &format!(
                    "sluice_connect_rows_written_total{{sink=\"{sink}\",stream=\"{STREAM}\"}}"
                ),
            ) == 25.0
        })
    });
    let status_config = scratch.root.join("status.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &status_config,
        format!("metrics_listen = \"{}\"\n{text}", connect.metrics),
    )
    .unwrap();
    let out = std::process::Command::new(sluice_tests::binary("sluice"))
        .args(["connect", "--status", "--config"])
        .arg(&status_config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |sink: &str| {
        text.lines()
            .find(|l| l.starts_with(sink))
            .unwrap_or_else(|| panic!("no {sink} line in:\n{text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        line("warehouse")[1..4],
        [STREAM.to_string(), "25".into(), "1".into()]
    );
    assert_eq!(
        line("reporting")[1..4],
        [STREAM.to_string(), "25".into(), "1".into()]
    );

    assert!(terminate(&mut connect.child).success());
    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());
}
