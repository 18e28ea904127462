//! Helpers for Sluice's end-to-end tests: they run the real binaries as
//! separate processes and talk to them over their public surfaces.

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

/// A child process killed (SIGKILL) and reaped when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// An HTTP answer: status, headers (names lower-case) and body.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// Header (lower-case name, value) pairs.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A minimal blocking HTTP/1.1 exchange for tests.
pub fn http_call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpReply> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // A server may answer (413, say) before reading the whole body and close: keep its answer.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw)
        && raw.is_empty()
    {
        return Err(e);
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "incomplete HTTP response",
            )
        })?;
    let status = std::str::from_utf8(raw.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status"))?;
    let headers = String::from_utf8_lossy(&raw[..split])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    Ok(HttpReply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// A minimal blocking HTTP/1.1 request for tests: status and body.
pub fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    http_call(addr, method, path, headers, body).map(|r| (r.status, r.body))
}

/// A blocking HTTP/1.1 POST: status and body.
pub fn http_post(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    http_request(addr, "POST", path, headers, body)
}

/// A blocking HTTP/1.1 GET: status and body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    http_request(addr, "GET", path, &[], b"")
}

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

/// Aggregator listeners on ports fixed for one test, so that an aggregator
/// restarted with them comes back where its edges look for it.
pub struct FixedPorts {
    /// `127.0.0.1:<port>` for QUIC.
    pub quic: String,
    /// `127.0.0.1:<port>` for HTTP.
    pub http: String,
}

impl FixedPorts {
    /// Two free loopback ports.
    pub fn new() -> FixedPorts {
        FixedPorts {
            quic: format!("127.0.0.1:{}", free_port()),
            http: format!("127.0.0.1:{}", free_port()),
        }
    }

    /// The aggregator settings that listen on them.
    pub fn env(&self) -> [(&str, &std::ffi::OsStr); 2] {
        [
            ("SLUICE_AGGREGATOR_QUIC__LISTEN", self.quic.as_ref()),
            ("SLUICE_AGGREGATOR_HTTP__LISTEN", self.http.as_ref()),
        ]
    }
}

impl Default for FixedPorts {
    fn default() -> Self {
        FixedPorts::new()
    }
}

/// A free loopback port (TCP and UDP), for processes that must come back on the same one.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("a free TCP port");
        let port = tcp.local_addr().expect("an address").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The value of a Prometheus sample, e.g. `sluice_edge_spool_bytes` or
/// `sluice_edge_events_total{outcome="delivered"}`, from `/metrics` at `addr`; 0 when absent.
pub fn metric(addr: std::net::SocketAddr, sample: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics").expect("metrics are served");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Waits (60 s at most) until `condition` holds, checking every 20 ms; panics naming `what` otherwise.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
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

/// A tansu broker (a Kafka-protocol broker process) on a free loopback port.
pub struct Tansu {
    /// The broker process.
    pub child: KillOnDrop,
    /// `host:port` for `bootstrap.servers`.
    pub brokers: String,
    program: PathBuf,
}

impl Tansu {
    /// The tansu binary: `SLUICE_TANSU`, else `tansu` on PATH. `scripts/test`
    /// installs it when missing and sets `SLUICE_TANSU`.
    pub fn program() -> PathBuf {
        std::env::var_os("SLUICE_TANSU")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("tansu"))
    }

    /// Starts a broker keeping its data in memory, and waits until it takes connections.
    pub fn start() -> Tansu {
        let program = Tansu::program();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&program)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run the Kafka-protocol broker `{}` ({e}); run scripts/test, which installs it, or set SLUICE_TANSU",
                    program.display()
                )
            });
        let child = KillOnDrop(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "tansu did not listen on {port} within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Tansu {
            child,
            brokers: format!("127.0.0.1:{port}"),
            program,
        }
    }

    /// Creates a topic (tansu does not create topics on first use).
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(&self.program)
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://{}", self.brokers)])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("tansu topic create runs");
        assert!(status.success(), "creating topic {name} failed");
    }
}

