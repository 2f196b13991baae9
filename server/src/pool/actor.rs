//! [`AccountActor`]: one task per account that owns its credentials and session token.
//!
//! Messages ([`AccountMsg`]):
//! - `Auth`: the token for a call — the cached one while it is usable, otherwise the caller waits
//!   for the one mint in flight (started if none is). Every waiter gets the same result.
//! - `Refresh`: mint a new token (proactive, forced, or after the upstream refused the token
//!   of generation `g` — a refusal of an older generation is ignored, so N requests refused
//!   together cause one refresh, not N).
//! - `Credentials`: new cookies (import, re-login): the token is dropped, a mint in flight is
//!   disowned.
//! - `Stop`.
//!
//! A mint runs in its own task holding a permit of the pool-wide refresh semaphore, so mints
//! across the pool are bounded and a slow or failing account never blocks another. Its start
//! and outcome are reported to the supervisor, which owns the account's state.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::supervisor::Command;
use crate::accounts::Credentials;
use crate::upstream::{AccessToken, Authenticator, CallAuth, UpstreamError};

/// Messages an account actor understands.
pub enum AccountMsg {
    Auth {
        reply: oneshot::Sender<Result<(CallAuth, u64), UpstreamError>>,
    },
    Refresh {
        /// Only if the current token is of this generation (`None` = unconditionally).
        generation: Option<u64>,
    },
    Credentials(Box<Credentials>),
    MintDone {
        epoch: u64,
        result: Result<AccessToken, UpstreamError>,
    },
    Stop,
}

/// Capacity of an account's mailbox; senders wait when it is full.
const MAILBOX: usize = 256;

/// The address of an account actor.
#[derive(Debug, Clone)]
pub struct AccountHandle {
    tx: mpsc::Sender<AccountMsg>,
}

impl AccountHandle {
    /// The token for one call and its generation.
    pub async fn auth(&self) -> Result<(CallAuth, u64), UpstreamError> {
        let (reply, rx) = oneshot::channel();
        let gone = || {
            UpstreamError::new(
                crate::upstream::ErrorKind::Transport,
                "pool",
                "the account was removed from the pool",
            )
        };
        self.tx
            .send(AccountMsg::Auth { reply })
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Fire-and-forget; a full or closed mailbox drops the message (a refresh is re-requested
    /// by the supervisor's schedule).
    pub fn send(&self, msg: AccountMsg) {
        let _ = self.tx.try_send(msg);
    }

    /// Sends, waiting for room in the mailbox.
    pub async fn send_wait(&self, msg: AccountMsg) {
        let _ = self.tx.send(msg).await;
    }
}

/// Shared by every actor of a pool.
#[derive(Clone)]
pub struct ActorContext {
    pub authenticator: Arc<dyn Authenticator>,
    pub refresh_permits: Arc<Semaphore>,
    pub supervisor: mpsc::Sender<Command>,
}

struct AccountActor {
    key: Arc<str>,
    credentials: Arc<Credentials>,
    token: Option<(AccessToken, u64)>,
    generation: u64,
    /// Incremented when the credentials change; a mint of an older epoch is disowned.
    epoch: u64,
    minting: bool,
    waiters: Vec<oneshot::Sender<Result<(CallAuth, u64), UpstreamError>>>,
    ctx: ActorContext,
    me: mpsc::Sender<AccountMsg>,
}

/// Starts the actor of one account.
pub fn spawn(key: Arc<str>, credentials: Credentials, ctx: ActorContext) -> AccountHandle {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let actor = AccountActor {
        key,
        credentials: Arc::new(credentials),
        token: None,
        generation: 0,
        epoch: 0,
        minting: false,
        waiters: Vec::new(),
        ctx,
        me: tx.clone(),
    };
    tokio::spawn(actor.run(rx));
    AccountHandle { tx }
}

impl AccountActor {
    async fn run(mut self, mut rx: mpsc::Receiver<AccountMsg>) {
        while let Some(msg) = rx.recv().await {
            match msg {
                AccountMsg::Auth { reply } => self.auth(reply),
                AccountMsg::Refresh { generation } => {
                    let current = self.token.as_ref().map(|(_, g)| *g);
                    if generation.is_none() || generation == current {
                        if generation.is_some() {
                            // That token was refused: never hand it out again.
                            self.token = None;
                        }
                        self.start_mint();
                    }
                }
                AccountMsg::Credentials(credentials) => {
                    self.credentials = Arc::new(*credentials);
                    self.token = None;
                    self.epoch += 1;
                    self.minting = false;
                    if !self.waiters.is_empty() {
                        self.start_mint();
                    }
                }
                AccountMsg::MintDone { epoch, result } => {
                    if epoch != self.epoch {
                        continue;
                    }
                    self.minting = false;
                    let reply = match result {
                        Ok(token) => {
                            self.generation += 1;
                            let auth = self.call_auth(&token);
                            self.token = Some((token, self.generation));
                            Ok((auth, self.generation))
                        }
                        Err(e) => Err(e),
                    };
                    for waiter in self.waiters.drain(..) {
                        let _ = waiter.send(reply.clone());
                    }
                }
                AccountMsg::Stop => break,
            }
        }
    }

    fn call_auth(&self, token: &AccessToken) -> CallAuth {
        CallAuth {
            token: token.value.clone(),
            credentials: Arc::clone(&self.credentials),
        }
    }

    fn auth(&mut self, reply: oneshot::Sender<Result<(CallAuth, u64), UpstreamError>>) {
        if let Some((token, generation)) = &self.token
            && token.usable_at(Instant::now())
        {
            let _ = reply.send(Ok((self.call_auth(token), *generation)));
            return;
        }
        self.waiters.retain(|w| !w.is_closed());
        self.waiters.push(reply);
        self.start_mint();
    }

    fn start_mint(&mut self) {
        if self.minting {
            return;
        }
        self.minting = true;
        let epoch = self.epoch;
        let key = Arc::clone(&self.key);
        let credentials = Arc::clone(&self.credentials);
        let ctx = self.ctx.clone();
        let me = self.me.clone();
        tokio::spawn(async move {
            // Closed only at shutdown; minting without a permit then is harmless.
            let _permit = ctx.refresh_permits.acquire_owned().await.ok();
            let _ = ctx
                .supervisor
                .send(Command::RefreshStarted {
                    key: Arc::clone(&key),
                })
                .await;
            let result = ctx.authenticator.authenticate(&credentials).await;
            let _ = ctx
                .supervisor
                .send(Command::RefreshFinished {
                    key,
                    result: result.as_ref().map(|_| ()).map_err(Clone::clone),
                })
                .await;
            let _ = me.send(AccountMsg::MintDone { epoch, result }).await;
        });
    }
}
