//! The Flow HTTP calls (`../shared/spec/flow-upstream.md` §1, §3), one method each, every failure
//! classified into an [`UpstreamError`]. Both hosts come from configuration, and Flow traffic
//! leaves through `flow.proxy` when one is set (the reference ignored it).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use business2api_shared::Secret;

use super::models::{Orientation, VideoKind};
use crate::config::FlowSettings;
use crate::metrics::Metrics;
use crate::upstream::error::{ErrorKind, UpstreamError};

/// The user agent every Flow call sends (spec §1).
const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36";
/// The session cookie's name.
const SESSION_COOKIE: &str = "__Secure-next-auth.session-token";
/// The longest error text kept from an upstream body.
const MAX_MESSAGE: usize = 300;

/// The statuses that end a video job with a failure, and whose fault each is.
const SAFETY_STATUSES: [&str; 3] = [
    "MEDIA_GENERATION_STATUS_ERROR_NSFW",
    "MEDIA_GENERATION_STATUS_ERROR_PERSON",
    "MEDIA_GENERATION_STATUS_ERROR_SAFETY",
];
const SUCCESSFUL: &str = "MEDIA_GENERATION_STATUS_SUCCESSFUL";
const FAILED_UNKNOWN: &str = "MEDIA_GENERATION_STATUS_ERROR_UNKNOWN";

/// The calls, by name (for errors and logs).
pub mod endpoint {
    pub const SESSION: &str = "flow.session";
    pub const CREDITS: &str = "flow.credits";
    pub const CREATE_PROJECT: &str = "flow.createProject";
    pub const UPLOAD_IMAGE: &str = "flow.uploadUserImage";
    pub const GENERATE_IMAGES: &str = "flow.batchGenerateImages";
    pub const SUBMIT_VIDEO: &str = "flow.batchAsyncGenerateVideo";
    pub const CHECK_VIDEO: &str = "flow.batchCheckAsyncVideoGenerationStatus";
    pub const DOWNLOAD: &str = "flow.download";
}

/// An access token and when it stops working.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: Secret,
    pub expires: OffsetDateTime,
    /// The Google account the session belongs to (not a secret, but not logged either).
    pub email: Option<String>,
}

/// A token's credits and paygate tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credits {
    pub credits: i64,
    pub tier: Option<String>,
}

/// A submitted video job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoTask {
    /// `operation.name`.
    pub name: String,
    pub scene_id: String,
}

/// Where a video job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoStatus {
    /// Still running; the upstream's status text.
    Running(String),
    /// Done: where the video is.
    Done { url: String },
}

/// What to make a video from.
#[derive(Debug, Clone)]
pub struct VideoRequest<'a> {
    pub model_key: &'a str,
    pub kind: VideoKind,
    pub orientation: Orientation,
    pub prompt: &'a str,
    /// Uploaded media ids: the start and end frame (StartAndEnd), the references (Reference).
    pub images: &'a [String],
}

/// The Flow client: one HTTP client (with `flow.proxy`), both base URLs.
#[derive(Debug, Clone)]
pub struct FlowClient {
    http: reqwest::Client,
    settings: FlowSettings,
    /// Counts each request sent and each failed call (`/metrics`).
    metrics: Metrics,
}

