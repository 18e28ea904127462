//! The spool's side of forwarding: hasty batches no aggregator took are
//! written to it (held in memory, in order, while it cannot be written), and
//! its replayer sends them, oldest first, until an aggregator answers each.

use super::send::{attempted, settle_hasty};
use super::*;

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
pub(super) async fn unhold(ctx: std::sync::Weak<Ctx>) {
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

/// Spools a frame off the async threads: a spool write waits for its fsync.
pub(super) async fn spool_blocking(ctx: &Arc<Ctx>, frame: Bytes, events: usize) {
    let ctx = ctx.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || spool(&ctx, &frame, events)).await {
        tracing::error!(error = %e, events, "A spool write did not finish.");
    }
}

/// Sends the spool's batches, oldest first, each until an aggregator answers it.
pub(super) async fn replay(ctx: Arc<Ctx>) {
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
