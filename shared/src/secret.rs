//! Credentials wrapped so that they cannot leak through `Debug`, `Display` or logs.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A credential: a cookie value, a JWT, an API key, a proxy password.
///
/// `Debug` and `Display` print `[redacted]`; the value is reachable only through
/// [`Secret::expose`], which makes every use site greppable. Serialisation writes the real value,
/// because secrets must be persisted; never serialise a `Secret` into a log line or an HTTP body
/// meant for clients.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value. Call only where the value is sent to the party it belongs to.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares with `candidate` in time independent of where they differ and of their lengths
    /// (both sides are hashed first, so only digests of equal length are compared).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

/// Constant-time equality of two byte strings of any lengths: both are hashed with SHA-256 and
/// the digests compared with [`subtle`], so neither the position of the first difference nor the
/// length of the secret shows in the timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let da = Sha256::digest(a);
    let db = Sha256::digest(b);
    da.as_slice().ct_eq(db.as_slice()).into()
}

/// Whether `candidate` equals any of `secrets`. Every secret is compared (no early exit), so the
/// timing does not reveal which one matched or how many there are before it.
pub fn matches_any<'a>(secrets: impl IntoIterator<Item = &'a Secret>, candidate: &[u8]) -> bool {
    let digest = Sha256::digest(candidate);
    let mut found = subtle::Choice::from(0u8);
    for secret in secrets {
        let d = Sha256::digest(secret.expose().as_bytes());
        found |= d.as_slice().ct_eq(digest.as_slice());
    }
    found.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{s:?}{s}").contains("very"));
    }

    #[test]
    fn serde_round_trips_the_real_value() {
        let s = Secret::new("abc");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"abc\"");
        let back: Secret = serde_json::from_str(&json).unwrap();
        assert_eq!(back.expose(), "abc");
    }

    #[test]
    fn comparisons() {
        let a = Secret::new("key-one");
        let b = Secret::new("key-two");
        assert!(a.matches(b"key-one"));
        assert!(!a.matches(b"key-one "));
        assert!(!a.matches(b""));
        assert!(matches_any([&a, &b], b"key-two"));
        assert!(!matches_any([&a, &b], b"key-three"));
        assert!(!matches_any([], b"key-three"));
    }
}
