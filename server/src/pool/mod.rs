//! The account pool: actix actors around pure state.
//!
//! Layout:
//! - [`account_state`]: `AccountState` / `AccountStatus` and every transition, pure.
//! - [`selection`]: round robin, least recently used, fill first; concurrency and daily caps, pure.
//! - [`state`]: [`state::PoolState`], the narrow interface to the pool's shared bookkeeping
//!   (statuses, leases in flight, cooldowns, counters, credential generations), and its
//!   in-process implementation.
//! - [`actor`]: `AccountActor`, one actix actor per account: credentials, token, single-flight
//!   mint, credential generation.
//! - [`supervisor`]: `PoolSupervisor`, one actix actor (restarted by actix supervision from the
//!   persisted state): leases, outcomes, effects, refresh schedule, persistence ticks; and the
//!   `Persister`, a sync actor that does the redb writes.
//! - [`import`], [`files`]: the reference account-file format in and out.
//!
//! The request path sees only [`Pool`] and [`Lease`]: lease an account for a capability, get
//! its token, report how the attempt ended (dropping a lease without an outcome reports
//! "abandoned"), or release it with no outcome when the failure was the request's own (see the
//! failover rule in [`crate::service`]: a failure that follows one request to a second account
//! counts against neither account).
//!
//! Where the actors live: the pool runs on **its own thread with its own actix system**, started
//! by [`Pool::start`] and stopped by [`Pool::shutdown`] (or when the last `Pool` handle is
//! dropped). The supervisor starts the account actors, so they share that thread's arbiter; the
//! persister is a one-thread `SyncArbiter`. Addresses (`Addr<A>`) are `Send`, so every HTTP
//! worker thread talks to the pool through them. This way the pool works the same whether
//! `Application::build` runs in the binary's actix system or in a plain `#[tokio::test]`
//! runtime, and a slow handler on an HTTP worker never delays the pool.

pub mod account_state;
pub mod actor;
pub mod files;
pub mod import;
pub mod selection;
pub mod state;
pub mod supervisor;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use business2api_shared::AccountKey;

pub use account_state::Capability;
pub use supervisor::{AccountView, NewAccount, Outcome, Persistence, PoolConfig};

use crate::config::{ExpiredAction, Settings};
use crate::upstream::{Authenticator, CallAuth, UpstreamError};
use account_state::FailurePolicy;
use actor::AccountActor;
use selection::SelectionPolicy;
use supervisor::PoolSupervisor;

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
            relogin_backoff: p.browser_refresh_backoff,
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

/// Stops the pool's thread when the last [`Pool`] handle goes (after writing the state), in
/// case [`Pool::shutdown`] was not called.
struct PoolThread {
    supervisor: Addr<PoolSupervisor>,
}

impl Drop for PoolThread {
    fn drop(&mut self) {
        // Ignored when the pool was shut down already (its mailbox is closed then).
        self.supervisor.do_send(supervisor::Shutdown);
    }
}

/// The handle the rest of the gateway uses. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    supervisor: Addr<PoolSupervisor>,
    _thread: Arc<PoolThread>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

/// The name of the pool's thread.
const THREAD_NAME: &str = "pool";

