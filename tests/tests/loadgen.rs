//! `sluice loadgen` against a real edge and aggregator, and `sluice bench
//! --quick` end to end. These check what the tools count, not how fast
//! anything is: speed lives in the benchmark's own output.

use serde_json::Value;
use sluice_tests::{Scratch, binary, log_events, wait_until, workspace};
use std::process::Command;

fn loadgen(args: &[&str]) -> (Option<i32>, Value, String) {
    let out = Command::new(binary("sluice"))
        .arg("loadgen")
        .args(args)
        .args(["--format", "json"])
        .current_dir(workspace())
        .output()
        .expect("sluice loadgen runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{stderr}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code(), report, stderr)
}

#[test]
fn loadgen_counts_what_the_edge_answered_and_every_accepted_event_lands_once() {
    let scratch = Scratch::new("loadgen.test");
    let aggregator = scratch.aggregator("t0k3n", &[]);
    let edge = scratch.edge(&aggregator, &[]);
    // Three good events to one bad: every request is a 207 listing the bad ones.
    let mix = scratch.root.join("mix.yaml");
    std::fs::write(
        &mix,
        "- stream: loadgen.test\n  weight: 3\n  event: {\"$schema\": \"/sluice/test/event/1.0.0\", \"dt\": \"2026-11-27T12:00:00Z\", \"message\": \"ok\"}\n\
         - stream: loadgen.test\n  event: {\"$schema\": \"/sluice/test/event/1.0.0\", \"dt\": \"not a time\"}\n",
    )
    .expect("mix written");
    let url = format!("http://{}", edge.http);
    let (code, report, stderr) = loadgen(&[
        "--edge",
        &url,
        "--max",
        "--duration",
        "1",
        "--connections",
        "2",
        "--batch",
        "8",
        "--mix",
        mix.to_str().expect("a UTF-8 path"),
    ]);
    assert_eq!(code, Some(0), "{report}{stderr}");
    let requests = report["requests"].as_u64().expect("requests");
    assert!(requests > 0, "{report}");
    assert_eq!(
        report["statuses"]["207"].as_u64(),
        Some(requests),
        "{report}"
    );
    assert_eq!(report["events"].as_u64(), Some(requests * 8));
    assert_eq!(
        report["accepted_events"].as_u64(),
        Some(requests * 6),
        "{report}"
    );
    assert_eq!(report["client_errors"], 0);
    assert!(
        report["latency_ms"]["p99"]
            .as_f64()
            .is_some_and(|p| p > 0.0)
    );
    // Guaranteed requests: every accepted event is in the log, each id once.
    let accepted = requests as usize * 6;
    let events = log_events(&scratch.data, "local.loadgen.test");
    let mut ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e["meta"]["id"].as_str())
        .collect();
    assert_eq!(events.len(), accepted);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), accepted, "loadgen ids are unique");

    // Open loop at a fixed rate, hasty: the offered rate is reported and met.
    let (code, report, stderr) = loadgen(&[
        "--edge",
        &url,
        "--rate",
        "2000/s",
        "--duration",
        "1",
        "--connections",
        "2",
        "--batch",
        "10",
        "--hasty",
        "--mix",
        mix.to_str().expect("a UTF-8 path"),
    ]);
    assert_eq!(code, Some(0), "{report}{stderr}");
    assert_eq!(report["mode"], "rate");
    assert_eq!(report["offered_events_per_sec"], 2000.0);
    // 2000 events/s for 1 s in requests of 10: 200 requests were due.
    assert_eq!(report["requests"].as_u64(), Some(200), "{report}");
    let total = accepted + 200 * 10 * 3 / 4;
    wait_until("the hasty events are in the log", || {
        log_events(&scratch.data, "local.loadgen.test").len() == total
    });
}

#[test]
fn loadgen_reports_an_edge_that_is_not_there_as_client_errors() {
    let port = sluice_tests::free_port();
    let (code, report, _) = loadgen(&[
        "--edge",
        &format!("http://127.0.0.1:{port}"),
        "--rate",
        "100",
        "--duration",
        "0.5",
        "--connections",
        "1",
        "--batch",
        "1",
    ]);
    assert_eq!(code, Some(1), "nothing accepted is a failure: {report}");
    assert_eq!(report["accepted_events"], 0);
    assert_eq!(report["client_errors"], report["requests"]);
    assert!(report["requests"].as_u64().is_some_and(|n| n > 0));
}

#[test]
fn bench_quick_prints_its_table() {
    let out = Command::new(binary("sluice"))
        .args([
            "bench",
            "--quick",
            "--secs",
            "1",
            "--sinks",
            "log,kafka",
            "--modes",
            "hasty",
            "--connections",
            "4",
        ])
        .current_dir(workspace())
        .output()
        .expect("sluice bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("| log") || l.starts_with("| kafka"))
        .map(|l| {
            l.split('|')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for row in rows {
        assert_eq!(row.len(), 11, "{row:?}");
        let max: f64 = row[2].parse().expect("events/s");
        assert!(max > 0.0, "{row:?}");
        let edge_mb: f64 = row[8].parse().expect("edge RSS");
        let agg_mb: f64 = row[9].parse().expect("aggregator RSS");
        assert!(edge_mb > 0.0 && agg_mb > 0.0, "{row:?}");
    }
}
