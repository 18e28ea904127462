//! A real Kafka-protocol broker for the Kafka tests: tansu, as a process.

use crate::KillOnDrop;
use std::path::PathBuf;
use std::process::Command;

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
