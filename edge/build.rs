//! For the Worker build (wasm32), embeds the schema and stream-config
//! bundle: every `.yaml`, `.yml` and `.json` file of the repositories in
//! `SLUICE_BUNDLE_REPOS` (colon-separated, default `../schemas`) and the
//! stream config `SLUICE_BUNDLE_STREAMS` (default `../schemas/streams.yaml`),
//! written as `bundle.json` into `OUT_DIR` in the shape of `/v1/bundle`;
//! or, when `SLUICE_BUNDLE` names one, the bundle file `sluice schema bundle` wrote.
//! Native builds take their bundle at run time and skip this.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        panic!("cannot read schema repository folder {}", dir.display());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(root, &path, files);
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !(name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")) {
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        if let Ok(text) = std::fs::read_to_string(&path) {
            files.insert(rel, text);
        }
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=SLUICE_BUNDLE_REPOS");
    println!("cargo:rerun-if-env-changed=SLUICE_BUNDLE_STREAMS");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("wasm32") {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("bundle.json");
    // A bundle written by `sluice schema bundle`, checked to load when it was made.
    println!("cargo:rerun-if-env-changed=SLUICE_BUNDLE");
    if let Ok(file) = std::env::var("SLUICE_BUNDLE") {
        println!("cargo:rerun-if-changed={file}");
        if let Err(e) = std::fs::copy(&file, &out) {
            panic!("cannot read the bundle {file}: {e}");
        }
        return;
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let repos: Vec<PathBuf> = std::env::var("SLUICE_BUNDLE_REPOS")
        .map(|v| v.split(':').map(PathBuf::from).collect())
        .unwrap_or_else(|_| vec![manifest.join("../schemas")]);
    let streams = std::env::var("SLUICE_BUNDLE_STREAMS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest.join("../schemas/streams.yaml"));
    let mut repositories = Vec::new();
    for dir in &repos {
        println!("cargo:rerun-if-changed={}", dir.display());
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "repository".to_owned());
        let mut files = BTreeMap::new();
        walk(dir, dir, &mut files);
        repositories.push(serde_json::json!({ "name": name, "files": files }));
    }
    println!("cargo:rerun-if-changed={}", streams.display());
    let Ok(streams_text) = std::fs::read_to_string(&streams) else {
        panic!("cannot read the stream config {}", streams.display());
    };
    let bundle = serde_json::json!({ "streams": streams_text, "repositories": repositories });
    if let Err(e) = std::fs::write(&out, bundle.to_string()) {
        panic!("cannot write {}: {e}", out.display());
    }
}
