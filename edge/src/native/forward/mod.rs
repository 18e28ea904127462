//! The tokio shell around the core's forwarding policy
//! ([`sluice_shared::forward`]): accepted events wait in one of two
//! batchers — guaranteed requests (flushed after 10 ms by default) and hasty
//! ones (1 s) — until the core closes a batch; each batch goes to an
//! aggregator over the [`Link`], and the core's [`Delivery`] says after each
//! attempt whether to retry, give up, or spool.
//!
//! A guaranteed request waits for its events' verdicts, retrying across
//! aggregators until its forward timeout, then gives up with 503. A hasty
//! batch that no aggregator takes (or that one keeps answering busy) goes
//! to the [`Spool`], whose replayer delivers its batches in order once an
//! aggregator answers. New hasty batches do not wait behind the spool: an
//! edge that queued every batch behind a backlog would be writing all its
//! traffic to disk just when it most needs to catch up.
//!
//! This file holds the handle requests use; [`batcher`] drives the core's
//! batching, [`send`] a batch's delivery, and [`spooling`] the spool's writes
//! and replay.

mod batcher;
mod send;
mod spooling;

use batcher::batcher;
use spooling::{replay, unhold};

use super::link::{Link, LinkDown};
use super::metrics::Metrics;
use super::spool::Spool;
use crate::respond::Forwarded;
use bytes::Bytes;
use sluice_host::metrics::Outcome;
use sluice_shared::forward::{
    Attempted, CompressionGate, Delivery, Next, VerdictCounts, failed_events,
};
use sluice_shared::{Batch, BatchError, BatchEvent, EventAck, LinkReply, WireLimits};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

struct Item {
    events: Vec<BatchEvent>,
    errors: Vec<BatchError>,
    reply: Option<oneshot::Sender<Forwarded>>,
    /// Spool bytes set aside for this hasty item (0 for guaranteed ones).
    reserved: u64,
}

struct Ctx {
    link: Arc<Link>,
    spool: Arc<Spool>,
    metrics: Metrics,
    options: ForwardOptions,
    limits: WireLimits,
    /// Spool bytes set aside for hasty events answered 202 and not yet acknowledged or
    /// spooled: a 202 is given only when its events are sure to fit in the spool.
    reserved: AtomicU64,
    /// Hasty batches (frame, events) answered 202 that the spool could not take (a full
    /// disk, say): kept in memory and written to the spool once it takes writes again.
    /// While any wait here, hasty requests are refused with 503.
    held: std::sync::Mutex<std::collections::VecDeque<(Vec<u8>, usize)>>,
    /// Whether `held` has any: read by every hasty request without taking the lock
    /// (which a spool write may hold through its fsync).
    holding: std::sync::atomic::AtomicBool,
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

    fn held(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(Vec<u8>, usize)>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A hasty request that cannot be taken now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HastyRefused {
    /// The spool is at its bound.
    #[error("the edge's spool is full: no aggregator has taken its batches for a while")]
    SpoolFull,
    /// The hasty batcher's queue is full.
    #[error("the edge is overloaded: too many hasty events are waiting to be batched")]
    Busy,
    /// The spool's last write failed (its disk is full or failing).
    #[error(
        "the edge's spool cannot be written (its disk is full or failing); hasty events are refused until it can"
    )]
    SpoolUnwritable,
}

/// The handle requests use to forward their events.
#[derive(Clone)]
pub struct Forwarder {
    guaranteed: mpsc::Sender<Item>,
    hasty: mpsc::Sender<Item>,
    ctx: Arc<Ctx>,
}

/// Resolves once both batchers have flushed everything given to them (after every [`Forwarder`] is dropped).
pub struct Drained(Vec<tokio::task::JoinHandle<()>>, Arc<Ctx>);

impl Drained {
    /// Waits for the batchers, then spools what the spool could not take before;
    /// whatever it still cannot take is counted lost and logged, never dropped unsaid.
    pub async fn wait(self) {
        for h in self.0 {
            let _ = h.await;
        }
        let ctx = self.1;
        let mut held = ctx.held();
        while let Some((frame, events)) = held.pop_front() {
            if let Err(e) = ctx.spool.append(&frame) {
                let lost = events + held.iter().map(|(_, n)| n).sum::<usize>();
                ctx.metrics.dropped(Outcome::Lost, lost);
                tracing::error!(events = lost, error = %e, "The edge stops with hasty events answered 202 that its spool cannot take; they are lost.");
                held.clear();
            }
        }
    }
}

