//! `sluice-client` from Python, through the bindings UniFFI writes from the
//! built library: a script opens a client on a queue folder, submits 50
//! valid events and one invalid one, flushes, and reports; the log holds
//! the 50, with the ids the script was given.

use sluice_tests::{Edge, Scratch, log_events, terminate, workspace};
use std::path::{Path, PathBuf};
use std::process::Command;

const TOKEN: &str = "client-python-token";

/// The folder of the workspace's built binaries and libraries.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .to_owned()
}

/// The built `uniffi-bindgen` (its own workspace under `clients/rust/bindgen`)
/// and `libsluice_client.so`, built here when missing.
fn bindgen_and_library() -> (PathBuf, PathBuf) {
    let dir = target_dir();
    let bindgen = dir.join("uniffi-bindgen");
    let library = dir.join("libsluice_client.so");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let build = |args: &[&str]| {
        let status = Command::new(&cargo)
            .args(args)
            .current_dir(workspace())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo {args:?} failed");
    };
    if !bindgen.exists() {
        build(&[
            "build",
            "--manifest-path",
            "clients/rust/bindgen/Cargo.toml",
        ]);
    }
    if !library.exists() {
        build(&["build", "--workspace", "--lib"]);
    }
    (bindgen, library)
}

const SCRIPT: &str = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
from sluice_client import SluiceClient, SluiceError

edge, queue = sys.argv[2], sys.argv[3]
client = SluiceClient(edge, queue, 0)
ids = []
for n in range(50):
    ids.append(client.submit("py.events", json.dumps({
        "$schema": "/sluice/test/event/1.0.0", "count": n, "message": "from python %d" % n})))
client.submit("py.events", json.dumps({"$schema": "/sluice/test/event/1.0.0", "count": "fifty"}))
try:
    client.submit("py.events", "[1, 2]")
    not_an_object = None
except SluiceError as e:
    not_an_object = str(e)
flushed = client.flush(30000)
stats = client.stats()
print(json.dumps({
    "ids": ids,
    "accepted": flushed.accepted, "invalid": flushed.invalid, "remaining": flushed.remaining,
    "queued": stats.queued, "reasons": stats.invalid_reasons, "not_an_object": not_an_object,
}))
"#;

#[test]
fn the_python_binding_sends_and_flushes() {
    let (bindgen, library) = bindgen_and_library();
    let scratch = Scratch::new("py.events");
    let mut aggregator = scratch.aggregator(TOKEN, &[]);
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(&aggregator, &[]);

    let bindings = scratch.root.join("python");
    let status = Command::new(&bindgen)
        .args([
            "generate",
            "--language",
            "python",
            "--no-format",
            "--library",
        ])
        .arg(&library)
        .arg("--out-dir")
        .arg(&bindings)
        .status()
        .expect("uniffi-bindgen runs");
    assert!(status.success(), "uniffi-bindgen failed");
    assert!(bindings.join("sluice_client.py").exists());
    std::fs::copy(&library, bindings.join("libsluice_client.so")).unwrap();

    let output = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&bindings)
        .arg(format!("http://{edge}"))
        .arg(scratch.root.join("queue"))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("the script's report");
    assert_eq!(report["accepted"], 50, "{report}");
    assert_eq!(report["invalid"], 1, "{report}");
    assert_eq!(report["remaining"], 0, "{report}");
    assert_eq!(report["queued"], 0, "{report}");
    assert!(
        report["reasons"][0].as_str().unwrap().contains("count"),
        "{report}"
    );
    assert!(
        report["not_an_object"]
            .as_str()
            .unwrap()
            .contains("an array"),
        "{report}"
    );

    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());
    let events = log_events(&scratch.data, "local.py.events");
    assert_eq!(events.len(), 50);
    let mut logged: Vec<&str> = events
        .iter()
        .map(|e| e["meta"]["id"].as_str().unwrap())
        .collect();
    let mut sent: Vec<&str> = report["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    logged.sort_unstable();
    sent.sort_unstable();
    assert_eq!(logged, sent);
}
