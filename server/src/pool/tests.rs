//! The pool's actors against a fake [`Authenticator`] (no HTTP). Each test starts a real pool
//! (its own thread and actix system, as in production) from a plain tokio runtime.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use business2api_shared::Secret;

use super::account_state::{AccountStatus, FailurePolicy, PerCapability};
use super::actor::{self, NewCredentials, Refresh};
use super::selection::SelectionPolicy;
use super::{Capability, NewAccount, Persistence, Pool, PoolConfig, supervisor};
use crate::accounts::credentials::SESSION_COOKIE;
use crate::accounts::{Cookie, Credentials};
use crate::config::Selection;
use crate::store::{StateBatch, Store};
use crate::upstream::{AccessToken, Authenticator, BoxFuture, ErrorKind, UpstreamError};

/// One scripted mint: wait this long, then succeed or fail with this kind.
#[derive(Debug, Clone)]
struct Step {
    delay: Duration,
    fail: Option<ErrorKind>,
}

/// Mints tokens named after the credentials they came from (`token-of-<csesidx>`), following a
/// script per credentials (`csesidx`); unscripted mints succeed at once.
#[derive(Debug, Default)]
struct FakeAuth {
    script: Mutex<HashMap<String, VecDeque<Step>>>,
    mints: AtomicUsize,
}

impl FakeAuth {
    fn script(&self, id: &str, steps: &[Step]) {
        self.script
            .lock()
            .unwrap()
            .insert(id.to_owned(), steps.iter().cloned().collect());
    }

    fn mints(&self) -> usize {
        self.mints.load(Ordering::SeqCst)
    }
}

impl Authenticator for FakeAuth {
    fn authenticate<'a>(
        &'a self,
        credentials: &'a Credentials,
        _egress: &'a crate::egress::Egress,
    ) -> BoxFuture<'a, Result<AccessToken, UpstreamError>> {
        Box::pin(async move {
            self.mints.fetch_add(1, Ordering::SeqCst);
            let id = credentials.csesidx.clone();
            let step = self
                .script
                .lock()
                .unwrap()
                .get_mut(&id)
                .and_then(VecDeque::pop_front)
                .unwrap_or(Step {
                    delay: Duration::ZERO,
                    fail: None,
                });
            tokio::time::sleep(step.delay).await;
            match step.fail {
                Some(kind) => Err(UpstreamError::new(kind, "authenticate", "scripted")),
                None => Ok(AccessToken {
                    value: Secret::new(format!("token-of-{id}")),
                    use_until: Instant::now() + Duration::from_secs(3600),
                }),
            }
        })
    }
}

fn credentials(id: &str) -> Credentials {
    Credentials {
        cookies: vec![Cookie {
            name: SESSION_COOKIE.to_owned(),
            value: Secret::new(id),
            domain: ".gemini.google".to_owned(),
        }],
        csesidx: id.to_owned(),
        config_id: "config".to_owned(),
        authorization: Secret::new(""),
    }
}

fn account(email: &str, id: &str, changed: bool) -> NewAccount {
    NewAccount {
        email: email.to_owned(),
        source_file: None,
        credentials: Ok(credentials(id)),
        status: None,
        changed,
        proxy: None,
    }
}

fn config() -> PoolConfig {
    PoolConfig {
        selection: SelectionPolicy {
            strategy: Selection::RoundRobin,
            use_cooldown: Duration::ZERO,
            max_concurrent: 0,
            daily_limits: PerCapability::default(),
        },
        failure: FailurePolicy::default(),
        refresh_period: Duration::from_secs(3600),
        refresh_concurrency: 4,
        refresh_on_startup: false,
        relogin_backoff: Duration::ZERO,
    }
}

const A: &str = "a@example.com";

fn direct_egress() -> crate::egress::EgressPool {
    crate::startup::install_crypto_provider();
    crate::egress::EgressPool::direct(crate::egress::ClientRecipe {
        connect_timeout: Duration::from_secs(1),
        plain_http_upstream: false,
    })
}

