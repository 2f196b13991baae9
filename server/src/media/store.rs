//! Generated media on disk, served at unguessable links that expire.
//!
//! Each file is `<data_dir>/media/<token>.<ext>` where the token is 32 random bytes
//! (base64url): the link is the capability, so `/media/` needs no API key. Files older than
//! `media.store_ttl_hours` are not served (404 at once) and are deleted by the janitor; when the
//! total passes `media.store_max_mb` the oldest files go first (at each store and at each
//! janitor run).
//!
//! The index lives in memory and is rebuilt from the directory at start-up (a file's
//! modification time is its creation time, its type comes from its extension), so links
//! survive a restart until they expire. Files are written under a temporary name and renamed,
//! so a crash never leaves a half-written file behind a link. `GET` and `HEAD` are served.
//!
//! Links start with `media.public_base_url`; without it, with the request's origin as
//! [`crate::forwarded`] trusts it, or are relative (`/media/<name>`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use rand::RngCore as _;

use crate::config::MediaSettings;
use crate::config::live::LiveConfig;
use crate::domain::GeneratedMedia;

/// One stored file.
#[derive(Debug, Clone)]
struct Entry {
    mime: String,
    created: SystemTime,
    size: u64,
}

/// The store of generated media.
#[derive(Debug)]
pub struct MediaStore {
    dir: PathBuf,
    max_bytes: u64,
    ttl: Duration,
    public_base_url: Option<String>,
    index: Mutex<HashMap<String, Entry>>,
}

/// The file extension for a MIME type.
pub fn extension_for(mime: &str) -> &'static str {
    match mime.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "video/mp4" => "mp4",
        "video/webm" => "webm",
        "video/quicktime" => "mov",
        "audio/mpeg" => "mp3",
        "audio/wav" | "audio/x-wav" => "wav",
        _ => "bin",
    }
}

/// The MIME type of a stored file, from its extension (the inverse of [`extension_for`]).
pub fn mime_for_extension(ext: &str) -> &'static str {
    match ext {
        "png" => "image/png",
        "jpg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        _ => "application/octet-stream",
    }
}

/// Suffix of files being written (renamed when complete).
const PARTIAL_SUFFIX: &str = ".part";
/// Partial files older than this are left-overs of a crash and deleted by the janitor.
const PARTIAL_MAX_AGE: Duration = Duration::from_secs(3600);
/// How often the janitor runs.
pub const JANITOR_INTERVAL: Duration = Duration::from_secs(60);

/// Whether `name` looks like a name this store hands out (`<43 base64url chars>.<ext>`).
fn valid_name(name: &str) -> bool {
    match name.split_once('.') {
        Some((token, ext)) => {
            token.len() == 43
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !ext.is_empty()
                && ext.len() <= 5
                && ext
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }
        None => false,
    }
}

impl MediaStore {
    /// Opens (creating) `<data_dir>/media` and indexes the files already there. Blocking.
    pub fn open(data_dir: &Path, settings: &MediaSettings) -> std::io::Result<MediaStore> {
        MediaStore::open_dir(
            data_dir.join("media"),
            settings.store_max_bytes,
            settings.store_ttl,
            settings
                .public_base_url
                .as_ref()
                .map(|u| u.as_str().trim_end_matches('/').to_owned()),
        )
    }

    /// Opens (creating) `dir` with explicit limits and indexes the files already there.
    /// Blocking.
    pub fn open_dir(
        dir: PathBuf,
        max_bytes: u64,
        ttl: Duration,
        public_base_url: Option<String>,
    ) -> std::io::Result<MediaStore> {
        std::fs::create_dir_all(&dir)?;
        let mut index = HashMap::new();
        for item in std::fs::read_dir(&dir)? {
            let Ok(item) = item else { continue };
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !valid_name(&name) {
                continue;
            }
            let Ok(meta) = item.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
            index.insert(
                name.clone(),
                Entry {
                    mime: mime_for_extension(ext).to_owned(),
                    created: meta.modified().unwrap_or_else(|_| SystemTime::now()),
                    size: meta.len(),
                },
            );
        }
        if !index.is_empty() {
            tracing::info!(files = index.len(), "generated media indexed");
        }
        Ok(MediaStore {
            dir,
            max_bytes,
            ttl,
            public_base_url,
            index: Mutex::new(index),
        })
    }

