//! The Sluice aggregator: where events become durable. It takes batch
//! frames ([`sluice_shared::Batch`]) from edges, drops repeats with the
//! core's [`sluice_shared::DedupeSet`], applies per-stream and per-client
//! limits with [`sluice_shared::RateLimiter`], produces to Kafka or the
//! embedded log, and answers each batch with a [`sluice_shared::BatchAck`].
//!
//! This crate holds the aggregator's place in the workspace; its ingest,
//! sinks and services are built on the core as the next step of the platform.

pub use sluice_shared::{Batch, BatchAck, DedupeSet, RateLimiter};
