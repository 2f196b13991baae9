//! The accounts service: the one place where new credentials meet the stored accounts and the
//! pool. Start-up import, `POST /admin/pool-files/import`, `POST /admin/refresh`, the `accounts`
//! CLI and (next) browser re-login results all go through [`merge`]:
//!
//! 1. each incoming record is upserted into the store — the merge rule lives in
//!    [`Store::upsert_account`]: the stored record is replaced whole, `added_at` is kept,
//!    `updated_at` is set when anything differs, nothing is written when it is identical;
//! 2. every account whose record changed becomes a pool update with `changed: true`, which
//!    replaces the account actor's credentials: the actor bumps its credential generation, drops
//!    its token, and any mint still running with the old credentials is disowned (its result,
//!    of an older generation, is ignored).
//!
//! [`load`] turns the stored accounts and their persisted pool states into the pool's first
//! members at start-up. [`AccountsService`] is the running gateway's handle: the same merge, off
//! the HTTP threads, followed by the pool update.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::pool::account_state::AccountState;
use crate::pool::import::{ImportReport, Rejected, credentials_of};
use crate::pool::{NewAccount, Pool};
use crate::store::{AccountRecord, Store, StoreError, Upsert};

/// One account record arriving from somewhere (a file, an upload, a re-login), named for the
/// report: a file name, `file[i]` for an element of an array, or the e-mail.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub name: String,
    pub record: AccountRecord,
}

/// What a merge did.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// Per incoming record: its name and what the store did, plus what was rejected.
    pub report: ImportReport,
    /// Pool updates for the accounts whose records changed (taken by [`AccountsService`]).
    pub updates: Vec<NewAccount>,
}

/// Stores `incoming` and computes the pool updates (see the module docs). `rejected` (what
/// could not even be parsed) is carried into the report unchanged; a record whose e-mail is not
/// a plausible address ([`crate::accounts::email::check`]) is added to it and not stored, so no
/// source can put one in the store. Blocking (redb).
pub fn merge(
    store: &Store,
    incoming: Vec<Incoming>,
    rejected: Vec<Rejected>,
    default_config: &str,
) -> Result<Merged, StoreError> {
    let mut merged = Merged {
        report: ImportReport {
            imported: Vec::with_capacity(incoming.len()),
            rejected,
        },
        ..Merged::default()
    };
    for Incoming { name, record } in incoming {
        if let Some(reason) = crate::accounts::email::rejection(&record.email) {
            merged.report.rejected.push(Rejected {
                name: crate::telemetry::printable(&name).into_owned(),
                reason,
            });
            continue;
        }
        let outcome = store.upsert_account(&record)?;
        if outcome != Upsert::Unchanged {
            merged.updates.push(NewAccount {
                email: record.email.clone(),
                source_file: record.source_file.clone(),
                credentials: credentials_of(&record, default_config),
                status: None,
                changed: true,
                proxy: crate::pool::import::proxy_of(&record),
            });
        }
        merged.report.imported.push((name, outcome));
    }
    Ok(merged)
}

