//! The batchers: the core's [`Batcher`] driven by a task per kind of
//! request, items in from requests and batches out to send tasks.

use super::send::{send_guaranteed, send_hasty};
use super::{Ctx, Item};
use sluice_shared::forward::{BatchLimits, Batcher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tokio::time::Instant;

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
pub(super) async fn batcher(mut rx: mpsc::Receiver<Item>, hasty: bool, ctx: Arc<Ctx>) {
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
