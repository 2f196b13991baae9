//! The accounts and how a request gets one.
//!
//! This is the first cut the foundation needs: a round-robin rotation over the imported accounts
//! that skips accounts cooling down after a failure or waiting for a re-login, with one token
//! mint in flight per account. The actor-based pool with its pure state machine replaces it
//! (see the pool issue); the public surface here — `pick`, `Account::auth`, `record_*` — is what
//! the request path uses and will keep using.

pub mod files;
pub mod import;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use crate::upstream::gemini_business::{CallAuth, Credentials, GeminiBusinessClient, MintedToken};
use crate::upstream::{AccountAction, ErrorKind, UpstreamError};

/// How long an account rests after a quota error that names no reset time.
pub const QUOTA_COOLDOWN: Duration = Duration::from_secs(3600);
/// The retry-after given when no account will become ready by itself.
pub const NO_ACCOUNT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Failure policy knobs.
#[derive(Debug, Clone, Copy)]
pub struct PoolPolicy {
    /// First backoff after a transient failure (`pool.use_cooldown_sec`, at least 1 s).
    pub base_cooldown: Duration,
    /// Ceiling of every backoff and of upstream-supplied retry-after values.
    pub max_cooldown: Duration,
}

impl Default for PoolPolicy {
    fn default() -> Self {
        Self {
            base_cooldown: Duration::from_secs(15),
            max_cooldown: Duration::from_secs(300),
        }
    }
}

type MintFuture = Shared<BoxFuture<'static, Result<MintedToken, UpstreamError>>>;

enum TokenSlot {
    Empty,
    Ready(MintedToken),
    Minting(MintFuture),
}

#[derive(Debug, Default)]
struct Health {
    cooling_until: Option<Instant>,
    needs_relogin: bool,
    failures: u32,
}

/// Whether an account can take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Ready,
    CoolingUntil(Instant),
    NeedsRelogin,
}

