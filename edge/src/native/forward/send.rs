//! Sending a batch to an aggregator until the core's [`Delivery`] says it is
//! delivered or given up (guaranteed: its senders get 503), and settling
//! its verdicts.

use super::*;

/// How an attempt ended, as the core's delivery policy sees it.
pub(super) fn attempted(reply: &Result<LinkReply, LinkDown>) -> Attempted {
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

pub(super) async fn send_guaranteed(ctx: &Ctx, mut items: Vec<Item>) {
    let counts: Vec<usize> = items.iter().map(|i| i.events.len()).collect();
    let batch = build(&mut items);
    let delivery = Delivery::guaranteed(std::time::Instant::now(), ctx.options.forward_timeout);
    let deadline = delivery
        .deadline()
        .map_or_else(Instant::now, Instant::from_std);
    let (message, wait) = loop {
        let sent =
            tokio::time::timeout_at(deadline, ctx.link.send(&batch, |b| ctx.encode(b))).await;
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
                let _ = item.reply.send(Forwarded::Verdicts(mine));
            }
            return;
        }
        match delivery.next(std::time::Instant::now(), attempted(&sent)) {
            Next::Retry(wait) => tokio::time::sleep(wait).await,
            Next::GiveUp(wait) => break (describe(&sent), wait),
            Next::Done => break (describe(&sent), Duration::from_secs(1)),
        }
    };
    ctx.metrics.batch(Outcome::Unavailable);
    ctx.metrics.count(Outcome::Unavailable, batch.events.len());
    tracing::warn!(events = batch.events.len(), error = %message, "A guaranteed batch found no aggregator; its senders get 503.");
    let mut events = batch.events.into_iter();
    for (item, n) in items.into_iter().zip(counts) {
        let _ = item.reply.send(Forwarded::Unavailable {
            message: message.clone(),
            retry_after_secs: retry_secs(wait),
            events: events.by_ref().take(n).collect(),
        });
    }
}

fn count_verdicts(metrics: &Metrics, counts: VerdictCounts) {
    metrics.count(Outcome::Delivered, counts.accepted);
    metrics.count(Outcome::Duplicate, counts.duplicate);
    metrics.count(Outcome::RateLimited, counts.rate_limited);
    metrics.count(Outcome::Failed, counts.failed);
}

/// Handles the verdicts on a hasty batch: rate-limited events are dropped
/// and counted (their senders were answered already); failed ones are
/// returned for another try.
pub(super) fn settle_hasty(
    ctx: &Ctx,
    events: Vec<BatchEvent>,
    verdicts: Vec<EventAck>,
) -> Vec<BatchEvent> {
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
