//! Account identity shared by the server and its workers.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The key of an account: its e-mail address, trimmed and lower-cased. Two spellings of one
/// address are one account. Cheap to clone (shared string).
///
/// An e-mail address is personal data: log accounts by [`AccountKey::label`], not by key.
///
/// ```
/// use business2api_shared::AccountKey;
///
/// let key = AccountKey::new("  Alice@Example.COM ");
/// assert_eq!(key.as_str(), "alice@example.com");
/// assert_eq!(key, AccountKey::new("alice@example.com"));
///
/// // What logs show instead of the address: stable, and not the address.
/// let label = key.label();
/// assert!(label.starts_with("acct-") && label.len() == 13);
/// assert_eq!(label, AccountKey::new("ALICE@example.com").label());
/// assert!(!format!("{key:?}").contains("alice"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountKey(Arc<str>);

impl AccountKey {
    /// Normalises an e-mail address into a key.
    pub fn new(email: &str) -> AccountKey {
        AccountKey(Arc::from(email.trim().to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A stable, non-identifying label for logs: `acct-` and 8 hex digits of the SHA-256 of the
    /// key.
    pub fn label(&self) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(self.0.as_bytes());
        let mut out = String::from("acct-");
        for b in &digest[..4] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

impl fmt::Debug for AccountKey {
    // The label, not the address: keys end up in debug output of larger structs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountKey({})", self.label())
    }
}

impl AsRef<str> for AccountKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for AccountKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for AccountKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AccountKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| AccountKey::new(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_address_are_one_key() {
        assert_eq!(
            AccountKey::new(" Alice@Example.COM "),
            AccountKey::new("alice@example.com")
        );
        assert_eq!(
            AccountKey::new("Alice@Example.com").as_str(),
            "alice@example.com"
        );
    }

    #[test]
    fn label_is_stable_and_hides_the_address() {
        let k = AccountKey::new("alice@example.com");
        let label = k.label();
        assert!(label.starts_with("acct-") && label.len() == 13, "{label}");
        assert_eq!(label, AccountKey::new("ALICE@example.com").label());
        assert!(!format!("{k:?}").contains("alice"));
    }

    #[test]
    fn deserialising_normalises() {
        let k: AccountKey = serde_json::from_str("\"Bob@X.org\"").unwrap();
        assert_eq!(k.as_str(), "bob@x.org");
    }
}
