//! One event through intake, as named steps: [`Intake::check_shape`] (size,
//! an object), [`Intake::route`] (stream and schema), [`identify`] (id and
//! record time), [`Intake::enrich`] (server-filled fields, before
//! validation, since schemas may require them), [`validate`],
//! [`Intake::sample_and_key`] (sampling, partition and rate-limit keys), and
//! [`write_json`] (the client's bytes with the added fields spliced in).

use super::{
    BodyOut, EVENT_ID_NAMESPACE, EventIds, EventOutcome, Intake, Rejection, RejectionKind as K,
    RequestMeta, plan_key,
};
use crate::field_path::FieldPath;
use crate::registry::{CompiledSchema, ResolveError};
use crate::sampling;
use crate::stream_config::StreamEntry;
use crate::tape::{Entry, EventSpan, Tape};
use crate::tape_json::TapeNode;
use crate::timestamp::Timestamp;
use crate::wire::BatchEvent;
use std::borrow::Cow;
use std::hash::BuildHasher;
use std::sync::Arc;

/// Where an event goes and what it is checked against, and which of the fields
/// the server may fill the event set itself.
struct Route<'i> {
    entry: &'i Arc<StreamEntry>,
    stream: Arc<str>,
    topic: Arc<str>,
    schema: &'i Arc<CompiledSchema>,
    /// The URI as the event gives it (most give the schema's own, which is shared).
    schema_uri: Arc<str>,
    /// The event's `meta` object, if it has one.
    meta: Option<u32>,
    stream_given: bool,
    schema_given: bool,
    /// The event's `meta.id` and `meta.dt`, if it has them.
    given_id: Option<u32>,
    given_dt: Option<u32>,
}

/// An event's partition key and rate-limit key.
type Keys = (Option<String>, Option<String>);

impl Intake {
    /// One event: sets `outcome`'s stream once known and, if the event is taken, its
    /// event; `Ok(false)` when sampling leaves it out.
    pub(super) fn run(
        &self,
        tape: &mut Tape<'_>,
        span: &EventSpan,
        req: &RequestMeta,
        ids: &mut EventIds,
        outcome: &mut EventOutcome,
        body_out: &mut BodyOut,
    ) -> Result<bool, Rejection> {
        let node = self.check_shape(tape, span)?;
        let route = self.route(tape, node, req, &mut outcome.stream)?;
        let (id, dt_ms) = identify(tape, &route, req, ids);
        let mark = tape.ext_mark();
        self.enrich(
            tape,
            (node, span.keys),
            &route,
            &id,
            req,
            &body_out.received_text,
        );
        validate(route.schema, tape, node)?;
        let Some((partition_key, rate_key)) =
            self.sample_and_key(tape, node, route.entry, &id, req)
        else {
            return Ok(false);
        };
        // The event's JSON goes last, once nothing can refuse it: `process` takes what
        // this appends to `jsons` as the event's.
        write_json(tape, span, mark, &mut body_out.jsons);
        outcome.event = Some(BatchEvent {
            topic: route.topic,
            stream: route.stream,
            partition_key,
            rate_key,
            id: *id.as_bytes(),
            received_ms: req.received.unix_millis(),
            dt_ms,
            schema_uri: route.schema_uri,
            dedupe: route.entry.settings.dedupe,
            json: bytes::Bytes::new(),
        });
        Ok(true)
    }

    /// The event within the size limit and an object: its tape index.
    fn check_shape(&self, tape: &Tape<'_>, span: &EventSpan) -> Result<u32, Rejection> {
        let size = span.end - span.start;
        let limit = self.options.limits.max_event_bytes;
        if size > limit {
            return Err(Rejection::new(
                K::TooLarge,
                format!("the event is {size} bytes, over the limit of {limit} bytes"),
            ));
        }
        if !tape.is_object(span.node) {
            return Err(Rejection::new(
                K::NotAnObject,
                format!(
                    "an event must be a JSON object, not a {}",
                    tape_type_name(tape, span.node)
                ),
            ));
        }
        Ok(span.node)
    }

