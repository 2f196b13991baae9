//! The Flow token pool's persisted state: one record per token id (table `flow_tokens`) and the
//! configuration tokens removed through the admin API (table `flow_removed`, one key).
//! Session tokens themselves are never stored here: they live in the configuration or in the
//! files of `<data_dir>/at/`.

use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

pub(super) const FLOW_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("flow_tokens");
pub(super) const FLOW_REMOVED: TableDefinition<&str, &[u8]> = TableDefinition::new("flow_removed");
const REMOVED_KEY: &str = "removed";

/// The current version of [`FlowTokenRecord`].
pub const FLOW_TOKEN_SCHEMA_VERSION: u32 = 1;

/// Whether a token may be selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowTokenState {
    #[default]
    Active,
    /// The session token was refused: it stays out until replaced.
    Disabled,
}

/// One token's persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTokenRecord {
    pub schema_version: u32,
    #[serde(default)]
    pub state: FlowTokenState,
    /// Consecutive errors.
    #[serde(default)]
    pub errors: u32,
    #[serde(default)]
    pub credits: Option<i64>,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
}

impl Default for FlowTokenRecord {
    fn default() -> Self {
        FlowTokenRecord::new(FlowTokenState::Active, 0, None, None, None)
    }
}

impl FlowTokenRecord {
    pub fn new(
        state: FlowTokenState,
        errors: u32,
        credits: Option<i64>,
        tier: Option<String>,
        last_error: Option<String>,
    ) -> FlowTokenRecord {
        FlowTokenRecord {
            schema_version: FLOW_TOKEN_SCHEMA_VERSION,
            state,
            errors,
            credits,
            tier,
            last_error,
        }
    }
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl Store {
    /// Writes token `id`'s state.
    pub fn put_flow_token(&self, id: &str, record: &FlowTokenRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(corrupt)?;
        let tx = self.db.begin_write()?;
        tx.open_table(FLOW_TOKENS)?.insert(id, bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets token `id`'s state.
    pub fn delete_flow_token(&self, id: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(FLOW_TOKENS)?.remove(id)?;
        tx.commit()?;
        Ok(())
    }

    /// Token `id`'s state, if stored.
    pub fn flow_token(&self, id: &str) -> Result<Option<FlowTokenRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(FLOW_TOKENS)?;
        let Some(value) = table.get(id)? else {
            return Ok(None);
        };
        let record: FlowTokenRecord = serde_json::from_slice(value.value()).map_err(corrupt)?;
        if record.schema_version != FLOW_TOKEN_SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "Flow token record schema version {} is not supported by this build",
                record.schema_version
            )));
        }
        Ok(Some(record))
    }

    /// Replaces the list of removed configuration token ids.
    pub fn put_flow_removed(&self, ids: &[String]) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(ids).map_err(corrupt)?;
        let tx = self.db.begin_write()?;
        tx.open_table(FLOW_REMOVED)?
            .insert(REMOVED_KEY, bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// The removed configuration token ids.
    pub fn flow_removed(&self) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(FLOW_REMOVED)?;
        match table.get(REMOVED_KEY)? {
            Some(value) => serde_json::from_slice(value.value()).map_err(corrupt),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_states_and_removed_ids_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.flow_token("a").unwrap(), None);
            assert!(store.flow_removed().unwrap().is_empty());
            let record = FlowTokenRecord::new(
                FlowTokenState::Disabled,
                2,
                Some(80),
                Some("PAYGATE_TIER_TWO".into()),
                Some("refused".into()),
            );
            store.put_flow_token("a", &record).unwrap();
            store
                .put_flow_token("b", &FlowTokenRecord::default())
                .unwrap();
            store.delete_flow_token("b").unwrap();
            store.put_flow_removed(&["flow_token_1".into()]).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let a = store.flow_token("a").unwrap().unwrap();
        assert_eq!(a.state, FlowTokenState::Disabled);
        assert_eq!((a.errors, a.credits), (2, Some(80)));
        assert_eq!(store.flow_token("b").unwrap(), None);
        assert_eq!(store.flow_removed().unwrap(), vec!["flow_token_1"]);
    }

    #[test]
    fn a_record_of_an_unknown_version_is_an_error_not_a_fresh_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let record = FlowTokenRecord {
            schema_version: 99,
            ..FlowTokenRecord::default()
        };
        store.put_flow_token("a", &record).unwrap();
        assert!(store.flow_token("a").is_err());
    }
}
