//! [`AccountActor`]: one actix actor per account. It owns the account's credentials, its
//! session token and the single mint in flight; the supervisor owns the account's state.
//!
//! Messages (each documented with its reply):
//! - [`Auth`] → the token for one call: the cached one while it is usable, otherwise the caller
//!   waits for the one mint in flight (started if none is). Every waiter gets the same result.
//! - [`Refresh`] → `()`: mint a new token (proactive, forced, or after the upstream refused the
//!   token of generation `g` — a refusal of an older token generation is ignored, so N requests
//!   refused together cause one mint, not N).
//! - [`NewCredentials`] → `()`: new cookies (import, upload, re-login) with the credential
//!   generation the supervisor gave them. The token is dropped, a mint in flight is disowned.
//! - [`Stop`] → `()`.
//!
//! Two generations:
//! - the **credential generation** grows whenever new credentials arrive. A mint carries the
//!   generation it started from, to this actor and to the supervisor's
//!   [`RefreshStarted`]/[`RefreshFinished`]; a result of an older generation is ignored (logged
//!   at debug), so a slow mint with old cookies cannot undo new ones.
//! - the **token generation** grows with every minted token; a lease reports which one a
//!   failed call used.
//!
//! A mint runs as a future on this actor's context (`ctx.spawn(fut.into_actor(self).map(..))`)
//! holding a permit of the pool-wide refresh semaphore (`refresh_concurrency`), so mints across
//! the pool are bounded and a slow or failing account never blocks another; its result is
//! handled back on the actor.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use business2api_shared::AccountKey;
use tokio::sync::{Semaphore, oneshot};

use crate::accounts::Credentials;
use crate::egress::{Egress, EgressPool};
use crate::upstream::{AccessToken, Authenticator, CallAuth, ErrorKind, UpstreamError};

/// Capacity of an account actor's mailbox for [`Auth`] requests (`send` waits for room).
/// Control messages are sent with `do_send`, which actix queues regardless of this capacity.
pub const MAILBOX: usize = 256;

/// The token for one upstream call, and the generations it belongs to.
#[derive(Debug, Clone)]
pub struct Grant {
    pub auth: CallAuth,
    pub token_generation: u64,
    pub credential_generation: u64,
}

/// The token for one call. Reply: the token, or why none could be minted.
#[derive(Debug, Message)]
#[rtype(result = "Result<Grant, UpstreamError>")]
pub struct Auth;

/// Mint a new token. Reply: none.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Refresh {
    /// Only if the current token is of this token generation (`None` = unconditionally).
    pub token_generation: Option<u64>,
}

/// New credentials for the account. Reply: none. Sent with `do_send` so a full mailbox
/// cannot drop it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NewCredentials {
    pub credentials: Arc<Credentials>,
    /// The credential generation the supervisor assigned to them.
    pub generation: u64,
}

/// Stop the actor (account removed or credentials unusable). Reply: none.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Stop;

/// The start of a mint, for the supervisor. Reply: none.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RefreshStarted {
    pub key: AccountKey,
    /// The credential generation the mint started from.
    pub generation: u64,
}

/// The end of a mint, for the supervisor. Reply: none.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RefreshFinished {
    pub key: AccountKey,
    /// The credential generation the mint started from.
    pub generation: u64,
    /// How long the new token may be used (the upstream's token lifetime), or why none came.
    pub result: Result<std::time::Duration, UpstreamError>,
}

/// What every account actor of a pool shares.
#[derive(Clone)]
pub struct Shared {
    pub authenticator: Arc<dyn Authenticator>,
    /// Which proxy each account leaves through.
    pub egress: EgressPool,
    /// Bounds the mints in flight across the pool (`refresh_concurrency`).
    pub refresh_permits: Arc<Semaphore>,
    pub started: Recipient<RefreshStarted>,
    pub finished: Recipient<RefreshFinished>,
}

type Waiter = oneshot::Sender<Result<Grant, UpstreamError>>;

/// One account: credentials, token, single-flight mint.
pub struct AccountActor {
    key: AccountKey,
    label: String,
    credentials: Arc<Credentials>,
    credential_generation: u64,
    /// The token, its generation and the route it was minted through.
    token: Option<(AccessToken, u64, Egress)>,
    token_generation: u64,
    /// The credential generation of the mint in flight that this actor waits for.
    minting: Option<u64>,
    waiters: Vec<Waiter>,
    shared: Shared,
}

impl AccountActor {
    pub fn new(
        key: AccountKey,
        credentials: Arc<Credentials>,
        credential_generation: u64,
        shared: Shared,
    ) -> AccountActor {
        AccountActor {
            label: key.label(),
            key,
            credentials,
            credential_generation,
            token: None,
            token_generation: 0,
            minting: None,
            waiters: Vec::new(),
            shared,
        }
    }

