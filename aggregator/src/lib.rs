//! The Sluice aggregator: where events become durable. It takes batch
//! frames ([`sluice_shared::Batch`]) from edges, drops repeats with the
//! core's [`sluice_shared::DedupeSet`], applies per-stream and per-client
//! limits with [`sluice_shared::RateLimiter`], produces to Kafka or the
//! embedded log, and answers each batch with a [`sluice_shared::BatchAck`].
//!
//! Built so far: admission ([`admit`]: dedupe and rate limits per batch)
//! and the embedded log ([`log`]), the sink used when no Kafka brokers are
//! configured. Ingest, the Kafka sink and the services follow.

pub mod admit;
pub mod log;

pub use admit::{Admission, Admit};
pub use log::{EmbeddedLog, LogError, LogOptions, LogRecord, NewRecord};
pub use sluice_shared::{Batch, BatchAck, DedupeSet, RateLimiter};
