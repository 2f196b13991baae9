//! [`PoolSupervisor`]: one actix actor that chooses accounts for requests, applies outcomes
//! through the pure state machine ([`AccountStatus::apply`]), carries out the effects, schedules
//! token refreshes and hands state to the [`Persister`].
//!
//! Its bookkeeping (statuses, leases in flight, cooldown ends, daily counters, credential
//! generations) sits behind [`PoolState`]; what is local to this process (the account actors'
//! addresses, the refresh schedule, labels) sits in its own entries. Because one actor owns
//! the bookkeeping, leases, in-flight counts and daily caps are exact under any concurrency,
//! and no lock is shared with the request path.
//!
//! Messages (each documented with its reply): [`LeaseRequest`], [`Finish`],
//! [`RefreshStarted`], [`RefreshFinished`] (from the account actors), [`Snapshot`], [`Upsert`],
//! [`Remove`], [`ForceRefresh`], [`SetCooldowns`], [`Reconfigure`], [`Shutdown`].
//!
//! Timing: `ctx.run_interval` every [`TICK`] ends cooldowns, starts due refreshes and writes
//! changed state (at most one write transaction per tick).
//!
//! Supervision: started by [`actix::Supervisor`]; when the actor stops while addresses remain
//! (a failure), actix restarts it on the same mailbox and [`Supervised::restarting`] reloads
//! every account's status from the store, so the pool carries on from the persisted state.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use business2api_shared::AccountKey;
use rand::Rng as _;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::Lease;
use super::account_state::{
    AccountState, AccountStatus, Capability, DisabledReason, Effects, Event, Failure,
    FailurePolicy, LastError, PerCapability, UnixMs, ms,
};
use super::actor::{
    AccountActor, NewCredentials, Refresh, RefreshFinished, RefreshStarted, Shared, Stop,
};
use super::selection::{self, SelectionPolicy};
use super::state::{InProcessState, PoolState};
use crate::accounts::Credentials;
use crate::store::{StateBatch, Store};
use crate::upstream::{Authenticator, UpstreamError};

/// How often the supervisor looks at the clock.
pub const TICK: Duration = Duration::from_millis(100);
/// A proactive refresh happens this long before the token stops being usable, at the latest.
pub const REFRESH_LEAD: Duration = Duration::from_secs(30);
/// Proactive refreshes are spread by up to this much so that accounts do not mint in lockstep.
pub const REFRESH_JITTER: Duration = Duration::from_secs(20);
/// Capacity of the supervisor's mailbox for requests sent with `send` (which waits for room).
const MAILBOX: usize = 4096;

pub fn now_ms() -> UnixMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A stable, non-identifying label for logs (see [`AccountKey::label`]).
pub fn label_of(email: &str) -> String {
    AccountKey::new(email).label()
}

/// The key of an account as a string: its lower-cased, trimmed e-mail address (see
/// [`AccountKey`]).
pub fn key_of(email: &str) -> String {
    AccountKey::new(email).as_str().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Messages.

/// An account needs a browser re-login (sent to the sink set by [`SetReloginSink`]).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReloginWanted {
    pub account: AccountKey,
    /// The account's credential generation when the re-login was asked for; a failure reported
    /// for an older generation is ignored (the account got new credentials meanwhile).
    pub generation: u64,
}

/// Sends every `request_relogin` effect from now on to `0`, and at once one for every account
/// already waiting for a re-login.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetReloginSink(pub Recipient<ReloginWanted>);

impl Handler<SetReloginSink> for PoolSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SetReloginSink, _: &mut Context<Self>) {
        for (key, e) in &self.entries {
            if e.relogin_pending && e.relogin_due.is_none() {
                let _ = msg.0.try_send(ReloginWanted {
                    account: key.clone(),
                    generation: self.state.credential_generation(key),
                });
            }
        }
        self.relogin_sink = Some(msg.0);
    }
}

/// A re-login task ended without new credentials: its worker answered `failed`, it was leased
/// too often without a result, or its credentials were refused. Sent by the worker hub; counts
/// as one attempt of the account's re-login budget (`pool.browser_refresh_max_retry`, owned
/// here): the next attempt is requested, or `expired_action` applies. A success needs no
/// message: the new credentials arrive through the accounts service.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReloginAttemptFailed {
    pub account: AccountKey,
    /// The account's credential generation when the task was created (`None`: unknown, always
    /// counted). A failure of an older generation than the account's is ignored: the account got
    /// new credentials another way (an import, another task) after the task was created.
    pub generation: Option<u64>,
    /// Why, for the account's `last_error` (never a credential).
    pub error: String,
}