    /// The base the links of a request's media start with: `media.public_base_url`, else the
    /// origin the request came in on as far as it can be trusted ([`crate::forwarded::origin`]:
    /// forwarding headers only from `http.trusted_proxies`, else a valid `Host`, else the
    /// listening address), else `""` (relative links).
    pub fn base_url(&self, req: &HttpRequest) -> String {
        match &self.public_base_url {
            Some(base) => base.clone(),
            None => {
                let origin = match req.app_data::<web::Data<LiveConfig>>() {
                    Some(live) => crate::forwarded::origin(req, &live.load().http.trusted_proxies),
                    None => crate::forwarded::origin(req, &Default::default()),
                };
                origin.base()
            }
        }
    }

    /// Stores one file and returns its name (`<token>.<ext>`). A file larger than the whole
    /// store is refused; otherwise the oldest files make room.
    pub async fn put(&self, mime: &str, data: Bytes) -> std::io::Result<String> {
        let size = data.len() as u64;
        if size > self.max_bytes {
            return Err(std::io::Error::other(format!(
                "a {size}-byte file does not fit media.store_max_mb"
            )));
        }
        let mut token = [0u8; 32];
        rand::rng().fill_bytes(&mut token);
        let name = format!("{}.{}", URL_SAFE_NO_PAD.encode(token), extension_for(mime));
        let path = self.dir.join(&name);
        let partial = self.dir.join(format!("{name}{PARTIAL_SUFFIX}"));
        if let Err(e) = tokio::fs::write(&partial, &data).await {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, &path).await?;
        let evict = match self.index.lock() {
            Ok(mut index) => {
                index.insert(
                    name.clone(),
                    Entry {
                        mime: mime.to_owned(),
                        created: SystemTime::now(),
                        size,
                    },
                );
                self.over_budget(&mut index, SystemTime::now())
            }
            Err(_) => Vec::new(),
        };
        self.remove_files(evict).await;
        Ok(name)
    }

    /// How long a stored file is served (`media.store_ttl_hours`).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Deletes a stored file at once (its link 404s from now on); returns whether the store
    /// knew it. A name this store would not hand out is ignored.
    pub async fn remove(&self, name: &str) -> bool {
        if !valid_name(name) {
            return false;
        }
        let known = match self.index.lock() {
            Ok(mut index) => index.remove(name).is_some(),
            Err(_) => false,
        };
        self.remove_files(vec![name.to_owned()]).await;
        known
    }

    /// A live stored file's type and bytes (read whole: for small files such as a video job's
    /// reference image), `None` when it is unknown, expired or unreadable.
    pub async fn read(&self, name: &str) -> Option<(String, Bytes)> {
        if !valid_name(name) {
            return None;
        }
        let entry = self.live(name)?;
        let data = tokio::fs::read(self.dir.join(name)).await.ok()?;
        Some((entry.mime, Bytes::from(data)))
    }

