//! One chat request end to end: find the model's upstream in the registry, lease a member of
//! its pool, get its token, run the upstream turn, and fail over to another member while
//! nothing has reached the client yet.
//!
//! Streaming: an attempt counts as started once the upstream produced its first event; until
//! then any failure that another account might not have (everything but a bad request) moves
//! the request to the next account, up to `gemini_business.max_attempts` accounts. After the
//! first event the stream belongs to the client and failures become in-stream errors.
//!
//! Non-streaming: nothing reaches the client before the whole answer exists, so a failure at
//! any point may still move the request to another account (within the same attempt budget).
//!
//! Failures the request causes do not drain the pool. A failure that follows one request from
//! account to account is the request's, not the accounts':
//! - an upstream bad request (400/413/422) is the request's by the upstream's own word: the
//!   client gets it at once, no other account is tried, and the account is released with no
//!   outcome;
//! - an upstream 5xx, or a cut (the connection broke, or the answer was malformed or empty),
//!   may be either. The failed attempt's outcome waits for the next attempt (`Deferred`). If
//!   the next account fails the same way (5xx after 5xx, cut after cut; for non-streamed
//!   requests also mid-answer), failover stops: the client gets that error and both accounts
//!   are released with no outcome (no failure, no cooldown), so no other account is tried
//!   either. If the next account answers, fails differently, or there is no next account, the
//!   first failure counts against its account as usual.
//!
//! So one such request costs at most two upstream calls and no cooldown. An upstream outage
//! that fails every account alike looks the same, and is treated the same: the requests end
//! after two attempts and the accounts stay in rotation (cooling them would not help).
//! Account-caused failures (rate limit, quota, a refused token, dead cookies, a challenge,
//! timeouts) keep failing over and count against their account.
//!
//! Media: before any account is leased, inline attachments are checked once for every dialect
//! and upstream ([`check_inline_media`]): a file over `media.fetch_max_mb` is a 413, a type the
//! upstream cannot take a 400, and a generic or wrong label is corrected from the magic bytes;
//! more than `limits.max_attachments` attachments (inline or URL) is a 400. A
//! media URL the gateway cannot fetch ([`InputError`]) fails the request without trying other
//! accounts and without counting against the account.

use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use business2api_shared::AccountKey;
use futures_util::{Stream, StreamExt};

use crate::config::live::LiveConfig;
use crate::domain::{ChatRequest, Media, Part, StreamEvent};
use crate::error::{GatewayError, InputError};
use crate::media::mime;
use crate::pool::{Capability, Lease, Pool};
use crate::upstream::{CallError, ErrorKind, EventStream, ModelRegistry, Route, UpstreamError};

/// The `endpoint` of errors the service itself raises about a turn.
const TURN: &str = "turn";

/// The limits one request runs under (read once, at its start).
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_attempts: usize,
    /// Longest time spent finding an account that starts the answer.
    deadline: Duration,
    /// Largest inline media file.
    max_media_bytes: u64,
    /// Attachments per request (`limits.max_attachments`).
    max_attachments: u32,
}

/// Runs chat turns: routes each request by the model registry and fails over across the
/// members of the upstream's pool.
#[derive(Debug, Clone)]
pub struct ChatService {
    registry: Arc<ModelRegistry>,
    /// The account pool (admin and health views).
    pool: Pool,
    /// `gemini_business.max_attempts`, `pool.failover_deadline_sec` and `media.fetch_max_mb`
    /// are read from it at each request.
    live: LiveConfig,
}

