//! The fast path takes apart what it claims to, and never passes what jsonschema refuses.

use super::compile::whole_validator;
use super::shortcut::{run_admits, utc_date_time};
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