impl Handler<ReloginAttemptFailed> for PoolSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ReloginAttemptFailed, _: &mut Context<Self>) {
        let key = msg.account;
        let Some(label) = self.entries.get(&key).map(|e| e.label.clone()) else {
            return;
        };
        if let Some(g) = msg.generation
            && !self.current(&key, g, "a re-login failure")
        {
            tracing::info!(account = %label, "a re-login failure for older credentials; ignored");
            return;
        }
        let now = now_ms();
        tracing::warn!(account = %label, error = %crate::telemetry::untrusted(&msg.error), "re-login attempt failed");
        let was_waiting = matches!(
            self.state.status(&key).map(|s| s.state),
            Some(AccountState::NeedsRelogin { .. })
        );
        let event = Event::ReloginFailed {
            error: LastError::new(now, "relogin_failed", &msg.error),
        };
        let Some(fx) = self.state.apply(&key, event, now, &self.config.failure) else {
            return;
        };
        let state = self.state.status(&key).map(|s| s.state);
        let waiting = matches!(state, Some(AccountState::NeedsRelogin { .. }));
        if let Some(e) = self.entries.get_mut(&key)
            && !waiting
        {
            e.relogin_pending = false;
            e.relogin_due = None;
        }
        match state {
            _ if !was_waiting => {}
            Some(AccountState::NeedsRelogin { .. }) if !fx.request_relogin => {
                tracing::warn!(account = %label, "re-login attempts exhausted; another round after pool.relogin_retry_interval_sec");
            }
            Some(AccountState::Disabled {
                reason: DisabledReason::ReloginExhausted,
            }) => {
                tracing::warn!(account = %label, "re-login attempts exhausted; the account is disabled until the operator acts");
            }
            _ => {}
        }
        self.effects(&key, fx, None);
    }
}

/// A probe (a worker's token fetch with the account's credentials of `generation`) found the
/// credentials refused: applied as the same U1 refusal a failed token refresh is (the account
/// needs a re-login). A probe of older credentials is ignored.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ProbeRejected {
    pub account: AccountKey,
    pub generation: u64,
}

impl Handler<ProbeRejected> for PoolSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ProbeRejected, ctx: &mut Context<Self>) {
        let error = UpstreamError::new(
            crate::upstream::ErrorKind::CookiesInvalid,
            "getoxsrf",
            "a worker's probe: the token fetch refused the account's cookies",
        );
        <Self as Handler<RefreshFinished>>::handle(
            self,
            RefreshFinished {
                key: msg.account,
                generation: msg.generation,
                result: Err(error),
            },
            ctx,
        );
    }
}

/// How a leased attempt ended.
#[derive(Debug)]
pub enum Outcome {
    Success,
    /// The upstream call failed with the token and credentials of these generations.
    Failed {
        error: UpstreamError,
        token_generation: Option<u64>,
        credential_generation: Option<u64>,
    },
    /// No token could be minted (the mint's failure was already applied to the account).
    AuthFailed(UpstreamError),
    /// The caller went away before an outcome.
    Abandoned,
    /// The attempt failed because of the request itself (the upstream refused it, or the same
    /// failure followed it to a second account): released with no outcome for the account.
    Released,
}

/// Choose an account for `cap`, not one of `exclude`, and count the lease. Reply: the lease, or
/// when it is worth trying again. A lease that cannot be delivered (the caller went away) is
/// dropped, which reports it abandoned.
#[derive(Debug, Message)]
#[rtype(result = "Result<Lease, Duration>")]
pub struct LeaseRequest {
    pub cap: Capability,
    pub exclude: Vec<AccountKey>,
}

/// A leased attempt ended. Reply: none. Sent with `do_send` (also from `Drop`): actix queues
/// it whatever the mailbox's fill, so no lease is ever lost.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Finish {
    pub key: AccountKey,
    pub cap: Capability,
    pub outcome: Outcome,
}

/// Every account, for the admin API. Reply: the views, in key order.
#[derive(Debug, Message)]
#[rtype(result = "Vec<AccountView>")]
pub struct Snapshot;

/// How many accounts the pool holds, whatever their state. Reply: the count.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct Count;

/// Add or update accounts. Reply: `()` once they are in the pool.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Upsert(pub Vec<NewAccount>);

/// Remove accounts by e-mail (operator). Reply: the keys removed.
#[derive(Debug, Message)]
#[rtype(result = "Vec<String>")]
pub struct Remove(pub Vec<String>);

