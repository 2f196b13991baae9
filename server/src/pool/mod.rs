//! The account pool: an actor per account around pure state, and a supervisor.
//!
//! Layout:
//! - [`account_state`]: `AccountState` / `AccountStatus` and every transition, pure.
//! - [`selection`]: round robin, least recently used, fill first; concurrency and daily caps, pure.
//! - [`actor`]: `AccountActor`, one task per account: credentials, token, single-flight mint.
//! - [`supervisor`]: `PoolSupervisor`, one task: leases, outcomes, refresh schedule, persistence.
//! - [`import`], [`files`]: the reference account-file format in and out.
//!
//! The request path sees only [`Pool`] and [`Lease`]: lease an account for a capability, get
//! its token, report how the attempt ended (dropping a lease without an outcome reports
//! "abandoned").

pub mod account_state;
pub mod actor;
pub mod files;
pub mod import;
pub mod selection;
pub mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use account_state::Capability;
pub use supervisor::{AccountView, NewAccount, Outcome, Persistence, PoolConfig};

use crate::config::{ExpiredAction, Settings};
use crate::upstream::{Authenticator, CallAuth, UpstreamError};
use account_state::FailurePolicy;
use selection::SelectionPolicy;
use supervisor::{Command, Grant};

/// No account can take the request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable {
    /// When it is worth trying again.
    pub retry_after: Duration,
}

/// The pool is gone (shut down).
fn stopped() -> Unavailable {
    Unavailable {
        retry_after: selection::NO_ACCOUNT_RETRY,
    }
}

impl PoolConfig {
    pub fn from_settings(settings: &Settings) -> PoolConfig {
        let p = &settings.pool;
        let expired_action = if p.auto_delete_401 {
            ExpiredAction::Delete
        } else {
            settings.pool_server.expired_action
        };
        PoolConfig {
            selection: SelectionPolicy {
                strategy: p.selection,
                use_cooldown: p.use_cooldown,
                max_concurrent: p.max_concurrent_per_account,
                daily_limits: account_state::PerCapability {
                    text: p.daily_limits.text,
                    image: p.daily_limits.image,
                    video: p.daily_limits.video,
                },
            },
            failure: FailurePolicy {
                max_backoff: p.max_backoff,
                max_fail_count: p.max_fail_count,
                quota_reset_utc_hour: p.quota_reset_utc_hour,
                relogin_max_attempts: if p.enable_browser_refresh {
                    p.browser_refresh_max_retry
                } else {
                    0
                },
                expired_action,
                relogin_retry_interval: p.relogin_retry_interval,
            },
            refresh_period: p.refresh_cooldown,
            refresh_concurrency: usize::try_from(p.refresh_concurrency).unwrap_or(4),
            refresh_on_startup: p.refresh_on_startup,
        }
    }
}

/// Counts of accounts by state.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PoolSummary {
    pub total: usize,
    pub ready: usize,
    pub cooling_down: usize,
    pub refreshing_token: usize,
    pub needs_relogin: usize,
    pub disabled: usize,
    pub in_flight: u64,
}

impl PoolSummary {
    /// Counts the accounts of a snapshot.
    pub fn of(views: &[AccountView]) -> PoolSummary {
        let mut s = PoolSummary::default();
        for v in views {
            s.total += 1;
            s.in_flight += u64::from(v.in_flight.text + v.in_flight.image + v.in_flight.video);
            match v.status.state {
                account_state::AccountState::Ready => s.ready += 1,
                account_state::AccountState::CoolingDown { .. } => s.cooling_down += 1,
                account_state::AccountState::RefreshingToken => s.refreshing_token += 1,
                account_state::AccountState::NeedsRelogin { .. } => s.needs_relogin += 1,
                account_state::AccountState::Disabled { .. } => s.disabled += 1,
            }
        }
        s
    }
}

/// The handle the rest of the gateway uses. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Pool {
    tx: mpsc::Sender<Command>,
}

