//! [`FlowUpstream`]: Flow behind the upstream seam. A chat turn for a Flow model becomes a Flow
//! job ([`super::request::job_from`]) run on a token of the pool, and its answer domain events:
//! progress as [`StreamEvent::Thought`]s while a video is polled, then the result as one
//! [`StreamEvent::Media`] holding the downloaded bytes (the dialects publish it in the media
//! store, so links outlive Google's). No dialect knows Flow exists.
//!
//! Failover: a failure that is the token's (its session refused, no credits, rate limited,
//! an HTTP error or a broken connection) is reported to the pool and the job starts again on
//! the next token, up to [`MAX_TOKENS`] tokens — also in the middle of a video, so a token that
//! dies mid-job loses nothing. What the prompt caused (a safety refusal, a bad request) or the
//! generation itself (a job that failed upstream) is the client's answer at once and says
//! nothing about the token.
//!
//! The async video API ([`crate::videos`]) uses the same pieces one step at a time:
//! [`FlowUpstream::submit_video`], [`FlowUpstream::poll_video`], [`FlowUpstream::fetch_video`].

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use business2api_shared::Secret;

use super::client::{FlowClient, VideoRequest, VideoStatus, VideoTask, endpoint};
use super::models::{self, FlowModel, Orientation, UPSTREAM};
use super::pool::{FlowPool, TokenHandle};
use super::request::{FlowJob, job_from};
use super::session::{self, Polling, TokenAccess};
use crate::config::FlowSettings;
use crate::domain::{ChatRequest, GeneratedMedia, StreamEvent};
use crate::error::GatewayError;
use crate::upstream::error::{ErrorKind, UpstreamError};
use crate::upstream::{CallError, EventStream, OwnPoolUpstream};

/// Tokens one job is tried on before its failure is the answer.
pub const MAX_TOKENS: usize = 3;
/// The largest generated file downloaded (a Veo clip is a few MiB).
const MAX_DOWNLOAD: u64 = 256 * 1024 * 1024;
/// The endpoint of errors raised here.
const FLOW: &str = "flow";

/// A video job submitted to Flow: enough to poll it again after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmittedVideo {
    /// The token the job runs on (its id, never the token).
    pub token_id: String,
    /// `operation.name`.
    pub operation: String,
    pub scene_id: String,
}

impl SubmittedVideo {
    fn task(&self) -> VideoTask {
        VideoTask {
            name: self.operation.clone(),
            scene_id: self.scene_id.clone(),
        }
    }
}

/// One poll of a submitted video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoPoll {
    Running {
        status: String,
    },
    Done {
        url: String,
    },
    /// This poll failed in a way that does not end the job: poll again.
    Retry,
    /// The token the job ran on failed (its session refused, removed from the pool, …): the
    /// job is lost upstream and may be submitted again on another token.
    Lost {
        reason: String,
    },
}

/// Flow as an upstream: the token pool, the client, the polling settings.
#[derive(Debug, Clone)]
pub struct FlowUpstream {
    inner: Option<Arc<Enabled>>,
}

#[derive(Debug)]
struct Enabled {
    pool: FlowPool,
    client: FlowClient,
    polling: Polling,
}

fn disabled() -> UpstreamError {
    UpstreamError::new(
        ErrorKind::BadRequest,
        FLOW,
        "this model is served by Google Labs Flow, which is disabled on this gateway (flow.enable)",
    )
}

fn no_token() -> UpstreamError {
    UpstreamError::new(
        ErrorKind::CookiesInvalid,
        "flow.pool",
        "no Flow token is usable right now (see GET /admin/flow/status)",
    )
}

/// Whether another token might not fail this way.
fn tokens_fault(e: &UpstreamError) -> bool {
    match e.kind {
        ErrorKind::CookiesInvalid
        | ErrorKind::AuthExpired
        | ErrorKind::Challenge
        | ErrorKind::RateLimited { .. }
        | ErrorKind::QuotaExhausted { .. }
        | ErrorKind::Transport
        | ErrorKind::Timeout => true,
        // An HTTP error; a generation that failed upstream carries no status.
        ErrorKind::Server { .. } => e.status.is_some(),
        // Flow's proxy is one for all tokens: another token goes the same way.
        ErrorKind::BadRequest
        | ErrorKind::NotFound
        | ErrorKind::Protocol
        | ErrorKind::Proxy { .. } => false,
    }
}

