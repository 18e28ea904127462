//! The Sluice aggregator: where events become durable. It takes batch
//! frames ([`sluice_shared::Batch`]) from edges over QUIC ([`quic`]) and
//! HTTP ([`http`]), drops repeats and applies per-stream and per-client
//! limits ([`admit`], on the core's rate-limit algorithm and the dedupe
//! [`window`], exact in a few bytes an id with its slices saved on disk), and
//! commits them in groups ([`commit`]) to a [`Sink`]: the embedded log
//! ([`log_sink`], on `sluice-log`) or Kafka ([`kafka`]). Each batch is
//! answered with a [`sluice_shared::BatchAck`] once its events are durable.
//! Edges' error reports become the error stream ([`error_stream`]); the
//! schema and stream-config service ([`schemas`]) serves what edges need.

pub mod admit;
pub mod budget;
pub mod buffers;
pub mod commit;
pub mod config;
pub mod console;
pub mod error_stream;
pub mod http;
pub mod journal;
pub mod kafka;
pub mod log_sink;
pub mod metrics;
pub mod quic;
pub mod schemas;
pub mod server;
pub mod sink;
pub mod window;

pub use admit::{Admission, Admit};
pub use commit::{CommitLoop, CommitOptions, SubmitError};
pub use config::{AggregatorConfig, ConfigError, HttpConfig};
pub use error_stream::{ERROR_SCHEMA_URI, ErrorStream, ErrorStreamOptions};
pub use http::{BatchService, FRAME_MEDIA_TYPE};
pub use journal::DedupeJournal;
pub use kafka::{KafkaOptions, KafkaSink, KafkaSinkError};
pub use log_sink::LogSink;
pub use metrics::Metrics;
pub use server::{ServerError, run};
pub use sink::Sink;
pub use sluice_shared::Live;
pub use sluice_shared::{Batch, BatchAck, DedupeSet, RateLimiter};
pub use window::{DedupeWindow, WindowOptions, WindowStats};
