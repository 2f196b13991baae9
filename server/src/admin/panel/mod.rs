//! The admin panel: a single-page app embedded in the binary (`/admin/panel`), and the
//! password login that lets a browser use the admin API without an admin key.
//!
//! - **Assets** are compiled in (`include_str!` of `assets/`): no CDN, no external font; served
//!   with a strict `Content-Security-Policy` (scripts only from the gateway itself, no inline
//!   script or style), `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`, and
//!   `Cache-Control: no-cache` with an `ETag`.
//! - **First run**: without `<data_dir>/admin_password` the gateway makes a one-time setup token
//!   at start ([`PanelAuth::start`]; `main` prints it once). `POST /admin/setup {token,
//!   password}` stores the argon2id hash ([`password`]) and voids the token; so does
//!   `business2api admin set-password` (the password read from stdin).
//! - **Sessions**: `POST /admin/login {password}` sets a random session id in a cookie
//!   (`HttpOnly; SameSite=Strict; Path=/admin`, `Secure` when the request came over TLS as a
//!   trusted proxy says); sessions live in memory ([`sessions`]). `GET /admin/session` says
//!   whether setup is needed and, for a live session, gives the page its CSRF token; every
//!   state-changing call with the session cookie must carry it in `x-csrf-token`
//!   ([`super::require_admin_key`]). `POST /admin/logout` ends the session.
//! - **Login rate limit** per client address ([`limiter`], the address per
//!   [`crate::forwarded::client_ip`]): 429 with `retry-after`.

pub mod limiter;
pub mod password;
pub mod sessions;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use business2api_shared::Secret;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use self::limiter::RateLimiter;
use self::sessions::SessionStore;
use crate::config::live::LiveConfig;

/// The session cookie.
pub const COOKIE: &str = "b2a_session";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The panel's Content-Security-Policy: everything from the gateway itself, nothing inline.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; media-src 'self' blob:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const I18N_JS: &str = include_str!("assets/i18n.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// One embedded asset: `(file name, content type, body)`.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", APP_JS),
    ("i18n.js", "text/javascript; charset=utf-8", I18N_JS),
    ("app.css", "text/css; charset=utf-8", APP_CSS),
    ("icon.svg", "image/svg+xml", ICON_SVG),
];

/// The panel's login state: the setup token, the sessions, the login rate limiter.
#[derive(Debug)]
pub struct PanelAuth {
    data_dir: PathBuf,
    /// Present until a password is set (by the panel or the console).
    setup_token: Mutex<Option<Secret>>,
    sessions: Mutex<SessionStore>,
    limiter: Mutex<RateLimiter>,
    /// Password hashings and checks running at once (each costs ~19 MiB and tens of ms of CPU).
    hashing: tokio::sync::Semaphore,
}

/// Password hashings and checks allowed at once.
pub const HASHING_SLOTS: usize = 2;

impl PanelAuth {
    /// Reads whether a password is set (blocking: call at start-up); without one a setup token
    /// is made, returned to be shown to the operator once.
    pub fn start(data_dir: PathBuf) -> std::io::Result<(PanelAuth, Option<Secret>)> {
        let token = if password::is_set(&data_dir)? {
            None
        } else {
            Some(Secret::new(format!("setup-{}", sessions::random_token())))
        };
        Ok((
            PanelAuth {
                data_dir,
                setup_token: Mutex::new(token.clone()),
                sessions: Mutex::new(SessionStore::default()),
                limiter: Mutex::new(RateLimiter::default()),
                hashing: tokio::sync::Semaphore::new(HASHING_SLOTS),
            },
            token,
        ))
    }

    /// The setup token while one is valid (for log redaction).
    pub fn setup_token(&self) -> Option<Secret> {
        self.setup_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The CSRF token of the session `id`, when it is live (and marks it used).
    pub fn session(&self, id: &str) -> Option<String> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .touch(id, Instant::now())
    }

    fn new_session(&self) -> (String, String) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .create(Instant::now())
    }

    fn limited(&self, ip: IpAddr) -> Result<(), std::time::Duration> {
        self.limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(ip, Instant::now())
    }

    fn failed(&self, ip: IpAddr) {
        self.limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fail(ip, Instant::now());
    }

    fn succeeded(&self, ip: IpAddr) {
        self.limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .succeed(ip);
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "error": message.into() }))
}

/// Whether `method path` is reachable without credentials: the panel's pages and assets, the
/// session probe, setup and login.
pub fn is_public(method: &Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/admin") else {
        return false;
    };
    if *method == Method::GET || *method == Method::HEAD {
        return rest == "/panel" || rest.starts_with("/panel/") || rest == "/session";
    }
    *method == Method::POST && matches!(rest, "/setup" | "/login")
}

