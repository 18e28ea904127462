//! Shared secrets that edges present to aggregators: compared in constant
//! time, so that how long a refusal takes says nothing about the token.

use std::sync::Arc;
use subtle::ConstantTimeEq;

/// A token that requests must present; cheap to clone, never printed.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// The token `secret`.
    pub fn new(secret: &str) -> Self {
        Token(Arc::from(secret))
    }

    /// The secret itself, to present it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is the token, in time independent of where they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(given).into()
    }

    /// Whether an `Authorization` header value is `Bearer <the token>`.
    pub fn matches_bearer(&self, header: Option<&[u8]>) -> bool {
        header
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .is_some_and(|given| self.matches(given))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let t = Token::new("edge-secret");
        assert!(t.matches(b"edge-secret"));
        for wrong in [&b""[..], b"edge-secre", b"edge-secret!", b"Edge-secret"] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
        assert!(t.matches_bearer(Some(b"Bearer edge-secret")));
        assert!(!t.matches_bearer(Some(b"Basic edge-secret")));
        assert!(!t.matches_bearer(Some(b"Bearer  edge-secret")));
        assert!(!t.matches_bearer(None));
        assert_eq!(format!("{t:?}"), "Token(…)");
    }
}
