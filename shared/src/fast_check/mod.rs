//! The validation fast path: a schema compiled into checks that run straight
//! on the tape, walking each object's members once.
//!
//! It answers only "valid, for certain". Keywords it does not take apart
//! itself go to jsonschema: one keyword at a time where the keyword stands
//! alone (formats, patterns, `multipleOf`, `uniqueItems`), the whole
//! subschema where keywords depend on each other (`allOf`, `if`/`then`,
//! `patternProperties`, ...). An event it does not pass goes to the full
//! jsonschema validator, which decides and names the errors. So the fast path
//! can make validation cheaper but never changes its outcome; a differential
//! test over Wikimedia's repositories holds it to that.
//!
//! The parts: compiling a schema into checks ([`compile`]), the shortcuts
//! that pass common formats and patterns without jsonschema ([`shortcut`]),
//! the slot table that finds a member's property by name ([`names`]), and
//! running the checks on a tape ([`run`]).

mod compile;
mod names;
mod run;
mod shortcut;
#[cfg(test)]
mod tests;

use compile::{compile, has_ref};
use names::Name;
use run::check;
use shortcut::Shortcut;

use crate::tape::{Entry, Tape, same_bytes};
use crate::tape_json::{TapeJson, TapeNode};
use jsonschema::{Draft, Validator};
use serde_json::{Map, Number, Value};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

/// Keywords that say nothing about validity (in draft-07, with no `$ref` in play).
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "readOnly",
    "writeOnly",
    "definitions",
];

/// Keywords whose meaning depends on their siblings or that hold subschemas the fast
/// path does not walk: a subschema holding one is left to jsonschema whole.
const WHOLE: &[&str] = &[
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependencies",
    "dependentRequired",
    "dependentSchemas",
    "contains",
    "additionalItems",
    "patternProperties",
    "discriminator",
    "unevaluatedProperties",
    "unevaluatedItems",
];

// Instance kinds, and the kinds each `type` admits.
const NULL: u8 = 1;
const BOOLEAN: u8 = 2;
/// A number with no fractional part: admitted by both `integer` and `number`.
const INTEGER: u8 = 4;
/// A number with a fractional part.
const FRACTION: u8 = 8;
const STRING: u8 = 16;
const ARRAY: u8 = 32;
const OBJECT: u8 = 64;
const ANY: u8 = 0x7f;

fn type_bits(name: &str) -> Option<u8> {
    Some(match name {
        "null" => NULL,
        "boolean" => BOOLEAN,
        "integer" => INTEGER,
        "number" => INTEGER | FRACTION,
        "string" => STRING,
        "array" => ARRAY,
        "object" => OBJECT,
        _ => return None,
    })
}

/// Why a schema has no fast path.
#[derive(Debug)]
pub(crate) struct NoFastPath;

/// Small jsonschema validators shared by every schema compiled with the same cache.
pub(crate) type KeywordCache = HashMap<String, Arc<Validator<TapeJson>>>;

/// A schema compiled for the fast path.
pub(crate) struct FastSchema {
    root: Check,
}

impl std::fmt::Debug for FastSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FastSchema")
    }
}

enum Check {
    /// `true` or `{}`.
    Any,
    /// `false`: nothing is valid.
    Never,
    /// Only `type` (kinds admitted).
    Kinds(u8),
    /// A string of `min..=max` characters (the commonest property by far).
    Text { min: u64, max: u64 },
    /// An integer within bounds.
    Integer { min: i64, max: i64 },
    /// A string with string keywords only (lengths, `enum`, formats, patterns): the
    /// commonest property past plain text, checked without [`check_rest`]'s other cases.
    Str(Box<StrCheck>),
    /// An object with object keywords only.
    Object(Box<ObjectCheck>),
    /// Anything else this module takes apart.
    Node(Box<NodeCheck>),
    /// Left to jsonschema whole.
    Whole(Arc<Validator<TapeJson>>),
}

