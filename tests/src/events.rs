//! Test events, and sending them as a client that honours Retry-After.

use crate::http_call;

/// Event number `n` of `stream` for `topic`: id `n + 1`, JSON `{"n":n}`, stamped `at_ms`.
pub fn numbered_event(stream: &str, topic: &str, n: u64, at_ms: i64) -> sluice_shared::BatchEvent {
    sluice_shared::BatchEvent {
        stream: stream.into(),
        topic: topic.into(),
        partition_key: None,
        rate_key: None,
        id: (u128::from(n) + 1).to_be_bytes(),
        received_ms: at_ms,
        dt_ms: at_ms,
        schema_uri: "/sluice/test/event/1.0.0".into(),
        dedupe: true,
        json: format!(r#"{{"n":{n}}}"#).into_bytes().into(),
    }
}

/// A body of events of the test stream `stream` (schema `sluice/test/event`),
/// one per message, each with a `meta.id` made from its message (its first 64
/// characters), so that a retry of the same events is deduplicated as a
/// client's retry should be.
pub fn test_events_body(stream: &str, messages: &[String]) -> Vec<u8> {
    let events: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let id: String = m.chars().take(64).collect();
            serde_json::json!({
                "$schema": "/sluice/test/event/1.0.0",
                "meta": {"stream": stream, "id": id},
                "dt": "2026-11-27T12:00:00.000Z",
                "message": m,
            })
        })
        .collect();
    serde_json::to_vec(&events).unwrap_or_default()
}

/// What a [`send_retrying`] call saw.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// The status that finally took the events (201 or 202).
    pub status: u16,
    /// 503 and 429 answers before that, each with a Retry-After.
    pub refused: usize,
    /// The first refusal's body.
    pub refusal: Option<String>,
}

/// Posts `messages` to the edge until it takes them (201 or 202), as a
/// client that honours Retry-After does: a 503 or 429 is retried after the
/// time it names (at most 200 ms here, to keep tests short). Any other
/// status panics, naming it and its body.
pub fn send_retrying(
    edge: std::net::SocketAddr,
    stream: &str,
    messages: &[String],
    hasty: bool,
) -> Delivery {
    send_counting(
        edge,
        stream,
        messages,
        hasty,
        &std::sync::atomic::AtomicUsize::new(0),
    )
}

/// [`send_retrying`], adding each refusal to `refusals` as it comes.
pub fn send_counting(
    edge: std::net::SocketAddr,
    stream: &str,
    messages: &[String],
    hasty: bool,
    refusals: &std::sync::atomic::AtomicUsize,
) -> Delivery {
    let body = test_events_body(stream, messages);
    let path = if hasty {
        "/v1/events?hasty=true"
    } else {
        "/v1/events"
    };
    let mut delivery = Delivery::default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the edge did not take a batch within 180 s"
        );
        let reply = match http_call(
            edge,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            &body,
        ) {
            Ok(r) => r,
            Err(e) => panic!("the edge does not answer: {e}"),
        };
        match reply.status {
            201 | 202 => {
                delivery.status = reply.status;
                return delivery;
            }
            503 | 429 => {
                let retry = reply
                    .header("retry-after")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("{} without a Retry-After", reply.status));
                delivery.refused += 1;
                refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                delivery
                    .refusal
                    .get_or_insert_with(|| String::from_utf8_lossy(&reply.body).into_owned());
                std::thread::sleep(std::time::Duration::from_millis((retry * 1000).min(200)));
            }
            other => panic!(
                "the edge answered {other}: {}",
                String::from_utf8_lossy(&reply.body)
            ),
        }
    }
}
