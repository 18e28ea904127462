//! The log through its writer's surface: append, sync, read, reopen, recover, rewind, retention.

mod common;

use common::{backdate, segments};
use sluice_log::{Log, LogError, LogOptions, NewRecord};
use std::fs::{self, OpenOptions};
use std::io::Write;

fn record(value: &[u8]) -> NewRecord<'_> {
    NewRecord {
        timestamp_ms: 1_795_780_800_000,
        key: Some(b"key"),
        headers: &[
            ("schema_uri", b"/sluice/test/event/1.0.0"),
            ("event_id", b"0123456789abcdef"),
        ],
        value,
    }
}

fn values(log: &Log, topic: &str) -> Vec<String> {
    log.read(topic, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| String::from_utf8(r.value).unwrap())
        .collect()
}

#[test]
fn appends_read_back_in_order_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(
        log.append("local.a", &[record(b"0"), record(b"1")])
            .unwrap(),
        0
    );
    assert_eq!(log.append("local.a", &[record(b"2")]).unwrap(), 2);
    assert_eq!(log.append("local.b", &[record(b"x")]).unwrap(), 0);
    log.sync().unwrap();
    drop(log);

    let mut log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.recovered_bytes(), 0);
    assert_eq!(values(&log, "local.a"), ["0", "1", "2"]);
    assert_eq!(log.next_offset("local.a"), 3);
    let first = &log.read("local.a", 1, 1).unwrap()[0];
    assert_eq!(first.offset, 1);
    assert_eq!(first.key.as_deref(), Some(&b"key"[..]));
    assert_eq!(first.timestamp_ms, 1_795_780_800_000);
    assert_eq!(
        first.headers[0],
        (
            "schema_uri".to_owned(),
            b"/sluice/test/event/1.0.0".to_vec()
        )
    );
    assert_eq!(log.append("local.a", &[record(b"3")]).unwrap(), 3);
    assert_eq!(values(&log, "local.a"), ["0", "1", "2", "3"]);
    assert_eq!(log.topics().collect::<Vec<_>>(), ["local.a", "local.b"]);
}

#[test]
fn a_torn_tail_is_cut_and_everything_before_it_kept() {
    for damage in [
        &b"\x30\x00\x00\x00\x01\x02"[..],
        b"\x05\x00\x00\x00\xde\xad\xbe\xefxyz",
        b"\x03",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), LogOptions::default()).unwrap();
        log.append("t", &[record(b"kept-0"), record(b"kept-1")])
            .unwrap();
        log.sync().unwrap();
        drop(log);
        let seg = segments(dir.path(), "t").pop().unwrap();
        let good_len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap()
            .write_all(damage)
            .unwrap();

        let mut log = Log::open(dir.path(), LogOptions::default()).unwrap();
        assert_eq!(log.recovered_bytes(), damage.len() as u64, "{damage:?}");
        assert_eq!(fs::metadata(&seg).unwrap().len(), good_len);
        assert_eq!(values(&log, "t"), ["kept-0", "kept-1"]);
        assert_eq!(log.append("t", &[record(b"after")]).unwrap(), 2);
        log.sync().unwrap();
        drop(log);
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        assert_eq!(values(&log, "t"), ["kept-0", "kept-1", "after"]);
    }
}

#[test]
fn a_record_that_fails_its_checksum_ends_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.append("t", &[record(b"first"), record(b"second")])
        .unwrap();
    log.sync().unwrap();
    drop(log);
    let seg = segments(dir.path(), "t").pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(values(&log, "t"), ["first"]);
    assert_eq!(log.next_offset("t"), 1);
}

#[test]
fn segments_roll_and_read_across_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 300,
        ..LogOptions::default()
    };
    let mut log = Log::open(dir.path(), options).unwrap();
    let payloads: Vec<String> = (0..40).map(|i| format!("event-{i:03}")).collect();
    for p in &payloads {
        log.append("t", &[record(p.as_bytes())]).unwrap();
    }
    log.sync().unwrap();
    let files = segments(dir.path(), "t");
    assert!(files.len() > 5, "{files:?}");
    assert!(files.iter().all(|f| fs::metadata(f).unwrap().len() <= 300));
    drop(log);
    let log = Log::open(dir.path(), options).unwrap();
    assert_eq!(values(&log, "t"), payloads);
    let middle: Vec<u64> = log
        .read("t", 17, 5)
        .unwrap()
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(middle, [17, 18, 19, 20, 21]);
    assert!(log.read("t", 40, 10).unwrap().is_empty());
}

