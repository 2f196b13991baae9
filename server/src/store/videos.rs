//! The jobs of the asynchronous video API (`/v1/videos`, [`crate::videos`]): one JSON
//! [`VideoJobRecord`] per job, keyed by its id (`video_<uuid>`), with a schema version. A job's
//! record is rewritten at each change of its status or progress, so a restart finds every job
//! where it was and resumes the unfinished ones.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::upstream::flow::SubmittedVideo;

/// Video jobs, keyed by job id; values are JSON [`VideoJobRecord`]s.
pub(super) const VIDEO_JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("video_jobs");

/// The current version of [`VideoJobRecord`].
pub const VIDEO_JOB_SCHEMA_VERSION: u32 = 1;

/// Where a job is (OpenAI's `VideoStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoJobStatus {
    Queued,
    InProgress,
    Completed,
    Failed,
}

impl VideoJobStatus {
    /// OpenAI's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            VideoJobStatus::Queued => "queued",
            VideoJobStatus::InProgress => "in_progress",
            VideoJobStatus::Completed => "completed",
            VideoJobStatus::Failed => "failed",
        }
    }

    /// Whether the job has ended (completed or failed).
    pub fn is_final(self) -> bool {
        matches!(self, VideoJobStatus::Completed | VideoJobStatus::Failed)
    }
}

/// Why a job failed, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoJobError {
    pub code: String,
    pub message: String,
}

/// A file of a job in the media store (`crate::media::MediaStore`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMedia {
    /// The media store's name of the file (`<token>.<ext>`).
    pub name: String,
    pub mime: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// One video job as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoJobRecord {
    pub schema_version: u32,
    /// `video_<uuid, simple form>`.
    pub id: String,
    /// Lowercase hex SHA-256 of the API key that created the job; `""` when the request came
    /// without a key (a gateway that runs without keys).
    pub owner: String,
    /// The public model name.
    pub model: String,
    pub prompt: String,
    /// `seconds` as the client asked (`None`: not given).
    #[serde(default)]
    pub seconds: Option<String>,
    /// `size` as the client asked (`None`: not given).
    #[serde(default)]
    pub size: Option<String>,
    pub status: VideoJobStatus,
    /// 0–100, never decreasing.
    pub progress: u8,
    #[serde(default)]
    pub error: Option<VideoJobError>,
    /// Unix seconds.
    pub created_at: u64,
    #[serde(default)]
    pub completed_at: Option<u64>,
    /// When the video stops being downloadable (the media store's expiry), Unix seconds.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// The upstream job, once submitted (polling resumes from it after a restart).
    #[serde(default)]
    pub submitted: Option<SubmittedVideo>,
    /// The client's reference image, kept in the media store until the job ends (a job queued
    /// when the gateway stopped, or whose token died, is submitted again with it).
    #[serde(default)]
    pub reference: Option<StoredMedia>,
    /// The finished video in the media store.
    #[serde(default)]
    pub media: Option<StoredMedia>,
}

impl VideoJobRecord {
    /// A job just created: queued, nothing submitted, no size or length asked for.
    pub fn queued(
        id: impl Into<String>,
        owner: impl Into<String>,
        model: impl Into<String>,
        prompt: impl Into<String>,
        created_at: u64,
    ) -> VideoJobRecord {
        VideoJobRecord {
            schema_version: VIDEO_JOB_SCHEMA_VERSION,
            id: id.into(),
            owner: owner.into(),
            model: model.into(),
            prompt: prompt.into(),
            seconds: None,
            size: None,
            status: VideoJobStatus::Queued,
            progress: 0,
            error: None,
            created_at,
            completed_at: None,
            expires_at: None,
            submitted: None,
            reference: None,
            media: None,
        }
    }
}

fn decode(bytes: &[u8]) -> Result<VideoJobRecord, StoreError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    match value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
    {
        Some(1) => serde_json::from_value(value).map_err(|e| StoreError::Corrupt(e.to_string())),
        v => Err(StoreError::Corrupt(format!(
            "video job schema version {} is not supported by this build",
            v.map_or_else(|| "(none)".to_owned(), |v| v.to_string())
        ))),
    }
}

