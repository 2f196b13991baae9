//! The egress pins: which proxy each account leaves through (table `egress_pins`, account key →
//! proxy id). Proxy ids are short hashes of the proxy URL, so a restart with the same proxy list
//! keeps every pin; a pin whose proxy is gone is re-assigned at start.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{Store, StoreError};

pub(super) const EGRESS_PINS: TableDefinition<&str, &str> = TableDefinition::new("egress_pins");

impl Store {
    /// Writes a batch of pin changes in one transaction: `Some(id)` pins, `None` forgets.
    pub fn write_pins(&self, changes: &[(String, Option<String>)]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(EGRESS_PINS)?;
            for (account, proxy) in changes {
                match proxy {
                    Some(id) => {
                        table.insert(account.as_str(), id.as_str())?;
                    }
                    None => {
                        table.remove(account.as_str())?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every stored pin: (account key, proxy id).
    pub fn pins(&self) -> Result<Vec<(String, String)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(EGRESS_PINS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_owned(), v.value().to_owned()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_survive_reopen_and_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(store.pins().unwrap().is_empty());
            store
                .write_pins(&[
                    ("a@x".into(), Some("p1".into())),
                    ("b@x".into(), Some("p2".into())),
                ])
                .unwrap();
            store
                .write_pins(&[("b@x".into(), None), ("a@x".into(), Some("p3".into()))])
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.pins().unwrap(), [("a@x".to_owned(), "p3".to_owned())]);
    }
}
