//! The pool supervisor: one task that owns every account's [`AccountStatus`], chooses accounts
//! for requests, applies outcomes through the pure state machine, schedules token refreshes and
//! hands state to the persister.
//!
//! Because one task owns all the bookkeeping, leases, in-flight counts and daily caps are exact
//! under any concurrency, and no lock is shared with the request path.
//!
//! Messages ([`Command`]) — see each variant. Timing: a tick every [`TICK`] ends cooldowns,
//! starts due refreshes and writes changed state (at most one write transaction per tick).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::account_state::{
    AccountState, AccountStatus, Capability, Effects, Event, Failure, FailurePolicy, LastError,
    PerCapability, UnixMs, ms,
};
use super::actor::{self, AccountHandle, AccountMsg, ActorContext};
use super::selection::{self, Candidate, Choice, SelectionPolicy};
use crate::accounts::Credentials;
use crate::store::{StateBatch, Store};
use crate::upstream::Authenticator;
use crate::upstream::UpstreamError;
use crate::upstream::gemini_business::client::TOKEN_USE_WINDOW;

/// How often the supervisor looks at the clock.
pub const TICK: Duration = Duration::from_millis(100);
/// A proactive refresh happens this long before the token stops being usable, at the latest.
pub const REFRESH_LEAD: Duration = Duration::from_secs(30);
/// Proactive refreshes are spread by up to this much so that accounts do not mint in lockstep.
pub const REFRESH_JITTER: Duration = Duration::from_secs(20);
/// Capacity of the supervisor's mailbox.
const MAILBOX: usize = 4096;

pub fn now_ms() -> UnixMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How a leased attempt ended.
#[derive(Debug)]
pub enum Outcome {
    Success,
    /// The upstream call failed; `generation` is the token generation the call used.
    Failed {
        error: UpstreamError,
        generation: Option<u64>,
    },
    /// No token could be minted (the mint's failure was already applied to the account).
    AuthFailed(UpstreamError),
    /// The caller went away before an outcome.
    Abandoned,
}

/// A granted lease, as the supervisor hands it out.
#[derive(Debug)]
pub struct Grant {
    pub key: Arc<str>,
    pub email: String,
    pub label: String,
    pub handle: AccountHandle,
}

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
}

/// Messages the supervisor understands.
pub enum Command {
    /// Choose an account for `cap`, not one of `exclude`.
    Lease {
        cap: Capability,
        exclude: Vec<Arc<str>>,
        reply: oneshot::Sender<Result<Grant, Duration>>,
    },
    /// A leased attempt ended.
    Finish {
        key: Arc<str>,
        cap: Capability,
        outcome: Outcome,
    },
    RefreshStarted {
        key: Arc<str>,
    },
    RefreshFinished {
        key: Arc<str>,
        result: Result<(), UpstreamError>,
    },
    Snapshot {
        reply: oneshot::Sender<Vec<AccountView>>,
    },
    Upsert {
        accounts: Vec<NewAccount>,
        reply: oneshot::Sender<()>,
    },
    /// Remove accounts (operator); replies with the e-mails removed.
    Remove {
        keys: Vec<String>,
        reply: oneshot::Sender<Vec<String>>,
    },
    /// Mint new tokens for every account that can serve; old tokens stay in use meanwhile.
    ForceRefresh {
        reply: oneshot::Sender<usize>,
    },
    SetCooldowns {
        refresh: Option<Duration>,
        use_: Option<Duration>,
        reply: oneshot::Sender<(Duration, Duration)>,
    },
    /// Replace the pool's policy (configuration reload). Applies from the next lease, outcome
    /// and tick; the refresh concurrency stays as started (its semaphore is sized once).
    Reconfigure {
        config: PoolConfig,
        reply: oneshot::Sender<()>,
    },
    /// Write everything and stop.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
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
}

/// Where state goes.
pub struct Persistence {
    pub store: Arc<Store>,
    /// Where account files live (deleted accounts' files are moved to `expired/` there).
    pub accounts_dir: PathBuf,
}

enum PersistMsg {
    Write {
        batch: StateBatch,
        retire: Vec<String>,
    },
    /// Release the store and confirm: the last message.
    Close(oneshot::Sender<()>),
}

