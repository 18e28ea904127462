//! The tape as a JSON representation for the `jsonschema` validator, so that
//! events are validated where they were parsed, with no tree built for them.

use crate::tape::{Entry, Members, Tape};
use jsonschema::JsonType;
use jsonschema::json::{Array, Json, JsonNumber, Node, NodeIdentity, Object, cmp};
use serde_json::Value;
use std::borrow::Cow;

/// Marker type for validators over [`Tape`]s.
pub struct TapeJson;

impl Json for TapeJson {
    type Node<'a> = TapeNode<'a>;
    type PreparedKey = String;
    type StringBuffer = ();

    // Lookups scan the members, so one pass over them always beats several lookups.
    const KEYS_PER_LOOKUP: usize = 1 << 20;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>((): &mut (), string: &str, f: impl FnOnce(TapeNode<'_>) -> T) -> T {
        f(TapeNode::Free(string))
    }
}

/// A value on a tape, or a free-standing string (a member name being validated).
#[derive(Clone, Copy, Debug)]
pub enum TapeNode<'a> {
    /// The entry at an index of a tape.
    At(&'a Tape<'a>, u32),
    /// A string outside any tape.
    Free(&'a str),
}

impl<'a> TapeNode<'a> {
    /// The node of a tape entry.
    pub fn new(tape: &'a Tape<'a>, index: u32) -> Self {
        TapeNode::At(tape, index)
    }

    fn entry(&self) -> Option<Entry> {
        match self {
            TapeNode::At(t, i) => Some(t.entry(*i)),
            TapeNode::Free(_) => None,
        }
    }

    fn str(&self) -> Option<&'a str> {
        match *self {
            TapeNode::At(t, i) => t.str_at(i),
            TapeNode::Free(s) => Some(s),
        }
    }
}

/// A number on a tape.
#[derive(Clone, Copy, Debug)]
pub enum TapeNumber {
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// Anything else.
    Float(f64),
}

impl TapeNumber {
    fn number(&self) -> serde_json::Number {
        match *self {
            TapeNumber::Int(n) => n.into(),
            TapeNumber::UInt(n) => n.into(),
            TapeNumber::Float(f) => serde_json::Number::from_f64(f).unwrap_or_else(|| 0.into()),
        }
    }
}

impl JsonNumber for TapeNumber {
    fn as_u64(&self) -> Option<u64> {
        match *self {
            TapeNumber::UInt(n) => Some(n),
            _ => None,
        }
    }
    fn as_i64(&self) -> Option<i64> {
        match *self {
            TapeNumber::Int(n) => Some(n),
            TapeNumber::UInt(n) => i64::try_from(n).ok(),
            TapeNumber::Float(_) => None,
        }
    }
    fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            TapeNumber::Int(n) => n as f64,
            TapeNumber::UInt(n) => n as f64,
            TapeNumber::Float(f) => f,
        })
    }
    fn as_str(&self) -> Cow<'_, str> {
        Cow::Owned(self.number().to_string())
    }
    fn to_number(&self) -> Cow<'_, serde_json::Number> {
        Cow::Owned(self.number())
    }
    fn is_integer(&self) -> bool {
        match *self {
            TapeNumber::Int(_) | TapeNumber::UInt(_) => true,
            TapeNumber::Float(f) => f.fract() == 0.0,
        }
    }
    fn is_written_as_integer(&self) -> bool {
        !matches!(self, TapeNumber::Float(_))
    }
}

/// An object on a tape.
#[derive(Clone, Copy, Debug)]
pub struct TapeObject<'a>(&'a Tape<'a>, u32);

/// Member iterator of a [`TapeObject`].
pub struct TapeMembers<'a> {
    tape: &'a Tape<'a>,
    inner: Members<'a, 'a>,
}

impl<'a> Iterator for TapeMembers<'a> {
    type Item = (&'a str, TapeNode<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        let (k, v) = self.inner.next()?;
        Some((
            self.tape.str_at(k).unwrap_or_default(),
            TapeNode::At(self.tape, v),
        ))
    }
}

impl<'a> Object<'a, TapeJson> for TapeObject<'a> {
    type Node = TapeNode<'a>;
    type MemberName = &'a str;
    type MembersIter = TapeMembers<'a>;

    fn len(&self) -> usize {
        self.0.object_len(self.1)
    }
    fn get(&self, key: &String) -> Option<TapeNode<'a>> {
        self.0.get(self.1, key).map(|v| TapeNode::At(self.0, v))
    }
    fn members(&self) -> TapeMembers<'a> {
        TapeMembers {
            tape: self.0,
            inner: self.0.members(self.1),
        }
    }
}

/// An array on a tape.
#[derive(Clone, Copy, Debug)]
pub struct TapeArray<'a>(&'a Tape<'a>, u32);

