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

use crate::FastMap;
use crate::json::{BodyError, BodyLimits};
use crate::registry::{CompiledSchema, ResolveError, SchemaRegistry};
use crate::sampling;
use crate::stream_config::{StreamConfig, StreamEntry};
use crate::tape::{Entry, EventSpan, Tape, TapeError};
use crate::tape_json::TapeNode;
use crate::timestamp::Timestamp;
use crate::validation::Violations;
use crate::wire::BatchEvent;
use serde::Serialize;
use serde_json::{Map, Value};
use std::hash::BuildHasher;
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

    /// One event: sets `outcome`'s stream once known and, if the event is taken, its
    /// event; `Ok(false)` when sampling leaves it out.
    fn run(
        &self,
        tape: &mut Tape<'_>,
        span: &EventSpan,
        req: &RequestMeta,
        ids: &mut EventIds,
        outcome: &mut EventOutcome,
        body_out: &mut BodyOut,
    ) -> Result<bool, Rejection> {
        use RejectionKind as K;
        let raw = &tape.source()[span.start..span.end];
        let node = span.node;
        let limit = self.options.limits.max_event_bytes;
        if raw.len() > limit {
            return Err(Rejection::new(
                K::TooLarge,
                format!(
                    "the event is {} bytes, over the limit of {limit} bytes",
                    raw.len()
                ),
            ));
        }
        if !tape.is_object(node) {
            return Err(Rejection::new(
                K::NotAnObject,
                format!(
                    "an event must be a JSON object, not a {}",
                    tape_type_name(tape, node)
                ),
            ));
        }
        let [meta, event_schema] = tape.get_each(node, ["meta", "$schema"]);
        if meta.is_some_and(|m| !tape.is_object(m)) {
            return Err(Rejection::new(
                K::Invalid,
                "`meta` must be an object".into(),
            ));
        }
        let [given_stream, given_id, given_dt] =
            meta.map_or([None; 3], |m| tape.get_each(m, ["stream", "id", "dt"]));
        let event_stream = given_stream.and_then(|i| tape.str_at(i));
        let stream = event_stream.or(req.stream.as_deref()).ok_or_else(|| {
            Rejection::new(
                K::NoStream,
                "the event has no meta.stream and the request has no stream parameter".into(),
            )
        })?;
        let stream_given = event_stream.is_some();
        let Some(entry) = self.streams.get(stream) else {
            outcome.stream = Some(stream.into());
            return Err(Rejection::new(
                K::UnknownStream,
                format!("stream `{stream}` is not configured"),
            ));
        };
        let (stream, topic) = entry.shared_name_and_topic(stream);
        outcome.stream = Some(stream.clone());
        if !entry.settings.enabled {
            return Err(Rejection::new(
                K::StreamDisabled,
                format!("stream `{stream}` is disabled"),
            ));
        }
        if !entry.is_open(req.received) {
            return Err(Rejection::new(
                K::StreamClosed,
                format!(
                    "stream `{stream}` takes events only inside its producing windows, and {} is outside them",
                    req.received
                ),
            ));
        }
        let event_schema = event_schema.and_then(|i| tape.str_at(i));
        let schema_given = event_schema.is_some();
        let schema_uri = event_schema.or(req.schema_uri.as_deref()).ok_or_else(|| {
            Rejection::new(
                K::NoSchema,
                "the event has no $schema and the request has no schema_uri parameter".into(),
            )
        })?;
        let schema = self.registry.resolve(schema_uri).map_err(|e| match e {
            ResolveError::Uri(e) => Rejection::new(K::UnknownSchema, e.to_string()),
            other => Rejection::new(
                K::UnknownSchema,
                format!("$schema `{schema_uri}` does not resolve: {other}"),
            ),
        })?;
        if schema.title != entry.settings.schema_title {
            return Err(Rejection::new(
                K::SchemaNotAllowed,
                format!(
                    "schema `{}` is not allowed in stream `{stream}`, which takes schema title `{}`",
                    schema.title, entry.settings.schema_title
                ),
            ));
        }
        // The URI as the event gives it; most give the schema's own, which is shared.
        let schema_uri: Arc<str> = if schema_uri == &*schema.uri {
            schema.uri.clone()
        } else {
            schema_uri.into()
        };
        let id = match given_id {
            Some(i) => match tape.str_at(i) {
                Some(text) => uuid::Uuid::try_parse(text)
                    .unwrap_or_else(|_| uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, text.as_bytes())),
                // A non-string meta.id fails validation in any schema that types it; hash its text meanwhile.
                None => {
                    uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, tape.to_value(i).to_string().as_bytes())
                }
            },
            None => ids.next_uuid(),
        };
        let dt_given = given_dt.is_some();
        // The record timestamp is the event's meta.dt; one that does not parse has failed
        // validation already wherever the schema types it, so the receive time stands in.
        let dt_ms = given_dt
            .and_then(|i| tape.str_at(i))
            .and_then(|text| Timestamp::parse_rfc3339(text).ok())
            .map_or(req.received.unix_millis(), Timestamp::unix_millis);

        let mark = tape.ext_mark();
        if !schema_given {
            tape.add_string(node, "$schema", &schema_uri);
        }
        // Server-filled meta fields go into the event's meta, made when it has none.
        let mut meta = meta;
        // The id and the time are written here, in hex digits and RFC 3339: plain text.
        let mut add_meta = |tape: &mut Tape<'_>, key: &str, text: &str, plain: bool| {
            let m = *meta.get_or_insert_with(|| tape.add_object(node, "meta"));
            if plain {
                tape.add_plain_string(m, key, text);
            } else {
                tape.add_string(m, key, text);
            }
        };
        if !stream_given {
            add_meta(tape, "stream", &stream, false);
        }
        if given_id.is_none() {
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            add_meta(tape, "id", id.hyphenated().encode_lower(&mut text), true);
        }
        if !dt_given {
            add_meta(tape, "dt", &body_out.received_text, true);
        }
        let planned = self.header_plan.get(&plan_key(entry, schema));
        for (path, header) in planned
            .into_iter()
            .flatten()
            .filter_map(|&i| entry.header_fields.get(i))
        {
            let value = if header == "x-client-ip" {
                req.client_ip.as_deref()
            } else {
                req.header(header)
            };
            if let Some(v) = value {
                add_absent(tape, (node, span.keys, meta), path, v);
            }
        }

        schema
            .validate_node(TapeNode::new(tape, node))
            .map_err(|v| Rejection {
                kind: K::Invalid,
                message: format!(
                    "the event does not validate against {}: {}",
                    schema.uri,
                    v.errors_text()
                ),
                violations: Some(v),
            })?;

        let read: &Tape<'_> = tape;
        let field_text = move |path: &crate::field_path::FieldPath| {
            read.get_path(node, path.keys())
                .and_then(|i| tape_text(read, i))
        };
        // The sampling unit's text, read once: a stream is often keyed by it (a session, say).
        let mut unit = None;
        if let Some(sample) = &entry.settings.sample {
            let path = entry.sample_path();
            let unit_id = path.and_then(field_text);
            let position = unit_id
                .as_deref()
                .and_then(sampling::unit_position)
                .unwrap_or_else(|| id_position(&id));
            if !sampling::position_in_sample(position, sample.rate) {
                return Ok(false);
            }
            unit = path.map(|p| (p, unit_id));
        }
        let partition_key = entry
            .settings
            .partition_key
            .as_ref()
            .and_then(|p| match &unit {
                Some((unit_path, text)) if *unit_path == p => text.as_deref().map(str::to_owned),
                _ => field_text(p).map(std::borrow::Cow::into_owned),
            });
        let rate_key = entry
            .settings
            .rate_limit
            .iter()
            .find_map(|r| match r.key.as_deref() {
                Some("client") => req
                    .client_ip
                    .as_deref()
                    .map(|ip| format!("{:016x}", self.client_hasher.hash_one(ip))),
                Some(path) => crate::field_path::FieldPath::parse(path)
                    .ok()
                    .as_ref()
                    .and_then(field_text)
                    .map(std::borrow::Cow::into_owned),
                None => None,
            });
        // The event's JSON goes last, once nothing can refuse it: `process` takes what
        // this appends to `jsons` as the event's.
        if tape.ext_mark() == mark {
            body_out
                .jsons
                .push_str(&tape.source()[span.start..span.end]);
        } else {
            tape.splice_into(span.start, span.end, mark, &mut body_out.jsons);
        }
        outcome.event = Some(BatchEvent {
            topic,
            stream,
            partition_key,
            rate_key,
            id: *id.as_bytes(),
            received_ms: req.received.unix_millis(),
            dt_ms,
            schema_uri,
            dedupe: entry.settings.dedupe,
            json: bytes::Bytes::new(),
        });
        Ok(true)
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