/// Event number `n` of `stream` for `topic`: id `n + 1`, JSON `{"n":n}`, stamped `at_ms`.
pub fn numbered_event(stream: &str, topic: &str, n: u64, at_ms: i64) -> sluice_shared::BatchEvent {
    sluice_shared::BatchEvent {
        stream: stream.into(),
        topic: topic.into(),
        partition_key: None,
        rate_key: None,
        id: (u128::from(n) + 1).to_be_bytes(),
        received_ms: at_ms,
        dt_ms: at_ms,
        schema_uri: "/sluice/test/event/1.0.0".into(),
        dedupe: true,
        json: format!(r#"{{"n":{n}}}"#).into_bytes().into(),
    }
}

/// Posts `batch` to an aggregator's `/v1/batches` with the bearer `token`;
/// its acknowledgement when it answered 200 with one, else `None`.
pub fn post_batch(
    addr: std::net::SocketAddr,
    token: &str,
    batch: &sluice_shared::Batch,
) -> Option<sluice_shared::BatchAck> {
    let auth = format!("Bearer {token}");
    let (status, body) = http_post(
        addr,
        "/v1/batches",
        &[("Authorization", &auth)],
        &batch.encode(true),
    )
    .ok()?;
    (status == 200).then_some(())?;
    sluice_shared::BatchAck::decode_for(&body, batch, &sluice_shared::WireLimits::default()).ok()
}

/// Sends SIGTERM to `child` and waits (90 s at most) for it to exit; its exit status.
pub fn terminate(child: &mut KillOnDrop) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM failed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        if let Some(exit) = child.0.try_wait().expect("the child can be waited on") {
            return exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process did not stop within 90 s of SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
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

/// The Edge Worker, built by worker-build into `edge/build`, running under workerd.
pub struct Workerd {
    /// The workerd process.
    pub child: KillOnDrop,
    /// Where the Worker listens.
    pub http: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Workerd {
    /// The workerd binary: `SLUICE_WORKERD`, else `workerd` on PATH. `scripts/test`
    /// installs it from npm when missing and sets `SLUICE_WORKERD`.
    pub fn program() -> PathBuf {
        std::env::var_os("SLUICE_WORKERD")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("workerd"))
    }

    /// Serves the built Worker with these text bindings (variables and secrets),
    /// and waits until it answers `/healthz`.
    pub fn start(bindings: &[(&str, &str)]) -> Workerd {
        let build = workspace().join("edge/build");
        assert!(
            build.join("index_bg.wasm").exists(),
            "the Worker is not built: run scripts/test, which builds it with worker-build into edge/build"
        );
        let dir = tempfile::tempdir().expect("a temporary folder");
        for file in ["index.js", "index_bg.wasm"] {
            std::fs::copy(build.join(file), dir.path().join(file)).expect("the Worker is copied");
        }
        let port = free_port();
        let bindings: Vec<String> = bindings
            .iter()
            .map(|(k, v)| format!("    (name = {k:?}, text = {v:?}),\n"))
            .collect();
        let config = format!(
            r#"using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .edge),
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "http", address = "127.0.0.1:{port}", http = (), service = "main")],
);

const edge :Workerd.Worker = (
  modules = [
    (name = "index.js", esModule = embed "index.js"),
    (name = "index_bg.wasm", wasm = embed "index_bg.wasm"),
  ],
  compatibilityDate = "2026-11-01",
  bindings = [
{}  ],
  globalOutbound = "internet",
);
"#,
            bindings.concat()
        );
        let path = dir.path().join("config.capnp");
        std::fs::write(&path, config).expect("the workerd config is written");
        let program = Workerd::program();
        let child = Command::new(&program)
            .arg("serve")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run workerd `{}` ({e}); run scripts/test, which installs it, or set SLUICE_WORKERD",
                    program.display()
                )
            });
        let child = KillOnDrop(child);
        let http = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        wait_until("workerd serves the Worker", || {
            http_get(http, "/healthz").is_ok_and(|(status, _)| status == 200)
        });
        Workerd {
            child,
            http,
            _dir: dir,
        }
    }
}

