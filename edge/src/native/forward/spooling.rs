//! The spool's forwarder: it reads synced records in order, batches them
//! with the core's [`Batcher`], sends each batch until an aggregator answers
//! it, and commits the spool's position over every record answered (the
//! core's [`DoneWindow`]: batches finish in any order, the position moves
//! only over records all done).
//!
//! Records come from memory, handed over by the spool's writer as they are
//! synced, while the forwarder keeps up; it reads from the log only what
//! that hand-over left out (after a restart, or when the forwarder fell
//! behind), so under load nothing is read back or decoded again.
//!
//! A record that carries error reports starts a batch of its own and lends
//! it its id: the aggregator names error events after their batch's id and
//! place, so a batch sent again after a restart names them the same, and
//! dedupe keeps one copy.

use super::batcher::{DoneGuard, until};
use super::send::{attempted, settle_hasty};
use super::*;
use sluice_shared::forward::{Batcher, DoneWindow};

/// Records read from the spool at a time.
const READ_AHEAD: usize = 256;

/// A spooled record, decoded.
struct Spooled {
    offset: u64,
    batch: Batch,
}

/// Offsets `start..end` of a batch whose send task ended: delivered, or
/// (the default, left by a task that ended without finishing) not.
#[derive(Default)]
struct Finished {
    start: u64,
    end: u64,
    delivered: bool,
}

