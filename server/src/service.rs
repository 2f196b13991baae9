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
//! Media: before any account is leased, inline attachments are checked once for every dialect
//! and upstream ([`check_inline_media`]): a file over `media.fetch_max_mb` is a 413, a type the
//! upstream cannot take a 400, and a generic or wrong label is corrected from the magic bytes;
//! more than `limits.max_attachments` attachments (inline or URL) is a 400. A
//! media URL the gateway cannot fetch ([`InputError`]) fails the request without trying other
//! accounts and without counting against the account.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

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
    lease: Option<Lease>,
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
        if self.lease.is_none() {
            return Poll::Ready(None);
        }
        match self.rest.poll_next_unpin(cx) {
            Poll::Ready(None) => {
                if let Some(lease) = self.lease.take() {
                    lease.succeed();
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(lease) = self.lease.take() {
                    tracing::warn!(account = %lease.label(), error = %e, "upstream failed mid-answer");
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
            tracing::error!(model = %request.model, "a parsed model has no registered upstream");
            GatewayError::Internal
        })
    }

    /// The estimated input tokens of `request`, as its upstream would be sent it.
    pub fn input_tokens(&self, request: &ChatRequest) -> u32 {
        self.registry
            .route(&request.model)
            .map_or(1, |r| r.upstream.input_tokens(request))
    }

    /// Starts a streamed answer: resolves once the first event exists, or with the error to
    /// send when no account could start it (within the attempt budget and the deadline).
    pub async fn stream(&self, request: ChatRequest) -> Result<ChatStream, GatewayError> {
        let limits = self.limits();
        let route = self.route(&request)?.clone();
        let request = Arc::new(check_inline_media(
            request,
            limits.max_media_bytes,
            limits.max_attachments,
        )?);
        let mut tried = Vec::new();
        tokio::time::timeout(
            limits.deadline,
            self.start(&route, &request, limits.max_attempts, &mut tried, None),
        )
        .await
        .unwrap_or_else(|_| Err(deadline_passed(limits.deadline)))
    }

    /// A whole answer, for non-streaming requests. Nothing has reached the client until it is
    /// complete, so a failure mid-answer may still move to another account.
    pub async fn complete(&self, request: ChatRequest) -> Result<Vec<StreamEvent>, GatewayError> {
        let limits = self.limits();
        let route = self.route(&request)?.clone();
        let request = Arc::new(check_inline_media(
            request,
            limits.max_media_bytes,
            limits.max_attachments,
        )?);
        let mut tried = Vec::new();
        let mut last = None;
        while tried.len() < limits.max_attempts {
            let mut stream = tokio::time::timeout(
                limits.deadline,
                self.start(
                    &route,
                    &request,
                    limits.max_attempts,
                    &mut tried,
                    last.take(),
                ),
            )
            .await
            .unwrap_or_else(|_| Err(deadline_passed(limits.deadline)))?;
            let mut events = Vec::new();
            let mut failed = None;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => events.push(event),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => return Ok(events),
                Some(GatewayError::Upstream(e)) if e.retry_elsewhere() => last = Some(e),
                Some(e) => return Err(e),
            }
        }
        Err(last.map_or(GatewayError::Internal, GatewayError::Upstream))
    }

    /// Tries pool members not in `tried` until one produces a first event, the attempt budget
    /// is spent, or the failure is one no other member would avoid.
    async fn start(
        &self,
        route: &Route,
        request: &Arc<ChatRequest>,
        max_attempts: usize,
        tried: &mut Vec<business2api_shared::AccountKey>,
        mut last: Option<UpstreamError>,
    ) -> Result<ChatStream, GatewayError> {
        let cap = Capability::of(&request.model);
        while tried.len() < max_attempts {
            let mut lease = match route.pool.lease(cap, tried).await {
                Ok(lease) => lease,
                Err(unavailable) => {
                    return Err(last.map_or(
                        GatewayError::NoAccountAvailable {
                            retry_after: unavailable.retry_after,
                        },
                        GatewayError::Upstream,
                    ));
                }
            };
            tried.push(lease.key().clone());
            let auth = match lease.auth().await {
                Ok(auth) => auth,
                Err(e) => {
                    tracing::warn!(account = %lease.label(), error = %e, "no session token");
                    lease.fail_auth(&e);
                    last = Some(e);
                    continue;
                }
            };
            let mut events = route.upstream.converse(auth, Arc::clone(request));
            let error = match events.next().await {
                Some(Ok(first)) => {
                    return Ok(ChatStream {
                        first: Some(first),
                        rest: events,
                        lease: Some(lease),
                    });
                }
                Some(Err(CallError::Input(e))) => {
                    // The client's media, not the account: release the lease without an outcome.
                    tracing::info!(account = %lease.label(), error = %e, "client media not usable");
                    drop(lease);
                    return Err(e.into());
                }
                Some(Err(CallError::Upstream(e))) => e,
                None => empty_answer(),
            };
            tracing::warn!(account = %lease.label(), error = %error, "attempt failed before the first byte");
            lease.fail(&error);
            if !error.retry_elsewhere() {
                return Err(error.into());
            }
            last = Some(error);
        }
        Err(last.map_or(GatewayError::Internal, GatewayError::Upstream))
    }
}
