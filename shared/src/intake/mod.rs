//! The intake pipeline as a pure function: request metadata and a body in,
//! a verdict per event and the accepted, enriched events out.
//!
//! For each event: parse strictly; resolve the stream (`meta.stream` or the
//! `stream` parameter) and refuse unknown, disabled or closed streams;
//! resolve the schema (`$schema` or `schema_uri`) and refuse titles the
//! stream does not take; enrich (server-filled fields go in before
//! validation, since schemas may require them); validate; sample; compute
//! topic, partition key and rate-limit key. Accepted events keep the bytes
//! the client sent, with server-filled fields spliced in.
//!
//! This file holds the body: its checks, its events in order, and the one
//! buffer their JSON shares; [`event`] takes one event through its steps,
//! [`spare`] keeps a thread's lists between bodies, and [`tally`] counts
//! verdicts for metrics.

mod event;
mod spare;
mod tally;

pub use tally::Tally;

use crate::FastMap;
use crate::json::{BodyError, BodyLimits};
use crate::registry::{CompiledSchema, SchemaRegistry};
use crate::stream_config::{StreamConfig, StreamEntry};
use crate::tape::{Tape, TapeError};
use crate::timestamp::Timestamp;
use crate::validation::Violations;
use crate::wire::BatchEvent;
use event::tape_type_name;
use serde::Serialize;
use serde_json::{Map, Value};
use spare::{BodySpare, received_text};
use std::sync::Arc;

/// Namespace for UUIDv5 ids derived from `meta.id`s that are not UUIDs.
pub const EVENT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5c1e_0000_7a1d_4b1e_9e0f_e7e0_1d5e_1ce0);

/// What the host knows about the request, besides its body.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// Headers as (lower-case name, value).
    pub headers: Vec<(String, String)>,
    /// The `stream` query parameter.
    pub stream: Option<String>,
    /// The `schema_uri` query parameter.
    pub schema_uri: Option<String>,
    /// The client's address, as the host determined it (trusted proxies only).
    pub client_ip: Option<String>,
    /// When the request arrived.
    pub received: Timestamp,
}

impl RequestMeta {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Settings of the pipeline itself.
#[derive(Debug, Clone, Default)]
pub struct IntakeOptions {
    /// Body and event size limits.
    pub limits: BodyLimits,
    /// Seed of the keyed hash that turns client addresses into rate-limit keys;
    /// share it across edges so per-client limits agree.
    pub client_hash_seed: u64,
}

/// Why an event was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    /// Over the per-event size limit.
    TooLarge,
    /// Not parseable as an event (duplicate keys and the like).
    Malformed,
    /// Not a JSON object.
    NotAnObject,
    /// No `meta.stream` and no `stream` parameter.
    NoStream,
    /// The stream is not configured.
    UnknownStream,
    /// The stream is configured with `enabled: false`.
    StreamDisabled,
    /// The stream is outside its producing windows.
    StreamClosed,
    /// No `$schema` and no `schema_uri` parameter.
    NoSchema,
    /// The schema URI does not resolve in the repositories.
    UnknownSchema,
    /// The schema's title is not the stream's `schema_title`.
    SchemaNotAllowed,
    /// The event does not validate.
    Invalid,
}

/// A refused event's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The kind of refusal.
    pub kind: RejectionKind,
    /// A sentence naming what was wrong.
    pub message: String,
    /// Schema violations, for `Invalid`.
    pub violations: Option<Violations>,
}

impl Rejection {
    fn new(kind: RejectionKind, message: String) -> Self {
        Rejection {
            kind,
            message,
            violations: None,
        }
    }

    /// The EventGate-style `context` object: message, and for invalid events `errors` and `errorsText`.
    pub fn context(&self) -> Value {
        let mut ctx = Map::new();
        ctx.insert(
            "kind".into(),
            serde_json::to_value(self.kind).unwrap_or(Value::Null),
        );
        ctx.insert("message".into(), Value::String(self.message.clone()));
        if let Some(v) = &self.violations {
            ctx.insert(
                "errors".into(),
                serde_json::to_value(&v.0).unwrap_or(Value::Null),
            );
            ctx.insert("errorsText".into(), Value::String(v.errors_text()));
        }
        Value::Object(ctx)
    }
}

