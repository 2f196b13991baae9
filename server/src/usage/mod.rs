//! Usage statistics: what each API request cost and who made it.
//!
//! - [`track`] (middleware on `/v1` and `/v1beta`) records every POST request when its
//!   response body is done (sent, failed or dropped by a client that left): status, client
//!   address, user agent and the caller's key label.
//! - Handlers fill the request's [`UsageNote`] (model, tokens, generated media, a failure after
//!   the response committed to 200): `dialects::stream` does it for every chat answer.
//! - [`book::Book`] keeps the totals with every map bounded; `/admin/stats` and `/admin/ip`
//!   show it with the reference's field names.
//! - The hourly history and the named keys' counters are written behind to redb by one thread
//!   ([`spawn_flusher`]) every [`FLUSH_EVERY`]; the history is read back at start.
//!
//! The client address is the TCP peer unless the peer is in `http.trusted_proxies`
//! (`crate::forwarded::client_ip`): forwarding headers from anyone else are ignored.

pub mod book;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, HttpRequest, web};
use bytes::Bytes;

use self::book::{Book, Entry, HISTORY_HOURS, Hour};
use crate::config::live::LiveConfig;
use crate::keys::{Caller, KeyRing};
use crate::store::Store;

/// How often the history and key counters are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a handler tells the statistics about its request.
#[derive(Debug, Default)]
pub struct UsageNote {
    model: OnceLock<Arc<str>>,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    images: AtomicU64,
    videos: AtomicU64,
    /// The answer failed after the response committed to 200.
    failed: AtomicBool,
}

impl UsageNote {
    /// The note of `req` (a detached one outside the tracked scopes).
    pub fn of(req: &HttpRequest) -> Arc<UsageNote> {
        req.extensions()
            .get::<Arc<UsageNote>>()
            .cloned()
            .unwrap_or_default()
    }

    /// The model the request asked for (the first call wins).
    pub fn model(&self, name: &str) {
        let _ = self.model.set(Arc::from(name));
    }

    pub fn input_tokens(&self, n: u32) {
        self.input_tokens.store(u64::from(n), Ordering::Relaxed);
    }

    /// Output tokens of one answer (added: image requests run several).
    pub fn output_tokens(&self, n: u32) {
        self.output_tokens
            .fetch_add(u64::from(n), Ordering::Relaxed);
    }

    /// Output tokens of a streamed answer so far (replaced at each event).
    pub fn set_output_tokens(&self, n: u32) {
        self.output_tokens.store(u64::from(n), Ordering::Relaxed);
    }

    /// One generated file of `mime`.
    pub fn media(&self, mime: &str) {
        if mime.starts_with("image/") {
            self.images.fetch_add(1, Ordering::Relaxed);
        } else if mime.starts_with("video/") {
            self.videos.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The answer failed after its status was sent.
    pub fn failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }
}

/// The usage statistics and named keys of one gateway.
#[derive(Debug)]
pub struct Usage {
    pub book: Arc<Book>,
    pub keys: Arc<KeyRing>,
    live: LiveConfig,
    store: Arc<Store>,
}

impl Usage {
    /// Reads the stored history and keys. Blocking (start-up).
    pub fn start(
        store: &Arc<Store>,
        live: LiveConfig,
        started_ms: u64,
    ) -> Result<Usage, crate::store::StoreError> {
        let since = (started_ms / 1000 / 3600).saturating_sub(HISTORY_HOURS) * 3600;
        let mut hours = BTreeMap::new();
        for (hour, bytes) in store.usage_hours(since)? {
            match serde_json::from_slice::<Hour>(&bytes) {
                Ok(h) => {
                    hours.insert(hour, h);
                }
                Err(e) => {
                    tracing::warn!(hour, error = %e, "a stored usage hour cannot be read; skipped")
                }
            }
        }
        let keys = Arc::new(KeyRing::load(Arc::clone(store))?);
        let max_clients = live.load().stats.max_clients as usize;
        let book = Arc::new(Book::new(max_clients, started_ms, hours));
        spawn_flusher(
            Arc::downgrade(store),
            Arc::downgrade(&book),
            Arc::downgrade(&keys),
        );
        Ok(Usage {
            book,
            keys,
            live,
            store: Arc::clone(store),
        })
    }

