//! How an intake request is answered, in EventGate's shapes: 201 when every
//! event is in (or sampled out), 202 for `?hasty=true`, 207 with the
//! refused and failed events listed when some got in, and 400, 429 or 503
//! when none did. Bodies are `{"invalid": [...], "error": [...]}`, each item
//! `{status, event, context}`.

use serde_json::{Map, Value, json};
use sluice_shared::{
    BatchEvent, BodyError, EventAck, EventOutcome, StreamConfig, StreamsQuery, Verdict,
};

/// An answer to an intake request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After`, in seconds, for 429 and 503.
    pub retry_after_secs: Option<u32>,
    /// The JSON body, if any.
    pub body: Option<Value>,
}

impl Reply {
    /// A status with a message body `{"error": message}`.
    pub fn message(status: u16, message: &str) -> Reply {
        Reply {
            status,
            retry_after_secs: None,
            body: Some(json!({ "error": message })),
        }
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: &str, retry_after_secs: u32) -> Reply {
        Reply {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Reply::message(503, message)
        }
    }

    /// The body as bytes (empty when there is none).
    pub fn body_bytes(&self) -> Vec<u8> {
        self.body
            .as_ref()
            .and_then(|b| serde_json::to_vec(b).ok())
            .unwrap_or_default()
    }
}

/// What became of the accepted events after intake.
#[derive(Debug)]
pub enum Forwarded {
    /// `?hasty=true`: queued (or spooled) for the aggregator; nothing more is known.
    Hasty,
    /// The aggregator's verdicts, each with its event, in the order intake accepted them.
    Verdicts(Vec<(BatchEvent, EventAck)>),
    /// No aggregator took them: retry after this many seconds.
    Unavailable {
        /// Why.
        message: String,
        /// Seconds to wait before retrying.
        retry_after_secs: u32,
        /// The events.
        events: Vec<BatchEvent>,
    },
}

/// The answer to a body that was refused whole.
pub fn body_refused(e: &BodyError) -> Reply {
    let status = match e {
        BodyError::TooLarge { .. } | BodyError::TooManyEvents { .. } => 413,
        _ => 400,
    };
    Reply::message(status, &e.to_string())
}

/// The event as it goes back to its sender: as JSON when it is JSON, else as text.
fn event_value(raw: &[u8]) -> Value {
    serde_json::from_slice(raw)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned()))
}

fn retry_secs(ms: u32) -> u32 {
    ms.div_ceil(1000).max(1)
}

/// The answer to a request whose events went through intake, given what became of the accepted ones.
pub fn answer(outcomes: &[EventOutcome], forwarded: Forwarded) -> Reply {
    let mut invalid = Vec::new();
    let mut error = Vec::new();
    let mut ok = 0usize;
    for o in outcomes {
        match &o.verdict {
            Verdict::Accepted => {}
            Verdict::SampledOut => ok += 1,
            Verdict::Rejected(r) => invalid.push(json!({
                "status": "invalid",
                "event": event_value(o.raw.as_deref().unwrap_or_default().as_bytes()),
                "context": r.context(),
            })),
        }
    }
    let accepted = outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::Accepted)
        .count();
    // Rate-limited events, and events no aggregator took, say when to come back.
    let mut limited_for: Option<u32> = None;
    let mut unavailable_for: Option<u32> = None;
    let hasty = matches!(forwarded, Forwarded::Hasty);
    match forwarded {
        Forwarded::Hasty => ok += accepted,
        Forwarded::Verdicts(verdicts) => {
            for (event, ack) in verdicts {
                let context = match ack {
                    EventAck::Accepted | EventAck::Duplicate => {
                        ok += 1;
                        continue;
                    }
                    EventAck::RateLimited { retry_after_ms } => {
                        let secs = retry_secs(retry_after_ms);
                        limited_for = Some(limited_for.map_or(secs, |s| s.max(secs)));
                        json!({
                            "kind": "rate_limited",
                            "message": format!("stream `{}` is over its rate limit; retry after {retry_after_ms} ms", event.stream),
                            "retry_after_ms": retry_after_ms,
                        })
                    }
                    EventAck::Failed { reason } => {
                        unavailable_for = Some(unavailable_for.unwrap_or(1));
                        json!({ "kind": "failed", "message": reason })
                    }
                };
                error.push(json!({
                    "status": "error",
                    "event": event_value(&event.json),
                    "context": context,
                }));
            }
        }
        Forwarded::Unavailable {
            message,
            retry_after_secs,
            events,
        } => {
            unavailable_for = Some(retry_after_secs.max(1));
            for event in events {
                error.push(json!({
                    "status": "error",
                    "event": event_value(&event.json),
                    "context": { "kind": "unavailable", "message": message },
                }));
            }
        }
    }
    if invalid.is_empty() && error.is_empty() {
        return Reply {
            status: if hasty { 202 } else { 201 },
            retry_after_secs: None,
            body: None,
        };
    }
    let mut body = Map::new();
    body.insert("invalid".into(), Value::Array(invalid));
    let any_error = !error.is_empty();
    body.insert("error".into(), Value::Array(error));
    let body = Some(Value::Object(body));
    if ok > 0 {
        return Reply {
            status: 207,
            retry_after_secs: None,
            body,
        };
    }
    if any_error {
        // Nothing got in: say whether waiting helps, and how long.
        return match (unavailable_for, limited_for) {
            (Some(u), l) => Reply {
                status: 503,
                retry_after_secs: Some(u.max(l.unwrap_or(0))),
                body,
            },
            (None, l) => Reply {
                status: 429,
                retry_after_secs: Some(l.unwrap_or(1)),
                body,
            },
        };
    }
    Reply {
        status: 400,
        retry_after_secs: None,
        body,
    }
}

