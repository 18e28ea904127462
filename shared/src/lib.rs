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

/// Hash maps keyed by configuration (stream names, schema URIs): a fast, fixed hasher.
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

// Schema repositories, their schemas, and validation.
mod examples;
mod fast_check;
mod registry;
mod repository;
mod schema_uri;
mod validation;
pub use examples::{ExampleFailure, ExamplesReport, check_examples};
pub use registry::{CompiledSchema, ResolveError, SchemaLoadError, SchemaRegistry};
#[cfg(feature = "fs")]
pub use repository::fs;
pub use repository::{RepositoryError, SchemaFile, SchemaRepository, parse_document};
pub use schema_uri::{SchemaUri, SchemaUriError, Version, VersionSpec};
pub use validation::Violations;

// Stream configuration.
mod field_path;
mod produce;
mod stream_config;
mod streams_api;
mod windows;
pub use produce::Withheld;
pub use stream_config::{StreamConfig, StreamConfigError, StreamEntry, merge};
pub use streams_api::{StreamsQuery, StreamsQueryError};

// The intake pipeline: parse, resolve, enrich, validate, sample.
mod intake;
mod json;
mod sampling;
mod tape;
mod tape_json;
pub use intake::{
    EVENT_ID_NAMESPACE, EventIds, EventOutcome, Intake, IntakeOptions, Rejection, RejectionKind,
    RequestMeta, Tally, Verdict,
};
pub use json::{BodyError, BodyLimits, json_kind};
// The tape and its validation view, for the intake benchmark's parse and validate rows.
pub use tape::{Tape, TapeError};
pub use tape_json::TapeNode;

// Edge to aggregator.
mod bundle;
pub mod forward;
pub mod link;
pub mod record_headers;
pub mod tooling;
mod wire;
pub use bundle::{Bundle, BundleError, BundleRepository};
pub use link::LinkReply;
pub use wire::{Batch, BatchAck, BatchError, BatchEvent, EventAck, WireError, WireLimits};

// The aggregator's algorithms, and time.
mod dedupe;
mod rate_limit;
mod timestamp;
pub use dedupe::{BlockedBloom, DedupeSet, FrozenIds, IdSet, Seen, SortedIds};
pub use rate_limit::{Quota, RateLimiter};
pub use timestamp::{Timestamp, TimestampError};

// Hosts' shared state.
mod live;
pub use live::Live;

/// FNV-1a, 64 bits: a small, fixed hash, the same on every platform and in
/// every process (aggregator names' keys, ETags of served config).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