    /// The event's stream (configured, enabled, open) and schema (resolved, of the
    /// stream's title); `stream_slot` gets the stream's name as soon as it is known.
    fn route(
        &self,
        tape: &Tape<'_>,
        node: u32,
        req: &RequestMeta,
        stream_slot: &mut Option<Arc<str>>,
    ) -> Result<Route<'_>, Rejection> {
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
        let Some(entry) = self.streams.get(stream) else {
            *stream_slot = Some(stream.into());
            return Err(Rejection::new(
                K::UnknownStream,
                format!("stream `{stream}` is not configured"),
            ));
        };
        let (stream, topic) = entry.shared_name_and_topic(stream);
        *stream_slot = Some(stream.clone());
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
        let schema_uri: Arc<str> = if schema_uri == &*schema.uri {
            schema.uri.clone()
        } else {
            schema_uri.into()
        };
        Ok(Route {
            entry,
            stream,
            topic,
            schema,
            schema_uri,
            meta,
            stream_given: event_stream.is_some(),
            schema_given: event_schema.is_some(),
            given_id,
            given_dt,
        })
    }

    /// Adds what the server fills in: `$schema` and `meta.stream` when the request
    /// parameters gave them, `meta.id` and `meta.dt` when the event has none, and the
    /// header fields the stream asks for and the schema has, where the event has none.
    /// `keys` are the event's key bits.
    fn enrich(
        &self,
        tape: &mut Tape<'_>,
        (node, keys): (u32, u128),
        route: &Route<'_>,
        id: &uuid::Uuid,
        req: &RequestMeta,
        received_text: &str,
    ) {
        if !route.schema_given {
            tape.add_string(node, "$schema", &route.schema_uri);
        }
        // Server-filled meta fields go into the event's meta, made when it has none.
        let mut meta = route.meta;
        // The id and the time are written here, in hex digits and RFC 3339: plain text.
        let mut add_meta = |tape: &mut Tape<'_>, key: &str, text: &str, plain: bool| {
            let m = *meta.get_or_insert_with(|| tape.add_object(node, "meta"));
            if plain {
                tape.add_plain_string(m, key, text);
            } else {
                tape.add_string(m, key, text);
            }
        };
        if !route.stream_given {
            add_meta(tape, "stream", &route.stream, false);
        }
        if route.given_id.is_none() {
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            add_meta(tape, "id", id.hyphenated().encode_lower(&mut text), true);
        }
        if route.given_dt.is_none() {
            add_meta(tape, "dt", received_text, true);
        }
        let planned = self.header_plan.get(&plan_key(route.entry, route.schema));
        for (path, header) in planned
            .into_iter()
            .flatten()
            .filter_map(|&i| route.entry.header_fields.get(i))
        {
            let value = if header == "x-client-ip" {
                req.client_ip.as_deref()
            } else {
                req.header(header)
            };
            if let Some(v) = value {
                add_absent(tape, (node, keys, meta), path, v);
            }
        }
    }

    /// Whether the event is in its stream's sample, and if so its partition key
    /// and rate-limit key; `None` when sampling leaves it out.
    fn sample_and_key(
        &self,
        tape: &Tape<'_>,
        node: u32,
        entry: &StreamEntry,
        id: &uuid::Uuid,
        req: &RequestMeta,
    ) -> Option<Keys> {
        let field_text = |path: &FieldPath| {
            tape.get_path(node, path.keys())
                .and_then(|i| tape_text(tape, i))
        };
        // The sampling unit's text, read once: a stream is often keyed by it (a session, say).
        let mut unit = None;
        if let Some(sample) = &entry.settings.sample {
            let path = entry.sample_path();
            let unit_id = path.and_then(field_text);
            let position = unit_id
                .as_deref()
                .and_then(sampling::unit_position)
                .unwrap_or_else(|| id_position(id));
            if !sampling::position_in_sample(position, sample.rate) {
                return None;
            }
            unit = path.map(|p| (p, unit_id));
        }
        let partition_key = entry
            .settings
            .partition_key
            .as_ref()
            .and_then(|p| match &unit {
                Some((unit_path, text)) if *unit_path == p => text.as_deref().map(str::to_owned),
                _ => field_text(p).map(Cow::into_owned),
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
                Some(path) => FieldPath::parse(path)
                    .ok()
                    .as_ref()
                    .and_then(field_text)
                    .map(Cow::into_owned),
                None => None,
            });
        Some((partition_key, rate_key))
    }
}

/// The event's id (its `meta.id` as a UUID, hashed to a UUIDv5 when it is not
/// one, or a fresh UUIDv4) and record time (its `meta.dt`, else the receive time).
fn identify(
    tape: &Tape<'_>,
    route: &Route<'_>,
    req: &RequestMeta,
    ids: &mut EventIds,
) -> (uuid::Uuid, i64) {
    let id = match route.given_id {
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
    // The record timestamp is the event's meta.dt; one that does not parse has failed
    // validation already wherever the schema types it, so the receive time stands in.
    let dt_ms = route
        .given_dt
        .and_then(|i| tape.str_at(i))
        .and_then(|text| Timestamp::parse_rfc3339(text).ok())
        .map_or(req.received.unix_millis(), Timestamp::unix_millis);
    (id, dt_ms)
}

/// The enriched event against its schema.
fn validate(schema: &CompiledSchema, tape: &Tape<'_>, node: u32) -> Result<(), Rejection> {
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
        })
}

/// Appends the event's JSON to `out`: the bytes the client sent, with the
/// members added since `mark` spliced in (a plain copy when there are none).
fn write_json(tape: &Tape<'_>, span: &EventSpan, mark: usize, out: &mut String) {
    if tape.ext_mark() == mark {
        out.push_str(&tape.source()[span.start..span.end]);
    } else {
        tape.splice_into(span.start, span.end, mark, out);
    }
}

/// The JSON type name of a tape entry, for messages.
pub(super) fn tape_type_name(tape: &Tape<'_>, i: u32) -> &'static str {
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
