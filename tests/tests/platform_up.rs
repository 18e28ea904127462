//! The README's main command, run as written (the `sluice` binary with the
//! arguments the README gives after `cargo run ... --`, plus free ports and
//! a scratch data folder): `sluice up` starts an aggregator and an edge;
//! the README's event goes in; `sluice tail` shows it, `sluice streams`
//! prints the config, `sluice canary` reaches every canary stream; Ctrl-C
//! (SIGINT) stops both cleanly. And `sluice up` runs on Wikimedia's repositories.

use sluice_tests::{Up, binary, http_call, metric, wait_until, workspace};
use std::process::Command;

/// The arguments the README's set-up block passes to `sluice`.
fn readme_arguments() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let line = readme
        .lines()
        .find(|l| l.starts_with("cargo run --release -p sluice-cli -- up"))
        .expect("the README's set-up runs `cargo run --release -p sluice-cli -- up`");
    line.split(" -- ")
        .nth(1)
        .expect("arguments after --")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Starts `sluice` with `args` (beginning with `up`), its data in `data` and free ports.
fn start_up(args: &[std::ffi::OsString], data: &std::path::Path) -> Up {
    Up::start(args, data)
}

/// Ctrl-C (SIGINT): both stop, cleanly.
fn interrupt(up: &mut Up) {
    let status = Command::new("kill")
        .args(["-INT", &up.child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("sluice up exits", || {
        up.child.0.try_wait().unwrap().is_some()
    });
    assert!(up.child.0.wait().unwrap().success());
}

fn sluice(args: &[&str]) -> std::process::Output {
    Command::new(binary("sluice"))
        .args(args)
        .current_dir(workspace())
        .env("SLUICE_LOG", "warn")
        .output()
        .expect("sluice runs")
}

#[test]
fn the_readme_main_command_runs_the_platform() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sluice");
    let data_arg = data.to_string_lossy().into_owned();
    let args: Vec<std::ffi::OsString> = readme_arguments().into_iter().map(Into::into).collect();
    let mut up = start_up(&args, &data);
    let (edge, printed) = (up.edge, up.printed.clone());
    let edge_addr = edge.to_string();
    assert!(
        printed.contains(&format!("http://{edge_addr}/v1/events")),
        "{printed}"
    );
    assert!(printed.contains("curl -i -X POST"), "{printed}");
    assert!(printed.contains("/metrics"), "{printed}");

    // The README's event, as its curl line sends it.
    let event = r#"{"$schema": "/sluice/test/event/1.0.0", "meta": {"stream": "sluice.test.event"}, "dt": "2026-11-27T12:00:00Z", "message": "hello"}"#;
    let r = http_call(
        edge,
        "POST",
        "/v1/events",
        &[("Content-Type", "application/json")],
        event.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    let tail = sluice(&[
        "tail",
        "sluice.test.event",
        "--from-beginning",
        "--no-follow",
        "--data-dir",
        &data_arg,
    ]);
    assert!(
        tail.status.success(),
        "{}",
        String::from_utf8_lossy(&tail.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&tail.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["message"], "hello");
    assert_eq!(lines[0]["meta"]["id"].as_str().map(str::len), Some(36));

    let streams = sluice(&["streams"]);
    assert!(streams.status.success());
    let config: serde_json::Value = serde_json::from_slice(&streams.stdout).unwrap();
    assert_eq!(
        config["streams"]["sluice.test.event"]["schema_title"],
        "sluice/test/event"
    );

    let edge_url = format!("http://{edge_addr}");
    let canary = sluice(&["canary", "--edge", &edge_url]);
    let report = String::from_utf8_lossy(&canary.stdout).into_owned();
    assert!(canary.status.success(), "{report}");
    assert!(report.contains("ok      sluice.test.event"), "{report}");
    assert!(report.contains(" 0 failed"), "{report}");
    let tail = sluice(&[
        "tail",
        "sluice.test.event",
        "--from-beginning",
        "--no-follow",
        "--data-dir",
        &data_arg,
    ]);
    let canaries = String::from_utf8_lossy(&tail.stdout)
        .lines()
        .filter(|l| l.contains(r#""domain":"canary""#))
        .count();
    assert_eq!(canaries, 1);

    // Ctrl-C stops both, cleanly.
    assert!(metric(edge, "sluice_edge_requests_total{status=\"201\"}") >= 2.0);
    interrupt(&mut up);
}

#[test]
fn sluice_up_runs_on_wikimedias_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let streams = dir.path().join("streams.yaml");
    std::fs::write(
        &streams,
        "streams:\n  eventgate-analytics.test.event:\n    schema_title: test/event\n",
    )
    .unwrap();
    let corpus = sluice_tests::corpus();
    let args: Vec<std::ffi::OsString> = vec![
        "up".into(),
        "--repo".into(),
        corpus.join("primary").into(),
        "--repo".into(),
        corpus.join("secondary").into(),
        "--streams".into(),
        streams.into(),
    ];
    let mut up = start_up(&args, &dir.path().join("data"));
    let edge = up.edge;
    let event = r#"{"$schema": "/test/event/1.0.0", "meta": {"stream": "eventgate-analytics.test.event"}, "dt": "2026-11-27T12:00:00Z", "test": "hello"}"#;
    let r = http_call(
        edge,
        "POST",
        "/v1/events",
        &[("Content-Type", "application/json")],
        event.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let bad = event.replace("\"hello\"", "42");
    let r = http_call(
        edge,
        "POST",
        "/v1/events",
        &[("Content-Type", "application/json")],
        bad.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["invalid"][0]["context"]["errors"][0]["instancePath"],
        "/test"
    );
    interrupt(&mut up);
}