/// Mint new tokens for every account that can serve; old tokens stay in use meanwhile. Reply:
/// how many.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct ForceRefresh;

/// Change `refresh_cooldown_sec` / `use_cooldown_sec`. Reply: both values now in force.
#[derive(Debug, Message)]
#[rtype(result = "(Duration, Duration)")]
pub struct SetCooldowns {
    pub refresh: Option<Duration>,
    pub use_: Option<Duration>,
}

/// Replace the pool's knobs (live configuration). Reply: none. The size of the mint semaphore
/// (`refresh_concurrency`) is fixed at start.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub PoolConfig);

/// Write every state, stop the account actors and then the pool's actix system. Reply: `()`
/// once the state is on disk.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Test-only: stops the supervisor's context as a failure would, so actix restarts it.
#[cfg(test)]
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Crash;

// ---------------------------------------------------------------------------------------------
// Data.

/// One account as the admin API shows it. No credentials. Times are Unix milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    pub email: String,
    pub label: String,
    pub source_file: Option<String>,
    pub usable_credentials: bool,
    /// `ready`, `cooling_down`, `refreshing_token`, `needs_relogin` or `disabled`.
    pub state: &'static str,
    /// Cooling down: when it ends.
    pub state_until: Option<UnixMs>,
    /// Needs re-login: since when.
    pub state_since: Option<UnixMs>,
    pub state_reason: Option<String>,
    pub cooldowns: PerCapability<Option<super::account_state::Cooldown>>,
    pub counters: super::account_state::Counters,
    pub last_error: Option<LastError>,
    pub last_used: Option<UnixMs>,
    pub relogin_attempts: u32,
    pub in_flight: PerCapability<u32>,
    pub relogin_pending: bool,
    pub next_refresh: Option<UnixMs>,
    /// The whole status (for internal use; the fields above show it).
    #[serde(skip)]
    pub status: AccountStatus,
    /// The generation of the account's credentials (internal: tasks carry it).
    #[serde(skip)]
    pub credential_generation: u64,
}

/// An account joining (or updated in) the pool.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub email: String,
    pub source_file: Option<String>,
    /// Usable credentials, or why there are none.
    pub credentials: Result<Credentials, String>,
    /// Stored state from a previous run.
    pub status: Option<AccountStatus>,
    /// The credentials differ from what the pool had (import of an updated file).
    pub changed: bool,
    /// The account's own egress proxy (its record's `proxy`), overriding the proxy pool.
    pub proxy: Option<crate::config::ProxyUrl>,
}

/// The pool's knobs.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    pub selection: SelectionPolicy,
    pub failure: FailurePolicy,
    /// Time between two refreshes of one account (`refresh_cooldown_sec`).
    pub refresh_period: Duration,
    pub refresh_concurrency: usize,
    pub refresh_on_startup: bool,
    /// `pool.browser_refresh_backoff_sec`: the first wait after a failed re-login attempt.
    pub relogin_backoff: Duration,
}

/// The wait before the next re-login attempt after `failed` failed attempts of this round:
/// `base · 2^(failed-1)`, at most `cap`; none before the first attempt.
pub fn relogin_backoff(base: Duration, failed: u32, cap: Duration) -> Duration {
    if failed == 0 || base.is_zero() {
        return Duration::ZERO;
    }
    let factor = 1u32
        .checked_shl(failed.saturating_sub(1).min(20))
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(cap)
}

/// Where state goes.
#[derive(Clone)]
pub struct Persistence {
    pub store: Arc<Store>,
    /// Where account files live (deleted accounts' files are moved to `expired/` there).
    pub accounts_dir: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// The persister.

/// Writes pool state to redb on its own thread (a [`SyncArbiter`] of one), so the supervisor
/// never blocks on the disk. Messages: [`Write`] → `()`, [`Close`] → `()`.
pub struct Persister {
    persistence: Option<Persistence>,
}

impl Actor for Persister {
    type Context = SyncContext<Self>;
}

/// One batch: one redb transaction, then the account files to retire. Reply: `()` once done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Write {
    pub batch: StateBatch,
    pub retire: Vec<String>,
}

/// Release the store. Reply: `()` once released; later writes are dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

impl Handler<Write> for Persister {
    type Result = ();

