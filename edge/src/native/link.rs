//! The QUIC link from a native edge to its aggregators: one reused
//! connection, batches sent one per bidirectional stream (the protocol of
//! [`sluice_shared::link`], over `sluice-host`'s endpoint), and the core's
//! [`Failover`] choosing which aggregator to connect to and when.

use bytes::Bytes;
use sluice_host::quic::send_frame;
use sluice_shared::forward::{Attempt, Failover};
use sluice_shared::{Batch, LinkReply, WireLimits};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    /// The connection in use, and the index of its aggregator.
    conn: Option<(quinn::Connection, usize)>,
    failover: Failover,
    last_error: String,
}

/// Clears the connecting flag when the attempt ends, finished or cancelled.
struct Connecting<'a>(&'a AtomicBool);

impl Drop for Connecting<'_> {
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

impl Link {
    /// A link over `endpoint` to `aggregators` (`host:port`), whose certificates name `server_name`.
    pub fn new(
        endpoint: quinn::Endpoint,
        aggregators: Vec<String>,
        server_name: String,
        token: Option<String>,
        limits: WireLimits,
    ) -> Self {
        let failover = Failover::new(aggregators.len(), fastrand::u64(..));
        Link {
            endpoint,
            aggregators,
            server_name,
            token,
            limits,
            state: tokio::sync::Mutex::new(State {
                conn: None,
                failover,
                last_error: String::new(),
            }),
            connecting: AtomicBool::new(false),
        }
    }

    /// The connection in use, or a new one to the first aggregator that answers.
    async fn connection(&self) -> Result<(quinn::Connection, usize), LinkDown> {
        let mut state = self.state.lock().await;
        if let Some((conn, index)) = &state.conn {
            if conn.close_reason().is_none() {
                return Ok((conn.clone(), *index));
            }
            state.conn = None;
        }
        let order = match state.failover.attempt(Instant::now()) {
            Attempt::Wait(retry_after) => {
                return Err(LinkDown {
                    last: state.last_error.clone(),
                    connecting: false,
                    retry_after,
                });
            }
            Attempt::Try(order) => order,
        };
        if self.connecting.swap(true, Ordering::AcqRel) {
            return Err(LinkDown {
                last: "connecting to an aggregator".into(),
                connecting: true,
                retry_after: Duration::from_millis(50),
            });
        }
        // A request that gives up (its timeout) drops this future mid-attempt; the guard lets the next one try.
        let _connecting = Connecting(&self.connecting);
        let recovering = state.failover.failing();
        drop(state);
        let mut failures = Vec::new();
        let mut found = None;
        for (k, &i) in order.iter().enumerate() {
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
            if recovering || k > 0 {
                tracing::info!(aggregator = %self.aggregators[i], "Connected to an aggregator.");
            }
            state.failover.on_connected(i);
            state.conn = Some((conn.clone(), i));
            return Ok((conn, i));
        }
        let retry_after = state.failover.on_all_failed(Instant::now());
        Err(LinkDown {
            last: state.last_error.clone(),
            connecting: false,
            retry_after,
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
    async fn drop_connection(&self, conn: &quinn::Connection, index: usize, why: String) {
        let mut state = self.state.lock().await;
        if state
            .conn
            .as_ref()
            .is_some_and(|(c, _)| c.stable_id() == conn.stable_id())
        {
            tracing::warn!(error = %why, "Lost the aggregator connection; failing over.");
            state.conn = None;
            state.failover.on_lost(index);
            state.last_error = why;
        }
    }

    /// Sends one batch and returns the aggregator's answer; a connection that
    /// fails is replaced (on the next aggregator) and the batch sent again once.
    pub async fn send(&self, batch: &Batch, frame: &Bytes) -> Result<LinkReply, LinkDown> {
        let mut last = String::new();
        for _ in 0..2 {
            let (conn, index) = self.connection().await?;
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
                    self.drop_connection(&conn, index, last.clone()).await;
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
