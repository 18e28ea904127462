//! The live tail: a stream's newest events as server-sent events, with the
//! invalid events the edges reported for it (error events naming it, checked
//! again here, so each error sits next to its field).
//!
//! Each open tail is one thread that, four times a second, takes what the
//! commit loop offered it ([`super::taps`]: durable events, into a bounded
//! queue) and sends the newest [`SEND_PER_TICK`] that pass its filter; the
//! page says how many it passed over. [`TailSource`] reads the stream's last
//! events from the log or Kafka, for the canary check.

use super::html::page as frame;
use super::taps::{Subscription, Tapped};
use super::{Console, query};
use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice_log::{LogOptions, Reader, Start};
use sluice_shared::{Timestamp, Verdict};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Records read at most at once.
const READ_PER_TICK: usize = 500;
/// Events sent at most per look.
const SEND_PER_TICK: usize = 25;
/// Time between looks.
const TICK: Duration = Duration::from_millis(250);

/// Numbers the console's Kafka consumers apart.
static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Where the tail reads: the embedded log or Kafka.
#[derive(Clone, Debug)]
pub enum TailSource {
    /// The embedded log's folder.
    Log(PathBuf),
    /// Kafka's bootstrap servers, and the client properties that reach them.
    Kafka(String, Vec<(String, String)>),
}

impl TailSource {
    /// The values of (about) the last `n` records of `topic`: the log's last `n`,
    /// or Kafka's last `n` of each partition.
    fn recent(&self, topic: &str, n: u64) -> Result<Vec<Vec<u8>>, String> {
        match self {
            TailSource::Log(dir) => {
                let mut r = Reader::open(dir, topic, Start::Latest, LogOptions::default())
                    .map_err(|e| e.to_string())?;
                let at = r.position().saturating_sub(n);
                r.seek(Start::Offset(at)).map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                loop {
                    let batch = r.poll(READ_PER_TICK).map_err(|e| e.to_string())?;
                    if batch.is_empty() {
                        return Ok(out);
                    }
                    out.extend(batch.into_iter().map(|r| r.value));
                }
            }
            TailSource::Kafka(brokers, props) => kafka_recent(brokers, props, topic, n),
        }
    }

    /// When the newest canary event (`meta.domain` = `canary`) among the last
    /// `n` events of `topic` arrived (its `meta.dt`, else its `dt`).
    pub fn last_canary(&self, topic: &str, n: u64) -> Result<Option<i64>, String> {
        let mut newest = None;
        for raw in self.recent(topic, n)? {
            let Ok(v) = serde_json::from_slice::<Value>(&raw) else {
                continue;
            };
            if v.pointer("/meta/domain").and_then(Value::as_str) == Some("canary") {
                let at = ["/meta/dt", "/dt"]
                    .iter()
                    .filter_map(|p| v.pointer(p).and_then(Value::as_str))
                    .find_map(|t| Timestamp::parse_rfc3339(t).ok())
                    .map(Timestamp::unix_millis);
                newest = newest.max(at.or(Some(0)));
            }
        }
        Ok(newest)
    }
}

/// Kafka's last `n` records of each partition of `topic`, read to each partition's end.
fn kafka_recent(
    brokers: &str,
    properties: &[(String, String)],
    topic: &str,
    n: u64,
) -> Result<Vec<Vec<u8>>, String> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::message::Message;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!(
                "sluice-console-{}-{}-{}",
                std::process::id(),
                sluice_host::clock::unix_millis(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    for (k, v) in properties {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let mut list = rdkafka::TopicPartitionList::new();
    let back = rdkafka::Offset::OffsetTail(i64::try_from(n).unwrap_or(i64::MAX));
    for t in metadata.topics() {
        for p in t.partitions() {
            list.add_partition_offset(topic, p.id(), back)
                .map_err(|e| e.to_string())?;
        }
    }
    let mut open: std::collections::HashSet<i32> =
        list.elements().iter().map(|e| e.partition()).collect();
    consumer.assign(&list).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !open.is_empty() && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(m.payload().unwrap_or_default().to_vec()),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => {}
        }
    }
    Ok(out)
}

/// `GET /console/tail?stream=…`: the page.
pub async fn page(State(console): State<Console>, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw.as_deref());
    let stream = q.get("stream").cloned().unwrap_or_default();
    let streams = console.0.streams.get();
    let options: String = streams
        .entries()
        .filter(|e| !e.key.starts_with('/'))
        .map(|e| {
            let sel = if e.key == stream { " selected" } else { "" };
            format!(
                r#"<option value="{k}"{sel}>{k}</option>"#,
                k = super::html::esc(&e.key)
            )
        })
        .collect();
    let body = format!(
        r#"<h1>Live tail</h1>
<form class="tail" id="tail-form" onsubmit="return false">
<label>Stream <select id="stream"><option value="">choose a stream</option>{options}</select></label>
<label>Field <input id="field" placeholder="e.g. meta.domain" value="{field}"></label>
<label>Value <input id="value" placeholder="equals" value="{value}"></label>
<button type="button" id="pause">Pause</button>
<span id="tail-status" class="muted">not connected</span>
</form>
<div class="tail-columns">
<section><h2>Events <span class="muted" id="event-count">0</span></h2><ol id="events" class="events"></ol></section>
<section><h2>Invalid <span class="muted" id="invalid-count">0</span></h2><ol id="invalid" class="events"></ol></section>
</div>"#,
        field = super::html::esc(q.get("field").map_or("", String::as_str)),
        value = super::html::esc(q.get("value").map_or("", String::as_str)),
    );
    frame("Live tail", "tail", &body).into_response()
}

