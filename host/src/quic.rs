//! QUIC endpoints for batch traffic (TLS 1.3, ALPN `sluice/1`): the client
//! an edge (or a test, or a benchmark) sends batches with, the server an
//! aggregator takes them on, the UDP sockets under both, and the exchange
//! of one batch on one bidirectional stream. The protocol's bytes are the
//! core's ([`sluice_shared::link`]).

use crate::tls::{Identity, TlsError, provider};
use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use sluice_shared::link::{ALPN, MAX_UDP_PAYLOAD, request_head};
use sluice_shared::{Batch, LinkReply, WireLimits};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Errors setting up an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// Certificates or keys.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// rustls refused the configuration.
    #[error("QUIC TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The TLS or transport configuration does not suit QUIC.
    #[error("QUIC configuration: {0}")]
    Config(String),
    /// The socket could not be opened.
    #[error("QUIC socket on {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Socket buffers asked for (the kernel caps them at `net.core.rmem_max`/`wmem_max`).
const UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// A UDP socket with large buffers: batch packets and their acknowledgements
/// come in bursts that overflow Linux's default buffers (about 200 KB), and
/// every packet dropped there is a QUIC loss that delays its batch by a
/// retransmission.
fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, QuicError> {
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|source| QuicError::Io { addr, source })?;
    let sock = socket2::SockRef::from(&socket);
    for (what, set) in [
        ("receive", sock.set_recv_buffer_size(UDP_BUFFER_BYTES)),
        ("send", sock.set_send_buffer_size(UDP_BUFFER_BYTES)),
    ] {
        if let Err(e) = set {
            tracing::warn!(error = %e, "Could not enlarge the QUIC socket's {what} buffer.");
        }
    }
    tracing::debug!(
        receive = sock.recv_buffer_size().unwrap_or(0),
        send = sock.send_buffer_size().unwrap_or(0),
        "QUIC socket buffers."
    );
    Ok(socket)
}

/// An endpoint on `addr` that announces [`MAX_UDP_PAYLOAD`], serving with `server` when given.
fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, QuicError> {
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| QuicError::Config(e.to_string()))?;
    quinn::Endpoint::new(
        endpoint_config,
        server,
        udp_socket(addr)?,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| QuicError::Io { addr, source })
}

/// Transport settings both ends share.
fn transport() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    // Batches go out in the order they are written, each finished before the next starts:
    // round-robin across streams would make every batch in flight wait for all the others.
    transport.send_fairness(false);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    transport.mtu_discovery_config(Some(mtu));
    transport
}

/// A client endpoint trusting `server_ca`, presenting `identity` when given.
pub fn client_endpoint(
    server_ca: CertificateDer<'static>,
    identity: Option<Identity>,
) -> Result<quinn::Endpoint, QuicError> {
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
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| QuicError::Config(e.to_string()))?;
    let mut endpoint = endpoint(SocketAddr::from(([0, 0, 0, 0], 0)), None)?;
    let mut transport = transport();
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    transport.max_idle_timeout(Some(quinn::VarInt::from_u32(15_000).into()));
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Bounds on what QUIC clients may hold open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicLimits {
    /// Connections served at once; more are refused during the handshake.
    pub max_connections: usize,
    /// Batch streams open at once on one connection; QUIC flow control holds back the rest.
    pub max_streams_per_connection: u32,
}

impl Default for QuicLimits {
    fn default() -> Self {
        QuicLimits {
            max_connections: 1024,
            max_streams_per_connection: 64,
        }
    }
}

/// A server endpoint on `addr` presenting `server`, accepting client
/// certificates signed by `client_ca` (and clients without one, which must
/// then present a token in their requests).
pub fn server_endpoint(
    addr: SocketAddr,
    server: Identity,
    client_ca: CertificateDer<'static>,
    limits: QuicLimits,
) -> Result<quinn::Endpoint, QuicError> {
    let mut roots = RootCertStore::empty();
    roots.add(client_ca)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| QuicError::Config(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(server.chain, server.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Config(e.to_string()))?;
    let mut transport = transport();
    transport
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.max_streams_per_connection))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    endpoint(addr, Some(config))
}

/// Whether the peer of `conn` presented a client certificate the handshake verified.
pub fn peer_certified(conn: &quinn::Connection) -> bool {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .is_some_and(|chain| !chain.is_empty())
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
