//! The Cloudflare Worker host: the same intake as the native edge, run per
//! request in a Worker isolate. Schemas and stream config are embedded at
//! build time (see `build.rs`) and, when aggregators are listed, refreshed
//! from the first one's `/v1/bundle` every `BUNDLE_REFRESH_SECS` (default
//! 60). Accepted events go to the `POST /v1/batches` of the aggregator that
//! owns each event's id (rendezvous hashing over the list, as at native
//! edges; an unreachable owner's events go to their next-ranked aggregator)
//! over HTTPS with the `AGGREGATOR_TOKEN` secret: a Worker can open no UDP
//! socket, so no QUIC here. Hasty requests are answered at once and
//! forwarded under `waitUntil`.
//!
//! Variables: `AGGREGATORS` (comma-separated `name=https://...` entries; the
//! names must match the native edges' for both to agree on owners) or
//! `AGGREGATOR_URL` for one, `CORS_ORIGINS` (comma-separated, `*` for
//! any), `MAX_BODY_BYTES`, `MAX_EVENT_BYTES`, `BUNDLE_REFRESH_SECS`; secret
//! `AGGREGATOR_TOKEN`.

use crate::pipeline::{self, Taken};
use crate::request::{self, Query};
use crate::respond::{self, Forwarded, Reply};
use sluice_shared::forward::{Owners, PartOutcome, Scatter, aggregator_name};
use sluice_shared::{
    Batch, BatchAck, BodyLimits, Bundle, EventIds, Intake, IntakeOptions, RequestMeta, Timestamp,
    WireLimits,
};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use worker::{Context, Date, Env, Fetch, Headers, Method, Request, RequestInit, Response};

/// The bundle `build.rs` embedded.
const EMBEDDED_BUNDLE: &str = include_str!(concat!(env!("OUT_DIR"), "/bundle.json"));
/// The media type of batch frames.
const FRAME_MEDIA_TYPE: &str = "application/vnd.sluice.batch";

struct Loaded {
    intake: Rc<Intake>,
    limits: BodyLimits,
    etag: Option<String>,
    checked_ms: u64,
}

thread_local! {
    // A Worker isolate runs one request at a time on one thread: the pipeline is built once per isolate.
    static LOADED: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .ok()
        .map(|v| v.to_string())
        .filter(|v| !v.is_empty())
}

fn limits(env: &Env) -> BodyLimits {
    let mut limits = BodyLimits::default();
    if let Some(n) = var(env, "MAX_BODY_BYTES").and_then(|v| v.parse().ok()) {
        limits.max_body_bytes = n;
    }
    if let Some(n) = var(env, "MAX_EVENT_BYTES").and_then(|v| v.parse().ok()) {
        limits.max_event_bytes = n;
    }
    limits
}

fn build(bundle: &Bundle, limits: BodyLimits) -> Result<Intake, String> {
    let (registry, streams) = bundle.load().map_err(|e| e.to_string())?;
    let options = IntakeOptions {
        limits,
        client_hash_seed: 0,
    };
    Ok(Intake::new(Arc::new(registry), Arc::new(streams), options))
}

/// The pipeline, built from the embedded bundle on first use and refreshed from the aggregator when due.
async fn intake(env: &Env, now_ms: u64) -> Result<(Rc<Intake>, BodyLimits), String> {
    let refresh_ms = var(env, "BUNDLE_REFRESH_SECS")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(60)
        .saturating_mul(1000);
    let current = LOADED.with(|l| {
        l.borrow()
            .as_ref()
            .map(|l| (l.intake.clone(), l.limits, l.etag.clone(), l.checked_ms))
    });
    let (intake, limits, etag) = match current {
        Some((intake, limits, etag, checked)) => {
            if now_ms.saturating_sub(checked) < refresh_ms {
                return Ok((intake, limits));
            }
            (intake, limits, etag)
        }
        None => {
            let limits = limits(env);
            let bundle: Bundle = serde_json::from_str(EMBEDDED_BUNDLE)
                .map_err(|e| format!("the embedded bundle does not parse: {e}"))?;
            let intake = Rc::new(build(&bundle, limits)?);
            LOADED.with(|l| {
                *l.borrow_mut() = Some(Loaded {
                    intake: intake.clone(),
                    limits,
                    etag: None,
                    checked_ms: now_ms,
                })
            });
            (intake, limits, None)
        }
    };
    let Some((_, base)) = aggregators(env).into_iter().next() else {
        return Ok((intake, limits));
    };
    // Due for a refresh: a conditional GET; any failure keeps the pipeline in use.
    let fresh = fetch_bundle(&base, etag.as_deref()).await;
    let mut result = (intake, limits);
    LOADED.with(|l| {
        let mut l = l.borrow_mut();
        let Some(loaded) = l.as_mut() else {
            return;
        };
        loaded.checked_ms = now_ms;
        match fresh {
            Ok(Some((bundle, tag))) => match build(&bundle, limits) {
                Ok(intake) => {
                    loaded.intake = Rc::new(intake);
                    loaded.etag = tag;
                    result.0 = loaded.intake.clone();
                }
                Err(e) => worker::console_warn!(
                    "Kept the schemas in use; the aggregator's bundle does not load: {e}"
                ),
            },
            Ok(None) => {}
            Err(e) => worker::console_warn!(
                "Kept the schemas in use; the aggregator's bundle could not be fetched: {e}"
            ),
        }
    });
    Ok(result)
}

