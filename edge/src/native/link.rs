//! The QUIC link from a native edge to its aggregators: one reused
//! connection, batches sent one per bidirectional stream (the protocol of
//! [`sluice_shared::link`]), failover down the list of aggregators when a
//! connection fails, and reconnection with exponential backoff and jitter.

use bytes::Bytes;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sluice_shared::link::{ALPN, MAX_UDP_PAYLOAD, request_head};
use sluice_shared::{Batch, LinkReply, WireLimits};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A client certificate chain and its key.
#[derive(Debug)]
pub struct Identity {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Errors setting up or using the link.
#[derive(Debug, thiserror::Error)]
pub enum LinkSetupError {
    /// rustls refused the configuration.
    #[error("QUIC TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The TLS configuration does not suit QUIC.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
    /// The local socket could not be opened.
    #[error("QUIC client socket: {0}")]
    Io(#[from] std::io::Error),
    /// A PEM file is missing or holds nothing usable.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// Reads certificates from a PEM file.
pub fn certs_from_pem(
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, LinkSetupError> {
    use rustls::pki_types::pem::PemObject;
    let pem = |what: String| LinkSetupError::Pem {
        path: path.to_path_buf(),
        what,
    };
    let bytes = std::fs::read(path).map_err(|e| pem(format!("cannot read it: {e}")))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(pem("no certificate found".into()));
    }
    Ok(certs)
}

/// Reads a private key from a PEM file.
pub fn key_from_pem(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, LinkSetupError> {
    use rustls::pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|e| LinkSetupError::Pem {
        path: path.to_path_buf(),
        what: format!("cannot read it: {e}"),
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| LinkSetupError::Pem {
        path: path.to_path_buf(),
        what: format!("no usable private key: {e}"),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A QUIC client endpoint trusting `server_ca`, presenting `identity` when given.
pub fn client_endpoint(
    server_ca: CertificateDer<'static>,
    identity: Option<Identity>,
) -> Result<quinn::Endpoint, LinkSetupError> {
    let mut roots = RootCertStore::empty();
    roots.add(server_ca)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut tls = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain, id.key)?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        QuicClientConfig::try_from(tls).map_err(|e| LinkSetupError::Quic(e.to_string()))?;
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| LinkSetupError::Quic(e.to_string()))?;
    let mut endpoint = quinn::Endpoint::new(
        endpoint_config,
        None,
        udp_socket(SocketAddr::from(([0, 0, 0, 0], 0)))?,
        Arc::new(quinn::TokioRuntime),
    )?;
    let mut transport = quinn::TransportConfig::default();
    // Batches go out in the order they are written, each finished before the next starts:
    // round-robin across streams would make every batch in flight wait for all the others.
    transport.send_fairness(false);
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    transport.max_idle_timeout(Some(quinn::VarInt::from_u32(15_000).into()));
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    transport.mtu_discovery_config(Some(mtu));
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Sends one encoded batch frame on `conn` and returns the raw answer.
pub async fn send_frame(
    conn: &quinn::Connection,
    frame: Bytes,
    token: Option<&str>,
    limits: &WireLimits,
) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&request_head(token)?).await?;
    // Handed over whole: the stream sends from the frame itself instead of a copy.
    send.write_chunk(frame).await?;
    send.finish()?;
    Ok(recv.read_to_end(limits.max_frame_bytes + 512).await?)
}

/// Sends `batch` on `conn` (with `token`, or by certificate) and reads the answer.
pub async fn send_batch(
    conn: &quinn::Connection,
    batch: &Batch,
    token: Option<&str>,
    limits: &WireLimits,
) -> Result<LinkReply, Box<dyn std::error::Error + Send + Sync>> {
    let answer = send_frame(conn, batch.encode(true).into(), token, limits).await?;
    Ok(LinkReply::decode(&answer, batch, limits)?)
}

/// No aggregator could be reached; try again after `retry_after`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no aggregator answers ({last}); retrying in {} ms", retry_after.as_millis())]
pub struct LinkDown {
    /// The last failure seen.
    pub last: String,
    /// Another request is connecting to an aggregator right now: no failure
    /// yet, just a moment's wait.
    pub connecting: bool,
    /// When the next connection attempt will be made.
    pub retry_after: Duration,
}

struct State {
    conn: Option<quinn::Connection>,
    /// Index of the aggregator to try first.
    current: usize,
    /// Rounds over every aggregator that failed in a row.
    failures: u32,
    /// No connection attempt before this.
    next_attempt: Instant,
    last_error: String,
}

/// Clears the connecting flag when the attempt ends, finished or cancelled.
struct Attempt<'a>(&'a AtomicBool);

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Connections to a list of aggregators, one in use at a time.
pub struct Link {
    endpoint: quinn::Endpoint,
    aggregators: Vec<String>,
    server_name: String,
    token: Option<String>,
    limits: WireLimits,
    state: tokio::sync::Mutex<State>,
    /// A task is connecting: others do not wait behind it.
    connecting: AtomicBool,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Link {
    /// A link over `endpoint` to `aggregators` (`host:port`), whose certificates name `server_name`.
    pub fn new(
        endpoint: quinn::Endpoint,
        aggregators: Vec<String>,
        server_name: String,
        token: Option<String>,
        limits: WireLimits,
    ) -> Self {
        Link {
            endpoint,
            aggregators,
            server_name,
            token,
            limits,
            state: tokio::sync::Mutex::new(State {
                conn: None,
                current: 0,
                failures: 0,
                next_attempt: Instant::now(),
                last_error: String::new(),
            }),
            connecting: AtomicBool::new(false),
        }
    }

    /// The connection in use, or a new one to the first aggregator that answers.
    async fn connection(&self) -> Result<quinn::Connection, LinkDown> {
        let mut state = self.state.lock().await;
        if let Some(conn) = &state.conn {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
            state.conn = None;
        }
        let now = Instant::now();
        if now < state.next_attempt {
            return Err(LinkDown {
                last: state.last_error.clone(),
                connecting: false,
                retry_after: state.next_attempt - now,
            });
        }
        if self.connecting.swap(true, Ordering::AcqRel) {
            return Err(LinkDown {
                last: "connecting to an aggregator".into(),
                connecting: true,
                retry_after: Duration::from_millis(50),
            });
        }
        // A request that gives up (its timeout) drops this future mid-attempt; the guard lets the next one try.
        let _attempt = Attempt(&self.connecting);
        let first = state.current;
        drop(state);
        let n = self.aggregators.len();
        let mut failures = Vec::new();
        let mut found = None;
        for k in 0..n {
            let i = (first + k) % n;
            let target = &self.aggregators[i];
            match self.connect(target).await {
                Ok(conn) => {
                    found = Some((i, k, conn));
                    break;
                }
                Err(e) => {
                    tracing::warn!(aggregator = %target, error = %e, "Cannot reach an aggregator.");
                    failures.push(format!("{target}: {e}"));
                }
            }
        }
        let mut state = self.state.lock().await;
        if let Some(last) = failures.last() {
            state.last_error.clone_from(last);
        }
        if let Some((i, k, conn)) = found {
            if state.failures > 0 || k > 0 {
                tracing::info!(aggregator = %self.aggregators[i], "Connected to an aggregator.");
            }
            state.current = i;
            state.failures = 0;
            state.conn = Some(conn.clone());
            return Ok(conn);
        }
        // Every aggregator failed: back off, doubling, with jitter so that edges do not come back in step.
        state.failures = state.failures.saturating_add(1);
        let base = Duration::from_millis(100)
            .saturating_mul(1 << state.failures.min(6))
            .min(MAX_BACKOFF);
        let wait = base.mul_f64(0.5 + fastrand::f64() * 0.5);
        state.next_attempt = Instant::now() + wait;
        Err(LinkDown {
            last: state.last_error.clone(),
            connecting: false,
            retry_after: wait,
        })
    }

    async fn connect(&self, target: &str) -> Result<quinn::Connection, String> {
        let addr = tokio::net::lookup_host(target)
            .await
            .map_err(|e| format!("cannot resolve: {e}"))?
            .next()
            .ok_or("resolves to no address")?;
        let connecting = self
            .endpoint
            .connect(addr, &self.server_name)
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no handshake within {} s",
                CONNECT_TIMEOUT.as_secs()
            )),
        }
    }

