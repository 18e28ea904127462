//! Sluice's sans-IO core.
//!
//! This crate is the deterministic heart of Sluice: the event envelope,
//! schema repositories and validation, stream configuration, sampling,
//! enrichment, the edge-to-aggregator batch wire format, and the dedupe and
//! rate-limit algorithms. It contains no networking code, opens no files by
//! itself (the optional `fs` feature adds a helper its native hosts call),
//! and never reads a clock or a random source: time, seeds and bytes are
//! arguments. It builds for `wasm32-unknown-unknown`, so the same code runs
//! in a Cloudflare Worker, in the native edge and in the aggregator.
#![warn(missing_docs)]

/// Hash maps keyed by configuration (stream names, schema URIs): a fast, fixed hasher.
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

// Schema repositories, their schemas, and validation.
mod examples;
mod fast_check;
mod registry;
mod repository;
mod schema_uri;
mod validation;
pub use examples::{EXAMPLES_CASE, ExampleFailure, ExamplesReport, check_examples};
pub use registry::{BASE_URI, CompiledSchema, ResolveError, SchemaLoadError, SchemaRegistry};
#[cfg(feature = "fs")]
pub use repository::fs;
pub use repository::{
    MAX_SAFE_INTEGER, RepositoryError, SchemaFile, SchemaRepository, SkipRule, ToolsConfig,
    parse_document,
};
pub use schema_uri::{SchemaUri, SchemaUriError, Version, VersionSpec};
pub use validation::{SchemaViolation, Violations};

// Stream configuration.
mod field_path;
mod stream_config;
mod streams_api;
mod windows;
pub use field_path::FieldPath;
pub use stream_config::{
    EventGateProducer, HeaderSource, Producers, RateLimit, Sample, StreamConfig, StreamConfigError,
    StreamEntry, StreamSettings, default_sample_units, merge,
};
pub use streams_api::{StreamsQuery, StreamsQueryError};
pub use windows::{Window, is_open};

// The intake pipeline: parse, resolve, enrich, validate, sample.
mod intake;
mod json;
mod sampling;
mod tape;
mod tape_json;
pub use intake::{
    EVENT_ID_NAMESPACE, EventIds, EventOutcome, Intake, IntakeOptions, Rejection, RejectionKind,
    RequestMeta, StreamTally, Tally, Verdict,
};
pub use json::{BodyError, BodyLimits, json_type_name};
pub use sampling::{in_sample, position_in_sample, unit_position};
pub use tape::{EventSpan, MAX_DEPTH, Tape, TapeError};
pub use tape_json::{TapeJson, TapeNode, TapeNumber};

// Edge to aggregator.
mod bundle;
pub mod forward;
pub mod link;
pub mod record_headers;
pub mod tooling;
mod wire;
pub use bundle::{Bundle, BundleError, BundleRepository};
pub use link::LinkReply;
pub use wire::{
    Batch, BatchAck, BatchError, BatchEvent, BufferPool, EventAck, WIRE_VERSION, WireError,
    WireLimits, frame_is_compressed,
};

// The aggregator's algorithms, and time.
mod dedupe;
mod rate_limit;
mod timestamp;
pub use dedupe::{DedupeSet, GENERATIONS, Seen};
pub use rate_limit::{OVERFLOW_KEY, Quota, RateLimiter, RetryAfter};
pub use timestamp::{Timestamp, TimestampError};

// Hosts' shared state.
mod live;
pub use live::Live;
