//! The embedded log as the aggregator's sink: what it remembers for the dedupe window.

use sluice_aggregator::log_sink::recent_ids;
use sluice_log::{Log, LogOptions, NewRecord};
use std::fs;
use std::path::{Path, PathBuf};

fn segments(dir: &Path, topic: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join(topic))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

#[test]
fn rebuilding_the_dedupe_window_skips_segments_written_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 200,
        ..LogOptions::default()
    };
    let ms = |t: std::time::SystemTime| {
        i64::try_from(t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
    };
    let now_ms = ms(std::time::SystemTime::now());
    let mut log = Log::open(dir.path(), options).unwrap();
    for n in 0u8..6 {
        let id = [n; 16];
        let headers: [(&str, &[u8]); 1] = [("event_id", &id)];
        log.append(
            "t",
            &[NewRecord {
                timestamp_ms: now_ms,
                key: None,
                headers: &headers,
                value: &[0; 100],
            }],
        )
        .unwrap();
    }
    log.sync().unwrap();
    let files = segments(dir.path(), "t");
    assert_eq!(files.len(), 6, "one record per 200-byte segment");
    // The first two segments were last written two hours ago; the window is the last hour.
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for f in &files[..2] {
        fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    let log = Log::open(dir.path(), options).unwrap();
    let hour_ago_ms = ms(std::time::SystemTime::now() - std::time::Duration::from_secs(3600));
    let mut ids = Vec::new();
    recent_ids(&log, hour_ago_ms, &mut |id, _| ids.push(id[0])).unwrap();
    // Their records cannot have been received inside the window (a record is written after it
    // is received), so they are not read, whatever their stamps say.
    assert_eq!(ids, [2, 3, 4, 5]);
}
