//! The console: what people who instrument features ask to see, served by
//! the aggregator under `/console/` as server-rendered pages with a little
//! JavaScript (its files are in the binary; nothing comes from elsewhere).
//!
//! - schemas ([`schemas`]): every repository, title and version as a table of
//!   fields, a diff of two versions with the compatibility check's verdict,
//!   search by title and field name;
//! - streams ([`streams`]): each stream's config and its flow ([`flow`]) as
//!   plots, last event time, canary status and alerts;
//! - a live tail ([`tail`]) over server-sent events, invalid events from the
//!   error stream beside it with their errors next to the field;
//! - try an event ([`try_event`]): the edge's verdict, nothing sent;
//! - connectors ([`connectors`]): lag and dead letters from their `/metrics`.
//!
//! Access ([`auth`]): open while the HTTP port is bound to loopback and no
//! token is set; otherwise a read-only console token, entered once in a
//! login form that sets a cookie.

mod auth;
mod catalog;
mod connectors;
pub mod flow;
mod html;
mod schemas;
mod streams;
mod tail;
mod taps;
mod try_event;

pub use catalog::Catalog;
pub use flow::{Alert, Flow};
pub use tail::TailSource;
pub use taps::Taps;

use crate::metrics::{AlertLabels, Metrics};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use sluice_host::token::Token;
use sluice_shared::{Bundle, Live, StreamConfig};
use std::sync::Arc;

/// What the console reads; cheap to clone.
#[derive(Clone)]
pub struct Console(Arc<State>);

struct State {
    catalog: Live<Catalog>,
    streams: Live<StreamConfig>,
    metrics: Metrics,
    access: auth::Access,
    tails: TailSource,
    error_stream: String,
    connectors: Vec<String>,
    alert_after_secs: u64,
    /// Canary checks by topic: when, and what they found.
    canaries: std::sync::Mutex<CanaryChecks>,
}

/// When each topic's canary events were last looked for, and what was found.
type CanaryChecks =
    std::collections::HashMap<String, (std::time::Instant, Result<Option<i64>, String>)>;

/// How the console is set up.
pub struct ConsoleOptions {
    /// Who may see it.
    pub access: Access,
    /// Where the tail reads.
    pub tails: TailSource,
    /// The error stream's name.
    pub error_stream: String,
    /// The connectors' `/metrics` addresses.
    pub connectors: Vec<String>,
    /// Seconds of silence before a stream is alerted.
    pub alert_after_secs: u64,
}

pub use auth::Access;

impl Console {
    /// A console over `bundle` and `streams`, reading `metrics`' flow.
    pub fn new(
        bundle: &Bundle,
        streams: Live<StreamConfig>,
        metrics: Metrics,
        options: ConsoleOptions,
    ) -> Self {
        Console(Arc::new(State {
            catalog: Live::new(Catalog::new(bundle)),
            streams,
            metrics,
            access: options.access,
            tails: options.tails,
            error_stream: options.error_stream,
            connectors: options.connectors,
            alert_after_secs: options.alert_after_secs,
            canaries: std::sync::Mutex::default(),
        }))
    }

    /// Shows `bundle` from now on (after a reload).
    pub fn replace(&self, bundle: &Bundle) {
        self.0.catalog.set(Catalog::new(bundle));
    }

    /// Who may see the console, for a config and the address it is served on.
    pub fn access(token: Option<String>, listen: std::net::SocketAddr) -> Access {
        match token {
            Some(t) => Access::Token(Token::new(&t)),
            None if listen.ip().is_loopback() => Access::Open,
            None => Access::Closed,
        }
    }

    /// The routes under `/console/`.
    pub fn router(self) -> Router {
        let pages = Router::new()
            .route("/console/", get(streams::overview))
            .route("/console/schemas", get(schemas::index))
            .route("/console/schema", get(schemas::show))
            .route("/console/diff", get(schemas::diff))
            .route("/console/stream", get(streams::show))
            .route("/console/tail", get(tail::page))
            .route("/console/try", get(try_event::page))
            .route("/console/connectors", get(connectors::page_handler))
            .route("/console/api/flow", get(streams::flow))
            .route("/console/api/tail", get(tail::events))
            .route("/console/api/try", post(try_event::check))
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                auth::require,
            ));
        Router::new()
            .route("/console", get(|| async { Redirect::to("/console/") }))
            .route("/console/login", get(auth::form).post(auth::login))
            .route("/console/assets/console.css", get(css))
            .route("/console/assets/console.js", get(js))
            .merge(pages)
            .with_state(self)
    }

    /// Moves the counts of the last second into the flow's history and
    /// raises or clears alerts, with a log line and the gauge.
    pub fn tick(metrics: &Metrics) {
        for change in metrics.flow.tick() {
            for (alert, value) in [(change.was, 0), (change.now, 1)] {
                if let Some(a) = alert {
                    metrics
                        .stream_alert
                        .get_or_create(&AlertLabels {
                            stream: change.stream.clone(),
                            alert: a.name().to_owned(),
                        })
                        .set(value);
                }
            }
            match change.now {
                Some(Alert::ZeroFlow) => tracing::warn!(
                    stream = %change.stream,
                    alert = "zero_flow",
                    "A stream that was flowing has had no accepted event for the alert interval."
                ),
                Some(Alert::UnderRate) => tracing::warn!(
                    stream = %change.stream,
                    alert = "under_rate",
                    "A stream's rate has fallen far under its last hour's."
                ),
                None => tracing::info!(
                    stream = %change.stream,
                    was = change.was.map_or("", Alert::name),
                    "A stream's flow is back to normal."
                ),
            }
        }
    }
}

/// One of the console's files, kept in the binary.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    )
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    )
}

/// The query string's pairs.
fn query(raw: Option<&str>) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}
