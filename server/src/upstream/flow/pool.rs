//! The Flow token pool: one actix actor per session token ([`TokenActor`]: its access token,
//! minted single-flight and reused until shortly before it expires; its project; its credits)
//! and one supervisor ([`FlowSupervisor`]: which tokens exist, their state, selection,
//! outcomes, persistence, the background refresh). Like the account pool it runs on its own
//! thread with its own actix system ([`FlowPool::start`]); the request path sees [`FlowPool`]
//! and [`TokenHandle`].
//!
//! Selection (spec §1): among active tokens not cooling down and with fewer than
//! [`MAX_ERRORS`] consecutive errors, the least recently used. Outcomes are typed
//! ([`FlowPool::report`]): a refused session disables the token, no credits or a rate limit
//! cools it down, an upstream failure counts one error (a success resets the count), and what
//! the prompt caused (a safety refusal, a bad request) or the job itself (a generation that
//! failed upstream) says nothing about the token.
//!
//! Sources: `flow.tokens` (ids `flow_token_<i>`), the files of `<data_dir>/at/` (watched:
//! created, changed and deleted files apply live) and `POST /admin/flow/add-token` (written to
//! `<data_dir>/at/<first 16 hex of id>.txt`, mode 0600, so it survives restarts). A removed
//! configuration token is remembered in redb and never selected again; a removed file token's
//! file is deleted.
//!
//! Persistence (redb, table `flow_tokens`, [`crate::store::FlowTokenRecord`]): each token's
//! state, consecutive errors, credits, tier and last error, written as they change and read at
//! start, so a restart keeps a disabled token disabled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use time::OffsetDateTime;

use business2api_shared::Secret;

use super::client::{AccessToken, Credits, FlowClient};
use super::session::{REFRESH_AHEAD, TokenAccess};
use super::tokens::{self, FlowToken, TokenSource, Unusable};
use crate::store::{FlowTokenRecord, FlowTokenState, Store};
use crate::upstream::BoxFuture;
use crate::upstream::error::{ErrorKind, UpstreamError};

/// A token with this many consecutive errors is not selected until a refresh succeeds.
pub const MAX_ERRORS: u32 = 3;
/// How often every token's access token (when it expires soon) and credits are refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30 * 60);
/// Cool-down after a rate limit that named no time.
const RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(60);
/// Cool-down after the credits ran out (a refresh that finds credits again ends it).
const NO_CREDITS_COOLDOWN: Duration = Duration::from_secs(30 * 60);
/// The endpoint name of errors the pool raises.
const POOL: &str = "flow.pool";

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStateView {
    /// Selectable.
    Active,
    /// Rate-limited or out of credits until `cooldown_secs`.
    Cooling,
    /// [`MAX_ERRORS`] consecutive errors: waits for a refresh that succeeds.
    Failing,
    /// The session token was refused (signed out or expired): needs a new token.
    Disabled,
}

/// One token as the admin status shows it (never the token).
#[derive(Debug, Clone, Serialize)]
pub struct TokenView {
    pub id: String,
    /// `config`, `file` or `api` (a file written by `add-token`).
    pub source: &'static str,
    pub state: TokenStateView,
    pub credits: Option<i64>,
    pub tier: Option<String>,
    pub errors: u32,
    pub last_error: Option<String>,
    /// Seconds until the cool-down ends (cooling tokens).
    pub cooldown_secs: Option<u64>,
    /// Seconds since the token was last selected.
    pub idle_secs: Option<u64>,
    /// Seconds until its access token expires, when one is held.
    pub access_expires_in_secs: Option<i64>,
    pub jobs_in_flight: u32,
}

// ---------------------------------------------------------------------------------------------
// The token actor.

/// One token's working state.
pub struct TokenActor {
    token: FlowToken,
    client: FlowClient,
    access: Option<AccessToken>,
    /// Grows with every minted access token; a refusal names the generation it refused.
    generation: u64,
    project: Option<String>,
    credits: Option<Credits>,
}

impl Actor for TokenActor {
    type Context = Context<Self>;
}

/// A usable access token. Reply: the token and its generation.
#[derive(Message)]
#[rtype(result = "Result<(Secret, u64), UpstreamError>")]
struct Access;

/// The access token of `generation` was refused: the next [`Access`] mints another (a refusal
/// of an older generation is ignored, so N refusals together cause one mint).
#[derive(Message)]
#[rtype(result = "()")]
struct Refused {
    generation: u64,
}

/// The token's project, created once.
#[derive(Message)]
#[rtype(result = "Result<String, UpstreamError>")]
struct Project;

/// The token's tier (from the credits last read).
#[derive(Message)]
#[rtype(result = "Option<String>")]
struct Tier;

/// Refresh the access token when it expires within [`REFRESH_AHEAD`], then read the credits.
#[derive(Message)]
#[rtype(result = "Result<Credits, UpstreamError>")]
struct RefreshToken;