/// What one body's intake needs and does not return, kept by each thread for its next body.
struct BodySpare {
    /// The last receive time written as text, and the text: bodies received in the
    /// same millisecond share it, and its buffer is reused.
    received: (Timestamp, String),
    /// Where each event of the body lies.
    spans: Vec<EventSpan>,
    /// Accepted events by position in the answer, and where their JSON lies in the body's buffer.
    ranges: Vec<(usize, std::ops::Range<usize>)>,
}

thread_local! {
    static BODY_SPARE: std::cell::RefCell<BodySpare> = const { std::cell::RefCell::new(BodySpare::EMPTY) };
}

/// Lists longer than this are let go, not kept: one huge body does not stay resident.
const SPARE_ITEMS: usize = 4096;

impl BodySpare {
    const EMPTY: BodySpare = BodySpare {
        received: (Timestamp::EPOCH, String::new()),
        spans: Vec::new(),
        ranges: Vec::new(),
    };

    /// The thread's spare, or a new one if it is in use or gone.
    fn take() -> BodySpare {
        BODY_SPARE
            .try_with(|s| {
                s.try_borrow_mut()
                    .ok()
                    .map(|mut s| std::mem::replace(&mut *s, BodySpare::EMPTY))
            })
            .ok()
            .flatten()
            .unwrap_or(BodySpare::EMPTY)
    }