impl FlowClient {
    /// A client for `settings`; fails only on an unusable proxy URL.
    pub fn new(settings: &FlowSettings) -> Result<FlowClient, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(10).min(settings.timeout))
            .redirect(reqwest::redirect::Policy::none());
        builder = match &settings.proxy {
            Some(proxy) => builder.proxy(reqwest::Proxy::all(proxy.expose())?),
            // Only what the operator configured: no proxy from the environment either.
            None => builder.no_proxy(),
        };
        Ok(FlowClient {
            http: builder.build()?,
            settings: settings.clone(),
            metrics: Metrics::default(),
        })
    }

    /// Counts its calls in the application's `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> FlowClient {
        self.metrics = metrics;
        self
    }

    /// Sends one request (counted as a call of `endpoint`, without its `flow.` prefix).
    async fn send(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Response, UpstreamError> {
        let call = endpoint.strip_prefix("flow.").unwrap_or(endpoint);
        self.metrics.upstream_call(crate::metrics::FLOW, call);
        send(endpoint, request).await
    }

    /// Session token → access token (`GET /fx/api/auth/session`). A session the upstream no
    /// longer accepts is [`ErrorKind::CookiesInvalid`].
    pub async fn access_token(&self, session: &Secret) -> Result<AccessToken, UpstreamError> {
        let result = self.access_token_uncounted(session).await;
        self.metrics
            .token_refresh(crate::metrics::FLOW, result.as_ref().err());
        self.metrics.observe_call(crate::metrics::FLOW, result)
    }

    /// [`Self::access_token`] without counting its failure.
    async fn access_token_uncounted(&self, session: &Secret) -> Result<AccessToken, UpstreamError> {
        #[derive(Deserialize)]
        struct Session {
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires: Option<String>,
            #[serde(default)]
            user: Option<User>,
        }
        #[derive(Deserialize)]
        struct User {
            #[serde(default)]
            email: Option<String>,
        }
        let request = self
            .http
            .get(self.settings.labs_url("fx/api/auth/session"))
            .header("cookie", session_cookie(session));
        let response = self.send(endpoint::SESSION, request).await?;
        let response = check(endpoint::SESSION, response, Refusal::Session).await?;
        let session: Session = json_body(endpoint::SESSION, response).await?;
        // The reference took a missing token as an empty one; it is a dead session.
        let token = session
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                UpstreamError::new(
                    ErrorKind::CookiesInvalid,
                    endpoint::SESSION,
                    "the session token gave no access token (signed out?)",
                )
            })?;
        let expires = session
            .expires
            .as_deref()
            .and_then(|e| {
                OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok()
            })
            .ok_or_else(|| {
                UpstreamError::new(
                    ErrorKind::Protocol,
                    endpoint::SESSION,
                    "the access token has no valid `expires`",
                )
            })?;
        Ok(AccessToken {
            token: Secret::new(token),
            expires,
            email: session.user.and_then(|u| u.email),
        })
    }

    /// The token's credits and tier (`GET /v1/credits`).
    pub async fn credits(&self, access: &Secret) -> Result<Credits, UpstreamError> {
        let result = self.credits_uncounted(access).await;
        self.metrics.observe_call(crate::metrics::FLOW, result)
    }

    /// [`Self::credits`] without counting its failure.
    async fn credits_uncounted(&self, access: &Secret) -> Result<Credits, UpstreamError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            #[serde(default)]
            credits: Option<i64>,
            #[serde(default)]
            user_paygate_tier: Option<String>,
        }
        let request = self
            .http
            .get(self.settings.api_url("v1/credits"))
            .bearer_auth(access.expose());
        let response = self.send(endpoint::CREDITS, request).await?;
        let response = check(endpoint::CREDITS, response, Refusal::Access).await?;
        let answer: Answer = json_body(endpoint::CREDITS, response).await?;
        Ok(Credits {
            credits: answer.credits.unwrap_or(0),
            tier: answer.user_paygate_tier.filter(|t| !t.is_empty()),
        })
    }

    /// A project for the token (`POST /fx/api/trpc/project.createProject`, session cookie).
    pub async fn create_project(&self, session: &Secret) -> Result<String, UpstreamError> {
        let result = self.create_project_uncounted(session).await;
        self.metrics.observe_call(crate::metrics::FLOW, result)
    }

    /// [`Self::create_project`] without counting its failure.
    async fn create_project_uncounted(&self, session: &Secret) -> Result<String, UpstreamError> {
        let request = self
            .http
            .post(self.settings.labs_url("fx/api/trpc/project.createProject"))
            .header("cookie", session_cookie(session))
            .json(&json!({"json": {"projectTitle": "business2api", "toolName": "PINHOLE"}}));
        let response = self.send(endpoint::CREATE_PROJECT, request).await?;
        let response = check(endpoint::CREATE_PROJECT, response, Refusal::Session).await?;
        let v: Value = json_body(endpoint::CREATE_PROJECT, response).await?;
        nonempty_str(&v, "/result/data/json/result/projectId").ok_or_else(|| {
            missing(
                endpoint::CREATE_PROJECT,
                "result.data.json.result.projectId",
            )
        })
    }

    /// Uploads an image for use as a reference or a frame (`POST /v1:uploadUserImage`).
    pub async fn upload_image(
        &self,
        access: &Secret,
        image: &[u8],
        orientation: Orientation,
    ) -> Result<String, UpstreamError> {
        let result = self
            .upload_image_uncounted(access, image, orientation)
            .await;
        self.metrics.observe_call(crate::metrics::FLOW, result)
    }

    /// [`Self::upload_image`] without counting its failure.
    async fn upload_image_uncounted(
        &self,
        access: &Secret,
        image: &[u8],
        orientation: Orientation,
    ) -> Result<String, UpstreamError> {
        let body = json!({
            "imageInput": {
                "rawImageBytes": STANDARD.encode(image),
                "mimeType": "image/jpeg",
                "isUserUploaded": true,
                "aspectRatio": orientation.image_aspect(),
            },
            "clientContext": {"sessionId": session_id(), "tool": "ASSET_MANAGER"},
        });
        let request = self
            .http
            .post(self.settings.api_url("v1:uploadUserImage"))
            .bearer_auth(access.expose())
            .json(&body);
        let response = self.send(endpoint::UPLOAD_IMAGE, request).await?;
        let response = check(endpoint::UPLOAD_IMAGE, response, Refusal::Access).await?;
        let v: Value = json_body(endpoint::UPLOAD_IMAGE, response).await?;
        nonempty_str(&v, "/mediaGenerationId/mediaGenerationId").ok_or_else(|| {
            missing(
                endpoint::UPLOAD_IMAGE,
                "mediaGenerationId.mediaGenerationId",
            )
        })
    }

    /// Generates one image, synchronously: its URL.
    pub async fn generate_image(
        &self,
        access: &Secret,
        project: &str,
        model_name: &str,
        orientation: Orientation,
        prompt: &str,
        references: &[String],
    ) -> Result<String, UpstreamError> {
        let result = self
            .generate_image_uncounted(access, project, model_name, orientation, prompt, references)
            .await;
        self.metrics.observe_call(crate::metrics::FLOW, result)
    }

    /// [`Self::generate_image`] without counting its failure.
    async fn generate_image_uncounted(
        &self,
        access: &Secret,
        project: &str,
        model_name: &str,
        orientation: Orientation,
        prompt: &str,
        references: &[String],
    ) -> Result<String, UpstreamError> {
        let inputs: Value = if references.is_empty() {
            Value::Null
        } else {
            references
                .iter()
                .map(|id| json!({"name": id, "imageInputType": "IMAGE_INPUT_TYPE_REFERENCE"}))
                .collect()
        };
        let body = json!({"requests": [{
            "clientContext": {"sessionId": session_id()},
            "seed": seed(),
            "imageModelName": model_name,
            "imageAspectRatio": orientation.image_aspect(),
            "prompt": prompt,
            "imageInputs": inputs,
        }]});
        let request = self
            .http
            .post(self.settings.api_url(&format!(
                "v1/projects/{}/flowMedia:batchGenerateImages",
                path_segment(project)
            )))
            .bearer_auth(access.expose())
            .json(&body);
        let response = self.send(endpoint::GENERATE_IMAGES, request).await?;
        let response = check(endpoint::GENERATE_IMAGES, response, Refusal::Access).await?;
        let v: Value = json_body(endpoint::GENERATE_IMAGES, response).await?;
        nonempty_str(&v, "/media/0/image/generatedImage/fifeUrl").ok_or_else(|| {
            missing(
                endpoint::GENERATE_IMAGES,
                "media[0].image.generatedImage.fifeUrl",
            )
        })
    }

    /// Submits a video job; an answer without a task id is a failure.
    pub async fn submit_video(
        &self,
        access: &Secret,
        project: &str,
        tier: Option<&str>,
        video: &VideoRequest<'_>,
    ) -> Result<VideoTask, UpstreamError> {
        let result = self
            .submit_video_uncounted(access, project, tier, video)
            .await;
        self.metrics.observe_call(crate::metrics::FLOW, result)
    }

    /// [`Self::submit_video`] without counting its failure.
    async fn submit_video_uncounted(
        &self,
        access: &Secret,
        project: &str,
        tier: Option<&str>,
        video: &VideoRequest<'_>,
    ) -> Result<VideoTask, UpstreamError> {
        let scene = uuid::Uuid::new_v4().to_string();
        let mut request = json!({
            "aspectRatio": video.orientation.video_aspect(),
            "seed": seed(),
            "textInput": {"prompt": video.prompt},
            "videoModelKey": video.model_key,
            "metadata": {"sceneId": scene},
        });
        let path = match video.kind {
            VideoKind::Text => "v1/video:batchAsyncGenerateVideoText",
            VideoKind::StartAndEnd => {
                let (Some(start), end) = (video.images.first(), video.images.get(1)) else {
                    return Err(UpstreamError::new(
                        ErrorKind::BadRequest,
                        endpoint::SUBMIT_VIDEO,
                        "an image-to-video model needs one or two images",
                    ));
                };
                request["startImage"] = json!({"mediaId": start});
                if let Some(end) = end {
                    request["endImage"] = json!({"mediaId": end});
                }
                "v1/video:batchAsyncGenerateVideoStartAndEndImage"
            }
            VideoKind::Reference => {
                request["referenceImages"] = video
                    .images
                    .iter()
                    .map(|id| json!({"imageUsageType": "IMAGE_USAGE_TYPE_ASSET", "mediaId": id}))
                    .collect();
                "v1/video:batchAsyncGenerateVideoReferenceImages"
            }
        };
        let body = json!({
            "clientContext": {
                "sessionId": session_id(),
                "projectId": project,
                "tool": "PINHOLE",
                "userPaygateTier": tier.unwrap_or("PAYGATE_TIER_ONE"),
            },
            "requests": [request],
        });
        let request = self
            .http
            .post(self.settings.api_url(path))
            .bearer_auth(access.expose())
            .json(&body);
        let response = self.send(endpoint::SUBMIT_VIDEO, request).await?;
        let response = check(endpoint::SUBMIT_VIDEO, response, Refusal::Access).await?;
        let v: Value = json_body(endpoint::SUBMIT_VIDEO, response).await?;
        let name = nonempty_str(&v, "/operations/0/operation/name")
            .ok_or_else(|| missing(endpoint::SUBMIT_VIDEO, "operations[0].operation.name"))?;
        let scene_id = nonempty_str(&v, "/operations/0/sceneId").unwrap_or(scene);
        Ok(VideoTask { name, scene_id })
    }

    /// One status poll of a video job. A failed job is an error: a safety refusal is the
    /// prompt's ([`ErrorKind::BadRequest`]), any other failure the upstream's.
    pub async fn check_video(
        &self,
        access: &Secret,
        task: &VideoTask,
    ) -> Result<VideoStatus, UpstreamError> {
        let result = self.check_video_uncounted(access, task).await;
        self.metrics.observe_call(crate::metrics::FLOW, result)
    }

    /// [`Self::check_video`] without counting its failure.
    async fn check_video_uncounted(
        &self,
        access: &Secret,
        task: &VideoTask,
    ) -> Result<VideoStatus, UpstreamError> {
        let body = json!({"operations": [{
            "operation": {"name": task.name},
            "sceneId": task.scene_id,
        }]});
        let request = self
            .http
            .post(
                self.settings
                    .api_url("v1/video:batchCheckAsyncVideoGenerationStatus"),
            )
            .bearer_auth(access.expose())
            .json(&body);
        let response = self.send(endpoint::CHECK_VIDEO, request).await?;
        let response = check(endpoint::CHECK_VIDEO, response, Refusal::Access).await?;
        let v: Value = json_body(endpoint::CHECK_VIDEO, response).await?;
        let status = nonempty_str(&v, "/operations/0/status")
            .ok_or_else(|| missing(endpoint::CHECK_VIDEO, "operations[0].status"))?;
        video_status(
            &status,
            nonempty_str(&v, "/operations/0/operation/metadata/video/fifeUrl"),
        )
    }

    /// Downloads a generated file (at most `limit` bytes): its content type and bytes.
    pub async fn download(&self, url: &str, limit: u64) -> Result<(String, Bytes), UpstreamError> {
        let result = self.download_uncounted(url, limit).await;
        self.metrics.observe_call(crate::metrics::FLOW, result)
    }

    /// [`Self::download`] without counting its failure.
    async fn download_uncounted(
        &self,
        url: &str,
        limit: u64,
    ) -> Result<(String, Bytes), UpstreamError> {
        let e = endpoint::DOWNLOAD;
        let mut response = self.send(e, self.http.get(url)).await?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            return Err(UpstreamError::new(
                ErrorKind::Server { status },
                e,
                format!("the generated file could not be fetched (HTTP {status})"),
            )
            .with_status(status));
        }
        let mime = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| "application/octet-stream".to_owned(), str::to_owned);
        let too_big =
            || UpstreamError::new(ErrorKind::Protocol, e, "the generated file is too large");
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_big());
        }
        let mut buf = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|err| transport(e, &err))? {
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(too_big());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok((mime, Bytes::from(buf)))
    }
}

