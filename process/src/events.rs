//! The events processing writes besides a rule's own: a retry (the event
//! again, for a later attempt, in change-propagation's
//! `/change-prop/retry/1.0.0` shape), an error report in Wikimedia's
//! `/error/2.1.0` shape (as the aggregator's error stream writes them), and
//! a fan-out's continue event (`/change-prop/continue/1.0.0`, carrying the
//! cursor and the root event). Ids and times are arguments: the caller
//! makes them, so the same input gives the same event.

use crate::fanout::Root;
use serde_json::{Value, json};

/// The `$schema` of retry events.
pub const RETRY_SCHEMA: &str = "/change-prop/retry/1.0.0";
/// The `$schema` of continue events.
pub const CONTINUE_SCHEMA: &str = "/change-prop/continue/1.0.0";
/// The `$schema` of error events.
pub const ERROR_SCHEMA: &str = "/error/2.1.0";

/// Where and when a new event is written.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    /// Its stream.
    pub stream: &'a str,
    /// Its `meta.id`.
    pub id: &'a str,
    /// Its `meta.dt` and `dt`, ISO-8601.
    pub dt: &'a str,
}

fn meta(stamp: Stamp<'_>) -> Value {
    json!({"stream": stamp.stream, "id": stamp.id, "dt": stamp.dt})
}

/// `original` to be tried again by `rule` as retry `attempt`, `retries_left` after it.
pub fn retry(
    stamp: Stamp<'_>,
    rule: &str,
    original: &Value,
    attempt: u32,
    retries_left: u32,
    reason: &str,
) -> Value {
    json!({
        "$schema": RETRY_SCHEMA,
        "meta": meta(stamp),
        "dt": stamp.dt,
        "emitter_id": format!("sluice-process/{rule}"),
        "rule": rule,
        "attempt": attempt,
        "retries_left": retries_left,
        "reason": reason,
        "original_event": original,
    })
}

/// `original` could not be processed by `rule`, for `message`.
pub fn error(stamp: Stamp<'_>, rule: &str, original: &Value, message: &str) -> Value {
    let mut e = json!({
        "$schema": ERROR_SCHEMA,
        "meta": meta(stamp),
        "dt": stamp.dt,
        "emitter_id": format!("sluice-process/{rule}"),
        "error_type": "process",
        "message": message,
        "raw_event": original.to_string(),
    });
    if let Some(s) = original.pointer("/meta/stream").and_then(Value::as_str) {
        e["errored_stream_name"] = json!(s);
    }
    if let Some(s) = original.get("$schema").and_then(Value::as_str) {
        e["errored_schema_uri"] = json!(s);
    }
    e
}

/// The rest of `target`'s fan-out after `cursor`, for the root event `root`.
pub fn cont(
    stamp: Stamp<'_>,
    rule: &str,
    target: &str,
    cursor: &str,
    root: &Root,
    original: &Value,
) -> Value {
    json!({
        "$schema": CONTINUE_SCHEMA,
        "meta": meta(stamp),
        "dt": stamp.dt,
        "rule": rule,
        "target": target,
        "cursor": cursor,
        "root_event": {"signature": root.signature, "dt_ms": root.dt_ms},
        "original_event": original,
    })
}

/// A continue event's parts: target, cursor, root and original event.
pub fn read_cont(event: &Value) -> Option<(&str, &str, Root, &Value)> {
    if event.get("$schema").and_then(Value::as_str) != Some(CONTINUE_SCHEMA) {
        return None;
    }
    let root = event.get("root_event")?;
    Some((
        event.get("target")?.as_str()?,
        event.get("cursor")?.as_str()?,
        Root {
            signature: root.get("signature")?.as_str()?.to_owned(),
            dt_ms: root.get("dt_ms")?.as_i64()?,
        },
        event.get("original_event")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: Stamp<'static> = Stamp {
        stream: "sluice.process.retry",
        id: "0f6c5e0e-8a4c-4b8f-9c1f-2b7e3d1a9c00",
        dt: "2026-12-06T12:00:00.000Z",
    };

    #[test]
    fn retries_errors_and_continuations_carry_what_the_next_step_needs() {
        let original = json!({"$schema": "/page/change/1.0.0", "meta": {"stream": "page.change", "id": "e1"}, "title": "A"});
        let r = retry(STAMP, "purge", &original, 1, 1, "status 503");
        assert_eq!(r["$schema"], RETRY_SCHEMA);
        assert_eq!(r["meta"]["stream"], "sluice.process.retry");
        assert_eq!(r["original_event"], original);
        assert_eq!(
            (r["attempt"].as_u64(), r["retries_left"].as_u64()),
            (Some(1), Some(1))
        );

        let e = error(
            Stamp {
                stream: "sluice.error.process",
                ..STAMP
            },
            "purge",
            &original,
            "status 400",
        );
        assert_eq!(e["$schema"], ERROR_SCHEMA);
        assert_eq!(e["errored_stream_name"], "page.change");
        assert_eq!(e["errored_schema_uri"], "/page/change/1.0.0");
        assert_eq!(e["emitter_id"], "sluice-process/purge");
        assert_eq!(
            serde_json::from_str::<Value>(e["raw_event"].as_str().unwrap()).unwrap(),
            original
        );

        let root = Root {
            signature: "Template:A".into(),
            dt_ms: 1_796_560_000_000,
        };
        let c = cont(
            STAMP,
            "rerender",
            "Template:A",
            "Page0499",
            &root,
            &original,
        );
        let (target, cursor, back, orig) = read_cont(&c).unwrap();
        assert_eq!((target, cursor), ("Template:A", "Page0499"));
        assert_eq!(back, root);
        assert_eq!(orig, &original);
        assert!(read_cont(&original).is_none());
    }
}