/// When the held access token expires.
#[derive(Message)]
#[rtype(result = "Option<OffsetDateTime>")]
struct AccessExpires;

type Reply<T> = AtomicResponse<TokenActor, T>;

impl TokenActor {
    fn fresh_access(&self) -> Option<(Secret, u64)> {
        let now = OffsetDateTime::now_utc();
        self.access
            .as_ref()
            .filter(|a| a.expires - REFRESH_AHEAD > now)
            .map(|a| (a.token.clone(), self.generation))
    }

    /// Mints an access token (the handler runs atomically: other messages wait, so there is
    /// one mint at a time).
    fn mint(&mut self) -> ResponseActFuture<Self, Result<(Secret, u64), UpstreamError>> {
        let client = self.client.clone();
        let session = self.token.session.clone();
        Box::pin(
            async move { client.access_token(&session).await }
                .into_actor(self)
                .map(|minted, act, _| {
                    let minted = minted?;
                    act.generation += 1;
                    let token = minted.token.clone();
                    act.access = Some(minted);
                    Ok((token, act.generation))
                }),
        )
    }
}

impl Handler<Access> for TokenActor {
    type Result = Reply<Result<(Secret, u64), UpstreamError>>;

    fn handle(&mut self, _: Access, _: &mut Context<Self>) -> Self::Result {
        match self.fresh_access() {
            Some(fresh) => AtomicResponse::new(Box::pin(fut::ready(Ok(fresh)))),
            None => AtomicResponse::new(self.mint()),
        }
    }
}

impl Handler<Refused> for TokenActor {
    type Result = ();

    fn handle(&mut self, msg: Refused, _: &mut Context<Self>) {
        if msg.generation == self.generation {
            self.access = None;
        }
    }
}

impl Handler<Project> for TokenActor {
    type Result = Reply<Result<String, UpstreamError>>;

    fn handle(&mut self, _: Project, _: &mut Context<Self>) -> Self::Result {
        if let Some(p) = &self.project {
            return AtomicResponse::new(Box::pin(fut::ready(Ok(p.clone()))));
        }
        let client = self.client.clone();
        let session = self.token.session.clone();
        AtomicResponse::new(Box::pin(
            async move { client.create_project(&session).await }
                .into_actor(self)
                .map(|created, act, _| {
                    let project = created?;
                    act.project = Some(project.clone());
                    Ok(project)
                }),
        ))
    }
}

impl Handler<Tier> for TokenActor {
    type Result = Option<String>;

    fn handle(&mut self, _: Tier, _: &mut Context<Self>) -> Option<String> {
        self.credits.as_ref().and_then(|c| c.tier.clone())
    }
}

impl Handler<AccessExpires> for TokenActor {
    type Result = Option<OffsetDateTime>;

    fn handle(&mut self, _: AccessExpires, _: &mut Context<Self>) -> Option<OffsetDateTime> {
        self.access.as_ref().map(|a| a.expires)
    }
}

impl Handler<RefreshToken> for TokenActor {
    type Result = Reply<Result<Credits, UpstreamError>>;

    fn handle(&mut self, _: RefreshToken, _: &mut Context<Self>) -> Self::Result {
        let minted = match self.fresh_access() {
            Some(fresh) => Box::pin(fut::ready(Ok(fresh))),
            None => self.mint(),
        };
        let client = self.client.clone();
        AtomicResponse::new(Box::pin(
            minted
                .then(move |access, act, _| {
                    async move {
                        let (access, _) = access?;
                        client.credits(&access).await
                    }
                    .into_actor(act)
                })
                .map(|credits, act, _| {
                    let credits = credits?;
                    act.credits = Some(credits.clone());
                    Ok(credits)
                }),
        ))
    }
}

/// A selected token, for one job: implements [`TokenAccess`] over the token's actor. Report
/// how the job went with [`FlowPool::report`]; dropping the handle ends the job's hold on the
/// token.
pub struct TokenHandle {
    pub id: String,
    addr: Addr<TokenActor>,
    generation: u64,
    _hold: JobHold,
}

impl std::fmt::Debug for TokenHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenHandle").field("id", &self.id).finish()
    }
}

/// Counts a job in flight on a token until dropped.
struct JobHold {
    id: String,
    supervisor: Addr<FlowSupervisor>,
}

impl Drop for JobHold {
    fn drop(&mut self) {
        self.supervisor.do_send(JobEnded {
            id: std::mem::take(&mut self.id),
        });
    }
}

fn gone(id: &str) -> UpstreamError {
    UpstreamError::new(
        ErrorKind::CookiesInvalid,
        POOL,
        format!("the Flow token {id} was removed from the pool"),
    )
}

