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

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};

use crate::domain::{ModelId, StreamEvent, UpstreamQuery};
use crate::error::GatewayError;
use crate::pool::{Account, AccountPool};
use crate::upstream::gemini_business::{EventStream, GeminiBusinessClient};
use crate::upstream::{Endpoint, ErrorKind, UpstreamError};

/// Runs chat turns against the pool.
#[derive(Debug, Clone)]
pub struct ChatService {
    pool: Arc<AccountPool>,
    upstream: Arc<GeminiBusinessClient>,
    max_attempts: u32,
}

/// An answer that has started: its first event plus the rest, bound to the account serving it.
/// Outcomes are recorded on the account as the stream ends (success) or fails.
pub struct ChatStream {
    first: Option<StreamEvent>,
    rest: EventStream,
    account: Arc<Account>,
    pool: Arc<AccountPool>,
    finished: bool,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl Stream for ChatStream {
    type Item = Result<StreamEvent, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if self.finished {
            return Poll::Ready(None);
        }
        let polled = self.rest.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(None) => {
                self.finished = true;
                self.account.record_success();
            }
            Poll::Ready(Some(Err(e))) => {
                self.finished = true;
                tracing::warn!(account = %self.account.label(), error = %e, "upstream failed mid-answer");
                self.account.record_failure(e, self.pool.policy());
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

impl ChatService {
    pub fn new(
        pool: Arc<AccountPool>,
        upstream: Arc<GeminiBusinessClient>,
        max_attempts: u32,
    ) -> Self {
        Self {
            pool,
            upstream,
            max_attempts: max_attempts.max(1),
        }
    }

    pub fn pool(&self) -> &Arc<AccountPool> {
        &self.pool
    }

    /// Starts a streamed answer: resolves once the first event exists, or with the error to
    /// send when no account could start it.
    pub async fn stream(
        &self,
        model: &ModelId,
        query: &UpstreamQuery,
    ) -> Result<ChatStream, GatewayError> {
        let mut tried = Vec::new();
        self.start(model, query, &mut tried, None).await
    }

    /// A whole answer, for non-streaming requests.
    pub async fn complete(
        &self,
        model: &ModelId,
        query: &UpstreamQuery,
    ) -> Result<Vec<StreamEvent>, GatewayError> {
        let mut tried = Vec::new();
        let mut last = None;
        while tried.len() < self.max_attempts as usize {
            let mut stream = self.start(model, query, &mut tried, last.take()).await?;
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
        tried: &mut Vec<String>,
        mut last: Option<UpstreamError>,
    ) -> Result<ChatStream, GatewayError> {
        let policy = *self.pool.policy();
        while tried.len() < self.max_attempts as usize {
            let exclude: Vec<&str> = tried.iter().map(String::as_str).collect();
            let account = match self.pool.pick(&exclude) {
                Ok(account) => account,
                Err(unavailable) => {
                    return Err(last.map_or(
                        GatewayError::NoAccountAvailable {
                            retry_after: unavailable.retry_after,
                        },
                        GatewayError::Upstream,
                    ));
                }
            };
            tried.push(account.email().to_owned());
            let outcome: Result<(), UpstreamError> = match account.auth(&self.upstream).await {
                Err(e) => Err(e),
                Ok(auth) => {
                    let mut events = self.upstream.converse(auth, model.clone(), query.clone());
                    match events.next().await {
                        Some(Ok(first)) => {
                            return Ok(ChatStream {
                                first: Some(first),
                                rest: events,
                                account,
                                pool: Arc::clone(&self.pool),
                                finished: false,
                            });
                        }
                        Some(Err(e)) => Err(e),
                        None => Err(empty_answer()),
                    }
                }
            };
            if let Err(e) = outcome {
                tracing::warn!(account = %account.label(), error = %e, "attempt failed before the first byte");
                account.record_failure(&e, &policy);
                if !e.retry_elsewhere() {
                    return Err(e.into());
                }
                last = Some(e);
            }
        }
        Err(last.map_or(GatewayError::Internal, GatewayError::Upstream))
    }
}