    fn handle(&mut self, msg: Write, _: &mut Self::Context) {
        let Some(p) = &self.persistence else { return };
        if let Err(e) = p.store.write_states(&msg.batch) {
            tracing::error!(error = %e, "cannot persist the pool state");
        }
        for name in msg.retire {
            match super::files::retire_file(&p.accounts_dir, &name) {
                Ok(Some(to)) => {
                    tracing::info!(file = %crate::telemetry::untrusted(&name), moved_to = %crate::telemetry::untrusted(&to.display().to_string()), "account file retired");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(file = %crate::telemetry::untrusted(&name), error = %e, "cannot retire an account file");
                }
            }
        }
    }
}

impl Handler<Close> for Persister {
    type Result = ();

    fn handle(&mut self, _: Close, _: &mut Self::Context) {
        self.persistence = None;
    }
}

/// Starts the persister; must run inside an actix system.
fn start_persister(p: Persistence) -> Addr<Persister> {
    // The factory is `Fn` (a sync arbiter may call it again after a panic); the store is handed
    // over once so that `Close` really releases it.
    let slot = Mutex::new(Some(p));
    SyncArbiter::start(1, move || Persister {
        persistence: slot.lock().ok().and_then(|mut s| s.take()),
    })
}

// ---------------------------------------------------------------------------------------------
// The supervisor.

/// What only this process knows about an account.
struct Entry {
    email: String,
    label: String,
    source_file: Option<String>,
    actor: Option<Addr<AccountActor>>,
    refresh_due: Option<UnixMs>,
    relogin_pending: bool,
    /// When the next re-login attempt is asked for (a backoff after a failed one).
    relogin_due: Option<UnixMs>,
}

/// The pool supervisor actor.
pub struct PoolSupervisor {
    entries: HashMap<AccountKey, Entry>,
    state: Box<dyn PoolState>,
    config: PoolConfig,
    authenticator: Arc<dyn Authenticator>,
    egress: crate::egress::EgressPool,
    refresh_permits: Arc<Semaphore>,
    /// Accounts to add once the actor has its context (account actors need its address).
    initial: Vec<NewAccount>,
    store: Option<Arc<Store>>,
    persister: Option<Addr<Persister>>,
    /// A batch the persister had no room for; merged into the next one.
    pending: Option<StateBatch>,
    retire: Vec<String>,
    /// The pool's own actix system, stopped by [`Shutdown`].
    system: Option<System>,
    /// Where `request_relogin` effects go (server mode: the worker hub).
    relogin_sink: Option<Recipient<ReloginWanted>>,
}

impl PoolSupervisor {
    /// A supervisor for `accounts`; they join when the actor starts.
    pub fn new(
        config: PoolConfig,
        accounts: Vec<NewAccount>,
        authenticator: Arc<dyn Authenticator>,
        egress: crate::egress::EgressPool,
        persistence: Option<Persistence>,
    ) -> PoolSupervisor {
        PoolSupervisor {
            entries: HashMap::new(),
            state: Box::new(InProcessState::new()),
            refresh_permits: Arc::new(Semaphore::new(config.refresh_concurrency.max(1))),
            config,
            authenticator,
            egress,
            initial: accounts,
            store: persistence.as_ref().map(|p| Arc::clone(&p.store)),
            persister: persistence.map(start_persister),
            pending: None,
            retire: Vec::new(),
            system: None,
            relogin_sink: None,
        }
    }

    /// Stops this system too at [`Shutdown`] (the pool's dedicated thread).
    pub fn with_system(mut self, system: System) -> PoolSupervisor {
        self.system = Some(system);
        self
    }

    fn shared(&self, ctx: &Context<Self>) -> Shared {
        let me = ctx.address();
        Shared {
            authenticator: Arc::clone(&self.authenticator),
            egress: self.egress.clone(),
            refresh_permits: Arc::clone(&self.refresh_permits),
            started: me.clone().recipient(),
            finished: me.recipient(),
        }
    }

    fn spawn_actor(
        &self,
        key: &AccountKey,
        credentials: Credentials,
        generation: u64,
        ctx: &Context<Self>,
    ) -> Addr<AccountActor> {
        AccountActor::new(
            key.clone(),
            Arc::new(credentials),
            generation,
            self.shared(ctx),
        )
        .start()
    }

