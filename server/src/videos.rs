//! The asynchronous video jobs behind OpenAI's video API (`/v1/videos`,
//! `dialects::openai::videos`): a job is persisted as `queued` at once, then a task submits it
//! to Flow, polls it (`in_progress`, with a monotone progress estimate), downloads the video
//! into the media store and marks it `completed` — or `failed` with a code and a message. Every
//! change is written to the store ([`crate::store::VideoJobRecord`]), so a restart resumes the
//! unfinished jobs ([`VideoJobs::resume_unfinished`]): a submitted job is polled again, a job
//! queued before its submission is submitted (with its reference image, kept in the media store
//! until then).
//!
//! Jobs belong to the API key that created them (its SHA-256, [`owner_of`]); another key sees
//! none of them. Deleting a job stops its task and deletes its files.
//!
//! The upstream is reached through [`VideoBackend`] (Flow in production, a fake in the tests
//! here). Store calls block and run on the blocking pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::task::AbortHandle;

use crate::domain::{ChatRequest, GeneratedMedia, Media, Message, ModelId, Part, Role};
use crate::error::{Category, GatewayError};
use crate::media::MediaStore;
use crate::store::{Store, StoreError, StoredMedia, VideoJobError, VideoJobRecord, VideoJobStatus};
use crate::upstream::flow::session::Polling;
use crate::upstream::{BoxFuture, ModelRegistry};

use crate::upstream::flow::{FlowUpstream, SubmittedVideo, VideoPoll};

/// The progress of a job just submitted.
const SUBMITTED_PROGRESS: u8 = 5;
/// The most a running job's estimate reaches before the video is there.
const MAX_RUNNING_PROGRESS: u8 = 95;
/// The time constant of the running estimate: after this long, about 63% of the way from
/// [`SUBMITTED_PROGRESS`] to [`MAX_RUNNING_PROGRESS`] (Veo clips take one to three minutes).
const PROGRESS_TIME_CONSTANT: Duration = Duration::from_secs(60);

/// What the jobs need of the upstream: submit, poll, download, and how to poll.
pub trait VideoBackend: Send + Sync + 'static {
    /// Submits the video `request` asks for.
    fn submit<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<SubmittedVideo, GatewayError>>;
    /// One status poll ([`VideoPoll::Retry`]: this poll failed, the job goes on).
    fn poll<'a>(
        &'a self,
        job: &'a SubmittedVideo,
    ) -> BoxFuture<'a, Result<VideoPoll, GatewayError>>;
    /// Downloads the finished video.
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<GeneratedMedia, GatewayError>>;
    /// How often and how many times a job is polled.
    fn polling(&self) -> Polling;
}

impl VideoBackend for FlowUpstream {
    fn submit<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<SubmittedVideo, GatewayError>> {
        Box::pin(self.submit_video(request))
    }

    fn poll<'a>(
        &'a self,
        job: &'a SubmittedVideo,
    ) -> BoxFuture<'a, Result<VideoPoll, GatewayError>> {
        Box::pin(self.poll_video(job))
    }

    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<GeneratedMedia, GatewayError>> {
        Box::pin(self.fetch_video(url))
    }

    fn polling(&self) -> Polling {
        FlowUpstream::polling(self)
    }
}

/// The owner of the jobs a request makes: the lowercase hex SHA-256 of its API key, `""`
/// without one.
pub fn owner_of(api_key: Option<&str>) -> String {
    match api_key {
        None => String::new(),
        Some(key) => Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    }
}

/// Whether `id` can be a job id (`video_` + 32 lowercase hex digits).
pub fn valid_id(id: &str) -> bool {
    id.strip_prefix("video_").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A new job as the client asked for it (already checked by the dialect).
#[derive(Debug, Clone)]
pub struct NewVideo {
    /// A video model of the registry.
    pub model: ModelId,
    pub prompt: String,
    pub seconds: Option<String>,
    pub size: Option<String>,
    /// The reference image (`input_reference`): its type and bytes.
    pub reference: Option<(String, Bytes)>,
}

/// Where a job's video is, for `GET /v1/videos/{id}/content`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The media store's file.
    Ready(StoredMedia),
    /// The job has not completed (its status).
    NotReady(VideoJobStatus),
}