    /// Drops expired entries and, while the total is over the limit, the oldest ones, from
    /// the index; returns their names (the caller deletes the files).
    fn over_budget(&self, index: &mut HashMap<String, Entry>, now: SystemTime) -> Vec<String> {
        let mut gone: Vec<String> = index
            .iter()
            .filter(|(_, e)| !self.fresh(e, now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &gone {
            index.remove(name);
        }
        let mut total: u64 = index.values().map(|e| e.size).sum();
        if total > self.max_bytes {
            let mut by_age: Vec<(String, SystemTime, u64)> = index
                .iter()
                .map(|(n, e)| (n.clone(), e.created, e.size))
                .collect();
            by_age.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
            for (old, _, size) in by_age {
                if total <= self.max_bytes {
                    break;
                }
                index.remove(&old);
                total = total.saturating_sub(size);
                gone.push(old);
            }
        }
        gone
    }

    async fn remove_files(&self, names: Vec<String>) {
        for name in names {
            match tokio::fs::remove_file(self.dir.join(&name)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "could not delete a generated media file"),
            }
        }
    }

    /// One janitor pass: deletes expired files and enforces the size limit (oldest first);
    /// also deletes partial files left by a crash. Returns how many files were deleted.
    pub async fn sweep(&self) -> usize {
        let now = SystemTime::now();
        let gone = match self.index.lock() {
            Ok(mut index) => self.over_budget(&mut index, now),
            Err(_) => Vec::new(),
        };
        let count = gone.len();
        self.remove_files(gone).await;
        let mut partials = Vec::new();
        if let Ok(mut dir) = tokio::fs::read_dir(&self.dir).await {
            while let Ok(Some(item)) = dir.next_entry().await {
                let name = item.file_name().to_string_lossy().into_owned();
                if !name.ends_with(PARTIAL_SUFFIX) {
                    continue;
                }
                let old = item
                    .metadata()
                    .await
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age > PARTIAL_MAX_AGE);
                if old {
                    partials.push(name);
                }
            }
        }
        self.remove_files(partials).await;
        if count > 0 {
            tracing::info!(files = count, "expired or surplus generated media deleted");
        }
        count
    }

    /// Runs [`MediaStore::sweep`] now and then every `every`, until the store is dropped.
    pub fn spawn_janitor(store: &Arc<MediaStore>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<MediaStore> = Arc::downgrade(store);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(store) = weak.upgrade() else { return };
                store.sweep().await;
            }
        })
    }

    fn fresh(&self, entry: &Entry, now: SystemTime) -> bool {
        // A creation time in the future (clock change) counts as now.
        now.duration_since(entry.created).unwrap_or_default() < self.ttl
    }

    fn live(&self, name: &str) -> Option<Entry> {
        let index = self.index.lock().ok()?;
        let entry = index.get(name)?;
        self.fresh(entry, SystemTime::now()).then(|| entry.clone())
    }
}

/// Publishes generated media of one request: stores it and sets its link.
#[derive(Debug, Clone)]
pub struct MediaOut {
    store: Arc<MediaStore>,
    base: String,
}

impl MediaOut {
    pub fn new(store: Arc<MediaStore>, req: &HttpRequest) -> MediaOut {
        let base = store.base_url(req);
        MediaOut { store, base }
    }

    /// Stores `media` and sets its `url`. On a storage failure the media stays without a link
    /// (dialects then inline it) and the failure is logged.
    pub async fn publish(&self, media: &mut GeneratedMedia) {
        if media.url.is_some() {
            return;
        }
        match self.store.put(&media.mime, media.data.clone()).await {
            Ok(name) => media.url = Some(format!("{}/media/{name}", self.base)),
            Err(e) => {
                tracing::warn!(error = %e, "could not store generated media; sending it inline")
            }
        }
    }
}

