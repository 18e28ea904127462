//! Batch ingest over QUIC (TLS 1.3, ALPN `sluice/1`): one bidirectional
//! stream per batch, in the protocol of [`sluice_shared::link`]. Edges are
//! authenticated by a client certificate the handshake verified against the
//! configured CA, or by the pre-shared token in the request head.

use crate::buffers::BufferPool;
use crate::commit::{CommitLoop, SubmitError};
use sluice_host::quic::peer_certified;
use sluice_host::token::Token;
use sluice_shared::link::{RequestAuth, response as reply, split_request, status};
use sluice_shared::{Batch, WireLimits};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use sluice_host::quic::{QuicLimits, server_endpoint};

/// Accepts connections until the endpoint closes, feeding batches to `sink`.
pub async fn serve(
    endpoint: quinn::Endpoint,
    sink: CommitLoop,
    token: Option<Token>,
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
    sink: CommitLoop,
    token: Option<Token>,
    limits: WireLimits,
    quic_limits: QuicLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let ingest = Ingest {
        sink,
        token,
        limits,
        // Request buffers kept for the next batches: 8 of at most 2 MiB.
        frames: Arc::new(BufferPool::new(8, 2 << 20)),
    };
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
        let (ingest, open, stop) = (ingest.clone(), open.clone(), stop.clone());
        connections.spawn(async move {
            let _slot = ConnectionSlot(open);
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "Refused a QUIC connection during its handshake.");
                    return;
                }
            };
            serve_connection(conn, ingest, stop).await;
        });
    }
    while connections.join_next().await.is_some() {}
    // Let the closes reach the edges before the endpoint goes.
    let _ = tokio::time::timeout(ANSWER_DELIVERY, endpoint.wait_idle()).await;
}

/// What every batch stream needs: where batches go, who may send them, and
/// the buffers requests are read into.
#[derive(Clone)]
struct Ingest {
    sink: CommitLoop,
    token: Option<Token>,
    limits: WireLimits,
    frames: Arc<BufferPool>,
}

async fn serve_connection(
    conn: quinn::Connection,
    ingest: Ingest,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let certified = peer_certified(&conn);
    let mut streams = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let ingest = ingest.clone();
                    streams.spawn(async move {
                        if let Err(e) = handle_stream(send, recv, certified, &ingest).await
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
    ingest: &Ingest,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Ingest {
        sink,
        token,
        limits,
        frames,
    } = ingest;
    let request = read_frame(&mut recv, limits.max_frame_bytes + 512, frames).await?;
    // Timed from the whole frame's arrival, as over HTTP.
    let started = std::time::Instant::now();
    let answer = match authenticate(&request, certified, token.as_ref()) {
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
    frames.put(request);
    send.write_all(&answer).await?;
    send.finish()?;
    // Held until the edge has the answer: a connection closed (the aggregator stopping)
    // while an answer is still unsent would lose it.
    let _ = tokio::time::timeout(ANSWER_DELIVERY, send.stopped()).await;
    Ok(())
}

/// Reads a stream's whole request, in order, into a buffer from `frames`.
async fn read_frame(
    recv: &mut quinn::RecvStream,
    limit: usize,
    frames: &BufferPool,
) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    let mut frame = frames.take();
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        if frame.len() + chunk.bytes.len() > limit {
            return Err(format!("a batch frame over the limit of {limit} bytes").into());
        }
        frame.extend_from_slice(&chunk.bytes);
    }
    Ok(frame)
}

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
    token: Option<&Token>,
) -> Result<&'r [u8], ()> {
    match split_request(request) {
        Some((RequestAuth::Certificate, frame)) if certified => Ok(frame),
        Some((RequestAuth::Token(given), frame)) if token.is_some_and(|t| t.matches(given)) => {
            Ok(frame)
        }
        _ => Err(()),
    }
}