async fn start(auth: &Arc<FakeAuth>, accounts: Vec<NewAccount>) -> Pool {
    Pool::start(
        config(),
        accounts,
        Arc::clone(auth) as Arc<dyn Authenticator>,
        direct_egress(),
        None,
    )
    .unwrap()
}

/// The one account's view.
async fn view(pool: &Pool) -> super::AccountView {
    pool.snapshot().await.remove(0)
}

/// Waits until `f` holds for the one account's view.
async fn until(pool: &Pool, what: &str, f: impl Fn(&super::AccountView) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = view(pool).await;
        if f(&v) {
            return;
        }
        assert!(Instant::now() < deadline, "never {what}: {v:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The token a fresh lease on the pool gets.
async fn token(pool: &Pool) -> String {
    let mut lease = pool.lease(Capability::Text, &[]).await.unwrap();
    let auth = lease.auth().await.unwrap();
    lease.succeed();
    auth.token.expose().to_owned()
}

/// Starts a pool with the account's "old" credentials, makes a request wait for a token (the
/// mint with the old credentials starts, slowed by `auth`'s script), sends the "new" credentials
/// while that mint runs, and checks the waiting request gets a token of the new ones.
async fn new_credentials_during_a_slow_mint(auth: &Arc<FakeAuth>) -> Pool {
    let pool = start(auth, vec![account(A, "old", false)]).await;
    let mut waiting = pool.lease(Capability::Text, &[]).await.unwrap();
    let waiter = tokio::spawn(async move {
        let r = waiting.auth().await.map(|a| a.token.expose().to_owned());
        waiting.succeed();
        r
    });
    until(&pool, "refreshing", |v| v.state == "refreshing_token").await;
    pool.upsert(vec![account(A, "new", true)]).await;
    assert_eq!(waiter.await.unwrap().unwrap(), "token-of-new");
    pool
}

#[tokio::test]
async fn a_stale_mint_failing_after_new_credentials_arrived_is_ignored() {
    let auth = Arc::new(FakeAuth::default());
    // The old cookies are refused, slowly.
    auth.script(
        "old",
        &[Step {
            delay: Duration::from_millis(300),
            fail: Some(ErrorKind::CookiesInvalid),
        }],
    );
    let pool = new_credentials_during_a_slow_mint(&auth).await;
    // Let the old mint fail (300 ms), then look.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let v = view(&pool).await;
    assert_eq!(v.state, "ready", "{v:?}");
    assert!(!v.relogin_pending, "{v:?}");
    assert_eq!(
        v.counters.refresh_failures, 0,
        "the stale failure counted: {v:?}"
    );
    assert_eq!(token(&pool).await, "token-of-new");
    pool.shutdown().await;
}

#[tokio::test]
async fn credentials_reach_an_account_whose_mailbox_is_full() {
    let auth = Arc::new(FakeAuth::default());
    let pool = start(&auth, vec![account(A, "old", false)]).await;
    assert_eq!(token(&pool).await, "token-of-old");
    let lease = pool.lease(Capability::Text, &[]).await.unwrap();
    let actor = lease.inner.actor.clone();
    lease.succeed();

    // The actor stops reading its mailbox (its thread stays free), and the mailbox fills up.
    let (release, paused) = tokio::sync::oneshot::channel();
    actor.do_send(actor::Pause(paused));
    let mut sent = 0;
    loop {
        match actor.try_send(Refresh {
            token_generation: Some(u64::MAX),
        }) {
            Ok(()) => sent += 1,
            Err(SendError::Full(_)) => break,
            Err(SendError::Closed(_)) => panic!("the actor stopped"),
        }
        assert!(sent < 100_000, "the mailbox never filled");
    }
    // A `try_send` (what the old pool used for credentials) would drop them now.
    assert!(matches!(
        actor.try_send(NewCredentials {
            credentials: Arc::new(credentials("dropped")),
            generation: 99,
        }),
        Err(SendError::Full(_))
    ));

    // The supervisor hands new credentials over while the mailbox is full.
    pool.upsert(vec![account(A, "new", true)]).await;
    release.send(()).unwrap();

    until(&pool, "ready", |v| v.state == "ready").await;
    assert_eq!(token(&pool).await, "token-of-new");
    pool.shutdown().await;
}

#[tokio::test]
async fn concurrent_requests_share_one_mint() {
    let auth = Arc::new(FakeAuth::default());
    auth.script(
        "a",
        &[Step {
            delay: Duration::from_millis(200),
            fail: None,
        }],
    );
    let pool = start(&auth, vec![account(A, "a", false)]).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { token(&pool).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "token-of-a");
    }
    assert_eq!(auth.mints(), 1);
    pool.shutdown().await;
}

#[tokio::test]
async fn a_token_refused_by_many_requests_is_minted_again_once() {
    let auth = Arc::new(FakeAuth::default());
    let pool = start(&auth, vec![account(A, "a", false)]).await;
    let mut leases = Vec::new();
    for _ in 0..10 {
        let mut lease = pool.lease(Capability::Text, &[]).await.unwrap();
        lease.auth().await.unwrap();
        leases.push(lease);
    }
    assert_eq!(auth.mints(), 1);
    let refused = UpstreamError::new(ErrorKind::AuthExpired, "converse", "refused");
    let mut leases = leases.into_iter();
    leases.next().unwrap().fail(&refused);
    let deadline = Instant::now() + Duration::from_secs(5);
    while auth.mints() < 2 {
        assert!(
            Instant::now() < deadline,
            "the refused token was never replaced"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The other nine report the same, older token, one at a time, after the new token exists:
    // each would start a mint if refusals were not matched against the token's generation.
    for lease in leases {
        lease.fail(&refused);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until(&pool, "settled", |v| {
        v.in_flight.text == 0 && v.state == "ready"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        auth.mints(),
        2,
        "one refresh for the refused generation, not ten"
    );
    pool.shutdown().await;
}

#[tokio::test]
async fn a_stale_mint_succeeding_after_new_credentials_arrived_is_ignored() {
    let auth = Arc::new(FakeAuth::default());
    // The old cookies still work, slowly.
    auth.script(
        "old",
        &[Step {
            delay: Duration::from_millis(300),
            fail: None,
        }],
    );
    let pool = new_credentials_during_a_slow_mint(&auth).await;
    // The old mint succeeds now; its token must not replace the new one.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(auth.mints(), 2);
    assert_eq!(token(&pool).await, "token-of-new");
    pool.shutdown().await;
}

#[tokio::test]
async fn a_restarted_supervisor_carries_on_from_the_persisted_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let auth = Arc::new(FakeAuth::default());
    let pool = Pool::start(
        config(),
        vec![account(A, "a", false)],
        Arc::clone(&auth) as Arc<dyn Authenticator>,
        direct_egress(),
        Some(Persistence {
            store: Arc::clone(&store),
            accounts_dir: dir.path().to_path_buf(),
        }),
    )
    .unwrap();
    for _ in 0..3 {
        token(&pool).await;
    }
    until(&pool, "counted", |v| v.counters.success == 3).await;
    // Wait for the tick that writes the state, then put a different state on disk: the
    // restarted supervisor must take it from there, not from its memory.
    let deadline = Instant::now() + Duration::from_secs(5);
    while store
        .states()
        .unwrap()
        .first()
        .and_then(|(_, s)| s.as_ref().ok().map(|s| s.counters.success))
        != Some(3)
    {
        assert!(Instant::now() < deadline, "the state was never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stored = AccountStatus::default();
    stored.counters.success = 42;
    store
        .write_states(&StateBatch {
            states: vec![(A.to_owned(), stored)],
            deleted: vec![],
        })
        .unwrap();

    pool.supervisor().send(supervisor::Crash).await.unwrap();

    until(&pool, "reloaded", |v| v.counters.success == 42).await;
    // And it serves again.
    assert_eq!(token(&pool).await, "token-of-a");
    until(&pool, "counted", |v| v.counters.success == 43).await;
    pool.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_the_pool_and_later_calls_fail_softly() {
    let auth = Arc::new(FakeAuth::default());
    let pool = start(&auth, vec![account(A, "a", false)]).await;
    pool.shutdown().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(pool.lease(Capability::Text, &[]).await.is_err());
    assert!(pool.snapshot().await.is_empty());
}
