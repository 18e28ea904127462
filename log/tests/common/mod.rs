//! What the log's tests share: a topic's segment files, and making them look old.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The segment files of `topic` in the log at `dir`, oldest first.
pub fn segments(dir: &Path, topic: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join(topic))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Sets the last-written time of `files` to `age` ago.
pub fn backdate(files: &[PathBuf], age: Duration) {
    let then = SystemTime::now() - age;
    for f in files {
        fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(then)
            .unwrap();
    }
}
