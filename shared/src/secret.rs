//! Credentials wrapped so that they cannot leak through `Debug`, `Display` or logs.

use std::collections::BTreeMap;
use std::fmt;

use serde::ser::SerializeMap as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A credential: a cookie value, a JWT, an API key, a proxy password.
///
/// `Debug` and `Display` print `[redacted]`; the value is reachable only through
/// [`Secret::expose`], which makes every use site greppable.
///
/// `Secret` does **not** implement `Serialize`: a struct that derives `Serialize` over a
/// `Secret` does not compile unless the field names one of the explicit functions
/// [`serialize_exposed`], [`serialize_exposed_option`] or [`serialize_exposed_map`]
/// (`#[serde(serialize_with = "...")]`), used only where the value must be written — the
/// store's records and the reference account-file format. Deserialising is allowed (reading a
/// secret leaks nothing).
///
/// Equality ([`PartialEq`]) runs in constant time (SHA-256 digests compared with `subtle`).
///
/// Why not the `secrecy` crate: `SecretString` would give the same redaction and an explicit
/// `expose_secret()`, but its `Serialize` is opt-in through a marker trait on the inner type
/// (not available for `String` without a newtype), it implements no `PartialEq` (every key
/// comparison would need its own constant-time call), and swapping would touch every call site
/// for no gain over this small type, whose whole surface is tested below.
///
/// # Example
///
/// ```
/// use business2api_shared::Secret;
///
/// let cookie = Secret::new("my-session-cookie");
/// // Formatting never shows the value, so a secret inside a logged struct stays hidden…
/// assert_eq!(format!("{cookie:?}"), "Secret([redacted])");
/// assert_eq!(cookie.to_string(), "[redacted]");
/// // …only the explicit, greppable call does.
/// assert_eq!(cookie.expose(), "my-session-cookie");
/// // Comparisons run in constant time.
/// assert!(cookie.matches(b"my-session-cookie"));
/// assert_eq!(cookie, Secret::from("my-session-cookie"));
/// ```
///
/// A struct that derives `Serialize` over a `Secret` without naming how to write it does not
/// compile:
///
/// ```compile_fail,E0277
/// use business2api_shared::Secret;
///
/// #[derive(serde::Serialize)]
/// struct Record {
///     key: Secret,
/// }
/// ```
#[derive(Clone, Default)]
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

/// Constant-time: neither the position of the first difference nor the lengths show in the
/// timing (see [`constant_time_eq`]).
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for Secret {}

/// Writes the secret's real value. Only for the formats that must hold it (the store, the
/// reference account file): `#[serde(serialize_with = "business2api_shared::secret::serialize_exposed")]`.
///
/// ```
/// use business2api_shared::Secret;
///
/// #[derive(serde::Serialize)]
/// struct Record {
///     #[serde(serialize_with = "business2api_shared::secret::serialize_exposed")]
///     key: Secret,
/// }
///
/// let record = Record { key: Secret::new("abc") };
/// assert_eq!(serde_json::to_string(&record)?, r#"{"key":"abc"}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn serialize_exposed<S: Serializer>(secret: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose())
}

/// [`serialize_exposed`] for an optional secret (`None` is written as `null`).
pub fn serialize_exposed_option<S: Serializer>(
    secret: &Option<Secret>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(s) => serializer.serialize_some(s.expose()),
        None => serializer.serialize_none(),
    }
}

/// [`serialize_exposed`] for a map of secrets (the values are written; keys as they are).
pub fn serialize_exposed_map<K: Serialize, S: Serializer>(
    map: &BTreeMap<K, Secret>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut m = serializer.serialize_map(Some(map.len()))?;
    for (k, v) in map {
        m.serialize_entry(k, v.expose())?;
    }
    m.end()
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
    fn the_named_functions_write_the_real_value_and_it_reads_back() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Record {
            #[serde(serialize_with = "serialize_exposed")]
            key: Secret,
            #[serde(serialize_with = "serialize_exposed_option")]
            maybe: Option<Secret>,
            #[serde(serialize_with = "serialize_exposed_option")]
            none: Option<Secret>,
            #[serde(serialize_with = "serialize_exposed_map")]
            headers: BTreeMap<String, Secret>,
        }
        let record = Record {
            key: Secret::new("abc"),
            maybe: Some(Secret::new("def")),
            none: None,
            headers: BTreeMap::from([("x-auth".to_owned(), Secret::new("ghi"))]),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"key":"abc","maybe":"def","none":null,"headers":{"x-auth":"ghi"}}"#
        );
        let back: Record = serde_json::from_str(&json).unwrap();
        assert_eq!(back.key.expose(), "abc");
        assert_eq!(back.maybe.unwrap().expose(), "def");
        assert!(back.none.is_none());
        assert_eq!(back.headers["x-auth"].expose(), "ghi");
        // Debug and Display of the same values stay redacted.
        let shown = format!("{:?} {} {:?}", back.key, back.key, back.headers);
        assert!(!shown.contains("abc") && !shown.contains("ghi"), "{shown}");
    }

    #[test]
    fn equality_compares_values() {
        assert_eq!(Secret::new("same"), Secret::new("same"));
        assert_ne!(Secret::new("same"), Secret::new("same "));
        assert_ne!(Secret::new("a"), Secret::new(""));
        assert_eq!(Secret::default(), Secret::new(""));
        assert_eq!(vec![Secret::new("x")], vec![Secret::new("x")]);
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