impl TokenAccess for TokenHandle {
    fn access(&mut self) -> BoxFuture<'_, Result<Secret, UpstreamError>> {
        Box::pin(async move {
            let (token, generation) =
                self.addr.send(Access).await.map_err(|_| gone(&self.id))??;
            self.generation = generation;
            Ok(token)
        })
    }

    fn refused(&mut self) -> BoxFuture<'_, ()> {
        self.addr.do_send(Refused {
            generation: self.generation,
        });
        Box::pin(std::future::ready(()))
    }

    fn project(&mut self) -> BoxFuture<'_, Result<String, UpstreamError>> {
        Box::pin(async move { self.addr.send(Project).await.map_err(|_| gone(&self.id))? })
    }

    fn tier(&mut self) -> BoxFuture<'_, Option<String>> {
        Box::pin(async move { self.addr.send(Tier).await.ok().flatten() })
    }
}

// ---------------------------------------------------------------------------------------------
// The supervisor.

/// Where a token entered the pool, as the status shows it: `api` for the files `add-token`
/// writes (`<first 16 hex of id>.txt`).
fn source_label(token: &FlowToken) -> &'static str {
    match &token.source {
        TokenSource::Config { .. } => "config",
        TokenSource::File(path)
            if token.id.get(..16).is_some_and(|prefix| {
                path.file_name()
                    .is_some_and(|n| n.to_string_lossy() == format!("{prefix}.txt"))
            }) =>
        {
            "api"
        }
        TokenSource::File(_) => "file",
    }
}

struct Entry {
    token: FlowToken,
    addr: Addr<TokenActor>,
    state: FlowTokenState,
    errors: u32,
    cooling_until: Option<Instant>,
    last_used: Option<Instant>,
    credits: Option<Credits>,
    last_error: Option<String>,
    in_flight: u32,
}

impl Entry {
    fn selectable(&self, now: Instant) -> bool {
        self.state == FlowTokenState::Active
            && self.errors < MAX_ERRORS
            && self.cooling_until.is_none_or(|until| until <= now)
    }

    fn record(&self) -> FlowTokenRecord {
        FlowTokenRecord::new(
            self.state,
            self.errors,
            self.credits.as_ref().map(|c| c.credits),
            self.credits.as_ref().and_then(|c| c.tier.clone()),
            self.last_error.clone(),
        )
    }
}

/// The pool's bookkeeping, on its own thread.
pub struct FlowSupervisor {
    client: FlowClient,
    tokens: HashMap<String, Entry>,
    /// Configuration tokens removed through the admin API (persisted): never added again.
    removed: Vec<String>,
    store: Option<Arc<Store>>,
    /// Writes to the store, in order, off this thread.
    persister: Option<std::sync::mpsc::Sender<Write>>,
    usable: Arc<AtomicUsize>,
    refresh_every: Duration,
    /// Its own address, once started (tokens added later are refreshed at once).
    me: Option<Addr<FlowSupervisor>>,
}

impl Actor for FlowSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.me = Some(ctx.address());
        self.count_usable();
        // A first refresh reads every token's credits (and finds dead sessions) at start.
        ctx.notify(RefreshAll);
        ctx.run_interval(self.refresh_every, |_, ctx| ctx.notify(RefreshAll));
    }
}

impl FlowSupervisor {
    fn count_usable(&self) {
        let now = Instant::now();
        let n = self.tokens.values().filter(|e| e.selectable(now)).count();
        self.usable.store(n, Ordering::Relaxed);
    }

    /// Writes one token's record (or deletes it) and the removed ids, in order, on the
    /// persister's thread.
    fn persist(&self, id: &str) {
        let Some(persister) = &self.persister else {
            return;
        };
        let _ = persister.send(Write {
            id: id.to_owned(),
            record: self.tokens.get(id).map(Entry::record),
            removed: self.removed.clone(),
        });
    }

    /// Adds a token (unless it is there already or was removed); its persisted state applies.
    fn add(&mut self, token: FlowToken, stored: Option<FlowTokenRecord>) -> bool {
        if self.tokens.contains_key(&token.id) || self.removed.contains(&token.id) {
            return false;
        }
        let actor = TokenActor {
            token: token.clone(),
            client: self.client.clone(),
            access: None,
            generation: 0,
            project: None,
            credits: None,
        };
        let stored = stored.unwrap_or_default();
        let credits = stored.credits.map(|credits| Credits {
            credits,
            tier: stored.tier.clone(),
        });
        let id = token.id.clone();
        tracing::info!(token = %id, "Flow token added");
        self.tokens.insert(
            id.clone(),
            Entry {
                token,
                addr: actor.start(),
                state: stored.state,
                errors: stored.errors,
                cooling_until: None,
                last_used: None,
                credits,
                last_error: stored.last_error,
                in_flight: 0,
            },
        );
        self.persist(&id);
        self.count_usable();
        if let (Some(me), Some(entry)) = (&self.me, self.tokens.get(&id)) {
            refresh(me.clone(), id, entry.addr.clone());
        }
        true
    }

