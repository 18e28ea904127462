//! The Sluice edge: the EventGate-compatible intake that browsers and apps
//! send events to. It runs the core's intake pipeline
//! ([`sluice_shared::Intake`]) per request, batches accepted events and
//! forwards them to an aggregator: over QUIC from the native host, over
//! HTTPS from the Cloudflare Worker build.
//!
//! This crate holds the edge's place in the workspace; its HTTP surface and
//! both hosts are built on the core as the next step of the platform.

pub use sluice_shared::{Batch, Intake, RequestMeta};