/// One account of the pool.
pub struct Account {
    email: String,
    credentials: Credentials,
    token: Mutex<TokenSlot>,
    health: Mutex<Health>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; the data (plain
    // bookkeeping) is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Account {
    pub fn new(email: String, credentials: Credentials) -> Self {
        Self {
            email,
            credentials,
            token: Mutex::new(TokenSlot::Empty),
            health: Mutex::new(Health::default()),
        }
    }

    pub fn email(&self) -> &str {
        &self.email
    }

    /// A stable, non-identifying label for logs: `acct-` and 8 hex digits of the SHA-256 of the
    /// lower-cased e-mail address.
    pub fn label(&self) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(self.email.trim().to_lowercase().as_bytes());
        let mut out = String::from("acct-");
        for b in &digest[..4] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Credentials for a U2–U6 call: the cached JWT if it is still usable *now*, otherwise a new
    /// one. Concurrent callers share one mint; a caller that goes away does not cancel it for
    /// the others.
    pub async fn auth(
        &self,
        client: &Arc<GeminiBusinessClient>,
    ) -> Result<CallAuth, UpstreamError> {
        let pending = {
            let mut slot = lock(&self.token);
            match &*slot {
                TokenSlot::Ready(t) if t.usable_at(Instant::now()) => {
                    return Ok(self.call_auth(t));
                }
                TokenSlot::Minting(f) => f.clone(),
                _ => {
                    let client = Arc::clone(client);
                    let creds = self.credentials.clone();
                    let f = async move { client.mint_token(&creds).await }
                        .boxed()
                        .shared();
                    *slot = TokenSlot::Minting(f.clone());
                    f
                }
            }
        };
        let result = pending.await;
        {
            let mut slot = lock(&self.token);
            if matches!(*slot, TokenSlot::Minting(_)) {
                *slot = match &result {
                    Ok(t) => TokenSlot::Ready(t.clone()),
                    Err(_) => TokenSlot::Empty,
                };
            }
        }
        result.map(|t| self.call_auth(&t))
    }

    fn call_auth(&self, token: &MintedToken) -> CallAuth {
        CallAuth {
            jwt: token.jwt.clone(),
            config_id: self.credentials.config_id.clone(),
            original_authorization: self.credentials.authorization.clone(),
        }
    }

    /// Forgets the cached JWT (the upstream refused it).
    pub fn invalidate_token(&self) {
        let mut slot = lock(&self.token);
        if matches!(*slot, TokenSlot::Ready(_)) {
            *slot = TokenSlot::Empty;
        }
    }

    pub fn availability(&self, now: Instant) -> Availability {
        let h = lock(&self.health);
        if h.needs_relogin {
            Availability::NeedsRelogin
        } else {
            match h.cooling_until {
                Some(until) if until > now => Availability::CoolingUntil(until),
                _ => Availability::Ready,
            }
        }
    }

    /// Applies what a failure says about the account. Never removes the account.
    pub fn record_failure(&self, error: &UpstreamError, policy: &PoolPolicy) {
        let action = error.account_action();
        if action == AccountAction::RefreshToken {
            self.invalidate_token();
        }
        let mut h = lock(&self.health);
        h.failures = h.failures.saturating_add(1);
        let now = Instant::now();
        let cooldown = match action {
            AccountAction::CoolDown(Some(d)) => {
                Some(d.min(policy.max_cooldown.max(QUOTA_COOLDOWN)))
            }
            AccountAction::CoolDown(None)
                if matches!(error.kind, ErrorKind::QuotaExhausted { .. }) =>
            {
                Some(QUOTA_COOLDOWN)
            }
            AccountAction::CoolDown(None) => {
                let exp = h.failures.saturating_sub(1).min(16);
                Some(
                    policy
                        .base_cooldown
                        .saturating_mul(1 << exp)
                        .min(policy.max_cooldown),
                )
            }
            AccountAction::NeedsRelogin => {
                h.needs_relogin = true;
                None
            }
            AccountAction::RefreshToken | AccountAction::None => None,
        };
        if let Some(d) = cooldown {
            let until = now + d;
            // Cooldowns only move forward.
            h.cooling_until = Some(h.cooling_until.map_or(until, |u| u.max(until)));
        }
    }

    /// A request succeeded on this account.
    pub fn record_success(&self) {
        let mut h = lock(&self.health);
        h.failures = 0;
    }
}

/// No account can take the request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable {
    /// When it is worth trying again.
    pub retry_after: Duration,
}

/// The accounts, in rotation.
#[derive(Debug)]
pub struct AccountPool {
    accounts: Vec<Arc<Account>>,
    cursor: AtomicUsize,
    policy: PoolPolicy,
}

impl AccountPool {
    pub fn new(accounts: Vec<Account>, policy: PoolPolicy) -> Self {
        Self {
            accounts: accounts.into_iter().map(Arc::new).collect(),
            cursor: AtomicUsize::new(0),
            policy,
        }
    }

