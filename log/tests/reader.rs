//! Readers through their public surface: where they start, what they follow,
//! how they pass segment ends, retention and damage, and the positions
//! named consumers commit.

mod common;

use common::{backdate, segments};
use sluice_log::{ConsumerPosition, Damage, Log, LogError, LogOptions, NewRecord, Reader, Start};
use std::fs::{self, OpenOptions};
use std::io::Write;

fn at(timestamp_ms: i64, value: &[u8]) -> NewRecord<'_> {
    NewRecord {
        timestamp_ms,
        key: None,
        headers: &[("stream", b"s")],
        value,
    }
}

/// Two records a segment.
fn small() -> LogOptions {
    LogOptions {
        segment_bytes: 60,
        ..LogOptions::default()
    }
}

/// Writes `n` records `v0`, `v1`, … to topic `t`, record i at time 1000 + 10 i.
fn write(log: &mut Log, from: usize, n: usize) {
    for i in from..from + n {
        let value = format!("v{i}");
        log.append("t", &[at(1000 + 10 * i as i64, value.as_bytes())])
            .unwrap();
    }
    log.sync().unwrap();
}

fn values(reader: &mut Reader, max: usize) -> Vec<String> {
    reader
        .poll(max)
        .unwrap()
        .into_iter()
        .map(|r| String::from_utf8(r.value).unwrap())
        .collect()
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("v{i}")).collect()
}

#[test]
fn a_reader_follows_appends_across_segments_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    let mut reader = Reader::open(dir.path(), "t", Start::Earliest, small()).unwrap();
    assert!(values(&mut reader, 10).is_empty(), "no topic yet");
    write(&mut log, 0, 7);
    assert!(segments(dir.path(), "t").len() > 2);
    assert_eq!(values(&mut reader, 3), names(0..3));
    assert_eq!(reader.position(), 3);
    assert_eq!(values(&mut reader, 100), names(3..7));
    assert!(values(&mut reader, 100).is_empty());
    write(&mut log, 7, 6);
    assert_eq!(values(&mut reader, 100), names(7..13));
    let records = Reader::open(dir.path(), "t", Start::Offset(5), small())
        .unwrap()
        .poll(2)
        .unwrap();
    assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), [5, 6]);
    assert_eq!(records[0].timestamp_ms, 1050);
    assert_eq!(records[0].header("stream"), Some(&b"s"[..]));
    assert_eq!(records[0].header("nope"), None);
}

#[test]
fn readers_start_at_either_end_or_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    write(&mut log, 0, 10);
    let open = |start| Reader::open(dir.path(), "t", start, small()).unwrap();
    assert_eq!(open(Start::Latest).position(), 10);
    assert_eq!(open(Start::Earliest).position(), 0);
    // Record i is stamped 1000 + 10 i: the first at or after 1041 is record 5.
    assert_eq!(open(Start::Time(1041)).position(), 5);
    assert_eq!(open(Start::Time(1040)).position(), 4);
    assert_eq!(open(Start::Time(0)).position(), 0);
    let mut late = open(Start::Time(5000));
    assert_eq!(late.position(), 10, "nothing that late: only what comes");
    write(&mut log, 10, 1);
    assert_eq!(values(&mut late, 10), names(10..11));
    let mut latest = open(Start::Latest);
    assert!(values(&mut latest, 10).is_empty());
    assert!(matches!(
        Reader::open(dir.path(), "../t", Start::Earliest, small()),
        Err(LogError::BadTopic(_))
    ));
}

#[test]
fn a_reader_behind_retention_goes_on_from_the_first_record_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    write(&mut log, 0, 10);
    let files = segments(dir.path(), "t");
    backdate(&files[..2], std::time::Duration::from_secs(8 * 24 * 3600));
    let deleted = log
        .delete_segments_before(
            "t",
            std::time::SystemTime::now() - std::time::Duration::from_secs(86400),
        )
        .unwrap();
    assert_eq!(deleted, 2);
    let first = log.first_offset("t");
    assert!(first > 0);
    let mut reader = Reader::open(dir.path(), "t", Start::Offset(0), small()).unwrap();
    let got = reader.poll(100).unwrap();
    assert_eq!(got[0].offset, first);
    assert_eq!(got.len() as u64, 10 - first);
}

