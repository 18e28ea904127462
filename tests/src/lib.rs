//! Helpers for Sluice's end-to-end tests: they run the real binaries as
//! separate processes and talk to them over their public surfaces.
//!
//! [`process`] runs and stops processes and waits for conditions; [`http`]
//! speaks to them; [`services`] starts the aggregator and the edge on a
//! scratch deployment; [`events`] makes and sends test events; [`tansu`],
//! [`workerd`] and [`disk`] bring up a Kafka-protocol broker, the Worker
//! runtime and a disk that fills.

pub mod disk;
pub mod events;
pub mod http;
pub mod lake;
pub mod process;
pub mod recorder;
pub mod services;
pub mod stores;
pub mod tansu;
pub mod workerd;

pub use disk::SmallDisk;
pub use events::{Delivery, numbered_event, send_counting, send_retrying, test_events_body};
pub use http::{
    HttpReply, http_call, http_get, http_post, http_request, metric, post_batch,
    post_events_created, raw_call, write_whole_then_read,
};
pub use lake::{S3Server, dataset, duckdb, duckdb_count};
pub use process::{FixedPorts, KillOnDrop, free_port, rss_mib, signal, terminate, wait_until};
pub use services::{
    Aggregator, Edge, Scratch, Up, log_events, start_aggregator, start_aggregator_logging,
    start_edge,
};
pub use stores::{
    Connect, MariaDatabase, PgDatabase, kill_redis_clients, redis_db, start_connect,
    start_connect_logging,
};
pub use tansu::Tansu;
pub use workerd::Workerd;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Wikimedia schema corpus beside the project, or `SLUICE_CORPUS`.
pub fn corpus() -> PathBuf {
    std::env::var_os("SLUICE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/corpus/wmf-schemas"))
}

/// Builds a workspace binary for the profile the caller runs in, even when one is there
/// (benchmarks run release builds that `cargo bench` does not rebuild itself).
pub fn rebuild_binary(name: &str) -> PathBuf {
    let path = binary(name);
    let release = path.parent().is_some_and(|d| d.ends_with("release"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "--bin", name])
        .args(if release { vec!["--release"] } else { vec![] })
        .current_dir(workspace())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {name} failed");
    path
}

/// Path of a workspace binary, built first when it is not there yet.
pub fn binary(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let path = dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let profile = if dir.ends_with("release") {
            vec!["--release"]
        } else {
            vec![]
        };
        let status = Command::new(cargo)
            .args(["build", "--bin", name])
            .args(profile)
            .current_dir(workspace())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building {name} failed");
    }
    path
}