    /// Takes a token out of the pool: its actor stops, jobs holding it fail their next call.
    fn take_out(&mut self, id: &str) -> Option<Entry> {
        let entry = self.tokens.remove(id)?;
        entry.addr.do_send(StopToken);
        tracing::info!(token = %id, "Flow token removed");
        self.count_usable();
        Some(entry)
    }

    fn view(&self, entry: &Entry, now: Instant, expires: Option<OffsetDateTime>) -> TokenView {
        let cooling = entry.cooling_until.filter(|until| *until > now);
        let state = match entry.state {
            FlowTokenState::Disabled => TokenStateView::Disabled,
            FlowTokenState::Active if entry.errors >= MAX_ERRORS => TokenStateView::Failing,
            FlowTokenState::Active if cooling.is_some() => TokenStateView::Cooling,
            FlowTokenState::Active => TokenStateView::Active,
        };
        TokenView {
            id: entry.token.id.clone(),
            source: source_label(&entry.token),
            state,
            credits: entry.credits.as_ref().map(|c| c.credits),
            tier: entry.credits.as_ref().and_then(|c| c.tier.clone()),
            errors: entry.errors,
            last_error: entry.last_error.clone(),
            cooldown_secs: cooling.map(|until| (until - now).as_secs().max(1)),
            idle_secs: entry.last_used.map(|t| now.duration_since(t).as_secs()),
            access_expires_in_secs: expires
                .map(|e| (e - OffsetDateTime::now_utc()).whole_seconds()),
            jobs_in_flight: entry.in_flight,
        }
    }

    /// Applies a set of tokens from one kind of source: adds the new ones, removes those of
    /// that kind no longer there.
    fn sync(&mut self, kind: SourceKind, tokens: Vec<FlowToken>) -> (usize, usize) {
        let wanted: Vec<String> = tokens.iter().map(|t| t.id.clone()).collect();
        let stale: Vec<String> = self
            .tokens
            .values()
            .filter(|e| kind.matches(&e.token.source) && !wanted.contains(&e.token.id))
            .map(|e| e.token.id.clone())
            .collect();
        let removed = stale.len();
        for id in stale {
            self.take_out(&id);
            self.persist(&id);
        }
        let mut added = 0;
        for token in tokens {
            let stored = self.stored(&token.id);
            if self.add(token, stored) {
                added += 1;
            }
        }
        (added, removed)
    }

    fn stored(&self, id: &str) -> Option<FlowTokenRecord> {
        let store = self.store.as_ref()?;
        match store.flow_token(id) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(token = %id, error = %e, "a Flow token's stored state cannot be read; starting fresh");
                None
            }
        }
    }

    fn outcome(&mut self, id: &str, outcome: Result<Option<Credits>, &UpstreamError>) {
        let Some(entry) = self.tokens.get_mut(id) else {
            return;
        };
        match outcome {
            Ok(credits) => {
                entry.errors = 0;
                entry.last_error = None;
                if let Some(credits) = credits {
                    if credits.credits > 0 {
                        entry.cooling_until = None;
                    }
                    entry.credits = Some(credits);
                }
            }
            Err(e) => {
                entry.last_error = Some(e.to_string());
                match e.kind {
                    ErrorKind::CookiesInvalid => {
                        tracing::warn!(token = %id, "Flow session token refused: token disabled until replaced");
                        entry.state = FlowTokenState::Disabled;
                    }
                    ErrorKind::QuotaExhausted { retry_after } => {
                        entry.cooling_until =
                            Some(Instant::now() + retry_after.unwrap_or(NO_CREDITS_COOLDOWN));
                    }
                    ErrorKind::RateLimited { retry_after } => {
                        entry.cooling_until =
                            Some(Instant::now() + retry_after.unwrap_or(RATE_LIMIT_COOLDOWN));
                    }
                    // The prompt's fault, or the job's: nothing about the token.
                    ErrorKind::BadRequest | ErrorKind::NotFound => {
                        entry.last_error = None;
                    }
                    ErrorKind::Server { .. } if e.status.is_none() => {
                        entry.last_error = None;
                    }
                    _ => entry.errors = entry.errors.saturating_add(1),
                }
            }
        }
        self.persist(id);
        self.count_usable();
    }
}

/// Which tokens a sync replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    Config,
    Dir,
}

