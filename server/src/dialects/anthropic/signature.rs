//! Signatures of `thinking` blocks.
//!
//! Anthropic clients keep the `thinking` blocks of an answer and send them back, unchanged, in
//! the next turn, each with the opaque `signature` the server gave it. The gateway signs the
//! thinking text it streams with HMAC-SHA256 under a per-installation key
//! (`<data_dir>/thinking-signing.key`: 32 random bytes, created owner-only on first start), so
//! that a block sent back can be told apart from one a client wrote or altered.
//!
//! A signature is `b2a1.` followed by the base64url (unpadded) MAC of
//! `"business2api thinking v1\0" + thinking`.

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

/// The key file in the data dir.
pub const KEY_FILE: &str = "thinking-signing.key";
const KEY_LEN: usize = 32;
const PREFIX: &str = "b2a1.";
const DOMAIN: &[u8] = b"business2api thinking v1\0";

/// Signs and verifies thinking text. The key never leaves this type (`Debug` hides it).
#[derive(Clone)]
pub struct ThinkingSigner {
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for ThinkingSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThinkingSigner { key: <redacted> }")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl ThinkingSigner {
    /// A signer with the given key (tests).
    pub fn from_key(key: [u8; KEY_LEN]) -> Self {
        Self { key }
    }

    /// Loads `<data_dir>/thinking-signing.key`, creating it (32 random bytes, mode 0600) when
    /// it does not exist. A key file of another length is an error, never silently replaced:
    /// replacing it would invalidate every signature clients hold.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} holds {} bytes; a thinking-signing key is {KEY_LEN} bytes (delete the file to make a new one)",
                            path.display(),
                            bytes.len()
                        ),
                    )
                })?;
                return Ok(Self { key });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut key = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut key);
        let tmp = path.with_extension("tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(&key)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        Ok(Self { key })
    }

    fn mac(&self, thinking: &str) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail; the fallback keeps it panic-free.
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()));
        mac.update(DOMAIN);
        mac.update(thinking.as_bytes());
        mac
    }

    /// The signature of a thinking text.
    pub fn sign(&self, thinking: &str) -> String {
        let tag = self.mac(thinking).finalize().into_bytes();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Whether `signature` is this installation's signature of `thinking` (constant time).
    pub fn verify(&self, thinking: &str, signature: &str) -> bool {
        let Some(encoded) = signature.trim().strip_prefix(PREFIX) else {
            return false;
        };
        let Ok(tag) = URL_SAFE_NO_PAD.decode(encoded.as_bytes()) else {
            return false;
        };
        self.mac(thinking).verify_slice(&tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_text_and_key() {
        let s = ThinkingSigner::from_key([7; 32]);
        let sig = s.sign("Considering the question.");
        assert!(sig.starts_with("b2a1."));
        assert!(s.verify("Considering the question.", &sig));
        assert!(!s.verify("Considering the question!", &sig));
        assert!(!s.verify("Considering the question.", &sig.replace("b2a1.", "b2a2.")));
        assert!(!s.verify("Considering the question.", "b2a1.AAAA"));
        assert!(!s.verify("Considering the question.", ""));
        let other = ThinkingSigner::from_key([8; 32]);
        assert!(!other.verify("Considering the question.", &sig));
        assert!(!format!("{s:?}").contains('7'));
    }

    #[test]
    fn the_key_is_created_once_owner_only_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = ThinkingSigner::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = ThinkingSigner::load_or_create(dir.path()).unwrap();
        assert!(b.verify("x", &a.sign("x")));
        std::fs::write(&path, b"short").unwrap();
        let e = ThinkingSigner::load_or_create(dir.path()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }
}
