//! Batch ingest over QUIC (TLS 1.3, ALPN `sluice/1`): one bidirectional
//! stream per batch, in the protocol of [`sluice_shared::link`]. Edges are
//! authenticated by a client certificate the handshake verified against the
//! configured CA, or by the pre-shared token in the request head.

use crate::sink::{Sink, SubmitError};
use crate::tls::{Identity, TlsError};
use quinn::crypto::rustls::QuicServerConfig;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use sluice_shared::link::{ALPN, MAX_UDP_PAYLOAD, response as reply, status};
use sluice_shared::{Batch, WireLimits};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Errors setting up QUIC.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// Certificates or keys.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// rustls refused the configuration.
    #[error("QUIC TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("QUIC client verification: {0}")]
    Verifier(String),
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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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

/// A QUIC server endpoint on `addr` presenting `server`, accepting edge
/// certificates signed by `client_ca` (and, through tokens, edges without one).
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
        .map_err(|e| QuicError::Verifier(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(server.chain, server.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Verifier(e.to_string()))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.max_streams_per_connection))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .send_fairness(false);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    transport.mtu_discovery_config(Some(mtu));
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    let socket = udp_socket(addr).map_err(|source| QuicError::Io { addr, source })?;
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| QuicError::Verifier(e.to_string()))?;
    quinn::Endpoint::new(
        endpoint_config,
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| QuicError::Io { addr, source })
}

/// Socket buffers asked for (the kernel caps them at `net.core.rmem_max`/`wmem_max`).
const UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// A UDP socket with large buffers: bursts of batch packets overflow Linux's
/// default receive buffer (about 200 KB), and every packet dropped there is a
/// QUIC loss that delays its batch by a retransmission.
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
    tracing::debug!(
        receive = sock.recv_buffer_size().unwrap_or(0),
        send = sock.send_buffer_size().unwrap_or(0),
        "QUIC socket buffers."
    );
    Ok(socket)
}

/// Accepts connections until the endpoint closes, feeding batches to `sink`.
pub async fn serve(
    endpoint: quinn::Endpoint,
    sink: Sink,
    token: Option<Arc<str>>,
    limits: WireLimits,
    quic_limits: QuicLimits,
) {
    let (_never, stop) = tokio::sync::watch::channel(false);
    serve_until(endpoint, sink, token, limits, quic_limits, stop).await;
}

/// Resolves once `stop` turns true; never, if its sender is gone first.
async fn stopping(stop: &mut tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// As [`serve`], until `stop` turns true: then no new connection or batch
/// stream is taken, every batch already on its way is answered, each
/// connection is closed once its batches are, and this returns.
pub async fn serve_until(
    endpoint: quinn::Endpoint,
    sink: Sink,
    token: Option<Arc<str>>,
    limits: WireLimits,
    quic_limits: QuicLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(i) => i,
                None => break,
            },
            () = stopping(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        if open.load(Ordering::Acquire) >= quic_limits.max_connections {
            tracing::warn!(
                limit = quic_limits.max_connections,
                "Refused a QUIC connection: at the connection limit."
            );
            incoming.refuse();
            continue;
        }
        open.fetch_add(1, Ordering::AcqRel);
        let (sink, token, open, stop) = (sink.clone(), token.clone(), open.clone(), stop.clone());
        connections.spawn(async move {
            let _slot = ConnectionSlot(open);
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "Refused a QUIC connection during its handshake.");
                    return;
                }
            };
            serve_connection(conn, sink, token, limits, stop).await;
        });
    }
    while connections.join_next().await.is_some() {}
    // Let the closes reach the edges before the endpoint goes.
    let _ = tokio::time::timeout(ANSWER_DELIVERY, endpoint.wait_idle()).await;
}

