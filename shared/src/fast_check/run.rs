//! Running compiled checks straight on the tape: each object's members
//! walked once, a member's check inlined into the walk.

use super::names::NOT_DECLARED;
use super::*;

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

pub(super) fn check(c: &Check, tape: &Tape<'_>, node: u32) -> bool {
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