/// The verdict on one event of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted: the event is in [`EventOutcome::event`] and goes on to the aggregator.
    Accepted,
    /// Valid but outside the stream's sample: acknowledged and dropped.
    SampledOut,
    /// Refused, with the reason.
    Rejected(Rejection),
}

/// One event's outcome.
#[derive(Debug, Clone)]
pub struct EventOutcome {
    /// Position in the body.
    pub index: usize,
    /// The stream, when it could be told.
    pub stream: Option<Arc<str>>,
    /// The verdict.
    pub verdict: Verdict,
    /// The enriched event, when accepted.
    pub event: Option<BatchEvent>,
    /// The event's text as sent, when refused (for the sender's answer and the error stream).
    pub raw: Option<String>,
}

/// The schemas and stream config that intake works from; swapped whole on reload.
#[derive(Debug)]
pub struct Intake {
    registry: Arc<SchemaRegistry>,
    streams: Arc<StreamConfig>,
    options: IntakeOptions,
    client_hasher: foldhash::quality::FixedState,
    /// (stream entry, schema) → which of the stream's header fields the schema has,
    /// worked out once rather than per event. Keyed by where each lives: both are
    /// held, unchanged, by the `Arc`s above for as long as this map is.
    header_plan: FastMap<(usize, usize), Vec<usize>>,
}

impl Intake {
    /// A pipeline over these schemas and streams.
    pub fn new(
        registry: Arc<SchemaRegistry>,
        streams: Arc<StreamConfig>,
        options: IntakeOptions,
    ) -> Self {
        let client_hasher = foldhash::quality::FixedState::with_seed(options.client_hash_seed);
        let mut header_plan = FastMap::default();
        for entry in streams.entries() {
            let title = &entry.settings.schema_title;
            for schema in registry.iter().filter(|s| &s.title == title) {
                let fields = (0..entry.header_fields.len())
                    .filter(|&i| schema.has_property(&entry.header_fields[i].0))
                    .collect();
                header_plan.insert(plan_key(entry, schema), fields);
            }
        }
        Intake {
            registry,
            streams,
            options,
            client_hasher,
            header_plan,
        }
    }

    /// The schema registry.
    pub fn registry(&self) -> &Arc<SchemaRegistry> {
        &self.registry
    }

    /// The stream config.
    pub fn streams(&self) -> &Arc<StreamConfig> {
        &self.streams
    }

    /// The options.
    pub fn options(&self) -> &IntakeOptions {
        &self.options
    }