/// A running job's task and the gate its writes pass.
struct Running {
    abort: AbortHandle,
    gate: Arc<Gate>,
}

/// Closed when the job is deleted: a write checks it under its lock, so no write of a deleted
/// job lands after the deletion.
#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
}

struct Inner {
    store: Arc<Store>,
    backend: Arc<dyn VideoBackend>,
    media: Arc<MediaStore>,
    registry: Arc<ModelRegistry>,
    running: Mutex<HashMap<String, Running>>,
    /// Set by [`VideoJobs::shutdown`]: no task starts any more.
    stopped: AtomicBool,
}

/// The video jobs service (cheap to clone).
#[derive(Clone)]
pub struct VideoJobs {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for VideoJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoJobs")
            .field("running", &self.running_count())
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn store_failed(e: &StoreError) -> GatewayError {
    tracing::error!(error = %e, "a video job could not be read or written");
    GatewayError::Internal
}

/// Runs a blocking store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, GatewayError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(store_failed(&e)),
        Err(e) => {
            tracing::error!(error = %e, "a video job store call did not finish");
            Err(GatewayError::Internal)
        }
    }
}

fn same_owner(record: &VideoJobRecord, owner: &str) -> bool {
    record.owner.as_bytes().ct_eq(owner.as_bytes()).into()
}

/// The code a failed job reports for `error`.
fn failure_code(error: &GatewayError) -> &'static str {
    match error {
        GatewayError::Model(_) => "model_not_found",
        _ => match error.category() {
            Category::InvalidRequest => "invalid_request",
            Category::RateLimited => "rate_limit_exceeded",
            Category::QuotaExhausted => "insufficient_quota",
            Category::Unavailable => "upstream_unavailable",
            Category::Timeout => "timeout",
            Category::Internal => "internal_error",
            Category::Authentication
            | Category::PermissionDenied
            | Category::NotFound
            | Category::Upstream => "video_generation_failed",
        },
    }
}

/// The running estimate `elapsed` after submission: from [`SUBMITTED_PROGRESS`] towards
/// [`MAX_RUNNING_PROGRESS`], never reaching it.
fn running_progress(elapsed: Duration) -> u8 {
    let span = f64::from(MAX_RUNNING_PROGRESS - SUBMITTED_PROGRESS);
    let x = elapsed.as_secs_f64() / PROGRESS_TIME_CONSTANT.as_secs_f64();
    let estimate = f64::from(SUBMITTED_PROGRESS) + span * (1.0 - (-x).exp());
    // In range by construction: SUBMITTED_PROGRESS..MAX_RUNNING_PROGRESS.
    estimate
        .floor()
        .clamp(0.0, f64::from(MAX_RUNNING_PROGRESS - 1)) as u8
}

/// The domain request a job sends upstream: the reference image (if any), then the prompt.
fn chat_request(model: ModelId, prompt: &str, reference: Option<(String, Bytes)>) -> ChatRequest {
    let mut parts = Vec::new();
    if let Some((mime, data)) = reference {
        parts.push(Part::Media(Media::Inline { mime, data }));
    }
    parts.push(Part::Text(prompt.to_owned()));
    ChatRequest::new(model, vec![Message::new(Role::User, parts)])
}

impl VideoJobs {
    /// The service over `store` and `media`, sending jobs to `flow`; `registry` resolves the
    /// model names of stored jobs.
    pub fn new(
        store: Arc<Store>,
        flow: Arc<FlowUpstream>,
        media: Arc<MediaStore>,
        registry: Arc<ModelRegistry>,
    ) -> VideoJobs {
        VideoJobs::with_backend(store, flow, media, registry)
    }

    /// [`VideoJobs::new`] with any [`VideoBackend`].
    pub fn with_backend(
        store: Arc<Store>,
        backend: Arc<dyn VideoBackend>,
        media: Arc<MediaStore>,
        registry: Arc<ModelRegistry>,
    ) -> VideoJobs {
        VideoJobs {
            inner: Arc::new(Inner {
                store,
                backend,
                media,
                registry,
                running: Mutex::new(HashMap::new()),
                stopped: AtomicBool::new(false),
            }),
        }
    }