#[derive(Default)]
struct NodeCheck {
    /// Kinds admitted; `ANY` when the schema has no `type`.
    types: u8,
    one_of_strings: Option<Vec<Box<str>>>,
    one_of_values: Option<Vec<Value>>,
    /// 0 and `u64::MAX` when unbounded.
    min_length: u64,
    max_length: u64,
    minimum: Option<Bound>,
    maximum: Option<Bound>,
    exclusive_minimum: Option<Bound>,
    exclusive_maximum: Option<Bound>,
    object: Option<ObjectCheck>,
    array: Option<ArrayCheck>,
    /// Keywords jsonschema checks one at a time, each for the kinds it applies to.
    delegated: Vec<Delegated>,
    /// Whether `types` is all there is to check.
    only_type: bool,
}

/// [`Check::Str`]: what [`check_rest`] would check of a string, and nothing else.
struct StrCheck {
    /// 0 and `u64::MAX` when unbounded.
    min_length: u64,
    max_length: u64,
    one_of: Option<Vec<Box<str>>>,
    /// Only the keywords that apply to strings.
    delegated: Vec<Delegated>,
}

/// A keyword jsonschema checks, for the kinds of value it applies to.
struct Delegated {
    kinds: u8,
    /// Passes the commonest valid values without calling jsonschema.
    shortcut: Shortcut,
    validator: Arc<Validator<TapeJson>>,
}

#[derive(Default)]
struct ObjectCheck {
    /// Names of `properties` and `required`.
    names: Vec<Name>,
    /// Open-addressed index of `names` by [`name_hash`]: position + 1, 0 for empty.
    slots: Vec<u16>,
    /// Spreads a name's hash over the slots: `hash * spread >> shift` is its home slot.
    spread: u64,
    /// `64 - log2(slots.len())`.
    shift: u32,
    /// Every name sits in its home slot, so a lookup is one probe (no collision chains to walk).
    perfect: bool,
    /// When `perfect`: the names laid out by home slot, so a lookup reads one entry, not
    /// a slot and then a name. Empty slots hold a name that stands for "not declared".
    table: Vec<Name>,
    properties: Vec<Check>,
    /// One bit per required name.
    required: u64,
    /// `None` when any other member is allowed.
    additional: Option<Check>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    property_names: Option<Check>,
}

#[derive(Default)]
struct ArrayCheck {
    items: Option<Check>,
    min_items: Option<u64>,
    max_items: Option<u64>,
}

/// A numeric bound, kept exactly.
#[derive(Clone, Copy)]
enum Bound {
    Int(i128),
    Float(f64),
}

/// Integers up to this magnitude convert to `f64` exactly.
const EXACT_IN_F64: i128 = 1 << 53;

impl Bound {
    fn new(n: &Number) -> Option<Bound> {
        if let Some(u) = n.as_u64() {
            Some(Bound::Int(i128::from(u)))
        } else if let Some(i) = n.as_i64() {
            Some(Bound::Int(i128::from(i)))
        } else {
            n.as_f64().filter(|f| f.is_finite()).map(Bound::Float)
        }
    }

    /// How `value` compares to the bound, when that can be told exactly.
    fn compare(self, value: Bound) -> Option<Ordering> {
        match (value, self) {
            (Bound::Int(a), Bound::Int(b)) => Some(a.cmp(&b)),
            (Bound::Int(a), Bound::Float(b)) if a.abs() <= EXACT_IN_F64 => {
                (a as f64).partial_cmp(&b)
            }
            (Bound::Float(a), Bound::Int(b)) if b.abs() <= EXACT_IN_F64 => {
                a.partial_cmp(&(b as f64))
            }
            (Bound::Float(a), Bound::Float(b)) => a.partial_cmp(&b),
            _ => None,
        }
    }
}

impl FastSchema {
    /// Compiles `schema` (a materialized draft-07 document); `None` when it
    /// needs what only the full validator does (a `$ref`).
    pub(crate) fn compile(schema: &Value, cache: &mut KeywordCache) -> Option<FastSchema> {
        if has_ref(schema) {
            return None;
        }
        compile(schema, cache).ok().map(|root| FastSchema { root })
    }

    /// Whether the value at `node` of `tape` is valid for certain.
    pub(crate) fn passes(&self, tape: &Tape<'_>, node: u32) -> bool {
        check(&self.root, tape, node)
    }
}