struct Entry {
    key: Arc<str>,
    email: String,
    label: String,
    source_file: Option<String>,
    status: AccountStatus,
    in_flight: PerCapability<u32>,
    handle: Option<AccountHandle>,
    refresh_due: Option<UnixMs>,
    relogin_pending: bool,
}

struct Supervisor {
    entries: Vec<Entry>,
    index: HashMap<Arc<str>, usize>,
    cursor: usize,
    config: PoolConfig,
    ctx: ActorContext,
    persist: Option<mpsc::Sender<PersistMsg>>,
    dirty: HashSet<Arc<str>>,
    deleted: Vec<String>,
    retire: Vec<String>,
}

/// A stable, non-identifying label for logs: `acct-` and 8 hex digits of the SHA-256 of the
/// lower-cased e-mail address.
pub fn label_of(email: &str) -> String {
    business2api_shared::AccountKey::new(email).label()
}

/// The key of an account: its lower-cased, trimmed e-mail address.
pub fn key_of(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Starts the supervisor (and the persister when `persistence` is given).
pub fn start(
    config: PoolConfig,
    accounts: Vec<NewAccount>,
    authenticator: Arc<dyn Authenticator>,
    persistence: Option<Persistence>,
) -> mpsc::Sender<Command> {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let persist = persistence.map(|p| {
        let (ptx, prx) = mpsc::channel(64);
        tokio::spawn(persister(p, prx));
        ptx
    });
    let ctx = ActorContext {
        authenticator,
        refresh_permits: Arc::new(Semaphore::new(config.refresh_concurrency.max(1))),
        supervisor: tx.clone(),
    };
    let mut sup = Supervisor {
        entries: Vec::new(),
        index: HashMap::new(),
        cursor: 0,
        config,
        ctx,
        persist,
        dirty: HashSet::new(),
        deleted: Vec::new(),
        retire: Vec::new(),
    };
    sup.upsert(accounts, true);
    tokio::spawn(sup.run(rx));
    tx
}

async fn persister(p: Persistence, mut rx: mpsc::Receiver<PersistMsg>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            PersistMsg::Write { batch, retire } => {
                let store = Arc::clone(&p.store);
                let dir = p.accounts_dir.clone();
                let done = tokio::task::spawn_blocking(move || {
                    if let Err(e) = store.write_states(&batch) {
                        tracing::error!(error = %e, "cannot persist the pool state");
                    }
                    for name in retire {
                        match super::files::retire_file(&dir, &name) {
                            Ok(Some(to)) => {
                                tracing::info!(file = %name, moved_to = %to.display(), "account file retired");
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::error!(file = %name, error = %e, "cannot retire an account file");
                            }
                        }
                    }
                })
                .await;
                if let Err(e) = done {
                    tracing::error!(error = %e, "the persistence task failed");
                }
            }
            PersistMsg::Close(reply) => {
                drop(p);
                let _ = reply.send(());
                return;
            }
        }
    }
}

