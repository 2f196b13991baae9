//! Identifiers on the wire: task ids (chosen by the server) and worker ids (chosen by the worker).
//! Both are opaque to the other side and validated when parsed, so they are safe to log, to use
//! as map keys and to show on the admin surface.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ProtocolError;

/// The longest id, in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// Every id validation message starts with this (so a parse error can name it without quoting
/// the input).
pub(crate) const INVALID_ID_PREFIX: &str = "invalid id:";

/// Why a string is not an id. The messages are fixed texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidId(&'static str);

impl InvalidId {
    pub fn problem(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{INVALID_ID_PREFIX} {}", self.0)
    }
}

impl std::error::Error for InvalidId {}

/// An id is 1 to [`MAX_ID_BYTES`] bytes of ASCII letters, digits, `-`, `_`, `.` and `:`,
/// starting with a letter or a digit.
fn check(s: &str) -> Result<(), InvalidId> {
    let bytes = s.as_bytes();
    let Some(first) = bytes.first() else {
        return Err(InvalidId("empty"));
    };
    if bytes.len() > MAX_ID_BYTES {
        return Err(InvalidId("longer than 64 bytes"));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(InvalidId("must start with a letter or a digit"));
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(InvalidId(
            "only letters, digits, '-', '_', '.' and ':' are allowed",
        ));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `s` as an id.
            pub fn parse(s: &str) -> Result<$name, ProtocolError> {
                check(s).map_err(|e| ProtocolError::Invalid {
                    field: $field,
                    problem: e.problem(),
                })?;
                Ok($name(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;

            fn try_from(s: String) -> Result<$name, InvalidId> {
                check(&s)?;
                Ok($name(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// A task's id, chosen by the server (e.g. `t-` and a UUID). A task keeps its id across
    /// attempts and workers, so a result is applied at most once per id.
    TaskId,
    "task id"
);

id_type!(
    /// A worker's id, chosen by the worker (its configured name, or the host name). One session
    /// per id: a new session with the same id replaces the old one.
    WorkerId,
    "worker id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_safe_shape_only() {
        assert!(TaskId::parse("t-0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d").is_ok());
        assert!(WorkerId::parse("box-1.home:a_b").is_ok());
        let long = "a".repeat(MAX_ID_BYTES + 1);
        for bad in ["", "-x", "a b", "a/b", "é", "a\nb", "a\"b", long.as_str()] {
            assert!(
                matches!(
                    TaskId::parse(bad),
                    Err(ProtocolError::Invalid {
                        field: "task id",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert!(TaskId::parse(&"a".repeat(MAX_ID_BYTES)).is_ok());
    }
}
