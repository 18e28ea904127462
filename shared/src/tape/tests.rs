//! The parser against what intake needs: scans, repeats, numbers, depth, spans and splices.

use super::parse::KEYS_CHECKED_AS_THEY_COME;
use super::scan::{SPECIAL, fingerprint, key_bit, scan_plain, special16, special16_words};
use super::*;
use serde_json::{Value, json};

#[test]
fn the_string_scan_stops_at_the_first_quote_backslash_or_control_byte() {
    // Every byte value at every position of the sixteen-byte, eight-byte and
    // one-byte steps, behind plain ASCII and behind multi-byte UTF-8.
    for filler in [b'a', 0xc3] {
        for len in [1usize, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = vec![filler; len];
                    bytes[at] = b;
                    let want = bytes
                        .iter()
                        .position(|&c| SPECIAL[c as usize])
                        .unwrap_or(len);
                    for from in [0, 3.min(len)] {
                        // Only the byte at `at` can be special: before `from`, it is skipped.
                        let want = if want >= from { want } else { len };
                        let got = scan_plain(&bytes, from);
                        assert_eq!(got, want, "byte {b:#04x} at {at} of {len}, from {from}");
                    }
                }
            }
        }
    }
}

#[test]
fn both_ways_of_scanning_sixteen_bytes_find_the_same_first_byte() {
    let mut rng = fastrand::Rng::with_seed(16);
    for _ in 0..200_000 {
        let mut chunk = [0u8; 16];
        // Mostly printable bytes, with a few of every kind.
        for b in &mut chunk {
            *b = if rng.u8(..8) == 0 {
                rng.u8(..)
            } else {
                rng.u8(b' '..=b'~')
            };
        }
        let (fast, words) = (special16(&chunk), special16_words(&chunk));
        assert_eq!(fast.trailing_zeros(), words.trailing_zeros(), "{chunk:?}");
        assert_eq!(fast == 0, words == 0, "{chunk:?}");
    }
}

fn body(src: &str) -> Result<(Tape<'_>, Vec<EventSpan>), TapeError> {
    Tape::parse_body(src, 100)
}