/// Whether `method` changes state (needs the CSRF token with a session).
pub fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The session id in the request's cookie, if any.
pub fn session_cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn trusted(req: &HttpRequest) -> crate::forwarded::TrustedProxies {
    req.app_data::<web::Data<LiveConfig>>()
        .map(|live| live.load().http.trusted_proxies.clone())
        .unwrap_or_default()
}

fn client(req: &HttpRequest) -> IpAddr {
    crate::forwarded::client_ip(req, &trusted(req)).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn cookie_header(req: &HttpRequest, value: &str, clear: bool) -> String {
    let secure = if crate::forwarded::is_https(req, &trusted(req)) {
        "; Secure"
    } else {
        ""
    };
    let age = if clear { "; Max-Age=0" } else { "" };
    format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/admin{secure}{age}")
}

/// A logged-in answer: the cookie and the CSRF token.
fn logged_in(req: &HttpRequest, id: &str, csrf: &str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::SET_COOKIE, cookie_header(req, id, false)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "authenticated": true, "csrf": csrf }))
}

fn too_many(wait: std::time::Duration) -> HttpResponse {
    let secs = wait.as_secs().max(1);
    HttpResponse::TooManyRequests()
        .insert_header((header::RETRY_AFTER, secs.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "error": format!("too many failed attempts; try again in {secs} s") }))
}

/// Runs blocking password work off the HTTP workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// `GET /admin/session`: `{setup_required, authenticated, csrf}`.
async fn session(req: HttpRequest, auth: web::Data<PanelAuth>) -> HttpResponse {
    let dir = auth.data_dir.clone();
    let set = match blocking(move || password::is_set(&dir)).await {
        Some(Ok(set)) => set,
        _ => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the data dir",
            );
        }
    };
    if set {
        // A password set from the console voids the token too.
        auth.setup_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
    let csrf = session_cookie(&req).and_then(|id| auth.session(&id));
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "setup_required": !set,
            "authenticated": csrf.is_some(),
            "csrf": csrf,
        }))
}

#[derive(Deserialize)]
struct SetupBody {
    token: String,
    password: String,
}

#[derive(Deserialize)]
struct LoginBody {
    password: String,
}

/// `POST /admin/setup {token, password}`: the first password; logs the caller in.
async fn setup(req: HttpRequest, auth: web::Data<PanelAuth>, body: web::Bytes) -> HttpResponse {
    let ip = client(&req);
    if let Err(wait) = auth.limited(ip) {
        return too_many(wait);
    }
    let Ok(body) = serde_json::from_slice::<SetupBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a JSON object {\"token\": \"…\", \"password\": \"…\"}",
        );
    };
    let dir = auth.data_dir.clone();
    let set = blocking(move || password::is_set(&dir)).await;
    if !matches!(set, Some(Ok(false))) {
        auth.setup_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        return error(
            StatusCode::CONFLICT,
            "an admin password is already set: log in instead",
        );
    }
    let token = {
        let mut guard = auth
            .setup_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(t) if t.matches(body.token.trim().as_bytes()) => {
                if let Err(e) = password::acceptable(&body.password) {
                    return error(StatusCode::BAD_REQUEST, e.to_string());
                }
                guard.take()
            }
            Some(_) => None,
            None => {
                return error(
                    StatusCode::CONFLICT,
                    "no setup token is valid; restart the gateway for a new one, or run \
                     `business2api admin set-password`",
                );
            }
        }
    };
    let Some(token) = token else {
        auth.failed(ip);
        tracing::warn!(client = %ip, "admin panel: wrong setup token");
        return error(StatusCode::FORBIDDEN, "wrong setup token");
    };
    let Ok(_slot) = auth.hashing.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the gateway is stopping");
    };
    let dir = auth.data_dir.clone();
    let pw = body.password;
    match blocking(move || password::store(&dir, &pw)).await {
        Some(Ok(())) => {
            tracing::info!(client = %ip, "admin panel: the admin password was set");
            auth.succeeded(ip);
            let (id, csrf) = auth.new_session();
            logged_in(&req, &id, &csrf)
        }
        failed => {
            // The token stays valid: nothing was stored.
            *auth
                .setup_token
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(token);
            let why = match failed {
                Some(Err(e)) => e,
                _ => "the password task failed".to_owned(),
            };
            tracing::error!(error = %why, "admin panel: cannot store the admin password");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot store the password; see the server log",
            )
        }
    }
}