async fn fetch_bundle(
    base: &str,
    etag: Option<&str>,
) -> Result<Option<(Bundle, Option<String>)>, String> {
    let headers = Headers::new();
    if let Some(tag) = etag {
        headers
            .set("If-None-Match", tag)
            .map_err(|e| e.to_string())?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let url = format!("{}/v1/bundle", base.trim_end_matches('/'));
    let req = Request::new_with_init(&url, &init).map_err(|e| e.to_string())?;
    let mut resp = Fetch::Request(req)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match resp.status_code() {
        304 => Ok(None),
        200 => {
            let tag = resp.headers().get("ETag").ok().flatten();
            let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
            let bundle = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            Ok(Some((bundle, tag)))
        }
        other => Err(format!("{url} answered {other}")),
    }
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // Without randomness ids would repeat across isolates; fall back on the clock only if it is missing.
    if getrandom::fill(&mut bytes).is_err() {
        return Date::now().as_millis().wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    u64::from_le_bytes(bytes)
}

fn random_u128() -> u128 {
    (u128::from(random_u64()) << 64) | u128::from(random_u64())
}

/// The aggregators, as `(name, base URL)`: `AGGREGATORS` (comma-separated entries,
/// `name=https://...` or the URL alone), else `AGGREGATOR_URL` alone.
fn aggregators(env: &Env) -> Vec<(String, String)> {
    let list = var(env, "AGGREGATORS").or_else(|| var(env, "AGGREGATOR_URL"));
    list.iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, url) = aggregator_name(e);
            (name.to_owned(), url.trim_end_matches('/').to_owned())
        })
        .collect()
}

/// How one aggregator took a part of a batch.
enum Posted {
    Ack(BatchAck),
    /// Not reached (no connection, or a 502/504 from the way there): try the next-ranked.
    Unreachable(String),
    /// Answered without taking it: the request is answered 503 with this wait.
    Refused(String, u32),
}

/// Posts one part to the aggregator at `base`.
async fn post(base: &str, token: &str, part: &Batch) -> Posted {
    let frame = part.encode(true);
    let headers = Headers::new();
    let _ = headers.set("Authorization", &format!("Bearer {token}"));
    let _ = headers.set("Content-Type", FRAME_MEDIA_TYPE);
    let mut init = RequestInit::new();
    let body = worker::js_sys::Uint8Array::from(frame.as_slice());
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(body.into()));
    let url = format!("{base}/v1/batches");
    let sent = match Request::new_with_init(&url, &init) {
        Ok(req) => Fetch::Request(req).send().await,
        Err(e) => Err(e),
    };
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => return Posted::Unreachable(format!("{base} cannot be reached: {e}")),
    };
    let status = resp.status_code();
    if status == 502 || status == 504 {
        return Posted::Unreachable(format!("{base} answered {status}"));
    }
    if status != 200 {
        let retry = resp
            .headers()
            .get("Retry-After")
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        return Posted::Refused(format!("the aggregator {base} answered {status}"), retry);
    }
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Posted::Unreachable(format!("{base}'s answer broke off: {e}")),
    };
    match BatchAck::decode_for(&bytes, part, &WireLimits::default()) {
        Ok(ack) => Posted::Ack(ack),
        Err(e) => Posted::Refused(format!("{base}'s answer does not decode: {e}"), 5),
    }
}

