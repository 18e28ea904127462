//! The Sluice edge: the EventGate-compatible intake that browsers and apps
//! send events to. Per request it runs the core's intake pipeline
//! ([`sluice_shared::Intake`]: parse, resolve, enrich, validate, sample),
//! hands the accepted events to a forwarder, and answers in EventGate's
//! shapes.
//!
//! The request and answer rules both hosts share live here, free of IO:
//! [`request`] (content types, parameters, client address, request id) and
//! [`respond`] (statuses and bodies). The hosts are thin shells around
//! them: [`native`] (tokio, axum, QUIC to aggregators, a disk spool) and,
//! built for `wasm32-unknown-unknown`, the Cloudflare Worker, which forwards
//! over HTTPS because a Worker can open no UDP socket.

pub mod pipeline;
pub mod request;
pub mod respond;

#[cfg(not(target_arch = "wasm32"))]
pub mod native;

#[cfg(target_arch = "wasm32")]
mod worker;

pub use request::{BodyKind, Query, Refusal};
pub use respond::{Forwarded, Reply};