    /// Runs a body through the pipeline. `ids` supplies `meta.id`s for events without one.
    pub fn process(
        &self,
        req: &RequestMeta,
        body: &[u8],
        ids: &mut EventIds,
    ) -> Result<Vec<EventOutcome>, BodyError> {
        let limits = &self.options.limits;
        if body.len() > limits.max_body_bytes {
            return Err(BodyError::TooLarge {
                size: body.len(),
                limit: limits.max_body_bytes,
            });
        }
        // Invalid UTF-8 is confined to the events holding it: decode lossily, remember where.
        let lossy;
        let (text, bad_utf8) = match std::str::from_utf8(body) {
            Ok(text) => (text, Vec::new()),
            Err(_) => {
                let (decoded, bad) = decode_lossy(body);
                lossy = decoded;
                (lossy.as_str(), bad)
            }
        };
        let first = text.trim_start().as_bytes().first().copied();
        match first {
            None => return Err(BodyError::Empty),
            Some(b'{' | b'[') => {}
            Some(_) => {
                // Say what the scalar is if it parses, else where it breaks.
                let tape = Tape::parse(text).map_err(|e| malformed(text, &e))?;
                return Err(BodyError::NotEventOrArray {
                    found: tape_type_name(&tape, 0),
                });
            }
        }
        // The thread's lists from its last body: once warm, a body allocates only what it returns.
        let mut spare = BodySpare::take();
        let mut tape =
            Tape::parse_body_into(text, limits.max_events, &mut spare.spans).map_err(|e| {
                if e.too_many_events {
                    BodyError::TooManyEvents {
                        limit: limits.max_events,
                    }
                } else {
                    malformed(text, &e)
                }
            })?;
        let spans = &spare.spans;
        if spans.is_empty() {
            return Err(BodyError::EmptyArray);
        }
        let mut out = Vec::with_capacity(spans.len());
        let mut body_out = BodyOut {
            received_text: received_text(&mut spare.received, req.received),
            // Room for what enrichment adds to each event: an id, a time, a few headers.
            jsons: String::with_capacity(text.len() + 320 * spans.len()),
        };
        let ranges = &mut spare.ranges;
        for (index, span) in spans.iter().enumerate() {
            // Built in place: an outcome is a few hundred bytes, not worth moving about.
            out.push(EventOutcome {
                index,
                stream: None,
                verdict: Verdict::Accepted,
                event: None,
                raw: None,
            });
            let at = out.len() - 1;
            let Some(outcome) = out.last_mut() else {
                continue;
            };
            let problem = span.problem.clone().or_else(|| {
                bad_utf8
                    .iter()
                    .any(|&at| (span.start..span.end).contains(&at))
                    .then(|| "the event holds bytes that are not valid UTF-8".to_owned())
            });
            if let Some(problem) = problem {
                outcome.verdict = Verdict::Rejected(Rejection::new(
                    RejectionKind::Malformed,
                    format!("the event is not valid JSON: {problem}"),
                ));
                outcome.raw = Some(text[span.start..span.end].to_owned());
                continue;
            }
            tape.reset_added();
            let from = body_out.jsons.len();
            match self.run(&mut tape, span, req, ids, outcome, &mut body_out) {
                Ok(true) => ranges.push((at, from..body_out.jsons.len())),
                Ok(false) => outcome.verdict = Verdict::SampledOut,
                Err(r) => {
                    outcome.verdict = Verdict::Rejected(r);
                    outcome.raw = Some(text[span.start..span.end].to_owned());
                }
            }
        }
        let jsons = bytes::Bytes::from(body_out.jsons.into_bytes());
        if let [(i, range)] = ranges.as_slice()
            && range.len() == jsons.len()
        {
            // One event takes the whole buffer (a body of one, say): no slice to count.
            if let Some(event) = &mut out[*i].event {
                event.json = jsons;
            }
        } else {
            for (i, range) in ranges.drain(..) {
                if let Some(event) = &mut out[i].event {
                    event.json = jsons.slice(range);
                }
            }
        }
        spare.received.1 = body_out.received_text;
        spare.keep();
        Ok(out)
    }
}

/// What the events of one body share.
struct BodyOut {
    /// Events without a meta.dt get the receive time: the same text for every one.
    received_text: String,
    /// The accepted events' JSON, one after another: they become slices of one buffer.
    jsons: String,
}

/// Where a stream entry and a schema live: the key of [`Intake`]'s header plan.
fn plan_key(entry: &Arc<StreamEntry>, schema: &Arc<CompiledSchema>) -> (usize, usize) {
    (Arc::as_ptr(entry).addr(), Arc::as_ptr(schema).addr())
}

/// `body` with each invalid UTF-8 sequence replaced by U+FFFD, and the offsets of the replacements.
fn decode_lossy(body: &[u8]) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(body.len() + 16);
    let mut bad = Vec::new();
    for chunk in body.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            bad.push(out.len());
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
    (out, bad)
}

fn malformed(text: &str, e: &TapeError) -> BodyError {
    let (line, column) = e.line_column(text);
    BodyError::Malformed {
        line,
        column,
        message: e.message.to_string(),
    }
}

/// A source of random UUIDv4 `meta.id`s, seeded by the host.
#[derive(Debug, Clone)]
pub struct EventIds(fastrand::Rng);

impl EventIds {
    /// Ids from a seed; hosts seed from the operating system's random source.
    pub fn with_seed(seed: u64) -> Self {
        EventIds(fastrand::Rng::with_seed(seed))
    }

    /// A fresh UUIDv4.
    pub fn next_uuid(&mut self) -> uuid::Uuid {
        let bytes = self.0.u128(..).to_le_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}
