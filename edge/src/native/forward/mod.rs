//! The tokio shell around the core's forwarding policy
//! ([`sluice_shared::forward`]). A guaranteed request's events wait in a
//! batcher (flushed after 10 ms by default) until the core closes a batch;
//! the batch goes to an aggregator over the [`Link`], retried across
//! aggregators until the request's forward timeout, then given up with 503.
//!
//! A hasty request's events are appended to the [`Spool`] and synced before
//! the request is answered 202. The spool's forwarder reads them back in
//! order, batches records (up to the same limits, after at most the hasty
//! age), sends each batch until an aggregator answers it, and commits the
//! spool's position past every record answered, so that a restart resumes
//! where it stopped and nothing answered 202 is lost.
//!
//! This file holds the handle requests use; [`batcher`] drives the core's
//! batching of guaranteed requests, [`send`] a guaranteed batch's delivery,
//! and [`spooling`] the spool's forwarder.

mod batcher;
mod send;
mod spooling;

use batcher::batcher;
use spooling::forward_spool;

use super::link::{Link, LinkDown};
use super::metrics::Metrics;
use super::spool::{Fresh, FreshFeed, Record, Spool, SpoolError};
use crate::respond::Forwarded;
use bytes::Bytes;
use sluice_host::metrics::Outcome;
use sluice_shared::forward::{
    Attempted, BatchLimits, CompressionGate, Delivery, Next, VerdictCounts, failed_events,
};
use sluice_shared::{Batch, BatchError, BatchEvent, EventAck, LinkReply, WireLimits};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// When batches go, and how long requests wait.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// Events per batch at most.
    pub max_events: usize,
    /// Event JSON bytes per batch at most.
    pub max_bytes: usize,
    /// Longest wait of a guaranteed event in a batcher.
    pub guaranteed_age: Duration,
    /// Longest wait of a hasty event in a batcher.
    pub hasty_age: Duration,
    /// Batches on their way at once, per batcher.
    pub in_flight: usize,
    /// How long a guaranteed request waits for an aggregator before giving up.
    pub forward_timeout: Duration,
    /// LZ4-compress batch frames.
    pub compress: bool,
}

impl ForwardOptions {
    /// The core batcher's limits, with `max_age` for the kind of request.
    fn batch_limits(&self, max_age: Duration) -> BatchLimits {
        BatchLimits {
            max_events: self.max_events,
            max_bytes: self.max_bytes,
            max_age,
            in_flight: self.in_flight,
        }
    }
}

struct Item {
    events: Vec<BatchEvent>,
    errors: Vec<BatchError>,
    reply: oneshot::Sender<Forwarded>,
}

struct Ctx {
    link: Arc<Link>,
    spool: Arc<Spool>,
    metrics: Metrics,
    options: ForwardOptions,
    limits: WireLimits,
    /// When to try compressing.
    compression: CompressionGate,
}

impl Ctx {
    /// The batch's frame, compressed when configured and worth it.
    fn encode(&self, batch: &Batch) -> Bytes {
        if !self.options.compress || !self.compression.attempt() {
            return batch.encode(false).into();
        }
        let frame = batch.encode(true);
        self.compression.attempted(&frame);
        frame.into()
    }
}

/// A hasty request that cannot be taken now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HastyRefused {
    /// The spool is at its bound.
    #[error("the edge's spool is full: no aggregator has taken its batches for a while")]
    SpoolFull,
    /// The spool's writer is behind.
    #[error("the edge is overloaded: too many hasty requests are waiting for the spool's sync")]
    Busy,
    /// The spool's write failed (its disk is full or failing), or the edge is stopping.
    #[error(
        "the edge's spool cannot be written (its disk is full or failing); hasty events are refused until it can"
    )]
    SpoolUnwritable,
}

/// The handle requests use to forward their events.
#[derive(Clone)]
pub struct Forwarder {
    guaranteed: mpsc::Sender<Item>,
    ctx: Arc<Ctx>,
}

/// The forwarding tasks, for a clean stop.
pub struct Drained {
    batcher: tokio::task::JoinHandle<()>,
    spool: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
    ctx: Arc<Ctx>,
}

impl Drained {
    /// Waits (after every [`Forwarder`] is dropped) for the guaranteed batcher to
    /// answer what it was given, up to `timeout`, then for the spool's forwarder
    /// to send what the spool holds, up to [`SPOOL_DRAIN`]: what is not sent by
    /// then is safe in the spool for the next start. Returns whether everything
    /// was sent.
    pub async fn wait(self, timeout: Duration) -> bool {
        let _ = tokio::time::timeout(timeout, self.batcher).await;
        let _ = self.stop.send(true);
        let mut spool = self.spool;
        let done = tokio::time::timeout(SPOOL_DRAIN, &mut spool).await.is_ok();
        if !done {
            spool.abort();
            let _ = spool.await;
        }
        done && self.ctx.spool.synced() <= self.ctx.spool.committed()
    }
}

