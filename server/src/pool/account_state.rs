//! The state of one account as plain data, and every transition as a pure function of
//! (state, event, now, policy). No I/O, no clocks, no actors: the supervisor owns one
//! [`AccountStatus`] per account, feeds it [`Event`]s and carries out the returned [`Effects`].
//!
//! ```text
//!            refresh started            refresh ok
//!   Ready ─────────────────▶ RefreshingToken ─────────▶ Ready
//!     │ ▲                        │ cookies refused
//!     │ │ time passes            ▼
//!     │ └──── CoolingDown ◀── transient failure (5xx, transport, timeout, U1 429)
//!     │
//!     │ cookies refused (U1 401/403)        re-login ok / new credentials
//!     └──────────────▶ NeedsRelogin ───────────────────────────────▶ Ready
//!                          │ re-login exhausted
//!                          ├─ expired_action "queue"   → Disabled (waits for the operator)
//!                          ├─ expired_action "delete"  → Disabled + Effects::delete
//!                          └─ expired_action "refresh" → stays, re-login retried every interval
//! ```
//!
//! Rate limits and quota errors do not change the state: they cool one *capability* (text,
//! image, video) of the account, so a rate-limited image account still serves text.
//! Every cooldown end only moves forward in time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ExpiredAction;
use crate::domain::ModelId;
use crate::upstream::{ErrorKind, UpstreamError};

/// Milliseconds since the Unix epoch (wall-clock time, so that it can be persisted).
pub type UnixMs = u64;

const DAY_MS: u64 = 86_400_000;
const HOUR_MS: u64 = 3_600_000;
/// First step of the exponential backoff after a failure.
pub const BASE_BACKOFF: Duration = Duration::from_secs(2);
/// The longest a quota cooldown named by the upstream is honoured.
pub const MAX_QUOTA_COOLDOWN: Duration = Duration::from_secs(24 * 3600);
/// Longest stored error message.
const MAX_ERROR_MESSAGE: usize = 300;

/// A duration in whole milliseconds (saturating).
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The UTC day number of a time.
pub fn day_of(now: UnixMs) -> u32 {
    u32::try_from(now / DAY_MS).unwrap_or(u32::MAX)
}

/// What a request asks the upstream for; cooldowns and daily caps are per capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    Text,
    Image,
    Video,
}

impl Capability {
    pub const ALL: [Capability; 3] = [Capability::Text, Capability::Image, Capability::Video];

    pub fn index(self) -> usize {
        match self {
            Capability::Text => 0,
            Capability::Image => 1,
            Capability::Video => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Text => "text",
            Capability::Image => "image",
            Capability::Video => "video",
        }
    }

    /// The capability a model uses: `-video` and `-image` models generate media; every other
    /// model answers in text.
    pub fn of(model: &ModelId) -> Capability {
        let f = model.features();
        if f.video {
            Capability::Video
        } else if f.image {
            Capability::Image
        } else {
            Capability::Text
        }
    }
}

/// One value per capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PerCapability<T> {
    pub text: T,
    pub image: T,
    pub video: T,
}

impl<T> PerCapability<T> {
    pub fn get(&self, cap: Capability) -> &T {
        match cap {
            Capability::Text => &self.text,
            Capability::Image => &self.image,
            Capability::Video => &self.video,
        }
    }

    pub fn get_mut(&mut self, cap: Capability) -> &mut T {
        match cap {
            Capability::Text => &mut self.text,
            Capability::Image => &mut self.image,
            Capability::Video => &mut self.video,
        }
    }
}

/// Why an account or capability rests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CooldownReason {
    /// The upstream answered 429 rate limited.
    RateLimited,
    /// The upstream said the quota is used up.
    QuotaExhausted,
    /// 5xx, transport error or timeout: backoff.
    Transient,
}

/// A capability resting until a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cooldown {
    pub until: UnixMs,
    pub reason: CooldownReason,
}

/// The state of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AccountState {
    /// Serves requests.
    Ready,
    /// Rests after a transient failure; serves again from `until`.
    CoolingDown {
        until: UnixMs,
        reason: CooldownReason,
    },
    /// A new session token is being minted; requests still use the account (they share the
    /// mint or use the token that is still valid).
    RefreshingToken,
    /// Google refused the cookies: only a re-login (or new credentials) brings it back.
    NeedsRelogin { since: UnixMs, reason: String },
    /// Out of rotation until an operator acts.
    Disabled { reason: DisabledReason },
}

/// Why an account is out of rotation. Persisted as `"relogin_exhausted"`,
/// `{"unusable_credentials": "…"}` and so on; records written before the reason was typed hold
/// a sentence, which still loads ([`DisabledReason::from`] a string). Displayed as a sentence
/// (admin API, logs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", from = "ReasonRepr")]
pub enum DisabledReason {
    /// The stored credentials cannot be used (no session cookie, …).
    UnusableCredentials(String),
    /// Re-login was given up; the account waits for the operator (`expired_action: "queue"`).
    ReloginExhausted,
    /// Re-login was given up and the account is deleted (`expired_action: "delete"`).
    ReloginExhaustedDeleted,
    /// The operator took it out of rotation (or an older record's reason that names no
    /// known cause).
    Operator(String),
}

const UNUSABLE_PREFIX: &str = "unusable credentials: ";
const RELOGIN_EXHAUSTED: &str =
    "re-login exhausted; waiting for the operator (new cookies or enable)";