    fn upsert(&mut self, accounts: Vec<NewAccount>, at_start: bool, ctx: &Context<Self>) {
        let now = now_ms();
        let policy = self.config.failure;
        for a in accounts {
            let key = AccountKey::new(&a.email);
            // The account's route is settled before its first mint: its own proxy, or a pin.
            self.egress.set_override(&key, a.proxy.clone());
            self.egress.ensure_pins([&key]);
            if let Some(e) = self.entries.get_mut(&key) {
                e.email = a.email.clone();
                e.source_file = a.source_file.clone().or(e.source_file.take());
                if !a.changed {
                    continue;
                }
                match a.credentials {
                    Ok(credentials) => {
                        let generation = self.state.next_credential_generation(&key);
                        match &e.actor {
                            // `do_send`: queued even when the mailbox is full (never dropped).
                            Some(actor) => actor.do_send(NewCredentials {
                                credentials: Arc::new(credentials),
                                generation,
                            }),
                            None => {
                                let actor = self.spawn_actor(&key, credentials, generation, ctx);
                                if let Some(e) = self.entries.get_mut(&key) {
                                    e.actor = Some(actor);
                                }
                            }
                        }
                        if let Some(e) = self.entries.get_mut(&key) {
                            e.relogin_pending = false;
                            e.relogin_due = None;
                            e.refresh_due = Some(now);
                        }
                        if let Some(fx) =
                            self.state
                                .apply(&key, Event::CredentialsReplaced, now, &policy)
                        {
                            self.effects(&key, fx, None);
                        }
                    }
                    Err(reason) => {
                        if let Some(actor) = e.actor.take() {
                            actor.do_send(Stop);
                        }
                        self.state.apply(
                            &key,
                            Event::Disable {
                                reason: DisabledReason::UnusableCredentials(reason),
                            },
                            now,
                            &policy,
                        );
                    }
                }
                continue;
            }
            let mut status = a.status.unwrap_or_default();
            // A mint cannot survive a restart.
            if status.state == AccountState::RefreshingToken {
                status.state = AccountState::Ready;
            }
            let usable = a.credentials.is_ok();
            match &a.credentials {
                Ok(_) => {
                    if let AccountState::Disabled {
                        reason: DisabledReason::UnusableCredentials(_),
                    } = &status.state
                    {
                        status.state = AccountState::Ready;
                    }
                    if a.changed {
                        status.apply(Event::CredentialsReplaced, now, &policy);
                    }
                }
                Err(reason) => {
                    status.state = AccountState::Disabled {
                        reason: DisabledReason::UnusableCredentials(reason.clone()),
                    };
                }
            }
            let relogin_pending = matches!(status.state, AccountState::NeedsRelogin { .. });
            self.state.insert(key.clone(), status);
            let actor = match a.credentials {
                Ok(credentials) => {
                    let generation = self.state.credential_generation(&key);
                    Some(self.spawn_actor(&key, credentials, generation, ctx))
                }
                Err(_) => None,
            };
            let refresh_due =
                (usable && (!at_start || self.config.refresh_on_startup)).then_some(now);
            self.entries.insert(
                key.clone(),
                Entry {
                    label: key.label(),
                    email: a.email,
                    source_file: a.source_file,
                    actor,
                    refresh_due,
                    relogin_pending,
                    relogin_due: None,
                },
            );
        }
    }