    pub fn policy(&self) -> &PoolPolicy {
        &self.policy
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// How many accounts could take a request right now.
    pub fn ready_count(&self) -> usize {
        let now = Instant::now();
        self.accounts
            .iter()
            .filter(|a| a.availability(now) == Availability::Ready)
            .count()
    }

    /// The next ready account in rotation that is not in `exclude` (e-mails already tried by
    /// this request).
    pub fn pick(&self, exclude: &[&str]) -> Result<Arc<Account>, Unavailable> {
        let n = self.accounts.len();
        let now = Instant::now();
        let start = if n == 0 {
            0
        } else {
            self.cursor.fetch_add(1, Ordering::Relaxed) % n
        };
        let mut soonest: Option<Instant> = None;
        for i in 0..n {
            let Some(account) = self.accounts.get((start + i) % n) else {
                continue;
            };
            if exclude.contains(&account.email()) {
                continue;
            }
            match account.availability(now) {
                Availability::Ready => return Ok(Arc::clone(account)),
                Availability::CoolingUntil(t) => {
                    soonest = Some(soonest.map_or(t, |s| s.min(t)));
                }
                Availability::NeedsRelogin => {}
            }
        }
        let retry_after = soonest.map_or(NO_ACCOUNT_RETRY_AFTER, |t| {
            let d = t.saturating_duration_since(now);
            // Round up to whole seconds; a Retry-After of 0 would invite a busy loop.
            Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
                .max(Duration::from_secs(1))
        });
        Err(Unavailable { retry_after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Endpoint;
    use business2api_shared::Secret;

    fn account(email: &str) -> Account {
        Account::new(
            email.into(),
            Credentials {
                cookies: vec![],
                csesidx: "1".into(),
                config_id: "c".into(),
                authorization: Secret::default(),
            },
        )
    }

    fn err(kind: ErrorKind) -> UpstreamError {
        UpstreamError::new(kind, Endpoint::StreamAssist, "x")
    }

    #[test]
    fn rotation_visits_every_account() {
        let pool = AccountPool::new(
            vec![account("a"), account("b"), account("c")],
            PoolPolicy::default(),
        );
        let mut seen: Vec<String> = (0..3)
            .map(|_| pool.pick(&[]).unwrap().email().to_owned())
            .collect();
        seen.sort();
        assert_eq!(seen, ["a", "b", "c"]);
    }

    #[test]
    fn excluded_and_cooling_accounts_are_skipped() {
        let pool = AccountPool::new(vec![account("a"), account("b")], PoolPolicy::default());
        let a = pool.pick(&["b"]).unwrap();
        assert_eq!(a.email(), "a");
        a.record_failure(
            &err(ErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(42)),
            }),
            pool.policy(),
        );
        for _ in 0..4 {
            assert_eq!(pool.pick(&[]).unwrap().email(), "b");
        }
        let none = pool.pick(&["b"]).unwrap_err();
        assert!(
            none.retry_after > Duration::from_secs(40)
                && none.retry_after <= Duration::from_secs(42)
        );
        assert_eq!(pool.ready_count(), 1);
    }

    #[test]
    fn dead_cookies_take_an_account_out_without_deleting_it() {
        let pool = AccountPool::new(vec![account("a")], PoolPolicy::default());
        pool.pick(&[])
            .unwrap()
            .record_failure(&err(ErrorKind::CookiesInvalid), pool.policy());
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.ready_count(), 0);
        assert_eq!(
            pool.pick(&[]).unwrap_err().retry_after,
            NO_ACCOUNT_RETRY_AFTER
        );
    }

    #[test]
    fn transient_failures_back_off_exponentially_up_to_the_ceiling() {
        let policy = PoolPolicy {
            base_cooldown: Duration::from_secs(2),
            max_cooldown: Duration::from_secs(5),
        };
        let a = account("a");
        let until = |a: &Account| match a.availability(Instant::now()) {
            Availability::CoolingUntil(t) => t.saturating_duration_since(Instant::now()),
            other => panic!("{other:?}"),
        };
        a.record_failure(&err(ErrorKind::Server { status: 503 }), &policy);
        assert!(until(&a) <= Duration::from_secs(2));
        a.record_failure(&err(ErrorKind::Transport), &policy);
        assert!(until(&a) > Duration::from_secs(3) && until(&a) <= Duration::from_secs(4));
        a.record_failure(&err(ErrorKind::Timeout), &policy);
        assert!(until(&a) > Duration::from_secs(4) && until(&a) <= Duration::from_secs(5));
        a.record_success();
        // Success resets the count but not a running cooldown.
        assert!(matches!(
            a.availability(Instant::now()),
            Availability::CoolingUntil(_)
        ));
    }

    #[test]
    fn empty_pool_is_unavailable() {
        let pool = AccountPool::new(vec![], PoolPolicy::default());
        assert_eq!(
            pool.pick(&[]).unwrap_err().retry_after,
            NO_ACCOUNT_RETRY_AFTER
        );
    }
}
