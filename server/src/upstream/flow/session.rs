//! One Flow token in use: its access token (minted from the session token, reused until shortly
//! before it expires, minted again when refused), its project (created once) and its credits;
//! and running a video job on it to the end — a refused access token in the middle of a job is
//! replaced and the job goes on, HTTP errors while polling are waited out.

use std::time::Duration;

use time::OffsetDateTime;

use business2api_shared::Secret;

use super::client::{AccessToken, Credits, FlowClient, VideoRequest, VideoStatus, VideoTask};
use super::tokens::FlowToken;
use crate::upstream::BoxFuture;
use crate::upstream::error::{ErrorKind, UpstreamError};

/// An access token is minted again when it expires within this (spec §1: 5 min).
pub const REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);
/// How often a job's poll may meet a refused access token before the job is given up.
const MAX_REMINTS_PER_JOB: u32 = 3;

/// A token's working state.
#[derive(Debug)]
pub struct TokenSession {
    pub token: FlowToken,
    access: Option<AccessToken>,
    project: Option<String>,
    credits: Option<Credits>,
}

/// How a job is polled.
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    pub interval: Duration,
    pub max_attempts: u32,
}

impl TokenSession {
    pub fn new(token: FlowToken) -> TokenSession {
        TokenSession {
            token,
            access: None,
            project: None,
            credits: None,
        }
    }

    /// A usable access token: the cached one unless it expires within [`REFRESH_AHEAD`] of
    /// `now`, else a fresh one.
    pub async fn access(
        &mut self,
        client: &FlowClient,
        now: OffsetDateTime,
    ) -> Result<Secret, UpstreamError> {
        let fresh_enough = self
            .access
            .as_ref()
            .is_some_and(|a| a.expires - REFRESH_AHEAD > now);
        if !fresh_enough {
            self.access = Some(client.access_token(&self.token.session).await?);
        }
        self.access
            .as_ref()
            .map(|a| a.token.clone())
            .ok_or_else(|| {
                UpstreamError::new(ErrorKind::Protocol, "flow.session", "no access token")
            })
    }

    /// When the cached access token expires, if there is one.
    pub fn access_expires(&self) -> Option<OffsetDateTime> {
        self.access.as_ref().map(|a| a.expires)
    }

    /// Forgets the access token (the upstream refused it): the next use mints another.
    pub fn drop_access(&mut self) {
        self.access = None;
    }

    /// The token's project, created on first use.
    pub async fn project(&mut self, client: &FlowClient) -> Result<String, UpstreamError> {
        if let Some(p) = &self.project {
            return Ok(p.clone());
        }
        let p = client.create_project(&self.token.session).await?;
        self.project = Some(p.clone());
        Ok(p)
    }

    /// Reads the token's credits and tier again.
    pub async fn refresh_credits(&mut self, client: &FlowClient) -> Result<Credits, UpstreamError> {
        let access = self.access(client, OffsetDateTime::now_utc()).await?;
        let credits = client.credits(&access).await?;
        self.credits = Some(credits.clone());
        Ok(credits)
    }

    /// The credits last read.
    pub fn credits(&self) -> Option<&Credits> {
        self.credits.as_ref()
    }

    /// Submits a video and polls it to the end: its URL (see [`run_video`]).
    pub async fn run_video(
        &mut self,
        client: &FlowClient,
        video: &VideoRequest<'_>,
        polling: Polling,
        progress: impl FnMut(u32, &str),
    ) -> Result<String, UpstreamError> {
        let mut access = SessionAccess {
            session: self,
            client,
        };
        run_video(&mut access, client, video, polling, progress).await
    }
}

/// What a job needs of the token it runs on: an access token (minted when needed), word that
/// the last one was refused, the token's project and tier. Implemented by a [`TokenSession`]
/// held by the caller and by the pool's token actors (`super::pool::TokenHandle`).
pub trait TokenAccess: Send {
    /// A usable access token.
    fn access(&mut self) -> BoxFuture<'_, Result<Secret, UpstreamError>>;
    /// The access token last given was refused: the next [`TokenAccess::access`] mints another.
    fn refused(&mut self) -> BoxFuture<'_, ()>;
    /// The token's project, created on first use.
    fn project(&mut self) -> BoxFuture<'_, Result<String, UpstreamError>>;
    /// The token's paygate tier, when known.
    fn tier(&mut self) -> BoxFuture<'_, Option<String>>;
}

/// A [`TokenSession`] and the client its calls go through.
struct SessionAccess<'s> {
    session: &'s mut TokenSession,
    client: &'s FlowClient,
}