/// The pool's first members: every stored account with its persisted pool state, plus the
/// stored accounts that cannot be used (by file name or e-mail, with the reason). An account
/// found dead (`needs_relogin`) whose record was updated after that is marked changed, so it
/// serves again with its new credentials. Blocking (redb).
pub fn load(
    store: &Store,
    default_config: &str,
) -> Result<(Vec<NewAccount>, Vec<Rejected>), StoreError> {
    let mut accounts = Vec::new();
    let mut unusable = Vec::new();
    let mut states: HashMap<String, _> = store
        .states()?
        .into_iter()
        .filter_map(|(k, s)| match s {
            Ok(s) => Some((k, s)),
            Err(e) => {
                tracing::warn!(account = %crate::pool::supervisor::label_of(&k), error = %e, "stored pool state unreadable; starting that account afresh");
                None
            }
        })
        .collect();
    for (key, record) in store.accounts()? {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                unusable.push(Rejected {
                    name: key,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let name = record
            .source_file
            .clone()
            .unwrap_or_else(|| record.email.clone());
        let credentials = credentials_of(&record, default_config);
        if let Err(reason) = &credentials {
            unusable.push(Rejected {
                name,
                reason: reason.clone(),
            });
        }
        let status = states.remove(&key);
        let changed = match (&status, record.updated_at) {
            (Some(s), Some(updated)) => match &s.state {
                AccountState::NeedsRelogin { since, .. } => updated > *since,
                _ => false,
            },
            _ => false,
        };
        accounts.push(NewAccount {
            email: record.email.clone(),
            source_file: record.source_file.clone(),
            credentials,
            status,
            changed,
            proxy: crate::pool::import::proxy_of(&record),
        });
    }
    Ok((accounts, unusable))
}

/// The running gateway's accounts service: merges off the HTTP threads, then updates the pool.
#[derive(Debug, Clone)]
pub struct AccountsService {
    store: Arc<Store>,
    pool: Pool,
    egress: crate::egress::EgressPool,
}

impl AccountsService {
    pub fn new(
        store: Arc<Store>,
        pool: Pool,
        egress: crate::egress::EgressPool,
    ) -> AccountsService {
        AccountsService {
            store,
            pool,
            egress,
        }
    }

    /// The egress proxies (a worker task carries its account's proxy).
    pub fn egress(&self) -> &crate::egress::EgressPool {
        &self.egress
    }

    /// Stores `incoming` and hands the changed accounts to the pool (see [`merge`]).
    pub async fn import(
        &self,
        incoming: Vec<Incoming>,
        rejected: Vec<Rejected>,
        default_config: String,
    ) -> Result<Merged, StoreError> {
        let store = Arc::clone(&self.store);
        let mut merged =
            blocking(move || merge(&store, incoming, rejected, &default_config)).await?;
        self.pool.upsert(std::mem::take(&mut merged.updates)).await;
        Ok(merged)
    }

    /// The stored record of one account (`None` if there is none).
    pub async fn stored(&self, email: String) -> Result<Option<AccountRecord>, StoreError> {
        let store = Arc::clone(&self.store);
        blocking(move || store.account(&email)).await
    }

    /// Re-reads every `*.json` in `dir` and imports it (`POST /admin/refresh`).
    pub async fn import_dir(
        &self,
        dir: PathBuf,
        default_config: String,
    ) -> Result<Merged, StoreError> {
        let (incoming, rejected) =
            blocking(move || Ok(crate::pool::import::read_dir(&dir))).await?;
        self.import(incoming, rejected, default_config).await
    }
}

/// Runs a store operation off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Corrupt(format!("a store task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::import::parse_account_file;
    use serde_json::json;

    fn record(email: &str, cookie: &str) -> AccountRecord {
        let file = json!({
            "email": email, "fullName": "A", "authorization": "",
            "cookies": [{"name": "__Secure-C_SES", "value": cookie, "domain": ".gemini.google"}],
            "timestamp": "2026-01-01T00:00:00Z", "configId": "cfg", "csesidx": "42",
        });
        parse_account_file(
            &format!("{email}.json"),
            &serde_json::to_vec(&file).unwrap(),
        )
        .unwrap()
    }

    fn incoming(r: AccountRecord) -> Incoming {
        Incoming {
            name: r.email.clone(),
            record: r,
        }
    }

    #[test]
    fn only_changed_records_become_pool_updates_that_replace_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = merge(
            &store,
            vec![
                incoming(record("a@x.org", "one")),
                incoming(record("b@x.org", "one")),
            ],
            Vec::new(),
            "",
        )
        .unwrap();
        assert_eq!(
            first
                .report
                .imported
                .iter()
                .map(|(_, u)| *u)
                .collect::<Vec<_>>(),
            vec![Upsert::Inserted, Upsert::Inserted]
        );
        assert_eq!(first.updates.len(), 2);
        assert!(
            first
                .updates
                .iter()
                .all(|u| u.changed && u.credentials.is_ok())
        );

        // Same a, new cookies for b: only b reaches the pool, with the new cookie.
        let second = merge(
            &store,
            vec![
                incoming(record("a@x.org", "one")),
                incoming(record("B@x.org", "two")),
            ],
            vec![Rejected {
                name: "broken.json".into(),
                reason: "not valid JSON".into(),
            }],
            "",
        )
        .unwrap();
        assert_eq!(
            second
                .report
                .imported
                .iter()
                .map(|(_, u)| *u)
                .collect::<Vec<_>>(),
            vec![Upsert::Unchanged, Upsert::Updated]
        );
        assert_eq!(second.report.rejected.len(), 1);
        assert_eq!(second.updates.len(), 1);
        let creds = second.updates[0].credentials.as_ref().unwrap();
        assert_eq!(creds.cookies[0].value.expose(), "two");
    }

    #[test]
    fn records_with_implausible_emails_are_rejected_by_name_and_the_others_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Records that did not come through the file parser (which refuses them already).
        let mut evil = record("a@x.org", "c");
        evil.email = "../../etc/x\n@x.org".into();
        let merged = merge(
            &store,
            vec![
                Incoming {
                    name: "relogin\u{1b}[2J".into(),
                    record: evil,
                },
                incoming(record("good@x.org", "c")),
            ],
            Vec::new(),
            "",
        )
        .unwrap();
        assert_eq!(merged.report.imported.len(), 1);
        assert_eq!(merged.report.rejected.len(), 1);
        let r = &merged.report.rejected[0];
        assert_eq!(r.name, "relogin\\u{1b}[2J");
        assert!(r.reason.contains("\"../../etc/x\\n@x.org\""), "{r:?}");
        assert_eq!(merged.updates.len(), 1);
        let keys: Vec<String> = store
            .accounts()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["good@x.org"]);
    }

    #[test]
    fn load_reports_unusable_accounts_and_revives_updated_dead_ones() {
        use crate::pool::account_state::AccountStatus;
        use crate::store::StateBatch;

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut bad = record("bad@x.org", "c");
        bad.csesidx.clear();
        merge(
            &store,
            vec![incoming(record("dead@x.org", "old")), incoming(bad)],
            Vec::new(),
            "",
        )
        .unwrap();
        let dead = AccountStatus {
            state: AccountState::NeedsRelogin {
                since: 1,
                reason: "cookies refused".into(),
            },
            ..AccountStatus::default()
        };
        store
            .write_states(&StateBatch {
                states: vec![("dead@x.org".into(), dead)],
                deleted: Vec::new(),
            })
            .unwrap();
        let (accounts, unusable) = load(&store, "").unwrap();
        assert_eq!(accounts.len(), 2);
        assert_eq!(unusable.len(), 1);
        assert!(unusable[0].reason.contains("csesidx"), "{unusable:?}");
        let dead = accounts.iter().find(|a| a.email == "dead@x.org").unwrap();
        // Its record was updated (at import, after `since` = 1 ms): it serves again.
        assert!(dead.changed);
        assert!(dead.status.is_some());
    }
}
