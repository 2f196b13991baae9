//! One chat request end to end: lease an account, get its token, run the upstream turn, and fail
//! over to another account while nothing has reached the client yet.
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
//! ([`check_inline_media`]): a file over `media.fetch_max_mb` is a 413, a type the upstream
//! cannot take a 400, and a generic or wrong label is corrected from the magic bytes. A media
//! URL the gateway cannot fetch fails the request without trying other accounts and without
//! counting against the account.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};

use crate::domain::{Media, ModelId, StreamEvent, UpstreamQuery};
use crate::error::GatewayError;
use crate::media::mime;
use crate::pool::{Capability, Lease, Pool};
use crate::upstream::gemini_business::{EventStream, GeminiBusinessClient};
use crate::upstream::{Endpoint, ErrorKind, UpstreamError};

/// Runs chat turns against the pool.
#[derive(Debug, Clone)]
pub struct ChatService {
    pool: Pool,
    upstream: Arc<GeminiBusinessClient>,
    max_attempts: u32,
    /// Longest time spent finding an account that starts the answer.
    deadline: Duration,
    /// Largest inline media file (`media.fetch_max_mb`).
    max_media_bytes: u64,
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
    type Item = Result<StreamEvent, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if self.lease.is_none() {
            return Poll::Ready(None);
        }
        let polled = self.rest.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(lease) = self.lease.take() {
                    lease.succeed();
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(lease) = self.lease.take() {
                    tracing::warn!(account = %lease.label(), error = %e, "upstream failed mid-answer");
                    lease.fail(e);
                }
            }
            _ => {}
        }
        polled
    }
}

fn empty_answer() -> UpstreamError {
    UpstreamError::new(
        ErrorKind::Protocol,
        Endpoint::StreamAssist,
        "the upstream returned an empty answer",
    )
}

fn deadline_passed(deadline: Duration) -> GatewayError {
    GatewayError::Upstream(UpstreamError::new(
        ErrorKind::Timeout,
        Endpoint::StreamAssist,
        format!(
            "no account started an answer within {} s (pool.failover_deadline_sec)",
            deadline.as_secs()
        ),
    ))
}

fn media_error(status: u16, message: String) -> GatewayError {
    GatewayError::Upstream(UpstreamError::new(
        ErrorKind::Media { status },
        Endpoint::AddContextFile,
        message,
    ))
}

/// Checks inline attachments before any account is used: each at most `max_bytes` (413),
/// of a type the upstream takes (400), with its type corrected from the magic bytes when the
/// label is missing, generic or wrong (see [`mime::resolve`]). URL attachments are checked
/// when fetched. Borrows the query unchanged when nothing needed correcting.
pub fn check_inline_media(
    query: &UpstreamQuery,
    max_bytes: u64,
) -> Result<Cow<'_, UpstreamQuery>, GatewayError> {
    let mut corrected: Option<UpstreamQuery> = None;
    for (i, media) in query.attachments.iter().enumerate() {
        let Media::Inline { mime: label, data } = media else {
            continue;
        };
        let n = i + 1;
        if data.len() as u64 > max_bytes {
            return Err(media_error(
                413,
                format!(
                    "attachment {n} is {} bytes; the limit for one media file is {max_bytes} \
                     bytes (media.fetch_max_mb)",
                    data.len()
                ),
            ));
        }
        let resolved = mime::resolve(Some(label), data)
            .map_err(|e| media_error(400, format!("attachment {n}: {e}")))?;
        if resolved != *label {
            let q = corrected.get_or_insert_with(|| query.clone());
            if let Some(Media::Inline { mime, .. }) = q.attachments.get_mut(i) {
                *mime = resolved;
            }
        }
    }
    Ok(match corrected {
        Some(q) => Cow::Owned(q),
        None => Cow::Borrowed(query),
    })
}

impl ChatService {
    pub fn new(
        pool: Pool,
        upstream: Arc<GeminiBusinessClient>,
        max_attempts: u32,
        deadline: Duration,
    ) -> Self {
        Self {
            pool,
            upstream,
            max_attempts: max_attempts.max(1),
            deadline,
            max_media_bytes: u64::MAX,
        }
    }

    /// Sets the size limit of one inline media file.
    pub fn with_max_media_bytes(mut self, max: u64) -> Self {
        self.max_media_bytes = max;
        self
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Starts a streamed answer: resolves once the first event exists, or with the error to
    /// send when no account could start it (within the attempt budget and the deadline).
    pub async fn stream(
        &self,
        model: &ModelId,
        query: &UpstreamQuery,
    ) -> Result<ChatStream, GatewayError> {
        let query = check_inline_media(query, self.max_media_bytes)?;
        let mut tried = Vec::new();
        tokio::time::timeout(self.deadline, self.start(model, &query, &mut tried, None))
            .await
            .unwrap_or_else(|_| Err(deadline_passed(self.deadline)))
    }

    /// A whole answer, for non-streaming requests. Nothing has reached the client until it is
    /// complete, so a failure mid-answer may still move to another account.
    pub async fn complete(
        &self,
        model: &ModelId,
        query: &UpstreamQuery,
    ) -> Result<Vec<StreamEvent>, GatewayError> {
        let query = check_inline_media(query, self.max_media_bytes)?;
        let mut tried = Vec::new();
        let mut last = None;
        while tried.len() < self.max_attempts as usize {
            let mut stream = tokio::time::timeout(
                self.deadline,
                self.start(model, &query, &mut tried, last.take()),
            )
            .await
            .unwrap_or_else(|_| Err(deadline_passed(self.deadline)))?;
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
                Some(e) if !e.retry_elsewhere() => return Err(e.into()),
                Some(e) => last = Some(e),
            }
        }
        Err(last.map_or(GatewayError::Internal, GatewayError::Upstream))
    }

    /// Tries accounts not in `tried` until one produces a first event, the attempt budget is
    /// spent, or the failure is one no other account would avoid.
    async fn start(
        &self,
        model: &ModelId,
        query: &UpstreamQuery,
        tried: &mut Vec<business2api_shared::AccountKey>,
        mut last: Option<UpstreamError>,
    ) -> Result<ChatStream, GatewayError> {
        let cap = Capability::of(model);
        while tried.len() < self.max_attempts as usize {
            let mut lease = match self.pool.lease(cap, tried).await {
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
            let mut events = self.upstream.converse(auth, model.clone(), query.clone());
            let error = match events.next().await {
                Some(Ok(first)) => {
                    return Ok(ChatStream {
                        first: Some(first),
                        rest: events,
                        lease: Some(lease),
                    });
                }
                Some(Err(e)) => e,
                None => empty_answer(),
            };
            if matches!(error.kind, ErrorKind::Media { .. }) {
                // The client's media, not the account: release the lease without an outcome.
                tracing::info!(account = %lease.label(), error = %error, "client media not usable");
                drop(lease);
                return Err(error.into());
            }
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
