//! The native edge's HTTP surface on axum: `POST /v1/events`, the GET
//! beacon, `/v1/streams`, `/healthz` and `/metrics`. Limits, timeouts,
//! CORS, request ids, panics and tracing are tower-http layers; the
//! handlers run the request through intake, forward, and answer with
//! [`crate::respond`].

use super::forward::Forwarder;
use super::metrics::{Metrics, StatusLabels};
use crate::pipeline::{self, Taken};
use crate::request::{self, Query, TrustedProxies};
use crate::respond::{self, Forwarded, Reply};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use sluice_host::metrics::Outcome;
use sluice_shared::{EventIds, Intake, Live, RequestMeta};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// What the handlers share.
#[derive(Clone)]
pub struct EdgeState(Arc<Inner>);

struct Inner {
    intake: Live<Intake>,
    forwarder: Forwarder,
    trusted: TrustedProxies,
    metrics: Metrics,
}

impl EdgeState {
    /// State over these parts.
    pub fn new(
        intake: Live<Intake>,
        forwarder: Forwarder,
        trusted: TrustedProxies,
        metrics: Metrics,
    ) -> Self {
        EdgeState(Arc::new(Inner {
            intake,
            forwarder,
            trusted,
            metrics,
        }))
    }
}

/// HTTP settings of the router.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest body, in bytes.
    pub max_body_bytes: usize,
    /// Allowed CORS origins; `*` for any.
    pub cors_origins: Vec<String>,
    /// Longest request.
    pub timeout: Duration,
}

/// The edge's routes and layers.
pub fn router(state: EdgeState, options: &HttpOptions) -> Router {
    // Browsers send beacons (and fetches with `credentials: "include"`) as credentialed
    // requests, which refuse `Access-Control-Allow-Origin: *`: an allowed origin is echoed,
    // with `Access-Control-Allow-Credentials: true` and `Vary: Origin`.
    let origins = if options.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(
            options
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    let cors = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            header::ETAG,
        ])
        .allow_credentials(true)
        .max_age(Duration::from_secs(86_400));
    let limit = options.max_body_bytes;
    Router::new()
        .route(
            "/v1/events",
            post(move |state, peer, query, headers, body| {
                events(state, peer, query, headers, body, limit)
            }),
        )
        .route("/beacon/event", get(beacon))
        .route("/v1/streams", get(streams))
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/metrics", get(metrics))
        .with_state(state)
        .layer(axum::middleware::from_fn(refuse_large_headers))
        .layer(DefaultBodyLimit::disable())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            options.timeout,
        ))
        .layer(cors)
        // Refusals are answers, not faults: the handlers log what needs a line, so a flood of
        // 503s under backpressure does not become a flood of error lines.
        .layer(
            tower_http::trace::TraceLayer::new_for_http().on_failure(
                tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
            ),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            tracing::error!("A request handler panicked.");
            to_response(&Reply::message(
                500,
                "the edge failed on this request; it has been logged",
            ))
        }))
}

/// 431 for requests whose headers are over [`request::MAX_HEADER_BYTES`].
async fn refuse_large_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
    if let Err(e) = request::check_header_size(headers) {
        tracing::debug!(error = %e, "Refused a request with oversized headers.");
        let (parts, body) = req.into_parts();
        linger(&parts.headers, body);
        return to_response(&Reply::message(431, &e.to_string()));
    }
    next.run(req).await
}

/// Bytes of a refused request's body read and thrown away at most.
const LINGER_BYTES: usize = 64 * 1024 * 1024;
/// How long a refused request's body is read and thrown away at most.
const LINGER_TIME: Duration = Duration::from_secs(10);
/// How long the client may pause while its refused body is thrown away.
const LINGER_IDLE: Duration = Duration::from_secs(2);

/// Reads and discards what a client is still sending after its request was
/// answered early (413, 415, 431), bounded in bytes and time, as nginx's
/// lingering close does: a client that writes its whole body before it reads
/// (most HTTP libraries) then reads the answer instead of a broken pipe. A
/// client that asked for `100-continue` has sent no body and gets none read.
fn linger(headers: &HeaderMap, body: Body) {
    let continues = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if continues {
        return;
    }
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + LINGER_TIME;
        let mut body = body;
        let mut read = 0;
        while read < LINGER_BYTES {
            let wait = deadline.min(tokio::time::Instant::now() + LINGER_IDLE);
            match tokio::time::timeout_at(wait, body.frame()).await {
                Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
        tracing::debug!(
            bytes = read,
            "Discarded the rest of a refused request's body."
        );
    });
}

/// The 413 answer, naming the limit.
fn too_large(limit: usize) -> Reply {
    Reply::message(
        413,
        &format!("the body is over the limit of {limit} bytes: send fewer events per request"),
    )
}

