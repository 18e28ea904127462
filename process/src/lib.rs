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
//! in PostgreSQL: [`pg_index`], or the embedded store: [`journal_index`]),
//! and [`progress`] keeps the offsets finished out of order and the per-key
//! lanes.
//!
//! The IO shell: [`runner`] runs each rule over a source of `sluice-connect`
//! (a Kafka consumer group or the embedded log), with its jobs in `job` and
//! its reader thread in `reader`; [`emit`] writes events through the edge;
//! [`exactly_once`] runs produce-only rules in Kafka transactions;
//! [`metrics`] counts per rule.

pub mod delivery;
pub mod emit;
pub mod events;
pub mod exactly_once;
pub mod fanout;
mod job;
pub mod journal_index;
pub mod matcher;
pub mod metrics;
pub mod pg_index;
pub mod plan;
pub mod progress;
mod reader;
pub mod rules;
pub mod runner;
pub mod template;

pub use matcher::{MatchError, Matcher};
pub use rules::{Exec, Rule, RuleError, RuleSet};
pub use template::{Template, TemplateError};
