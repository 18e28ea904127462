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

use super::link::{Link, LinkDown};
use super::metrics::Metrics;
use super::spool::Spool;
use crate::respond::Forwarded;
use bytes::Bytes;
use sluice_host::metrics::Outcome;
use sluice_shared::forward::{
    Attempted, BatchLimits, Batcher, CompressionGate, Delivery, Next, VerdictCounts, failed_events,
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

/// Tells the batcher a batch it handed out is done, even if its task ends early.
struct DoneGuard(mpsc::UnboundedSender<()>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Resolves at `due`, or never.
async fn until(due: Option<std::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(Instant::from_std(due)).await,
        None => std::future::pending().await,
    }
}

/// Drives the core's [`Batcher`]: items in from requests, batches out to send
/// tasks, until the queue closes and every batch is done.
async fn batcher(mut rx: mpsc::Receiver<Item>, hasty: bool, ctx: Arc<Ctx>) {
    let o = &ctx.options;
    let mut core: Batcher<Item> = Batcher::new(BatchLimits {
        max_events: o.max_events,
        max_bytes: o.max_bytes,
        max_age: if hasty { o.hasty_age } else { o.guaranteed_age },
        in_flight: o.in_flight,
    });
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut open = true;
    loop {
        while let Some(items) = core.poll_batch(std::time::Instant::now()) {
            let (ctx, done) = (ctx.clone(), DoneGuard(done_tx.clone()));
            tokio::spawn(async move {
                if hasty {
                    let reserved: u64 = items.iter().map(|i| i.reserved).sum();
                    send_hasty(&ctx, items).await;
                    ctx.reserved.fetch_sub(reserved, Ordering::AcqRel);
                } else {
                    send_guaranteed(&ctx, items).await;
                }
                drop(done);
            });
        }
        if !open && core.is_idle() {
            return;
        }
        let due = core.poll_timeout();
        tokio::select! {
            // While a closed batch waits for room in flight, requests wait in the queue.
            item = rx.recv(), if open && core.accepting() => match item {
                Some(item) => {
                    let events = item.events.len();
                    let bytes = item.events.iter().map(|e| e.json.len()).sum();
                    core.push(std::time::Instant::now(), item, events, bytes);
                }
                None => {
                    open = false;
                    core.flush();
                }
            },
            Some(()) = done_rx.recv() => core.on_done(),
            () = until(due) => {}
        }
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

/// How an attempt ended, as the core's delivery policy sees it.
fn attempted(reply: &Result<LinkReply, LinkDown>) -> Attempted {
    match reply {
        Ok(LinkReply::Ack(_)) => Attempted::Acknowledged,
        Ok(LinkReply::Busy(ms)) => Attempted::Busy(Duration::from_millis(u64::from(*ms))),
        Ok(LinkReply::Failed(_)) => Attempted::Failed,
        Ok(LinkReply::Unauthorized) => Attempted::Unauthorized,
        Ok(LinkReply::BadRequest(_)) => Attempted::BadRequest,
        Err(down) => Attempted::Down {
            retry_after: down.retry_after,
            connecting: down.connecting,
        },
    }
}

/// Why a guaranteed batch is not delivered yet, for its senders' 503; logs what an operator must fix.
fn describe(reply: &Result<LinkReply, LinkDown>) -> String {
    match reply {
        Ok(LinkReply::Ack(_)) => "acknowledged".to_owned(),
        Ok(LinkReply::Busy(_)) => "the aggregators are busy".to_owned(),
        Ok(LinkReply::Failed(m)) => format!("the aggregator failed the batch: {m}"),
        Ok(LinkReply::Unauthorized) => {
            tracing::error!(
                "The aggregator refused this edge's certificate or token; check tls.cert/tls.key or token_file."
            );
            "the aggregator refused this edge".to_owned()
        }
        Ok(LinkReply::BadRequest(m)) => {
            tracing::error!(error = %m, "The aggregator could not read a batch from this edge.");
            format!("the aggregator could not read the batch: {m}")
        }
        Err(LinkDown { last, .. }) => format!("no aggregator answers: {last}"),
    }
}

async fn send_guaranteed(ctx: &Ctx, mut items: Vec<Item>) {
    let counts: Vec<usize> = items.iter().map(|i| i.events.len()).collect();
    let batch = build(&mut items);
    let frame = ctx.encode(&batch);
    let delivery = Delivery::guaranteed(std::time::Instant::now(), ctx.options.forward_timeout);
    let deadline = delivery
        .deadline()
        .map_or_else(Instant::now, Instant::from_std);
    let (message, wait) = loop {
        let sent = tokio::time::timeout_at(deadline, ctx.link.send(&batch, &frame)).await;
        let Ok(sent) = sent else {
            break (
                "no aggregator answered in time".to_owned(),
                Duration::from_secs(1),
            );
        };
        if let Ok(LinkReply::Ack(ack)) = sent {
            ctx.metrics.batch(Outcome::Acknowledged);
            let mut verdicts = batch.events.into_iter().zip(ack.verdicts);
            for (item, n) in items.into_iter().zip(counts) {
                let mine: Vec<(BatchEvent, EventAck)> = verdicts.by_ref().take(n).collect();
                count_verdicts(&ctx.metrics, VerdictCounts::of(mine.iter().map(|(_, a)| a)));
                if let Some(reply) = item.reply {
                    let _ = reply.send(Forwarded::Verdicts(mine));
                }
            }
            return;
        }
        match delivery.next(std::time::Instant::now(), attempted(&sent)) {
            Next::Retry(wait) => tokio::time::sleep(wait).await,
            Next::GiveUp(wait) => break (describe(&sent), wait),
            Next::Done | Next::Spool => break (describe(&sent), Duration::from_secs(1)),
        }
    };
    ctx.metrics.batch(Outcome::Unavailable);
    ctx.metrics.count(Outcome::Unavailable, batch.events.len());
    tracing::warn!(events = batch.events.len(), error = %message, "A guaranteed batch found no aggregator; its senders get 503.");
    let mut events = batch.events.into_iter();
    for (item, n) in items.into_iter().zip(counts) {
        if let Some(reply) = item.reply {
            let _ = reply.send(Forwarded::Unavailable {
                message: message.clone(),
                retry_after_secs: retry_secs(wait),
                events: events.by_ref().take(n).collect(),
            });
        }
    }
}

fn count_verdicts(metrics: &Metrics, counts: VerdictCounts) {
    metrics.count(Outcome::Delivered, counts.accepted);
    metrics.count(Outcome::Duplicate, counts.duplicate);
    metrics.count(Outcome::RateLimited, counts.rate_limited);
    metrics.count(Outcome::Failed, counts.failed);
}

fn spool(ctx: &Ctx, frame: &[u8], events: usize) {
    let mut held = ctx.held();
    // Behind batches already waiting, so that the spool keeps their order.
    let written = held.is_empty().then(|| ctx.spool.append(frame));
    match written {
        Some(Ok(())) => ctx.metrics.count(Outcome::Spooled, events),
        other => {
            if let Some(Err(e)) = other {
                tracing::error!(events, error = %e, "The spool cannot take hasty events answered 202; holding them in memory and refusing hasty requests until it can.");
            }
            ctx.metrics.count(Outcome::Held, events);
            held.push_back((frame.to_vec(), events));
            ctx.holding.store(true, Ordering::Release);
        }
    }
    ctx.metrics.spool_bytes.set(ctx.spool.bytes() as i64);
}

/// Writes held batches to the spool, oldest first, once it takes writes again.
async fn unhold(ctx: std::sync::Weak<Ctx>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(ctx) = ctx.upgrade() else {
            return;
        };
        let mut held = ctx.held();
        let before = held.len();
        while let Some((frame, events)) = held.front() {
            match ctx.spool.append(frame) {
                Ok(()) => {
                    ctx.metrics.count(Outcome::Spooled, *events);
                    held.pop_front();
                }
                Err(_) => break,
            }
        }
        ctx.holding.store(!held.is_empty(), Ordering::Release);
        if before > 0 && held.is_empty() {
            tracing::info!(
                batches = before,
                "The spool takes writes again; held hasty batches are spooled."
            );
        }
        ctx.metrics.spool_bytes.set(ctx.spool.bytes() as i64);
    }
}

/// Handles the verdicts on a hasty batch: rate-limited events are dropped
/// and counted (their senders were answered already); failed ones are
/// returned for another try.
fn settle_hasty(ctx: &Ctx, events: Vec<BatchEvent>, verdicts: Vec<EventAck>) -> Vec<BatchEvent> {
    let counts = VerdictCounts::of(&verdicts);
    count_verdicts(&ctx.metrics, counts);
    if counts.rate_limited > 0 {
        ctx.metrics
            .dropped(Outcome::RateLimited, counts.rate_limited);
        tracing::warn!(
            events = counts.rate_limited,
            "Hasty events were over their stream's rate limit and are dropped."
        );
    }
    failed_events(events, &verdicts)
}

/// Spools a frame off the async threads: a spool write waits for its fsync.
async fn spool_blocking(ctx: &Arc<Ctx>, frame: Bytes, events: usize) {
    let ctx = ctx.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || spool(&ctx, &frame, events)).await {
        tracing::error!(error = %e, events, "A spool write did not finish.");
    }
}

async fn send_hasty(ctx: &Arc<Ctx>, mut items: Vec<Item>) {
    let batch = build(&mut items);
    let frame = ctx.encode(&batch);
    let delivery = Delivery::hasty(std::time::Instant::now());
    let reply = loop {
        let reply = ctx.link.send(&batch, &frame).await;
        match delivery.next(std::time::Instant::now(), attempted(&reply)) {
            Next::Retry(wait) => tokio::time::sleep(wait).await,
            _ => break reply,
        }
    };
    match reply {
        Ok(LinkReply::Ack(ack)) => {
            ctx.metrics.batch(Outcome::Acknowledged);
            let retry = settle_hasty(ctx, batch.events, ack.verdicts);
            if !retry.is_empty() {
                let again = retry_batch(retry);
                spool_blocking(ctx, ctx.encode(&again), again.events.len()).await;
            }
        }
        other => {
            if let Ok(LinkReply::Unauthorized | LinkReply::BadRequest(_)) = &other {
                tracing::error!(reply = ?other, "The aggregator refused a hasty batch; spooling it.");
            }
            ctx.metrics.batch(Outcome::Spooled);
            spool_blocking(ctx, frame, batch.events.len()).await;
        }
    }
}

/// Sends the spool's batches, oldest first, each until an aggregator answers it.
async fn replay(ctx: Arc<Ctx>) {
    loop {
        let record = match ctx.spool.peek() {
            Ok(Some(r)) => r,
            Ok(None) => {
                ctx.metrics.spool_bytes.set(ctx.spool.bytes() as i64);
                let _ = tokio::time::timeout(Duration::from_secs(1), ctx.spool.appended.notified())
                    .await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the spool; trying again in a second.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut batch = match Batch::decode(&record.frame, &ctx.limits) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "A spooled batch does not decode and is dropped.");
                ctx.spool.consume(&record);
                continue;
            }
        };
        let mut frame = Bytes::from(record.frame.clone());
        let delivery = Delivery::replay();
        let mut failures = 0u32;
        loop {
            let reply = ctx.link.send(&batch, &frame).await;
            let wait = match reply {
                Ok(LinkReply::Ack(ack)) => {
                    let events = std::mem::take(&mut batch.events);
                    let retry = settle_hasty(&ctx, events, ack.verdicts);
                    if retry.is_empty() {
                        break;
                    }
                    failures += 1;
                    if failures > 5 {
                        ctx.metrics.dropped(Outcome::Failed, retry.len());
                        tracing::error!(
                            events = retry.len(),
                            "Spooled events failed at the aggregator five times and are dropped."
                        );
                        break;
                    }
                    batch = retry_batch(retry);
                    frame = ctx.encode(&batch);
                    Duration::from_secs(1)
                }
                other => {
                    if let Ok(refused) = &other
                        && !matches!(refused, LinkReply::Busy(_))
                    {
                        tracing::warn!(reply = ?refused, "The aggregator did not take a spooled batch; retrying.");
                    }
                    match delivery.next(std::time::Instant::now(), attempted(&other)) {
                        Next::Retry(wait) => wait,
                        _ => Duration::from_secs(1),
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
        ctx.spool.consume(&record);
        ctx.metrics.spool_bytes.set(ctx.spool.bytes() as i64);
    }
}
