//! Import of account files in the reference format (spec §2.1): `<data_dir>/*.json`, one account
//! per file. Import is idempotent (accounts are keyed by e-mail). A file that cannot be read, or
//! an account that cannot be used, is reported by file name with the reason, never skipped
//! silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use business2api_shared::Secret;
use serde_json::{Map, Value};

use crate::accounts::credentials::SESSION_COOKIE;
use crate::accounts::{Cookie, Credentials, Incoming};
use crate::store::{
    ACCOUNT_SCHEMA_VERSION, AccountRecord, Store, StoreError, StoredCookie, Upsert,
};
use crate::upstream::gemini_business::jwt::csesidx_from_authorization;

/// A file or account that was not taken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The file name (or the account e-mail when the account came from the store).
    pub name: String,
    pub reason: String,
}

/// What a start-up import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// File names that were imported, with what the store did with them.
    pub imported: Vec<(String, Upsert)>,
    /// Files that could not be imported.
    pub rejected: Vec<Rejected>,
}

/// The keys of the reference account file, in the order the reference writes them.
pub(crate) const KNOWN_KEYS: [&str; 9] = [
    "email",
    "fullName",
    "authorization",
    "cookies",
    "cookie_string",
    "response_headers",
    "timestamp",
    "configId",
    "csesidx",
];

fn string_field(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

/// Parses one reference-format account file. `file_name` is recorded as the source.
///
/// Parsing checks the shape and the `email`; whether the account can serve is
/// [`credentials_of`]'s question.
///
/// ```
/// use business2api::pool::import::{credentials_of, parse_account_file};
///
/// // The repository's example account file parses and would be usable.
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/account.example.json");
/// let record = parse_account_file("account.example.json", &std::fs::read(path)?)?;
/// assert_eq!(record.email, "someone@example.com");
/// let credentials = credentials_of(&record, "")?;
/// assert_eq!(credentials.csesidx, "1234567890");
/// assert_eq!(credentials.config_id, "00000000-0000-0000-0000-000000000000");
/// // Cookie values and `authorization` are secrets: debug output never shows them.
/// assert!(!format!("{credentials:?}").contains("REPLACE_ME"));
///
/// // Without the `__Secure-C_SES` cookie an account parses but cannot serve.
/// let bare = br#"{"email": "a@example.com", "csesidx": "1", "configId": "c"}"#;
/// let record = parse_account_file("a.json", bare)?;
/// assert_eq!(credentials_of(&record, "").unwrap_err(), "no `__Secure-C_SES` cookie");
///
/// // An implausible e-mail is refused at once.
/// assert!(parse_account_file("x.json", br#"{"email": "../x@example.com"}"#).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse_account_file(file_name: &str, bytes: &[u8]) -> Result<AccountRecord, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON ({e})"))?;
    let Value::Object(obj) = value else {
        return Err("not a JSON object".to_owned());
    };
    parse_account_object(file_name, &obj)
}