impl Pool {
    /// Starts the pool's thread and actix system, the supervisor (under actix supervision),
    /// the persister and one actor per usable account. Fails only when the thread cannot be
    /// started.
    pub fn start(
        config: PoolConfig,
        accounts: Vec<NewAccount>,
        authenticator: Arc<dyn Authenticator>,
        egress: crate::egress::EgressPool,
        persistence: Option<Persistence>,
    ) -> std::io::Result<Pool> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || {
                let runner = System::new();
                runner.block_on(async move {
                    let system = System::current();
                    let supervisor =
                        PoolSupervisor::new(config, accounts, authenticator, egress, persistence)
                            .with_system(system);
                    let addr = actix::Supervisor::start(move |_| supervisor);
                    let _ = tx.send(addr);
                });
                if let Err(e) = runner.run() {
                    tracing::error!(error = %e, "the pool's actix system failed");
                }
            })?;
        // A short wait at start-up, for the thread to hand its supervisor's address over.
        let supervisor = rx
            .recv()
            .map_err(|_| std::io::Error::other("the pool thread ended before it started"))?;
        Ok(Pool {
            _thread: Arc::new(PoolThread {
                supervisor: supervisor.clone(),
            }),
            supervisor,
        })
    }

    /// Leases an account for `cap` that is not in `exclude` (keys already tried).
    pub async fn lease(
        &self,
        cap: Capability,
        exclude: &[AccountKey],
    ) -> Result<Lease, Unavailable> {
        self.supervisor
            .send(supervisor::LeaseRequest {
                cap,
                exclude: exclude.to_vec(),
            })
            .await
            .map_err(|_| stopped())?
            .map_err(|retry_after| Unavailable { retry_after })
    }

    /// Every account, for the admin API.
    pub async fn snapshot(&self) -> Vec<AccountView> {
        self.supervisor
            .send(supervisor::Snapshot)
            .await
            .unwrap_or_default()
    }

    /// How many accounts the pool holds (0 also when the pool is gone).
    pub async fn count(&self) -> usize {
        self.supervisor.send(supervisor::Count).await.unwrap_or(0)
    }

    pub async fn summary(&self) -> PoolSummary {
        PoolSummary::of(&self.snapshot().await)
    }

    /// Sends the pool's re-login requests to `sink` (server mode: the worker hub), starting with
    /// the accounts already waiting for one.
    pub async fn send_relogins_to(&self, sink: Recipient<supervisor::ReloginWanted>) {
        let _ = self.supervisor.send(supervisor::SetReloginSink(sink)).await;
    }

    /// Where a worker hub reports re-login tasks that ended without new credentials.
    pub fn relogin_failures(&self) -> Recipient<supervisor::ReloginAttemptFailed> {
        self.supervisor.clone().recipient()
    }

    /// Where a worker hub reports probes that found an account's credentials refused.
    pub fn probe_rejections(&self) -> Recipient<supervisor::ProbeRejected> {
        self.supervisor.clone().recipient()
    }

    /// Adds or updates accounts.
    pub async fn upsert(&self, accounts: Vec<NewAccount>) {
        let _ = self.supervisor.send(supervisor::Upsert(accounts)).await;
    }

    /// Removes accounts by e-mail; returns the keys removed.
    pub async fn remove(&self, emails: Vec<String>) -> Vec<String> {
        self.supervisor
            .send(supervisor::Remove(emails))
            .await
            .unwrap_or_default()
    }

    /// Mints new tokens for every serving account; returns how many.
    pub async fn force_refresh(&self) -> usize {
        self.supervisor
            .send(supervisor::ForceRefresh)
            .await
            .unwrap_or(0)
    }

    /// Changes `refresh_cooldown_sec` / `use_cooldown_sec` at run time; returns both values.
    pub async fn set_cooldowns(
        &self,
        refresh: Option<Duration>,
        use_: Option<Duration>,
    ) -> Option<(Duration, Duration)> {
        self.supervisor
            .send(supervisor::SetCooldowns { refresh, use_ })
            .await
            .ok()
    }

    /// Replaces the pool's knobs (live configuration) for the next decisions.
    pub async fn reconfigure(&self, config: PoolConfig) {
        let _ = self.supervisor.send(supervisor::Reconfigure(config)).await;
    }

    /// Writes all state and stops the supervisor, the actors and the pool's thread.
    pub async fn shutdown(&self) {
        let _ = self.supervisor.send(supervisor::Shutdown).await;
    }

    /// The supervisor's address (tests).
    #[cfg(test)]
    pub(crate) fn supervisor(&self) -> &Addr<PoolSupervisor> {
        &self.supervisor
    }
}

/// An account leased to one attempt. Report the outcome with [`Lease::succeed`] or
/// [`Lease::fail`], or give it back with no outcome with [`Lease::release`] (a failure that is
/// the request's, not the account's); dropping it without reports "abandoned".
pub struct Lease {
    // Boxed: a lease travels inside every chat stream, which should stay small.
    inner: Box<LeaseInner>,
}

struct LeaseInner {
    key: AccountKey,
    cap: Capability,
    actor: Addr<AccountActor>,
    supervisor: Addr<PoolSupervisor>,
    /// (token, credential) generations of the token handed out by [`Lease::auth`].
    generations: Option<(u64, u64)>,
    done: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("account", &self.inner.key)
            .field("cap", &self.inner.cap)
            .finish_non_exhaustive()
    }
}

impl Lease {
    pub(crate) fn new(
        key: AccountKey,
        cap: Capability,
        actor: Addr<AccountActor>,
        supervisor: Addr<PoolSupervisor>,
    ) -> Lease {
        Lease {
            inner: Box::new(LeaseInner {
                key,
                cap,
                actor,
                supervisor,
                generations: None,
                done: false,
            }),
        }
    }

    pub fn key(&self) -> &AccountKey {
        &self.inner.key
    }

    /// The account's log label (computed when asked: only failure paths log it).
    pub fn label(&self) -> String {
        self.inner.key.label()
    }

    /// The token for the upstream call (shared mint when none is usable).
    pub async fn auth(&mut self) -> Result<CallAuth, UpstreamError> {
        let grant = self
            .inner
            .actor
            .send(actor::Auth)
            .await
            .map_err(|_| actor::gone())??;
        self.inner.generations = Some((grant.token_generation, grant.credential_generation));
        Ok(grant.auth)
    }

    fn finish(&mut self, outcome: Outcome) {
        let inner = &mut self.inner;
        if inner.done {
            return;
        }
        inner.done = true;
        // `do_send` queues whatever the mailbox's fill (actix ignores the capacity for it): an
        // outcome is never dropped, and `Drop` cannot wait.
        inner.supervisor.do_send(supervisor::Finish {
            key: inner.key.clone(),
            cap: inner.cap,
            outcome,
        });
    }

    pub fn succeed(mut self) {
        self.finish(Outcome::Success);
    }

    pub fn fail(mut self, error: &UpstreamError) {
        let (token_generation, credential_generation) = match self.inner.generations {
            Some((t, c)) => (Some(t), Some(c)),
            None => (None, None),
        };
        self.finish(Outcome::Failed {
            error: error.clone(),
            token_generation,
            credential_generation,
        });
    }

    /// Gives the account back with no outcome: the attempt failed because of the request
    /// itself, so nothing is counted against the account (no failure, no cooldown, no last
    /// error).
    pub fn release(mut self) {
        self.finish(Outcome::Released);
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
