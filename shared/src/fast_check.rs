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

/// A check that passes a value only when it is certainly valid; any other value goes
/// on to jsonschema, which decides.
#[derive(Clone, Copy, PartialEq)]
enum Shortcut {
    None,
    /// `format: date-time`, for the shape events carry: `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
    DateTime,
    /// A `pattern` of the form `^[class]{min,max}$` over ASCII letters and digits (ids and
    /// tokens): one bit per byte value admitted, and the length bounds.
    Run {
        admitted: [u64; 2],
        min: usize,
        max: usize,
        /// The admitted bytes as up to four ranges, for checking sixteen bytes at once;
        /// `ranges[..n]`, and `n` is 0 when the class needs more.
        ranges: [(u8, u8); 4],
        n: usize,
    },
}

impl Shortcut {
    #[inline]
    fn passes(self, tape: &Tape<'_>, node: u32) -> bool {
        match self {
            Shortcut::None => false,
            Shortcut::DateTime => tape.key_bytes(node).is_some_and(utc_date_time),
            Shortcut::Run {
                admitted,
                min,
                max,
                ranges,
                n,
            } => tape.key_bytes(node).is_some_and(|b| {
                (min..=max).contains(&b.len()) && run_admits(b, &admitted, &ranges[..n])
            }),
        }
    }

    /// The shortcut for a `pattern`, when it has the one shape taken apart here.
    fn for_pattern(pattern: &str) -> Shortcut {
        run_pattern(pattern).map_or(Shortcut::None, |(admitted, min, max)| {
            let mut ranges = [(0, 0); 4];
            let mut n = 0;
            let admits = |c: u8| admitted[usize::from(c >> 6)] & (1 << (c & 63)) != 0;
            let mut c = 0u8;
            while c < 128 {
                if admits(c) {
                    let lo = c;
                    while c < 127 && admits(c + 1) {
                        c += 1;
                    }
                    if let Some(slot) = ranges.get_mut(n) {
                        *slot = (lo, c);
                    }
                    n += 1;
                }
                c += 1;
            }
            Shortcut::Run {
                admitted,
                min,
                max,
                ranges,
                n: if n <= ranges.len() { n } else { 0 },
            }
        })
    }
}

/// Whether every byte of `b` is admitted: sixteen at a time against `ranges` where it
/// can, else one at a time against the bitmap.
#[inline]
fn run_admits(b: &[u8], admitted: &[u64; 2], ranges: &[(u8, u8)]) -> bool {
    let one_by_one = |b: &[u8]| {
        b.iter()
            .all(|&c| c < 128 && admitted[usize::from(c >> 6)] & (1 << (c & 63)) != 0)
    };
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if !ranges.is_empty() && b.len() >= 16 {
        // Sixteen-byte windows from the start, and one ending at the last byte.
        let mut at = 0;
        while let Some(chunk) = b.get(at..).and_then(<[u8]>::first_chunk::<16>) {
            if !in_ranges16(chunk, ranges) {
                return false;
            }
            at += 16;
        }
        return at == b.len() || b.last_chunk::<16>().is_some_and(|c| in_ranges16(c, ranges));
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    let _ = ranges;
    one_by_one(b)
}

/// Whether each of the sixteen bytes lies in one of `ranges` (ASCII ranges).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn in_ranges16(chunk: &[u8; 16], ranges: &[(u8, u8)]) -> bool {
    use safe_arch::{
        bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, min_u8_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i, sub_i8_m128i, zeroed_m128i,
    };
    let v = load_unaligned_m128i(chunk);
    let mut inside = zeroed_m128i();
    for &(lo, hi) in ranges {
        // `v - lo`, wrapping, is at most `hi - lo` exactly for the bytes in the range.
        let d = sub_i8_m128i(v, set_splat_i8_m128i(lo as i8));
        let span = set_splat_i8_m128i((hi - lo) as i8);
        inside = bitor_m128i(inside, cmp_eq_mask_i8_m128i(min_u8_m128i(d, span), d));
    }
    move_mask_i8_m128i(inside) == 0xffff
}

/// `^[class]{min,max}$` (or `{n}`, `+`, `*`) where the class holds only ASCII letters,
/// digits and ranges between them: the bytes admitted and the length bounds.
fn run_pattern(pattern: &str) -> Option<([u64; 2], usize, usize)> {
    let body = pattern.strip_prefix("^[")?.strip_suffix('$')?;
    let (class, quantifier) = body.split_once(']')?;
    let (min, max) = match quantifier {
        "+" => (1, usize::MAX),
        "*" => (0, usize::MAX),
        q => {
            let q = q.strip_prefix('{')?.strip_suffix('}')?;
            let bound = |t: &str| {
                (!t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
                    .then(|| t.parse::<usize>().ok())
                    .flatten()
            };
            match q.split_once(',') {
                None => (bound(q)?, bound(q)?),
                Some((lo, hi)) => (bound(lo)?, bound(hi)?),
            }
        }
    };
    let mut admitted = [0u64; 2];
    let mut admit = |c: u8| admitted[usize::from(c >> 6)] |= 1 << (c & 63);
    let bytes = class.as_bytes();
    if bytes.is_empty() || min > max {
        return None;
    }
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if !c.is_ascii_alphanumeric() {
            return None;
        }
        match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(b'-'), Some(&end)) => {
                // A range within one kind: digits, lower- or upper-case letters.
                let same_kind = (c.is_ascii_digit() && end.is_ascii_digit())
                    || (c.is_ascii_lowercase() && end.is_ascii_lowercase())
                    || (c.is_ascii_uppercase() && end.is_ascii_uppercase());
                if !same_kind || end < c {
                    return None;
                }
                (c..=end).for_each(&mut admit);
                i += 3;
            }
            (Some(b'-'), None) => return None,
            _ => {
                admit(c);
                i += 1;
            }
        }
    }
    Some((admitted, min, max))
}