/// Sends one batch, each event to the aggregator that owns its id (the core's
/// [`Scatter`], as the native edge does over QUIC), and maps the answers.
async fn forward(env: &Env, batch: Batch) -> Forwarded {
    let unavailable = |message: String, retry: u32, events| Forwarded::Unavailable {
        message,
        retry_after_secs: retry,
        events,
    };
    let list = aggregators(env);
    let token = match env.secret("AGGREGATOR_TOKEN") {
        Ok(t) if !list.is_empty() => t.to_string(),
        _ => {
            return unavailable(
                "this Worker has no AGGREGATORS (or AGGREGATOR_URL) or AGGREGATOR_TOKEN configured"
                    .into(),
                60,
                batch.events,
            );
        }
    };
    let owners = Owners::new(&list.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>());
    let mut scatter = Scatter::new(&batch, list.len());
    let mut refused: Option<(String, u32)> = None;
    let mut last = String::new();
    while !scatter.done() {
        let Some(parts) = scatter.round(&owners, &batch, |_| true) else {
            return unavailable(format!("no aggregator answers: {last}"), 5, batch.events);
        };
        let posts = parts
            .iter()
            .map(|p| post(&list[p.aggregator].1, &token, &p.batch));
        let answers = futures_util::future::join_all(posts).await;
        for (part, answer) in parts.into_iter().zip(answers) {
            let outcome = match answer {
                Posted::Ack(ack) => PartOutcome::Acknowledged(ack.verdicts),
                Posted::Unreachable(why) => {
                    worker::console_warn!(
                        "{why}; its {} events go to their next-ranked aggregator",
                        part.batch.events.len()
                    );
                    last = why;
                    PartOutcome::Unreachable
                }
                Posted::Refused(why, retry) => {
                    refused.get_or_insert((why, retry));
                    PartOutcome::Refused
                }
            };
            if part.moved > 0 {
                worker::console_log!(
                    "{} events moved to {}, their owner being unreachable",
                    part.moved,
                    list[part.aggregator].0
                );
            }
            scatter.answered(part, outcome);
        }
    }
    if let Some((why, retry)) = refused {
        return unavailable(why, retry, batch.events);
    }
    let ack = scatter.finish(batch.id);
    Forwarded::Verdicts(batch.events.into_iter().zip(ack.verdicts).collect())
}

/// CORS headers for `origin` under the `CORS_ORIGINS` setting (default any).
/// An allowed origin is echoed with `Access-Control-Allow-Credentials: true`,
/// as credentialed requests (beacons) need; `*` only answers requests that
/// name no origin.
fn cors(env: &Env, origin: Option<&str>, headers: &Headers) {
    let allowed = var(env, "CORS_ORIGINS").unwrap_or_else(|| "*".to_owned());
    let any = allowed.split(',').any(|o| o.trim() == "*");
    let allow = match origin {
        Some(o) if any || allowed.split(',').any(|a| a.trim() == o) => Some(o),
        None if any => Some("*"),
        _ => None,
    };
    if let Some(allow) = allow {
        let _ = headers.set("Access-Control-Allow-Origin", allow);
        if allow != "*" {
            let _ = headers.set("Access-Control-Allow-Credentials", "true");
        }
        let _ = headers.set("Vary", "Origin");
        let _ = headers.set(
            "Access-Control-Expose-Headers",
            "x-request-id, retry-after, etag",
        );
    }
}

fn to_response(reply: &Reply) -> worker::Result<Response> {
    let response = if reply.body.is_some() {
        let r = Response::from_bytes(reply.body_bytes())?;
        let _ = r.headers().set("Content-Type", "application/json");
        r
    } else {
        Response::empty()?
    };
    let response = response.with_status(reply.status);
    if let Some(secs) = reply.retry_after_secs {
        let _ = response.headers().set("Retry-After", &secs.to_string());
    }
    Ok(response)
}

/// Runs a body through intake and forwarding, as the native host does.
async fn handle(
    req: &Request,
    env: &Env,
    ctx: &Context,
    body: &[u8],
    query: &Query,
    request_id: &str,
) -> Reply {
    let now_ms = Date::now().as_millis();
    let (intake, limits) = match intake(env, now_ms).await {
        Ok(i) => i,
        Err(e) => {
            worker::console_error!("No usable schemas: {e}");
            return Reply::message(500, "the edge has no usable schemas; it has been logged");
        }
    };
    if body.len() > limits.max_body_bytes {
        return Reply::message(
            413,
            &format!(
                "the body is over the limit of {} bytes: send fewer events per request",
                limits.max_body_bytes
            ),
        );
    }
    let mut headers: Vec<(String, String)> = req
        .headers()
        .entries()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    headers.retain(|(k, _)| k != "x-request-id");
    headers.push(("x-request-id".into(), request_id.to_owned()));
    // Cloudflare sets CF-Connecting-IP itself: in a Worker it is the client.
    let client_ip = req.headers().get("CF-Connecting-IP").ok().flatten();
    let meta = RequestMeta {
        headers,
        stream: query.stream.clone(),
        schema_uri: query.schema_uri.clone(),
        client_ip,
        received: Timestamp::from_unix_millis(i64::try_from(now_ms).unwrap_or(i64::MAX)),
    };
    let mut ids = EventIds::with_seed(random_u64());
    let mut outcomes = match intake.process(&meta, body, &mut ids) {
        Ok(o) => o,
        Err(e) => return respond::body_refused(&e),
    };
    let Taken { events, errors, .. } =
        pipeline::take(&mut outcomes, meta.received.unix_millis(), Some(request_id));
    let batch = Batch {
        id: random_u128().to_le_bytes(),
        events,
        errors,
    };
    let forwarded = if batch.events.is_empty() || query.hasty {
        let hasty = !batch.events.is_empty();
        if !batch.events.is_empty() || !batch.errors.is_empty() {
            let env = env.clone();
            ctx.wait_until(async move {
                let count = batch.events.len();
                if let Forwarded::Unavailable { message, .. } = forward(&env, batch).await {
                    worker::console_error!("A hasty batch of {count} events was lost: {message}");
                }
            });
        }
        if hasty {
            Forwarded::Hasty
        } else {
            Forwarded::Verdicts(Vec::new())
        }
    } else {
        forward(env, batch).await
    };
    respond::answer(&outcomes, forwarded)
}