async fn serve_connection(
    conn: quinn::Connection,
    sink: Sink,
    token: Option<Arc<str>>,
    limits: WireLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let certified = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .is_some_and(|chain| !chain.is_empty());
    let mut streams = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let (sink, token) = (sink.clone(), token.clone());
                    streams.spawn(async move {
                        if let Err(e) =
                            handle_stream(send, recv, certified, token.as_deref(), &sink, &limits).await
                        {
                            tracing::debug!(error = %e, "A QUIC batch stream ended early.");
                        }
                    });
                }
                Err(_) => break,
            },
            () = stopping(&mut stop) => {
                // No new batches; the ones on their way are answered, then the connection closes.
                conn.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(0));
                while streams.join_next().await.is_some() {}
                conn.close(quinn::VarInt::from_u32(0), b"aggregator stopping");
                return;
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    while streams.join_next().await.is_some() {}
}

async fn handle_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    certified: bool,
    token: Option<&str>,
    sink: &Sink,
    limits: &WireLimits,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let request = read_frame(&mut recv, limits.max_frame_bytes + 512).await?;
    // Timed from the whole frame's arrival, as over HTTP.
    let started = std::time::Instant::now();
    let answer = match authenticate(&request, certified, token) {
        Err(()) => {
            tracing::warn!(
                certified,
                "Refused a QUIC batch without a valid client certificate or token."
            );
            reply(
                status::UNAUTHORIZED,
                b"a client certificate from the configured CA, or the edge token, is required",
            )
        }
        Ok(frame) => match Batch::decode(frame, limits) {
            Err(e) => reply(status::BAD_REQUEST, e.to_string().as_bytes()),
            Ok(batch) => match sink.submit(batch) {
                Err(SubmitError::Busy) => reply(status::BUSY, &1000u32.to_le_bytes()),
                Err(SubmitError::Stopped) => {
                    reply(status::FAILED, b"the aggregator's sink has stopped")
                }
                Ok(rx) => match rx.await {
                    Ok(ack) => {
                        sink.metrics()
                            .ack_seconds
                            .observe(started.elapsed().as_secs_f64());
                        reply(status::OK, &ack.encode())
                    }
                    Err(_) => reply(
                        status::FAILED,
                        b"the sink dropped the batch without an answer",
                    ),
                },
            },
        },
    };
    FRAMES.put(request);
    send.write_all(&answer).await?;
    send.finish()?;
    // Held until the edge has the answer: a connection closed (the aggregator stopping)
    // while an answer is still unsent would lose it.
    let _ = tokio::time::timeout(ANSWER_DELIVERY, send.stopped()).await;
    Ok(())
}

/// Reads a stream's whole request, in order, into a buffer from [`FRAMES`].
async fn read_frame(
    recv: &mut quinn::RecvStream,
    limit: usize,
) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    let mut frame = FRAMES.take();
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        if frame.len() + chunk.bytes.len() > limit {
            return Err(format!("a batch frame over the limit of {limit} bytes").into());
        }
        frame.extend_from_slice(&chunk.bytes);
    }
    Ok(frame)
}

/// Request buffers kept for the next batches (8, of at most 2 MiB each).
static FRAMES: sluice_shared::BufferPool = sluice_shared::BufferPool::new(8, 2 << 20);

/// How long a batch stream waits for the edge to acknowledge its answer.
const ANSWER_DELIVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Frees a connection's place in the count when the connection ends.
struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Checks the request's authentication and returns the frame after it.
fn authenticate<'r>(
    request: &'r [u8],
    certified: bool,
    token: Option<&str>,
) -> Result<&'r [u8], ()> {
    match request.split_first() {
        Some((0, frame)) if certified => Ok(frame),
        Some((1, rest)) => {
            let [a, b, rest @ ..] = rest else {
                return Err(());
            };
            let len = usize::from(u16::from_le_bytes([*a, *b]));
            let given = rest.get(..len).ok_or(())?;
            let want = token.ok_or(())?.as_bytes();
            let same = given.len() == want.len()
                && given
                    .iter()
                    .zip(want)
                    .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                    == 0;
            if same { Ok(&rest[len..]) } else { Err(()) }
        }
        _ => Err(()),
    }
}