const RELOGIN_EXHAUSTED_DELETED: &str = "re-login exhausted; deleted (expired_action \"delete\")";

impl std::fmt::Display for DisabledReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisabledReason::UnusableCredentials(why) => write!(f, "{UNUSABLE_PREFIX}{why}"),
            DisabledReason::ReloginExhausted => f.write_str(RELOGIN_EXHAUSTED),
            DisabledReason::ReloginExhaustedDeleted => f.write_str(RELOGIN_EXHAUSTED_DELETED),
            DisabledReason::Operator(why) => f.write_str(why),
        }
    }
}

impl From<&str> for DisabledReason {
    /// Reads the sentence an older record holds.
    fn from(s: &str) -> DisabledReason {
        if let Some(why) = s.strip_prefix(UNUSABLE_PREFIX) {
            DisabledReason::UnusableCredentials(why.to_owned())
        } else if s == RELOGIN_EXHAUSTED_DELETED {
            DisabledReason::ReloginExhaustedDeleted
        } else if s.starts_with("re-login exhausted") {
            DisabledReason::ReloginExhausted
        } else {
            DisabledReason::Operator(s.to_owned())
        }
    }
}

/// How a [`DisabledReason`] is read: the typed form, or an older record's sentence.
#[derive(Deserialize)]
#[serde(untagged)]
enum ReasonRepr {
    Typed(TypedReason),
    Legacy(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum TypedReason {
    UnusableCredentials(String),
    ReloginExhausted,
    ReloginExhaustedDeleted,
    Operator(String),
}

impl From<ReasonRepr> for DisabledReason {
    fn from(r: ReasonRepr) -> DisabledReason {
        match r {
            ReasonRepr::Typed(TypedReason::UnusableCredentials(s)) => {
                DisabledReason::UnusableCredentials(s)
            }
            ReasonRepr::Typed(TypedReason::ReloginExhausted) => DisabledReason::ReloginExhausted,
            ReasonRepr::Typed(TypedReason::ReloginExhaustedDeleted) => {
                DisabledReason::ReloginExhaustedDeleted
            }
            ReasonRepr::Typed(TypedReason::Operator(s)) => DisabledReason::Operator(s),
            ReasonRepr::Legacy(s) => DisabledReason::from(s.as_str()),
        }
    }
}

impl AccountState {
    /// The name used in admin views and logs.
    pub fn name(&self) -> &'static str {
        match self {
            AccountState::Ready => "ready",
            AccountState::CoolingDown { .. } => "cooling_down",
            AccountState::RefreshingToken => "refreshing_token",
            AccountState::NeedsRelogin { .. } => "needs_relogin",
            AccountState::Disabled { .. } => "disabled",
        }
    }
}

/// A failure, reduced to what the account policy needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    RateLimited {
        retry_after: Option<Duration>,
    },
    QuotaExhausted {
        retry_after: Option<Duration>,
    },
    /// The session token was refused (U2–U6 401/403, uToken): mint a new one.
    TokenRefused,
    /// The cookies were refused (U1 401/403, redirect to sign-in).
    CookiesRefused,
    /// 5xx, transport, timeout.
    Transient,
    /// Not the account's doing (bad request, unknown model, protocol surprise).
    NotAccount,
    /// The account's egress proxy failed: the proxy pool's business, not recorded on the
    /// account at all.
    Egress,
}

impl Failure {
    pub fn of(error: &UpstreamError) -> Failure {
        match &error.kind {
            ErrorKind::RateLimited { retry_after } => Failure::RateLimited {
                retry_after: *retry_after,
            },
            ErrorKind::QuotaExhausted { retry_after } => Failure::QuotaExhausted {
                retry_after: *retry_after,
            },
            ErrorKind::AuthExpired | ErrorKind::Challenge => Failure::TokenRefused,
            ErrorKind::CookiesInvalid => Failure::CookiesRefused,
            ErrorKind::Server { .. } | ErrorKind::Transport | ErrorKind::Timeout => {
                Failure::Transient
            }
            ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::Protocol => {
                Failure::NotAccount
            }
            ErrorKind::Proxy { .. } => Failure::Egress,
        }
    }
}

/// The last failure seen on an account, for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub at: UnixMs,
    pub kind: String,
    pub message: String,
}

impl LastError {
    pub fn new(at: UnixMs, kind: impl Into<String>, message: &str) -> LastError {
        let mut message = message.to_owned();
        if message.len() > MAX_ERROR_MESSAGE {
            let mut cut = MAX_ERROR_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        LastError {
            at,
            kind: kind.into(),
            message,
        }
    }

    pub fn of(at: UnixMs, error: &UpstreamError) -> LastError {
        LastError::new(at, format!("{:?}", error.kind), &error.to_string())
    }
}

/// Successes per capability on one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DailyCount {
    /// UTC day number (days since the Unix epoch).
    pub day: u32,
    pub counts: PerCapability<u32>,
}

impl DailyCount {
    /// Successes of `cap` on the day of `now`.
    pub fn on(&self, cap: Capability, now: UnixMs) -> u32 {
        if self.day == day_of(now) {
            *self.counts.get(cap)
        } else {
            0
        }
    }
}

/// Request counters of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Requests this account answered in full.
    pub success: u64,
    /// Attempts on this account that failed.
    pub failed: u64,
    /// Token mints that succeeded / failed.
    pub refreshes: u64,
    pub refresh_failures: u64,
    pub daily: DailyCount,
}