    /// Carries out what a transition asks for.
    fn effects(&mut self, key: &AccountKey, fx: Effects, refused_token: Option<u64>) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        if fx.refresh_token
            && let Some(actor) = &e.actor
        {
            actor.do_send(Refresh {
                token_generation: refused_token,
            });
            e.refresh_due = None;
        }
        if fx.request_relogin && !e.relogin_pending {
            e.relogin_pending = true;
            tracing::warn!(account = %e.label, "cookies refused: the account waits for a re-login");
        }
        if fx.request_relogin {
            // After failed attempts of this round, wait: the backoff doubles per failure, at
            // most the retry interval. The first attempt of a round goes at once.
            let failed = self.state.status(key).map_or(0, |s| s.relogin_attempts);
            let delay = relogin_backoff(
                self.config.relogin_backoff,
                failed,
                self.config.failure.relogin_retry_interval,
            );
            if delay.is_zero() {
                e.relogin_due = None;
                let generation = self.state.credential_generation(key);
                if let Some(sink) = &self.relogin_sink
                    && sink
                        .try_send(ReloginWanted {
                            account: key.clone(),
                            generation,
                        })
                        .is_err()
                {
                    tracing::warn!(account = %e.label, "the worker hub did not take a re-login request");
                }
            } else {
                tracing::info!(account = %e.label, wait_s = delay.as_secs(), "next re-login attempt after a backoff");
                e.relogin_due = Some(now_ms().saturating_add(ms(delay)));
            }
        }
        if fx.delete {
            tracing::warn!(account = %e.label, "re-login exhausted: deleting the account (expired_action \"delete\")");
            self.remove(key);
        }
    }

    fn remove(&mut self, key: &AccountKey) -> bool {
        let Some(e) = self.entries.remove(key) else {
            return false;
        };
        self.egress.forget(key);
        if let Some(actor) = &e.actor {
            actor.do_send(Stop);
        }
        if let Some(f) = e.source_file {
            self.retire.push(f);
        }
        self.state.remove(key);
        true
    }

    /// Whether a result of credential generation `generation` still speaks for the account.
    fn current(&self, key: &AccountKey, generation: u64, what: &str) -> bool {
        let current = self.state.credential_generation(key);
        if generation != current {
            tracing::debug!(
                account = %key.label(),
                generation,
                current,
                "{what} of older credentials; ignored"
            );
            return false;
        }
        true
    }

    fn view(&self, key: &AccountKey, e: &Entry) -> Option<AccountView> {
        let status = self.state.status(key)?;
        Some(AccountView {
            email: e.email.clone(),
            label: e.label.clone(),
            source_file: e.source_file.clone(),
            usable_credentials: e.actor.is_some(),
            state: status.state.name(),
            state_until: match &status.state {
                AccountState::CoolingDown { until, .. } => Some(*until),
                _ => None,
            },
            state_since: match &status.state {
                AccountState::NeedsRelogin { since, .. } => Some(*since),
                _ => None,
            },
            state_reason: match &status.state {
                AccountState::CoolingDown { reason, .. } => serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned)),
                AccountState::NeedsRelogin { reason, .. } => Some(reason.clone()),
                AccountState::Disabled { reason } => Some(reason.to_string()),
                _ => None,
            },
            cooldowns: status.cooldowns,
            counters: status.counters,
            last_error: status.last_error.clone(),
            last_used: status.last_used,
            relogin_attempts: status.relogin_attempts,
            in_flight: self.state.in_flight(key),
            relogin_pending: e.relogin_pending,
            next_refresh: e.refresh_due,
            status,
            credential_generation: self.state.credential_generation(key),
        })
    }

    fn tick(&mut self) {
        let now = now_ms();
        let policy = self.config.failure;
        let keys: Vec<AccountKey> = self.entries.keys().cloned().collect();
        for key in keys {
            if let Some(fx) = self.state.apply(&key, Event::Tick, now, &policy)
                && fx != Effects::default()
            {
                self.effects(&key, fx, None);
            }
            let waiting = self
                .state
                .status(&key)
                .is_some_and(|s| matches!(s.state, AccountState::NeedsRelogin { .. }));
            let generation = self.state.credential_generation(&key);
            if let Some(e) = self.entries.get_mut(&key)
                && let Some(due) = e.relogin_due
                && due <= now
            {
                e.relogin_due = None;
                if waiting
                    && e.relogin_pending
                    && let Some(sink) = &self.relogin_sink
                {
                    let _ = sink.try_send(ReloginWanted {
                        account: key.clone(),
                        generation,
                    });
                }
            }
            let ready = self
                .state
                .status(&key)
                .is_some_and(|s| s.state == AccountState::Ready);
            if let Some(e) = self.entries.get_mut(&key)
                && let (Some(due), Some(actor)) = (e.refresh_due, &e.actor)
                && due <= now
                && ready
            {
                actor.do_send(Refresh {
                    token_generation: None,
                });
                e.refresh_due = None;
            }
        }
        self.flush(false);
    }

    /// Hands changed state to the persister (all state with `all`).
    fn flush(&mut self, all: bool) {
        let mut batch = self.state.take_changes(all);
        let Some(persister) = &self.persister else {
            self.retire.clear();
            return;
        };
        if let Some(mut pending) = self.pending.take() {
            // Older first: a later status of the same account overwrites it in the transaction.
            pending.states.append(&mut batch.states);
            pending.deleted.append(&mut batch.deleted);
            batch = pending;
        }
        if batch.states.is_empty() && batch.deleted.is_empty() && self.retire.is_empty() {
            return;
        }
        let msg = Write {
            batch,
            retire: std::mem::take(&mut self.retire),
        };
        match persister.try_send(msg) {
            Ok(()) => {}
            Err(SendError::Full(Write { batch, retire })) => {
                // The disk is behind; keep the work for the next tick.
                self.pending = Some(batch);
                self.retire = retire;
            }
            Err(SendError::Closed(_)) => {}
        }
    }

    /// Replaces every status with the stored one (after a restart).
    fn reload(&mut self) {
        let Some(store) = &self.store else { return };
        // A blocking read, on the pool's own thread (never an HTTP worker), and only on restart.
        let stored = match store.states() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot reload the pool state after a restart");
                return;
            }
        };
        let mut n = 0;
        for (key, status) in stored {
            let key = AccountKey::new(&key);
            if let (true, Ok(mut status)) = (self.entries.contains_key(&key), status) {
                if status.state == AccountState::RefreshingToken {
                    status.state = AccountState::Ready;
                }
                self.state.insert(key, status);
                n += 1;
            }
        }
        tracing::warn!(
            accounts = n,
            "pool supervisor restarted from the persisted state"
        );
    }
}