    fn grant(&self, token: &AccessToken, token_generation: u64, egress: &Egress) -> Grant {
        Grant {
            auth: CallAuth {
                token: token.value.clone(),
                credentials: Arc::clone(&self.credentials),
                egress: egress.clone(),
            },
            token_generation,
            credential_generation: self.credential_generation,
        }
    }

    fn start_mint(&mut self, ctx: &mut Context<Self>) {
        if self.minting.is_some() {
            return;
        }
        let generation = self.credential_generation;
        self.minting = Some(generation);
        let key = self.key.clone();
        let credentials = Arc::clone(&self.credentials);
        let shared = self.shared.clone();
        let mint = async move {
            // Closed only at shutdown; minting without a permit then is harmless.
            let _permit = shared.refresh_permits.acquire_owned().await.ok();
            shared.started.do_send(RefreshStarted {
                key: key.clone(),
                generation,
            });
            // The account's proxy: every mint and call of a token goes the same way.
            let result = match shared.egress.route(&key) {
                Ok(egress) => shared
                    .authenticator
                    .authenticate(&credentials, &egress)
                    .await
                    .map(|token| (token, egress)),
                Err(e) => Err(e),
            };
            shared.finished.do_send(RefreshFinished {
                key,
                generation,
                result: result
                    .as_ref()
                    .map(|(token, _)| {
                        token
                            .use_until
                            .saturating_duration_since(std::time::Instant::now())
                    })
                    .map_err(Clone::clone),
            });
            result
        };
        ctx.spawn(
            mint.into_actor(self)
                .map(move |result, act, _ctx| act.minted(generation, result)),
        );
    }

    /// A mint ended; handled on the actor.
    fn minted(&mut self, generation: u64, result: Result<(AccessToken, Egress), UpstreamError>) {
        if generation != self.credential_generation {
            tracing::debug!(
                account = %self.label,
                generation,
                current = self.credential_generation,
                "a mint of older credentials ended; ignored"
            );
            return;
        }
        self.minting = None;
        let reply = match result {
            Ok((token, egress)) => {
                self.token_generation += 1;
                let grant = self.grant(&token, self.token_generation, &egress);
                self.token = Some((token, self.token_generation, egress));
                Ok(grant)
            }
            Err(e) => Err(e),
        };
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(reply.clone());
        }
    }
}

impl Actor for AccountActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
    }
}

/// The account's actor is gone (the account was removed, or the pool stopped).
pub(super) fn gone() -> UpstreamError {
    UpstreamError::new(
        ErrorKind::Transport,
        "pool",
        "the account was removed from the pool",
    )
}

impl Handler<Auth> for AccountActor {
    type Result = ResponseFuture<Result<Grant, UpstreamError>>;

    fn handle(&mut self, _: Auth, ctx: &mut Self::Context) -> Self::Result {
        if let Some((token, generation, minted_through)) = &self.token
            && token.usable_at(Instant::now())
        {
            // The token serves only while the account still leaves through the proxy it was
            // minted through; after a re-pin a new one is minted through the new proxy.
            match self.shared.egress.route(&self.key) {
                Ok(now) if now.node_id() == minted_through.node_id() => {
                    let grant = self.grant(token, *generation, &now);
                    return Box::pin(std::future::ready(Ok(grant)));
                }
                Ok(_) => self.token = None,
                Err(e) => return Box::pin(std::future::ready(Err(e))),
            }
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.retain(|w| !w.is_closed());
        self.waiters.push(tx);
        self.start_mint(ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(gone())) })
    }
}

impl Handler<Refresh> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: Refresh, ctx: &mut Self::Context) {
        let current = self.token.as_ref().map(|(_, g, _)| *g);
        if msg.token_generation.is_none() || msg.token_generation == current {
            if msg.token_generation.is_some() {
                // That token was refused: never hand it out again.
                self.token = None;
            }
            self.start_mint(ctx);
        }
    }
}

impl Handler<NewCredentials> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: NewCredentials, ctx: &mut Self::Context) {
        if msg.generation < self.credential_generation {
            tracing::debug!(account = %self.label, "credentials of an older generation; ignored");
            return;
        }
        self.credentials = msg.credentials;
        self.credential_generation = msg.generation;
        self.token = None;
        // The mint in flight (if any) is of older credentials: its result will be ignored.
        self.minting = None;
        if !self.waiters.is_empty() {
            self.start_mint(ctx);
        }
    }
}

impl Handler<Stop> for AccountActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Test-only: the actor stops reading its mailbox until `0` resolves (its thread stays free),
/// so a test can fill the mailbox while the supervisor keeps running.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pause(pub oneshot::Receiver<()>);

#[cfg(test)]
impl Handler<Pause> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: Pause, ctx: &mut Self::Context) {
        ctx.wait(
            async move {
                let _ = msg.0.await;
            }
            .into_actor(self),
        );
    }
}
