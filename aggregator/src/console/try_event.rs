//! Try an event: paste one (or an array), get the verdict the edge would
//! give, from the edge's own pipeline over the schemas and stream config
//! the aggregator serves: schema errors by path, sampling, the producing
//! window, and the stream's rate limits against its current rate. Nothing
//! is sent anywhere.

use super::html::page as frame;
use super::{Console, query};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice_shared::{RejectionKind, Verdict};

const EXAMPLE: &str = r#"{
  "$schema": "/sluice/test/event/1.0.0",
  "meta": {"stream": "sluice.test.event"},
  "dt": "2026-12-06T12:00:00Z",
  "message": "hello"
}"#;

/// `GET /console/try`.
pub async fn page() -> Response {
    let body = format!(
        r#"<h1>Try an event</h1>
<p class="muted">Paste an event (or a JSON array of them) and see what the edge would answer. Nothing is sent: the event is checked here, against the schemas and stream config this aggregator serves.</p>
<form id="try-form" class="try" onsubmit="return false">
<textarea id="try-event" rows="14" spellcheck="false">{}</textarea>
<button type="button" id="try-check">Check</button>
</form>
<section id="try-result" class="verdicts"></section>"#,
        super::html::esc(EXAMPLE)
    );
    frame("Try an event", "try", &body).into_response()
}

fn kind_name(kind: RejectionKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `POST /console/api/try[?stream=…]` with the event(s) as the body.
pub async fn check(
    State(console): State<Console>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let q = query(raw.as_deref());
    let catalog = console.0.catalog.get();
    let now = sluice_host::clock::now();
    let answer = match catalog.check(&body, q.get("stream").cloned(), None, now) {
        Err(message) => json!({
            "status": 400,
            "summary": format!("The edge would refuse the whole body: {message}"),
            "events": [],
        }),
        Ok(outcomes) => {
            let streams = console.0.streams.get();
            let mut accepted = 0;
            let events: Vec<Value> = outcomes
                .iter()
                .map(|o| {
                    let stream = o.stream.as_deref().unwrap_or("");
                    let entry = streams.get(stream);
                    let mut v = json!({"index": o.index, "stream": o.stream.as_deref()});
                    match &o.verdict {
                        Verdict::Accepted => {
                            accepted += 1;
                            v["verdict"] = json!("accepted");
                            v["message"] = json!("Valid: the edge would accept it.");
                        }
                        Verdict::SampledOut => {
                            accepted += 1;
                            v["verdict"] = json!("sampled_out");
                            v["message"] = json!("Valid, but outside the stream's sample: the edge would acknowledge it and drop it.");
                        }
                        Verdict::Rejected(r) => {
                            v["verdict"] = json!("rejected");
                            v["kind"] = json!(kind_name(r.kind));
                            v["message"] = json!(r.message);
                            if let Some(violations) = &r.violations {
                                v["errors"] = violations
                                    .0
                                    .iter()
                                    .map(|x| json!({"path": x.instance_path, "message": x.message, "keyword": x.keyword}))
                                    .collect();
                            }
                        }
                    }
                    if let Some(e) = entry {
                        v["sample"] = e
                            .settings
                            .sample
                            .as_ref()
                            .map_or(Value::Null, |s| json!({"unit": s.unit, "rate": s.rate}));
                        v["windows"] = json!(e.settings.windows.len());
                        let rate = console.0.metrics.flow.stream(stream, 1).recent_rate["accepted"];
                        v["rate_limits"] = e
                            .settings
                            .rate_limit
                            .iter()
                            .map(|l| {
                                let whole = l.key.is_none();
                                json!({
                                    "events_per_second": l.events_per_second,
                                    "burst": l.burst(),
                                    "per": l.key.clone().unwrap_or_else(|| "stream".into()),
                                    "current_rate": rate,
                                    "would_limit": whole && rate >= l.events_per_second,
                                })
                            })
                            .collect();
                    }
                    v
                })
                .collect();
            let (status, summary) = match (accepted, events.len()) {
                (a, n) if a == n => (201, format!("The edge would accept all {n} (201).")),
                (0, n) => (400, format!("The edge would refuse all {n} (400).")),
                (a, n) => (
                    207,
                    format!("The edge would accept {a} of {n} and list the rest (207)."),
                ),
            };
            json!({"status": status, "summary": summary, "events": events})
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response()
}