/// What a final status means; `url` is the job's video URL when given.
fn video_status(status: &str, url: Option<String>) -> Result<VideoStatus, UpstreamError> {
    let e = endpoint::CHECK_VIDEO;
    if status == SUCCESSFUL {
        return url
            .map(|url| VideoStatus::Done { url })
            .ok_or_else(|| missing(e, "operations[0].operation.metadata.video.fifeUrl"));
    }
    if SAFETY_STATUSES.contains(&status) {
        return Err(UpstreamError::new(
            ErrorKind::BadRequest,
            e,
            format!("the prompt was refused by Flow's safety filters ({status})"),
        ));
    }
    if status == FAILED_UNKNOWN || status.starts_with("MEDIA_GENERATION_STATUS_ERROR") {
        return Err(UpstreamError::new(
            ErrorKind::Server { status: 500 },
            e,
            format!("the generation failed ({status})"),
        ));
    }
    Ok(VideoStatus::Running(status.to_owned()))
}

/// Which credential a 401/403 refuses.
#[derive(Clone, Copy)]
enum Refusal {
    /// The session token (labs host): the token is dead.
    Session,
    /// The access token (API host): mint a new one.
    Access,
}

fn session_cookie(session: &Secret) -> String {
    format!("{SESSION_COOKIE}={}", session.expose())
}