#[test]
fn parses_like_serde_json() {
    let src = r#"{"a":[1,-2,3.5,1e3,18446744073709551615,-9223372036854775808,123456789012345678901234],"b":{"c":null,"d":true,"e":false},"s":"x\"y\u00e9\ud83e\udd80\n","":{}}"#;
    let tape = Tape::parse(src).unwrap();
    let expected: Value = serde_json::from_str(src).unwrap();
    assert_eq!(tape.to_value(0), expected);
    // Numbers at the edges of each way they are read. (Not `-0`: serde_json reads it
    // as a float, the tape as the integer 0, which JSON Schema takes alike.)
    for n in [
        "0",
        "7",
        "-7",
        "1234567890123456789",
        "9999999999999999999",
        "-9223372036854775808",
        "-9223372036854775809",
        "10000000000000000000",
        "18446744073709551616",
        "99999999999999999999",
        "0.5",
        "-0.0",
        "1E+2",
        "12e-1",
        "5e0",
        "123.456e7",
    ] {
        let src = format!(r#"{{"n":{n},"m":[{n}]}}"#);
        let tape = Tape::parse(&src).unwrap();
        let expected: Value = serde_json::from_str(&src).unwrap();
        assert_eq!(tape.to_value(0), expected, "{n}");
    }
}

#[test]
fn white_space_is_taken_wherever_json_allows_it() {
    let tokens = [
        "{", r#""a""#, ":", "[", "1", ",", "{", r#""b""#, ":", r#""c d""#, "}", ",", "[", "]", ",",
        "{", "}", "]", ",", r#""e""#, ":", "{", r#""f""#, ":", "null", ",", r#""g""#, ":", "[",
        "true", ",", "false", ",", "-2.5e3", "]", "}", "}",
    ];
    let expected: Value = serde_json::from_str(&tokens.concat()).unwrap();
    // Each kind of white space, in runs, between every two tokens.
    for ws in [" ", "\n", "\r\n", "\t", " \t\n "] {
        let spaced = format!("{ws}{}{ws}", tokens.join(ws));
        let tape = Tape::parse(&spaced).unwrap_or_else(|e| panic!("{e}: {spaced:?}"));
        assert_eq!(tape.to_value(0), expected, "{spaced:?}");
        let body = format!("{ws}[{ws}{spaced}{ws},{ws}{spaced}{ws}]{ws}");
        let (tape, spans) = Tape::parse_body(&body, 10).unwrap();
        assert_eq!(spans.len(), 2);
        for span in &spans {
            assert_eq!(&body[span.start..span.end], spaced.trim(), "{body:?}");
            assert_eq!(tape.to_value(span.node), expected);
        }
    }
    // White space inside a string is its text; a bare one where a token belongs is not JSON.
    assert!(Tape::parse(r#"{"a" "b"}"#).is_err());
    assert!(Tape::parse(r#"{"a":1 "b":2}"#).is_err());
    assert!(Tape::parse("[1 2]").is_err());
    assert!(Tape::parse("{ }").is_ok() && Tape::parse("[ ]").is_ok());
}

#[test]
fn kept_vectors_carry_nothing_into_the_next_parse() {
    // A larger tape with escapes and added members, then smaller ones on the same
    // thread: each sees only its own text.
    let mut big = Tape::parse(r#"{"a":"x\ny","b":[1,2,3],"c":{"d":"e\u00e9"}}"#).unwrap();
    big.add_string(0, "added", "value");
    drop(big);
    for src in [r#"{"k":"v"}"#, "[]", r#"{"s":"\"q\""}"#] {
        let tape = Tape::parse(src).unwrap();
        let expected: Value = serde_json::from_str(src).unwrap();
        assert_eq!(tape.to_value(0), expected);
    }
    // Two tapes alive at once do not share vectors.
    let (one, two) = (
        Tape::parse(r#"{"a":1}"#).unwrap(),
        Tape::parse("[true]").unwrap(),
    );
    assert_eq!(one.to_value(0), serde_json::json!({"a": 1}));
    assert_eq!(two.to_value(0), serde_json::json!([true]));
}

#[test]
fn an_events_key_bits_find_what_walking_it_finds() {
    let many: Vec<String> = (0..=KEYS_CHECKED_AS_THEY_COME)
        .map(|i| format!(r#""k{i}":{i}"#))
        .collect();
    let many = format!("{{{}}}", many.join(","));
    let src = format!(
        r#"[{{"a":1,"b":{{"c":{{"d":2}}}},"e":[{{"f":3}}],"\u0067":4}}, 5, {{"h":{{}}}}, [{{"i":1}}], {many}, {{}}]"#
    );
    let (mut tape, spans) = body(&src).unwrap();
    assert_eq!(spans.len(), 6);
    // Every bit is set where not every top-level key is known: not an object, too many keys.
    for i in [1, 3, 4] {
        assert_eq!(spans[i].keys, u128::MAX, "event {i}");
    }
    let (single, one) = body(r#" {"x":{"y":1},"z":[{"w":2}]} "#).unwrap();
    let mut names: Vec<String> = [
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "x", "y", "z", "w",
    ]
    .map(String::from)
    .to_vec();
    names.extend((0..40).map(|i| format!("k{i}")));
    names.extend(["", "meta", "http", "aa", "b\\", "\\u0067"].map(String::from));
    let agree = |tape: &Tape<'_>, span: &EventSpan| {
        for name in &names {
            assert_eq!(
                tape.get_keyed(span.node, name, span.keys),
                tape.get(span.node, name),
                "{name} in the event at {}",
                span.start
            );
        }
    };
    agree(&single, &one[0]);
    for span in &spans {
        agree(&tape, span);
    }
    // Added members are found whatever the bits say.
    let first = spans[0].node;
    tape.add_string(first, "http", "added");
    let http = tape.get_keyed(first, "http", spans[0].keys);
    assert_eq!(http.and_then(|i| tape.str_at(i)), Some("added"));
    for span in &spans {
        agree(&tape, span);
    }
}

#[test]
fn records_event_spans_in_arrays() {
    let src = r#" [ {"a":1} , {"b":[{"c":2}]},3 ] "#;
    let (tape, spans) = body(src).unwrap();
    let texts: Vec<&str> = spans.iter().map(|s| &src[s.start..s.end]).collect();
    assert_eq!(texts, [r#"{"a":1}"#, r#"{"b":[{"c":2}]}"#, "3"]);
    assert_eq!(tape.to_value(spans[1].node), json!({"b":[{"c":2}]}));
    let (_, one) = body(r#"  {"x":1}  "#).unwrap();
    assert_eq!(
        one,
        vec![EventSpan {
            node: 0,
            start: 2,
            end: 9,
            problem: None,
            keys: key_bit(fingerprint(b"x")),
        }]
    );
}

#[test]
fn refuses_what_intake_must_refuse() {
    let cases = [
        (r#"{"a":1,"a":2}"#, "duplicate key `a`"),
        (r#"{"b":{"k":1,"x":2,"k":3}}"#, "duplicate key `k`"),
        (r#"{"a\u0062":1,"ab":2}"#, "duplicate key `ab`"),
        ("[NaN]", "expected a value"),
        ("[Infinity]", "expected a value"),
        ("[1e400]", "number `1e400` is out of range"),
        ("[01]", "leading zero"),
        ("[1.]", "expected digits after"),
        ("{\"a\":\"\u{1}\"}", "control character"),
        ("{\"a\":\"tab\there\"}", "control character"),
        (
            "{\"a\":\"long enough to scan by words\u{7f}\u{1f}\"}",
            "control character",
        ),
        ("{\"a\":\"ééééééé\u{0}\"}", "control character"),
        (r#"{"a":"\ud800"}"#, "lone leading surrogate"),
        (r#"{"a":"\x"}"#, "invalid escape"),
        (r#"{"a":1} x"#, "trailing characters"),
        (r#"{"a":1"#, "unexpected end of input"),
        (r#"{"a" 1}"#, "expected `:`"),
        (r#"{1:2}"#, "expected a string key"),
    ];
    for (src, expected) in cases {
        let err = Tape::parse(src).unwrap_err();
        assert!(err.message.contains(expected), "{src}: {err}");
    }
}

#[test]
fn confines_duplicate_keys_and_huge_numbers_to_their_event() {
    let src = r#"[{"a":1},{"b":{"k":1,"k":2}},{"n":1e400},{"c":3}]"#;
    let (_, spans) = body(src).unwrap();
    let problems: Vec<Option<&str>> = spans.iter().map(|s| s.problem.as_deref()).collect();
    assert_eq!(problems[0], None);
    assert!(problems[1].unwrap().contains("duplicate key `k`"));
    assert!(
        problems[2]
            .unwrap()
            .contains("number `1e400` is out of range")
    );
    assert_eq!(problems[3], None);
}

#[test]
fn finds_a_repeated_key_wherever_it_is_and_only_then() {
    // Keys alike in length and head (so their fingerprints meet), escaped keys, and
    // members whose values are objects, in objects below and above the size at which
    // keys stop being checked as they come.
    let key = |n: usize| match n % 4 {
        0 => format!("session_id_{n}"),
        1 => format!("k{n}"),
        2 => format!("a\\u0062_{n}"),
        _ => format!("performer_field_with_a_long_shared_prefix_{n}"),
    };
    for size in [1, 2, 5, 14, 31, 32, 33, 40, 80] {
        for repeat in [None, Some(0), Some(size / 2), Some(size - 1)] {
            let mut members: Vec<String> = (0..size)
                .map(|n| format!(r#""{}":{{"x":{n},"y":[1,{{"z":true}}]}}"#, key(n)))
                .collect();
            if let Some(r) = repeat {
                members.push(format!(r#""{}":null"#, key(r)));
            }
            let src = format!(r#"[{{"first":1}},{{{}}},{{"last":2}}]"#, members.join(","));
            let (_, spans) = body(&src).unwrap();
            let problem = spans[1].problem.as_deref();
            match repeat {
                None => assert_eq!(problem, None, "size {size}"),
                Some(r) => {
                    let text = key(r).replace("\\u0062", "b");
                    let message = format!("duplicate key `{text}`");
                    assert!(
                        problem.is_some_and(|p| p.contains(&message)),
                        "size {size}, repeat of {r}: {problem:?}"
                    );
                }
            }
            assert_eq!(spans[0].problem, None);
            assert_eq!(spans[2].problem, None);
        }
    }
}

#[test]
fn bounds_nesting_without_recursion() {
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let err = Tape::parse(&deep).unwrap_err();
    assert!(err.message.contains("deeper than 128"), "{err}");
    let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
    assert!(Tape::parse(&ok).is_ok());
}

#[test]
fn counts_events_against_the_limit() {
    let err = Tape::parse_body("[1,2,3]", 2).unwrap_err();
    assert!(err.too_many_events);
    assert!(Tape::parse_body("[1,2]", 2).is_ok());
}

#[test]
fn error_positions_are_lines_and_columns() {
    let src = "{\n  \"a\": tru\n}";
    let err = Tape::parse(src).unwrap_err();
    assert_eq!(err.line_column(src), (2, 8));
}

#[test]
fn members_added_to_many_objects_are_spliced_into_each() {
    // Objects at every depth and in every order get members: from one to past the
    // handful that splicing sorts in place.
    for count in [1usize, 2, 7, 8, 9, 12] {
        let inner: Vec<String> = (0..12).map(|i| format!(r#""o{i}":{{"v":{i}}}"#)).collect();
        let src = format!(
            r#"{{"a":[{{}},{{"b":{{}}}}],{},"z":{{}}}}"#,
            inner.join(",")
        );
        let mut tape = Tape::parse(&src).unwrap();
        let mark = tape.ext_mark();
        let mut expected: Value = serde_json::from_str(&src).unwrap();
        // The last objects first, so that the members come in no order of place.
        for i in (0..count).rev() {
            let key = format!("o{}", (i * 5) % 12);
            let object = tape.get(0, &key).unwrap();
            tape.add_string(object, "added", &key);
            expected[&key]["added"] = json!(key);
        }
        let z = tape.get(0, "z").unwrap();
        tape.add_string(z, "k", "v");
        expected["z"]["k"] = json!("v");
        let first = tape.get_path(0, &["a"]).map(|a| a + 1).unwrap();
        tape.add_string(first, "in", "array");
        expected["a"][0]["in"] = json!("array");
        let spliced = tape.splice(0, src.len(), mark);
        let v: Value = serde_json::from_str(&spliced).unwrap();
        assert_eq!(v, expected, "{count} objects: {spliced}");
    }
}

#[test]
fn added_members_are_seen_and_spliced() {
    let src = r#"{"q\"":"}{","meta":{"stream":"s"},"n":[{"meta":1}]}"#;
    let mut tape = Tape::parse(src).unwrap();
    let mark = tape.ext_mark();
    let meta = tape.get(0, "meta").unwrap();
    tape.add_string(meta, "id", "i\"d");
    let http = tape.add_object(0, "http");
    tape.add_string(http, "ua", "Mozilla\n");
    tape.add_string(
        http,
        "raw",
        "bell\u{7}, quote \" and slash \\ past eight bytes",
    );
    assert_eq!(tape.object_len(0), 4);
    assert_eq!(tape.object_len(http), 2);
    assert_eq!(
        tape.get_path(0, &["http", "ua"])
            .and_then(|i| tape.str_at(i)),
        Some("Mozilla\n")
    );
    let spliced = tape.splice(0, src.len(), mark);
    let v: Value = serde_json::from_str(&spliced).unwrap();
    assert_eq!(v, tape.to_value(0));
    assert_eq!(v["meta"], json!({"id": "i\"d", "stream": "s"}));
    assert_eq!(v["http"]["ua"], "Mozilla\n");
    assert_eq!(v["n"][0]["meta"], 1);

    let mut empty = Tape::parse("{}").unwrap();
    let meta = empty.add_object(0, "meta");
    empty.add_string(meta, "dt", "t");
    assert_eq!(empty.splice(0, 2, 0), r#"{"meta":{"dt":"t"}}"#);
}
