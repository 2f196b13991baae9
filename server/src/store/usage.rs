//! Usage history and named API keys.
//!
//! - `usage_hourly`: hour start (unix seconds) → JSON bucket of that hour (requests, tokens,
//!   errors, per model and per key); written behind by the usage flusher, pruned by age.
//! - `api_keys`: key id → JSON record of a named API key (its SHA-256 hash, never the key, its
//!   limits and today's counters).
//!
//! The record formats belong to `crate::usage` and `crate::keys`; this file only moves bytes.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{Store, StoreError};

pub(super) const USAGE_HOURLY: TableDefinition<u64, &[u8]> = TableDefinition::new("usage_hourly");
pub(super) const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");

impl Store {
    /// Writes hourly buckets (replacing those hours) and removes buckets older than
    /// `prune_before`, in one transaction.
    pub fn write_usage_hours(
        &self,
        hours: &[(u64, Vec<u8>)],
        prune_before: u64,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(USAGE_HOURLY)?;
            for (hour, bytes) in hours {
                table.insert(*hour, bytes.as_slice())?;
            }
            table.retain(|hour, _| hour >= prune_before)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The stored hourly buckets from `since` on, oldest first.
    pub fn usage_hours(&self, since: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(USAGE_HOURLY)?;
        let mut out = Vec::new();
        for row in table.range(since..)? {
            let (k, v) = row?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Writes a batch of key record changes in one transaction: `Some(bytes)` stores, `None`
    /// deletes.
    pub fn write_api_keys(&self, changes: &[(String, Option<Vec<u8>>)]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(API_KEYS)?;
            for (id, record) in changes {
                match record {
                    Some(bytes) => {
                        table.insert(id.as_str(), bytes.as_slice())?;
                    }
                    None => {
                        table.remove(id.as_str())?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every stored key record: (id, JSON bytes).
    pub fn api_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(API_KEYS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hours_and_keys_survive_reopen_and_old_hours_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = super::Store::open(dir.path()).unwrap();
            store
                .write_usage_hours(&[(3600, b"a".to_vec()), (7200, b"b".to_vec())], 0)
                .unwrap();
            store
                .write_api_keys(&[
                    ("k1".into(), Some(b"one".to_vec())),
                    ("k2".into(), Some(b"two".to_vec())),
                ])
                .unwrap();
            store.write_api_keys(&[("k1".into(), None)]).unwrap();
        }
        let store = super::Store::open(dir.path()).unwrap();
        assert_eq!(
            store.usage_hours(0).unwrap(),
            vec![(3600, b"a".to_vec()), (7200, b"b".to_vec())]
        );
        assert_eq!(store.usage_hours(7200).unwrap().len(), 1);
        store
            .write_usage_hours(&[(10800, b"c".to_vec())], 7200)
            .unwrap();
        let hours: Vec<u64> = store.usage_hours(0).unwrap().iter().map(|h| h.0).collect();
        assert_eq!(hours, vec![7200, 10800]);
        assert_eq!(
            store.api_keys().unwrap(),
            vec![("k2".into(), b"two".to_vec())]
        );
    }
}