/// An answer that has started: its first event plus the rest, bound to the account serving it.
/// The outcome is reported to the pool as the stream ends (success) or fails; a stream dropped
/// before its end (the client went away) reports "abandoned".
pub struct ChatStream {
    first: Option<StreamEvent>,
    rest: EventStream,
    /// The account serving the answer (`None` for an upstream with credentials of its own).
    lease: Option<Lease>,
    /// The answer has ended (or failed): nothing more is polled.
    ended: bool,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Stream for ChatStream {
    type Item = Result<StreamEvent, GatewayError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rest.poll_next_unpin(cx) {
            Poll::Ready(None) => {
                self.ended = true;
                if let Some(lease) = self.lease.take() {
                    lease.succeed();
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.ended = true;
                if let Some(lease) = self.lease.take() {
                    tracing::warn!(account = %lease.label(), error = %crate::telemetry::untrusted(&e.to_string()), "upstream failed mid-answer");
                    match &e {
                        CallError::Upstream(u) => lease.fail(u),
                        // The client's input: no outcome for the account.
                        CallError::Input(_) => drop(lease),
                    }
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(event))) => Poll::Ready(Some(Ok(event))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A failure that may be the request's own as well as the account's: when the same kind
/// follows one request to a second account, it is the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suspect {
    /// `ErrorKind::Server` of this status class (5 for any 5xx).
    Server(u16),
    /// `ErrorKind::Transport` or `ErrorKind::Protocol`: the connection broke, or the answer
    /// was malformed or empty.
    Cut,
}

impl Suspect {
    fn of(error: &UpstreamError) -> Option<Suspect> {
        match error.kind {
            ErrorKind::Server { status } => Some(Suspect::Server(status / 100)),
            ErrorKind::Transport | ErrorKind::Protocol => Some(Suspect::Cut),
            _ => None,
        }
    }
}

/// A failed attempt whose outcome waits for the next attempt. Dropped, it reports the failure
/// to its account as usual; [`Deferred::forgive`] releases the account with no outcome.
struct Deferred {
    lease: Option<Lease>,
    error: UpstreamError,
    suspect: Suspect,
}

impl Deferred {
    /// The failure was the request's: no outcome for the account.
    fn forgive(mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.fail(&self.error);
        }
    }
}

/// One request's failover: the accounts tried, the failure to answer with when no account is
/// left, and the failed attempt whose outcome waits for the next one (reported when this is
/// dropped, unless the next attempt showed the failure was the request's).
#[derive(Default)]
struct Attempts {
    tried: Vec<AccountKey>,
    last: Option<UpstreamError>,
    deferred: Option<Deferred>,
}

impl Attempts {
    /// An attempt on `lease` failed with `error` while nothing had reached the client. Breaks
    /// with the error to answer when failover stops here.
    fn failed(&mut self, lease: Lease, error: UpstreamError) -> ControlFlow<GatewayError> {
        tracing::warn!(account = %lease.label(), error = %crate::telemetry::untrusted(&error.to_string()), "attempt failed before the answer reached the client");
        let suspect = Suspect::of(&error);
        match self.deferred.take() {
            Some(previous) if Some(previous.suspect) == suspect => {
                tracing::warn!(
                    error = %crate::telemetry::untrusted(&error.to_string()),
                    "the same failure on a second account: the request's, not the accounts'; failover stops"
                );
                previous.forgive();
                lease.release();
                return ControlFlow::Break(error.into());
            }
            // Settled: it counts against its account.
            previous => drop(previous),
        }
        if let ErrorKind::Proxy { exhausted } = error.kind {
            // The proxy pool scored the proxy (and re-pinned its accounts when it was
            // quarantined); the account is not touched.
            lease.release();
            if exhausted {
                return ControlFlow::Break(error.into());
            }
            self.last = Some(error);
            return ControlFlow::Continue(());
        }
        if !error.retry_elsewhere() {
            // The upstream refused the request itself: another account would refuse it too,
            // and it says nothing about this one.
            lease.release();
            return ControlFlow::Break(error.into());
        }
        match suspect {
            Some(suspect) => {
                self.deferred = Some(Deferred {
                    lease: Some(lease),
                    error: error.clone(),
                    suspect,
                });
            }
            None => lease.fail(&error),
        }
        self.last = Some(error);
        ControlFlow::Continue(())
    }

    /// The answer when no account is left: the last failure, else `otherwise`.
    fn give_up(&self, otherwise: GatewayError) -> GatewayError {
        self.last.clone().map_or(otherwise, GatewayError::Upstream)
    }
}

/// An attempt that produced its first event.
struct Started {
    first: StreamEvent,
    rest: EventStream,
    lease: Lease,
}

fn empty_answer() -> UpstreamError {
    UpstreamError::new(
        ErrorKind::Protocol,
        TURN,
        "the upstream returned an empty answer",
    )
}

fn deadline_passed(deadline: Duration) -> GatewayError {
    GatewayError::Upstream(UpstreamError::new(
        ErrorKind::Timeout,
        TURN,
        format!(
            "no account started an answer within {} s (pool.failover_deadline_sec)",
            deadline.as_secs()
        ),
    ))
}

/// Checks inline attachments before any account is used: each at most `max_bytes` (413),
/// of a type the upstream takes (400), with its type corrected from the magic bytes when the
/// label is missing, generic or wrong (see [`mime::resolve`]). Attachments are numbered in
/// conversation order. URL attachments are checked when fetched. Returns the request with
/// corrected labels (unchanged when nothing needed correcting).
pub fn check_inline_media(
    mut request: ChatRequest,
    max_bytes: u64,
    max_attachments: u32,
) -> Result<ChatRequest, InputError> {
    let total = request
        .messages
        .iter()
        .flat_map(|m| &m.parts)
        .filter(|p| matches!(p, Part::Media(_)))
        .count();
    if total > max_attachments as usize {
        return Err(InputError::invalid(format!(
            "attachments: {total} attachments exceed the limit of {max_attachments} \
             (limits.max_attachments)"
        )));
    }
    let mut n = 0;
    for message in &mut request.messages {
        for part in &mut message.parts {
            let Part::Media(media) = part else { continue };
            n += 1;
            let Media::Inline { mime: label, data } = media else {
                continue;
            };
            if data.len() as u64 > max_bytes {
                return Err(InputError::too_large(format!(
                    "attachment {n} is {} bytes; the limit for one media file is {max_bytes} \
                     bytes (media.fetch_max_mb)",
                    data.len()
                )));
            }
            let resolved = mime::resolve(Some(label), data)
                .map_err(|e| InputError::invalid(format!("attachment {n}: {e}")))?;
            if resolved != *label {
                *label = resolved;
            }
        }
    }
    Ok(request)
}

impl ChatService {
    pub fn new(registry: Arc<ModelRegistry>, pool: Pool, live: LiveConfig) -> Self {
        Self {
            registry,
            pool,
            live,
        }
    }

    /// The per-request limits, from one look at the live configuration.
    fn limits(&self) -> Limits {
        let settings = self.live.load();
        Limits {
            max_attempts: usize::try_from(settings.gemini_business.max_attempts.max(1))
                .unwrap_or(1),
            deadline: settings.pool.failover_deadline,
            max_media_bytes: settings.media.fetch_max_bytes,
            max_attachments: settings.limits.max_attachments,
        }
    }

    /// The account pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The model registry (dialects parse model names through it).
    pub fn models(&self) -> &ModelRegistry {
        &self.registry
    }

    fn route(&self, request: &ChatRequest) -> Result<&Route, GatewayError> {
        self.registry.route(&request.model).ok_or_else(|| {
            tracing::error!(model = %crate::telemetry::untrusted(&request.model.to_string()), "a parsed model has no registered upstream");
            GatewayError::Internal
        })
    }

    /// The estimated input tokens of `request`, as its upstream would be sent it.
    pub fn input_tokens(&self, request: &ChatRequest) -> u32 {
        self.registry
            .route(&request.model)
            .map_or(1, |r| r.input_tokens(request))
    }

    /// What every turn starts with: the limits in force, the model's route, and the request
    /// with its attachments checked ([`check_inline_media`]) before any account is leased.
    fn prepare(
        &self,
        request: ChatRequest,
    ) -> Result<(Limits, Route, Arc<ChatRequest>), GatewayError> {
        let limits = self.limits();
        let route = self.route(&request)?.clone();
        let request = check_inline_media(request, limits.max_media_bytes, limits.max_attachments)?;
        Ok((limits, route, Arc::new(request)))
    }

    /// Starts a streamed answer: resolves once the first event exists, or with the error to
    /// send when no account could start it (within the attempt budget and the deadline).
    pub async fn stream(&self, request: ChatRequest) -> Result<ChatStream, GatewayError> {
        let (limits, route, request) = self.prepare(request)?;
        let (upstream, pool) = match route {
            Route::Own(upstream) => return own_stream(upstream.converse(request)).await,
            Route::Pooled { upstream, pool } => (upstream, pool),
        };
        // Once the answer has started, a deferred failure of an earlier account is reported as
        // `attempts` goes.
        let mut attempts = Attempts::default();
        let started = tokio::time::timeout(
            limits.deadline,
            start(
                &*upstream,
                &pool,
                &request,
                limits.max_attempts,
                &mut attempts,
            ),
        )
        .await
        .unwrap_or_else(|_| Err(deadline_passed(limits.deadline)))?;
        Ok(ChatStream {
            first: Some(started.first),
            rest: started.rest,
            lease: Some(started.lease),
            ended: false,
        })
    }

    /// A whole answer, for non-streaming requests. Nothing has reached the client until it is
    /// complete, so a failure mid-answer may still move to another account.
    pub async fn complete(&self, request: ChatRequest) -> Result<Vec<StreamEvent>, GatewayError> {
        let (limits, route, request) = self.prepare(request)?;
        let (upstream, pool) = match route {
            Route::Own(upstream) => {
                let mut events = Vec::new();
                let mut answer = upstream.converse(request);
                while let Some(event) = answer.next().await {
                    events.push(event?);
                }
                if events.is_empty() {
                    return Err(empty_answer().into());
                }
                return Ok(events);
            }
            Route::Pooled { upstream, pool } => (upstream, pool),
        };
        let mut attempts = Attempts::default();
        loop {
            let Started {
                first,
                mut rest,
                lease,
            } = tokio::time::timeout(
                limits.deadline,
                start(
                    &*upstream,
                    &pool,
                    &request,
                    limits.max_attempts,
                    &mut attempts,
                ),
            )
            .await
            .unwrap_or_else(|_| Err(deadline_passed(limits.deadline)))?;
            let mut events = vec![first];
            let failure = loop {
                match rest.next().await {
                    Some(Ok(event)) => events.push(event),
                    Some(Err(e)) => break Some(e),
                    None => break None,
                }
            };
            match failure {
                None => {
                    lease.succeed();
                    return Ok(events);
                }
                Some(CallError::Input(e)) => {
                    // The client's media, not the account: release the lease without an outcome.
                    tracing::info!(account = %lease.label(), error = %crate::telemetry::untrusted(&e.to_string()), "client media not usable");
                    drop(lease);
                    return Err(e.into());
                }
                Some(CallError::Upstream(e)) => {
                    if let ControlFlow::Break(e) = attempts.failed(lease, e) {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Tries pool members not yet tried until one produces a first event, the attempt budget
/// is spent, or failover stops (see [`Attempts::failed`]). A deferred failure stays in
/// `attempts` for the caller to settle.
async fn start(
    upstream: &dyn crate::upstream::Upstream,
    pool: &Pool,
    request: &Arc<ChatRequest>,
    max_attempts: usize,
    attempts: &mut Attempts,
) -> Result<Started, GatewayError> {
    let cap = Capability::of(&request.model);
    while attempts.tried.len() < max_attempts {
        let mut lease = match pool.lease(cap, &attempts.tried).await {
            Ok(lease) => lease,
            Err(unavailable) => {
                let empty = attempts.tried.is_empty() && pool.count().await == 0;
                return Err(attempts.give_up(GatewayError::NoAccountAvailable {
                    retry_after: unavailable.retry_after,
                    empty,
                }));
            }
        };
        attempts.tried.push(lease.key().clone());
        let auth = match lease.auth().await {
            Ok(auth) => auth,
            Err(e) if matches!(e.kind, ErrorKind::Proxy { .. }) => {
                // The account's proxy, not the account: no outcome for it.
                tracing::warn!(account = %lease.label(), error = %e, "the account's egress proxy is unavailable");
                lease.release();
                if let ErrorKind::Proxy { exhausted: true } = e.kind {
                    return Err(e.into());
                }
                attempts.last = Some(e);
                continue;
            }
            Err(e) => {
                tracing::warn!(account = %lease.label(), error = %crate::telemetry::untrusted(&e.to_string()), "no session token");
                lease.fail_auth(&e);
                attempts.last = Some(e);
                continue;
            }
        };
        let mut events = upstream.converse(auth, Arc::clone(request));
        let error = match events.next().await {
            Some(Ok(first)) => {
                return Ok(Started {
                    first,
                    rest: events,
                    lease,
                });
            }
            Some(Err(CallError::Input(e))) => {
                // The client's media, not the account: release the lease without an outcome.
                tracing::info!(account = %lease.label(), error = %crate::telemetry::untrusted(&e.to_string()), "client media not usable");
                drop(lease);
                return Err(e.into());
            }
            Some(Err(CallError::Upstream(e))) => e,
            None => empty_answer(),
        };
        if let ControlFlow::Break(e) = attempts.failed(lease, error) {
            return Err(e);
        }
    }
    Err(attempts.give_up(GatewayError::Internal))
}

/// The answer of an upstream with credentials of its own: started once its first event exists
/// (a failure before it is the answer's status).
async fn own_stream(mut events: EventStream) -> Result<ChatStream, GatewayError> {
    match events.next().await {
        Some(Ok(first)) => Ok(ChatStream {
            first: Some(first),
            rest: events,
            lease: None,
            ended: false,
        }),
        Some(Err(e)) => Err(e.into()),
        None => Err(empty_answer().into()),
    }
}