/// Everything known about an account apart from its credentials and token. Persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStatus {
    pub state: AccountState,
    /// Per-capability cooldowns (rate limit, quota); `None` = never cooled.
    pub cooldowns: PerCapability<Option<Cooldown>>,
    /// Consecutive transient failures (backoff exponent).
    pub consecutive_failures: u32,
    /// Consecutive rate limits per capability (backoff exponent when no retry-after is given).
    pub rate_limit_strikes: PerCapability<u32>,
    /// Failed re-login attempts since the cookies were refused.
    pub relogin_attempts: u32,
    /// When re-login was last given up (`expired_action: "refresh"` retries after an interval).
    pub relogin_exhausted_at: Option<UnixMs>,
    pub counters: Counters,
    pub last_error: Option<LastError>,
    /// When the account was last handed to a request.
    pub last_used: Option<UnixMs>,
}

impl Default for AccountStatus {
    fn default() -> Self {
        AccountStatus {
            state: AccountState::Ready,
            cooldowns: PerCapability::default(),
            consecutive_failures: 0,
            rate_limit_strikes: PerCapability::default(),
            relogin_attempts: 0,
            relogin_exhausted_at: None,
            counters: Counters::default(),
            last_error: None,
            last_used: None,
        }
    }
}

/// The knobs of the failure policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Ceiling of every backoff and of an upstream's retry-after for rate limits.
    pub max_backoff: Duration,
    /// After this many consecutive transient failures the backoff jumps to the ceiling.
    pub max_fail_count: u32,
    /// Hour (UTC) a daily quota is assumed to reset when the upstream names no time.
    pub quota_reset_utc_hour: u32,
    /// Re-login attempts before re-login counts as exhausted (0 = exhausted at once).
    pub relogin_max_attempts: u32,
    pub expired_action: ExpiredAction,
    /// `expired_action: "refresh"`: wait this long before another round of re-login.
    pub relogin_retry_interval: Duration,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            max_backoff: Duration::from_secs(300),
            max_fail_count: 3,
            quota_reset_utc_hour: 8,
            relogin_max_attempts: 1,
            expired_action: ExpiredAction::Queue,
            relogin_retry_interval: Duration::from_secs(3600),
        }
    }
}

impl FailurePolicy {
    /// `BASE_BACKOFF × 2^(n-1)`, capped by `max_backoff`; at `max_fail_count` the ceiling.
    pub fn backoff(&self, n: u32) -> Duration {
        if n >= self.max_fail_count.max(1) && n > 1 {
            return self.max_backoff;
        }
        let exp = n.saturating_sub(1).min(20);
        BASE_BACKOFF
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff)
    }

    /// The next daily quota reset after `now`.
    pub fn next_quota_reset(&self, now: UnixMs) -> UnixMs {
        let day_start = now - now % DAY_MS;
        let reset = day_start + u64::from(self.quota_reset_utc_hour.min(23)) * HOUR_MS;
        if reset > now { reset } else { reset + DAY_MS }
    }
}

/// Something that happened to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request was answered in full.
    RequestSucceeded {
        cap: Capability,
    },
    /// An attempt on this account failed.
    RequestFailed {
        cap: Capability,
        failure: Failure,
        error: LastError,
    },
    /// A token mint began.
    RefreshStarted,
    RefreshSucceeded,
    RefreshFailed {
        failure: Failure,
        error: LastError,
    },
    /// A worker's re-login attempt ended.
    ReloginSucceeded,
    ReloginFailed {
        error: LastError,
    },
    /// The operator supplied new credentials (import, upload).
    CredentialsReplaced,
    /// The operator took the account out of rotation / put it back.
    Disable {
        reason: DisabledReason,
    },
    Enable,
    /// Time passed (cooldown ends, re-login retry rounds).
    Tick,
}

/// What the supervisor must do after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effects {
    /// Drop the cached token and mint a new one.
    pub refresh_token: bool,
    /// Ask a worker to log the account in again.
    pub request_relogin: bool,
    /// Remove the account (re-login exhausted, `expired_action: "delete"`).
    pub delete: bool,
    /// The status changed and should be persisted.
    pub changed: bool,
}

/// Whether an account can serve a capability now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usable {
    Yes,
    /// Not before this time.
    After(UnixMs),
    /// Not by itself (re-login, operator).
    No,
}

fn forward(slot: &mut Option<Cooldown>, until: UnixMs, reason: CooldownReason) {
    match slot {
        Some(c) if c.until >= until => {}
        _ => *slot = Some(Cooldown { until, reason }),
    }
}

impl AccountStatus {
    /// Whether the account can serve `cap` at `now` (state and cooldowns only; concurrency and
    /// daily caps are the selection's business).
    pub fn usable_for(&self, cap: Capability, now: UnixMs) -> Usable {
        let cap_until = self
            .cooldowns
            .get(cap)
            .filter(|c| c.until > now)
            .map(|c| c.until);
        let state_until = match &self.state {
            AccountState::Ready | AccountState::RefreshingToken => None,
            AccountState::CoolingDown { until, .. } if *until > now => Some(*until),
            AccountState::CoolingDown { .. } => None,
            AccountState::NeedsRelogin { .. } | AccountState::Disabled { .. } => {
                return Usable::No;
            }
        };
        match (cap_until, state_until) {
            (None, None) => Usable::Yes,
            (a, b) => Usable::After(a.unwrap_or(0).max(b.unwrap_or(0))),
        }
    }