/// Forwards the spool until `stopping` turns true and everything synced is
/// sent (the caller bounds that wait), committing as it goes.
pub(super) async fn forward_spool(ctx: Arc<Ctx>, mut stopping: tokio::sync::watch::Receiver<bool>) {
    let mut core: Batcher<Spooled> = Batcher::new(ctx.options.batch_limits(ctx.options.hasty_age));
    let mut window = DoneWindow::new(ctx.spool.start());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
    let (commit_tx, commit_rx) = tokio::sync::watch::channel(window.committed());
    let committer = tokio::spawn(commit(ctx.clone(), commit_rx));
    let mut feed = ctx.spool.take_fresh();
    // A record handed over past a gap the log must fill first.
    let mut pending: Option<Fresh> = None;
    let mut stop = false;
    loop {
        while let Some(records) = core.poll_batch(std::time::Instant::now()) {
            let (Some(first), Some(last)) = (records.first(), records.last()) else {
                core.on_done();
                continue;
            };
            let (start, end) = (first.offset, last.offset + 1);
            let done = DoneGuard::new(done_tx.clone());
            let ctx = ctx.clone();
            tokio::spawn(async move {
                send_spooled(&ctx, records).await;
                done.finish(Finished {
                    start,
                    end,
                    delivered: true,
                });
            });
        }
        let behind = ctx.spool.synced() > window.handed();
        if stop && !behind && window.is_idle() && core.is_idle() {
            break;
        }
        // Behind the synced end, yet nothing came (a segment being replaced): look again soon.
        let mut stalled = false;
        if behind && core.accepting() {
            let mut took = take_fresh(&mut core, &mut window, &mut feed, &mut pending);
            if took == 0 {
                let gap = pending
                    .as_ref()
                    .map_or(READ_AHEAD as u64, |p| p.offset - window.handed());
                match read(&ctx, window.handed(), gap.min(READ_AHEAD as u64) as usize).await {
                    Ok(records) => {
                        took = records.len();
                        if let Some(committed) = take_read(&ctx, &mut core, &mut window, records) {
                            let _ = commit_tx.send(committed);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "Cannot read the spool; trying again in a second.");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            if took > 0 {
                if stop {
                    core.flush();
                }
                continue;
            }
            stalled = true;
        }
        let due = core.poll_timeout();
        tokio::select! {
            Some(finished) = done_rx.recv() => {
                core.on_done();
                if !finished.delivered {
                    // Never counted done: the position stays before it, and a restart sends it again.
                    tracing::error!("A spooled batch's send ended without an answer; the spool keeps it until the edge restarts.");
                } else if let Some(committed) = window.finish(finished.start, finished.end) {
                    let _ = commit_tx.send(committed);
                }
            }
            () = ctx.spool.appended.notified(), if !behind => {}
            () = until(due) => {}
            () = tokio::time::sleep(Duration::from_millis(50)), if stalled => {}
            changed = stopping.changed(), if !stop => {
                // A dropped sender means stop too.
                stop = changed.is_err() || *stopping.borrow();
                if stop {
                    core.flush();
                }
            }
        }
    }
    drop(commit_tx);
    let _ = committer.await;
}

/// Takes records handed over in memory, in order from where reading stands,
/// while the batcher accepts; a record past a gap waits in `pending` for the
/// log to fill the gap. Returns how many were taken.
fn take_fresh(
    core: &mut Batcher<Spooled>,
    window: &mut DoneWindow,
    feed: &mut Option<FreshFeed>,
    pending: &mut Option<Fresh>,
) -> usize {
    let mut took = 0;
    while core.accepting() && took < READ_AHEAD {
        let Some(fresh) = pending
            .take()
            .or_else(|| feed.as_mut().and_then(FreshFeed::take))
        else {
            break;
        };
        if fresh.offset < window.handed() {
            // Read from the log already.
            continue;
        }
        if fresh.offset > window.handed() {
            *pending = Some(fresh);
            break;
        }
        window.hand_out(fresh.offset, fresh.offset + 1);
        take(core, fresh.offset, fresh.batch);
        took += 1;
    }
    took
}

/// Takes records read back from the log; one that does not decode is counted,
/// logged and passed over. Returns the position to commit, when that moved it.
fn take_read(
    ctx: &Ctx,
    core: &mut Batcher<Spooled>,
    window: &mut DoneWindow,
    records: Vec<Record>,
) -> Option<u64> {
    let mut committed = None;
    for r in records {
        window.hand_out(r.offset, r.offset + 1);
        match Batch::decode(&r.frame, &ctx.limits) {
            Ok(batch) => take(core, r.offset, batch),
            Err(e) => {
                ctx.metrics.dropped(Outcome::Failed, 1);
                tracing::error!(offset = r.offset, error = %e, "A spooled batch does not decode and is passed over.");
                committed = window.finish(r.offset, r.offset + 1).or(committed);
            }
        }
    }
    committed
}

/// Reads up to `max` synced records from `from` on, off the async threads.
async fn read(ctx: &Arc<Ctx>, from: u64, max: usize) -> Result<Vec<Record>, String> {
    let c = ctx.clone();
    tokio::task::spawn_blocking(move || c.spool.read(from, max))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Puts a spooled record into the batcher; one with error reports starts a batch.
fn take(core: &mut Batcher<Spooled>, offset: u64, batch: Batch) {
    if !batch.errors.is_empty() {
        core.flush();
    }
    let events = batch.events.len() + batch.errors.len();
    let bytes = batch.events.iter().map(|e| e.json.len()).sum();
    core.push(
        std::time::Instant::now(),
        Spooled { offset, batch },
        events,
        bytes,
    );
}

/// Durable commits of the spool's position at most this often: a crash sends
/// again what was answered since the last one, and the aggregator's dedupe
/// answers it as a duplicate.
const COMMIT_EVERY: Duration = Duration::from_millis(100);

/// After this long without a new position, the spool is told to empty its
/// open file too when everything in it is answered.
const QUIET: Duration = Duration::from_secs(1);

/// Commits the latest position the forwarder reached, one durable write at a
/// time and at most every [`COMMIT_EVERY`] (positions that come meanwhile are
/// folded into the next); once quiet for [`QUIET`], commits once more so that
/// a spool whose records are all answered takes no space.
async fn commit(ctx: Arc<Ctx>, mut rx: tokio::sync::watch::Receiver<u64>) {
    let mut last = *rx.borrow_and_update();
    let mut trimmed_all = true;
    loop {
        let ended = match tokio::time::timeout(QUIET, rx.changed()).await {
            Ok(changed) => changed.is_err(),
            Err(_) => {
                if !trimmed_all {
                    let c = ctx.clone();
                    let _ = tokio::task::spawn_blocking(move || c.spool.commit(last, true)).await;
                    trimmed_all = true;
                }
                continue;
            }
        };
        let offset = (*rx.borrow_and_update()).max(last);
        if offset > last || (ended && !trimmed_all) {
            let c = ctx.clone();
            let _ = tokio::task::spawn_blocking(move || c.spool.commit(offset, ended)).await;
            last = offset;
            trimmed_all = ended;
        }
        if ended {
            return;
        }
        tokio::time::sleep(COMMIT_EVERY).await;
    }
}

/// One batch of spooled records: the first record's id, their events in
/// order, and the first record's error reports (only the first has any).
fn build_spooled(records: Vec<Spooled>) -> Batch {
    let mut records = records.into_iter();
    let Some(first) = records.next() else {
        return retry_batch(Vec::new());
    };
    let mut batch = first.batch;
    for r in records {
        let mut b = r.batch;
        batch.events.append(&mut b.events);
        batch.errors.append(&mut b.errors);
    }
    batch
}

/// Sends a batch of spooled records until an aggregator answers it; events
/// the aggregator failed are sent again (five times, then counted and dropped).
async fn send_spooled(ctx: &Ctx, records: Vec<Spooled>) {
    let mut batch = build_spooled(records);
    let delivery = Delivery::spooled();
    let mut failures = 0u32;
    loop {
        let reply = ctx.link.send(&batch, |b| ctx.encode(b)).await;
        let wait = match reply {
            Ok(LinkReply::Ack(ack)) => {
                ctx.metrics.batch(Outcome::Acknowledged);
                let events = std::mem::take(&mut batch.events);
                let retry = settle_hasty(ctx, events, ack.verdicts);
                if retry.is_empty() {
                    return;
                }
                failures += 1;
                if failures > 5 {
                    ctx.metrics.dropped(Outcome::Failed, retry.len());
                    tracing::error!(
                        events = retry.len(),
                        "Spooled events failed at the aggregator five times and are dropped."
                    );
                    return;
                }
                batch = retry_batch(retry);
                Duration::from_secs(1)
            }
            other => {
                match &other {
                    Ok(LinkReply::Busy(_)) | Err(_) => {}
                    Ok(refused) => {
                        tracing::warn!(reply = ?refused, "The aggregator did not take a spooled batch; retrying.");
                    }
                }
                match delivery.next(std::time::Instant::now(), attempted(&other)) {
                    Next::Retry(wait) => wait,
                    _ => Duration::from_secs(1),
                }
            }
        };
        tokio::time::sleep(wait).await;
    }
}
