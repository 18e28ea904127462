//! The guaranteed requests' batcher: the core's [`Batcher`] driven by a
//! task, items in from requests and batches out to send tasks.

use super::send::send_guaranteed;
use super::{Ctx, Item};
use sluice_shared::forward::Batcher;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Tells a batcher a batch it handed out is done, even if its task ends
/// early: then with `T::default()`, otherwise with what [`DoneGuard::finish`] gives.
pub(super) struct DoneGuard<T: Default = ()>(Option<mpsc::UnboundedSender<T>>);

impl<T: Default> DoneGuard<T> {
    pub(super) fn new(tx: mpsc::UnboundedSender<T>) -> Self {
        DoneGuard(Some(tx))
    }

    /// The task finished: tells the batcher so, with `value`.
    pub(super) fn finish(mut self, value: T) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(value);
        }
    }
}

impl<T: Default> Drop for DoneGuard<T> {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(T::default());
        }
    }
}

/// Resolves at `due`, or never.
pub(super) async fn until(due: Option<std::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(Instant::from_std(due)).await,
        None => std::future::pending().await,
    }
}

/// Drives the core's [`Batcher`]: items in from requests, batches out to send
/// tasks, until the queue closes and every batch is done.
pub(super) async fn batcher(mut rx: mpsc::Receiver<Item>, ctx: Arc<Ctx>) {
    let mut core: Batcher<Item> =
        Batcher::new(ctx.options.batch_limits(ctx.options.guaranteed_age));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut open = true;
    loop {
        while let Some(items) = core.poll_batch(std::time::Instant::now()) {
            let (ctx, done) = (ctx.clone(), DoneGuard::new(done_tx.clone()));
            tokio::spawn(async move {
                send_guaranteed(&ctx, items).await;
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