    /// Writes what changed now (at shutdown). Blocking.
    pub fn flush(&self) {
        flush(&self.store, &self.book, &self.keys);
    }

    fn finish(&self, pending: &Pending) {
        let note = &pending.note;
        let input = note.input_tokens.load(Ordering::Relaxed);
        let output = note.output_tokens.load(Ordering::Relaxed);
        let entry = Entry {
            at_ms: now_ms(),
            model: note.model.get().cloned(),
            key: pending.caller.as_ref().and_then(Caller::label),
            ip: pending.ip,
            user_agent: pending.user_agent.clone(),
            success: pending.status < 400 && !note.failed.load(Ordering::Relaxed),
            input_tokens: input,
            output_tokens: output,
            images: note.images.load(Ordering::Relaxed),
            videos: note.videos.load(Ordering::Relaxed),
        };
        if let Some(Caller::Named(key)) = &pending.caller
            && input + output > 0
        {
            self.keys.charge(&key.id, input + output);
        }
        self.book.record(&entry);
    }
}

/// Writes the changed hours and key counters every [`FLUSH_EVERY`] until the gateway is gone.
fn spawn_flusher(store: Weak<Store>, book: Weak<Book>, keys: Weak<KeyRing>) {
    let spawned = std::thread::Builder::new()
        .name("usage-flush".into())
        .spawn(move || {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                let (Some(store), Some(book), Some(keys)) =
                    (store.upgrade(), book.upgrade(), keys.upgrade())
                else {
                    return;
                };
                flush(&store, &book, &keys);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the usage flusher: usage history will not be saved");
    }
}

/// Writes what changed. Blocking. A failed write is retried at the next flush.
pub fn flush(store: &Store, book: &Book, keys: &KeyRing) {
    let (hours, prune_before) = book.take_dirty_hours();
    if !hours.is_empty() {
        let encoded: Vec<(u64, Vec<u8>)> = hours
            .iter()
            .map(|(h, b)| (*h, serde_json::to_vec(b).unwrap_or_default()))
            .collect();
        if let Err(e) = store.write_usage_hours(&encoded, prune_before) {
            tracing::warn!(error = %e, "cannot save the usage history; retrying");
            book.mark_dirty(hours.into_iter().map(|(h, _)| h));
        }
    }
    if let Err(e) = keys.flush() {
        tracing::warn!(error = %e, "cannot save the API key counters; retrying");
    }
}

/// Everything known of a request when its handler returned.
struct Pending {
    usage: web::Data<Usage>,
    note: Arc<UsageNote>,
    caller: Option<Caller>,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
    status: u16,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.usage.finish(self);
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its request when it is dropped (sent, failed, or the
    /// client left).
    pub struct Recorded<B> {
        #[pin]
        body: B,
        pending: Option<Pending>,
    }
}

impl<B: MessageBody> MessageBody for Recorded<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        self.project().body.poll_next(cx)
    }
}

/// Middleware: records each POST request of the API scopes (see the module doc).
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<Recorded<impl MessageBody>>, actix_web::Error> {
    let usage = (req.method() == Method::POST)
        .then(|| req.app_data::<web::Data<Usage>>().cloned())
        .flatten();
    let Some(usage) = usage else {
        let res = next.call(req).await?;
        return Ok(res.map_body(|_, body| Recorded {
            body,
            pending: None,
        }));
    };
    let note = Arc::new(UsageNote::default());
    req.extensions_mut().insert(Arc::clone(&note));
    let ip = {
        let settings = usage.live.load();
        crate::forwarded::client_ip(req.request(), &settings.http.trusted_proxies)
    };
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(200).collect::<String>());
    let res = next.call(req).await?;
    let caller = Caller::of(res.request());
    let pending = Pending {
        usage,
        note,
        caller,
        ip,
        user_agent,
        status: res.status().as_u16(),
    };
    Ok(res.map_body(|_, body| Recorded {
        body,
        pending: Some(pending),
    }))
}