/// How long stopping waits for the spool's forwarder to send what is left:
/// events in the spool are durable, so an edge whose aggregators are away
/// stops without waiting long for them.
pub const SPOOL_DRAIN: Duration = Duration::from_secs(5);

/// How long a hasty request waits for room in the spool writer's queue before 503.
pub const HASTY_QUEUE_PATIENCE: Duration = Duration::from_secs(1);

/// A new batch of events that failed at the aggregator, to be tried again.
fn retry_batch(events: Vec<BatchEvent>) -> Batch {
    Batch {
        id: random_id(),
        events,
        errors: Vec::new(),
    }
}

fn random_id() -> [u8; 16] {
    fastrand::u128(..).to_le_bytes()
}

fn retry_secs(d: Duration) -> u32 {
    u32::try_from(d.as_millis().div_ceil(1000))
        .unwrap_or(u32::MAX)
        .max(1)
}

impl Forwarder {
    /// Starts the guaranteed batcher and the spool's forwarder.
    pub fn start(
        link: Arc<Link>,
        spool: Arc<Spool>,
        options: ForwardOptions,
        limits: WireLimits,
        metrics: Metrics,
    ) -> (Forwarder, Drained) {
        let queue = options.in_flight.max(1) * 16;
        let (g_tx, g_rx) = mpsc::channel(queue);
        let ctx = Arc::new(Ctx {
            link,
            spool,
            metrics,
            options,
            limits,
            compression: CompressionGate::default(),
        });
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let drained = Drained {
            batcher: tokio::spawn(batcher(g_rx, ctx.clone())),
            spool: tokio::spawn(forward_spool(ctx.clone(), stopping)),
            stop,
            ctx: ctx.clone(),
        };
        (
            Forwarder {
                guaranteed: g_tx,
                ctx,
            },
            drained,
        )
    }

    /// Forwards a guaranteed request's events and waits for their verdicts.
    pub async fn guaranteed(&self, events: Vec<BatchEvent>, errors: Vec<BatchError>) -> Forwarded {
        let (tx, rx) = oneshot::channel();
        let item = Item {
            events,
            errors,
            reply: tx,
        };
        if let Err(mpsc::error::SendError(item)) = self.guaranteed.send(item).await {
            return Forwarded::Unavailable {
                message: "the edge is stopping".into(),
                retry_after_secs: 1,
                events: item.events,
            };
        }
        rx.await.unwrap_or_else(|_| Forwarded::Unavailable {
            message: "the batch was dropped without an answer".into(),
            retry_after_secs: 1,
            events: Vec::new(),
        })
    }

    /// Appends a hasty request's events (and error reports) to the spool and
    /// returns once they are synced: then, and only then, may it be answered 202.
    /// Refused when the spool is full or cannot be written, or when its writer's
    /// queue stays full for [`HASTY_QUEUE_PATIENCE`] (backpressure on the senders
    /// rather than a growing queue).
    pub async fn hasty(
        &self,
        events: Vec<BatchEvent>,
        errors: Vec<BatchError>,
    ) -> Result<(), HastyRefused> {
        let batch = Batch {
            id: random_id(),
            events,
            errors,
        };
        let frame = batch.encode(false);
        self.ctx
            .spool
            .append(frame, batch, HASTY_QUEUE_PATIENCE)
            .await
            .map_err(|e| match e {
                SpoolError::Full { .. } => HastyRefused::SpoolFull,
                SpoolError::Busy => HastyRefused::Busy,
                SpoolError::Closed | SpoolError::Log { .. } | SpoolError::Write { .. } => {
                    HastyRefused::SpoolUnwritable
                }
            })
    }

    /// Bytes held in the spool.
    pub fn spooled_bytes(&self) -> u64 {
        self.ctx.spool.bytes()
    }
}

/// One batch of the guaranteed requests' items.
fn build(items: &mut [Item]) -> Batch {
    let mut batch = Batch {
        id: random_id(),
        events: Vec::with_capacity(items.iter().map(|i| i.events.len()).sum()),
        errors: Vec::new(),
    };
    for item in items {
        batch.events.append(&mut item.events);
        batch.errors.append(&mut item.errors);
    }
    batch
}