#[test]
fn damage_before_the_last_segment_is_refused_not_guessed_at() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 200,
        ..LogOptions::default()
    };
    let mut log = Log::open(dir.path(), options).unwrap();
    for i in 0..20 {
        log.append("t", &[record(format!("e{i}").as_bytes())])
            .unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let first = segments(dir.path(), "t").remove(0);
    let len = fs::metadata(&first).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    match Log::open(dir.path(), options) {
        Err(e @ LogError::Corrupt { .. }) => {
            assert!(e.to_string().contains("move it aside"), "{e}")
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[test]
fn bad_topics_and_huge_records_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        LogOptions {
            max_record_bytes: 64,
            ..LogOptions::default()
        },
    )
    .unwrap();
    for topic in ["", "..", "a/b", "x y", &"t".repeat(250)] {
        assert!(
            matches!(
                log.append(topic, &[record(b"v")]),
                Err(LogError::BadTopic(_))
            ),
            "{topic}"
        );
    }
    let big = vec![b'x'; 100];
    assert!(matches!(
        log.append("t", &[record(&big)]),
        Err(LogError::RecordTooLarge { .. })
    ));
    assert_eq!(log.next_offset("t"), 0);
}

#[test]
fn retention_deletes_old_closed_segments_and_the_rest_reads_on() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 200,
        ..LogOptions::default()
    };
    let mut log = Log::open(dir.path(), options).unwrap();
    for n in 0..5u8 {
        log.append("t", &[record(&[b'a' + n; 120])]).unwrap();
    }
    log.sync().unwrap();
    let files = segments(dir.path(), "t");
    assert_eq!(files.len(), 5);
    backdate(&files[..3], std::time::Duration::from_secs(8 * 24 * 3600));
    let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(7 * 24 * 3600);
    assert_eq!(log.delete_all_segments_before(cutoff).unwrap(), 3);
    assert_eq!(segments(dir.path(), "t").len(), 2);
    let left: Vec<u64> = log
        .read("t", 0, 10)
        .unwrap()
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(left, [3, 4]);
    // Reopened, the log starts at its first kept offset and appends after its last.
    let mut log = Log::open(dir.path(), options).unwrap();
    assert_eq!(log.append("t", &[record(b"next")]).unwrap(), 5);
    assert_eq!(values(&log, "t").last().map(String::as_str), Some("next"));
}

#[test]
fn a_rewound_group_leaves_no_trace_across_topics_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 300,
        ..LogOptions::default()
    };
    let mut log = Log::open(dir.path(), options).unwrap();
    log.append("a", &[record(b"kept-0"), record(b"kept-1")])
        .unwrap();
    log.sync().unwrap();
    let before = segments(dir.path(), "a");
    let mark = log.mark();
    // A failed group: several appends, rolling "a" over segments, and a new topic "b".
    for i in 0..20 {
        log.append("a", &[record(format!("gone-{i:02}").as_bytes())])
            .unwrap();
    }
    log.append("b", &[record(b"gone-b")]).unwrap();
    assert!(segments(dir.path(), "a").len() > before.len());
    log.rewind(&mark);
    assert_eq!(segments(dir.path(), "a"), before);
    assert_eq!(values(&log, "a"), ["kept-0", "kept-1"]);
    assert_eq!(log.next_offset("a"), 2);
    assert!(values(&log, "b").is_empty());
    // The retry appends where the group began, and reads back once after reopening.
    assert_eq!(log.append("a", &[record(b"retry")]).unwrap(), 2);
    assert_eq!(log.append("b", &[record(b"retry-b")]).unwrap(), 0);
    log.sync().unwrap();
    drop(log);
    let log = Log::open(dir.path(), options).unwrap();
    assert_eq!(log.recovered_bytes(), 0);
    assert_eq!(values(&log, "a"), ["kept-0", "kept-1", "retry"]);
    assert_eq!(values(&log, "b"), ["retry-b"]);
}