/// Runs `call` with the token's access token; a refused one is replaced once and the call
/// repeated.
async fn authed<T, F, Fut>(token: &mut TokenHandle, mut call: F) -> Result<T, UpstreamError>
where
    F: FnMut(Secret) -> Fut,
    Fut: Future<Output = Result<T, UpstreamError>>,
{
    let access = token.access().await?;
    match call(access).await {
        Err(e) if e.kind == ErrorKind::AuthExpired => {
            token.refused().await;
            let access = token.access().await?;
            call(access).await
        }
        other => other,
    }
}

impl FlowUpstream {
    /// Flow disabled: its models answer with a clear 400 and are not listed.
    pub fn disabled() -> FlowUpstream {
        FlowUpstream { inner: None }
    }

    /// Flow enabled, drawing on `pool`.
    pub fn new(pool: FlowPool, client: FlowClient, settings: &FlowSettings) -> FlowUpstream {
        FlowUpstream {
            inner: Some(Arc::new(Enabled {
                pool,
                client,
                polling: Polling {
                    interval: settings.poll_interval,
                    max_attempts: settings.max_poll_attempts,
                },
            })),
        }
    }

    /// The token pool, when Flow is enabled.
    pub fn pool(&self) -> Option<&FlowPool> {
        self.inner.as_ref().map(|e| &e.pool)
    }

    /// How video jobs are polled (`flow.poll_interval`, `flow.max_poll_attempts`).
    pub fn polling(&self) -> Polling {
        self.inner.as_ref().map_or(
            Polling {
                interval: std::time::Duration::from_secs(3),
                max_attempts: 1,
            },
            |e| e.polling,
        )
    }

    fn enabled(&self) -> Result<&Arc<Enabled>, UpstreamError> {
        self.inner.as_ref().ok_or_else(disabled)
    }

    /// Submits the video `request` asks for, on the first token that takes it.
    pub async fn submit_video(
        &self,
        request: &ChatRequest,
    ) -> Result<SubmittedVideo, GatewayError> {
        let flow = self.enabled()?;
        let job = flow_job(request)?;
        if !matches!(job.model, FlowModel::Video { .. }) {
            return Err(GatewayError::invalid(
                format!("`{}` is not a video model", request.model),
                Some("model".to_owned()),
            ));
        }
        let mut tried = Vec::new();
        let mut last: Option<UpstreamError> = None;
        loop {
            let Some(mut token) = flow.pool.pick(&tried).await else {
                // No other token to try: the last token's failure is the answer.
                return Err(last.unwrap_or_else(no_token).into());
            };
            tried.push(token.id.clone());
            match flow.submit(&mut token, &job).await {
                Ok(task) => {
                    return Ok(SubmittedVideo {
                        token_id: token.id.clone(),
                        operation: task.name,
                        scene_id: task.scene_id,
                    });
                }
                Err(e) => {
                    flow.pool.report(&token.id, Err(&e));
                    if !tokens_fault(&e) || tried.len() >= MAX_TOKENS {
                        return Err(e.into());
                    }
                    last = Some(e);
                }
            }
        }
    }