/// `;` and the current Unix milliseconds (spec §3).
fn session_id() -> String {
    let ms = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    format!(";{ms}")
}

fn seed() -> u32 {
    rand::random_range(1..=99_999)
}

/// A path segment with anything but unreserved characters percent-encoded.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn nonempty_str(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn missing(endpoint: &'static str, what: &str) -> UpstreamError {
    UpstreamError::new(
        ErrorKind::Protocol,
        endpoint,
        format!("the answer has no {what}"),
    )
}

fn transport(endpoint: &'static str, e: &reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::new(ErrorKind::Timeout, endpoint, "Flow did not answer in time")
    } else {
        UpstreamError::new(ErrorKind::Transport, endpoint, "Flow could not be reached")
    }
}

async fn send(
    endpoint: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<Response, UpstreamError> {
    request.send().await.map_err(|e| transport(endpoint, &e))
}

/// A success passes; a failure is classified from its status and parsed body.
async fn check(
    endpoint: &'static str,
    response: Response,
    refusal: Refusal,
) -> Result<Response, UpstreamError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.bytes().await.unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .and_then(Value::as_str)
        })
        .map(|m| m.chars().take(MAX_MESSAGE).collect::<String>())
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    let kind = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => match refusal {
            Refusal::Session => ErrorKind::CookiesInvalid,
            Refusal::Access => ErrorKind::AuthExpired,
        },
        StatusCode::TOO_MANY_REQUESTS => {
            let quota = parsed
                .as_ref()
                .and_then(|v| v.pointer("/error/status"))
                .and_then(Value::as_str)
                == Some("RESOURCE_EXHAUSTED");
            if quota {
                ErrorKind::QuotaExhausted { retry_after }
            } else {
                ErrorKind::RateLimited { retry_after }
            }
        }
        StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNPROCESSABLE_ENTITY => ErrorKind::BadRequest,
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        other => ErrorKind::Server {
            status: other.as_u16(),
        },
    };
    Err(UpstreamError::new(kind, endpoint, message).with_status(status.as_u16()))
}