/// Whether a field (by dotted path) holds `wanted`: a string as written, other values as JSON (`3`, `true`).
fn field_matches(event: &Value, field: &str, wanted: &str) -> bool {
    let mut at = event;
    for key in field.split('.') {
        match at.get(key) {
            Some(v) => at = v,
            None => return false,
        }
    }
    match at {
        Value::String(s) => s == wanted,
        other => serde_json::from_str::<Value>(wanted).is_ok_and(|w| &w == other),
    }
}

/// What a look found and sends.
struct Look {
    messages: Vec<Value>,
    skipped: u64,
}

/// One open tail's state.
struct Tail {
    console: Console,
    stream: String,
    filter: Option<(String, String)>,
    sub: Subscription,
}

impl Tail {
    fn wanted(&self, v: &Value) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|(f, want)| field_matches(v, f, want))
    }

    /// Takes what the commit loop offered since the last look: the newest
    /// [`SEND_PER_TICK`] events that pass the filter, and the invalid ones.
    fn look(&mut self) -> Look {
        let mut skipped = self.sub.passed.swap(0, Ordering::Relaxed);
        let offered: Vec<Tapped> = self.sub.events.try_iter().collect();
        let (errors, events): (Vec<Tapped>, Vec<Tapped>) =
            offered.into_iter().partition(|t| t.error);
        let mut matched: Vec<Value> = events
            .iter()
            .filter_map(|t| serde_json::from_slice::<Value>(&t.json).ok())
            .filter(|v| self.wanted(v))
            .collect();
        if matched.len() > SEND_PER_TICK {
            skipped += (matched.len() - SEND_PER_TICK) as u64;
            matched.drain(..matched.len() - SEND_PER_TICK);
        }
        let mut messages: Vec<Value> = matched
            .into_iter()
            .map(|event| json!({"kind": "event", "verdict": "accepted", "event": event}))
            .collect();
        let mut sent = 0;
        for t in &errors {
            let Ok(error) = serde_json::from_slice::<Value>(&t.json) else {
                continue;
            };
            if error.get("errored_stream_name").and_then(Value::as_str) != Some(&self.stream) {
                continue;
            }
            let raw = error.get("raw_event").and_then(Value::as_str).unwrap_or("");
            let event = serde_json::from_str::<Value>(raw).ok();
            if let Some(e) = &event
                && !self.wanted(e)
            {
                continue;
            }
            if sent == SEND_PER_TICK {
                skipped += 1;
                continue;
            }
            sent += 1;
            messages.push(self.invalid(&error, raw, event));
        }
        Look { messages, skipped }
    }

    /// An invalid event, checked again for its errors by field.
    fn invalid(&self, error: &Value, raw: &str, event: Option<Value>) -> Value {
        let catalog = self.console.0.catalog.get();
        let errors: Vec<Value> = catalog
            .check(
                raw.as_bytes(),
                Some(self.stream.clone()),
                None,
                sluice_host::clock::now(),
            )
            .ok()
            .and_then(|o| o.into_iter().next())
            .and_then(|o| match o.verdict {
                Verdict::Rejected(r) => r.violations,
                _ => None,
            })
            .map(|v| {
                v.0.iter()
                    .map(|v| json!({"path": v.instance_path, "message": v.message, "keyword": v.keyword}))
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "kind": "invalid",
            "verdict": error.get("error_type").cloned().unwrap_or(json!("invalid")),
            "message": error.get("message").cloned().unwrap_or(Value::Null),
            "dt": error.get("dt").cloned().unwrap_or(Value::Null),
            "event": event,
            "raw": raw,
            "errors": errors,
        })
    }
}

/// `GET /console/api/tail?stream=…&field=…&value=…`: server-sent events,
/// each `data` one JSON message: `{kind: "event" | "invalid" | "skipped" | "error", …}`.
pub async fn events(State(console): State<Console>, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw.as_deref());
    let stream = q.get("stream").cloned().unwrap_or_default();
    let filter = match (q.get("field"), q.get("value")) {
        (Some(f), Some(v)) if !f.trim().is_empty() => Some((f.trim().to_owned(), v.clone())),
        _ => None,
    };
    // A value JSON writes as it is can be looked for in the events' bytes before they are offered.
    let needle = filter.as_ref().and_then(|(_, want)| {
        want.bytes()
            .all(|b| (b.is_ascii_graphic() && b != b'"' && b != b'\\') || b == b' ')
            .then(|| want.as_bytes().to_vec())
    });
    let sub = console
        .0
        .metrics
        .taps
        .subscribe(&stream, &console.0.error_stream, needle);
    let (tx, rx) = tokio::sync::mpsc::channel::<Value>(16);
    let spawned = std::thread::Builder::new()
        .name("console-tail".into())
        .spawn(move || {
            let mut tail = Tail {
                console,
                stream,
                filter,
                sub,
            };
            let _ = tx.blocking_send(json!({"kind": "ready"}));
            while !tx.is_closed() {
                let look = tail.look();
                if look.skipped > 0
                    && tx
                        .blocking_send(json!({"kind": "skipped", "count": look.skipped}))
                        .is_err()
                {
                    return;
                }
                for m in look.messages {
                    if tx.blocking_send(m).is_err() {
                        return;
                    }
                }
                std::thread::sleep(TICK);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "Could not start a console tail.");
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let m = rx.recv().await?;
        Some((
            Ok::<_, std::convert::Infallible>(Event::default().data(m.to_string())),
            rx,
        ))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_compares_a_field_as_text() {
        let e = json!({"meta": {"domain": "a.org"}, "n": 3, "ok": true});
        assert!(field_matches(&e, "meta.domain", "a.org"));
        assert!(!field_matches(&e, "meta.domain", "b.org"));
        assert!(field_matches(&e, "n", "3"));
        assert!(field_matches(&e, "ok", "true"));
        assert!(!field_matches(&e, "meta.missing", ""));
    }
}
