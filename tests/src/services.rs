//! Sluice's own services as processes: `sluice aggregator` and `sluice
//! edge` started on a scratch deployment, and what the aggregator wrote.

use crate::{KillOnDrop, binary, free_port, terminate, workspace};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running `sluice aggregator` and where it listens.
pub struct Aggregator {
    /// The process.
    pub child: KillOnDrop,
    /// HTTP batch ingest and services.
    pub http: std::net::SocketAddr,
    /// QUIC batch ingest.
    pub quic: std::net::SocketAddr,
}

/// Starts `sluice aggregator` with these environment settings (on top of
/// loopback listeners on free ports and quiet logs), and waits for it to
/// print its addresses.
pub fn start_aggregator(env: &[(&str, &std::ffi::OsStr)]) -> Aggregator {
    start_aggregator_logging(env, std::process::Stdio::inherit())
}

/// [`start_aggregator`], with its log (stderr) going to `log`.
pub fn start_aggregator_logging(
    env: &[(&str, &std::ffi::OsStr)],
    log: std::process::Stdio,
) -> Aggregator {
    use std::io::BufRead;
    let mut command = Command::new(binary("sluice"));
    command
        .arg("aggregator")
        .env("SLUICE_AGGREGATOR_HTTP__LISTEN", "127.0.0.1:0")
        .env("SLUICE_AGGREGATOR_QUIC__LISTEN", "127.0.0.1:0")
        .env("SLUICE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("sluice aggregator starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let child = KillOnDrop(child);
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut address = |scheme: &str| loop {
        let line = lines
            .next()
            .expect("the aggregator prints its addresses")
            .expect("stdout is readable");
        let prefix = format!("aggregator listening on {scheme}://");
        if let Some(a) = line.strip_prefix(&prefix) {
            break a.parse().expect("a socket address");
        }
    };
    // It prints the QUIC address first, then the HTTP one.
    let quic = address("quic");
    let http = address("http");
    Aggregator { child, http, quic }
}

/// A running `sluice edge` and where it listens.
pub struct Edge {
    /// The process.
    pub child: KillOnDrop,
    /// The intake's HTTP address.
    pub http: std::net::SocketAddr,
}

/// Starts `sluice edge` with these environment settings (on top of a
/// loopback listener on a free port and quiet logs), and waits for it to
/// print its address.
pub fn start_edge(env: &[(&str, &std::ffi::OsStr)]) -> Edge {
    use std::io::BufRead;
    let mut command = Command::new(binary("sluice"));
    command
        .arg("edge")
        .env("SLUICE_EDGE_LISTEN", "127.0.0.1:0")
        .env("SLUICE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("sluice edge starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let child = KillOnDrop(child);
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("stdout is readable");
        if let Some(a) = line.strip_prefix("edge listening on http://") {
            let http = a.parse().expect("a socket address");
            return Edge { child, http };
        }
    }
    panic!("the edge exited before it listened");
}

/// A scratch deployment for one test: a temporary folder holding a stream
/// config with one stream (schema title `sluice/test/event`) and a data folder.
pub struct Scratch {
    _dir: tempfile::TempDir,
    /// The temporary folder itself.
    pub root: PathBuf,
    /// The stream config file.
    pub streams: PathBuf,
    /// The aggregator's data folder.
    pub data: PathBuf,
}

impl Scratch {
    /// A scratch folder whose stream config names `stream` (schema title
    /// `sluice/test/event`, topic `local.<stream>`).
    pub fn new(stream: &str) -> Scratch {
        Scratch::with_streams(&format!(
            "defaults:\n  topic_prefixes: [local.]\nstreams:\n  {stream}:\n    schema_title: sluice/test/event\n"
        ))
    }

    /// A scratch folder with this stream config (YAML).
    pub fn with_streams(config: &str) -> Scratch {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let streams = dir.path().join("streams.yaml");
        std::fs::write(&streams, config).expect("the stream config is written");
        let data = dir.path().join("data");
        Scratch {
            root: dir.path().to_path_buf(),
            _dir: dir,
            streams,
            data,
        }
    }

    /// `sluice edge` forwarding over QUIC to `aggregator` (with the development
    /// certificate it generated) and taking its bundle, with `extra` settings on top.
    pub fn edge(&self, aggregator: &Aggregator, extra: &[(&str, &std::ffi::OsStr)]) -> Edge {
        let tls = self.data.join("tls");
        let aggregators = format!("[\"{}\"]", aggregator.quic);
        let bundle = format!("http://{}/v1/bundle", aggregator.http);
        let (ca, cert, key) = (
            tls.join("ca.pem"),
            tls.join("edge.pem"),
            tls.join("edge.key.pem"),
        );
        let data = self.root.join("edge");
        let mut env: Vec<(&str, &std::ffi::OsStr)> = vec![
            ("SLUICE_EDGE_DATA_DIR", data.as_os_str()),
            ("SLUICE_EDGE_AGGREGATORS", aggregators.as_ref()),
            ("SLUICE_EDGE_BUNDLE__URL", bundle.as_ref()),
            ("SLUICE_EDGE_TLS__CA", ca.as_os_str()),
            ("SLUICE_EDGE_TLS__CERT", cert.as_os_str()),
            ("SLUICE_EDGE_TLS__KEY", key.as_os_str()),
        ];
        env.extend_from_slice(extra);
        start_edge(&env)
    }

    /// `sluice aggregator` on this folder and the project's `schemas/`, taking
    /// `token`, with `extra` settings on top.
    pub fn aggregator(&self, token: &str, extra: &[(&str, &std::ffi::OsStr)]) -> Aggregator {
        let repos = format!("[{:?}]", workspace().join("schemas"));
        let mut env: Vec<(&str, &std::ffi::OsStr)> = vec![
            ("SLUICE_AGGREGATOR_DATA_DIR", self.data.as_os_str()),
            ("SLUICE_AGGREGATOR_STREAMS", self.streams.as_os_str()),
            ("SLUICE_AGGREGATOR_REPOSITORIES", repos.as_ref()),
            ("SLUICE_AGGREGATOR_HTTP__TOKEN", token.as_ref()),
        ];
        env.extend_from_slice(extra);
        start_aggregator(&env)
    }
}

/// Every record of `topic` in the embedded log under an aggregator's data folder, as JSON.
pub fn log_events(data: &Path, topic: &str) -> Vec<serde_json::Value> {
    let log = sluice_log::Log::open(&data.join("log"), sluice_log::LogOptions::default())
        .expect("the embedded log opens");
    log.read(topic, 0, usize::MAX)
        .expect("the topic reads")
        .into_iter()
        .map(|r| serde_json::from_slice(&r.value).expect("records are JSON"))
        .collect()
}

/// A running `sluice up` on free ports, what it printed up to its edge's address, and the
/// rest of its standard output to read after it stops.
pub struct Up {
    /// The process.
    pub child: KillOnDrop,
    /// Its edge's HTTP address.
    pub edge: std::net::SocketAddr,
    /// Its output up to the line naming the edge.
    pub printed: String,
    /// The rest of its output.
    pub rest: std::io::BufReader<std::process::ChildStdout>,
}

impl Up {
    /// Starts `sluice` with `args` (beginning with `up`), its data in `data` and free ports.
    pub fn start(args: &[std::ffi::OsString], data: &Path) -> Up {
        use std::io::BufRead;
        let edge_addr = format!("127.0.0.1:{}", free_port());
        let mut child = std::process::Command::new(binary("sluice"))
            .args(args)
            .arg("--data-dir")
            .arg(data)
            .args(["--edge-addr", &edge_addr])
            .args(["--aggregator-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--quic-addr", &format!("127.0.0.1:{}", free_port())])
            .current_dir(workspace())
            .env("SLUICE_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sluice up starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let child = KillOnDrop(child);
        let mut rest = std::io::BufReader::new(stdout);
        let mut printed = String::new();
        loop {
            let mut line = String::new();
            if rest.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("sluice up exited before its edge listened:\n{printed}");
            }
            printed.push_str(&line);
            if line.starts_with("edge listening on") {
                return Up {
                    child,
                    edge: edge_addr.parse().expect("an address"),
                    printed,
                    rest,
                };
            }
        }
    }

    /// Stops it with SIGTERM, asserts it exits cleanly, and returns what it printed after
    /// its edge's address.
    pub fn stop(mut self) -> String {
        use std::io::Read;
        assert!(
            terminate(&mut self.child).success(),
            "sluice up exits cleanly"
        );
        let mut out = String::new();
        let _ = self.rest.read_to_string(&mut out);
        out
    }
}