/// The body, up to `limit` bytes; over it, 413 (from Content-Length when the
/// client sent one, before reading anything) and the rest is lingered on.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Reply> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        linger(headers, body);
        return Err(too_large(limit));
    }
    let mut body = body;
    let mut buf = bytes::BytesMut::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Reply::message(400, &format!("the request body could not be read: {e}"))
        })?;
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > limit {
                linger(headers, body);
                return Err(too_large(limit));
            }
            buf.extend_from_slice(data);
        }
    }
    Ok(buf.freeze())
}

fn to_response(reply: &Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = if reply.body.is_some() {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            reply.body_bytes(),
        )
            .into_response()
    } else {
        (status, Body::empty()).into_response()
    };
    if let Some(secs) = reply.retry_after_secs {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

impl EdgeState {
    async fn handle(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        query: &Query,
        body: &[u8],
    ) -> Reply {
        let s = &self.0;
        let received = sluice_host::clock::now();
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let client_ip = s.trusted.client_ip(peer.ip(), text);
        let request_id = text("x-request-id");
        let meta = RequestMeta {
            headers: headers
                .iter()
                .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            stream: query.stream.clone(),
            schema_uri: query.schema_uri.clone(),
            client_ip: Some(client_ip.to_string()),
            received,
        };
        let intake = s.intake.get();
        let mut ids = EventIds::with_seed(fastrand::u64(..));
        let mut outcomes = match intake.process(&meta, body, &mut ids) {
            Ok(o) => o,
            Err(e) => return respond::body_refused(&e),
        };
        let Taken {
            events,
            errors,
            sampled_out,
        } = pipeline::take(&mut outcomes, received.unix_millis(), request_id.as_deref());
        let invalid = errors.len();
        s.metrics.count(Outcome::Accepted, events.len());
        s.metrics.count(Outcome::SampledOut, sampled_out);
        s.metrics.count(Outcome::Invalid, invalid);
        let forwarded = if events.is_empty() {
            if !errors.is_empty() && s.forwarder.hasty(Vec::new(), errors).await.is_err() {
                tracing::warn!(
                    events = invalid,
                    "Error reports for refused events were dropped: the edge is overloaded."
                );
            }
            Forwarded::Verdicts(Vec::new())
        } else if query.hasty {
            if let Err(e) = s.forwarder.hasty(events, errors).await {
                return Reply::unavailable(&e.to_string(), 5);
            }
            Forwarded::Hasty
        } else {
            s.forwarder.guaranteed(events, errors).await
        };
        respond::answer(&outcomes, forwarded)
    }

    fn answer(&self, reply: &Reply) -> Response {
        self.0
            .metrics
            .requests
            .get_or_create(&StatusLabels {
                status: reply.status,
            })
            .inc();
        to_response(reply)
    }
}

async fn events(
    State(state): State<EdgeState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
    limit: usize,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = request::body_kind(content_type) {
        linger(&headers, body);
        return state.answer(&Reply::message(415, &e.to_string()));
    }
    let body = match read_body(&headers, body, limit).await {
        Ok(b) => b,
        Err(reply) => return state.answer(&reply),
    };
    let started = std::time::Instant::now();
    let query = Query::parse(query.as_deref());
    let reply = state.handle(peer, &headers, &query, &body).await;
    state
        .0
        .metrics
        .request_seconds
        .observe(started.elapsed().as_secs_f64());
    state.answer(&reply)
}

/// The legacy EventLogging beacon: always 204, as EventLogging answers;
/// refused events are counted and reported to the error stream.
async fn beacon(
    State(state): State<EdgeState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match request::beacon_event(query.as_deref()) {
        Ok(body) => {
            let hasty = Query {
                hasty: true,
                ..Query::default()
            };
            let reply = state.handle(peer, &headers, &hasty, &body).await;
            if reply.status >= 300 {
                tracing::debug!(status = reply.status, "A beacon event was not taken.");
            }
        }
        Err(e) => {
            state.0.metrics.count(Outcome::Invalid, 1);
            tracing::debug!(error = %e, "A beacon carried no event.");
        }
    }
    state.answer(&Reply {
        status: 204,
        retry_after_secs: None,
        body: None,
    })
}

/// `/v1/streams`: the stream config as EventStreamConfig answers it. By default
/// only `sample` and `producers` of each stream, as browsers need (EventLogging's
/// `all_settings=false`); `?all_settings=true` gives everything; `?streams=a|b` selects.
async fn streams(
    State(state): State<EdgeState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let (reply, tag) = respond::streams(
        state.0.intake.get().streams(),
        query.as_deref(),
        if_none_match,
    );
    let mut r = to_response(&reply);
    if let Some(tag) = tag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        r.headers_mut().insert(header::ETAG, tag);
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    r
}

async fn metrics(State(state): State<EdgeState>) -> Response {
    state
        .0
        .metrics
        .spool_bytes
        .set(state.0.forwarder.spooled_bytes() as i64);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.0.metrics.encode(),
    )
        .into_response()
}