    /// Applies one event.
    pub fn apply(&mut self, event: Event, now: UnixMs, policy: &FailurePolicy) -> Effects {
        let before = self.clone();
        let mut fx = Effects::default();
        match event {
            Event::RequestSucceeded { cap } => {
                self.counters.success += 1;
                let today = day_of(now);
                if self.counters.daily.day != today {
                    self.counters.daily = DailyCount {
                        day: today,
                        counts: PerCapability::default(),
                    };
                }
                let n = self.counters.daily.counts.get_mut(cap);
                *n = n.saturating_add(1);
                self.consecutive_failures = 0;
                *self.rate_limit_strikes.get_mut(cap) = 0;
            }
            Event::RequestFailed {
                cap,
                failure,
                error,
            } => {
                // A proxy fault is the proxy pool's business: nothing is recorded here.
                if failure != Failure::Egress {
                    self.counters.failed += 1;
                    self.last_error = Some(error.clone());
                    self.fail(cap, failure, error, now, policy, &mut fx);
                }
            }
            Event::RefreshStarted => {
                if self.state == AccountState::Ready {
                    self.state = AccountState::RefreshingToken;
                }
            }
            Event::RefreshSucceeded => {
                self.counters.refreshes += 1;
                if self.state == AccountState::RefreshingToken {
                    self.state = AccountState::Ready;
                }
            }
            Event::RefreshFailed { failure, error } => {
                if failure != Failure::Egress {
                    self.counters.refresh_failures += 1;
                    self.last_error = Some(error.clone());
                }
                if self.state == AccountState::RefreshingToken {
                    self.state = AccountState::Ready;
                }
                // A mint (U1) speaks for the whole account: a rate limit there cools it all.
                let failure = match failure {
                    Failure::RateLimited { retry_after }
                    | Failure::QuotaExhausted { retry_after } => {
                        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                        let d = retry_after
                            .unwrap_or_else(|| policy.backoff(self.consecutive_failures))
                            .min(policy.max_backoff);
                        self.cool_account(now + ms(d), CooldownReason::RateLimited);
                        Failure::NotAccount
                    }
                    // A mint does not use a token; treat a refusal as transient.
                    Failure::TokenRefused => Failure::Transient,
                    f => f,
                };
                self.fail(Capability::Text, failure, error, now, policy, &mut fx);
            }
            Event::ReloginSucceeded | Event::CredentialsReplaced => {
                // New credentials: a dead or parked account serves again (a running cooldown
                // still runs out), and the old token is worthless.
                if matches!(
                    self.state,
                    AccountState::NeedsRelogin { .. } | AccountState::Disabled { .. }
                ) {
                    self.state = AccountState::Ready;
                }
                self.relogin_attempts = 0;
                self.relogin_exhausted_at = None;
                self.consecutive_failures = 0;
                fx.refresh_token = true;
            }
            Event::ReloginFailed { error } => {
                self.last_error = Some(error);
                if matches!(self.state, AccountState::NeedsRelogin { .. }) {
                    self.relogin_attempts = self.relogin_attempts.saturating_add(1);
                    self.after_relogin_attempt(now, policy, &mut fx);
                }
            }
            Event::Disable { reason } => {
                self.state = AccountState::Disabled { reason };
            }
            Event::Enable => {
                if matches!(self.state, AccountState::Disabled { .. }) {
                    self.state = AccountState::Ready;
                    self.relogin_attempts = 0;
                    self.relogin_exhausted_at = None;
                    fx.refresh_token = true;
                }
            }
            Event::Tick => {
                if let AccountState::CoolingDown { until, .. } = self.state
                    && until <= now
                {
                    self.state = AccountState::Ready;
                }
                if let (AccountState::NeedsRelogin { .. }, Some(at)) =
                    (&self.state, self.relogin_exhausted_at)
                    && policy.expired_action == ExpiredAction::Refresh
                    && policy.relogin_max_attempts > 0
                    && now >= at + ms(policy.relogin_retry_interval)
                {
                    self.relogin_attempts = 0;
                    self.relogin_exhausted_at = None;
                    fx.request_relogin = true;
                }
            }
        }
        fx.changed = *self != before;
        fx
    }

    fn cool_account(&mut self, until: UnixMs, reason: CooldownReason) {
        match &mut self.state {
            AccountState::Ready | AccountState::RefreshingToken => {
                self.state = AccountState::CoolingDown { until, reason };
            }
            AccountState::CoolingDown {
                until: u,
                reason: r,
            } => {
                if until > *u {
                    *u = until;
                    *r = reason;
                }
            }
            AccountState::NeedsRelogin { .. } | AccountState::Disabled { .. } => {}
        }
    }

