//! Generated media on disk, served at unguessable links that expire.
//!
//! Each file is `<data_dir>/media/<token>.<ext>` where the token is 32 random bytes
//! (base64url): the link is the capability, so `/media/` needs no API key. Files older than
//! `media.store_ttl_hours` are not served and are deleted; when the total passes
//! `media.store_max_mb` the oldest files go first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use rand::RngCore as _;

use crate::config::MediaSettings;
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
    /// Opens (creating) `<data_dir>/media`.
    pub fn open(data_dir: &Path, settings: &MediaSettings) -> std::io::Result<MediaStore> {
        let dir = data_dir.join("media");
        std::fs::create_dir_all(&dir)?;
        Ok(MediaStore {
            dir,
            max_bytes: settings.store_max_bytes,
            ttl: settings.store_ttl,
            public_base_url: settings
                .public_base_url
                .as_ref()
                .map(|u| u.as_str().trim_end_matches('/').to_owned()),
            index: Mutex::new(HashMap::new()),
        })
    }

    /// The base the links of a request's media start with: `media.public_base_url`, else
    /// the scheme and host the request came in on.
    pub fn base_url(&self, req: &HttpRequest) -> String {
        match &self.public_base_url {
            Some(base) => base.clone(),
            None => {
                let info = req.connection_info();
                format!("{}://{}", info.scheme(), info.host())
            }
        }
    }

    /// Stores one file and returns its name (`<token>.<ext>`).
    pub async fn put(&self, mime: &str, data: Bytes) -> std::io::Result<String> {
        let mut token = [0u8; 32];
        rand::rng().fill_bytes(&mut token);
        let name = format!("{}.{}", URL_SAFE_NO_PAD.encode(token), extension_for(mime));
        let path = self.dir.join(&name);
        let size = data.len() as u64;
        tokio::fs::write(&path, &data).await?;
        let mut evict = Vec::new();
        if let Ok(mut index) = self.index.lock() {
            index.insert(
                name.clone(),
                Entry {
                    mime: mime.to_owned(),
                    created: SystemTime::now(),
                    size,
                },
            );
            let mut total: u64 = index.values().map(|e| e.size).sum();
            if total > self.max_bytes {
                let mut by_age: Vec<(String, SystemTime, u64)> = index
                    .iter()
                    .filter(|(n, _)| **n != name)
                    .map(|(n, e)| (n.clone(), e.created, e.size))
                    .collect();
                by_age.sort_by_key(|(_, created, _)| *created);
                for (old, _, size) in by_age {
                    if total <= self.max_bytes {
                        break;
                    }
                    index.remove(&old);
                    total = total.saturating_sub(size);
                    evict.push(old);
                }
            }
        }
        for old in evict {
            let _ = tokio::fs::remove_file(self.dir.join(old)).await;
        }
        Ok(name)
    }

    fn live(&self, name: &str) -> Option<Entry> {
        let index = self.index.lock().ok()?;
        let entry = index.get(name)?;
        let age = entry.created.elapsed().unwrap_or_default();
        (age < self.ttl).then(|| entry.clone())
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

/// `GET /media/{name}`: a stored file while its link is live, else 404.
pub async fn serve(store: web::Data<MediaStore>, name: web::Path<String>) -> HttpResponse {
    let name = name.into_inner();
    if !valid_name(&name) {
        return HttpResponse::NotFound().finish();
    }
    let Some(entry) = store.live(&name) else {
        return HttpResponse::NotFound().finish();
    };
    match tokio::fs::read(store.dir.join(&name)).await {
        Ok(data) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, entry.mime))
            .insert_header((header::CACHE_CONTROL, "private, max-age=3600"))
            .insert_header(("x-content-type-options", "nosniff"))
            .body(data),
        Err(_) => HttpResponse::NotFound().finish(),
    }
}