/// The answer to `GET /v1/streams?<query>`: the stream config as EventStreamConfig
/// gives it (see [`StreamsQuery`]); browsers get only the settings clients apply
/// unless they ask for `all_settings=true`. 400 for a malformed constraint. With
/// the answer, its `ETag`; a request whose `If-None-Match` names it gets 304 and
/// no body, so clients that poll the config pay little while it is unchanged.
pub fn streams(
    config: &StreamConfig,
    query: Option<&str>,
    if_none_match: Option<&str>,
) -> (Reply, Option<String>) {
    match StreamsQuery::parse(query) {
        Ok(q) => {
            let body = config.answer(&q, false);
            let tag = format!(
                "\"{:016x}\"",
                sluice_shared::fnv1a(body.to_string().as_bytes())
            );
            let unchanged = if_none_match.is_some_and(|h| {
                h.split(',')
                    .map(|t| t.trim().trim_start_matches("W/"))
                    .any(|t| t == tag || t == "*")
            });
            let reply = Reply {
                status: if unchanged { 304 } else { 200 },
                retry_after_secs: None,
                body: (!unchanged).then_some(body),
            };
            (reply, Some(tag))
        }
        Err(e) => (Reply::message(400, &e.to_string()), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::{Rejection, RejectionKind};

    fn event(n: u8) -> BatchEvent {
        BatchEvent {
            stream: "s".into(),
            topic: "s".into(),
            partition_key: None,
            rate_key: None,
            id: [n; 16],
            received_ms: 0,
            dt_ms: 0,
            schema_uri: "/t/1.0.0".into(),
            dedupe: true,
            json: format!(r#"{{"n":{n}}}"#).into_bytes().into(),
        }
    }

    fn accepted(index: usize) -> EventOutcome {
        EventOutcome {
            index,
            stream: Some("s".into()),
            verdict: Verdict::Accepted,
            event: None,
            raw: None,
        }
    }

    fn rejected(index: usize) -> EventOutcome {
        EventOutcome {
            index,
            stream: None,
            verdict: Verdict::Rejected(Rejection {
                kind: RejectionKind::NoStream,
                message: "no stream".into(),
                violations: None,
            }),
            event: None,
            raw: Some(r#"{"bad":true}"#.into()),
        }
    }

    #[test]
    fn statuses_follow_what_got_in() {
        let all_in = answer(
            &[accepted(0), accepted(1)],
            Forwarded::Verdicts(vec![
                (event(0), EventAck::Accepted),
                (event(1), EventAck::Duplicate),
            ]),
        );
        assert_eq!((all_in.status, all_in.body), (201, None));
        assert_eq!(answer(&[accepted(0)], Forwarded::Hasty).status, 202);

        let some = answer(
            &[accepted(0), rejected(1)],
            Forwarded::Verdicts(vec![(event(0), EventAck::Accepted)]),
        );
        assert_eq!(some.status, 207);
        let body = some.body.unwrap();
        assert_eq!(body["invalid"][0]["status"], "invalid");
        assert_eq!(body["invalid"][0]["event"]["bad"], true);
        assert_eq!(body["invalid"][0]["context"]["kind"], "no_stream");

        let none = answer(&[rejected(0)], Forwarded::Verdicts(Vec::new()));
        assert_eq!(none.status, 400);

        let limited = answer(
            &[accepted(0)],
            Forwarded::Verdicts(vec![(
                event(0),
                EventAck::RateLimited {
                    retry_after_ms: 1500,
                },
            )]),
        );
        assert_eq!((limited.status, limited.retry_after_secs), (429, Some(2)));
        assert_eq!(
            limited.body.unwrap()["error"][0]["context"]["retry_after_ms"],
            1500
        );

        let down = answer(
            &[accepted(0)],
            Forwarded::Unavailable {
                message: "no aggregator answers".into(),
                retry_after_secs: 5,
                events: vec![event(0)],
            },
        );
        assert_eq!((down.status, down.retry_after_secs), (503, Some(5)));
    }

    #[test]
    fn whole_body_refusals() {
        assert_eq!(
            body_refused(&BodyError::TooLarge { size: 9, limit: 1 }).status,
            413
        );
        assert_eq!(
            body_refused(&BodyError::TooManyEvents { limit: 2 }).status,
            413
        );
        assert_eq!(body_refused(&BodyError::EmptyArray).status, 400);
    }
}