impl TokenAccess for SessionAccess<'_> {
    fn access(&mut self) -> BoxFuture<'_, Result<Secret, UpstreamError>> {
        Box::pin(self.session.access(self.client, OffsetDateTime::now_utc()))
    }

    fn refused(&mut self) -> BoxFuture<'_, ()> {
        self.session.drop_access();
        Box::pin(std::future::ready(()))
    }

    fn project(&mut self) -> BoxFuture<'_, Result<String, UpstreamError>> {
        Box::pin(self.session.project(self.client))
    }

    fn tier(&mut self) -> BoxFuture<'_, Option<String>> {
        let tier = self.session.credits.as_ref().and_then(|c| c.tier.clone());
        Box::pin(std::future::ready(tier))
    }
}

/// Submits a video on `token`; a refused access token is replaced and the submission repeated
/// (at most [`MAX_REMINTS_PER_JOB`] times).
pub async fn submit_video(
    token: &mut dyn TokenAccess,
    client: &FlowClient,
    video: &VideoRequest<'_>,
) -> Result<VideoTask, UpstreamError> {
    let project = token.project().await?;
    let tier = token.tier().await;
    let mut remints = 0u32;
    loop {
        let access = token.access().await?;
        match client
            .submit_video(&access, &project, tier.as_deref(), video)
            .await
        {
            Err(e) if e.kind == ErrorKind::AuthExpired && remints < MAX_REMINTS_PER_JOB => {
                remints += 1;
                token.refused().await;
            }
            other => return other,
        }
    }
}

/// One poll of a submitted video: its status, `None` when this poll failed in a way that does
/// not end the job (an HTTP error, a refused access token — replaced for the next poll).
pub async fn poll_video(
    token: &mut dyn TokenAccess,
    client: &FlowClient,
    task: &VideoTask,
) -> Result<Option<VideoStatus>, UpstreamError> {
    let access = token.access().await?;
    match client.check_video(&access, task).await {
        Ok(status) => Ok(Some(status)),
        Err(e) if e.kind == ErrorKind::AuthExpired => {
            // The job lives on upstream: a new access token picks it up.
            token.refused().await;
            Ok(None)
        }
        // An HTTP error while polling is not the end of the job (spec §3).
        Err(e) if polling_error_is_transient(&e) => {
            tracing::debug!(error = %e, "a Flow status poll failed; polling on");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Polls a submitted video to its end: its URL. `progress` hears each running status. A job
/// still running after `polling.max_attempts` polls is a [`ErrorKind::Timeout`]; a job whose
/// access tokens keep being refused ends after [`MAX_REMINTS_PER_JOB`] replacements.
pub async fn poll_to_end(
    token: &mut dyn TokenAccess,
    client: &FlowClient,
    task: &VideoTask,
    polling: Polling,
    mut progress: impl FnMut(u32, &str),
) -> Result<String, UpstreamError> {
    let mut refused = 0u32;
    for attempt in 1..=polling.max_attempts {
        tokio::time::sleep(polling.interval).await;
        let access = token.access().await?;
        match client.check_video(&access, task).await {
            Ok(VideoStatus::Done { url }) => return Ok(url),
            Ok(VideoStatus::Running(status)) => progress(attempt, &status),
            Err(e) if e.kind == ErrorKind::AuthExpired && refused < MAX_REMINTS_PER_JOB => {
                // The job lives on upstream: a new access token picks it up.
                refused += 1;
                token.refused().await;
            }
            // An HTTP error while polling is not the end of the job (spec §3).
            Err(e) if polling_error_is_transient(&e) => {
                tracing::debug!(error = %e, attempt, "a Flow status poll failed; polling on");
            }
            Err(e) => return Err(e),
        }
    }
    Err(UpstreamError::new(
        ErrorKind::Timeout,
        super::client::endpoint::CHECK_VIDEO,
        format!(
            "the video was not ready after {} polls",
            polling.max_attempts
        ),
    ))
}

/// Submits a video on `token` and polls it to the end: its URL. A refused access token (on
/// submit or while polling) is replaced and the call repeated; HTTP errors while polling are
/// waited out; a job still running after `polling.max_attempts` polls is a
/// [`ErrorKind::Timeout`].
pub async fn run_video(
    token: &mut dyn TokenAccess,
    client: &FlowClient,
    video: &VideoRequest<'_>,
    polling: Polling,
    progress: impl FnMut(u32, &str),
) -> Result<String, UpstreamError> {
    let task = submit_video(token, client, video).await?;
    poll_to_end(token, client, &task, polling, progress).await
}

/// Errors of a status poll that do not end the job: the upstream's trouble, not the job's.
fn polling_error_is_transient(e: &UpstreamError) -> bool {
    match e.kind {
        // An HTTP error answer; a failed job is a Server error without an HTTP status.
        ErrorKind::Server { .. } => e.status.is_some(),
        ErrorKind::Transport | ErrorKind::Timeout | ErrorKind::RateLimited { .. } => true,
        _ => false,
    }
}