impl Supervisor {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.shutdown().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.handle(cmd),
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                _ = tick.tick() => self.tick(),
            }
        }
    }

    fn reindex(&mut self) {
        self.entries.sort_by(|a, b| a.key.cmp(&b.key));
        self.index = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (Arc::clone(&e.key), i))
            .collect();
    }

    fn upsert(&mut self, accounts: Vec<NewAccount>, at_start: bool) {
        let now = now_ms();
        for a in accounts {
            let key: Arc<str> = Arc::from(key_of(&a.email));
            if let Some(&i) = self.index.get(&key) {
                let Some(e) = self.entries.get_mut(i) else {
                    continue;
                };
                e.email = a.email.clone();
                e.source_file = a.source_file.clone().or(e.source_file.take());
                if !a.changed {
                    continue;
                }
                match a.credentials {
                    Ok(credentials) => {
                        match &e.handle {
                            Some(h) => h.send(AccountMsg::Credentials(Box::new(credentials))),
                            None => {
                                e.handle = Some(actor::spawn(
                                    Arc::clone(&key),
                                    credentials,
                                    self.ctx.clone(),
                                ));
                            }
                        }
                        let fx =
                            e.status
                                .apply(Event::CredentialsReplaced, now, &self.config.failure);
                        e.relogin_pending = false;
                        e.refresh_due = Some(now);
                        if fx.changed {
                            self.dirty.insert(Arc::clone(&key));
                        }
                    }
                    Err(reason) => {
                        if let Some(h) = e.handle.take() {
                            h.send(AccountMsg::Stop);
                        }
                        e.status.apply(
                            Event::Disable {
                                reason: format!("unusable credentials: {reason}"),
                            },
                            now,
                            &self.config.failure,
                        );
                        self.dirty.insert(Arc::clone(&key));
                    }
                }
                continue;
            }
            let mut status = a.status.unwrap_or_default();
            // A mint cannot survive a restart.
            if status.state == AccountState::RefreshingToken {
                status.state = AccountState::Ready;
            }
            let (handle, refresh_due) = match a.credentials {
                Ok(credentials) => {
                    if let AccountState::Disabled { reason } = &status.state
                        && reason.starts_with("unusable credentials")
                    {
                        status.state = AccountState::Ready;
                    }
                    if a.changed {
                        status.apply(Event::CredentialsReplaced, now, &self.config.failure);
                    }
                    let due = (!at_start || self.config.refresh_on_startup).then_some(now);
                    (
                        Some(actor::spawn(
                            Arc::clone(&key),
                            credentials,
                            self.ctx.clone(),
                        )),
                        due,
                    )
                }
                Err(reason) => {
                    status.state = AccountState::Disabled {
                        reason: format!("unusable credentials: {reason}"),
                    };
                    (None, None)
                }
            };
            self.dirty.insert(Arc::clone(&key));
            self.entries.push(Entry {
                key,
                label: label_of(&a.email),
                email: a.email,
                source_file: a.source_file,
                relogin_pending: matches!(status.state, AccountState::NeedsRelogin { .. }),
                status,
                in_flight: PerCapability::default(),
                handle,
                refresh_due,
            });
        }
        self.reindex();
    }

    fn entry(&mut self, key: &str) -> Option<&mut Entry> {
        let i = *self.index.get(key)?;
        self.entries.get_mut(i)
    }

    /// Carries out what a transition asks for.
    fn effects(&mut self, key: &Arc<str>, fx: Effects, refused_generation: Option<u64>) {
        if fx.changed {
            self.dirty.insert(Arc::clone(key));
        }
        let Some(e) = self.entry(key) else { return };
        if fx.refresh_token
            && let Some(h) = &e.handle
        {
            h.send(AccountMsg::Refresh {
                generation: refused_generation,
            });
            e.refresh_due = None;
        }
        if fx.request_relogin && !e.relogin_pending {
            e.relogin_pending = true;
            tracing::warn!(account = %e.label, "cookies refused: the account waits for a re-login");
        }
        if fx.delete {
            tracing::warn!(account = %e.label, "re-login exhausted: deleting the account (expired_action \"delete\")");
            let key = Arc::clone(key);
            self.remove(&key);
        }
    }

    fn remove(&mut self, key: &str) -> bool {
        let Some(&i) = self.index.get(key) else {
            return false;
        };
        if i >= self.entries.len() {
            return false;
        }
        let e = self.entries.remove(i);
        if let Some(h) = &e.handle {
            h.send(AccountMsg::Stop);
        }
        if let Some(f) = e.source_file {
            self.retire.push(f);
        }
        self.dirty.remove(&e.key);
        self.deleted.push(e.key.to_string());
        self.reindex();
        true
    }

    fn handle(&mut self, cmd: Command) {
        let now = now_ms();
        match cmd {
            Command::Lease {
                cap,
                exclude,
                reply,
            } => {
                let candidates: Vec<Candidate<'_>> = self
                    .entries
                    .iter()
                    .map(|e| Candidate {
                        status: &e.status,
                        in_flight: e.in_flight,
                        excluded: e.handle.is_none() || exclude.contains(&e.key),
                    })
                    .collect();
                let choice = selection::select(
                    &candidates,
                    cap,
                    now,
                    &self.config.selection,
                    &mut self.cursor,
                );
                let result = match choice {
                    Choice::Picked(i) => match self.entries.get_mut(i) {
                        Some(e) => match &e.handle {
                            Some(handle) => {
                                *e.in_flight.get_mut(cap) += 1;
                                e.status.last_used = Some(now);
                                self.dirty.insert(Arc::clone(&e.key));
                                Ok(Grant {
                                    key: Arc::clone(&e.key),
                                    email: e.email.clone(),
                                    label: e.label.clone(),
                                    handle: handle.clone(),
                                })
                            }
                            None => Err(selection::NO_ACCOUNT_RETRY),
                        },
                        None => Err(selection::NO_ACCOUNT_RETRY),
                    },
                    Choice::Unavailable { retry_after } => Err(retry_after),
                };
                if let Err(Ok(grant)) = reply.send(result) {
                    // The requester went away: undo.
                    if let Some(e) = self.entry(&grant.key) {
                        let n = e.in_flight.get_mut(cap);
                        *n = n.saturating_sub(1);
                    }
                }
            }
            Command::Finish { key, cap, outcome } => {
                let failure_policy = self.config.failure;
                let Some(e) = self.entry(&key) else { return };
                let n = e.in_flight.get_mut(cap);
                *n = n.saturating_sub(1);
                let (event, generation) = match outcome {
                    Outcome::Success => (Event::RequestSucceeded { cap }, None),
                    Outcome::Failed { error, generation } => (
                        Event::RequestFailed {
                            cap,
                            failure: Failure::of(&error),
                            error: LastError::of(now, &error),
                        },
                        generation,
                    ),
                    Outcome::AuthFailed(error) => (
                        Event::RequestFailed {
                            cap,
                            failure: Failure::NotAccount,
                            error: LastError::of(now, &error),
                        },
                        None,
                    ),
                    Outcome::Abandoned => return,
                };
                let fx = e.status.apply(event, now, &failure_policy);
                self.effects(&key, fx, generation);
            }
            Command::RefreshStarted { key } => {
                let p = self.config.failure;
                let Some(e) = self.entry(&key) else { return };
                let fx = e.status.apply(Event::RefreshStarted, now, &p);
                self.effects(&key, fx, None);
            }
            Command::RefreshFinished { key, result } => {
                let p = self.config.failure;
                let period = self
                    .config
                    .refresh_period
                    .min(TOKEN_USE_WINDOW.saturating_sub(REFRESH_LEAD));
                let Some(e) = self.entry(&key) else { return };
                let fx = match result {
                    Ok(()) => {
                        let jitter = rand::rng().random_range(0..=ms(REFRESH_JITTER));
                        e.refresh_due =
                            Some((now + ms(period)).saturating_sub(jitter).max(now + 1000));
                        e.status.apply(Event::RefreshSucceeded, now, &p)
                    }
                    Err(error) => {
                        tracing::warn!(account = %e.label, error = %error, "token refresh failed");
                        let fx = e.status.apply(
                            Event::RefreshFailed {
                                failure: Failure::of(&error),
                                error: LastError::of(now, &error),
                            },
                            now,
                            &p,
                        );
                        e.refresh_due = match e.status.state {
                            AccountState::CoolingDown { until, .. } => Some(until),
                            _ => None,
                        };
                        fx
                    }
                };
                self.effects(&key, fx, None);
            }
            Command::Snapshot { reply } => {
                let views = self
                    .entries
                    .iter()
                    .map(|e| AccountView {
                        email: e.email.clone(),
                        label: e.label.clone(),
                        source_file: e.source_file.clone(),
                        usable_credentials: e.handle.is_some(),
                        state: e.status.state.name(),
                        state_until: match &e.status.state {
                            AccountState::CoolingDown { until, .. } => Some(*until),
                            _ => None,
                        },
                        state_since: match &e.status.state {
                            AccountState::NeedsRelogin { since, .. } => Some(*since),
                            _ => None,
                        },
                        state_reason: match &e.status.state {
                            AccountState::CoolingDown { reason, .. } => {
                                serde_json::to_value(reason)
                                    .ok()
                                    .and_then(|v| v.as_str().map(str::to_owned))
                            }
                            AccountState::NeedsRelogin { reason, .. }
                            | AccountState::Disabled { reason } => Some(reason.clone()),
                            _ => None,
                        },
                        cooldowns: e.status.cooldowns,
                        counters: e.status.counters,
                        last_error: e.status.last_error.clone(),
                        last_used: e.status.last_used,
                        relogin_attempts: e.status.relogin_attempts,
                        status: e.status.clone(),
                        in_flight: e.in_flight,
                        relogin_pending: e.relogin_pending,
                        next_refresh: e.refresh_due,
                    })
                    .collect();
                let _ = reply.send(views);
            }
            Command::Upsert { accounts, reply } => {
                self.upsert(accounts, false);
                let _ = reply.send(());
            }
            Command::Remove { keys, reply } => {
                let mut removed = Vec::new();
                for k in keys {
                    let k = key_of(&k);
                    if self.remove(&k) {
                        removed.push(k);
                    }
                }
                let _ = reply.send(removed);
            }
            Command::ForceRefresh { reply } => {
                let mut n = 0;
                for e in &mut self.entries {
                    let serving = matches!(
                        e.status.state,
                        AccountState::Ready | AccountState::CoolingDown { .. }
                    );
                    if let (true, Some(h)) = (serving, &e.handle) {
                        h.send(AccountMsg::Refresh { generation: None });
                        e.refresh_due = None;
                        n += 1;
                    }
                }
                let _ = reply.send(n);
            }
            Command::SetCooldowns {
                refresh,
                use_,
                reply,
            } => {
                if let Some(r) = refresh {
                    self.config.refresh_period = r;
                }
                if let Some(u) = use_ {
                    self.config.selection.use_cooldown = u;
                }
                let _ = reply.send((
                    self.config.refresh_period,
                    self.config.selection.use_cooldown,
                ));
            }
            Command::Reconfigure { config, reply } => {
                let refresh_concurrency = self.config.refresh_concurrency;
                self.config = PoolConfig {
                    refresh_concurrency,
                    ..config
                };
                let _ = reply.send(());
            }
            // `run` handles Shutdown before dispatching here (it needs to await the writes).
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    fn tick(&mut self) {
        let now = now_ms();
        let p = self.config.failure;
        let mut pending = Vec::new();
        for e in &mut self.entries {
            let fx = e.status.apply(Event::Tick, now, &p);
            if fx != Effects::default() {
                pending.push((Arc::clone(&e.key), fx));
            }
            if let (Some(due), Some(h)) = (e.refresh_due, &e.handle)
                && due <= now
                && e.status.state == AccountState::Ready
            {
                h.send(AccountMsg::Refresh { generation: None });
                e.refresh_due = None;
            }
        }
        for (key, fx) in pending {
            self.effects(&key, fx, None);
        }
        self.flush(false);
    }

    /// Hands changed state to the persister (all state with `all`).
    fn flush(&mut self, all: bool) {
        let Some(persist) = &self.persist else {
            self.dirty.clear();
            return;
        };
        if !all && self.dirty.is_empty() && self.deleted.is_empty() && self.retire.is_empty() {
            return;
        }
        let states = self
            .entries
            .iter()
            .filter(|e| all || self.dirty.contains(&e.key))
            .map(|e| (e.key.to_string(), e.status.clone()))
            .collect();
        let msg = PersistMsg::Write {
            batch: StateBatch {
                states,
                deleted: std::mem::take(&mut self.deleted),
            },
            retire: std::mem::take(&mut self.retire),
        };
        match persist.try_send(msg) {
            Ok(()) => self.dirty.clear(),
            Err(mpsc::error::TrySendError::Full(PersistMsg::Write { batch, retire })) => {
                // The disk is behind; keep the work for the next tick.
                self.deleted = batch.deleted;
                self.retire = retire;
            }
            Err(_) => {}
        }
    }

    async fn shutdown(&mut self) {
        for e in &self.entries {
            if let Some(h) = &e.handle {
                h.send(AccountMsg::Stop);
            }
        }
        let Some(persist) = self.persist.clone() else {
            return;
        };
        let states = self
            .entries
            .iter()
            .map(|e| {
                let mut s = e.status.clone();
                if s.state == AccountState::RefreshingToken {
                    s.state = AccountState::Ready;
                }
                (e.key.to_string(), s)
            })
            .collect();
        let batch = StateBatch {
            states,
            deleted: std::mem::take(&mut self.deleted),
        };
        let retire = std::mem::take(&mut self.retire);
        let _ = persist.send(PersistMsg::Write { batch, retire }).await;
        let (tx, rx) = oneshot::channel();
        if persist.send(PersistMsg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        self.dirty.clear();
        self.persist = None;
    }
}