impl Store {
    /// Inserts or replaces a video job (stored with the current schema version).
    pub fn put_video_job(&self, record: &VideoJobRecord) -> Result<(), StoreError> {
        let mut record = record.clone();
        record.schema_version = VIDEO_JOB_SCHEMA_VERSION;
        let bytes = serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let tx = self.db.begin_write()?;
        tx.open_table(VIDEO_JOBS)?
            .insert(record.id.as_str(), bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// The job stored under `id`, `None` if there is none.
    pub fn video_job(&self, id: &str) -> Result<Option<VideoJobRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(VIDEO_JOBS)?;
        let bytes = table.get(id)?.map(|v| v.value().to_vec());
        bytes.map(|b| decode(&b)).transpose()
    }

    /// Every readable job for which `keep` holds; unreadable records are logged and skipped.
    fn video_jobs_where(
        &self,
        keep: impl Fn(&VideoJobRecord) -> bool,
    ) -> Result<Vec<VideoJobRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(VIDEO_JOBS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            match decode(v.value()) {
                Ok(record) if keep(&record) => out.push(record),
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    job = %crate::telemetry::untrusted(k.value()),
                    error = %e,
                    "a stored video job cannot be read; skipped"
                ),
            }
        }
        Ok(out)
    }

    /// The jobs of `owner` (see [`VideoJobRecord::owner`]), newest first (ties: by id,
    /// descending, so the order is stable).
    pub fn video_jobs_of(&self, owner: &str) -> Result<Vec<VideoJobRecord>, StoreError> {
        let mut jobs = self.video_jobs_where(|r| {
            subtle::ConstantTimeEq::ct_eq(r.owner.as_bytes(), owner.as_bytes()).into()
        })?;
        jobs.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        Ok(jobs)
    }

    /// Removes the job stored under `id`; returns whether there was one.
    pub fn delete_video_job(&self, id: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let removed = tx.open_table(VIDEO_JOBS)?.remove(id)?.is_some();
        if removed {
            tx.commit()?;
        } else {
            tx.abort()?;
        }
        Ok(removed)
    }

    /// Every job not yet completed or failed (to resume at start-up), oldest first.
    pub fn unfinished_video_jobs(&self) -> Result<Vec<VideoJobRecord>, StoreError> {
        let mut jobs = self.video_jobs_where(|r| !r.status.is_final())?;
        jobs.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, owner: &str, created_at: u64, status: VideoJobStatus) -> VideoJobRecord {
        VideoJobRecord {
            seconds: Some("8".into()),
            status,
            ..VideoJobRecord::queued(id, owner, "veo_3_1_t2v_fast_landscape", "a cat", created_at)
        }
    }

    #[test]
    fn jobs_survive_a_reopen_and_are_listed_per_owner_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut done = job("video_b", "alice", 20, VideoJobStatus::Completed);
        done.media = Some(StoredMedia {
            name: "x.mp4".into(),
            mime: "video/mp4".into(),
            bytes: 32,
        });
        done.submitted = Some(SubmittedVideo {
            token_id: "flow_token_0".into(),
            operation: "op".into(),
            scene_id: "scene".into(),
        });
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .put_video_job(&job("video_a", "alice", 10, VideoJobStatus::Queued))
                .unwrap();
            store.put_video_job(&done).unwrap();
            store
                .put_video_job(&job("video_c", "bob", 30, VideoJobStatus::InProgress))
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let alice: Vec<String> = store
            .video_jobs_of("alice")
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(alice, ["video_b", "video_a"]);
        assert_eq!(store.video_job("video_b").unwrap().unwrap(), done);
        assert!(store.video_job("video_zzz").unwrap().is_none());
        assert!(store.video_jobs_of("carol").unwrap().is_empty());
        let unfinished: Vec<String> = store
            .unfinished_video_jobs()
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(unfinished, ["video_a", "video_c"]);
    }

    #[test]
    fn a_put_replaces_and_a_delete_removes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut r = job("video_a", "", 10, VideoJobStatus::Queued);
        store.put_video_job(&r).unwrap();
        r.status = VideoJobStatus::Failed;
        r.progress = 40;
        r.error = Some(VideoJobError {
            code: "video_generation_failed".into(),
            message: "no".into(),
        });
        store.put_video_job(&r).unwrap();
        assert_eq!(store.video_job("video_a").unwrap().unwrap(), r);
        assert!(store.unfinished_video_jobs().unwrap().is_empty());
        assert!(store.delete_video_job("video_a").unwrap());
        assert!(!store.delete_video_job("video_a").unwrap());
        assert!(store.video_job("video_a").unwrap().is_none());
    }

    #[test]
    fn unreadable_records_are_errors_or_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        {
            let tx = store.db.begin_write().unwrap();
            let mut t = tx.open_table(VIDEO_JOBS).unwrap();
            t.insert("video_new", br#"{"schema_version":7}"#.as_slice())
                .unwrap();
            t.insert("video_bad", b"not json".as_slice()).unwrap();
            drop(t);
            tx.commit().unwrap();
        }
        store
            .put_video_job(&job("video_ok", "o", 1, VideoJobStatus::Queued))
            .unwrap();
        let err = store.video_job("video_new").unwrap_err();
        assert!(err.to_string().contains("schema version 7"), "{err}");
        assert!(store.video_job("video_bad").is_err());
        assert_eq!(store.video_jobs_of("o").unwrap().len(), 1);
        assert_eq!(store.unfinished_video_jobs().unwrap().len(), 1);
    }
}
