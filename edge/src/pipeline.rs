//! What both hosts do with intake's outcomes: take the accepted events out
//! for forwarding, and turn refused ones into error reports for the
//! aggregator's error stream.

use serde_json::Value;
use sluice_shared::{BatchError, BatchEvent, EventOutcome, RejectionKind, Verdict};

/// Longest refused event kept in an error report; longer ones are cut.
pub const MAX_REPORTED_EVENT: usize = 64 * 1024;

/// A request's events, sorted for forwarding.
#[derive(Debug, Default)]
pub struct Taken {
    /// Accepted events, in body order.
    pub events: Vec<BatchEvent>,
    /// Reports of the refused events.
    pub errors: Vec<BatchError>,
    /// Events outside their stream's sample.
    pub sampled_out: usize,
}

/// The JSON name of a rejection kind, e.g. `unknown_stream`.
pub fn kind_name(kind: RejectionKind) -> String {
    match serde_json::to_value(kind) {
        Ok(Value::String(s)) => s,
        _ => "invalid".to_owned(),
    }
}

/// Takes the accepted events out of `outcomes` and reports the refused ones.
pub fn take(outcomes: &mut [EventOutcome], received_ms: i64, request_id: Option<&str>) -> Taken {
    let mut taken = Taken {
        events: Vec::with_capacity(outcomes.len()),
        ..Taken::default()
    };
    for o in outcomes {
        match (&o.verdict, o.event.take()) {
            (_, Some(event)) => taken.events.push(event),
            (Verdict::SampledOut, None) => taken.sampled_out += 1,
            (Verdict::Rejected(r), None) => {
                let mut raw = o.raw.clone().unwrap_or_default();
                if raw.len() > MAX_REPORTED_EVENT {
                    let cut = (0..=MAX_REPORTED_EVENT)
                        .rev()
                        .find(|&i| raw.is_char_boundary(i))
                        .unwrap_or(0);
                    raw.truncate(cut);
                }
                taken.errors.push(BatchError {
                    stream: o.stream.as_deref().map(str::to_owned),
                    schema_uri: None,
                    error_type: kind_name(r.kind),
                    message: r.message.clone(),
                    raw_event: raw,
                    received_ms,
                    request_id: request_id.map(str::to_owned),
                });
            }
            (Verdict::Accepted, None) => {}
        }
    }
    taken
}
