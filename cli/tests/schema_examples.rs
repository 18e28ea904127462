//! `sluice schema examples` as a user runs it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus() -> PathBuf {
    std::env::var_os("SLUICE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/wmf-schemas")
        })
}

fn sluice(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("sluice runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_wikimedia_repositories_check_clean() {
    let primary = corpus().join("primary");
    let secondary = corpus().join("secondary");
    let (code, stdout, stderr) = sluice(&[
        "schema",
        "examples",
        "--repo",
        primary.to_str().unwrap(),
        "--repo",
        secondary.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "versions=510 examples=546 failed=0");
}

#[test]
fn a_failing_example_is_listed_with_its_file_and_errors() {
    let broken = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/broken");
    let (code, stdout, _) = sluice(&["schema", "examples", "--repo", broken.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0]
            .starts_with("FAIL broken: jsonschema/sluice/broken/1.0.0.yaml example 1: data/name"),
        "{stdout}"
    );
    assert!(lines[0].contains("is not of type \"string\""), "{stdout}");
    assert_eq!(lines[1], "versions=1 examples=2 failed=1");
}

#[test]
fn a_missing_repository_is_a_clear_error() {
    let (code, stdout, stderr) = sluice(&["schema", "examples", "--repo", "/nonexistent/repo"]);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stderr.contains("cannot read schema repository /nonexistent/repo"),
        "{stderr}"
    );
}
