//! Persistence in redb: the embedded default storage, one file `business2api.redb` in the data
//! dir. Every record carries a schema version. redb commits are crash-safe (copy-on-write with
//! fsync on commit), so a record is either wholly written or not at all.
//!
//! Calls here block on disk I/O: call them at start-up or from `spawn_blocking`, never on an
//! actix worker thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use business2api_shared::Secret;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

mod accounts;

/// Accounts, keyed by lower-cased e-mail address; values are JSON [`AccountRecord`]s.
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");

/// The current version of [`AccountRecord`].
pub const ACCOUNT_SCHEMA_VERSION: u32 = 1;

/// The database file name inside the data dir.
pub const DB_FILE: &str = "business2api.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
    #[error("a stored record cannot be read: {0}")]
    Corrupt(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.into()) }
        }
    )*};
}
db_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// One cookie as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCookie {
    pub name: String,
    pub value: Secret,
    pub domain: String,
}

/// An account as persisted: every field of the reference account file (spec §2.1), kept as it
/// was so that export reproduces the file, plus our own bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub schema_version: u32,
    pub email: String,
    #[serde(default)]
    pub full_name: String,
    #[serde(default)]
    pub authorization: Secret,
    #[serde(default)]
    pub cookies: Vec<StoredCookie>,
    #[serde(default)]
    pub cookie_string: Option<Secret>,
    #[serde(default)]
    pub response_headers: BTreeMap<String, Secret>,
    #[serde(default)]
    pub timestamp: String,
    /// `configId` as written in the file (may be empty; `default_config` then applies).
    #[serde(default)]
    pub config_id: String,
    /// `csesidx` as written in the file (may be empty; derived from `authorization` then).
    #[serde(default)]
    pub csesidx: String,
    /// Keys of the file we do not know, kept for a lossless export.
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The file the account was imported from, if any.
    #[serde(default)]
    pub source_file: Option<String>,
}

impl AccountRecord {
    /// The key of the record: the lower-cased e-mail address.
    pub fn key(&self) -> String {
        self.email.trim().to_lowercase()
    }
}

/// Reads a stored record of any known schema version.
fn decode_account(bytes: &[u8]) -> Result<AccountRecord, StoreError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let version = value
        .get("schema_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    match version {
        1 => serde_json::from_value(value).map_err(|e| StoreError::Corrupt(e.to_string())),
        v => Err(StoreError::Corrupt(format!(
            "account record schema version {v} is not supported by this build"
        ))),
    }
}

/// A stored account, or why its record cannot be read, keyed by lower-cased e-mail.
pub type StoredAccount = (String, Result<AccountRecord, StoreError>);

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Inserted,
    Updated,
    Unchanged,
}

/// The persistence facade.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|source| StoreError::Open { path, source })?;
        let tx = db.begin_write()?;
        tx.open_table(ACCOUNTS)?;
        tx.commit()?;
        Ok(Store { db })
    }

    /// Inserts or replaces an account; writing nothing when the stored record is identical.
    pub fn upsert_account(&self, record: &AccountRecord) -> Result<Upsert, StoreError> {
        let key = record.key();
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let tx = self.db.begin_write()?;
        let outcome = {
            let mut table = tx.open_table(ACCOUNTS)?;
            let existing = table.get(key.as_str())?.map(|v| v.value().to_vec());
            match existing {
                Some(old) if old == bytes => Upsert::Unchanged,
                old => {
                    table.insert(key.as_str(), bytes.as_slice())?;
                    if old.is_some() {
                        Upsert::Updated
                    } else {
                        Upsert::Inserted
                    }
                }
            }
        };
        if outcome == Upsert::Unchanged {
            tx.abort()?;
        } else {
            tx.commit()?;
        }
        Ok(outcome)
    }

    /// Every stored account, in key order. A record that cannot be read is returned as an error
    /// next to its key rather than failing the whole listing.
    pub fn accounts(&self) -> Result<Vec<StoredAccount>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ACCOUNTS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_owned(), decode_account(v.value())));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(email: &str) -> AccountRecord {
        AccountRecord {
            schema_version: ACCOUNT_SCHEMA_VERSION,
            email: email.into(),
            full_name: "A".into(),
            authorization: Secret::new("Bearer x"),
            cookies: vec![StoredCookie {
                name: "__Secure-C_SES".into(),
                value: Secret::new("v"),
                domain: ".gemini.google".into(),
            }],
            cookie_string: None,
            response_headers: BTreeMap::new(),
            timestamp: "2026-01-01T00:00:00Z".into(),
            config_id: "cfg".into(),
            csesidx: "123".into(),
            extra: serde_json::Map::new(),
            source_file: Some("a.json".into()),
        }
    }

    #[test]
    fn upsert_is_idempotent_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(
                store.upsert_account(&record("A@x.com")).unwrap(),
                Upsert::Inserted
            );
            assert_eq!(
                store.upsert_account(&record("a@x.com ")).unwrap(),
                Upsert::Updated
            );
            assert_eq!(
                store.upsert_account(&record("a@x.com ")).unwrap(),
                Upsert::Unchanged
            );
        }
        let store = Store::open(dir.path()).unwrap();
        let all = store.accounts().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, "a@x.com");
        assert_eq!(all[0].1.as_ref().unwrap().cookies[0].value.expose(), "v");
    }

    #[test]
    fn unknown_schema_versions_are_reported_not_misread() {
        let mut v = serde_json::to_value(record("a@x.com")).unwrap();
        v["schema_version"] = 99.into();
        let err = decode_account(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(err.to_string().contains("schema version 99"));
    }

    #[test]
    fn a_second_open_of_the_same_dir_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("business2api.redb"), "{err}");
    }
}