impl SourceKind {
    fn matches(self, source: &TokenSource) -> bool {
        matches!(
            (self, source),
            (SourceKind::Config, TokenSource::Config { .. })
                | (SourceKind::Dir, TokenSource::File(_))
        )
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct StopToken;

impl Handler<StopToken> for TokenActor {
    type Result = ();

    fn handle(&mut self, _: StopToken, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[derive(Message)]
#[rtype(result = "Option<(String, Addr<TokenActor>)>")]
struct Pick {
    exclude: Vec<String>,
}

impl Handler<Pick> for FlowSupervisor {
    type Result = Option<(String, Addr<TokenActor>)>;

    fn handle(&mut self, msg: Pick, _: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        let entry = self
            .tokens
            .values_mut()
            .filter(|e| e.selectable(now) && !msg.exclude.contains(&e.token.id))
            // Least recently used first; never used before all.
            .min_by_key(|e| (e.last_used, e.token.id.clone()))?;
        entry.last_used = Some(now);
        entry.in_flight += 1;
        Some((entry.token.id.clone(), entry.addr.clone()))
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct JobEnded {
    id: String,
}

impl Handler<JobEnded> for FlowSupervisor {
    type Result = ();

    fn handle(&mut self, msg: JobEnded, _: &mut Context<Self>) {
        if let Some(e) = self.tokens.get_mut(&msg.id) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }
}

#[derive(Message)]
#[rtype(result = "Option<Addr<TokenActor>>")]
struct Lookup {
    id: String,
}

impl Handler<Lookup> for FlowSupervisor {
    type Result = Option<Addr<TokenActor>>;

    fn handle(&mut self, msg: Lookup, _: &mut Context<Self>) -> Self::Result {
        let entry = self.tokens.get_mut(&msg.id)?;
        entry.in_flight += 1;
        Some(entry.addr.clone())
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Report {
    id: String,
    outcome: Result<(), UpstreamError>,
}

impl Handler<Report> for FlowSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Report, _: &mut Context<Self>) {
        self.outcome(&msg.id, msg.outcome.as_ref().map(|()| None));
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct RefreshAll;

#[derive(Message)]
#[rtype(result = "()")]
struct Refreshed {
    id: String,
    result: Result<Credits, UpstreamError>,
}

impl Handler<RefreshAll> for FlowSupervisor {
    type Result = ();

    fn handle(&mut self, _: RefreshAll, ctx: &mut Context<Self>) {
        for entry in self.tokens.values() {
            if entry.state == FlowTokenState::Disabled {
                continue;
            }
            refresh(ctx.address(), entry.token.id.clone(), entry.addr.clone());
        }
    }
}

/// Refreshes one token (access token when it expires soon, then credits) and reports back.
fn refresh(supervisor: Addr<FlowSupervisor>, id: String, token: Addr<TokenActor>) {
    actix::spawn(async move {
        if let Ok(result) = token.send(RefreshToken).await {
            supervisor.do_send(Refreshed { id, result });
        }
    });
}

impl Handler<Refreshed> for FlowSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Refreshed, _: &mut Context<Self>) {
        match msg.result {
            Ok(credits) => {
                tracing::debug!(token = %msg.id, credits = credits.credits, "Flow token refreshed");
                self.outcome(&msg.id, Ok(Some(credits)));
            }
            Err(e) => {
                tracing::warn!(token = %msg.id, error = %e, "Flow token refresh failed");
                self.outcome(&msg.id, Err(&e));
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "Vec<(TokenView, Addr<TokenActor>)>")]
struct Status;

impl Handler<Status> for FlowSupervisor {
    type Result = Vec<(TokenView, Addr<TokenActor>)>;

    fn handle(&mut self, _: Status, _: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        let mut views: Vec<_> = self
            .tokens
            .values()
            .map(|e| (self.view(e, now, None), e.addr.clone()))
            .collect();
        views.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        views
    }
}

#[derive(Message)]
#[rtype(result = "(usize, usize)")]
struct Sync {
    kind: SourceKind,
    tokens: Vec<FlowToken>,
}

impl Handler<Sync> for FlowSupervisor {
    type Result = MessageResult<Sync>;

    fn handle(&mut self, msg: Sync, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.sync(msg.kind, msg.tokens))
    }
}

#[derive(Message)]
#[rtype(result = "Added")]
struct AddToken {
    token: FlowToken,
}

/// What `add-token` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Added {
    Added,
    /// The token was in the pool already (its state is kept).
    Present,
}

impl Handler<AddToken> for FlowSupervisor {
    type Result = MessageResult<AddToken>;

    fn handle(&mut self, msg: AddToken, _: &mut Context<Self>) -> Self::Result {
        let id = msg.token.id.clone();
        // Adding a token again is the operator's word that it is wanted.
        self.removed.retain(|r| *r != id);
        if self.tokens.contains_key(&id) {
            return MessageResult(Added::Present);
        }
        // A token added by hand starts fresh: a stored "disabled" is of an older session.
        self.add(msg.token, None);
        MessageResult(Added::Added)
    }
}

#[derive(Message)]
#[rtype(result = "Option<TokenSource>")]
struct RemoveToken {
    id: String,
}

impl Handler<RemoveToken> for FlowSupervisor {
    type Result = Option<TokenSource>;

    fn handle(&mut self, msg: RemoveToken, _: &mut Context<Self>) -> Option<TokenSource> {
        let entry = self.take_out(&msg.id)?;
        if matches!(entry.token.source, TokenSource::Config { .. }) {
            self.removed.push(msg.id.clone());
        }
        self.persist(&msg.id);
        Some(entry.token.source)
    }
}

// ---------------------------------------------------------------------------------------------
// The handle.

/// The request path's and the admin API's view of the token pool.
#[derive(Clone)]
pub struct FlowPool {
    supervisor: Addr<FlowSupervisor>,
    usable: Arc<AtomicUsize>,
    at_dir: PathBuf,
    /// Stops the pool's thread when the last handle is dropped.
    _system: Arc<PoolThread>,
}

impl std::fmt::Debug for FlowPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowPool")
            .field("usable", &self.usable.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct PoolThread {
    system: System,
}

impl Drop for PoolThread {
    fn drop(&mut self) {
        self.system.stop();
    }
}

/// Why `add-token` refused a cookie.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("the text holds no __Secure-next-auth.session-token cookie (nor a bare token)")]
    NoToken,
    #[error("cannot write the token file: {0}")]
    Write(std::io::Error),
    #[error("the token pool has stopped")]
    Stopped,
}

/// One write of the persister.
struct Write {
    id: String,
    record: Option<FlowTokenRecord>,
    removed: Vec<String>,
}

/// The persister: a thread that applies writes in the order they were sent, and ends (having
/// written everything) when the supervisor drops its sender.
fn start_persister(store: Arc<Store>) -> Option<std::sync::mpsc::Sender<Write>> {
    let (tx, rx) = std::sync::mpsc::channel::<Write>();
    let started = std::thread::Builder::new()
        .name("flow-persister".into())
        .spawn(move || {
            for write in rx {
                let written = match &write.record {
                    Some(record) => store.put_flow_token(&write.id, record),
                    None => store.delete_flow_token(&write.id),
                }
                .and_then(|()| store.put_flow_removed(&write.removed));
                if let Err(e) = written {
                    tracing::error!(token = %write.id, error = %e, "cannot persist a Flow token's state");
                }
            }
        });
    match started {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the Flow pool's persister; token states are not saved");
            None
        }
    }
}

/// What `reload` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    pub added: usize,
    pub removed: usize,
    /// Files of `<data_dir>/at/` that hold no usable token (path and reason; never content).
    pub unusable: Vec<String>,
    pub tokens: usize,
}

fn unusable_lines(unusable: &[Unusable]) -> Vec<String> {
    unusable
        .iter()
        .map(|u| format!("{}: {}", u.path.display(), u.reason))
        .collect()
}

impl FlowPool {
    /// Starts the pool on its own thread with `config` tokens, the files of `at_dir` and what
    /// `store` remembers of them.
    pub fn start(
        client: FlowClient,
        config: &[Secret],
        at_dir: PathBuf,
        store: Option<Arc<Store>>,
    ) -> std::io::Result<FlowPool> {
        FlowPool::start_with(client, config, at_dir, store, REFRESH_EVERY)
    }

    /// [`FlowPool::start`] with the background refresh every `refresh_every`.
    pub fn start_with(
        client: FlowClient,
        config: &[Secret],
        at_dir: PathBuf,
        store: Option<Arc<Store>>,
        refresh_every: Duration,
    ) -> std::io::Result<FlowPool> {
        let removed = match &store {
            Some(s) => s.flow_removed().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the removed Flow tokens cannot be read");
                Vec::new()
            }),
            None => Vec::new(),
        };
        let (dir, unusable) = tokens::dir_tokens(&at_dir);
        for line in unusable_lines(&unusable) {
            tracing::warn!("Flow token file not used: {line}");
        }
        let configured = tokens::config_tokens(config);
        let usable = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = Arc::clone(&usable);
        std::thread::Builder::new()
            .name("flow-pool".into())
            .spawn(move || {
                let system = System::new();
                let started = system.block_on(async move {
                    let mut supervisor = FlowSupervisor {
                        client,
                        tokens: HashMap::new(),
                        removed,
                        persister: store.clone().and_then(start_persister),
                        store,
                        usable: shared,
                        refresh_every,
                        me: None,
                    };
                    for token in configured.into_iter().chain(dir) {
                        let stored = supervisor.stored(&token.id);
                        supervisor.add(token, stored);
                    }
                    (supervisor.start(), System::current())
                });
                if tx.send(started).is_ok() {
                    let _ = system.run();
                }
            })?;
        let (supervisor, system) = rx
            .recv()
            .map_err(|_| std::io::Error::other("the Flow pool's thread did not start"))?;
        Ok(FlowPool {
            supervisor,
            usable,
            at_dir,
            _system: Arc::new(PoolThread { system }),
        })
    }

    /// Whether some token can be selected now.
    pub fn has_usable(&self) -> bool {
        self.usable.load(Ordering::Relaxed) > 0
    }

    /// The least recently used selectable token not in `exclude`.
    pub async fn pick(&self, exclude: &[String]) -> Option<TokenHandle> {
        let (id, addr) = self
            .supervisor
            .send(Pick {
                exclude: exclude.to_vec(),
            })
            .await
            .ok()??;
        Some(self.handle(id, addr))
    }

    fn handle(&self, id: String, addr: Addr<TokenActor>) -> TokenHandle {
        TokenHandle {
            id: id.clone(),
            addr,
            generation: 0,
            _hold: JobHold {
                id,
                supervisor: self.supervisor.clone(),
            },
        }
    }

    /// The token `id` (a job that started on it goes on on it), if it is still in the pool.
    pub async fn get(&self, id: &str) -> Option<TokenHandle> {
        let addr = self
            .supervisor
            .send(Lookup { id: id.to_owned() })
            .await
            .ok()??;
        Some(self.handle(id.to_owned(), addr))
    }

    /// How a job on token `id` went (see the module docs for what each failure does).
    pub fn report(&self, id: &str, outcome: Result<(), &UpstreamError>) {
        self.supervisor.do_send(Report {
            id: id.to_owned(),
            outcome: outcome.map_err(Clone::clone),
        });
    }

    /// Every token, by id (never a token).
    pub async fn status(&self) -> Vec<TokenView> {
        let Ok(entries) = self.supervisor.send(Status).await else {
            return Vec::new();
        };
        let mut views = Vec::with_capacity(entries.len());
        for (mut view, addr) in entries {
            if let Ok(Some(expires)) = addr.send(AccessExpires).await {
                view.access_expires_in_secs =
                    Some((expires - OffsetDateTime::now_utc()).whole_seconds());
            }
            views.push(view);
        }
        views
    }

    /// Adds the session token in `cookie_text` (a cookie string or a bare token): written to
    /// `<data_dir>/at/<first 16 hex of id>.txt` (0600) and added to the pool. Returns its id.
    pub async fn add(&self, cookie_text: &str) -> Result<(String, Added), AddError> {
        let session = tokens::session_from_cookie_text(cookie_text).ok_or(AddError::NoToken)?;
        let id = tokens::token_id(&session);
        let path = self.at_dir.join(format!("{}.txt", &id[..16]));
        let dir = self.at_dir.clone();
        let contents = format!("__Secure-next-auth.session-token={}", session.expose());
        let file = path.clone();
        tokio::task::spawn_blocking(move || write_private(&dir, &file, contents.as_bytes()))
            .await
            .map_err(|e| AddError::Write(std::io::Error::other(e.to_string())))?
            .map_err(AddError::Write)?;
        let token = FlowToken {
            id: id.clone(),
            source: TokenSource::File(path),
            session,
        };
        let added = self
            .supervisor
            .send(AddToken { token })
            .await
            .map_err(|_| AddError::Stopped)?;
        Ok((id, added))
    }

    /// Removes token `id`: never selected again (a file token's file is deleted). `false` when
    /// no such token is in the pool.
    pub async fn remove(&self, id: &str) -> bool {
        let Ok(Some(source)) = self
            .supervisor
            .send(RemoveToken { id: id.to_owned() })
            .await
        else {
            return false;
        };
        if let TokenSource::File(path) = source {
            let deleted = tokio::task::spawn_blocking(move || std::fs::remove_file(&path)).await;
            if let Ok(Err(e)) = deleted
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(token = %id, error = %e, "cannot delete a removed Flow token's file");
            }
        }
        true
    }

    /// Reads `config` tokens and `<data_dir>/at/` again and applies the difference.
    pub async fn reload(&self, config: &[Secret]) -> ReloadReport {
        let dir = self.at_dir.clone();
        let (files, unusable) = tokio::task::spawn_blocking(move || tokens::dir_tokens(&dir))
            .await
            .unwrap_or_default();
        let mut report = ReloadReport {
            unusable: unusable_lines(&unusable),
            ..ReloadReport::default()
        };
        for (kind, tokens) in [
            (SourceKind::Config, tokens::config_tokens(config)),
            (SourceKind::Dir, files),
        ] {
            if let Ok((added, removed)) = self.supervisor.send(Sync { kind, tokens }).await {
                report.added += added;
                report.removed += removed;
            }
        }
        report.tokens = self.status().await.len();
        report
    }

    /// Reads `<data_dir>/at/` again (the watcher calls this on every change there).
    pub async fn sync_dir(&self) {
        let dir = self.at_dir.clone();
        let Ok((files, unusable)) =
            tokio::task::spawn_blocking(move || tokens::dir_tokens(&dir)).await
        else {
            return;
        };
        for line in unusable_lines(&unusable) {
            tracing::warn!("Flow token file not used: {line}");
        }
        let _ = self
            .supervisor
            .send(Sync {
                kind: SourceKind::Dir,
                tokens: files,
            })
            .await;
    }

    /// Refreshes every token now (what the background refresh does every 30 min).
    pub fn refresh_all(&self) {
        self.supervisor.do_send(RefreshAll);
    }

    /// Watches `<data_dir>/at/` (created if missing, mode 0700): created, changed and deleted
    /// files apply live. The watcher stops when the returned value is dropped.
    pub fn watch(&self) -> Option<AtWatcher> {
        use notify::Watcher;
        if let Err(e) = create_private_dir(&self.at_dir) {
            tracing::warn!(dir = %self.at_dir.display(), error = %e, "cannot create the Flow token directory; not watching it");
            return None;
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher =
            match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.send(());
                }
            }) {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the Flow token directory");
                    return None;
                }
            };
        if let Err(e) = watcher.watch(&self.at_dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %self.at_dir.display(), error = %e, "cannot watch the Flow token directory");
            return None;
        }
        let pool = self.clone();
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // A burst of events (an editor's write, rename, chmod) is one change.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while rx.try_recv().is_ok() {}
                pool.sync_dir().await;
            }
        });
        Some(AtWatcher {
            _watcher: watcher,
            task,
        })
    }
}

