//! The Sluice aggregator: where events become durable. It takes batch
//! frames ([`sluice_shared::Batch`]) from edges, drops repeats with the
//! core's [`sluice_shared::DedupeSet`], applies per-stream and per-client
//! limits with [`sluice_shared::RateLimiter`], produces to Kafka or the
//! embedded log, and answers each batch with a [`sluice_shared::BatchAck`].
//!
//! Built so far: admission ([`admit`]: dedupe and rate limits per batch),
//! the embedded log ([`log`], the sink when no Kafka brokers are
//! configured), the group-commit loop over them ([`sink`]), batch ingest
//! over QUIC ([`quic`], certificates in [`tls`]) and HTTP ([`http`]), and
//! metrics. The Kafka sink and the rest of the schema and config service
//! follow.

pub mod admit;
pub mod budget;
pub mod config;
pub mod errors;
pub mod http;
pub mod journal;
pub mod kafka;
pub mod log;
pub mod metrics;
pub mod quic;
pub mod schemas;
pub mod server;
pub mod sink;
pub mod tls;

pub use admit::{Admission, Admit};
pub use config::{AggregatorConfig, ConfigError, HttpConfig};
pub use errors::{ERROR_SCHEMA_URI, ErrorStream, ErrorStreamOptions};
pub use http::{BatchService, FRAME_MEDIA_TYPE};
pub use journal::DedupeJournal;
pub use kafka::{KafkaOptions, KafkaSink, KafkaSinkError};
pub use log::{EmbeddedLog, LogError, LogMark, LogOptions, LogRecord, LogTail, NewRecord};
pub use metrics::Metrics;
pub use server::{ServerError, run};
pub use sink::{Sink, SinkOptions, SinkTarget, SubmitError};
pub use sluice_shared::Live;
pub use sluice_shared::{Batch, BatchAck, DedupeSet, RateLimiter};
