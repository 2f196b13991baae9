//! Single-account reads and deletion.

use redb::ReadableDatabase;

use super::{ACCOUNTS, AccountRecord, Store, StoreError, decode_account};

/// The key of an account: the lower-cased, trimmed e-mail address.
fn normalise(key: &str) -> String {
    key.trim().to_lowercase()
}

impl Store {
    /// The account stored under `key` (an e-mail address; case and surrounding blanks do not
    /// matter), `None` if there is none. A record that cannot be read is an error.
    pub fn account(&self, key: &str) -> Result<Option<AccountRecord>, StoreError> {
        let key = normalise(key);
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ACCOUNTS)?;
        let bytes = table.get(key.as_str())?.map(|v| v.value().to_vec());
        bytes.map(|b| decode_account(&b)).transpose()
    }

    /// Removes the account stored under `key` (as for [`Store::account`]). Returns whether
    /// there was one; deleting a missing account writes nothing.
    pub fn delete_account(&self, key: &str) -> Result<bool, StoreError> {
        let key = normalise(key);
        let tx = self.db.begin_write()?;
        let removed = {
            let mut table = tx.open_table(ACCOUNTS)?;
            let removed = table.remove(key.as_str())?.is_some();
            let mut states = tx.open_table(super::ACCOUNT_STATE)?;
            states.remove(key.as_str())?;
            removed
        };
        if removed {
            tx.commit()?;
        } else {
            tx.abort()?;
        }
        Ok(removed)
    }

    /// Writes raw bytes under `key`, bypassing encoding: lets tests store unreadable records.
    #[cfg(test)]
    pub(crate) fn put_raw_account(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(ACCOUNTS)?.insert(key, bytes)?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use business2api_shared::Secret;

    use super::*;
    use crate::store::{ACCOUNT_SCHEMA_VERSION, StoredCookie};

    fn record(email: &str, cookie: &str) -> AccountRecord {
        AccountRecord {
            schema_version: ACCOUNT_SCHEMA_VERSION,
            email: email.into(),
            full_name: "A".into(),
            authorization: Secret::new("Bearer x"),
            cookies: vec![StoredCookie {
                name: "__Secure-C_SES".into(),
                value: Secret::new(cookie),
                domain: ".gemini.google".into(),
            }],
            cookie_string: None,
            response_headers: BTreeMap::new(),
            timestamp: "2026-01-01T00:00:00Z".into(),
            config_id: "cfg".into(),
            csesidx: "123".into(),
            extra: serde_json::Map::new(),
            source_file: None,
            added_at: None,
            updated_at: None,
        }
    }

    #[test]
    fn account_reads_one_record_by_normalised_email() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.upsert_account(&record("Ann@X.com", "one")).unwrap();
        store.upsert_account(&record("bob@x.com", "two")).unwrap();

        let ann = store.account("  ANN@x.COM ").unwrap().unwrap();
        assert_eq!(ann.email, "Ann@X.com");
        assert_eq!(ann.cookies[0].value.expose(), "one");
        let bob = store.account("bob@x.com").unwrap().unwrap();
        assert_eq!(bob.cookies[0].value.expose(), "two");
        assert_eq!(store.account("carol@x.com").unwrap(), None);
    }

    #[test]
    fn an_unreadable_record_is_an_error_not_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .put_raw_account("bad@x.com", b"{\"schema_version\": 7}")
            .unwrap();
        let err = store.account("bad@x.com").unwrap_err();
        assert!(err.to_string().contains("schema version 7"), "{err}");
    }

    #[test]
    fn delete_removes_only_that_account_and_reports_whether_it_existed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.upsert_account(&record("ann@x.com", "one")).unwrap();
            store.upsert_account(&record("bob@x.com", "two")).unwrap();
            assert!(store.delete_account(" ANN@x.com").unwrap());
            assert!(!store.delete_account("ann@x.com").unwrap());
            assert!(!store.delete_account("nobody@x.com").unwrap());
            assert_eq!(store.account("ann@x.com").unwrap(), None);
        }
        // The deletion is durable and left the other account alone.
        let store = Store::open(dir.path()).unwrap();
        let keys: Vec<String> = store
            .accounts()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["bob@x.com"]);
    }
}
