//! Persistence in redb: the embedded default storage, one file `business2api.redb` in the data
//! dir. Every record carries a schema version. redb commits are crash-safe (copy-on-write with
//! fsync on commit), so a record is either wholly written or not at all.
//!
//! Calls here block on disk I/O: call them at start-up or from `spawn_blocking`, never on an
//! actix worker thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::pool::account_state::AccountStatus;
use business2api_shared::Secret;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

mod accounts;
mod egress;
mod usage;
mod videos;

pub use videos::{
    StoredMedia, VIDEO_JOB_SCHEMA_VERSION, VideoJobError, VideoJobRecord, VideoJobStatus,
};
mod flow;

pub use flow::{FLOW_TOKEN_SCHEMA_VERSION, FlowTokenRecord, FlowTokenState};

/// Accounts, keyed by lower-cased e-mail address; values are JSON [`AccountRecord`]s.
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// Pool state of each account (same keys); values are JSON [`StateRecord`]s.
const ACCOUNT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("account_state");

/// The current version of [`AccountRecord`]. Version 1 (issue 2) had no `added_at` /
/// `updated_at`; it is still read.
pub const ACCOUNT_SCHEMA_VERSION: u32 = 2;
/// The current version of [`StateRecord`].
pub const STATE_SCHEMA_VERSION: u32 = 1;

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
    #[serde(serialize_with = "business2api_shared::secret::serialize_exposed")]
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
    #[serde(
        default,
        serialize_with = "business2api_shared::secret::serialize_exposed"
    )]
    pub authorization: Secret,
    #[serde(default)]
    pub cookies: Vec<StoredCookie>,
    #[serde(
        default,
        serialize_with = "business2api_shared::secret::serialize_exposed_option"
    )]
    pub cookie_string: Option<Secret>,
    #[serde(
        default,
        serialize_with = "business2api_shared::secret::serialize_exposed_map"
    )]
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
    /// When the account was first stored (Unix ms; `None` for records from schema 1).
    #[serde(default)]
    pub added_at: Option<u64>,
    /// When its credentials last changed (Unix ms; `None` for records from schema 1).
    #[serde(default)]
    pub updated_at: Option<u64>,
}

/// The persisted pool state of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    pub schema_version: u32,
    pub status: AccountStatus,
}

use crate::pool::supervisor::now_ms;

impl AccountRecord {
    /// The key of the record: its normalised e-mail address (`AccountKey`).
    pub fn key(&self) -> String {
        business2api_shared::AccountKey::new(&self.email)
            .as_str()
            .to_owned()
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
        // Version 1 lacks `added_at` / `updated_at`, which default to `None`.
        1 | 2 => {
            let mut record: AccountRecord =
                serde_json::from_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            record.schema_version = ACCOUNT_SCHEMA_VERSION;
            Ok(record)
        }
        v => Err(StoreError::Corrupt(format!(
            "account record schema version {v} is not supported by this build"
        ))),
    }
}

fn decode_state(bytes: &[u8]) -> Result<AccountStatus, StoreError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    match value.get("schema_version").and_then(|v| v.as_u64()) {
        Some(1) => serde_json::from_value::<StateRecord>(value)
            .map(|r| r.status)
            .map_err(|e| StoreError::Corrupt(e.to_string())),
        v => Err(StoreError::Corrupt(format!(
            "account state schema version {} is not supported by this build",
            v.map_or_else(|| "(none)".to_owned(), |v| v.to_string())
        ))),
    }
}

/// What a writer of pool state sends: new states, and accounts to forget.
#[derive(Debug, Clone, Default)]
pub struct StateBatch {
    pub states: Vec<(String, AccountStatus)>,
    pub deleted: Vec<String>,
}