impl Pool {
    /// Starts the supervisor and one actor per usable account.
    pub fn start(
        config: PoolConfig,
        accounts: Vec<NewAccount>,
        authenticator: Arc<dyn Authenticator>,
        persistence: Option<Persistence>,
    ) -> Pool {
        Pool {
            tx: supervisor::start(config, accounts, authenticator, persistence),
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Leases an account for `cap` that is not in `exclude` (keys already tried).
    pub async fn lease(&self, cap: Capability, exclude: &[Arc<str>]) -> Result<Lease, Unavailable> {
        let exclude = exclude.to_vec();
        let grant = self
            .ask(|reply| Command::Lease {
                cap,
                exclude,
                reply,
            })
            .await
            .ok_or_else(stopped)?
            .map_err(|retry_after| Unavailable { retry_after })?;
        Ok(Lease {
            grant,
            cap,
            tx: self.tx.clone(),
            generation: None,
            done: false,
        })
    }

    /// Every account, for the admin API.
    pub async fn snapshot(&self) -> Vec<AccountView> {
        self.ask(|reply| Command::Snapshot { reply })
            .await
            .unwrap_or_default()
    }

    pub async fn summary(&self) -> PoolSummary {
        PoolSummary::of(&self.snapshot().await)
    }

    /// Adds or updates accounts.
    pub async fn upsert(&self, accounts: Vec<NewAccount>) {
        let _ = self.ask(|reply| Command::Upsert { accounts, reply }).await;
    }

    /// Removes accounts by e-mail; returns the keys removed.
    pub async fn remove(&self, emails: Vec<String>) -> Vec<String> {
        self.ask(|reply| Command::Remove {
            keys: emails,
            reply,
        })
        .await
        .unwrap_or_default()
    }

    /// Mints new tokens for every serving account; returns how many.
    pub async fn force_refresh(&self) -> usize {
        self.ask(|reply| Command::ForceRefresh { reply })
            .await
            .unwrap_or(0)
    }

    /// Changes `refresh_cooldown_sec` / `use_cooldown_sec` at run time; returns both values.
    pub async fn set_cooldowns(
        &self,
        refresh: Option<Duration>,
        use_: Option<Duration>,
    ) -> Option<(Duration, Duration)> {
        self.ask(|reply| Command::SetCooldowns {
            refresh,
            use_,
            reply,
        })
        .await
    }

    /// Replaces the pool's policy (selection, cooldowns, caps, failure handling) after a
    /// configuration reload; `refresh_concurrency` stays as started.
    pub async fn reconfigure(&self, config: PoolConfig) {
        let _ = self
            .ask(|reply| Command::Reconfigure { config, reply })
            .await;
    }

    /// Writes all state and stops the supervisor and the actors.
    pub async fn shutdown(&self) {
        let _ = self.ask(|reply| Command::Shutdown { reply }).await;
    }
}

/// An account leased to one attempt. Report the outcome with [`Lease::succeed`] or
/// [`Lease::fail`]; dropping it without reports "abandoned".
#[derive(Debug)]
pub struct Lease {
    grant: Grant,
    cap: Capability,
    tx: mpsc::Sender<Command>,
    generation: Option<u64>,
    done: bool,
}

impl Lease {
    pub fn key(&self) -> &Arc<str> {
        &self.grant.key
    }

    pub fn email(&self) -> &str {
        &self.grant.email
    }

    /// The account's log label.
    pub fn label(&self) -> &str {
        &self.grant.label
    }

    /// The token for the upstream call (shared mint when none is usable).
    pub async fn auth(&mut self) -> Result<CallAuth, UpstreamError> {
        let (auth, generation) = self.grant.handle.auth().await?;
        self.generation = Some(generation);
        Ok(auth)
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        let cmd = Command::Finish {
            key: Arc::clone(&self.grant.key),
            cap: self.cap,
            outcome,
        };
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.tx.try_send(cmd) {
            let tx = self.tx.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = tx.send(cmd).await;
                });
            }
        }
    }

    pub fn succeed(mut self) {
        self.finish(Outcome::Success);
    }

    pub fn fail(mut self, error: &UpstreamError) {
        let generation = self.generation;
        self.finish(Outcome::Failed {
            error: error.clone(),
            generation,
        });
    }

    /// No token could be minted for this attempt.
    pub fn fail_auth(mut self, error: &UpstreamError) {
        self.finish(Outcome::AuthFailed(error.clone()));
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.finish(Outcome::Abandoned);
    }
}
