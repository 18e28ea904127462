//! Deterministic sampling with Wikimedia's formula: the first 8 hex digits of
//! the sampling unit's id, read as an integer and divided by `0xFFFFFFFF`,
//! keep the unit when the quotient is below the rate. Every edge, and every
//! client library using the same formula, decides the same way for a unit.

/// The unit's position in `[0, 1]`, or `None` when the id does not start with 8 hex digits.
pub fn unit_position(id: &str) -> Option<f64> {
    let head = id.get(..8)?;
    if !head.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let n = u32::from_str_radix(head, 16).ok()?;
    Some(f64::from(n) / f64::from(u32::MAX))
}

/// Whether a unit at `position` is in a sample of `rate`. A rate of 1 keeps
/// everything (the formula alone would drop `ffffffff…`) and 0 keeps nothing.
pub fn position_in_sample(position: f64, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    position < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the unit `id` is in a sample of `rate`; `None` when the id has no 8-hex-digit head.
    fn in_sample(id: &str, rate: f64) -> Option<bool> {
        unit_position(id).map(|p| position_in_sample(p, rate))
    }

    #[test]
    fn wikimedia_formula_vectors() {
        // The same vectors hold for mediawiki.sampling's sessionInSample / the Metrics Platform clients.
        assert_eq!(unit_position("00000000"), Some(0.0));
        assert_eq!(unit_position("ffffffff9a0e2ad4"), Some(1.0));
        assert_eq!(unit_position("7fffffff"), Some(2147483647.0 / 4294967295.0));
        assert_eq!(in_sample("7fffffffabcdef", 0.5), Some(true));
        assert_eq!(in_sample("80000000abcdef", 0.5), Some(false));
        assert_eq!(in_sample("19999999", 0.1), Some(true)); // 0x19999999 / 0xffffffff = 0.0999999998836
        assert_eq!(in_sample("1999999a", 0.1), Some(false)); // 0.1000000001164
        assert_eq!(
            in_sample("3f2a1b4c-0000-4000-8000-000000000000", 0.25),
            Some(true)
        ); // 0.2467
        assert_eq!(in_sample("40f00000", 0.25), Some(false)); // 0.2537
        assert_eq!(in_sample("ffffffff", 1.0), Some(true));
        assert_eq!(in_sample("00000000", 0.0), Some(false));
    }

    /// The vectors `@sluice/client` is tested on too, so that browsers and edges agree.
    #[test]
    fn the_shared_client_vectors_decide_alike() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../clients/vectors.json")).unwrap();
        let cases = doc["sampling"].as_array().unwrap();
        assert!(cases.len() >= 40);
        for case in cases {
            let id = case["id"].as_str().unwrap();
            let rate = case["rate"].as_f64().unwrap();
            assert_eq!(
                in_sample(id, rate),
                case["in_sample"].as_bool(),
                "id {id:?} at rate {rate}"
            );
        }
    }

    #[test]
    fn ids_without_a_hex_head_have_no_position() {
        assert_eq!(unit_position("xyz"), None);
        assert_eq!(unit_position("1234567g"), None);
        assert_eq!(unit_position("é1234567"), None);
    }
}