async fn json_body<T: serde::de::DeserializeOwned>(
    endpoint: &'static str,
    response: Response,
) -> Result<T, UpstreamError> {
    let body = response
        .bytes()
        .await
        .map_err(|e| transport(endpoint, &e))?;
    serde_json::from_slice(&body).map_err(|_| {
        UpstreamError::new(
            ErrorKind::Protocol,
            endpoint,
            "the answer is not JSON of the expected shape",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_are_classified() {
        assert_eq!(
            video_status("MEDIA_GENERATION_STATUS_ACTIVE", None).unwrap(),
            VideoStatus::Running("MEDIA_GENERATION_STATUS_ACTIVE".into())
        );
        assert_eq!(
            video_status(SUCCESSFUL, Some("http://x/v".into())).unwrap(),
            VideoStatus::Done {
                url: "http://x/v".into()
            }
        );
        assert_eq!(
            video_status(SUCCESSFUL, None).unwrap_err().kind,
            ErrorKind::Protocol
        );
        for safety in SAFETY_STATUSES {
            let e = video_status(safety, None).unwrap_err();
            assert_eq!(
                e.kind,
                ErrorKind::BadRequest,
                "{safety}: the prompt's fault"
            );
            assert!(e.message.contains(safety));
        }
        let e = video_status(FAILED_UNKNOWN, None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Server { status: 500 });
    }

    #[test]
    fn session_ids_and_seeds_follow_the_spec() {
        let id = session_id();
        assert!(
            id.starts_with(';') && id[1..].parse::<u64>().is_ok(),
            "{id}"
        );
        for _ in 0..100 {
            assert!((1..=99_999).contains(&seed()));
        }
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }
}