/// How long a hasty request waits for room in the batcher's queue before 503.
pub const HASTY_QUEUE_PATIENCE: Duration = Duration::from_secs(1);

/// An upper bound of the spool bytes these events and reports take in a frame (uncompressed,
/// with postcard's lengths and a record header).
fn frame_bound(events: &[BatchEvent], errors: &[BatchError]) -> u64 {
    let events: usize = events.iter().map(BatchEvent::size_bound).sum();
    let errors: usize = errors.iter().map(BatchError::size_bound).sum();
    (events + errors + 64) as u64
}

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
    /// Starts the batchers and the spool's replayer.
    pub fn start(
        link: Arc<Link>,
        spool: Arc<Spool>,
        options: ForwardOptions,
        limits: WireLimits,
        metrics: Metrics,
    ) -> (Forwarder, Drained, tokio::task::JoinHandle<()>) {
        let queue = options.in_flight.max(1) * 16;
        let (g_tx, g_rx) = mpsc::channel(queue);
        let (h_tx, h_rx) = mpsc::channel(queue);
        let ctx = Arc::new(Ctx {
            link,
            spool,
            metrics,
            options,
            limits,
            reserved: AtomicU64::new(0),
            held: Default::default(),
            holding: Default::default(),
            compression: CompressionGate::default(),
        });
        let drained = Drained(
            vec![
                tokio::spawn(batcher(g_rx, false, ctx.clone())),
                tokio::spawn(batcher(h_rx, true, ctx.clone())),
            ],
            ctx.clone(),
        );
        tokio::spawn(unhold(Arc::downgrade(&ctx)));
        let replayer = tokio::spawn(replay(ctx.clone()));
        (
            Forwarder {
                guaranteed: g_tx,
                hasty: h_tx,
                ctx,
            },
            drained,
            replayer,
        )
    }

    /// Forwards a guaranteed request's events and waits for their verdicts.
    pub async fn guaranteed(&self, events: Vec<BatchEvent>, errors: Vec<BatchError>) -> Forwarded {
        let (tx, rx) = oneshot::channel();
        let item = Item {
            events,
            errors,
            reply: Some(tx),
            reserved: 0,
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

    /// Queues a hasty request's events (and error reports); they go to an aggregator or the
    /// spool. Refused unless the spool could take them, counting everything already queued.
    ///
    /// When the batcher's queue is full the request waits for room (up to
    /// [`HASTY_QUEUE_PATIENCE`]) rather than being refused at once: under
    /// overload that turns into backpressure on the senders instead of a
    /// stream of 503s whose bodies were parsed and validated for nothing.
    pub async fn hasty(
        &self,
        events: Vec<BatchEvent>,
        errors: Vec<BatchError>,
    ) -> Result<(), HastyRefused> {
        if self.ctx.holding.load(Ordering::Acquire) {
            return Err(HastyRefused::SpoolUnwritable);
        }
        let need = frame_bound(&events, &errors);
        let before = self.ctx.reserved.fetch_add(need, Ordering::AcqRel);
        if !self.ctx.spool.has_room(before + need) {
            self.ctx.reserved.fetch_sub(need, Ordering::AcqRel);
            return Err(HastyRefused::SpoolFull);
        }
        let item = Item {
            events,
            errors,
            reply: None,
            reserved: need,
        };
        let queued = match self.hasty.try_send(item) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(item)) => self
                .hasty
                .send_timeout(item, HASTY_QUEUE_PATIENCE)
                .await
                .map_err(|_| ()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
        };
        queued.map_err(|()| {
            self.ctx.reserved.fetch_sub(need, Ordering::AcqRel);
            HastyRefused::Busy
        })
    }

    /// Bytes held in the spool.
    pub fn spooled_bytes(&self) -> u64 {
        self.ctx.spool.bytes()
    }
}

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