/// Reads a request body of at most `limit` bytes: refused with 413 from its
/// `Content-Length`, or as soon as more arrives, so that an oversized body is
/// never held whole.
async fn read_body(req: &mut Request, limit: usize) -> worker::Result<Result<Vec<u8>, Reply>> {
    use futures_util::StreamExt;
    let too_large = |size: usize| {
        Reply::message(
            413,
            &format!(
                "the body is {size} bytes or more, over the limit of {limit} bytes: send fewer events per request"
            ),
        )
    };
    let declared = req
        .headers()
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<usize>().ok());
    if let Some(size) = declared.filter(|&n| n > limit) {
        return Ok(Err(too_large(size)));
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    let mut stream = match req.stream() {
        Ok(s) => s,
        // No body at all.
        Err(_) => return Ok(Ok(body)),
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Ok(Err(too_large(body.len() + chunk.len())));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Ok(body))
}

#[worker::event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let origin = req.headers().get("Origin").ok().flatten();
    let request_id = request::request_id(
        req.headers().get("x-request-id").ok().flatten().as_deref(),
        random_u128(),
    );
    let url = req.url()?;
    let path = url.path().to_owned();
    let raw_query = url.query().map(str::to_owned);
    let method = req.method();
    let sizes: Vec<(String, String)> = req.headers().entries().collect();
    let headers_ok =
        request::check_header_size(sizes.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    drop(sizes);
    let mut response = match (method, path.as_str()) {
        _ if headers_ok.is_err() => {
            let e = headers_ok.err().map(|e| e.to_string()).unwrap_or_default();
            to_response(&Reply::message(431, &e))?
        }
        (Method::Options, _) => {
            let r = Response::empty()?.with_status(204);
            let _ = r
                .headers()
                .set("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
            let _ = r.headers().set(
                "Access-Control-Allow-Headers",
                "content-type, if-none-match, x-request-id",
            );
            let _ = r.headers().set("Access-Control-Max-Age", "86400");
            r
        }
        (Method::Post, "/v1/events") => {
            let content_type = req.headers().get("Content-Type").ok().flatten();
            let limit = limits(&env).max_body_bytes;
            if let Err(e) = request::body_kind(content_type.as_deref()) {
                to_response(&Reply::message(415, &e.to_string()))?
            } else {
                match read_body(&mut req, limit).await? {
                    Err(reply) => to_response(&reply)?,
                    Ok(body) => {
                        let query = Query::parse(raw_query.as_deref());
                        to_response(&handle(&req, &env, &ctx, &body, &query, &request_id).await)?
                    }
                }
            }
        }
        (Method::Get, "/beacon/event") => {
            if let Ok(body) = request::beacon_event(raw_query.as_deref()) {
                let hasty = Query {
                    hasty: true,
                    ..Query::default()
                };
                let _ = handle(&req, &env, &ctx, &body, &hasty, &request_id).await;
            }
            Response::empty()?.with_status(204)
        }
        (Method::Get, "/v1/streams") => match intake(&env, Date::now().as_millis()).await {
            Ok((intake, _)) => {
                let if_none_match = req.headers().get("If-None-Match").ok().flatten();
                let (reply, tag) = respond::streams(
                    intake.streams(),
                    raw_query.as_deref(),
                    if_none_match.as_deref(),
                );
                let r = to_response(&reply)?;
                if let Some(tag) = tag {
                    let _ = r.headers().set("ETag", &tag);
                    let _ = r.headers().set("Cache-Control", "no-cache");
                }
                r
            }
            Err(e) => to_response(&Reply::message(500, &e))?,
        },
        (Method::Get, "/healthz") => Response::ok("ok\n")?,
        _ => to_response(&Reply::message(
            404,
            "no such route: POST /v1/events, GET /beacon/event, /v1/streams or /healthz",
        ))?,
    };
    cors(&env, origin.as_deref(), response.headers_mut());
    let _ = response.headers_mut().set("x-request-id", &request_id);
    Ok(response)
}