/// A stored pool state, or why it cannot be read, keyed by lower-cased e-mail.
pub type StoredState = (String, Result<AccountStatus, StoreError>);

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
        tx.open_table(ACCOUNT_STATE)?;
        tx.open_table(videos::VIDEO_JOBS)?;
        tx.open_table(flow::FLOW_TOKENS)?;
        tx.open_table(flow::FLOW_REMOVED)?;
        tx.open_table(egress::EGRESS_PINS)?;
        tx.open_table(usage::USAGE_HOURLY)?;
        tx.open_table(usage::API_KEYS)?;
        tx.commit()?;
        Ok(Store { db })
    }

    /// Inserts or replaces an account; writing nothing when the stored record is identical
    /// (apart from its `added_at` / `updated_at` bookkeeping, which the store maintains).
    pub fn upsert_account(&self, record: &AccountRecord) -> Result<Upsert, StoreError> {
        let key = record.key();
        let tx = self.db.begin_write()?;
        let outcome = {
            let mut table = tx.open_table(ACCOUNTS)?;
            let existing = match table.get(key.as_str())? {
                Some(v) => Some(decode_account(v.value())?),
                None => None,
            };
            let mut new = record.clone();
            new.schema_version = ACCOUNT_SCHEMA_VERSION;
            let now = now_ms();
            let outcome = match &existing {
                Some(old) => {
                    new.added_at = old.added_at;
                    new.updated_at = old.updated_at;
                    if *old == new {
                        Upsert::Unchanged
                    } else {
                        new.updated_at = Some(now);
                        Upsert::Updated
                    }
                }
                None => {
                    new.added_at = Some(now);
                    new.updated_at = Some(now);
                    Upsert::Inserted
                }
            };
            if outcome != Upsert::Unchanged {
                let bytes =
                    serde_json::to_vec(&new).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                table.insert(key.as_str(), bytes.as_slice())?;
            }
            outcome
        };
        if outcome == Upsert::Unchanged {
            tx.abort()?;
        } else {
            tx.commit()?;
        }
        Ok(outcome)
    }

    /// Writes a batch of pool states and deletions in one transaction (all or nothing).
    pub fn write_states(&self, batch: &StateBatch) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut states = tx.open_table(ACCOUNT_STATE)?;
            let mut accounts = tx.open_table(ACCOUNTS)?;
            for (key, status) in &batch.states {
                let record = StateRecord {
                    schema_version: STATE_SCHEMA_VERSION,
                    status: status.clone(),
                };
                let bytes =
                    serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                states.insert(key.as_str(), bytes.as_slice())?;
            }
            for key in &batch.deleted {
                states.remove(key.as_str())?;
                accounts.remove(key.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The stored pool state of every account that has one, by key. An unreadable state is
    /// returned as an error next to its key.
    pub fn states(&self) -> Result<Vec<StoredState>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ACCOUNT_STATE)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_owned(), decode_state(v.value())));
        }
        Ok(out)
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
            added_at: None,
            updated_at: None,
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
    fn schema_1_records_are_read_and_keep_their_fields() {
        // A record exactly as issue 2's build wrote it.
        let v1 = br#"{"schema_version":1,"email":"old@x.com","full_name":"Old","authorization":"Bearer t","cookies":[{"name":"__Secure-C_SES","value":"s","domain":".gemini.google"}],"cookie_string":null,"response_headers":{},"timestamp":"2026-01-01T00:00:00Z","config_id":"cfg","csesidx":"7","extra":{"k":1},"source_file":"old@x.com.json"}"#;
        let r = decode_account(v1).unwrap();
        assert_eq!(r.schema_version, ACCOUNT_SCHEMA_VERSION);
        assert_eq!(r.email, "old@x.com");
        assert_eq!(r.cookies[0].value.expose(), "s");
        assert_eq!(r.extra["k"], 1);
        assert_eq!((r.added_at, r.updated_at), (None, None));
        // Stored in a real database and upserted unchanged: reported unchanged.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        {
            let tx = store.db.begin_write().unwrap();
            tx.open_table(ACCOUNTS)
                .unwrap()
                .insert("old@x.com", v1.as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let mut same = r.clone();
        same.schema_version = 1;
        assert_eq!(store.upsert_account(&same).unwrap(), Upsert::Unchanged);
        same.full_name = "New".into();
        assert_eq!(store.upsert_account(&same).unwrap(), Upsert::Updated);
        let stored = store.accounts().unwrap().remove(0).1.unwrap();
        assert!(stored.updated_at.is_some());
    }

    #[test]
    fn states_are_written_in_batches_and_deletions_remove_both_records() {
        use crate::pool::account_state::AccountState;
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.upsert_account(&record("a@x.com")).unwrap();
            store.upsert_account(&record("b@x.com")).unwrap();
            let mut st = AccountStatus::default();
            st.counters.success = 5;
            st.state = AccountState::Disabled { reason: "r".into() };
            store
                .write_states(&StateBatch {
                    states: vec![("a@x.com".into(), st.clone()), ("b@x.com".into(), st)],
                    deleted: vec![],
                })
                .unwrap();
            store
                .write_states(&StateBatch {
                    states: vec![],
                    deleted: vec!["b@x.com".into()],
                })
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let states = store.states().unwrap();
        assert_eq!(states.len(), 1);
        let (key, status) = &states[0];
        assert_eq!(key, "a@x.com");
        let status = status.as_ref().unwrap();
        assert_eq!(status.counters.success, 5);
        assert_eq!(status.state.name(), "disabled");
        assert_eq!(store.accounts().unwrap().len(), 1);
        assert!(decode_state(br#"{"schema_version":9}"#).is_err());
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