#[test]
fn a_frame_being_written_is_not_read_until_it_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogOptions::default()).unwrap();
    write(&mut log, 0, 2);
    drop(log);
    // A log from before writers published what is synced: readers read what is written.
    fs::remove_file(dir.path().join("t/synced")).unwrap();
    // Half of a third frame, as a reader may see a write under way.
    let mut whole = Vec::new();
    {
        let other = tempfile::tempdir().unwrap();
        let mut log = Log::open(other.path(), LogOptions::default()).unwrap();
        log.append("t", &[at(1020, b"v2")]).unwrap();
        log.sync().unwrap();
        whole.extend(fs::read(&segments(other.path(), "t")[0]).unwrap());
    }
    let seg = segments(dir.path(), "t").pop().unwrap();
    let mut file = OpenOptions::new().append(true).open(&seg).unwrap();
    file.write_all(&whole[..5]).unwrap();
    let mut reader = Reader::open(dir.path(), "t", Start::Earliest, LogOptions::default()).unwrap();
    assert_eq!(values(&mut reader, 10), names(0..2));
    assert!(values(&mut reader, 10).is_empty());
    file.write_all(&whole[5..]).unwrap();
    assert_eq!(values(&mut reader, 10), names(2..3));
}

#[test]
fn damage_in_an_older_segment_is_skipped_when_asked_and_readers_pass_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        damage: Damage::Skip,
        ..small()
    };
    let mut log = Log::open(dir.path(), options).unwrap();
    write(&mut log, 0, 10);
    drop(log);
    let files = segments(dir.path(), "t");
    let mut bytes = fs::read(&files[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&files[0], &bytes).unwrap();
    let second_base: u64 = files[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Refused by default; opened and appended to when damage is to be skipped.
    assert!(matches!(
        Log::open(dir.path(), small()),
        Err(LogError::Corrupt { .. })
    ));
    let mut log = Log::open(dir.path(), options).unwrap();
    assert_eq!(log.next_offset("t"), 10);
    write(&mut log, 10, 1);
    let mut reader = Reader::open(dir.path(), "t", Start::Earliest, options).unwrap();
    let got: Vec<u64> = reader.poll(100).unwrap().iter().map(|r| r.offset).collect();
    let mut want: Vec<u64> = (0..second_base - 1).collect();
    want.extend(second_base..11);
    assert_eq!(got, want, "the damaged record is passed over");
}

#[test]
fn consumers_resume_where_they_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    write(&mut log, 0, 6);
    let position = ConsumerPosition::new(dir.path(), "t", "warehouse").unwrap();
    assert_eq!(position.load().unwrap(), None);
    let mut reader = Reader::resume(dir.path(), "t", &position, Start::Earliest, small()).unwrap();
    assert_eq!(values(&mut reader, 4), names(0..4));
    position.commit(reader.position(), true).unwrap();
    drop(reader);
    // Another consumer of the same topic keeps its own place.
    let other = ConsumerPosition::new(dir.path(), "t", "lake").unwrap();
    other.commit(1, false).unwrap();
    let mut again = Reader::resume(dir.path(), "t", &position, Start::Earliest, small()).unwrap();
    assert_eq!(values(&mut again, 100), names(4..6));
    let mut lake = Reader::resume(dir.path(), "t", &other, Start::Earliest, small()).unwrap();
    assert_eq!(values(&mut lake, 2), names(1..3));
    // Position files sit beside the segments and are not taken for them.
    drop(log);
    let log = Log::open(dir.path(), small()).unwrap();
    assert_eq!(log.next_offset("t"), 6);
    for bad in ["", "a/b", ".."] {
        assert!(matches!(
            ConsumerPosition::new(dir.path(), "t", bad),
            Err(LogError::BadConsumer(_))
        ));
    }
    fs::write(dir.path().join("t/broken.position"), "twelve\n").unwrap();
    let broken = ConsumerPosition::new(dir.path(), "t", "broken").unwrap();
    let err = broken.load().unwrap_err().to_string();
    assert!(err.contains("delete it"), "{err}");
}