    /// How many job tasks run.
    pub fn running_count(&self) -> usize {
        self.inner.running.lock().map_or(0, |m| m.len())
    }

    /// Persists a new job as `queued` and starts it; returns its record.
    pub async fn create(
        &self,
        owner: String,
        new: NewVideo,
    ) -> Result<VideoJobRecord, GatewayError> {
        if self.inner.stopped.load(Ordering::SeqCst) {
            return Err(GatewayError::Busy);
        }
        let reference = match &new.reference {
            Some((mime, data)) => match self.inner.media.put(mime, data.clone()).await {
                Ok(name) => Some(StoredMedia {
                    name,
                    mime: mime.clone(),
                    bytes: data.len() as u64,
                }),
                Err(e) => {
                    tracing::error!(error = %e, "a video job's reference image could not be stored");
                    return Err(GatewayError::Internal);
                }
            },
            None => None,
        };
        let record = VideoJobRecord {
            seconds: new.seconds,
            size: new.size,
            reference,
            ..VideoJobRecord::queued(
                format!("video_{}", uuid::Uuid::new_v4().simple()),
                owner,
                new.model.public_name(),
                new.prompt,
                unix_now(),
            )
        };
        let store = Arc::clone(&self.inner.store);
        let saved = record.clone();
        if let Err(e) = blocking(move || store.put_video_job(&saved)).await {
            if let Some(r) = &record.reference {
                self.inner.media.remove(&r.name).await;
            }
            return Err(e);
        }
        tracing::info!(job = %record.id, model = %record.model, "video job queued");
        self.spawn(record.clone(), Some(new.model), new.reference);
        Ok(record)
    }

    /// Resumes every unfinished job of the store (at start-up): a submitted one is polled
    /// again, a queued one is submitted. Returns how many were resumed.
    pub async fn resume_unfinished(&self) -> Result<usize, GatewayError> {
        let store = Arc::clone(&self.inner.store);
        let jobs = blocking(move || store.unfinished_video_jobs()).await?;
        let count = jobs.len();
        for record in jobs {
            tracing::info!(job = %record.id, status = record.status.as_str(), "video job resumed");
            self.spawn(record, None, None);
        }
        Ok(count)
    }

    /// The job `id` if it belongs to `owner`.
    pub async fn get(&self, owner: &str, id: &str) -> Result<Option<VideoJobRecord>, GatewayError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let store = Arc::clone(&self.inner.store);
        let key = id.to_owned();
        let record = blocking(move || store.video_job(&key)).await?;
        Ok(record.filter(|r| same_owner(r, owner)))
    }

    /// The jobs of `owner`, newest first.
    pub async fn list(&self, owner: &str) -> Result<Vec<VideoJobRecord>, GatewayError> {
        let store = Arc::clone(&self.inner.store);
        let owner = owner.to_owned();
        blocking(move || store.video_jobs_of(&owner)).await
    }

    /// Deletes the job `id` of `owner` (stopping it if it runs, deleting its files); returns
    /// the record as it was, `None` when `owner` has no such job.
    pub async fn delete(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<VideoJobRecord>, GatewayError> {
        let Some(record) = self.get(owner, id).await? else {
            return Ok(None);
        };
        let running = self
            .inner
            .running
            .lock()
            .ok()
            .and_then(|mut m| m.remove(id));
        let gate = running.map(|r| {
            r.abort.abort();
            r.gate
        });
        let store = Arc::clone(&self.inner.store);
        let key = id.to_owned();
        blocking(move || {
            // Closed under its lock: a write of the task in flight lands before, none after.
            let _closed = gate.as_ref().map(|g| {
                let mut closed = g.closed.lock().unwrap_or_else(|p| p.into_inner());
                *closed = true;
                closed
            });
            store.delete_video_job(&key)
        })
        .await?;
        // The record read before may predate the task's last write: read the files of both.
        for name in [&record.media, &record.reference]
            .into_iter()
            .flatten()
            .map(|m| m.name.clone())
        {
            self.inner.media.remove(&name).await;
        }
        tracing::info!(job = %record.id, "video job deleted");
        Ok(Some(record))
    }

    /// Where the video of job `id` of `owner` is; `None` when `owner` has no such job.
    pub async fn content(&self, owner: &str, id: &str) -> Result<Option<Content>, GatewayError> {
        Ok(self
            .get(owner, id)
            .await?
            .map(|r| match (r.status, r.media) {
                (VideoJobStatus::Completed, Some(media)) => Content::Ready(media),
                (status, _) => Content::NotReady(status),
            }))
    }

    /// Stops every job task (the records stay as they are and are resumed at the next start)
    /// and starts no more. Call when the server has stopped, so the store can close.
    pub fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        let running: Vec<Running> = match self.inner.running.lock() {
            Ok(mut m) => m.drain().map(|(_, r)| r).collect(),
            Err(_) => Vec::new(),
        };
        for r in running {
            r.abort.abort();
        }
    }

    /// Starts the task of `record`. `model` and `reference` are known for a new job; a resumed
    /// one finds them from the record.
    fn spawn(
        &self,
        record: VideoJobRecord,
        model: Option<ModelId>,
        reference: Option<(String, Bytes)>,
    ) {
        if self.inner.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut running) = self.inner.running.lock() else {
            return;
        };
        let gate = Arc::new(Gate::default());
        let id = record.id.clone();
        let job = Job {
            inner: Arc::clone(&self.inner),
            gate: Arc::clone(&gate),
            record,
        };
        let task = tokio::spawn(job.run(model, reference));
        running.insert(
            id,
            Running {
                abort: task.abort_handle(),
                gate,
            },
        );
    }
}

