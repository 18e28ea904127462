//! Sluice's stream processing: rules in change-propagation's shape over
//! streams. This crate's core is sans-IO: [`rules`] reads a rule file,
//! [`matcher`] decides whether an event matches a rule (with the captures of
//! its `/regex/` patterns), [`template`] expands `{{message.…}}` and
//! `{{match.…}}` into the requests and events a rule makes, [`plan`] turns
//! an event into each matching rule's steps, [`delivery`]
//! decides what an answer means (done, retried after a delay, reported),
//! which fanned-out jobs a newer root event cuts off and which ids were seen,
//! [`events`] writes retry, error and continue events, and [`fanout`] pages
//! a changed target's dependents out of the dependency index (in memory, or
//! in PostgreSQL: [`pg_index`]).
//!
//! [`runner`] is the first IO shell: `exec` rules over the embedded log.
//! Not yet here (issue 28 goes on): Kafka consumer groups, concurrency and
//! per-key order, `produce`, the retry and error streams, the index in the
//! embedded store and its upkeep from events, metrics and the benchmark.

pub mod delivery;
pub mod events;
pub mod fanout;
pub mod matcher;
pub mod pg_index;
pub mod plan;
pub mod rules;
pub mod runner;
pub mod template;

pub use matcher::{MatchError, Matcher};
pub use rules::{Exec, Rule, RuleError, RuleSet};
pub use template::{Template, TemplateError};
