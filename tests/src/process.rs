//! Processes under test: killed when a test ends however it ends, stopped
//! by signal, measured, and waited on; ports for them to listen on.

use std::process::Command;

/// A child process killed (SIGKILL) and reaped when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// Stops (SIGSTOP) or resumes (SIGCONT) process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// The resident set size of process `pid`, in MiB (0 when it cannot be read).
pub fn rss_mib(pid: u32) -> f64 {
    sluice_host::process::usage(pid).map_or(0.0, |u| u.resident_bytes as f64 / (1 << 20) as f64)
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