/// One job's task.
struct Job {
    inner: Arc<Inner>,
    gate: Arc<Gate>,
    record: VideoJobRecord,
}

impl Job {
    async fn run(mut self, model: Option<ModelId>, reference: Option<(String, Bytes)>) {
        if self.record.submitted.is_none() && !self.submit(model, reference).await {
            self.finish();
            return;
        }
        self.poll_to_end().await;
        self.finish();
    }

    /// Forgets the task (it ends).
    fn finish(&self) {
        if let Ok(mut running) = self.inner.running.lock()
            && running
                .get(&self.record.id)
                .is_some_and(|r| Arc::ptr_eq(&r.gate, &self.gate))
        {
            running.remove(&self.record.id);
        }
    }

    /// Writes the record unless the job was deleted. A failed write is logged: the job goes on
    /// (its next write may succeed).
    async fn save(&self) {
        let store = Arc::clone(&self.inner.store);
        let gate = Arc::clone(&self.gate);
        let record = self.record.clone();
        let result = blocking(move || {
            let closed = gate.closed.lock().unwrap_or_else(|p| p.into_inner());
            if *closed {
                return Ok(());
            }
            store.put_video_job(&record)
        })
        .await;
        if result.is_err() {
            tracing::warn!(job = %self.record.id, "a video job's progress could not be saved");
        }
    }