/// Element iterator of a [`TapeArray`].
pub struct TapeElements<'a> {
    tape: &'a Tape<'a>,
    left: u32,
    pos: u32,
}

impl<'a> Iterator for TapeElements<'a> {
    type Item = TapeNode<'a>;
    fn next(&mut self) -> Option<TapeNode<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let node = TapeNode::At(self.tape, self.pos);
        self.pos = self.tape.next(self.pos);
        Some(node)
    }
}

impl<'a> Array<'a, TapeJson> for TapeArray<'a> {
    type Node = TapeNode<'a>;
    type ElementsIter = TapeElements<'a>;

    fn len(&self) -> usize {
        self.0.array_len(self.1) as usize
    }
    fn elements(&self) -> TapeElements<'a> {
        TapeElements {
            tape: self.0,
            left: self.0.array_len(self.1),
            pos: self.1 + 1,
        }
    }
}

impl<'a> Node<'a, TapeJson> for TapeNode<'a> {
    type Object = TapeObject<'a>;
    type Array = TapeArray<'a>;
    type Number = TapeNumber;

    fn as_object(&self) -> Option<TapeObject<'a>> {
        match (*self, self.entry()) {
            (TapeNode::At(t, i), Some(Entry::Object { .. })) => Some(TapeObject(t, i)),
            _ => None,
        }
    }
    fn as_array(&self) -> Option<TapeArray<'a>> {
        match (*self, self.entry()) {
            (TapeNode::At(t, i), Some(Entry::Array { .. })) => Some(TapeArray(t, i)),
            _ => None,
        }
    }
    fn as_string(&self) -> Option<Cow<'a, str>> {
        self.str().map(Cow::Borrowed)
    }
    fn as_number(&self) -> Option<TapeNumber> {
        match self.entry()? {
            Entry::Int(n) => Some(TapeNumber::Int(n)),
            Entry::UInt(n) => Some(TapeNumber::UInt(n)),
            Entry::Float(f) => Some(TapeNumber::Float(f)),
            _ => None,
        }
    }
    fn as_boolean(&self) -> Option<bool> {
        match self.entry()? {
            Entry::Bool(b) => Some(b),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        matches!(self.entry(), Some(Entry::Null))
    }
    fn json_type(&self) -> JsonType {
        match self.entry() {
            None | Some(Entry::Str { .. } | Entry::Owned(_)) => JsonType::String,
            Some(Entry::Null) => JsonType::Null,
            Some(Entry::Bool(_)) => JsonType::Boolean,
            Some(Entry::Int(_) | Entry::UInt(_) | Entry::Float(_)) => JsonType::Number,
            Some(Entry::Array { .. }) => JsonType::Array,
            Some(Entry::Object { .. }) => JsonType::Object,
        }
    }
    fn string_length(&self) -> Option<u64> {
        self.str().map(|s| s.chars().count() as u64)
    }
    fn string_length_within(&self, min: u64, max: u64) -> Option<bool> {
        let s = self.str()?;
        let bytes = s.len() as u64;
        if bytes < min || bytes.div_ceil(4) > max {
            return Some(false);
        }
        if min <= bytes.div_ceil(4) && bytes <= max {
            return Some(true);
        }
        Some((min..=max).contains(&(s.chars().count() as u64)))
    }
    fn equals_value(&self, expected: &Value) -> bool {
        match (self.entry(), expected) {
            (None | Some(Entry::Str { .. } | Entry::Owned(_)), Value::String(e)) => {
                self.str() == Some(e.as_str())
            }
            (None | Some(Entry::Str { .. } | Entry::Owned(_)), _) => false,
            (Some(Entry::Null), e) => e.is_null(),
            (Some(Entry::Bool(b)), e) => e.as_bool() == Some(b),
            (Some(Entry::Int(_) | Entry::UInt(_) | Entry::Float(_)), Value::Number(n)) => self
                .as_number()
                .is_some_and(|mine| cmp::equal_numbers(&mine, n)),
            (Some(Entry::Int(_) | Entry::UInt(_) | Entry::Float(_)), _) => false,
            _ => cmp::equal(&self.to_value(), expected),
        }
    }
    fn to_value(&self) -> Cow<'a, Value> {
        match *self {
            TapeNode::At(t, i) => Cow::Owned(t.to_value(i)),
            TapeNode::Free(s) => Cow::Owned(Value::String(s.to_owned())),
        }
    }
    fn identity(&self) -> Option<NodeIdentity> {
        match *self {
            TapeNode::At(t, i) => Some(NodeIdentity::tagged(std::ptr::from_ref(t) as usize, i)),
            TapeNode::Free(_) => None,
        }
    }
}