/// `POST /admin/login {password}`.
async fn login(req: HttpRequest, auth: web::Data<PanelAuth>, body: web::Bytes) -> HttpResponse {
    let ip = client(&req);
    if let Err(wait) = auth.limited(ip) {
        return too_many(wait);
    }
    let Ok(body) = serde_json::from_slice::<LoginBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a JSON object {\"password\": \"…\"}",
        );
    };
    // One at a time per slot; the limit is checked again after the wait, so that parallel
    // guesses cannot all pass the check made before the failures were counted.
    let Ok(_slot) = auth.hashing.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the gateway is stopping");
    };
    if let Err(wait) = auth.limited(ip) {
        return too_many(wait);
    }
    let dir = auth.data_dir.clone();
    let checked = blocking(move || {
        password::load(&dir).map(|hash| hash.map(|h| password::verify(&body.password, &h)))
    })
    .await;
    match checked {
        Some(Ok(Some(true))) => {
            auth.succeeded(ip);
            let (id, csrf) = auth.new_session();
            tracing::info!(client = %ip, "admin panel: logged in");
            logged_in(&req, &id, &csrf)
        }
        Some(Ok(Some(false))) => {
            auth.failed(ip);
            tracing::warn!(client = %ip, "admin panel: wrong password");
            error(StatusCode::UNAUTHORIZED, "wrong password")
        }
        Some(Ok(None)) => error(
            StatusCode::CONFLICT,
            "no admin password is set yet: use the setup token the gateway printed at start",
        ),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the password",
        ),
    }
}

/// `POST /admin/logout`: ends the session (the middleware checked it and its CSRF token).
async fn logout(req: HttpRequest, auth: web::Data<PanelAuth>) -> HttpResponse {
    if let Some(id) = session_cookie(&req) {
        auth.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
    HttpResponse::Ok()
        .insert_header((header::SET_COOKIE, cookie_header(&req, "", true)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "authenticated": false }))
}

fn etag(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        std::iter::once(INDEX_HTML)
            .chain(ASSETS.iter().map(|(_, _, body)| *body))
            .map(etag)
            .collect()
    })
}

/// An embedded file with the panel's security and cache headers (304 when unchanged).
fn asset(req: &HttpRequest, content_type: &str, body: &'static str, tag: &str) -> HttpResponse {
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, tag.to_owned()));
    if unchanged {
        response.finish()
    } else {
        response.body(body)
    }
}

/// `GET /admin/panel` (and any page path under it: the app routes itself).
async fn index(req: HttpRequest) -> HttpResponse {
    let tag = etags().first().cloned().unwrap_or_default();
    asset(&req, "text/html; charset=utf-8", INDEX_HTML, &tag)
}

/// `GET /admin/panel/assets/{name}`.
async fn file(req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().position(|(n, _, _)| *n == name.as_str()) {
        Some(i) => {
            let (_, content_type, body) = ASSETS[i];
            let tag = etags().get(i + 1).cloned().unwrap_or_default();
            asset(&req, content_type, body, &tag)
        }
        None => error(StatusCode::NOT_FOUND, "no such panel file"),
    }
}

/// The panel's routes, inside the `/admin` scope.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/panel", web::get().to(index))
        .route("/panel/", web::get().to(index))
        .route("/panel/assets/{name}", web::get().to(file))
        .route("/session", web::get().to(session))
        .route("/setup", web::post().to(setup))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_panel_setup_login_and_probe_are_public() {
        for (m, p) in [
            (Method::GET, "/admin/panel"),
            (Method::GET, "/admin/panel/assets/app.js"),
            (Method::GET, "/admin/session"),
            (Method::POST, "/admin/setup"),
            (Method::POST, "/admin/login"),
        ] {
            assert!(is_public(&m, p), "{m} {p}");
        }
        for (m, p) in [
            (Method::POST, "/admin/logout"),
            (Method::GET, "/admin/status"),
            (Method::POST, "/admin/panel"),
            (Method::GET, "/admin/panelx"),
            (Method::GET, "/admin/logs"),
            (Method::GET, "/v1/panel"),
            (Method::DELETE, "/admin/session"),
        ] {
            assert!(!is_public(&m, p), "{m} {p}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let req = actix_web::test::TestRequest::default()
            .insert_header(("cookie", "a=1; b2a_session=xyz ; c=2"))
            .to_http_request();
        assert_eq!(session_cookie(&req).as_deref(), Some("xyz"));
        let req = actix_web::test::TestRequest::default()
            .insert_header(("cookie", "b2a_sessionx=1"))
            .to_http_request();
        assert_eq!(session_cookie(&req), None);
    }
}