    /// Hands the lists back to the thread, emptied, unless they grew too long to keep.
    fn keep(mut self) {
        self.spans.clear();
        self.ranges.clear();
        if self.spans.capacity() > SPARE_ITEMS {
            self.spans = Vec::new();
        }
        if self.ranges.capacity() > SPARE_ITEMS {
            self.ranges = Vec::new();
        }
        let _ = BODY_SPARE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = self;
            }
        });
    }
}

/// `received` as `meta.dt` text: `kept`'s text if it is of the same millisecond.
fn received_text(kept: &mut (Timestamp, String), received: Timestamp) -> String {
    let (at, mut text) = std::mem::replace(kept, (received, String::new()));
    if text.is_empty() || at.unix_millis() != received.unix_millis() {
        text.clear();
        received.write_rfc3339_millis(&mut text);
    }
    text
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

/// The JSON type name of a tape entry, for messages.
fn tape_type_name(tape: &Tape<'_>, i: u32) -> &'static str {
    match tape.entry(i) {
        Entry::Null => "null",
        Entry::Bool(_) => "boolean",
        Entry::Int(_) | Entry::UInt(_) | Entry::Float(_) => "number",
        Entry::Str { .. } | Entry::Owned(_) => "string",
        Entry::Array { .. } => "array",
        Entry::Object { .. } => "object",
    }
}

/// A scalar's text: strings as they are, numbers and booleans printed.
fn tape_text<'t>(tape: &'t Tape<'_>, i: u32) -> Option<std::borrow::Cow<'t, str>> {
    use std::borrow::Cow;
    match tape.entry(i) {
        Entry::Str { .. } | Entry::Owned(_) => tape.str_at(i).map(Cow::Borrowed),
        Entry::Int(n) => Some(Cow::Owned(n.to_string())),
        Entry::UInt(n) => Some(Cow::Owned(n.to_string())),
        Entry::Float(f) => Some(Cow::Owned(f.to_string())),
        Entry::Bool(b) => Some(Cow::Owned(b.to_string())),
        _ => None,
    }
}

/// Adds `text` at `path` under the event object `node`, creating missing parent objects,
/// unless the event has something there already (or a parent that is not an object).
/// `keys` are the event's key bits, and `meta` its `meta` object if it has one by now.
fn add_absent<S: AsRef<str>>(
    tape: &mut Tape<'_>,
    (node, keys, meta): (u32, u128, Option<u32>),
    path: &[S],
    text: &str,
) {
    let Some((leaf, parents)) = path.split_last() else {
        return;
    };
    // The event's own members are looked up by their key bits, and `meta` is known.
    let look = |tape: &Tape<'_>, object: u32, key: &str| match meta {
        _ if object != node => tape.get(object, key),
        Some(m) if key == "meta" => Some(m),
        _ => tape.get_keyed(node, key, keys),
    };
    let mut object = node;
    // An object just added holds nothing yet: no need to look in it.
    let mut added = false;
    for key in parents {
        let key = key.as_ref();
        let found = if added { None } else { look(tape, object, key) };
        object = match found {
            Some(child) if tape.is_object(child) => child,
            Some(_) => return,
            None => {
                added = true;
                tape.add_object(object, key)
            }
        };
    }
    let absent = added || look(tape, object, leaf.as_ref()).is_none();
    if absent {
        tape.add_string(object, leaf.as_ref(), text);
    }
}

/// A sampling position for events whose unit id is missing: from the event id, so retries decide alike.
fn id_position(id: &uuid::Uuid) -> f64 {
    let b = id.as_bytes();
    f64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])) / f64::from(u32::MAX)
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

/// Counts of verdicts per stream, for hosts to export as metrics: every
/// event is accepted, sampled out or rejected, and each lands in one count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Per stream (`""` when the stream could not be told): counts by outcome.
    pub streams: std::collections::BTreeMap<String, StreamTally>,
}

/// One stream's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamTally {
    /// Accepted and sent on.
    pub accepted: u64,
    /// Valid, outside the sample, dropped.
    pub sampled_out: u64,
    /// Refused, by kind.
    pub rejected: std::collections::BTreeMap<RejectionKind, u64>,
}

impl Tally {
    /// Adds the outcomes of one body.
    pub fn add(&mut self, outcomes: &[EventOutcome]) {
        for o in outcomes {
            let name = o.stream.as_deref().unwrap_or_default();
            // Found by reference: a stream's name is copied only for its first count.
            if !self.streams.contains_key(name) {
                self.streams.insert(name.to_owned(), StreamTally::default());
            }
            let Some(s) = self.streams.get_mut(name) else {
                continue;
            };
            match &o.verdict {
                Verdict::Accepted => s.accepted += 1,
                Verdict::SampledOut => s.sampled_out += 1,
                Verdict::Rejected(r) => *s.rejected.entry(r.kind).or_default() += 1,
            }
        }
    }

    /// Events counted in all.
    pub fn total(&self) -> u64 {
        self.streams
            .values()
            .map(|s| s.accepted + s.sampled_out + s.rejected.values().sum::<u64>())
            .sum()
    }
}