/// `GET`/`HEAD /media/{name}`: a stored file while its link is live, else 404.
pub async fn serve(store: web::Data<MediaStore>, name: web::Path<String>) -> HttpResponse {
    let name = name.into_inner();
    if !valid_name(&name) {
        return HttpResponse::NotFound().finish();
    }
    let Some(entry) = store.live(&name) else {
        return HttpResponse::NotFound().finish();
    };
    // Streamed from disk with its length: a video is never read into memory whole.
    let file = match tokio::fs::File::open(store.dir.join(&name)).await {
        Ok(file) => file,
        Err(_) => return HttpResponse::NotFound().finish(),
    };
    let size = match file.metadata().await {
        Ok(m) => m.len(),
        Err(_) => return HttpResponse::NotFound().finish(),
    };
    let body = actix_web::body::SizedStream::new(
        size,
        tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024),
    );
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, entry.mime))
        .insert_header((header::CACHE_CONTROL, "private, max-age=3600"))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, max_bytes: u64, ttl: Duration) -> MediaStore {
        MediaStore::open_dir(dir.join("media"), max_bytes, ttl, None).unwrap()
    }

    fn on_disk(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("media"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn expired_links_404_at_once_and_the_janitor_deletes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path(), 1 << 20, Duration::from_millis(300));
        let name = s
            .put("image/png", Bytes::from_static(b"png"))
            .await
            .unwrap();
        assert!(name.ends_with(".png") && valid_name(&name), "{name}");
        assert_eq!(s.live(&name).unwrap().mime, "image/png");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(s.live(&name).is_none(), "expired before the janitor ran");
        assert_eq!(on_disk(tmp.path()), vec![name.clone()]);
        assert_eq!(s.sweep().await, 1);
        assert!(on_disk(tmp.path()).is_empty());
    }

    #[tokio::test]
    async fn the_oldest_files_go_first_when_over_the_size_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path(), 10, Duration::from_secs(3600));
        let a = s
            .put("image/png", Bytes::from_static(b"aaaa"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = s
            .put("image/png", Bytes::from_static(b"bbbb"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let c = s
            .put("video/mp4", Bytes::from_static(b"cccc"))
            .await
            .unwrap();
        assert!(s.live(&a).is_none(), "the oldest file was evicted");
        assert!(s.live(&b).is_some() && s.live(&c).is_some());
        let mut want = vec![b.clone(), c.clone()];
        want.sort();
        assert_eq!(on_disk(tmp.path()), want);
        // A file larger than the whole store is refused and evicts nothing.
        assert!(
            s.put("image/png", Bytes::from(vec![0u8; 11]))
                .await
                .is_err()
        );
        assert_eq!(on_disk(tmp.path()), want);
    }

    #[tokio::test]
    async fn the_index_is_rebuilt_from_disk_and_enforced_by_the_janitor() {
        let tmp = tempfile::tempdir().unwrap();
        let (old, kept) = {
            let s = store(tmp.path(), 1 << 20, Duration::from_secs(3600));
            let old = s
                .put("image/jpeg", Bytes::from_static(b"old"))
                .await
                .unwrap();
            let kept = s
                .put("video/mp4", Bytes::from_static(b"kept"))
                .await
                .unwrap();
            (old, kept)
        };
        // Backdate one file beyond the TTL; leave a stale partial file and a foreign file.
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(tmp.path().join("media").join(&old))
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        let partial = tmp
            .path()
            .join("media")
            .join(format!("{kept}.x{PARTIAL_SUFFIX}"));
        std::fs::write(&partial, b"half").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&partial)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        std::fs::write(tmp.path().join("media").join("README"), b"not ours").unwrap();

        let s = Arc::new(store(tmp.path(), 1 << 20, Duration::from_secs(3600)));
        let entry = s.live(&kept).expect("indexed after a restart");
        assert_eq!((entry.mime.as_str(), entry.size), ("video/mp4", 4));
        assert!(s.live(&old).is_none(), "mtime is the creation time");
        let janitor = MediaStore::spawn_janitor(&s, Duration::from_secs(3600));
        // The first pass runs at once.
        for _ in 0..100 {
            if on_disk(tmp.path()).len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut want = vec!["README".to_owned(), kept.clone()];
        want.sort();
        assert_eq!(on_disk(tmp.path()), want);
        drop(s);
        janitor.abort();
    }

    #[tokio::test]
    async fn a_removed_file_is_gone_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path(), 1 << 20, Duration::from_secs(3600));
        let name = s
            .put("video/mp4", Bytes::from_static(b"mp4"))
            .await
            .unwrap();
        assert_eq!(
            s.read(&name).await,
            Some(("video/mp4".to_owned(), Bytes::from_static(b"mp4")))
        );
        assert!(s.remove(&name).await);
        assert!(s.live(&name).is_none());
        assert!(s.read(&name).await.is_none());
        assert!(on_disk(tmp.path()).is_empty());
        assert!(!s.remove(&name).await);
        assert!(!s.remove("../business2api.redb").await);
    }
}