    fn deleted(&self) -> bool {
        *self.gate.closed.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn fail(&mut self, code: &str, message: String) {
        tracing::info!(
            job = %self.record.id,
            code,
            error = %crate::telemetry::untrusted(&message),
            "video job failed"
        );
        self.record.status = VideoJobStatus::Failed;
        self.record.error = Some(VideoJobError {
            code: code.to_owned(),
            message,
        });
        self.record.completed_at = Some(unix_now());
        self.drop_reference().await;
        self.save().await;
    }

    async fn fail_with(&mut self, error: &GatewayError) {
        self.fail(failure_code(error), error.client_message()).await;
    }

    /// Deletes the reference image from the media store (not needed once submitted).
    async fn drop_reference(&mut self) {
        if let Some(r) = self.record.reference.take() {
            self.inner.media.remove(&r.name).await;
        }
    }

    /// Submits the job; `false` when it failed (and was marked so).
    async fn submit(&mut self, model: Option<ModelId>, reference: Option<(String, Bytes)>) -> bool {
        let model = match model {
            Some(m) => m,
            None => match self.inner.registry.parse(&self.record.model) {
                Ok(m) => m,
                Err(e) => {
                    self.fail_with(&GatewayError::Model(e)).await;
                    return false;
                }
            },
        };
        let reference = match (reference, &self.record.reference) {
            (Some(r), _) => Some(r),
            (None, None) => None,
            (None, Some(stored)) => match self.inner.media.read(&stored.name).await {
                Some(r) => Some(r),
                None => {
                    self.fail(
                        "input_reference_expired",
                        "the job's reference image is no longer stored; create the video again"
                            .to_owned(),
                    )
                    .await;
                    return false;
                }
            },
        };
        let request = chat_request(model, &self.record.prompt, reference);
        let backend = Arc::clone(&self.inner.backend);
        match backend.submit(&request).await {
            Ok(submitted) => {
                tracing::info!(job = %self.record.id, "video job submitted");
                self.record.submitted = Some(submitted);
                self.record.status = VideoJobStatus::InProgress;
                self.record.progress = self.record.progress.max(SUBMITTED_PROGRESS);
                // The reference image stays until the job ends: a job whose token dies is
                // submitted again with it.
                self.save().await;
                true
            }
            Err(e) => {
                self.fail_with(&e).await;
                false
            }
        }
    }

    async fn poll_to_end(&mut self) {
        let Some(mut submitted) = self.record.submitted.clone() else {
            return;
        };
        let mut resubmitted = 0usize;
        if self.record.status != VideoJobStatus::InProgress {
            self.record.status = VideoJobStatus::InProgress;
            self.save().await;
        }
        let backend = Arc::clone(&self.inner.backend);
        let polling = backend.polling();
        let started = SystemTime::UNIX_EPOCH + Duration::from_secs(self.record.created_at);
        for _ in 0..polling.max_attempts {
            tokio::time::sleep(polling.interval).await;
            match backend.poll(&submitted).await {
                Ok(VideoPoll::Done { url }) => {
                    self.download(&url).await;
                    return;
                }
                Ok(VideoPoll::Running { .. }) | Ok(VideoPoll::Retry) => {
                    let elapsed = SystemTime::now()
                        .duration_since(started)
                        .unwrap_or_default();
                    let progress = running_progress(elapsed).max(self.record.progress);
                    if progress != self.record.progress {
                        self.record.progress = progress;
                        self.save().await;
                    }
                }
                Ok(VideoPoll::Lost { reason }) => {
                    // The token died under the job: submit it again on another one.
                    tracing::warn!(job = %self.record.id, reason = %crate::telemetry::untrusted(&reason), "a video job's token failed; submitting it again");
                    resubmitted += 1;
                    if resubmitted > crate::upstream::flow::upstream::MAX_TOKENS {
                        self.fail("token_failed", reason).await;
                        return;
                    }
                    self.record.submitted = None;
                    if !self.submit(None, None).await {
                        return;
                    }
                    match self.record.submitted.clone() {
                        Some(s) => submitted = s,
                        None => return,
                    }
                }
                Err(e) => {
                    self.fail_with(&e).await;
                    return;
                }
            }
        }
        self.fail(
            "timeout",
            format!(
                "the video was not ready after {} polls",
                polling.max_attempts
            ),
        )
        .await;
    }

    async fn download(&mut self, url: &str) {
        let backend = Arc::clone(&self.inner.backend);
        let video = match backend.fetch(url).await {
            Ok(v) => v,
            Err(e) => {
                self.fail_with(&e).await;
                return;
            }
        };
        let bytes = video.data.len() as u64;
        let name = match self.inner.media.put(&video.mime, video.data).await {
            Ok(name) => name,
            Err(e) => {
                tracing::error!(job = %self.record.id, error = %e, "a finished video could not be stored");
                self.fail("internal_error", "the video could not be stored".to_owned())
                    .await;
                return;
            }
        };
        if self.deleted() {
            self.inner.media.remove(&name).await;
            return;
        }
        let now = unix_now();
        self.record.media = Some(StoredMedia {
            name,
            mime: video.mime,
            bytes,
        });
        self.record.status = VideoJobStatus::Completed;
        self.record.progress = 100;
        self.record.completed_at = Some(now);
        self.record.expires_at = Some(now.saturating_add(self.inner.media.ttl().as_secs()));
        self.drop_reference().await;
        self.save().await;
        tracing::info!(job = %self.record.id, bytes, "video job completed");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::domain::ModelSpec;
    use crate::upstream::{ErrorKind, UpstreamError};

    const VIDEO: &[u8] = b"\0\0\0\x18ftypmp42";

    /// A scripted upstream: submits and polls answer from their queues (then succeed).
    #[derive(Default)]
    struct Fake {
        submits: Mutex<VecDeque<Result<SubmittedVideo, GatewayError>>>,
        polls: Mutex<VecDeque<Result<VideoPoll, GatewayError>>>,
        /// When set, every poll without a script says "running".
        forever: AtomicBool,
        max_attempts: u32,
        submitted: Mutex<Vec<ChatRequest>>,
    }

    fn submitted() -> SubmittedVideo {
        SubmittedVideo {
            token_id: "flow_token_0".into(),
            operation: "op".into(),
            scene_id: "scene".into(),
        }
    }

    impl VideoBackend for Fake {
        fn submit<'a>(
            &'a self,
            request: &'a ChatRequest,
        ) -> BoxFuture<'a, Result<SubmittedVideo, GatewayError>> {
            self.submitted.lock().unwrap().push(request.clone());
            let next = self.submits.lock().unwrap().pop_front();
            Box::pin(async move { next.unwrap_or_else(|| Ok(submitted())) })
        }

        fn poll<'a>(
            &'a self,
            _job: &'a SubmittedVideo,
        ) -> BoxFuture<'a, Result<VideoPoll, GatewayError>> {
            let next = self.polls.lock().unwrap().pop_front();
            let forever = self.forever.load(Ordering::SeqCst);
            Box::pin(async move {
                next.unwrap_or_else(|| {
                    Ok(if forever {
                        VideoPoll::Running {
                            status: "MEDIA_GENERATION_STATUS_ACTIVE".into(),
                        }
                    } else {
                        VideoPoll::Done {
                            url: "https://example.test/v.mp4".into(),
                        }
                    })
                })
            })
        }

        fn fetch<'a>(
            &'a self,
            _url: &'a str,
        ) -> BoxFuture<'a, Result<GeneratedMedia, GatewayError>> {
            Box::pin(async { Ok(GeneratedMedia::new("video/mp4", Bytes::from_static(VIDEO))) })
        }

        fn polling(&self) -> Polling {
            Polling {
                interval: Duration::from_millis(5),
                max_attempts: if self.max_attempts == 0 {
                    50
                } else {
                    self.max_attempts
                },
            }
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        store: Arc<Store>,
        media: Arc<MediaStore>,
        jobs: VideoJobs,
        fake: Arc<Fake>,
    }

    fn setup(fake: Fake) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let media = Arc::new(
            MediaStore::open_dir(
                dir.path().join("media"),
                1 << 20,
                Duration::from_secs(3600),
                None,
            )
            .unwrap(),
        );
        let fake = Arc::new(fake);
        let jobs = VideoJobs::with_backend(
            Arc::clone(&store),
            Arc::clone(&fake) as Arc<dyn VideoBackend>,
            Arc::clone(&media),
            Arc::new(ModelRegistry::new()),
        );
        Setup {
            _dir: dir,
            store,
            media,
            jobs,
            fake,
        }
    }

    fn model(name: &str) -> ModelId {
        let specs: Vec<Arc<ModelSpec>> = crate::upstream::flow::models::specs()
            .into_iter()
            .map(Arc::new)
            .collect();
        ModelId::parse_in(&specs, name).unwrap()
    }

    fn new_video(reference: Option<(String, Bytes)>) -> NewVideo {
        NewVideo {
            model: model("veo_3_1_i2v_s_fast_fl_landscape"),
            prompt: "a cat".into(),
            seconds: Some("8".into()),
            size: Some("1280x720".into()),
            reference,
        }
    }

    /// The job once it has ended (the test fails after 5 s).
    async fn ended(jobs: &VideoJobs, owner: &str, id: &str) -> VideoJobRecord {
        for _ in 0..500 {
            let r = jobs.get(owner, id).await.unwrap().unwrap();
            if r.status.is_final() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {id} did not end");
    }

    #[tokio::test]
    async fn a_job_runs_to_completion_and_its_video_is_stored() {
        let s = setup(Fake::default());
        let png = (
            "image/png".to_owned(),
            Bytes::from_static(b"\x89PNG\r\n\x1a\n"),
        );
        let created = s
            .jobs
            .create("alice".into(), new_video(Some(png.clone())))
            .await
            .unwrap();
        assert_eq!(created.status, VideoJobStatus::Queued);
        assert!(valid_id(&created.id), "{}", created.id);
        let reference = created.reference.clone().unwrap();
        let done = ended(&s.jobs, "alice", &created.id).await;
        assert_eq!(done.status, VideoJobStatus::Completed, "{done:?}");
        assert_eq!(done.progress, 100);
        assert!(done.completed_at.is_some() && done.expires_at > done.completed_at);
        assert_eq!(done.submitted, Some(submitted()));
        assert!(done.reference.is_none(), "dropped once submitted");
        assert!(s.media.read(&reference.name).await.is_none());
        let media = done.media.clone().unwrap();
        assert_eq!(
            (media.mime.as_str(), media.bytes),
            ("video/mp4", VIDEO.len() as u64)
        );
        assert_eq!(
            s.media.read(&media.name).await.unwrap().1,
            Bytes::from_static(VIDEO)
        );
        assert_eq!(
            s.jobs.content("alice", &done.id).await.unwrap(),
            Some(Content::Ready(media))
        );
        // The upstream got the image, then the prompt.
        let sent = s.fake.submitted.lock().unwrap()[0].clone();
        assert_eq!(sent.messages.len(), 1);
        assert!(matches!(
            &sent.messages[0].parts[0],
            Part::Media(Media::Inline { data, .. }) if *data == png.1
        ));
        assert_eq!(sent.messages[0].text(), "a cat");
        // Someone else sees nothing.
        assert!(s.jobs.get("bob", &done.id).await.unwrap().is_none());
        assert!(s.jobs.content("bob", &done.id).await.unwrap().is_none());
        assert!(s.jobs.list("bob").await.unwrap().is_empty());
        assert_eq!(s.jobs.list("alice").await.unwrap().len(), 1);
        for _ in 0..100 {
            if s.jobs.running_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(s.jobs.running_count(), 0);
    }

    #[tokio::test]
    async fn failures_end_the_job_with_a_code_and_a_message() {
        let fake = Fake::default();
        fake.polls.lock().unwrap().extend([
            Ok(VideoPoll::Retry),
            Ok(VideoPoll::Running {
                status: "PENDING".into(),
            }),
            Err(GatewayError::Upstream(UpstreamError::new(
                ErrorKind::BadRequest,
                "flow.check",
                "MEDIA_GENERATION_STATUS_ERROR_NSFW",
            ))),
        ]);
        fake.submits.lock().unwrap().extend([
            Ok(submitted()),
            Err(GatewayError::Upstream(UpstreamError::new(
                ErrorKind::QuotaExhausted { retry_after: None },
                "flow.submit",
                "no credits",
            ))),
        ]);
        let s = setup(fake);
        let a = s.jobs.create("o".into(), new_video(None)).await.unwrap();
        let a = ended(&s.jobs, "o", &a.id).await;
        assert_eq!(a.status, VideoJobStatus::Failed);
        let error = a.error.unwrap();
        assert_eq!(error.code, "invalid_request");
        assert!(error.message.contains("NSFW"), "{}", error.message);
        assert!(a.progress >= SUBMITTED_PROGRESS && a.progress < 100);
        assert_eq!(
            s.jobs.content("o", &a.id).await.unwrap(),
            Some(Content::NotReady(VideoJobStatus::Failed))
        );
        let b = s.jobs.create("o".into(), new_video(None)).await.unwrap();
        let b = ended(&s.jobs, "o", &b.id).await;
        assert_eq!(b.error.unwrap().code, "insufficient_quota");
        assert!(b.submitted.is_none());
    }

    #[tokio::test]
    async fn a_job_still_running_after_max_attempts_times_out() {
        let fake = Fake {
            max_attempts: 3,
            ..Fake::default()
        };
        fake.forever.store(true, Ordering::SeqCst);
        let s = setup(fake);
        let a = s.jobs.create("o".into(), new_video(None)).await.unwrap();
        let a = ended(&s.jobs, "o", &a.id).await;
        let error = a.error.unwrap();
        assert_eq!(error.code, "timeout");
        assert!(error.message.contains("3 polls"), "{}", error.message);
    }

    #[tokio::test]
    async fn deleting_a_running_job_stops_it_and_it_stays_deleted() {
        let fake = Fake::default();
        fake.forever.store(true, Ordering::SeqCst);
        let s = setup(fake);
        let png = (
            "image/png".to_owned(),
            Bytes::from_static(b"\x89PNG\r\n\x1a\n"),
        );
        let a = s
            .jobs
            .create("o".into(), new_video(Some(png)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(s.jobs.running_count(), 1);
        assert!(s.jobs.delete("other", &a.id).await.unwrap().is_none());
        let deleted = s.jobs.delete("o", &a.id).await.unwrap().unwrap();
        assert_eq!(deleted.id, a.id);
        assert_eq!(s.jobs.running_count(), 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(s.store.video_job(&a.id).unwrap().is_none());
        assert!(s.jobs.get("o", &a.id).await.unwrap().is_none());
        assert!(s.jobs.delete("o", &a.id).await.unwrap().is_none());
        if let Some(r) = a.reference {
            assert!(s.media.read(&r.name).await.is_none());
        }
    }

    #[tokio::test]
    async fn unfinished_jobs_resume_and_shutdown_stops_them() {
        let s = setup(Fake::default());
        let mut running = VideoJobRecord {
            status: VideoJobStatus::InProgress,
            progress: 40,
            submitted: Some(submitted()),
            ..VideoJobRecord::queued(
                format!("video_{}", uuid::Uuid::new_v4().simple()),
                "o",
                "veo_3_1_t2v_fast_landscape",
                "p",
                unix_now(),
            )
        };
        s.store.put_video_job(&running).unwrap();
        // Queued, never submitted, its model no longer served (an empty registry here).
        let mut queued = running.clone();
        queued.id = format!("video_{}", uuid::Uuid::new_v4().simple());
        queued.status = VideoJobStatus::Queued;
        queued.progress = 0;
        queued.submitted = None;
        s.store.put_video_job(&queued).unwrap();
        assert_eq!(s.jobs.resume_unfinished().await.unwrap(), 2);
        let done = ended(&s.jobs, "o", &running.id).await;
        assert_eq!(done.status, VideoJobStatus::Completed);
        assert!(
            s.fake.submitted.lock().unwrap().is_empty(),
            "not submitted again"
        );
        let failed = ended(&s.jobs, "o", &queued.id).await;
        assert_eq!(failed.error.unwrap().code, "model_not_found");

        s.fake.forever.store(true, Ordering::SeqCst);
        running.id = format!("video_{}", uuid::Uuid::new_v4().simple());
        s.store.put_video_job(&running).unwrap();
        assert_eq!(s.jobs.resume_unfinished().await.unwrap(), 1);
        assert_eq!(s.jobs.running_count(), 1);
        s.jobs.shutdown();
        assert_eq!(s.jobs.running_count(), 0);
        assert!(matches!(
            s.jobs.create("o".into(), new_video(None)).await,
            Err(GatewayError::Busy)
        ));
        let kept = s.store.video_job(&running.id).unwrap().unwrap();
        assert_eq!(kept.status, VideoJobStatus::InProgress, "resumed next time");
    }

    #[test]
    fn the_progress_estimate_rises_and_stays_below_the_end() {
        let mut last = 0;
        for secs in [0, 1, 5, 30, 60, 120, 600, 100_000] {
            let p = running_progress(Duration::from_secs(secs));
            assert!(p >= last && (SUBMITTED_PROGRESS..MAX_RUNNING_PROGRESS).contains(&p));
            last = p;
        }
        assert!(running_progress(Duration::from_secs(60)) > 50);
    }

    #[test]
    fn owners_and_ids() {
        assert_eq!(owner_of(None), "");
        let owner = owner_of(Some("sk-test"));
        assert_eq!(owner.len(), 64);
        assert!(!owner.contains("sk-test"));
        assert_ne!(owner, owner_of(Some("sk-test2")));
        assert!(valid_id("video_0123456789abcdef0123456789abcdef"));
        assert!(!valid_id("video_0123456789ABCDEF0123456789abcdef"));
        assert!(!valid_id("video_../../x"));
        assert!(!valid_id("0123456789abcdef0123456789abcdef"));
    }
}