impl Actor for PoolSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        let initial = std::mem::take(&mut self.initial);
        if !initial.is_empty() {
            self.upsert(initial, true, ctx);
        }
        ctx.run_interval(TICK, |act, _| act.tick());
    }
}

impl Supervised for PoolSupervisor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.reload();
    }
}

impl Handler<LeaseRequest> for PoolSupervisor {
    type Result = Result<Lease, Duration>;

    fn handle(&mut self, msg: LeaseRequest, ctx: &mut Self::Context) -> Self::Result {
        let now = now_ms();
        let entries = &self.entries;
        let skip = |k: &AccountKey| {
            msg.exclude.contains(k) || entries.get(k).is_none_or(|e| e.actor.is_none())
        };
        let key = self
            .state
            .lease(msg.cap, now, &self.config.selection, &skip)?;
        let Some(e) = self.entries.get(&key) else {
            self.state.release(&key, msg.cap);
            return Err(selection::NO_ACCOUNT_RETRY);
        };
        let Some(actor) = e.actor.clone() else {
            self.state.release(&key, msg.cap);
            return Err(selection::NO_ACCOUNT_RETRY);
        };
        Ok(Lease::new(key, msg.cap, actor, ctx.address()))
    }
}

impl Handler<Finish> for PoolSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Finish, _: &mut Self::Context) {
        let now = now_ms();
        let Finish { key, cap, outcome } = msg;
        self.state.release(&key, cap);
        let (event, refused_token) = match outcome {
            Outcome::Success => (Event::RequestSucceeded { cap }, None),
            Outcome::Failed {
                error,
                token_generation,
                credential_generation,
            } => {
                if let Some(g) = credential_generation
                    && !self.current(&key, g, "a failed call")
                {
                    return;
                }
                (
                    Event::RequestFailed {
                        cap,
                        failure: Failure::of(&error),
                        error: LastError::of(now, &error),
                    },
                    token_generation,
                )
            }
            Outcome::AuthFailed(error) => (
                Event::RequestFailed {
                    cap,
                    failure: Failure::NotAccount,
                    error: LastError::of(now, &error),
                },
                None,
            ),
            Outcome::Abandoned | Outcome::Released => return,
        };
        if let Some(fx) = self.state.apply(&key, event, now, &self.config.failure) {
            self.effects(&key, fx, refused_token);
        }
    }
}

impl Handler<RefreshStarted> for PoolSupervisor {
    type Result = ();

    fn handle(&mut self, msg: RefreshStarted, _: &mut Self::Context) {
        if !self.current(&msg.key, msg.generation, "a mint start") {
            return;
        }
        let now = now_ms();
        if let Some(fx) =
            self.state
                .apply(&msg.key, Event::RefreshStarted, now, &self.config.failure)
        {
            self.effects(&msg.key, fx, None);
        }
    }
}

impl Handler<RefreshFinished> for PoolSupervisor {
    type Result = ();

    fn handle(&mut self, msg: RefreshFinished, _: &mut Self::Context) {
        let RefreshFinished {
            key,
            generation,
            result,
        } = msg;
        if !self.current(&key, generation, "a mint result") {
            return;
        }
        let now = now_ms();
        let policy = self.config.failure;
        // Refresh before the token stops being usable (its lifetime is the upstream's word).
        let period = |usable: Duration| {
            self.config
                .refresh_period
                .min(usable.saturating_sub(REFRESH_LEAD))
        };
        let Some(label) = self.entries.get(&key).map(|e| e.label.clone()) else {
            return;
        };
        let (fx, due) = match result {
            Ok(usable) => {
                let jitter = rand::rng().random_range(0..=ms(REFRESH_JITTER));
                let due = (now + ms(period(usable)))
                    .saturating_sub(jitter)
                    .max(now + 1000);
                (
                    self.state
                        .apply(&key, Event::RefreshSucceeded, now, &policy),
                    Some(due),
                )
            }
            Err(error) => {
                tracing::warn!(account = %label, error = %error, "token refresh failed");
                let fx = self.state.apply(
                    &key,
                    Event::RefreshFailed {
                        failure: Failure::of(&error),
                        error: LastError::of(now, &error),
                    },
                    now,
                    &policy,
                );
                let due = match self.state.status(&key).map(|s| s.state) {
                    Some(AccountState::CoolingDown { until, .. }) => Some(until),
                    _ => None,
                };
                (fx, due)
            }
        };
        if let Some(e) = self.entries.get_mut(&key) {
            e.refresh_due = due;
        }
        if let Some(fx) = fx {
            self.effects(&key, fx, None);
        }
    }
}