    fn fail(
        &mut self,
        cap: Capability,
        failure: Failure,
        error: LastError,
        now: UnixMs,
        policy: &FailurePolicy,
        fx: &mut Effects,
    ) {
        match failure {
            Failure::RateLimited { retry_after } => {
                let strikes = self.rate_limit_strikes.get_mut(cap);
                *strikes = strikes.saturating_add(1);
                let d = retry_after
                    .unwrap_or_else(|| policy.backoff(*strikes))
                    .min(policy.max_backoff);
                forward(
                    self.cooldowns.get_mut(cap),
                    now + ms(d),
                    CooldownReason::RateLimited,
                );
            }
            Failure::QuotaExhausted { retry_after } => {
                let until = match retry_after {
                    Some(d) => now + ms(d.min(MAX_QUOTA_COOLDOWN)),
                    None => policy.next_quota_reset(now),
                };
                forward(
                    self.cooldowns.get_mut(cap),
                    until,
                    CooldownReason::QuotaExhausted,
                );
            }
            Failure::TokenRefused => fx.refresh_token = true,
            Failure::CookiesRefused => {
                if !matches!(
                    self.state,
                    AccountState::NeedsRelogin { .. } | AccountState::Disabled { .. }
                ) {
                    self.state = AccountState::NeedsRelogin {
                        since: now,
                        reason: error.message,
                    };
                    self.relogin_attempts = 0;
                    self.relogin_exhausted_at = None;
                    if policy.relogin_max_attempts > 0 {
                        fx.request_relogin = true;
                    } else {
                        self.after_relogin_attempt(now, policy, fx);
                    }
                }
            }
            Failure::Transient => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                let d = policy.backoff(self.consecutive_failures);
                self.cool_account(now + ms(d), CooldownReason::Transient);
            }
            Failure::NotAccount | Failure::Egress => {}
        }
    }

    /// After a failed re-login (or none allowed): retry, or apply `expired_action`.
    fn after_relogin_attempt(&mut self, now: UnixMs, policy: &FailurePolicy, fx: &mut Effects) {
        if self.relogin_attempts < policy.relogin_max_attempts {
            fx.request_relogin = true;
            return;
        }
        match policy.expired_action {
            ExpiredAction::Refresh => {
                // Stay in NeedsRelogin; Tick starts another round after the interval.
                self.relogin_exhausted_at = Some(now);
            }
            ExpiredAction::Queue => {
                self.state = AccountState::Disabled {
                    reason: DisabledReason::ReloginExhausted,
                };
            }
            ExpiredAction::Delete => {
                self.state = AccountState::Disabled {
                    reason: DisabledReason::ReloginExhaustedDeleted,
                };
                fx.delete = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: UnixMs = 1_800_000_000_000;

    fn err(kind: &str) -> LastError {
        LastError::new(T0, kind, "x")
    }

    fn failed(cap: Capability, failure: Failure) -> Event {
        Event::RequestFailed {
            cap,
            failure,
            error: err("f"),
        }
    }

    fn policy(action: ExpiredAction, attempts: u32) -> FailurePolicy {
        FailurePolicy {
            expired_action: action,
            relogin_max_attempts: attempts,
            ..FailurePolicy::default()
        }
    }

    /// (start state, event, expected state name, expected effects) — every transition the
    /// module doc draws.
    #[test]
    fn transition_table() {
        let p = FailurePolicy::default();
        let cooling = AccountState::CoolingDown {
            until: T0 + 5_000,
            reason: CooldownReason::Transient,
        };
        let relogin = AccountState::NeedsRelogin {
            since: T0,
            reason: "r".into(),
        };
        let disabled = AccountState::Disabled { reason: "d".into() };
        let fx = |refresh, relogin, delete| Effects {
            refresh_token: refresh,
            request_relogin: relogin,
            delete,
            changed: true,
        };
        let cases: Vec<(AccountState, Event, &str, Effects)> = vec![
            (
                AccountState::Ready,
                Event::RefreshStarted,
                "refreshing_token",
                fx(false, false, false),
            ),
            (
                AccountState::RefreshingToken,
                Event::RefreshSucceeded,
                "ready",
                fx(false, false, false),
            ),
            (
                AccountState::RefreshingToken,
                Event::RefreshFailed {
                    failure: Failure::CookiesRefused,
                    error: err("c"),
                },
                "needs_relogin",
                fx(false, true, false),
            ),
            (
                AccountState::RefreshingToken,
                Event::RefreshFailed {
                    failure: Failure::Transient,
                    error: err("t"),
                },
                "cooling_down",
                fx(false, false, false),
            ),
            (
                AccountState::RefreshingToken,
                Event::RefreshFailed {
                    failure: Failure::RateLimited { retry_after: None },
                    error: err("t"),
                },
                "cooling_down",
                fx(false, false, false),
            ),
            (
                AccountState::Ready,
                failed(Capability::Text, Failure::Transient),
                "cooling_down",
                fx(false, false, false),
            ),
            (
                AccountState::Ready,
                failed(Capability::Text, Failure::TokenRefused),
                "ready",
                fx(true, false, false),
            ),
            (
                AccountState::Ready,
                failed(Capability::Text, Failure::CookiesRefused),
                "needs_relogin",
                fx(false, true, false),
            ),
            (
                AccountState::Ready,
                failed(
                    Capability::Image,
                    Failure::RateLimited {
                        retry_after: Some(Duration::from_secs(9)),
                    },
                ),
                "ready",
                fx(false, false, false),
            ),
            (
                cooling.clone(),
                Event::Tick,
                "cooling_down",
                Effects::default(),
            ),
            (
                relogin.clone(),
                Event::ReloginSucceeded,
                "ready",
                fx(true, false, false),
            ),
            (
                relogin.clone(),
                Event::ReloginFailed { error: err("r") },
                "disabled",
                fx(false, false, false),
            ),
            (
                disabled.clone(),
                Event::Enable,
                "ready",
                fx(true, false, false),
            ),
            (
                disabled.clone(),
                Event::CredentialsReplaced,
                "ready",
                fx(true, false, false),
            ),
            (
                AccountState::Ready,
                Event::Disable {
                    reason: "op".into(),
                },
                "disabled",
                fx(false, false, false),
            ),
            // Dead accounts ignore request noise.
            (
                relogin.clone(),
                failed(Capability::Text, Failure::Transient),
                "needs_relogin",
                Effects {
                    changed: true,
                    ..Effects::default()
                },
            ),
            (
                disabled.clone(),
                failed(Capability::Text, Failure::CookiesRefused),
                "disabled",
                Effects {
                    changed: true,
                    ..Effects::default()
                },
            ),
        ];
        for (i, (start, event, want, want_fx)) in cases.into_iter().enumerate() {
            let mut s = AccountStatus {
                state: start.clone(),
                ..AccountStatus::default()
            };
            let got = s.apply(event.clone(), T0, &p);
            assert_eq!(s.state.name(), want, "case {i}: {start:?} + {event:?}");
            assert_eq!(got, want_fx, "case {i}: {start:?} + {event:?}");
        }
    }

    #[test]
    fn cooldowns_end_with_time() {
        let p = FailurePolicy::default();
        let mut s = AccountStatus::default();
        s.apply(failed(Capability::Text, Failure::Transient), T0, &p);
        let AccountState::CoolingDown { until, .. } = s.state else {
            panic!("{:?}", s.state)
        };
        assert_eq!(until, T0 + 2_000);
        assert_eq!(s.usable_for(Capability::Text, T0 + 1), Usable::After(until));
        s.apply(Event::Tick, until - 1, &p);
        assert_eq!(s.state.name(), "cooling_down");
        s.apply(Event::Tick, until, &p);
        assert_eq!(s.state, AccountState::Ready);
    }

    #[test]
    fn rate_limits_cool_only_that_capability_and_honour_retry_after() {
        let p = FailurePolicy::default();
        let mut s = AccountStatus::default();
        s.apply(
            failed(
                Capability::Image,
                Failure::RateLimited {
                    retry_after: Some(Duration::from_secs(42)),
                },
            ),
            T0,
            &p,
        );
        assert_eq!(
            s.usable_for(Capability::Image, T0),
            Usable::After(T0 + 42_000)
        );
        assert_eq!(s.usable_for(Capability::Text, T0), Usable::Yes);
        assert_eq!(s.usable_for(Capability::Image, T0 + 42_000), Usable::Yes);
        // A retry-after beyond the ceiling is capped.
        s.apply(
            failed(
                Capability::Text,
                Failure::RateLimited {
                    retry_after: Some(Duration::from_secs(100_000)),
                },
            ),
            T0,
            &p,
        );
        assert_eq!(
            s.usable_for(Capability::Text, T0),
            Usable::After(T0 + 300_000)
        );
    }

    #[test]
    fn rate_limits_without_retry_after_back_off_exponentially_to_the_ceiling() {
        let p = FailurePolicy {
            max_fail_count: 100,
            max_backoff: Duration::from_secs(20),
            ..FailurePolicy::default()
        };
        let mut s = AccountStatus::default();
        let mut ends = Vec::new();
        let mut now = T0;
        for _ in 0..6 {
            s.apply(
                failed(Capability::Text, Failure::RateLimited { retry_after: None }),
                now,
                &p,
            );
            let until = s.cooldowns.text.unwrap().until;
            ends.push((until - now) / 1000);
            now = until;
        }
        assert_eq!(ends, [2, 4, 8, 16, 20, 20]);
        s.apply(
            Event::RequestSucceeded {
                cap: Capability::Text,
            },
            now,
            &p,
        );
        assert_eq!(s.rate_limit_strikes.text, 0);
    }

    #[test]
    fn transient_failures_jump_to_the_ceiling_at_max_fail_count() {
        let p = FailurePolicy {
            max_fail_count: 3,
            max_backoff: Duration::from_secs(300),
            ..FailurePolicy::default()
        };
        assert_eq!(p.backoff(1), Duration::from_secs(2));
        assert_eq!(p.backoff(2), Duration::from_secs(4));
        assert_eq!(p.backoff(3), Duration::from_secs(300));
    }

    #[test]
    fn quota_without_retry_after_rests_until_the_daily_reset() {
        let p = FailurePolicy {
            quota_reset_utc_hour: 8,
            ..FailurePolicy::default()
        };
        let day = T0 - T0 % DAY_MS;
        let mut s = AccountStatus::default();
        s.apply(
            failed(
                Capability::Text,
                Failure::QuotaExhausted { retry_after: None },
            ),
            day + 9 * HOUR_MS,
            &p,
        );
        assert_eq!(s.cooldowns.text.unwrap().until, day + DAY_MS + 8 * HOUR_MS);
        let mut s = AccountStatus::default();
        s.apply(
            failed(
                Capability::Video,
                Failure::QuotaExhausted { retry_after: None },
            ),
            day + 7 * HOUR_MS,
            &p,
        );
        assert_eq!(s.cooldowns.video.unwrap().until, day + 8 * HOUR_MS);
    }

    #[test]
    fn expired_action_applies_only_when_relogin_is_exhausted_and_each_value_differs() {
        let dead = |s: &mut AccountStatus, p: &FailurePolicy| {
            s.apply(failed(Capability::Text, Failure::CookiesRefused), T0, p)
        };
        // Two attempts allowed: the first failure asks again, the second exhausts.
        for action in [
            ExpiredAction::Delete,
            ExpiredAction::Queue,
            ExpiredAction::Refresh,
        ] {
            let p = policy(action, 2);
            let mut s = AccountStatus::default();
            assert!(dead(&mut s, &p).request_relogin);
            let fx = s.apply(Event::ReloginFailed { error: err("r") }, T0 + 1, &p);
            assert!(fx.request_relogin && !fx.delete, "{action:?}");
            assert_eq!(s.state.name(), "needs_relogin");
            let fx = s.apply(Event::ReloginFailed { error: err("r") }, T0 + 2, &p);
            match action {
                ExpiredAction::Delete => {
                    assert!(fx.delete);
                    assert_eq!(s.state.name(), "disabled");
                }
                ExpiredAction::Queue => {
                    assert!(!fx.delete && !fx.request_relogin);
                    assert_eq!(s.state.name(), "disabled");
                }
                ExpiredAction::Refresh => {
                    assert!(!fx.delete && !fx.request_relogin);
                    assert_eq!(s.state.name(), "needs_relogin");
                    let fx = s.apply(Event::Tick, T0 + 2 + 3_599_999, &p);
                    assert!(!fx.request_relogin);
                    let fx = s.apply(Event::Tick, T0 + 2 + 3_600_000, &p);
                    assert!(fx.request_relogin);
                    assert_eq!(s.relogin_attempts, 0);
                }
            }
        }
        // No browser re-login at all: exhausted at once.
        let mut s = AccountStatus::default();
        let fx = dead(&mut s, &policy(ExpiredAction::Delete, 0));
        assert!(fx.delete && !fx.request_relogin);
        let mut s = AccountStatus::default();
        let fx = dead(&mut s, &policy(ExpiredAction::Queue, 0));
        assert!(!fx.delete);
        assert_eq!(s.state.name(), "disabled");
    }

    #[test]
    fn successes_count_per_capability_per_utc_day() {
        let p = FailurePolicy::default();
        let mut s = AccountStatus::default();
        let day = T0 - T0 % DAY_MS;
        s.apply(
            Event::RequestSucceeded {
                cap: Capability::Text,
            },
            day + 10,
            &p,
        );
        s.apply(
            Event::RequestSucceeded {
                cap: Capability::Image,
            },
            day + 20,
            &p,
        );
        s.apply(
            Event::RequestSucceeded {
                cap: Capability::Text,
            },
            day + 30,
            &p,
        );
        assert_eq!(s.counters.daily.on(Capability::Text, day + 40), 2);
        assert_eq!(s.counters.daily.on(Capability::Image, day + 40), 1);
        assert_eq!(s.counters.daily.on(Capability::Text, day + DAY_MS), 0);
        s.apply(
            Event::RequestSucceeded {
                cap: Capability::Text,
            },
            day + DAY_MS,
            &p,
        );
        assert_eq!(s.counters.daily.on(Capability::Text, day + DAY_MS), 1);
        assert_eq!(s.counters.success, 4);
    }

    #[test]
    fn status_round_trips_through_json() {
        let p = FailurePolicy::default();
        let mut s = AccountStatus::default();
        s.apply(
            failed(
                Capability::Video,
                Failure::QuotaExhausted { retry_after: None },
            ),
            T0,
            &p,
        );
        s.apply(failed(Capability::Text, Failure::CookiesRefused), T0, &p);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<AccountStatus>(&json).unwrap(), s);
        assert!(json.contains("\"state\":\"needs_relogin\""), "{json}");
    }

    #[test]
    fn disabled_reasons_are_typed_and_older_sentences_still_load() {
        // Records written before the reason was typed hold a sentence.
        for (old, typed) in [
            (
                "re-login exhausted; waiting for the operator (new cookies or enable)",
                DisabledReason::ReloginExhausted,
            ),
            (
                "re-login exhausted; deleted (expired_action \\\"delete\\\")",
                DisabledReason::ReloginExhaustedDeleted,
            ),
            (
                "unusable credentials: no __Secure-C_SES cookie",
                DisabledReason::UnusableCredentials("no __Secure-C_SES cookie".into()),
            ),
            (
                "paused by hand",
                DisabledReason::Operator("paused by hand".into()),
            ),
        ] {
            let json = format!(
                r#"{{"state":{{"state":"disabled","reason":"{old}"}},"cooldowns":{{"text":null,"image":null,"video":null}},"consecutive_failures":0,"rate_limit_strikes":{{"text":0,"image":0,"video":0}},"relogin_attempts":0,"relogin_exhausted_at":null,"counters":{{"success":7,"failed":0,"refreshes":0,"refresh_failures":0,"daily":{{"day":0,"counts":{{"text":0,"image":0,"video":0}}}}}},"last_error":null,"last_used":null}}"#
            );
            let s: AccountStatus = serde_json::from_str(&json).unwrap();
            assert_eq!(
                s.state,
                AccountState::Disabled {
                    reason: typed.clone()
                }
            );
            assert_eq!(s.counters.success, 7);
            // Shown as the same sentence (admin API) …
            assert_eq!(typed.to_string(), old.replace("\\\"", "\""));
            // … and written in the typed form, which reads back.
            let new = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<AccountStatus>(&new).unwrap(), s);
        }
        let json = serde_json::to_string(&AccountState::Disabled {
            reason: DisabledReason::ReloginExhausted,
        })
        .unwrap();
        assert_eq!(json, r#"{"state":"disabled","reason":"relogin_exhausted"}"#);
        let json = serde_json::to_string(&AccountState::Disabled {
            reason: DisabledReason::UnusableCredentials("x".into()),
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"state":"disabled","reason":{"unusable_credentials":"x"}}"#
        );
    }

    fn arb_failure() -> impl Strategy<Value = Failure> {
        let ra = proptest::option::of((0u64..1000).prop_map(Duration::from_secs));
        prop_oneof![
            ra.clone()
                .prop_map(|retry_after| Failure::RateLimited { retry_after }),
            ra.prop_map(|retry_after| Failure::QuotaExhausted { retry_after }),
            Just(Failure::TokenRefused),
            Just(Failure::CookiesRefused),
            Just(Failure::Transient),
            Just(Failure::NotAccount),
        ]
    }

    fn arb_cap() -> impl Strategy<Value = Capability> {
        prop_oneof![
            Just(Capability::Text),
            Just(Capability::Image),
            Just(Capability::Video)
        ]
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            arb_cap().prop_map(|cap| Event::RequestSucceeded { cap }),
            (arb_cap(), arb_failure()).prop_map(|(cap, failure)| Event::RequestFailed {
                cap,
                failure,
                error: LastError::new(T0, "k", "m"),
            }),
            Just(Event::RefreshStarted),
            Just(Event::RefreshSucceeded),
            arb_failure().prop_map(|failure| Event::RefreshFailed {
                failure,
                error: LastError::new(T0, "k", "m"),
            }),
            Just(Event::ReloginSucceeded),
            Just(Event::ReloginFailed {
                error: LastError::new(T0, "k", "m")
            }),
            Just(Event::CredentialsReplaced),
            Just(Event::Disable {
                reason: "op".into()
            }),
            Just(Event::Enable),
            Just(Event::Tick),
            Just(Event::Tick),
        ]
    }

    fn arb_policy() -> impl Strategy<Value = FailurePolicy> {
        (
            0u32..3,
            prop_oneof![
                Just(ExpiredAction::Delete),
                Just(ExpiredAction::Queue),
                Just(ExpiredAction::Refresh)
            ],
            1u32..5,
        )
            .prop_map(|(attempts, action, max_fail)| FailurePolicy {
                relogin_max_attempts: attempts,
                expired_action: action,
                max_fail_count: max_fail,
                ..FailurePolicy::default()
            })
    }

    proptest! {
        /// Over any sequence of events at non-decreasing times: cooldown ends never move back,
        /// counters add up, deletion happens only through an exhausted re-login with
        /// `expired_action: "delete"`, and a usable verdict agrees with the state.
        #[test]
        fn invariants_hold_over_any_event_sequence(
            p in arb_policy(),
            steps in proptest::collection::vec((arb_event(), 0u64..20_000), 1..80),
        ) {
            let mut s = AccountStatus::default();
            let mut now = T0;
            let (mut ok, mut failed) = (0u64, 0u64);
            for (event, dt) in steps {
                now += dt;
                let before = s.clone();
                match &event {
                    Event::RequestSucceeded { .. } => ok += 1,
                    Event::RequestFailed { .. } => failed += 1,
                    _ => {}
                }
                let fx = s.apply(event.clone(), now, &p);
                for cap in Capability::ALL {
                    let old = before.cooldowns.get(cap).map_or(0, |c| c.until);
                    let new = s.cooldowns.get(cap).map_or(0, |c| c.until);
                    prop_assert!(new >= old, "{cap:?} cooldown moved back on {event:?}");
                }
                if let (
                    AccountState::CoolingDown { until: a, .. },
                    AccountState::CoolingDown { until: b, .. },
                ) = (&before.state, &s.state)
                {
                    prop_assert!(b >= a, "cooldown moved back on {event:?}");
                }
                if fx.delete {
                    prop_assert_eq!(p.expired_action, ExpiredAction::Delete);
                    prop_assert!(s.relogin_attempts >= p.relogin_max_attempts);
                    // The caller removes the account now; stop this walk.
                    break;
                }
                prop_assert_eq!(fx.changed, s != before);
                match s.usable_for(Capability::Text, now) {
                    Usable::No => {
                        let dead = matches!(
                            s.state,
                            AccountState::NeedsRelogin { .. } | AccountState::Disabled { .. }
                        );
                        prop_assert!(dead);
                    }
                    Usable::After(t) => prop_assert!(t > now),
                    Usable::Yes => {}
                }
            }
            prop_assert_eq!(s.counters.success, ok);
            prop_assert_eq!(s.counters.failed, failed);
        }
    }

    /// Every state is reachable from a fresh account.
    #[test]
    fn every_state_is_reachable() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let events = [
            Event::RefreshStarted,
            Event::RefreshSucceeded,
            failed(Capability::Text, Failure::Transient),
            failed(Capability::Text, Failure::CookiesRefused),
            Event::ReloginFailed { error: err("r") },
            Event::ReloginSucceeded,
            Event::Tick,
            Event::Enable,
        ];
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let p = policy(ExpiredAction::Queue, 1);
            let mut s = AccountStatus::default();
            let mut now = T0;
            for _ in 0..20 {
                now += rng.random_range(0..5_000);
                let e = events[rng.random_range(0..events.len())].clone();
                s.apply(e, now, &p);
                seen.insert(s.state.name());
            }
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            [
                "cooling_down",
                "disabled",
                "needs_relogin",
                "ready",
                "refreshing_token"
            ]
        );
    }
}
