//! The QUIC links from a native edge to its aggregators. Every listed
//! aggregator is in use: each event goes to the owner of its id, chosen by
//! the core's rendezvous hashing ([`Owners`]) over the aggregators that are
//! up, so that an id is deduplicated in one place. A batch is split into one
//! sub-batch per owner, sent on that owner's reused connection (one
//! bidirectional stream per batch, the protocol of [`sluice_shared::link`])
//! and answered from all owners' verdicts. An aggregator whose connection
//! fails is down, with the core's [`Failover`] backoff, until a later batch
//! reaches it again; meanwhile its ids go to their next-ranked aggregator
//! (counted as owner moves).

use super::metrics::Metrics;
use bytes::Bytes;
use sluice_host::quic::send_frame;
use sluice_shared::forward::{Attempt, Failover, Owners, PartOutcome, Scatter, aggregator_name};
use sluice_shared::{Batch, LinkReply, WireLimits};
use std::sync::Mutex;
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

/// One aggregator: its connection and whether it is up.
struct Peer {
    name: String,
    address: String,
    /// The connection in use; held while connecting, so that one task connects at a time.
    conn: tokio::sync::Mutex<Option<quinn::Connection>>,
    /// Backoff after failures (a list of one: the core's policy for one aggregator).
    health: Mutex<Health>,
}

struct Health {
    failover: Failover,
    last_error: String,
}

impl Peer {
    /// Whether a batch may be sent here at `now`: not waiting out a backoff.
    fn up(&self, now: Instant) -> bool {
        self.health
            .lock()
            .is_ok_and(|h| matches!(h.failover.attempt(now), Attempt::Try(_)))
    }

    fn failed(&self, why: String) -> Duration {
        match self.health.lock() {
            Ok(mut h) => {
                h.last_error = why;
                h.failover.on_all_failed(Instant::now())
            }
            Err(_) => Duration::from_millis(100),
        }
    }

    fn wait(&self, now: Instant) -> Option<Duration> {
        match self.health.lock().ok()?.failover.attempt(now) {
            Attempt::Wait(d) => Some(d),
            Attempt::Try(_) => None,
        }
    }

    fn last_error(&self) -> String {
        self.health
            .lock()
            .map(|h| h.last_error.clone())
            .unwrap_or_default()
    }
}

