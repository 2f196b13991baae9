//! Public data types of the Flow simulator: scripts, routes and request records.

use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

/// How the next video job goes (queued with [`super::FlowSimulator::script_video`]; one script
/// is consumed by one accepted video submit, whatever its token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoScript {
    /// What the job ends with.
    pub outcome: VideoOutcome,
    /// How many answered status polls report the job as still running (alternately
    /// `MEDIA_GENERATION_STATUS_PENDING`, `MEDIA_GENERATION_STATUS_ACTIVE`) before the next one
    /// reports the final status. 0 = the first answered poll is final.
    pub polls_before_done: u32,
    /// The first N status polls of this job answer HTTP 500 (they do not count as polls).
    pub poll_http_errors: u32,
}

impl VideoScript {
    /// Success, final on the `n + 1`-th answered poll.
    pub fn success_after(n: u32) -> VideoScript {
        VideoScript {
            outcome: VideoOutcome::Success,
            polls_before_done: n,
            poll_http_errors: 0,
        }
    }

    /// Ends with this failure status (e.g. `MEDIA_GENERATION_STATUS_ERROR_NSFW`) on the
    /// `n + 1`-th answered poll.
    pub fn failed_after(status: impl Into<String>, n: u32) -> VideoScript {
        VideoScript {
            outcome: VideoOutcome::Failed(status.into()),
            polls_before_done: n,
            poll_http_errors: 0,
        }
    }

    /// The submit answers 200 with an empty `operations[0].operation.name` (no job, no charge).
    pub fn empty_task_id() -> VideoScript {
        VideoScript {
            outcome: VideoOutcome::EmptyTaskId,
            polls_before_done: 0,
            poll_http_errors: 0,
        }
    }

    /// The submit answers this HTTP status with a Google-shaped error (no job, no charge).
    pub fn submit_error(code: u16) -> VideoScript {
        VideoScript {
            outcome: VideoOutcome::SubmitHttpError(code),
            polls_before_done: 0,
            poll_http_errors: 0,
        }
    }

    /// The first `n` status polls of the job answer HTTP 500.
    pub fn with_poll_http_errors(mut self, n: u32) -> VideoScript {
        self.poll_http_errors = n;
        self
    }
}

impl Default for VideoScript {
    /// What a submit gets when no script is queued: success after 2 running polls.
    fn default() -> Self {
        VideoScript::success_after(2)
    }
}

/// The end of a scripted video job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoOutcome {
    /// `MEDIA_GENERATION_STATUS_SUCCESSFUL` with `operation.metadata.video.fifeUrl`.
    Success,
    /// This final status (e.g. `MEDIA_GENERATION_STATUS_ERROR_NSFW`), no URL.
    Failed(String),
    /// The submit answers 200 with an empty task id.
    EmptyTaskId,
    /// The submit answers this HTTP status.
    SubmitHttpError(u16),
}

/// How the next image generation call goes (queued with
/// [`super::FlowSimulator::script_image`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageOutcome {
    /// The images are generated (the default).
    Success,
    /// The call answers this HTTP status with a Google-shaped error carrying this message.
    HttpError(u16, String),
}

/// The simulated Flow routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowRoute {
    /// `GET /fx/api/auth/session` (labs host; session-token cookie).
    Session,
    /// `GET /v1/credits` (API host; Bearer).
    Credits,
    /// `POST /fx/api/trpc/project.createProject` (labs host; session-token cookie).
    CreateProject,
    /// `POST /v1:uploadUserImage`.
    UploadImage,
    /// `POST /v1/projects/{projectId}/flowMedia:batchGenerateImages`.
    GenerateImages,
    /// `POST /v1/video:batchAsyncGenerateVideoText`.
    VideoText,
    /// `POST /v1/video:batchAsyncGenerateVideoStartAndEndImage`.
    VideoStartEnd,
    /// `POST /v1/video:batchAsyncGenerateVideoReferenceImages`.
    VideoReference,
    /// `POST /v1/video:batchCheckAsyncVideoGenerationStatus`.
    CheckStatus,
    /// `GET /files/{id}` (the fife URLs of generated media; no auth).
    File,
    /// Anything else (answered 404); recorded so a wrong URL shows up in tests.
    Unrouted,
}

/// One request the Flow simulator received (whatever its answer).
#[derive(Clone, Debug)]
pub struct FlowRequest {
    /// The route it matched.
    pub route: FlowRoute,
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The JSON body, when it parsed (long strings of large bodies are elided).
    pub body: Option<Value>,
    /// The Bearer token of the `authorization` header, if any.
    pub bearer: Option<String>,
    /// The `__Secure-next-auth.session-token` cookie, if any.
    pub session_token: Option<String>,
    /// Every header (lowercase names, raw values), in order.
    pub headers: Vec<(String, String)>,
    /// The HTTP status answered.
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
    /// The TCP peer it came from (`None` if the transport has none). The simulator listens on
    /// 127.0.0.1, but any 127.0.0.0/8 source address reaches it: an egress proxy bound to its
    /// own source IP (127.0.0.2, 127.0.0.3, …) shows here which proxy the request went through.
    pub peer: Option<std::net::SocketAddr>,
}

impl FlowRequest {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An accepted `uploadUserImage` call.
#[derive(Clone, Debug)]
pub struct FlowUpload {
    /// The media id answered.
    pub media_id: String,
    /// The session token owning it.
    pub session_token: String,
    /// `imageInput.mimeType`.
    pub mime_type: String,
    /// `imageInput.aspectRatio`.
    pub aspect_ratio: String,
    /// The decoded bytes.
    pub bytes: Bytes,
}