/// The resident set size of process `pid`, in MiB (0 when it cannot be read).
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A body of events of the test stream `stream` (schema `sluice/test/event`),
/// one per message, each with a `meta.id` made from its message (its first 64
/// characters), so that a retry of the same events is deduplicated as a
/// client's retry should be.
pub fn test_events_body(stream: &str, messages: &[String]) -> Vec<u8> {
    let events: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let id: String = m.chars().take(64).collect();
            serde_json::json!({
                "$schema": "/sluice/test/event/1.0.0",
                "meta": {"stream": stream, "id": id},
                "dt": "2026-11-27T12:00:00.000Z",
                "message": m,
            })
        })
        .collect();
    serde_json::to_vec(&events).unwrap_or_default()
}

/// What a [`send_retrying`] call saw.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// The status that finally took the events (201 or 202).
    pub status: u16,
    /// 503 and 429 answers before that, each with a Retry-After.
    pub refused: usize,
    /// The first refusal's body.
    pub refusal: Option<String>,
}

/// Posts `messages` to the edge until it takes them (201 or 202), as a
/// client that honours Retry-After does: a 503 or 429 is retried after the
/// time it names (at most 200 ms here, to keep tests short). Any other
/// status panics, naming it and its body.
pub fn send_retrying(
    edge: std::net::SocketAddr,
    stream: &str,
    messages: &[String],
    hasty: bool,
) -> Delivery {
    send_counting(
        edge,
        stream,
        messages,
        hasty,
        &std::sync::atomic::AtomicUsize::new(0),
    )
}

/// [`send_retrying`], adding each refusal to `refusals` as it comes.
pub fn send_counting(
    edge: std::net::SocketAddr,
    stream: &str,
    messages: &[String],
    hasty: bool,
    refusals: &std::sync::atomic::AtomicUsize,
) -> Delivery {
    let body = test_events_body(stream, messages);
    let path = if hasty {
        "/v1/events?hasty=true"
    } else {
        "/v1/events"
    };
    let mut delivery = Delivery::default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the edge did not take a batch within 180 s"
        );
        let reply = match http_call(
            edge,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            &body,
        ) {
            Ok(r) => r,
            Err(e) => panic!("the edge does not answer: {e}"),
        };
        match reply.status {
            201 | 202 => {
                delivery.status = reply.status;
                return delivery;
            }
            503 | 429 => {
                let retry = reply
                    .header("retry-after")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("{} without a Retry-After", reply.status));
                delivery.refused += 1;
                refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                delivery
                    .refusal
                    .get_or_insert_with(|| String::from_utf8_lossy(&reply.body).into_owned());
                std::thread::sleep(std::time::Duration::from_millis((retry * 1000).min(200)));
            }
            other => panic!(
                "the edge answered {other}: {}",
                String::from_utf8_lossy(&reply.body)
            ),
        }
    }
}

/// A tmpfs of `mib` MiB mounted at a folder for one test (a disk that can
/// fill), unmounted when dropped. Needs root, as `.ci/run` has.
pub struct SmallDisk {
    /// Where it is mounted.
    pub path: PathBuf,
}

impl SmallDisk {
    /// Mounts a fresh tmpfs of `mib` MiB at `path` (created if missing).
    pub fn mount(path: &Path, mib: u32) -> SmallDisk {
        std::fs::create_dir_all(path).expect("the mount point is created");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a {mib} MiB tmpfs at {} failed: the disk-full tests need root (as .ci/run has)",
            path.display()
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }

    /// Fills the disk but for about `free_kib` KiB with a ballast file.
    pub fn fill_leaving(&self, free_kib: u64) {
        use std::io::Write;
        let ballast = self.path.join("ballast");
        let mut f = std::fs::File::create(&ballast).expect("the ballast file is created");
        let chunk = vec![0xA5u8; 64 * 1024];
        while self.free_kib() > free_kib + 64 {
            f.write_all(&chunk).expect("the ballast is written");
        }
        f.sync_all().expect("the ballast is synced");
    }

    /// Deletes the ballast: the space comes back.
    pub fn free(&self) {
        std::fs::remove_file(self.path.join("ballast")).expect("the ballast is removed");
    }

    /// Free space in KiB.
    pub fn free_kib(&self) -> u64 {
        let out = Command::new("df")
            .args(["-k", "--output=avail"])
            .arg(&self.path)
            .output()
            .expect("df runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Stops (SIGSTOP) or resumes (SIGCONT) process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{sig} {pid} failed");
}