/// A running watch of `<data_dir>/at/`.
pub struct AtWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AtWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for AtWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AtWatcher")
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `contents` to `path` (mode 0600) through a temporary file and a rename.
fn write_private(dir: &Path, path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    create_private_dir(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use upstream_sim::flow::{FlowRoute, FlowSimulator};

    const ST: &str = "pool-test-session-token-0123456789";

    async fn start(sim: &FlowSimulator, dir: &Path, refresh_every: Duration) -> FlowPool {
        crate::startup::install_crypto_provider();
        let config = serde_json::json!({"flow": {"enable": true, "labs_base_url": sim.base_url(),
            "api_base_url": sim.base_url(), "timeout": 5}});
        let settings = crate::config::Settings::from_json_str(&config.to_string(), &|_| None)
            .unwrap()
            .settings;
        let client = FlowClient::new(&settings.flow).unwrap();
        FlowPool::start_with(
            client,
            &[Secret::new(ST.to_owned())],
            dir.join("at"),
            None,
            refresh_every,
        )
        .unwrap()
    }

    async fn wait_for(pool: &FlowPool, what: &str, check: impl Fn(&TokenView) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = pool.status().await;
            if status.first().is_some_and(&check) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {status:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn the_background_refresh_reads_credits_and_renews_access_tokens_that_expire_soon() {
        let sim = FlowSimulator::start().await.unwrap();
        sim.add_token(ST, "a@example.com", 100, "PAYGATE_TIER_ONE");
        // Access tokens that expire within the 5-minute margin are renewed at each refresh.
        sim.set_access_ttl(Duration::from_secs(60));
        let dir = tempfile::tempdir().unwrap();
        let pool = start(&sim, dir.path(), Duration::from_millis(200)).await;
        wait_for(&pool, "first credits", |t| t.credits == Some(100)).await;
        sim.add_token(ST, "a@example.com", 70, "PAYGATE_TIER_TWO");
        wait_for(&pool, "credits read again", |t| {
            t.credits == Some(70) && t.tier.as_deref() == Some("PAYGATE_TIER_TWO")
        })
        .await;
        assert!(sim.count(FlowRoute::Session) >= 2, "access tokens renewed");
        assert!(sim.count(FlowRoute::Credits) >= 2);
    }

    #[tokio::test]
    async fn three_errors_take_a_token_out_until_a_refresh_succeeds_and_prompt_faults_never_count()
    {
        let sim = FlowSimulator::start().await.unwrap();
        sim.add_token(ST, "a@example.com", 100, "PAYGATE_TIER_ONE");
        let dir = tempfile::tempdir().unwrap();
        let pool = start(&sim, dir.path(), REFRESH_EVERY).await;
        wait_for(&pool, "first credits", |t| t.credits == Some(100)).await;
        let id = "flow_token_0";
        let safety = UpstreamError::new(ErrorKind::BadRequest, "flow.check", "NSFW");
        let failed_job = UpstreamError::new(
            ErrorKind::Server { status: 500 },
            "flow.check",
            "MEDIA_GENERATION_STATUS_ERROR_UNKNOWN",
        );
        for _ in 0..5 {
            pool.report(id, Err(&safety));
            pool.report(id, Err(&failed_job));
        }
        wait_for(&pool, "no error counted", |t| t.errors == 0).await;
        assert!(pool.pick(&[]).await.is_some());
        let http = UpstreamError::new(ErrorKind::Server { status: 502 }, "flow.x", "bad gateway")
            .with_status(502);
        for _ in 0..MAX_ERRORS {
            pool.report(id, Err(&http));
        }
        wait_for(&pool, "failing", |t| t.state == TokenStateView::Failing).await;
        assert!(!pool.has_usable());
        assert!(pool.pick(&[]).await.is_none());
        pool.refresh_all();
        wait_for(&pool, "back after a refresh", |t| {
            t.state == TokenStateView::Active && t.errors == 0
        })
        .await;
        assert!(pool.pick(&[]).await.is_some());
    }
}
