//! Batch ingest over HTTP: `POST /v1/batches` with a bearer token, the body
//! one batch frame, the answer one acknowledgement frame. This is the path
//! for edges that cannot speak QUIC (Cloudflare Workers).
//!
//! 200 carries the acknowledgement; 400 a frame that does not decode; 401 a
//! missing or wrong token (never logged); 413 a frame over the limit; 503
//! with `Retry-After` when the sink's queue is full or it has stopped.
//! Beside it: Prometheus `/metrics`, `/healthz` (the process is up) and
//! `/readyz` (the sink took its last write).

use crate::commit::{CommitLoop, SubmitError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::RawQuery;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sluice_host::token::Token;
use sluice_shared::{Batch, Live, StreamConfig, StreamsQuery, WireLimits};
use std::time::Instant;

/// What the batch endpoint needs.
#[derive(Clone)]
pub struct BatchService {
    sink: CommitLoop,
    token: Token,
    limits: WireLimits,
    streams: Live<StreamConfig>,
}

/// The media type of batch and acknowledgement frames.
pub const FRAME_MEDIA_TYPE: &str = "application/vnd.sluice.batch";

impl BatchService {
    /// A service feeding `sink`, accepting edges that present `token`, and serving `streams`.
    pub fn new(
        sink: CommitLoop,
        token: Token,
        limits: WireLimits,
        streams: Live<StreamConfig>,
    ) -> Self {
        BatchService {
            sink,
            token,
            limits,
            streams,
        }
    }

    /// The routes: `POST /v1/batches`, `GET /v1/streams`, `/metrics`, `/healthz` and `/readyz`.
    pub fn router(self) -> Router {
        let max = self.limits.max_frame_bytes;
        Router::new()
            .route("/v1/batches", post(post_batch))
            .layer(DefaultBodyLimit::max(max))
            .route("/v1/streams", get(streams))
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { plain(StatusCode::OK, "ok") }))
            .route("/readyz", get(ready))
            .with_state(self)
    }
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// 503 with `Retry-After` in seconds.
fn unavailable(message: &str, retry_after_secs: &'static str) -> Response {
    let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(retry_after_secs),
    );
    r
}

/// `GET /v1/streams?streams=a|b&constraints=key=value|…&all_settings=…`, as
/// EventStreamConfig answers it; every setting unless `all_settings=false`.
async fn streams(State(svc): State<BatchService>, RawQuery(query): RawQuery) -> Response {
    match StreamsQuery::parse(query.as_deref()) {
        Ok(q) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            svc.streams.get().answer(&q, true).to_string(),
        )
            .into_response(),
        Err(e) => plain(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn metrics(State(svc): State<BatchService>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        svc.sink.metrics().encode(),
    )
        .into_response()
}

async fn ready(State(svc): State<BatchService>) -> Response {
    if svc.sink.metrics().writable() {
        plain(StatusCode::OK, "ready")
    } else {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the sink's last write failed",
        )
    }
}

async fn post_batch(State(svc): State<BatchService>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if !svc.token.matches_bearer(auth) {
        tracing::warn!("Refused a batch without the right bearer token.");
        return plain(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    }
    let batch = match Batch::decode(&body, &svc.limits) {
        Ok(b) => b,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("the batch frame does not decode: {e}"),
            );
        }
    };
    let events = batch.events.len();
    let ack = match svc.sink.submit(batch) {
        Ok(rx) => rx.await,
        Err(SubmitError::Busy) => return unavailable("the aggregator is busy; retry shortly", "1"),
        Err(SubmitError::Stopped) => return unavailable("the aggregator's sink has stopped", "5"),
    };
    match ack {
        Ok(ack) => {
            svc.sink
                .metrics()
                .ack_seconds
                .observe(started.elapsed().as_secs_f64());
            tracing::debug!(events, "Batch acknowledged.");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, FRAME_MEDIA_TYPE)],
                ack.encode(),
            )
                .into_response()
        }
        Err(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the sink dropped the batch without an answer",
        ),
    }
}