/// Parses one account object of the reference format that is already JSON (an account file's
/// top-level object, or one element of an array of them). `file_name` is recorded as the source.
pub fn parse_account_object(
    file_name: &str,
    obj: &Map<String, Value>,
) -> Result<AccountRecord, String> {
    let email = string_field(obj, "email")?;
    if email.trim().is_empty() {
        return Err("no `email`".to_owned());
    }
    if let Some(reason) = crate::accounts::email::rejection(&email) {
        return Err(reason);
    }
    let mut cookies = Vec::new();
    match obj.get("cookies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Value::Object(c) = item else {
                    return Err(format!("`cookies[{i}]` must be an object"));
                };
                let field =
                    |k: &str| string_field(c, k).map_err(|e| format!("`cookies[{i}]`: {e}"));
                cookies.push(StoredCookie {
                    name: field("name")?,
                    value: Secret::new(field("value")?),
                    domain: field("domain")?,
                });
            }
        }
        Some(_) => return Err("`cookies` must be an array".to_owned()),
    }
    let mut response_headers = BTreeMap::new();
    match obj.get("response_headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (k, v) in h {
                let Value::String(v) = v else {
                    return Err(format!("`response_headers.{k}` must be a string"));
                };
                response_headers.insert(k.clone(), Secret::new(v.clone()));
            }
        }
        Some(_) => return Err("`response_headers` must be an object".to_owned()),
    }
    let cookie_string = match obj.get("cookie_string") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Secret::new(s.clone())),
        Some(_) => return Err("`cookie_string` must be a string".to_owned()),
    };
    // `proxy`: the account's own egress proxy (kept in `extra`, so export writes it back).
    match obj.get("proxy") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.trim().is_empty() => {}
        Some(Value::String(s)) => {
            crate::config::ProxyUrl::parse(s).map_err(|e| format!("`proxy`: {e}"))?;
        }
        Some(_) => return Err("`proxy` must be a string (a proxy URL)".to_owned()),
    }
    let extra: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| !KNOWN_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(AccountRecord {
        schema_version: ACCOUNT_SCHEMA_VERSION,
        email,
        full_name: string_field(obj, "fullName")?,
        authorization: Secret::new(string_field(obj, "authorization")?),
        cookies,
        cookie_string,
        response_headers,
        timestamp: string_field(obj, "timestamp")?,
        config_id: string_field(obj, "configId")?,
        csesidx: string_field(obj, "csesidx")?,
        extra,
        source_file: Some(file_name.to_owned()),
        added_at: None,
        updated_at: None,
    })
}

/// The account's own egress proxy (its file's `proxy`), if it has a valid one.
pub fn proxy_of(record: &AccountRecord) -> Option<crate::config::ProxyUrl> {
    match record.extra.get("proxy") {
        Some(Value::String(s)) if !s.trim().is_empty() => crate::config::ProxyUrl::parse(s).ok(),
        _ => None,
    }
}

/// The upstream credentials of a stored account, or why it cannot be used.
pub fn credentials_of(record: &AccountRecord, default_config: &str) -> Result<Credentials, String> {
    let has_session = record
        .cookies
        .iter()
        .any(|c| c.name == SESSION_COOKIE && !c.value.is_empty());
    if !has_session {
        return Err(
            if record.cookies.is_empty() && record.cookie_string.is_some() {
                "no `__Secure-C_SES` in `cookies` (only `cookie_string` is present; re-export the \
             account with its cookies array)"
                    .to_owned()
            } else {
                "no `__Secure-C_SES` cookie".to_owned()
            },
        );
    }
    let csesidx = if record.csesidx.is_empty() {
        csesidx_from_authorization(record.authorization.expose()).ok_or_else(|| {
            "no `csesidx`, and none can be derived from `authorization`".to_owned()
        })?
    } else {
        record.csesidx.clone()
    };
    let config_id = if record.config_id.is_empty() {
        default_config.to_owned()
    } else {
        record.config_id.clone()
    };
    if config_id.is_empty() {
        return Err("no `configId`, and `default_config` is not set".to_owned());
    }
    Ok(Credentials {
        cookies: record
            .cookies
            .iter()
            .map(|c| Cookie {
                name: c.name.clone(),
                value: c.value.clone(),
                domain: c.domain.clone(),
            })
            .collect(),
        csesidx,
        config_id,
        authorization: record.authorization.clone(),
    })
}

/// The `*.json` files directly in `dir` (not recursive), sorted.
pub(crate) fn json_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Reads every `*.json` directly in `dir` (not recursive): the records it holds, and the files
/// that could not be read or parsed, with the reason. A missing directory holds nothing.
pub fn read_dir(dir: &Path) -> (Vec<Incoming>, Vec<Rejected>) {
    let mut incoming = Vec::new();
    let mut rejected = Vec::new();
    let paths = match json_files_in(dir) {
        Ok(paths) => paths,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (incoming, rejected),
        Err(e) => {
            rejected.push(Rejected {
                name: dir.display().to_string(),
                reason: format!("cannot list the directory: {e}"),
            });
            return (incoming, rejected);
        }
    };
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed = std::fs::read(&path)
            .map_err(|e| format!("cannot be read ({e})"))
            .and_then(|bytes| parse_account_file(&name, &bytes));
        match parsed {
            Ok(record) => incoming.push(Incoming { name, record }),
            Err(reason) => rejected.push(Rejected { name, reason }),
        }
    }
    (incoming, rejected)
}