    /// One poll of a submitted video, on the token it was submitted with.
    pub async fn poll_video(&self, job: &SubmittedVideo) -> Result<VideoPoll, GatewayError> {
        let flow = self.enabled()?;
        let Some(mut token) = flow.pool.get(&job.token_id).await else {
            return Ok(VideoPoll::Lost {
                reason: "the Flow token this video was submitted with is no longer in the pool"
                    .to_owned(),
            });
        };
        match session::poll_video(&mut token, &flow.client, &job.task()).await {
            Ok(Some(VideoStatus::Running(status))) => Ok(VideoPoll::Running { status }),
            Ok(Some(VideoStatus::Done { url })) => {
                flow.pool.report(&token.id, Ok(()));
                Ok(VideoPoll::Done { url })
            }
            Ok(None) => Ok(VideoPoll::Retry),
            Err(e) => {
                flow.pool.report(&token.id, Err(&e));
                if tokens_fault(&e) {
                    Ok(VideoPoll::Lost {
                        reason: e.to_string(),
                    })
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// Downloads a finished video (or image).
    pub async fn fetch_video(&self, url: &str) -> Result<GeneratedMedia, GatewayError> {
        let flow = self.enabled()?;
        let (mime, data) = flow.client.download(url, MAX_DOWNLOAD).await?;
        Ok(GeneratedMedia::new(mime, data))
    }
}

/// The Flow job a chat request asks for.
fn flow_job(request: &ChatRequest) -> Result<FlowJob, UpstreamError> {
    let model = models::model(request.model.upstream_id()).ok_or_else(|| {
        UpstreamError::new(
            ErrorKind::BadRequest,
            FLOW,
            format!("`{}` is not a Flow model", request.model),
        )
    })?;
    job_from(request, model)
}

impl Enabled {
    /// Uploads the job's images: their media ids.
    async fn upload(
        &self,
        token: &mut TokenHandle,
        images: &[bytes::Bytes],
        orientation: Orientation,
    ) -> Result<Vec<String>, UpstreamError> {
        let mut ids = Vec::with_capacity(images.len());
        for image in images {
            let client = &self.client;
            let id = authed(token, |access| async move {
                client.upload_image(&access, image, orientation).await
            })
            .await?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Generates the job's image: the downloaded file.
    async fn image(
        &self,
        token: &mut TokenHandle,
        job: &FlowJob,
    ) -> Result<GeneratedMedia, UpstreamError> {
        let FlowModel::Image {
            model_name,
            orientation,
        } = job.model
        else {
            return Err(UpstreamError::new(
                ErrorKind::BadRequest,
                FLOW,
                "not an image model",
            ));
        };
        let project = token.project().await?;
        let references = self.upload(token, &job.images, orientation).await?;
        let client = &self.client;
        let (project, references, prompt) = (&project, &references, job.prompt.as_str());
        let url = authed(token, |access| async move {
            client
                .generate_image(
                    &access,
                    project,
                    model_name,
                    orientation,
                    prompt,
                    references,
                )
                .await
        })
        .await?;
        let (mime, data) = self.client.download(&url, MAX_DOWNLOAD).await?;
        Ok(GeneratedMedia::new(mime, data))
    }

    /// Uploads the job's frames or references and submits its video.
    async fn submit(
        &self,
        token: &mut TokenHandle,
        job: &FlowJob,
    ) -> Result<VideoTask, UpstreamError> {
        let FlowModel::Video {
            model_key,
            kind,
            orientation,
        } = job.model
        else {
            return Err(UpstreamError::new(
                ErrorKind::BadRequest,
                FLOW,
                "not a video model",
            ));
        };
        let images = if kind == models::VideoKind::Text {
            Vec::new()
        } else {
            self.upload(token, &job.images, orientation).await?
        };
        let video = VideoRequest {
            model_key,
            kind,
            orientation,
            prompt: &job.prompt,
            images: &images,
        };
        session::submit_video(token, &self.client, &video).await
    }
}

/// What one attempt on one token ended with.
enum Attempt {
    Done,
    /// The token failed: try the next one.
    NextToken(UpstreamError),
    Failed(UpstreamError),
}

impl OwnPoolUpstream for FlowUpstream {
    fn name(&self) -> &'static str {
        UPSTREAM
    }

    fn input_tokens(&self, request: &ChatRequest) -> u32 {
        let prompt = flow_job(request).map(|j| j.prompt).unwrap_or_default();
        crate::domain::usage::text_tokens(&prompt).max(1)
    }

    fn listed(&self) -> bool {
        self.inner.as_ref().is_some_and(|e| e.pool.has_usable())
    }

    fn converse(&self, request: Arc<ChatRequest>) -> EventStream {
        let flow = match self.enabled() {
            Ok(flow) => Arc::clone(flow),
            Err(e) => {
                return Box::pin(futures_util::stream::once(async {
                    Err(CallError::from(e))
                }));
            }
        };
        Box::pin(async_stream::stream! {
            let job = match flow_job(&request) {
                Ok(job) => job,
                Err(e) => {
                    yield Err(e.into());
                    return;
                }
            };
            let mut tried: Vec<String> = Vec::new();
            let mut last: Option<UpstreamError> = None;
            let mut notices = job.notices.clone();
            loop {
                let Some(mut token) = flow.pool.pick(&tried).await else {
                    // No other token to try: the last token's failure (e.g. an upstream 5xx,
                    // a 502) is the answer, not "no token".
                    yield Err(last.take().unwrap_or_else(no_token).into());
                    return;
                };
                tried.push(token.id.clone());
                let attempt = match job.model {
                    FlowModel::Image { .. } => match flow.image(&mut token, &job).await {
                        Ok(media) => {
                            flow.pool.report(&token.id, Ok(()));
                            for notice in notices.drain(..) {
                                yield Ok(StreamEvent::Thought(format!("{notice}\n")));
                            }
                            yield Ok(StreamEvent::Media(media));
                            Attempt::Done
                        }
                        Err(e) if tokens_fault(&e) => Attempt::NextToken(e),
                        Err(e) => Attempt::Failed(e),
                    },
                    FlowModel::Video { model_key, .. } => {
                        let mut events = Box::pin(video_events(&flow, &mut token, &job, model_key));
                        let mut end = Attempt::Done;
                        while let Some(item) = events.next().await {
                            match item {
                                Ok(event) => {
                                    for notice in notices.drain(..) {
                                        yield Ok(StreamEvent::Thought(format!("{notice}\n")));
                                    }
                                    yield Ok(event);
                                }
                                Err(e) if tokens_fault(&e) => end = Attempt::NextToken(e),
                                Err(e) => end = Attempt::Failed(e),
                            }
                        }
                        drop(events);
                        if matches!(end, Attempt::Done) {
                            flow.pool.report(&token.id, Ok(()));
                        }
                        end
                    }
                };
                match attempt {
                    Attempt::Done => return,
                    Attempt::NextToken(e) => {
                        tracing::warn!(token = %token.id, error = %e, "Flow token failed; trying the next token");
                        flow.pool.report(&token.id, Err(&e));
                        if tried.len() >= MAX_TOKENS {
                            yield Err(e.into());
                            return;
                        }
                        last = Some(e);
                    }
                    Attempt::Failed(e) => {
                        flow.pool.report(&token.id, Err(&e));
                        yield Err(e.into());
                        return;
                    }
                }
            }
        })
    }
}

/// A video on one token: "submitted", progress while it runs, then the file. Ends with an
/// error item when the attempt fails.
fn video_events<'a>(
    flow: &'a Enabled,
    token: &'a mut TokenHandle,
    job: &'a FlowJob,
    model_key: &'static str,
) -> impl futures_util::Stream<Item = Result<StreamEvent, UpstreamError>> + 'a {
    async_stream::stream! {
        let task = match flow.submit(token, job).await {
            Ok(task) => task,
            Err(e) => {
                yield Err(e);
                return;
            }
        };
        yield Ok(StreamEvent::Thought(format!(
            "Video submitted to Flow ({model_key}); generating…\n"
        )));
        for attempt in 1..=flow.polling.max_attempts {
            tokio::time::sleep(flow.polling.interval).await;
            match session::poll_video(token, &flow.client, &task).await {
                Ok(Some(VideoStatus::Running(status))) => {
                    yield Ok(StreamEvent::Thought(format!("{} (check {attempt})\n", progress_text(&status))));
                }
                Ok(Some(VideoStatus::Done { url })) => {
                    match flow.client.download(&url, MAX_DOWNLOAD).await {
                        Ok((mime, data)) => yield Ok(StreamEvent::Media(GeneratedMedia::new(mime, data))),
                        Err(e) => yield Err(e),
                    }
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    yield Err(e);
                    return;
                }
            }
        }
        yield Err(UpstreamError::new(
            ErrorKind::Timeout,
            endpoint::CHECK_VIDEO,
            format!("the video was not ready after {} polls (flow.max_poll_attempts)", flow.polling.max_attempts),
        ));
    }
}

/// A running status as the client reads it.
fn progress_text(status: &str) -> &'static str {
    match status {
        "MEDIA_GENERATION_STATUS_PENDING" => "Queued",
        "MEDIA_GENERATION_STATUS_ACTIVE" | "MEDIA_GENERATION_STATUS_PROCESSING" => "Generating",
        _ => "Working",
    }
}