/// Connections to every listed aggregator.
pub struct Link {
    endpoint: quinn::Endpoint,
    peers: Vec<Peer>,
    owners: Owners,
    server_name: String,
    token: Option<String>,
    limits: WireLimits,
    metrics: Metrics,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an aggregator may take to answer a batch before it is taken for down (its
/// events then go to their next-ranked aggregator). Aggregators answer at once when
/// busy, so a silent one is gone.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// How one owner's sub-batch ended.
enum Sent {
    Reply(LinkReply),
    /// The connection failed: the aggregator is down for now.
    Down(String),
}

impl Link {
    /// A link over `endpoint` to `aggregators` (`host:port`, or `name=host:port` where
    /// edges reach one aggregator at different addresses), whose certificates name `server_name`.
    pub fn new(
        endpoint: quinn::Endpoint,
        aggregators: Vec<String>,
        server_name: String,
        token: Option<String>,
        limits: WireLimits,
        metrics: Metrics,
    ) -> Self {
        let peers: Vec<Peer> = aggregators
            .iter()
            .map(|entry| {
                let (name, address) = aggregator_name(entry);
                Peer {
                    name: name.to_owned(),
                    address: address.to_owned(),
                    conn: tokio::sync::Mutex::new(None),
                    health: Mutex::new(Health {
                        failover: Failover::new(1, fastrand::u64(..)),
                        last_error: String::new(),
                    }),
                }
            })
            .collect();
        let owners = Owners::new(&peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>());
        Link {
            endpoint,
            peers,
            owners,
            server_name,
            token,
            limits,
            metrics,
        }
    }

    /// The connection to `peer`, reused or new.
    async fn connection(&self, peer: &Peer) -> Result<quinn::Connection, String> {
        let recovering = peer.health.lock().is_ok_and(|h| h.failover.failing());
        let mut conn = if recovering {
            // One batch probes an aggregator coming back; the others go to the next-ranked
            // meanwhile rather than wait out its handshake.
            peer.conn
                .try_lock()
                .map_err(|_| format!("{} is being reconnected", peer.name))?
        } else {
            peer.conn.lock().await
        };
        if let Some(c) = conn.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
            *conn = None;
        }
        // Another task may have failed to connect while this one waited for the lock.
        if !peer.up(Instant::now()) {
            return Err(peer.last_error());
        }
        let c = self.connect(&peer.address).await?;
        if recovering {
            tracing::info!(aggregator = %peer.name, "Connected to an aggregator again.");
        }
        if let Ok(mut h) = peer.health.lock() {
            h.failover.on_connected(0);
        }
        *conn = Some(c.clone());
        Ok(c)
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

    /// Sends `frame` to `peer`; a connection that fails is dropped and the send
    /// tried once more on a new one (an aggregator restarted since the last batch).
    async fn send_to(&self, peer: &Peer, batch: &Batch, frame: Bytes) -> Sent {
        let mut last = String::new();
        for _ in 0..2 {
            let conn = match self.connection(peer).await {
                Ok(c) => c,
                Err(e) => return Sent::Down(e),
            };
            let sent = tokio::time::timeout(
                ANSWER_TIMEOUT,
                send_frame(&conn, frame.clone(), self.token.as_deref(), &self.limits),
            )
            .await;
            let Ok(sent) = sent else {
                // A killed aggregator's connection looks alive until QUIC's idle timeout:
                // close it, so that every batch waiting on it moves on now.
                conn.close(0u32.into(), b"no answer");
                return Sent::Down(format!("no answer within {} s", ANSWER_TIMEOUT.as_secs()));
            };
            match sent {
                Ok(answer) => {
                    return match LinkReply::decode(&answer, batch, &self.limits) {
                        Ok(reply) => Sent::Reply(reply),
                        Err(e) => Sent::Reply(LinkReply::BadRequest(e.to_string())),
                    };
                }
                Err(e) => {
                    last = e.to_string();
                    let mut held = peer.conn.lock().await;
                    if held
                        .as_ref()
                        .is_some_and(|c| c.stable_id() == conn.stable_id())
                    {
                        *held = None;
                    }
                }
            }
        }
        Sent::Down(last)
    }

    /// Sends one batch, each event to its owner, and returns the answer for the whole
    /// batch: an acknowledgement with every event's verdict once every owner acknowledged
    /// its part. An owner that cannot be reached is marked down and its events go to
    /// their next-ranked aggregator in the same call ([`Scatter`]). Any other refusal
    /// (busy, failed, unauthorized) is the batch's answer: sent again, the events an owner
    /// already took come back duplicates from it.
    pub async fn send(
        &self,
        batch: &Batch,
        encode: impl Fn(&Batch) -> Bytes,
    ) -> Result<LinkReply, LinkDown> {
        let mut scatter = Scatter::new(batch, self.peers.len());
        let mut refusal: Option<LinkReply> = None;
        let mut last_down = String::new();
        while !scatter.done() {
            let now = Instant::now();
            let Some(parts) = scatter.round(&self.owners, batch, |a| self.peers[a].up(now)) else {
                return Err(self.all_down(last_down));
            };
            let sends = parts.iter().map(|part| {
                let peer = &self.peers[part.aggregator];
                self.metrics
                    .placed(&peer.name, part.batch.events.len(), part.moved);
                self.send_to(peer, &part.batch, encode(&part.batch))
            });
            let results = futures_util::future::join_all(sends).await;
            for (part, sent) in parts.into_iter().zip(results) {
                let outcome = match sent {
                    Sent::Reply(LinkReply::Ack(ack)) => PartOutcome::Acknowledged(ack.verdicts),
                    Sent::Reply(other) => {
                        refusal.get_or_insert(other);
                        PartOutcome::Refused
                    }
                    Sent::Down(why) => {
                        let peer = &self.peers[part.aggregator];
                        let wait = peer.failed(why.clone());
                        tracing::warn!(aggregator = %peer.name, error = %why, retry_in_ms = wait.as_millis() as u64, "Cannot reach an aggregator; its events go to the next-ranked one meanwhile.");
                        last_down = format!("{}: {why}", peer.name);
                        PartOutcome::Unreachable
                    }
                };
                scatter.answered(part, outcome);
            }
        }
        match refusal {
            Some(refused) => Ok(refused),
            None => Ok(LinkReply::Ack(scatter.finish(batch.id))),
        }
    }

    /// Every aggregator is down (or failed in this call): when to try again.
    fn all_down(&self, last: String) -> LinkDown {
        let now = Instant::now();
        let retry_after = self
            .peers
            .iter()
            .filter_map(|p| p.wait(now))
            .min()
            .unwrap_or(Duration::from_millis(100));
        let last = if last.is_empty() {
            self.peers
                .iter()
                .map(Peer::last_error)
                .find(|e| !e.is_empty())
                .unwrap_or_else(|| "every aggregator is backing off".into())
        } else {
            last
        };
        LinkDown {
            last,
            connecting: false,
            retry_after,
        }
    }
}