/// Imports every `*.json` directly in `dir` (not recursive) into the store, through the
/// accounts service's merge ([`crate::accounts::service::merge`]).
pub fn import_dir(dir: &Path, store: &Store) -> Result<ImportReport, StoreError> {
    let (incoming, rejected) = read_dir(dir);
    Ok(crate::accounts::service::merge(store, incoming, rejected, "")?.report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(v: Value) -> Vec<u8> {
        serde_json::to_vec_pretty(&v).unwrap()
    }

    fn good() -> Value {
        json!({
            "email": "a@example.com", "fullName": "A", "authorization": "",
            "cookies": [{"name":"__Secure-C_SES","value":"s","domain":".gemini.google"}],
            "timestamp": "2026-01-01T00:00:00Z", "configId": "cfg", "csesidx": "42",
            "somethingNew": [1,2]
        })
    }

    #[test]
    fn parses_and_keeps_unknown_keys() {
        let r = parse_account_file("a.json", &file(good())).unwrap();
        assert_eq!(r.email, "a@example.com");
        assert_eq!(r.extra["somethingNew"], json!([1, 2]));
        let c = credentials_of(&r, "").unwrap();
        assert_eq!((c.csesidx.as_str(), c.config_id.as_str()), ("42", "cfg"));
    }

    #[test]
    fn unusable_accounts_say_why() {
        let mut v = good();
        v["cookies"] = json!([]);
        v["cookie_string"] = json!("__Secure-C_SES=s");
        let r = parse_account_file("a.json", &file(v)).unwrap();
        assert!(
            credentials_of(&r, "")
                .unwrap_err()
                .contains("only `cookie_string`")
        );

        let mut v = good();
        v["csesidx"] = json!("");
        let r = parse_account_file("a.json", &file(v)).unwrap();
        assert!(credentials_of(&r, "").unwrap_err().contains("csesidx"));

        let mut v = good();
        v["configId"] = json!("");
        let r = parse_account_file("a.json", &file(v)).unwrap();
        assert!(
            credentials_of(&r, "")
                .unwrap_err()
                .contains("default_config")
        );
        assert_eq!(
            credentials_of(&r, "fallback").unwrap().config_id,
            "fallback"
        );
    }

    #[test]
    fn malformed_files_are_rejected_with_a_reason() {
        assert!(
            parse_account_file("x", b"{")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            parse_account_file("x", b"[]")
                .unwrap_err()
                .contains("object")
        );
        assert!(
            parse_account_file("x", &file(json!({"email": ""})))
                .unwrap_err()
                .contains("email")
        );
        assert!(
            parse_account_file("x", &file(json!({"email": "a@b", "cookies": {}})))
                .unwrap_err()
                .contains("array")
        );
    }

    #[test]
    fn import_dir_reports_every_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a@example.com.json"), file(good())).unwrap();
        std::fs::write(dir.path().join("broken.json"), b"nope").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        std::fs::create_dir(dir.path().join("at")).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let report = import_dir(dir.path(), &store).unwrap();
        assert_eq!(
            report.imported,
            vec![("a@example.com.json".to_owned(), Upsert::Inserted)]
        );
        assert_eq!(report.rejected.len(), 1);
        assert_eq!(report.rejected[0].name, "broken.json");
        // Idempotent.
        let again = import_dir(dir.path(), &store).unwrap();
        assert_eq!(
            again.imported,
            vec![("a@example.com.json".to_owned(), Upsert::Unchanged)]
        );
        assert_eq!(store.accounts().unwrap().len(), 1);
    }
}
