//! Replays every input the fuzzers found troublesome (kept under
//! `fuzz/regressions/<target>/`) and a set of hand-written hostile inputs
//! through the same checks the fuzz targets run, on stable Rust, so that a
//! fixed finding stays fixed.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "README.md") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        eprintln!("{target}: {}", path.display());
        check(&data);
        count += 1;
    }
    count
}

#[test]
fn batch_frames_found_by_fuzzing_decode_cleanly() {
    let n = replay("batch_decode", checks::batch_decode);
    // Hand-written frames beside the findings: empty, wrong version, a huge stated size.
    for frame in [
        &b""[..],
        &[1][..],
        &[9, 0, 1, 2][..],
        &[1, 1, 0xff, 0xff, 0xff, 0xff, 0][..],
        &[1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f][..],
    ] {
        checks::batch_decode(frame);
    }
    assert!(n > 0, "no batch frame regressions kept");
}

#[test]
fn intake_bodies_found_by_fuzzing_get_verdicts() {
    let n = replay("intake_body", checks::intake_body);
    let deep = format!("\n{}{}", "[".repeat(10_000), "]".repeat(10_000));
    checks::intake_body(deep.as_bytes());
    checks::intake_body(b"stream=sluice.test\n[{\"a\":1e400},{\"a\":\"\xff\xfe\"},{}]");
    assert!(n > 0, "no intake regressions kept");
}

#[test]
fn stream_configs_found_by_fuzzing_parse_or_refuse() {
    let n = replay("stream_config", checks::stream_config);
    checks::stream_config(b"/(/:\n  schema_title: x\n");
    checks::stream_config(b"a:\n  sample: {rate: .nan, unit: session}\n");
    assert!(n > 0, "no stream config regressions kept");
}

#[test]
fn schema_files_found_by_fuzzing_load_or_refuse() {
    let n = replay("schema_repo", checks::schema_repo);
    checks::schema_repo(b"\0$ref: http://example.org/x.json\n");
    checks::schema_repo(b"\x01{\"$ref\": \"file:///etc/passwd\"}");
    checks::schema_repo(b"\0{a: *b}");
    assert!(n > 0, "no schema regressions kept");
}
