//! The edge as a Cloudflare Worker, under workerd.

use crate::{KillOnDrop, free_port, http_get, wait_until, workspace};
use std::path::PathBuf;
use std::process::Command;

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