/// Whether `b` is an RFC 3339 date-time in UTC with an upper-case `T` and `Z`, a valid
/// calendar date and a second below 60: a subset of what jsonschema's `date-time`
/// accepts (leap seconds, offsets and lower-case letters are left to it).
fn utc_date_time(b: &[u8]) -> bool {
    let digits = |range: std::ops::Range<usize>| {
        b.get(range).and_then(|d| {
            d.iter().try_fold(0u32, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        })
    };
    let punctuation = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if b.len() < 20
        || b.last() != Some(&b'Z')
        || punctuation.iter().any(|&(at, c)| b.get(at) != Some(&c))
    {
        return false;
    }
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return false;
    };
    let (Some(hour), Some(minute), Some(second)) = (digits(11..13), digits(14..16), digits(17..19))
    else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    // After the seconds: `Z` alone, or a fraction of at least one digit and then `Z`.
    let rest = &b[19..b.len() - 1];
    let fraction_ok = rest.is_empty()
        || (rest.len() >= 2 && rest[0] == b'.' && rest[1..].iter().all(u8::is_ascii_digit));
    (1..=month_days).contains(&day) && hour < 24 && minute < 60 && second < 60 && fraction_ok
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

#[derive(Clone)]
struct Name {
    hash: u64,
    /// [`NameWords`] of `text`: for a name of up to 16 bytes, equal words and length are
    /// equal names, with no byte loop.
    words: NameWords,
    text: Box<str>,
    /// Index into `properties`, or [`NOT_DECLARED`] for a name only `required` gives.
    property: u32,
    /// Its bit in `required`, or 0 when it is not required.
    required_mask: u64,
}

const NOT_DECLARED: u32 = u32::MAX;

/// A name's first and last eight bytes (or four, or all of a name under four bytes),
/// as two words: for a name of up to sixteen bytes they hold every byte.
#[derive(Clone, Copy, PartialEq, Eq)]
struct NameWords {
    len: usize,
    head: u64,
    tail: u64,
}

impl NameWords {
    #[inline(always)]
    fn of(b: &[u8]) -> NameWords {
        let (head, tail) = if let (Some(h), Some(t)) = (b.first_chunk::<8>(), b.last_chunk::<8>()) {
            (u64::from_le_bytes(*h), u64::from_le_bytes(*t))
        } else if let (Some(h), Some(t)) = (b.first_chunk::<4>(), b.last_chunk::<4>()) {
            (
                u64::from(u32::from_le_bytes(*h)),
                u64::from(u32::from_le_bytes(*t)),
            )
        } else {
            (b.iter().fold(0, |h, &c| h << 8 | u64::from(c)), 0)
        };
        NameWords {
            len: b.len(),
            head,
            tail,
        }
    }

    /// A hash of the words and the length: cheap, and enough to tell apart the few
    /// names of one object.
    #[inline(always)]
    fn hash(self) -> u64 {
        let mixed = if self.len >= 8 {
            self.head ^ self.tail.rotate_left(29)
        } else {
            self.head | self.tail << 32
        };
        (mixed ^ (self.len as u64).rotate_right(8)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// The hash of a name (see [`NameWords::hash`]).
#[inline(always)]
fn name_hash(b: &[u8]) -> u64 {
    NameWords::of(b).hash()
}

/// Multipliers tried, in turn, for a table where every name has a slot of its own.
fn spread(attempt: u64) -> u64 {
    let mut z = attempt.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (z ^ (z >> 27)) | 1
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

/// Compiles `keyword: value` alone with jsonschema, once per distinct pair.
fn keyword_validator(
    cache: &mut KeywordCache,
    keyword: &str,
    value: &Value,
) -> Result<Arc<Validator<TapeJson>>, NoFastPath> {
    let mut schema = Map::new();
    schema.insert(keyword.to_owned(), value.clone());
    whole_validator(cache, &Value::Object(schema))
}

/// Compiles a subschema with jsonschema, once per distinct subschema.
fn whole_validator(
    cache: &mut KeywordCache,
    schema: &Value,
) -> Result<Arc<Validator<TapeJson>>, NoFastPath> {
    let key = schema.to_string();
    if let Some(v) = cache.get(&key) {
        return Ok(v.clone());
    }
    let validator = jsonschema::options_for::<TapeJson>()
        .with_draft(Draft::Draft7)
        .should_validate_formats(true)
        .build(schema)
        .map_err(|_| NoFastPath)?;
    let validator = Arc::new(validator);
    cache.insert(key, validator.clone());
    Ok(validator)
}

/// Whether `schema` holds a `$ref` anywhere, which only the full validator resolves.
fn has_ref(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k == "$ref" || (!ANNOTATIONS.contains(&k.as_str()) && has_ref(v))),
        Value::Array(items) => items.iter().any(has_ref),
        _ => false,
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

fn non_negative(v: &Value) -> Result<u64, NoFastPath> {
    v.as_u64().ok_or(NoFastPath)
}

fn compile(schema: &Value, cache: &mut KeywordCache) -> Result<Check, NoFastPath> {
    let map = match schema {
        Value::Bool(true) => return Ok(Check::Any),
        Value::Bool(false) => return Ok(Check::Never),
        Value::Object(map) => map,
        _ => return Err(NoFastPath),
    };
    let needs_whole = map.keys().any(|k| WHOLE.contains(&k.as_str()))
        || map.get("items").is_some_and(Value::is_array)
        || map
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| r.len() > 64);
    if needs_whole {
        return whole_validator(cache, schema).map(Check::Whole);
    }
    let mut node = NodeCheck {
        types: ANY,
        max_length: u64::MAX,
        ..NodeCheck::default()
    };
    let mut any_check = false;
    for (keyword, value) in map {
        let keyword = keyword.as_str();
        if ANNOTATIONS.contains(&keyword) {
            continue;
        }
        any_check = true;
        match keyword {
            "type" => {
                node.types = match value {
                    Value::String(s) => type_bits(s).ok_or(NoFastPath)?,
                    Value::Array(names) => names.iter().try_fold(0, |bits, n| {
                        n.as_str()
                            .and_then(type_bits)
                            .map(|b| bits | b)
                            .ok_or(NoFastPath)
                    })?,
                    _ => return Err(NoFastPath),
                }
            }
            "enum" => {
                let options = value.as_array().ok_or(NoFastPath)?;
                if options.iter().all(Value::is_string) {
                    node.one_of_strings = Some(
                        options
                            .iter()
                            .filter_map(Value::as_str)
                            .map(Box::from)
                            .collect(),
                    );
                } else {
                    node.one_of_values = Some(options.clone());
                }
            }
            "const" => node.one_of_values = Some(vec![value.clone()]),
            "minLength" => node.min_length = non_negative(value)?,
            "maxLength" => node.max_length = non_negative(value)?,
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                let bound = value.as_number().and_then(Bound::new).ok_or(NoFastPath)?;
                let slot = match keyword {
                    "minimum" => &mut node.minimum,
                    "maximum" => &mut node.maximum,
                    "exclusiveMinimum" => &mut node.exclusive_minimum,
                    _ => &mut node.exclusive_maximum,
                };
                *slot = Some(bound);
            }
            "properties"
            | "required"
            | "additionalProperties"
            | "minProperties"
            | "maxProperties"
            | "propertyNames" => {
                let object = node.object.get_or_insert_with(ObjectCheck::default);
                match keyword {
                    "minProperties" => object.min_properties = Some(non_negative(value)?),
                    "maxProperties" => object.max_properties = Some(non_negative(value)?),
                    "additionalProperties" => object.additional = Some(compile(value, cache)?),
                    "propertyNames" => object.property_names = Some(compile(value, cache)?),
                    // Names are gathered below, once both keywords are seen.
                    _ => {}
                }
            }
            "items" | "minItems" | "maxItems" => {
                let array = node.array.get_or_insert_with(ArrayCheck::default);
                match keyword {
                    "items" => array.items = Some(compile(value, cache)?),
                    "minItems" => array.min_items = Some(non_negative(value)?),
                    _ => array.max_items = Some(non_negative(value)?),
                }
            }
            // Standing alone, jsonschema checks these exactly as in context.
            _ => {
                let kinds = match keyword {
                    "pattern" | "format" | "contentMediaType" | "contentEncoding" => STRING,
                    "multipleOf" => INTEGER | FRACTION,
                    "uniqueItems" => ARRAY,
                    _ => ANY,
                };
                let shortcut = match (keyword, value.as_str()) {
                    ("format", Some("date-time")) => Shortcut::DateTime,
                    ("pattern", Some(pattern)) => Shortcut::for_pattern(pattern),
                    _ => Shortcut::None,
                };
                node.delegated.push(Delegated {
                    kinds,
                    shortcut,
                    validator: keyword_validator(cache, keyword, value)?,
                });
            }
        }
    }
    if let Some(object) = &mut node.object {
        let properties = match map.get("properties") {
            Some(Value::Object(p)) => Some(p),
            None => None,
            Some(_) => return Err(NoFastPath),
        };
        for (name, subschema) in properties.into_iter().flatten() {
            object.properties.push(compile(subschema, cache)?);
            object.names.push(Name {
                hash: name_hash(name.as_bytes()),
                words: NameWords::of(name.as_bytes()),
                text: name.as_str().into(),
                property: u32::try_from(object.properties.len() - 1).map_err(|_| NoFastPath)?,
                required_mask: 0,
            });
        }
        let required = match map.get("required") {
            Some(Value::Array(r)) => r.as_slice(),
            None => &[],
            Some(_) => return Err(NoFastPath),
        };
        let mut bits = 0u32;
        for name in required {
            let name = name.as_str().ok_or(NoFastPath)?;
            let at = match object.names.iter().position(|n| &*n.text == name) {
                Some(at) => at,
                None => {
                    object.names.push(Name {
                        hash: name_hash(name.as_bytes()),
                        words: NameWords::of(name.as_bytes()),
                        text: name.into(),
                        property: NOT_DECLARED,
                        required_mask: 0,
                    });
                    object.names.len() - 1
                }
            };
            if object.names[at].required_mask == 0 {
                object.names[at].required_mask = 1 << bits;
                object.required |= 1 << bits;
                bits += 1;
            }
        }
        object.index_names()?;
    }
    if !any_check {
        return Ok(Check::Any);
    }
    Ok(shape(node))
}

/// The most compact check that does what `node` does.
fn shape(mut node: NodeCheck) -> Check {
    let lengths = node.min_length != 0 || node.max_length != u64::MAX;
    let bounds = node.minimum.is_some()
        || node.maximum.is_some()
        || node.exclusive_minimum.is_some()
        || node.exclusive_maximum.is_some();
    let values =
        node.one_of_strings.is_some() || node.one_of_values.is_some() || !node.delegated.is_empty();
    let (object, array) = (node.object.is_some(), node.array.is_some());
    node.only_type = !(lengths || bounds || values || object || array);
    if node.only_type {
        return Check::Kinds(node.types);
    }
    if values
        && node.types == STRING
        && !bounds
        && !object
        && !array
        && node.one_of_values.is_none()
    {
        return Check::Str(Box::new(StrCheck {
            min_length: node.min_length,
            max_length: node.max_length,
            one_of: node.one_of_strings,
            delegated: node
                .delegated
                .into_iter()
                .filter(|d| d.kinds & STRING != 0)
                .collect(),
        }));
    }
    if values || array || (object && (lengths || bounds)) {
        return Check::Node(Box::new(node));
    }
    if node.types == STRING && lengths && !bounds && !object {
        return Check::Text {
            min: node.min_length,
            max: node.max_length,
        };
    }
    if node.types == OBJECT
        && let Some(o) = node.object.take()
        && !(lengths || bounds)
    {
        return Check::Object(Box::new(o));
    }
    let int_bound = |b: Option<Bound>| match b {
        None => Some(None),
        Some(Bound::Int(n)) => i64::try_from(n).ok().map(Some),
        Some(Bound::Float(_)) => None,
    };
    if node.types == INTEGER
        && !lengths
        && !object
        && node.exclusive_minimum.is_none()
        && node.exclusive_maximum.is_none()
        && let (Some(min), Some(max)) = (int_bound(node.minimum), int_bound(node.maximum))
    {
        return Check::Integer {
            min: min.unwrap_or(i64::MIN),
            max: max.unwrap_or(i64::MAX),
        };
    }
    Check::Node(Box::new(node))
}

impl ObjectCheck {
    /// Lays `names` out in `slots`: if it can, with every name in its home slot (a table
    /// of two to eight slots per name, and a multiplier that separates them), else with
    /// linear probing.
    fn index_names(&mut self) -> Result<(), NoFastPath> {
        let least = (self.names.len() * 2).next_power_of_two().max(4);
        if least > usize::from(u16::MAX) {
            return Err(NoFastPath);
        }
        let place = |size: usize, spread: u64, perfect: bool| -> Option<Vec<u16>> {
            let shift = 64 - size.trailing_zeros();
            let mut slots = vec![0u16; size];
            for (i, name) in self.names.iter().enumerate() {
                let mut at = (name.hash.wrapping_mul(spread) >> shift) as usize;
                while slots[at] != 0 {
                    if perfect {
                        return None;
                    }
                    at = (at + 1) & (size - 1);
                }
                slots[at] = (i + 1) as u16;
            }
            Some(slots)
        };
        let sizes = [least, least * 2, least * 4];
        for size in sizes.into_iter().filter(|&s| s <= usize::from(u16::MAX)) {
            for attempt in 0..32 {
                if let Some(slots) = place(size, spread(attempt), true) {
                    // An empty slot found is a name not declared: `additionalProperties`
                    // applies, as it does to a name not found.
                    let vacant = Name {
                        hash: 0,
                        words: NameWords::of(b""),
                        text: "".into(),
                        property: NOT_DECLARED,
                        required_mask: 0,
                    };
                    self.table = slots
                        .iter()
                        .map(|&slot| match usize::from(slot).checked_sub(1) {
                            Some(i) => self.names[i].clone(),
                            None => vacant.clone(),
                        })
                        .collect();
                    (self.slots, self.spread, self.perfect) = (slots, spread(attempt), true);
                    self.shift = 64 - size.trailing_zeros();
                    return Ok(());
                }
            }
        }
        // Names whose hashes are equal (a long shared prefix and suffix) share a chain.
        self.slots = place(least, 1, false).ok_or(NoFastPath)?;
        (self.spread, self.perfect) = (1, false);
        self.shift = 64 - least.trailing_zeros();
        Ok(())
    }

    #[inline(always)]
    fn find(&self, name: &[u8]) -> Option<&Name> {
        let words = NameWords::of(name);
        let hash = words.hash();
        let mask = self.slots.len() - 1;
        let at = (hash.wrapping_mul(self.spread) >> self.shift) as usize;
        if self.perfect {
            // The one name that can match is the one in the home slot (or a vacant
            // slot's empty name, which stands for "not declared" either way).
            let n = self.table.get(at & mask)?;
            return (n.words == words && (name.len() <= 16 || same_bytes(n.text.as_bytes(), name)))
                .then_some(n);
        }
        self.find_chained(name, hash, at)
    }

    /// [`ObjectCheck::find`] in a table whose names share slots: out of the hot loop, so
    /// that its state does not crowd the registers of the common case.
    #[cold]
    #[inline(never)]
    fn find_chained(&self, name: &[u8], hash: u64, mut at: usize) -> Option<&Name> {
        let mask = self.slots.len() - 1;
        loop {
            let slot = usize::from(*self.slots.get(at & mask)?);
            let n = self.names.get(slot.checked_sub(1)?)?;
            if n.hash == hash && same_bytes(n.text.as_bytes(), name) {
                return Some(n);
            }
            at += 1;
        }
    }
}

/// The kind of an entry.
#[inline(always)]
fn kind(entry: Entry) -> u8 {
    match entry {
        Entry::Null => NULL,
        Entry::Bool(_) => BOOLEAN,
        Entry::Int(_) | Entry::UInt(_) => INTEGER,
        Entry::Float(f) if f.fract() == 0.0 => INTEGER,
        Entry::Float(_) => FRACTION,
        Entry::Str { .. } | Entry::Owned(_) => STRING,
        Entry::Array { .. } => ARRAY,
        Entry::Object { .. } => OBJECT,
    }
}

/// The number an entry holds.
#[inline]
fn number(entry: Entry) -> Option<Bound> {
    match entry {
        Entry::Int(n) => Some(Bound::Int(i128::from(n))),
        Entry::UInt(n) => Some(Bound::Int(i128::from(n))),
        Entry::Float(f) => Some(Bound::Float(f)),
        _ => None,
    }
}

fn check(c: &Check, tape: &Tape<'_>, node: u32) -> bool {
    check_inline(c, tape, node)
}

#[inline(always)]
fn check_inline(c: &Check, tape: &Tape<'_>, node: u32) -> bool {
    match c {
        Check::Text { min, max } => {
            let entry = tape.entry(node);
            matches!(entry, Entry::Str { .. } | Entry::Owned(_))
                && text_length_within(tape, node, entry, *min, *max)
        }
        Check::Kinds(kinds) => kinds & kind(tape.entry(node)) != 0,
        Check::Str(c) => {
            let entry = tape.entry(node);
            matches!(entry, Entry::Str { .. } | Entry::Owned(_))
                && ((c.min_length == 0 && c.max_length == u64::MAX)
                    || text_length_within(tape, node, entry, c.min_length, c.max_length))
                && c.one_of.as_ref().is_none_or(|options| {
                    tape.key_bytes(node)
                        .is_some_and(|s| options.iter().any(|o| same_bytes(o.as_bytes(), s)))
                })
                && c.delegated.iter().all(|d| {
                    d.shortcut.passes(tape, node) || d.validator.is_valid(TapeNode::new(tape, node))
                })
        }
        Check::Object(o) => {
            matches!(tape.entry(node), Entry::Object { .. }) && check_object(o, tape, node)
        }
        Check::Integer { min, max } => match tape.entry(node) {
            Entry::Int(n) => (*min..=*max).contains(&n),
            Entry::UInt(n) => i64::try_from(n).is_ok_and(|n| (*min..=*max).contains(&n)),
            Entry::Float(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => {
                // Exact: |f| and both bounds fit an i64, and f is whole.
                (*min as f64..=*max as f64).contains(&f) && (f as i64) >= *min && (f as i64) <= *max
            }
            _ => false,
        },
        Check::Node(n) => {
            let entry = tape.entry(node);
            let kind = kind(entry);
            if n.types & kind == 0 {
                return false;
            }
            n.only_type || check_rest(n, tape, node, entry, kind)
        }
        Check::Any => true,
        Check::Never => false,
        Check::Whole(v) => v.is_valid(TapeNode::new(tape, node)),
    }
}

/// The checks of `n` past its type, for a value of that type.
fn check_rest(n: &NodeCheck, tape: &Tape<'_>, node: u32, entry: Entry, kind: u8) -> bool {
    match entry {
        Entry::Str { .. } | Entry::Owned(_)
            if (n.min_length != 0 || n.max_length != u64::MAX)
                && !text_length_within(tape, node, entry, n.min_length, n.max_length) =>
        {
            return false;
        }
        Entry::Object { .. } => {
            if let Some(o) = &n.object
                && !check_object(o, tape, node)
            {
                return false;
            }
        }
        Entry::Array { .. } => {
            if let Some(a) = &n.array
                && !check_array(a, tape, node)
            {
                return false;
            }
        }
        _ => {}
    }
    if let Some(value) = number(entry) {
        let holds = |bound: Option<Bound>, ok: fn(Ordering) -> bool| {
            bound.is_none_or(|b| b.compare(value).is_some_and(ok))
        };
        if !(holds(n.minimum, Ordering::is_ge)
            && holds(n.maximum, Ordering::is_le)
            && holds(n.exclusive_minimum, Ordering::is_gt)
            && holds(n.exclusive_maximum, Ordering::is_lt))
        {
            return false;
        }
    }
    if let Some(options) = &n.one_of_strings {
        let Some(s) = tape.key_bytes(node) else {
            return false;
        };
        if !options.iter().any(|o| same_bytes(o.as_bytes(), s)) {
            return false;
        }
    }
    if let Some(options) = &n.one_of_values {
        let me = TapeNode::new(tape, node);
        if !options
            .iter()
            .any(|o| jsonschema::json::Node::equals_value(&me, o))
        {
            return false;
        }
    }
    for d in &n.delegated {
        if d.kinds & kind != 0
            && !d.shortcut.passes(tape, node)
            && !d.validator.is_valid(TapeNode::new(tape, node))
        {
            return false;
        }
    }
    true
}

/// Whether the string `entry` (at `node`) has between `min` and `max` characters.
#[inline(always)]
fn text_length_within(tape: &Tape<'_>, node: u32, entry: Entry, min: u64, max: u64) -> bool {
    if let Entry::Str { len, .. } = entry {
        // Each character is one to four bytes: the byte length often settles it.
        let bytes = u64::from(len);
        if min <= bytes.div_ceil(4) && bytes <= max {
            return true;
        }
    }
    tape.str_at(node)
        .is_some_and(|s| length_within(s, min, max))
}

/// Whether `s` has between `min` and `max` characters.
fn length_within(s: &str, min: u64, max: u64) -> bool {
    let bytes = s.len() as u64;
    if bytes < min || bytes.div_ceil(4) > max {
        return false;
    }
    if min <= bytes.div_ceil(4) && bytes <= max {
        return true;
    }
    (min..=max).contains(&(s.chars().count() as u64))
}

fn check_object(o: &ObjectCheck, tape: &Tape<'_>, node: u32) -> bool {
    let Entry::Object { len, .. } = tape.entry(node) else {
        return false;
    };
    let mut found = 0u64;
    let mut key = node + 1;
    for _ in 0..len {
        if !check_member(o, tape, key, key + 1, &mut found) {
            return false;
        }
        key = tape.next(key + 1);
    }
    let mut count = u64::from(len);
    if tape.may_have_added(node) {
        for (k, v) in tape.added_members(node) {
            count += 1;
            if !check_member(o, tape, k, v, &mut found) {
                return false;
            }
        }
    }
    found == o.required
        && o.min_properties.is_none_or(|m| count >= m)
        && o.max_properties.is_none_or(|m| count <= m)
}

/// One member of an object: its name against `propertyNames`, its value against its
/// property or `additionalProperties`; required names found are marked in `found`.
#[inline(always)]
fn check_member(o: &ObjectCheck, tape: &Tape<'_>, key: u32, value: u32, found: &mut u64) -> bool {
    let Some(name) = tape.key_bytes(key) else {
        return false;
    };
    if let Some(names) = &o.property_names
        && !check(names, tape, key)
    {
        return false;
    }
    let applies = match o.find(name) {
        Some(n) => {
            *found |= n.required_mask;
            match n.property {
                NOT_DECLARED => o.additional.as_ref(),
                p => o.properties.get(p as usize),
            }
        }
        None => o.additional.as_ref(),
    };
    // A `match`, not `is_none_or` with a closure: the closure would be a call per member.
    match applies {
        None => true,
        Some(c) => check_inline(c, tape, value),
    }
}

fn check_array(a: &ArrayCheck, tape: &Tape<'_>, node: u32) -> bool {
    let len = u64::from(tape.array_len(node));
    if a.min_items.is_some_and(|m| len < m) || a.max_items.is_some_and(|m| len > m) {
        return false;
    }
    let Some(items) = &a.items else {
        return true;
    };
    let mut at = node + 1;
    for _ in 0..len {
        if !check(items, tape, at) {
            return false;
        }
        at = tape.next(at);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn passes(schema: Value, event: &str) -> bool {
        let mut cache = KeywordCache::new();
        let fast = FastSchema::compile(&schema, &mut cache).expect("compiles");
        let tape = Tape::parse(event).unwrap();
        fast.passes(&tape, 0)
    }

    #[test]
    fn checks_each_keyword_it_takes_apart() {
        let schema = json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["a", "n"],
            "properties": {
                "a": {"type": "string", "maxLength": 3, "minLength": 1},
                "n": {"type": "integer", "minimum": 0, "maximum": 9007199254740991_u64},
                "f": {"type": "number", "exclusiveMaximum": 1.5},
                "e": {"enum": ["x", "y"]},
                "c": {"const": {"k": [1, 2]}},
                "l": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2},
                "m": {"type": "object", "additionalProperties": {"type": "string"}},
                "t": {"type": ["string", "null"]},
                "s": {"type": "string", "enum": ["x", "yy"], "maxLength": 1},
                "d": {"type": "string", "format": "date-time"},
                "p": {"type": "string", "pattern": "^[a-z]{2}$", "minLength": 2}
            }
        });
        let ok = [
            r#"{"a":"abc","n":0}"#,
            r#"{"a":"abc","n":0,"s":"x","d":"2026-11-30T22:15:00.5Z","p":"ab"}"#,
            r#"{"a":"abc","n":0,"d":"2026-11-30T23:15:00+01:00"}"#,
            r#"{"a":"é","n":9007199254740991,"f":1.4,"e":"y","c":{"k":[1,2.0]},"l":[true],"m":{"z":"q"},"t":null}"#,
            r#"{"a":"x","n":3.0}"#,
        ];
        for e in ok {
            assert!(passes(schema.clone(), e), "{e}");
        }
        let bad = [
            r#"{"a":"abcd","n":0}"#,
            r#"{"a":"","n":0}"#,
            r#"{"a":"a"}"#,
            r#"{"a":"a","n":-1}"#,
            r#"{"a":"a","n":9007199254740992}"#,
            r#"{"a":"a","n":1.5}"#,
            r#"{"a":"a","n":1,"f":1.5}"#,
            r#"{"a":"a","n":1,"e":"z"}"#,
            r#"{"a":"a","n":1,"c":{"k":[1]}}"#,
            r#"{"a":"a","n":1,"l":[true,false,true]}"#,
            r#"{"a":"a","n":1,"l":[1]}"#,
            r#"{"a":"a","n":1,"m":{"z":1}}"#,
            r#"{"a":"a","n":1,"t":1}"#,
            r#"{"a":"a","n":1,"extra":1}"#,
            r#"{"a":"a","n":1,"s":"yy"}"#,
            r#"{"a":"a","n":1,"s":"z"}"#,
            r#"{"a":"a","n":1,"s":1}"#,
            r#"{"a":"a","n":1,"d":"2026-11-31T00:00:00Z"}"#,
            r#"{"a":"a","n":1,"d":"yesterday"}"#,
            r#"{"a":"a","n":1,"d":null}"#,
            r#"{"a":"a","n":1,"p":"a1"}"#,
            r#"{"a":"a","n":1,"p":"abc"}"#,
            r#"{"a":"a","n":1,"p":["ab"]}"#,
            r#"[1]"#,
        ];
        for e in bad {
            assert!(!passes(schema.clone(), e), "{e}");
        }
        // The string properties with string keywords take the string check.
        let Ok(Check::Object(o)) = compile(&schema, &mut KeywordCache::default()) else {
            panic!("the schema compiles to an object check");
        };
        for name in ["s", "d", "p"] {
            let n = o.find(name.as_bytes()).expect("declared");
            assert!(
                matches!(o.properties[n.property as usize], Check::Str(_)),
                "{name}"
            );
        }
    }

    #[test]
    fn hands_what_it_does_not_take_apart_to_jsonschema() {
        let schema = json!({
            "properties": {
                "dt": {"type": "string", "format": "date-time"},
                "id": {"type": "string", "pattern": "^[0-9a-z]{4}$"},
                "u": {"type": "array", "uniqueItems": true},
                "any": {"anyOf": [{"type": "string"}, {"type": "integer"}]}
            }
        });
        assert!(passes(
            schema.clone(),
            r#"{"dt":"2026-11-27T12:00:00Z","id":"ab12","u":[1,2],"any":3}"#
        ));
        for bad in [
            r#"{"dt":"yesterday"}"#,
            r#"{"id":"AB12"}"#,
            r#"{"u":[1,1]}"#,
            r#"{"any":1.5}"#,
        ] {
            assert!(!passes(schema.clone(), bad), "{bad}");
        }
    }

    #[test]
    fn names_are_found_whether_or_not_each_has_a_slot_of_its_own() {
        // An object of a few names, as most are: every name sits in its home slot.
        let few = json!({"type": "object", "properties": {
            "action": {}, "action_source": {}, "element_id": {}, "page": {}, "performer": {},
            "meta": {}, "dt": {}, "$schema": {}, "agent": {}, "mediawiki": {}}});
        let mut cache = KeywordCache::new();
        let Ok(Check::Object(o)) = compile(&few, &mut cache) else {
            panic!("an object check");
        };
        assert!(o.perfect);
        assert!(o.find(b"performer").is_some() && o.find(b"performers").is_none());

        // Too many names for that: some share probe chains, and every name is found.
        let many: Vec<String> = (0..200).map(|i| format!("field_{i}")).collect();
        let properties: Map<String, Value> = many
            .iter()
            .map(|n| (n.clone(), json!({"type": "integer"})))
            .collect();
        let schema = json!({"type": "object", "additionalProperties": false,
            "properties": properties, "required": ["field_7", "field_199"]});
        let Ok(Check::Object(o)) = compile(&schema, &mut cache) else {
            panic!("an object check");
        };
        for n in &many {
            assert!(o.find(n.as_bytes()).is_some(), "{n}");
        }
        assert!(o.find(b"field_200").is_none());
        assert!(passes(
            schema.clone(),
            r#"{"field_7":1,"field_199":2,"field_0":3}"#
        ));
        assert!(!passes(schema.clone(), r#"{"field_7":1,"field_199":"x"}"#));
        assert!(!passes(schema.clone(), r#"{"field_7":1}"#));
        assert!(!passes(
            schema,
            r#"{"field_7":1,"field_199":2,"field_200":3}"#
        ));

        // Names alike in length and in their first and last eight bytes hash alike:
        // they share a probe chain, and each is still told apart.
        let schema = json!({"type": "object", "additionalProperties": false,
        "required": ["abcdefgh_x_12345678", "abcdefgh_y_12345678"],
        "properties": {
            "abcdefgh_x_12345678": {"type": "string"},
            "abcdefgh_y_12345678": {"type": "integer"}
        }});
        let Ok(Check::Object(o)) = compile(&schema, &mut cache) else {
            panic!("an object check");
        };
        assert!(!o.perfect);
        assert!(passes(
            schema.clone(),
            r#"{"abcdefgh_x_12345678":"a","abcdefgh_y_12345678":1}"#
        ));
        assert!(!passes(
            schema.clone(),
            r#"{"abcdefgh_x_12345678":1,"abcdefgh_y_12345678":"a"}"#
        ));
        assert!(!passes(
            schema,
            r#"{"abcdefgh_x_12345678":"a","abcdefgh_z_12345678":1}"#
        ));
    }

    #[test]
    fn the_date_time_shortcut_passes_only_what_jsonschema_passes() {
        let mut cache = KeywordCache::new();
        let full = whole_validator(&mut cache, &json!({"format": "date-time"})).unwrap();
        let cases = [
            "2026-11-27T10:15:00.123Z",
            "2026-11-27T10:15:00Z",
            "2024-02-29T23:59:59.999999Z",
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T10:60:00Z",
            "2016-12-31T23:59:60Z",
            "2026-11-27T10:15:00.Z",
            "2026-11-27t10:15:00z",
            "2026-11-27T10:15:00+02:00",
            "2026-11-27T10:15:00",
            "2026-11-27 10:15:00Z",
            "2026-1-27T10:15:00Z",
            "+026-11-27T10:15:00Z",
            "2026-11-27T10:15:00.1a2Z",
            "",
        ];
        for case in cases {
            let text = serde_json::to_string(case).unwrap();
            let tape = Tape::parse(&text).unwrap();
            let quick = utc_date_time(case.as_bytes());
            let exact = full.is_valid(TapeNode::new(&tape, 0));
            assert!(
                !quick || exact,
                "{case}: the shortcut passes what jsonschema refuses"
            );
            // Through the fast path as a whole, the verdict is always jsonschema's.
            let schema = json!({"type": "string", "format": "date-time"});
            assert_eq!(passes(schema, &text), exact, "{case}");
        }
        assert!(utc_date_time(b"2026-11-27T10:15:00.123Z"));
        assert!(!utc_date_time(b"2016-12-31T23:59:60Z"));
        // Mutations of valid date-times: a character changed, dropped or added.
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet = b"0123456789-:.TtZz+ 9";
        for _ in 0..50_000 {
            let mut b = b"2024-02-29T23:59:59.250Z".to_vec();
            for _ in 0..rng.usize(1..=3) {
                let at = rng.usize(..=b.len());
                let c = alphabet[rng.usize(..alphabet.len())];
                match rng.u8(..3) {
                    0 if at < b.len() => b[at] = c,
                    1 if at < b.len() => {
                        b.remove(at);
                    }
                    _ => b.insert(at, c),
                }
            }
            if utc_date_time(&b) {
                let text = serde_json::to_string(std::str::from_utf8(&b).unwrap()).unwrap();
                let tape = Tape::parse(&text).unwrap();
                assert!(full.is_valid(TapeNode::new(&tape, 0)), "{text}");
            }
        }
    }

    #[test]
    fn the_pattern_shortcut_passes_only_what_jsonschema_passes() {
        assert!(matches!(
            Shortcut::for_pattern("^[0-9a-z]{20}$"),
            Shortcut::Run {
                min: 20,
                max: 20,
                ..
            }
        ));
        for other in [
            "^[0-9a-z]{20}",
            "[0-9a-z]{20}$",
            "^[^a]{2}$",
            "^[a-]{2}$",
            "^[z-a]+$",
            "^[0-9a-z]{3,2}$",
            "^[a\\d]+$",
            "^[0-9a-z]{20}$|x",
            "^[a-z]{1}x$",
            "^[.]+$",
        ] {
            assert!(Shortcut::for_pattern(other) == Shortcut::None, "{other}");
        }
        let mut cache = KeywordCache::new();
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet = b"09afzAFZ_-.\n";
        for pattern in [
            "^[0-9a-z]{20}$",
            "^[A-Fa-f0-9]{4,8}$",
            "^[xyz]+$",
            "^[a-c0-2]*$",
        ] {
            let shortcut = Shortcut::for_pattern(pattern);
            assert!(shortcut != Shortcut::None, "{pattern}");
            let full = whole_validator(&mut cache, &json!({"pattern": pattern})).unwrap();
            for _ in 0..20_000 {
                let len = rng.usize(..24);
                let text: String = (0..len)
                    .map(|_| char::from(alphabet[rng.usize(..alphabet.len())]))
                    .collect();
                let json = serde_json::to_string(&text).unwrap();
                let tape = Tape::parse(&json).unwrap();
                let quick = shortcut.passes(&tape, 0);
                let exact = full.is_valid(TapeNode::new(&tape, 0));
                assert!(!quick || exact, "{pattern} {json}");
            }
        }
        // Sixteen at a time and one at a time agree, on runs mostly of the class.
        for pattern in [
            "^[0-9a-z]{20}$",
            "^[A-Fa-f0-9]+$",
            "^[a-c0-2xz]*$",
            "^[acegi]+$",
        ] {
            let Shortcut::Run {
                admitted,
                ranges,
                n,
                ..
            } = Shortcut::for_pattern(pattern)
            else {
                panic!("{pattern}");
            };
            let admits = |c: u8| c < 128 && admitted[usize::from(c >> 6)] & (1 << (c & 63)) != 0;
            let class: Vec<u8> = (0..128).filter(|&c| admits(c)).collect();
            assert_eq!(n == 0, pattern == "^[acegi]+$", "{pattern} has {n} ranges");
            for _ in 0..20_000 {
                let len = rng.usize(..70);
                let b: Vec<u8> = (0..len)
                    .map(|_| match rng.u8(..40) {
                        0 => rng.u8(..),
                        _ => class[rng.usize(..class.len())],
                    })
                    .collect();
                let want = b.iter().all(|&c| admits(c));
                assert_eq!(
                    run_admits(&b, &admitted, &ranges[..n]),
                    want,
                    "{pattern} {b:?}"
                );
            }
        }
        // Through the fast path as a whole, the verdict is always jsonschema's.
        let schema = json!({"type": "string", "pattern": "^[0-9a-z]{20}$"});
        assert!(passes(schema.clone(), r#""3c1f9a02b4e6d8a7c5e1""#));
        assert!(!passes(schema.clone(), r#""3c1f9a02b4e6d8a7c5e""#));
        assert!(!passes(schema, r#""3C1F9A02B4E6D8A7C5E1""#));
    }

    #[test]
    fn a_ref_leaves_the_schema_to_the_full_validator() {
        let mut cache = KeywordCache::new();
        let schema =
            json!({"properties": {"a": {"$ref": "#/definitions/x"}}, "definitions": {"x": {}}});
        assert!(FastSchema::compile(&schema, &mut cache).is_none());
    }
}
