//! The admin password: an argon2id PHC hash in `<data_dir>/admin_password` (mode 0600, written
//! atomically). Hashing and checking cost tens of milliseconds of CPU on purpose: call them
//! from a blocking thread, never on an HTTP worker.

use std::path::{Path, PathBuf};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// The file the hash is stored in, inside the data dir.
pub const PASSWORD_FILE: &str = "admin_password";
/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// The longest password accepted, in bytes (hashing cost must not depend on the client).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Where the hash lives.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(PASSWORD_FILE)
}

/// Why a password cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("the password must be at least {MIN_PASSWORD_CHARS} characters long")]
    TooShort,
    #[error("the password must be at most {MAX_PASSWORD_BYTES} bytes long")]
    TooLong,
}

/// Checks the length rules.
pub fn acceptable(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

fn argon2() -> Argon2<'static> {
    // OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane) = the crate's defaults.
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// The argon2id PHC string of `password` with a random salt.
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` matches the PHC string `phc` (argon2 compares in constant time).
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    match PasswordHash::new(phc.trim()) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The stored hash, `None` when no password is set (no file, or an empty one).
pub fn load(data_dir: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path(data_dir)) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a password is set.
pub fn is_set(data_dir: &Path) -> std::io::Result<bool> {
    load(data_dir).map(|h| h.is_some())
}

/// Hashes `password` and stores it (mode 0600, temp file + rename), replacing any earlier one.
pub fn store(data_dir: &Path, password: &str) -> Result<(), String> {
    acceptable(password).map_err(|e| e.to_string())?;
    let phc = hash(password)?;
    crate::auth::write_secret_file(&path(data_dir), &phc)
        .map_err(|e| format!("cannot write {}: {e}", path(data_dir).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_password_verifies_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        assert_eq!(
            store(dir.path(), "short").unwrap_err(),
            PasswordError::TooShort.to_string()
        );
        store(dir.path(), "correct horse battery").unwrap();
        let phc = load(dir.path()).unwrap().unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(!phc.contains("correct"));
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("correct horse batterz", &phc));
        assert!(!verify("correct horse battery", "not a hash"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(acceptable(&"x".repeat(2000)), Err(PasswordError::TooLong));
        assert_eq!(acceptable("ééééééééé"), Err(PasswordError::TooShort));
        assert_eq!(acceptable("éééééééééé"), Ok(()));
    }
}