#[test]
fn trimming_deletes_what_is_consumed_and_offsets_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    write(&mut log, 0, 10);
    let before = segments(dir.path(), "t").len();
    let total = log.topic_bytes("t");
    assert!(before > 2 && total > 0);
    // Up to offset 4: only segments wholly below it go.
    let gone = log.trim("t", 4).unwrap();
    assert!(gone >= 1 && segments(dir.path(), "t").len() == before - gone);
    assert!(log.first_offset("t") <= 4);
    assert!(log.topic_bytes("t") < total);
    // Closed segments only: the open one stays even when every record in it is consumed.
    let open = segments(dir.path(), "t").last().cloned();
    log.trim_closed("t", 10).unwrap();
    assert_eq!(segments(dir.path(), "t").len(), 1);
    assert_eq!(segments(dir.path(), "t").last().cloned(), open);
    assert!(log.topic_bytes("t") > 0);
    // Everything: no bytes left, and the next record still gets offset 10, across a reopen.
    log.trim("t", 10).unwrap();
    assert_eq!(log.topic_bytes("t"), 0);
    assert_eq!(segments(dir.path(), "t").len(), 1);
    drop(log);
    let mut log = Log::open(dir.path(), small()).unwrap();
    assert_eq!(log.next_offset("t"), 10);
    assert_eq!(log.append("t", &[at(0, b"v10")]).unwrap(), 10);
    log.sync().unwrap();
    let mut reader = Reader::open(dir.path(), "t", Start::Earliest, small()).unwrap();
    assert_eq!(values(&mut reader, 10), names(10..11));
}

#[test]
fn skipping_to_the_end_counts_every_record_across_segments_and_then_only_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    let mut skimmer = Reader::open(dir.path(), "t", Start::Earliest, small()).unwrap();
    assert_eq!(skimmer.skip_to_end().unwrap(), 0, "no topic yet");
    write(&mut log, 0, 7);
    assert!(segments(dir.path(), "t").len() > 2);
    assert_eq!(skimmer.skip_to_end().unwrap(), 7);
    assert_eq!(skimmer.position(), 7);
    assert_eq!(skimmer.skip_to_end().unwrap(), 7, "nothing new");
    write(&mut log, 7, 4);
    assert_eq!(skimmer.skip_to_end().unwrap(), 11);
    // Skimming leaves the reader where a poll reads on from.
    write(&mut log, 11, 2);
    assert_eq!(values(&mut skimmer, 100), names(11..13));
    // A reader started in the middle skims from there.
    let mut late = Reader::open(dir.path(), "t", Start::Offset(5), small()).unwrap();
    assert_eq!(late.skip_to_end().unwrap(), 13);
}

#[test]
fn readers_stop_at_what_is_synced_so_a_cut_off_group_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    write(&mut log, 0, 3);
    let mut reader = Reader::open(dir.path(), "t", Start::Earliest, small()).unwrap();
    let mut skimmer = Reader::open(dir.path(), "t", Start::Earliest, small()).unwrap();
    // Appended across a segment roll but not synced: not read, not counted.
    let mark = log.mark();
    for i in 3..8 {
        let value = format!("bad{i}");
        log.append("t", &[at(0, value.as_bytes())]).unwrap();
    }
    assert_eq!(values(&mut reader, 100), names(0..3));
    assert_eq!(skimmer.skip_to_end().unwrap(), 3);
    assert_eq!(
        Reader::open(dir.path(), "t", Start::Latest, small())
            .unwrap()
            .position(),
        3
    );
    // The group's sync failed: it is cut off and written again; readers see only the retry.
    log.rewind(&mark);
    write(&mut log, 3, 2);
    assert_eq!(values(&mut reader, 100), names(3..5));
    assert_eq!(skimmer.skip_to_end().unwrap(), 5);
    // A writer that stopped without syncing leaves its records to the next one, which
    // syncs them when it opens the log.
    log.append("t", &[at(0, b"v5")]).unwrap();
    assert!(values(&mut reader, 100).is_empty());
    drop(log);
    let _log = Log::open(dir.path(), small()).unwrap();
    assert_eq!(values(&mut reader, 100), names(5..6));
}