impl Handler<Count> for PoolSupervisor {
    type Result = usize;

    fn handle(&mut self, _: Count, _: &mut Self::Context) -> usize {
        self.entries.len()
    }
}

impl Handler<Snapshot> for PoolSupervisor {
    type Result = Vec<AccountView>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Vec<AccountView> {
        let mut keys: Vec<&AccountKey> = self.entries.keys().collect();
        keys.sort();
        keys.into_iter()
            .filter_map(|k| self.entries.get(k).and_then(|e| self.view(k, e)))
            .collect()
    }
}

impl Handler<Upsert> for PoolSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Upsert, ctx: &mut Self::Context) {
        self.upsert(msg.0, false, ctx);
    }
}

impl Handler<Remove> for PoolSupervisor {
    type Result = Vec<String>;

    fn handle(&mut self, msg: Remove, _: &mut Self::Context) -> Vec<String> {
        msg.0
            .iter()
            .map(|e| AccountKey::new(e))
            .filter(|k| self.remove(k))
            .map(|k| k.as_str().to_owned())
            .collect()
    }
}

impl Handler<ForceRefresh> for PoolSupervisor {
    type Result = usize;

    fn handle(&mut self, _: ForceRefresh, _: &mut Self::Context) -> usize {
        let mut n = 0;
        for (key, e) in &mut self.entries {
            let serving = self.state.status(key).is_some_and(|s| {
                matches!(
                    s.state,
                    AccountState::Ready | AccountState::CoolingDown { .. }
                )
            });
            if let (true, Some(actor)) = (serving, &e.actor) {
                actor.do_send(Refresh {
                    token_generation: None,
                });
                e.refresh_due = None;
                n += 1;
            }
        }
        n
    }
}

impl Handler<SetCooldowns> for PoolSupervisor {
    type Result = MessageResult<SetCooldowns>;

    fn handle(&mut self, msg: SetCooldowns, _: &mut Self::Context) -> Self::Result {
        if let Some(r) = msg.refresh {
            self.config.refresh_period = r;
        }
        if let Some(u) = msg.use_ {
            self.config.selection.use_cooldown = u;
        }
        MessageResult((
            self.config.refresh_period,
            self.config.selection.use_cooldown,
        ))
    }
}

impl Handler<Reconfigure> for PoolSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Reconfigure, _: &mut Self::Context) {
        self.config = msg.0;
    }
}

impl Handler<Shutdown> for PoolSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        for e in self.entries.values() {
            if let Some(actor) = &e.actor {
                actor.do_send(Stop);
            }
        }
        let mut batch = self.state.take_changes(true);
        if let Some(mut pending) = self.pending.take() {
            pending.states.append(&mut batch.states);
            pending.deleted.append(&mut batch.deleted);
            batch = pending;
        }
        let retire = std::mem::take(&mut self.retire);
        let persister = self.persister.take();
        self.store = None;
        let system = self.system.take();
        Box::pin(async move {
            if let Some(persister) = persister {
                let _ = persister.send(Write { batch, retire }).await;
                let _ = persister.send(Close).await;
            }
            if let Some(system) = system {
                system.stop();
            }
        })
    }
}

#[cfg(test)]
impl Handler<Crash> for PoolSupervisor {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn the_relogin_backoff_doubles_per_failed_attempt_up_to_the_cap() {
        let base = Duration::from_secs(60);
        let cap = Duration::from_secs(3600);
        let waits: Vec<u64> = (0..9)
            .map(|n| relogin_backoff(base, n, cap).as_secs())
            .collect();
        assert_eq!(waits, [0, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(relogin_backoff(base, u32::MAX, cap), cap);
        assert_eq!(relogin_backoff(Duration::ZERO, 3, cap), Duration::ZERO);
    }
}