    /// Forgets `conn` if it is the one in use, and moves on to the next aggregator.
    async fn drop_connection(&self, conn: &quinn::Connection, why: String) {
        let mut state = self.state.lock().await;
        if state
            .conn
            .as_ref()
            .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            tracing::warn!(error = %why, "Lost the aggregator connection; failing over.");
            state.conn = None;
            state.current = (state.current + 1) % self.aggregators.len().max(1);
            state.last_error = why;
        }
    }

    /// Sends one batch and returns the aggregator's answer; a connection that
    /// fails is replaced (on the next aggregator) and the batch sent again once.
    pub async fn send(&self, batch: &Batch, frame: &Bytes) -> Result<LinkReply, LinkDown> {
        let mut last = String::new();
        for _ in 0..2 {
            let conn = self.connection().await?;
            match send_frame(&conn, frame.clone(), self.token.as_deref(), &self.limits).await {
                Ok(answer) => {
                    return LinkReply::decode(&answer, batch, &self.limits).map_err(|e| LinkDown {
                        last: e.to_string(),
                        connecting: false,
                        retry_after: Duration::from_millis(100),
                    });
                }
                Err(e) => {
                    last = e.to_string();
                    self.drop_connection(&conn, last.clone()).await;
                }
            }
        }
        Err(LinkDown {
            last,
            connecting: false,
            retry_after: Duration::from_millis(100),
        })
    }
}

/// Socket buffers asked for (the kernel caps them at `net.core.rmem_max`/`wmem_max`).
const UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// A UDP socket with large buffers: acknowledgements and batch packets come in
/// bursts, and a packet dropped by a full buffer is a QUIC loss that delays
/// its batch by a retransmission.
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let sock = socket2::SockRef::from(&socket);
    for (what, set) in [
        ("receive", sock.set_recv_buffer_size(UDP_BUFFER_BYTES)),
        ("send", sock.set_send_buffer_size(UDP_BUFFER_BYTES)),
    ] {
        if let Err(e) = set {
            tracing::warn!(error = %e, "Could not enlarge the QUIC socket's {what} buffer.");
        }
    }
    Ok(socket)
}
