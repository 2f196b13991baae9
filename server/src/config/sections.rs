//! The section types of [`Settings`](super::Settings) (`pool`, `pool_server`, `proxy_pool`,
//! `flow`, `gemini_business`, `http`, `media`, `limits`) and how each is read from its JSON object.

use std::path::PathBuf;
use std::time::Duration;

use business2api_shared::Secret;

use super::proxy::ProxyUrl;
use super::reader::{ANY, AT_LEAST_1, Range, Reader, Section, dedup_secrets, quote};

/// How the process runs (`pool_server.enable` + `pool_server.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// API + pool + local worker.
    Local,
    /// API + pool + WebSocket endpoint for remote workers.
    Server,
    /// A worker that connects to a server; no API.
    Client,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Server => "server",
            Mode::Client => "client",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Some(Mode::Local),
            "server" => Some(Mode::Server),
            "client" => Some(Mode::Client),
            _ => None,
        }
    }
}

/// `pool_server.expired_action`: what happens to an account whose re-login has been exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiredAction {
    Delete,
    Refresh,
    Queue,
}

impl ExpiredAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ExpiredAction::Delete => "delete",
            ExpiredAction::Refresh => "refresh",
            ExpiredAction::Queue => "queue",
        }
    }

    fn parse(s: &str) -> Option<ExpiredAction> {
        match s.trim().to_ascii_lowercase().as_str() {
            "delete" => Some(ExpiredAction::Delete),
            "refresh" => Some(ExpiredAction::Refresh),
            "queue" => Some(ExpiredAction::Queue),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    /// Reference sign-up knob; no effect in business2api.
    pub target_count: u32,
    /// Reference sign-up knob; no effect in business2api.
    pub min_count: u32,
    /// Reference sign-up knob; no effect in business2api.
    pub check_interval_minutes: u32,
    /// Reference sign-up knob; no effect in business2api.
    pub register_threads: u32,
    /// Reference sign-up knob; no effect in business2api.
    pub register_headless: bool,
    /// Mint JWTs for the accounts at start (default true, also when the key is missing).
    pub refresh_on_startup: bool,
    /// `refresh_cooldown_sec`: minimum time between two JWT refreshes of one account.
    pub refresh_cooldown: Duration,
    /// `use_cooldown_sec`: an account is not picked again within this time after a use (0 = off).
    pub use_cooldown: Duration,
    /// Consecutive failures before an account is taken out of rotation (≥ 1).
    pub max_fail_count: u32,
    /// Re-login in a real browser (by a worker) when cookies are dead. Forced to false when
    /// `browser_refresh_max_retry` is 0 (with a warning), as in the reference.
    pub enable_browser_refresh: bool,
    pub browser_refresh_headless: bool,
    /// Browser re-login attempts per account before it counts as expired.
    pub browser_refresh_max_retry: u32,
    /// Delete an account's file when Google rejects its cookies (401/403).
    pub auto_delete_401: bool,
    /// How a request's account is chosen.
    pub selection: Selection,
    /// Requests one account serves at once (`0` = no limit).
    pub max_concurrent_per_account: u32,
    /// Successful requests per account per UTC day, by capability (`0` = no cap).
    pub daily_limits: DailyLimits,
    /// Ceiling of every backoff and of upstream-supplied retry-after values.
    pub max_backoff: Duration,
    /// Token refreshes (U1 calls) running at once across the pool (≥ 1).
    pub refresh_concurrency: u32,
    /// Hour (UTC) at which a daily quota is assumed to reset when the upstream names no time.
    pub quota_reset_utc_hour: u32,
    /// `expired_action: "refresh"`: time between two rounds of re-login attempts.
    pub relogin_retry_interval: Duration,
    /// `browser_refresh_backoff_sec`: the wait before an account's next re-login attempt after
    /// a failed one, doubled per failed attempt, at most `relogin_retry_interval`.
    pub browser_refresh_backoff: Duration,
    /// Longest time a request may spend finding an account that starts its answer.
    pub failover_deadline: Duration,
}

/// How the pool picks an account for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    RoundRobin,
    LeastRecentlyUsed,
    FillFirst,
}

impl Selection {
    pub fn as_str(self) -> &'static str {
        match self {
            Selection::RoundRobin => "round_robin",
            Selection::LeastRecentlyUsed => "least_recently_used",
            Selection::FillFirst => "fill_first",
        }
    }

    fn parse(s: &str) -> Option<Selection> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "round_robin" => Some(Selection::RoundRobin),
            "least_recently_used" | "lru" => Some(Selection::LeastRecentlyUsed),
            "fill_first" => Some(Selection::FillFirst),
            _ => None,
        }
    }
}

/// Daily caps per capability, counted on success (`0` = no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyLimits {
    pub text: u32,
    pub image: u32,
    pub video: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolServerSettings {
    pub enable: bool,
    /// Only meaningful when `enable`; use [`Settings::mode`] for the mode actually run.
    pub mode: Mode,
    /// Client mode: the server's base URL (`http`/`https`; normalised to end in `/`).
    pub server_addr: Option<url::Url>,
    /// Legacy, unused (a warning says so when set).
    pub listen_addr: Option<String>,
    /// Shared secret between server and workers; required (non-empty) in server and client mode.
    pub secret: Secret,
    /// Reference sign-up knob; no effect in business2api.
    pub target_count: u32,
    /// Server mode: where accounts live (see [`Settings::accounts_dir`]).
    pub data_dir: Option<PathBuf>,
    /// Client mode: tasks run at once by this worker (≥ 1).
    pub client_threads: u32,
    pub expired_action: ExpiredAction,
    /// Server mode: how long a task's lease lasts unless a heartbeat renews it.
    pub lease: Duration,
    /// Server mode: the heartbeat interval announced to workers in `welcome`.
    pub heartbeat_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyPoolSettings {
    /// The pool's single proxy when no file or subscription yields one (then the top-level
    /// `proxy`).
    pub proxy: Option<ProxyUrl>,
    /// Subscription URLs (validated as `http`/`https`). They may hold tokens: never logged.
    pub subscribes: Vec<Secret>,
    pub files: Vec<PathBuf>,
    /// Periodic active checks of every proxy (`check_interval_sec`).
    pub health_check: bool,
    /// One active check of every proxy at start.
    pub check_on_startup: bool,
    /// What an active check fetches through each proxy (default: the Gemini Business sign-in
    /// endpoint, which the accounts' traffic goes to anyway). Any HTTP answer means the proxy
    /// works.
    pub check_url: Option<String>,
    pub check_interval: Duration,
    pub check_timeout: Duration,
    /// Consecutive proxy faults seen on real traffic before a proxy is quarantined.
    pub fail_threshold: u32,
    /// The first quarantine; each further one in a row doubles it (at most 10 min).
    pub quarantine: Duration,
    /// How often subscriptions are fetched again.
    pub subscribe_interval: Duration,
    /// A `sing-box` executable for vmess / vless / trojan / shadowsocks / hysteria2 links.
    pub singbox_path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowSettings {
    pub enable: bool,
    /// Session tokens (trimmed, no empties, no duplicates).
    pub tokens: Vec<Secret>,
    /// Egress proxy for Flow traffic (the reference ignored it; we apply it).
    pub proxy: Option<ProxyUrl>,
    pub timeout: Duration,
    pub poll_interval: Duration,
    pub max_poll_attempts: u32,
    /// Base URL of the labs host (session → access token, projects). Normalised to end in `/`.
    pub labs_base_url: String,
    /// Base URL of the API host (credits, uploads, generation, polling). Normalised to end in `/`.
    pub api_base_url: String,
}

impl FlowSettings {
    /// `labs_base_url` + `path` (a leading `/` on `path` is optional).
    pub fn labs_url(&self, path: &str) -> String {
        join_base(&self.labs_base_url, path)
    }

    /// `api_base_url` + `path` (a leading `/` on `path` is optional).
    pub fn api_url(&self, path: &str) -> String {
        join_base(&self.api_base_url, path)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GeminiBusinessSettings {
    /// Base URL of the auth host (U1). Normalised: path ends in `/`, no query or fragment.
    /// A validated `http`/`https` base URL, normalised to end with `/`.
    pub auth_base_url: String,
    /// Base URL of the API host (U2–U6). Normalised: path ends in `/`, no query or fragment.
    /// A validated `http`/`https` base URL, normalised to end with `/`.
    pub api_base_url: String,
    pub connect_timeout: Duration,
    /// Whole-call timeout of U1, U2, U3 and U5.
    pub request_timeout: Duration,
    pub stream_first_byte_timeout: Duration,
    /// Longest allowed gap between two chunks of the U4 stream.
    pub stream_idle_timeout: Duration,
    /// Whole-call timeout of U6 (downloads).
    pub download_timeout: Duration,
    /// `max_download_mb` × 1 MiB.
    pub max_download_bytes: u64,
    /// Accounts tried per request before the first byte is sent (1..=10).
    pub max_attempts: u32,
    /// Upstream sessions kept ready per recently used account (0 = off, the default).
    pub session_prefetch: u32,
    /// How long a ready session may wait before it is thrown away unused.
    pub session_prefetch_ttl: Duration,
    pub language_code: String,
    pub time_zone: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// HTTP worker threads; `None` = one per CPU.
    pub workers: Option<usize>,
    pub stream_keepalive: Duration,
    /// `max_request_body_mb` × 1 MiB.
    pub max_request_body_bytes: usize,
    /// How long in-flight requests get to finish on shutdown (0 = stop at once).
    pub shutdown_timeout: Duration,
    /// Non-streamed image/video answers: after this long without an answer the response
    /// commits to 200 and sends whitespace keep-alives (0 = never commit early).
    pub nonstream_keepalive_after: Duration,
    /// Longest wait for the next bytes of a request body (408 after it).
    pub body_read_timeout: Duration,
    /// Bytes of request bodies being read or parsed at once, over all requests.
    pub inflight_body_bytes: usize,
    /// How long a request waits for room in that budget before a 503.
    pub inflight_wait: Duration,
    /// Peers whose forwarding headers (`Forwarded`, `X-Forwarded-*`) are believed.
    pub trusted_proxies: crate::forwarded::TrustedProxies,
}

/// Media in (client URLs the gateway fetches) and out (generated files it serves).
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSettings {
    /// Base of the links to generated media (`https://gw.example.com/`); `None` = taken from
    /// each request's `Host`.
    pub public_base_url: Option<url::Url>,
    /// OpenAI chat: generated media as inline `data:` URIs instead of links.
    pub inline_in_chat: bool,
    /// Total size of stored generated media; the oldest files go first.
    pub store_max_bytes: u64,
    /// How long a generated file (and its link) lives.
    pub store_ttl: Duration,
    /// Hosts the media fetcher may reach although they are loopback/private/link-local:
    /// host names, IP addresses or CIDR blocks, optionally with `:port`.
    pub fetch_allow: Vec<String>,
    pub fetch_max_bytes: u64,
    pub fetch_timeout: Duration,
    pub fetch_max_redirects: u32,
}

/// `metrics`: where `GET /metrics` is served besides the API port (behind the admin key there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSettings {
    /// `metrics.listen_addr`: a second listener serving only `GET /metrics`, without a key
    /// (`None`: the API port's `/metrics` with the admin key only).
    pub listen_addr: Option<std::net::SocketAddr>,
}

/// Structural limits on one request body, checked while it is parsed (every dialect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsSettings {
    /// Messages / `contents` / Responses `input` items per request.
    pub max_messages: u32,
    /// Content blocks / parts in the whole request (all messages, system included).
    pub max_parts: u32,
    /// Images, documents, audio and video (inline or URL) per request.
    pub max_attachments: u32,
    /// Tool definitions (all kinds).
    pub max_tools: u32,
    /// JSON nesting depth of the body.
    pub max_depth: u32,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            max_messages: 10_000,
            max_parts: 100_000,
            max_attachments: 256,
            max_tools: 512,
            max_depth: 64,
        }
    }
}

/// Usage statistics (`stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSettings {
    /// Client addresses remembered by `/admin/ip` (least recently seen forgotten first).
    pub max_clients: u32,
}

impl Default for StatsSettings {
    fn default() -> Self {
        Self { max_clients: 1000 }
    }
}

pub(super) fn read_stats(top: &mut Section<'_>, r: &mut Reader) -> StatsSettings {
    let d = StatsSettings::default();
    let mut s = top.section(r, "stats");
    let max_clients = s.u32(
        r,
        "max_clients",
        d.max_clients,
        Range {
            min: 1,
            max: 1_000_000,
        },
    );
    s.finish(r);
    StatsSettings { max_clients }
}

/// The worker's browser re-login (`browser`): where the login page is and how Chromium runs.
#[derive(Debug, Clone, PartialEq)]
pub struct BrowserSettings {
    /// The login page the browser opens (`…/login?continueUrl=…`), an http(s) URL.
    pub login_url: String,
    /// A running WebDriver server to use instead of starting chromedriver.
    pub webdriver_url: Option<url::Url>,
    /// The chromedriver the worker starts (a path, or a name looked up in `PATH`).
    pub chromedriver_path: PathBuf,
    /// The Chromium binary (`None`: chromedriver finds one).
    pub chromium_path: Option<PathBuf>,
    /// The bound on each step of a login (page load, element wait, capture).
    pub step_timeout: Duration,
    /// Screenshots of failed logins kept under `<data_dir>/screenshots` (0 = none kept).
    pub screenshots_keep: u32,
}

/// The default `browser.login_url`.
pub const DEFAULT_LOGIN_URL: &str =
    "https://auth.business.gemini.google/login?continueUrl=https://business.gemini.google/";

impl GeminiBusinessSettings {
    /// `auth_base_url` + `path` (a leading `/` on `path` is optional).
    pub fn auth_url(&self, path: &str) -> String {
        join_base(&self.auth_base_url, path)
    }

    /// `api_base_url` + `path` (a leading `/` on `path` is optional).
    pub fn api_url(&self, path: &str) -> String {
        join_base(&self.api_base_url, path)
    }
}

fn join_base(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

const DEFAULT_AUTH_BASE_URL: &str = "https://business.gemini.google";
const DEFAULT_API_BASE_URL: &str = "https://biz-discoveryengine.googleapis.com";
const DEFAULT_FLOW_LABS_BASE_URL: &str = "https://labs.google";
const DEFAULT_FLOW_API_BASE_URL: &str = "https://aisandbox-pa.googleapis.com";
const MIB: u64 = 1024 * 1024;
/// Why the reference's sign-up knobs do nothing here.
const NO_SIGN_UP: &str = "business2api does not sign up accounts automatically";

pub(super) fn read_pool(top: &mut Section<'_>, r: &mut Reader) -> PoolSettings {
    let mut s = top.section(r, "pool");
    let target_count = s.u32(r, "target_count", 50, ANY);
    let min_count = s.u32(r, "min_count", 10, ANY);
    let check_interval_minutes = s.u32(r, "check_interval_minutes", 30, ANY);
    let register_threads = s.u32(r, "register_threads", 1, ANY);
    let register_headless = s.bool(r, "register_headless", false);
    for (key, set) in [
        ("target_count", target_count != 50),
        ("min_count", min_count != 10),
        ("check_interval_minutes", check_interval_minutes != 30),
        ("register_threads", register_threads != 1),
        ("register_headless", register_headless),
    ] {
        if set {
            r.warn(format!("pool.{key} has no effect: {NO_SIGN_UP}"));
        }
    }
    let pool = PoolSettings {
        target_count,
        min_count,
        check_interval_minutes,
        register_threads,
        register_headless,
        refresh_on_startup: s.bool(r, "refresh_on_startup", true),
        refresh_cooldown: s.secs(r, "refresh_cooldown_sec", 240, ANY),
        use_cooldown: s.secs(r, "use_cooldown_sec", 15, ANY),
        max_fail_count: s.u32(r, "max_fail_count", 3, AT_LEAST_1),
        enable_browser_refresh: s.bool(r, "enable_browser_refresh", true),
        browser_refresh_headless: s.bool(r, "browser_refresh_headless", true),
        browser_refresh_max_retry: s.u32(r, "browser_refresh_max_retry", 1, ANY),
        auto_delete_401: s.bool(r, "auto_delete_401", false),
        selection: match s.nonblank(r, "selection", false) {
            None => Selection::RoundRobin,
            Some(v) => Selection::parse(&v).unwrap_or_else(|| {
                r.error(
                    "pool.selection",
                    format!(
                        "expected \"round_robin\", \"least_recently_used\" or \"fill_first\", \
                         found {}",
                        quote(&v)
                    ),
                );
                Selection::RoundRobin
            }),
        },
        max_concurrent_per_account: s.u32(r, "max_concurrent_per_account", 0, ANY),
        daily_limits: DailyLimits {
            text: s.u32(r, "daily_limit_text", 3000, ANY),
            image: s.u32(r, "daily_limit_image", 0, ANY),
            video: s.u32(r, "daily_limit_video", 0, ANY),
        },
        max_backoff: s.secs(r, "max_backoff_sec", 300, AT_LEAST_1),
        refresh_concurrency: s.u32(r, "refresh_concurrency", 4, Range { min: 1, max: 64 }),
        quota_reset_utc_hour: s.u32(r, "quota_reset_utc_hour", 8, Range { min: 0, max: 23 }),
        relogin_retry_interval: s.secs(r, "relogin_retry_interval_sec", 3600, AT_LEAST_1),
        browser_refresh_backoff: s.secs(r, "browser_refresh_backoff_sec", 60, ANY),
        failover_deadline: s.secs(r, "failover_deadline_sec", 180, AT_LEAST_1),
    };
    s.finish(r);
    pool
}

pub(super) fn read_pool_server(top: &mut Section<'_>, r: &mut Reader) -> PoolServerSettings {
    let mut s = top.section(r, "pool_server");
    let enable = s.bool(r, "enable", false);
    let mode = match s.nonblank(r, "mode", false) {
        None => Mode::Local,
        Some(m) => Mode::parse(&m).unwrap_or_else(|| {
            r.error(
                "pool_server.mode",
                format!(
                    "expected \"local\", \"server\" or \"client\", found {}",
                    quote(&m)
                ),
            );
            Mode::Local
        }),
    };
    let server_addr = s.base_url(r, "server_addr", None);
    let listen_addr = s.nonblank(r, "listen_addr", false);
    if listen_addr.is_some() {
        r.warn(
            "pool_server.listen_addr has no effect: workers connect to the API's listen_addr \
             (the reference never used this key either)",
        );
    }
    let secret = Secret::new(s.string(r, "secret", true).unwrap_or_default());
    let target_count = s.u32(r, "target_count", 50, ANY);
    if target_count != 50 {
        r.warn(format!(
            "pool_server.target_count has no effect: {NO_SIGN_UP}"
        ));
    }
    let data_dir = s.nonblank(r, "data_dir", false).map(PathBuf::from);
    let client_threads = s.u32(r, "client_threads", 1, AT_LEAST_1);
    let expired_action = match s.nonblank(r, "expired_action", false) {
        None => ExpiredAction::Queue,
        Some(a) => ExpiredAction::parse(&a).unwrap_or_else(|| {
            r.error(
                "pool_server.expired_action",
                format!(
                    "expected \"delete\", \"refresh\" or \"queue\", found {}",
                    quote(&a)
                ),
            );
            ExpiredAction::Queue
        }),
    };
    let lease = Duration::from_secs(u64::from(s.u32(r, "lease_sec", 60, AT_LEAST_1)));
    let heartbeat_interval = Duration::from_secs(u64::from(s.u32(
        r,
        "heartbeat_interval_sec",
        15,
        AT_LEAST_1,
    )));
    s.finish(r);
    PoolServerSettings {
        enable,
        mode,
        server_addr,
        listen_addr,
        secret,
        target_count,
        data_dir,
        client_threads,
        expired_action,
        lease,
        heartbeat_interval,
    }
}

pub(super) fn read_proxy_pool(top: &mut Section<'_>, r: &mut Reader) -> ProxyPoolSettings {
    let mut s = top.section(r, "proxy_pool");
    let proxy = s.proxy(r, "proxy");
    let subscribes = s.string_list(r, "subscribes", true);
    for (i, url) in subscribes.iter().enumerate() {
        if let Err(e) = url::Url::parse(url)
            .map_err(|e| format!("not a valid URL ({e})"))
            .and_then(|u| match u.scheme() {
                "http" | "https" => Ok(()),
                other => Err(format!(
                    "expected an http or https URL, found scheme \"{other}\""
                )),
            })
        {
            r.error(format!("proxy_pool.subscribes[{i}]"), e);
        }
    }
    let files = s
        .string_list(r, "files", false)
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let check_url = s.nonblank(r, "check_url", false);
    if let Some(u) = &check_url
        && let Err(e) = super::reader::parse_base_url(u)
    {
        r.error("proxy_pool.check_url", e);
    }
    let pool = ProxyPoolSettings {
        proxy,
        subscribes: subscribes.into_iter().map(Secret::new).collect(),
        files,
        health_check: s.bool(r, "health_check", false),
        check_on_startup: s.bool(r, "check_on_startup", false),
        check_url,
        check_interval: s.secs(r, "check_interval_sec", 300, AT_LEAST_1),
        check_timeout: s.secs(r, "check_timeout_sec", 10, AT_LEAST_1),
        fail_threshold: s.u32(r, "fail_threshold", 2, AT_LEAST_1),
        quarantine: s.secs(r, "quarantine_sec", 30, AT_LEAST_1),
        subscribe_interval: s.secs(r, "subscribe_interval_sec", 1800, AT_LEAST_1),
        singbox_path: s.nonblank(r, "singbox_path", false).map(PathBuf::from),
    };
    s.finish(r);
    pool
}

pub(super) fn read_flow(top: &mut Section<'_>, r: &mut Reader) -> FlowSettings {
    let mut s = top.section(r, "flow");
    let flow = FlowSettings {
        enable: s.bool(r, "enable", false),
        tokens: dedup_secrets(s.string_list(r, "tokens", true)),
        proxy: s.proxy(r, "proxy"),
        timeout: s.secs(r, "timeout", 120, AT_LEAST_1),
        poll_interval: s.secs(r, "poll_interval", 3, AT_LEAST_1),
        max_poll_attempts: s.u32(r, "max_poll_attempts", 500, AT_LEAST_1),
        labs_base_url: s
            .base_url(r, "labs_base_url", Some(DEFAULT_FLOW_LABS_BASE_URL))
            .map_or_else(|| format!("{DEFAULT_FLOW_LABS_BASE_URL}/"), String::from),
        api_base_url: s
            .base_url(r, "api_base_url", Some(DEFAULT_FLOW_API_BASE_URL))
            .map_or_else(|| format!("{DEFAULT_FLOW_API_BASE_URL}/"), String::from),
    };
    s.finish(r);
    flow
}

pub(super) fn read_gemini_business(
    top: &mut Section<'_>,
    r: &mut Reader,
) -> GeminiBusinessSettings {
    let mut s = top.section(r, "gemini_business");
    let auth_base_url = s
        .base_url(r, "auth_base_url", Some(DEFAULT_AUTH_BASE_URL))
        // On an error (already recorded) the value is never used; keep the default's text.
        .map_or_else(|| format!("{DEFAULT_AUTH_BASE_URL}/"), String::from);
    let api_base_url = s
        .base_url(r, "api_base_url", Some(DEFAULT_API_BASE_URL))
        .map_or_else(|| format!("{DEFAULT_API_BASE_URL}/"), String::from);
    let connect_timeout = s.secs(r, "connect_timeout_sec", 10, AT_LEAST_1);
    let request_timeout = s.secs(r, "request_timeout_sec", 30, AT_LEAST_1);
    let stream_first_byte_timeout = s.secs(r, "stream_first_byte_timeout_sec", 120, AT_LEAST_1);
    let stream_idle_timeout = s.secs(r, "stream_idle_timeout_sec", 120, AT_LEAST_1);
    let download_timeout = s.secs(r, "download_timeout_sec", 300, AT_LEAST_1);
    let max_download_bytes = u64::from(s.u32(r, "max_download_mb", 64, AT_LEAST_1)) * MIB;
    let max_attempts = s.u32(r, "max_attempts", 3, Range { min: 1, max: 10 });
    let session_prefetch = s.u32(r, "session_prefetch", 0, Range { min: 0, max: 8 });
    let session_prefetch_ttl = s.secs(
        r,
        "session_prefetch_ttl_sec",
        120,
        Range { min: 5, max: 3600 },
    );
    let language_code = s
        .nonblank(r, "language_code", false)
        .unwrap_or_else(|| "en-US".into());
    let time_zone = s
        .nonblank(r, "time_zone", false)
        .unwrap_or_else(|| "UTC".into());
    s.finish(r);
    GeminiBusinessSettings {
        auth_base_url,
        api_base_url,
        connect_timeout,
        request_timeout,
        stream_first_byte_timeout,
        stream_idle_timeout,
        download_timeout,
        max_download_bytes,
        max_attempts,
        session_prefetch,
        session_prefetch_ttl,
        language_code,
        time_zone,
    }
}

pub(super) fn read_http(top: &mut Section<'_>, r: &mut Reader) -> HttpSettings {
    let mut s = top.section(r, "http");
    let workers = match s.uint(r, "workers", 0, Range { min: 0, max: 1024 }) {
        0 => None,
        n => usize::try_from(n).ok(),
    };
    let stream_keepalive = Duration::from_millis(s.uint(
        r,
        "stream_keepalive_ms",
        10_000,
        Range {
            min: 50,
            max: 60_000,
        },
    ));
    // At most 4 GiB; the byte count must also fit the platform's `usize`.
    let body_mb = s.u32(r, "max_request_body_mb", 32, Range { min: 1, max: 4096 });
    let max_request_body_bytes = match usize::try_from(u64::from(body_mb) * MIB) {
        Ok(n) => n,
        Err(_) => {
            r.error("http.max_request_body_mb", "too large for this platform");
            32 * 1024 * 1024
        }
    };
    let shutdown_timeout = s.secs(r, "shutdown_timeout_sec", 30, ANY);
    let nonstream_keepalive_after = s.secs(r, "nonstream_keepalive_after_sec", 20, ANY);
    let body_read_timeout = s.secs(r, "body_read_timeout_sec", 30, Range { min: 1, max: 3600 });
    let inflight_mb = s.u32(r, "inflight_body_mb", 128, Range { min: 1, max: 65536 });
    let inflight_body_bytes = match usize::try_from(u64::from(inflight_mb) * MIB) {
        Ok(n) => n,
        Err(_) => {
            r.error("http.inflight_body_mb", "too large for this platform");
            128 * 1024 * 1024
        }
    };
    let inflight_wait = Duration::from_millis(s.uint(
        r,
        "inflight_wait_ms",
        2_000,
        Range {
            min: 0,
            max: 60_000,
        },
    ));
    let trusted_proxies =
        crate::forwarded::TrustedProxies::parse(&s.string_list(r, "trusted_proxies", false))
            .unwrap_or_else(|errors| {
                for (i, why) in errors {
                    r.error(format!("http.trusted_proxies[{i}]"), why);
                }
                crate::forwarded::TrustedProxies::default()
            });
    s.finish(r);
    HttpSettings {
        workers,
        stream_keepalive,
        max_request_body_bytes,
        shutdown_timeout,
        nonstream_keepalive_after,
        body_read_timeout,
        inflight_body_bytes,
        inflight_wait,
        trusted_proxies,
    }
}

pub(super) fn read_media(top: &mut Section<'_>, r: &mut Reader) -> MediaSettings {
    let mut s = top.section(r, "media");
    let public_base_url = s.base_url(r, "public_base_url", None);
    let inline_in_chat = s.bool(r, "inline_in_chat", false);
    let store_max_bytes = u64::from(s.u32(r, "store_max_mb", 1024, AT_LEAST_1)) * MIB;
    let store_ttl = Duration::from_secs(
        u64::from(s.u32(
            r,
            "store_ttl_hours",
            24,
            Range {
                min: 1,
                max: 24 * 365,
            },
        )) * 3600,
    );
    let fetch_allow = s.string_list(r, "fetch_allow", false);
    for (i, entry) in fetch_allow.iter().enumerate() {
        if let Err(why) = crate::media::fetch::AllowRule::parse(entry) {
            r.error(format!("media.fetch_allow[{i}]"), why);
        }
    }
    let fetch_max_bytes =
        u64::from(s.u32(r, "fetch_max_mb", 20, Range { min: 1, max: 1024 })) * MIB;
    let fetch_timeout = s.secs(r, "fetch_timeout_sec", 20, AT_LEAST_1);
    let fetch_max_redirects = s.u32(r, "fetch_max_redirects", 5, Range { min: 0, max: 20 });
    s.finish(r);
    MediaSettings {
        public_base_url,
        inline_in_chat,
        store_max_bytes,
        store_ttl,
        fetch_allow,
        fetch_max_bytes,
        fetch_timeout,
        fetch_max_redirects,
    }
}

pub(super) fn read_limits(top: &mut Section<'_>, r: &mut Reader) -> LimitsSettings {
    let d = LimitsSettings::default();
    let mut s = top.section(r, "limits");
    let max_messages = s.u32(r, "max_messages", d.max_messages, AT_LEAST_1);
    let max_parts = s.u32(r, "max_parts", d.max_parts, AT_LEAST_1);
    let max_attachments = s.u32(r, "max_attachments", d.max_attachments, ANY);
    let max_tools = s.u32(r, "max_tools", d.max_tools, ANY);
    // serde_json refuses bodies nested deeper than 128 levels on its own.
    let max_depth = s.u32(r, "max_depth", d.max_depth, Range { min: 2, max: 128 });
    s.finish(r);
    LimitsSettings {
        max_messages,
        max_parts,
        max_attachments,
        max_tools,
        max_depth,
    }
}

pub(super) fn read_metrics(top: &mut Section<'_>, r: &mut Reader) -> MetricsSettings {
    let mut s = top.section(r, "metrics");
    let listen_addr = s.nonblank(r, "listen_addr", false).and_then(|v| {
        super::reader::parse_listen_addr(&v)
            .map_err(|e| r.error("metrics.listen_addr", e))
            .ok()
    });
    s.finish(r);
    MetricsSettings { listen_addr }
}

pub(super) fn read_browser(top: &mut Section<'_>, r: &mut Reader) -> BrowserSettings {
    let mut s = top.section(r, "browser");
    let login_url = match s.nonblank(r, "login_url", false) {
        None => DEFAULT_LOGIN_URL.to_owned(),
        Some(v) => match url::Url::parse(&v) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => v,
            _ => {
                r.error(
                    "browser.login_url",
                    format!("expected an http or https URL, found {}", quote(&v)),
                );
                DEFAULT_LOGIN_URL.to_owned()
            }
        },
    };
    let webdriver_url = s.base_url(r, "webdriver_url", None);
    let chromedriver_path = s
        .nonblank(r, "chromedriver_path", false)
        .map_or_else(|| PathBuf::from("chromedriver"), PathBuf::from);
    let chromium_path = s.nonblank(r, "chromium_path", false).map(PathBuf::from);
    let step_timeout = s.secs(r, "step_timeout_sec", 30, Range { min: 1, max: 600 });
    let screenshots_keep = s.u32(
        r,
        "screenshots_keep",
        20,
        Range {
            min: 0,
            max: 10_000,
        },
    );
    s.finish(r);
    BrowserSettings {
        login_url,
        webdriver_url,
        chromedriver_path,
        chromium_path,
        step_timeout,
        screenshots_keep,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn the_browser_section_has_its_defaults() {
        let loaded = load("{}");
        let b = &loaded.settings.browser;
        assert_eq!(b.login_url, crate::config::DEFAULT_LOGIN_URL);
        assert_eq!(b.webdriver_url, None);
        assert_eq!(
            b.chromedriver_path,
            std::path::PathBuf::from("chromedriver")
        );
        assert_eq!(b.chromium_path, None);
        assert_eq!(b.step_timeout, std::time::Duration::from_secs(30));
        assert_eq!(b.screenshots_keep, 20);
        assert!(loaded.settings.pool.browser_refresh_headless);
    }

    #[test]
    fn the_browser_section_is_read_and_checked() {
        let loaded = load(
            r#"{"pool": {"browser_refresh_headless": false},
                "browser": {"login_url": "http://127.0.0.1:4000/login?continueUrl=x",
                "webdriver_url": "http://127.0.0.1:9515", "chromedriver_path": "/opt/cd",
                "chromium_path": "/usr/bin/chromium", "step_timeout_sec": 45,
                "screenshots_keep": 0}}"#,
        );
        let s = &loaded.settings;
        assert!(
            !s.pool.browser_refresh_headless,
            "a migrated config saying false gets a headed browser"
        );
        let b = &s.browser;
        assert_eq!(b.login_url, "http://127.0.0.1:4000/login?continueUrl=x");
        assert_eq!(
            b.webdriver_url.as_ref().map(url::Url::as_str),
            Some("http://127.0.0.1:9515/")
        );
        assert_eq!(b.chromedriver_path, std::path::PathBuf::from("/opt/cd"));
        assert_eq!(
            b.chromium_path,
            Some(std::path::PathBuf::from("/usr/bin/chromium"))
        );
        assert_eq!(b.step_timeout, std::time::Duration::from_secs(45));
        assert_eq!(b.screenshots_keep, 0);

        let bad = load_err(
            r#"{"browser": {"login_url": "ftp://x/login", "webdriver_url": "nope",
                "step_timeout_sec": 0}}"#,
        );
        let paths = paths(&bad);
        assert!(paths.contains(&"browser.login_url"), "{paths:?}");
        assert!(paths.contains(&"browser.webdriver_url"), "{paths:?}");
        assert!(paths.contains(&"browser.step_timeout_sec"), "{paths:?}");
    }

    #[test]
    fn legacy_keys_warn_only_when_set_to_non_defaults() {
        let loaded = load(
            r#"{"pool": {"register_threads": 4, "target_count": 50, "register_headless": true},
                "pool_server": {"listen_addr": ":9000", "target_count": 7},
                "proxy_subscribe": "https://example.com/sub"}"#,
        );
        let w = loaded.warnings.join("\n");
        assert_eq!(loaded.warnings.len(), 4, "{w}");
        assert!(!w.contains("proxy_subscribe"));
        assert!(w.contains("pool.register_threads has no effect"));
        assert!(w.contains("pool.register_headless has no effect"));
        assert!(!w.contains("pool.target_count"));
        assert!(w.contains("pool_server.listen_addr has no effect"));
        assert!(w.contains("pool_server.target_count has no effect"));
        assert_eq!(
            loaded.settings.proxy_subscribe.as_deref(),
            Some("https://example.com/sub")
        );
    }

    #[test]
    fn base_urls_are_normalised() {
        let s = load(
            r#"{"gemini_business": {"auth_base_url": "http://127.0.0.1:4000",
                "api_base_url": "http://127.0.0.1:4001/prefix"}}"#,
        )
        .settings;
        let g = &s.gemini_business;
        assert_eq!(g.auth_base_url.as_str(), "http://127.0.0.1:4000/");
        assert_eq!(g.api_base_url.as_str(), "http://127.0.0.1:4001/prefix/");
        assert_eq!(
            g.auth_url("/auth/getoxsrf"),
            "http://127.0.0.1:4000/auth/getoxsrf"
        );
        assert_eq!(
            g.api_url("v1alpha/x"),
            "http://127.0.0.1:4001/prefix/v1alpha/x"
        );
        let s = load(r#"{"gemini_business": {"api_base_url": "https://h/p/"}}"#).settings;
        assert_eq!(s.gemini_business.api_base_url.as_str(), "https://h/p/");

        let e = load_err(
            r#"{"gemini_business": {"auth_base_url": "not a url", "api_base_url": "https://h/?q=1"}}"#,
        );
        assert_eq!(
            paths(&e),
            [
                "gemini_business.auth_base_url",
                "gemini_business.api_base_url"
            ]
        );
    }

    #[test]
    fn fetch_allow_entries_are_validated() {
        let ok = load(
            r#"{"media": {"fetch_allow": ["127.0.0.1:8080", "10.0.0.0/8", "media.internal",
                "Media.Internal.:443", "::1", "[fd00::/8]:443", "fd00:ec2::254"]}}"#,
        );
        assert_eq!(ok.settings.media.fetch_allow.len(), 7);
        let errors = load_err(
            r#"{"media": {"fetch_allow": ["10.0.0.0/33", "host:0", "http://x", "1.2.3",
                "bad_host!", "[1.2.3.4]", "ok.example"]}}"#,
        );
        assert_eq!(
            paths(&errors),
            [
                "media.fetch_allow[0]",
                "media.fetch_allow[1]",
                "media.fetch_allow[2]",
                "media.fetch_allow[3]",
                "media.fetch_allow[4]",
                "media.fetch_allow[5]",
            ],
            "{errors:?}"
        );
        assert!(
            errors[0].to_string().contains("prefix length"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn trusted_proxies_are_validated() {
        let ok = load(r#"{"http": {"trusted_proxies": ["127.0.0.1", "10.0.0.0/8", "fd00::/8"]}}"#);
        assert!(
            ok.settings
                .http
                .trusted_proxies
                .contains("10.1.2.3".parse().unwrap())
        );
        assert!(load(r#"{}"#).settings.http.trusted_proxies.is_empty());
        let errors = load_err(
            r#"{"http": {"trusted_proxies": ["10.0.0.0/33", "proxy.internal", "1.2.3.4", 7]}}"#,
        );
        assert_eq!(
            paths(&errors),
            [
                "http.trusted_proxies[3]",
                "http.trusted_proxies[0]",
                "http.trusted_proxies[1]"
            ],
            "{errors:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// `otp`: where a re-login's one-time code comes from.

/// `otp`: the operator's mailbox(es) for re-login codes, else the code is typed by the operator
/// (`POST /admin/accounts/{email}/otp`). Read when a re-login task is leased (live).
#[derive(Debug, Clone, PartialEq)]
pub struct OtpSettings {
    /// `otp.imap`: the mailbox for every account without its own.
    pub imap: Option<MailboxSettings>,
    /// `otp.accounts`: e-mail (as an account key: trimmed, lower-cased) → its own mailbox.
    pub accounts: std::collections::BTreeMap<String, MailboxSettings>,
    /// `otp.operator_timeout_sec`: how long a task waits for a typed code.
    pub operator_timeout: Duration,
}

impl Default for OtpSettings {
    fn default() -> Self {
        OtpSettings {
            imap: None,
            accounts: std::collections::BTreeMap::new(),
            operator_timeout: Duration::from_secs(300),
        }
    }
}

/// One IMAP mailbox. The password is a [`Secret`] (never shown).
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxSettings {
    pub host: String,
    pub port: u16,
    /// Implicit TLS (default true).
    pub tls: bool,
    pub username: String,
    pub password: Secret,
    /// Default `INBOX`.
    pub folder: String,
    /// How long a task waits for the code to arrive (default 300 s).
    pub timeout: Duration,
}

impl MailboxSettings {
    /// The mailbox for `account` (its own, else the global one).
    pub fn for_account<'a>(otp: &'a OtpSettings, account: &str) -> Option<&'a MailboxSettings> {
        otp.accounts.get(account).or(otp.imap.as_ref())
    }
}

pub(super) fn read_otp(top: &mut Section<'_>, r: &mut Reader) -> OtpSettings {
    let mut s = top.section(r, "otp");
    let imap_path = s.path_of("imap");
    let imap = s.raw("imap").and_then(|v| read_mailbox(&imap_path, v, r));
    let accounts_path = s.path_of("accounts");
    let mut accounts = std::collections::BTreeMap::new();
    match s.raw("accounts") {
        None => {}
        Some(serde_json::Value::Object(map)) => {
            for (email, v) in map {
                let key = business2api_shared::AccountKey::new(email);
                let path = format!("{accounts_path}.{email}");
                if key.as_str().is_empty() || !key.as_str().contains('@') {
                    r.error(path, "expected an account's e-mail address as the key");
                    continue;
                }
                if let Some(m) = read_mailbox(&path, v, r) {
                    accounts.insert(key.as_str().to_owned(), m);
                }
            }
        }
        Some(other) => r.error(
            accounts_path,
            format!(
                "expected an object (e-mail → mailbox), found {}",
                super::reader::describe(other, true)
            ),
        ),
    }
    let operator_timeout = s.secs(r, "operator_timeout_sec", 300, AT_LEAST_1);
    s.finish(r);
    OtpSettings {
        imap,
        accounts,
        operator_timeout,
    }
}

/// One mailbox object at `path`; errors name `path.<key>`. Passwords never appear in messages.
fn read_mailbox(path: &str, v: &serde_json::Value, r: &mut Reader) -> Option<MailboxSettings> {
    let Some(map) = v.as_object() else {
        r.error(
            path,
            format!(
                "expected a mailbox object (host, port, tls, username, password, folder, \
                 timeout_sec), found {}",
                super::reader::describe(v, true)
            ),
        );
        return None;
    };
    let mut ok = true;
    let mut text = |key: &str, required: bool, r: &mut Reader| -> Option<String> {
        match map.get(key) {
            None | Some(serde_json::Value::Null) => {
                if required {
                    r.error(format!("{path}.{key}"), "required");
                    ok = false;
                }
                None
            }
            Some(serde_json::Value::String(t)) if !t.trim().is_empty() => Some(t.clone()),
            Some(other) => {
                r.error(
                    format!("{path}.{key}"),
                    format!(
                        "expected a non-empty string, found {}",
                        super::reader::describe(other, key == "password")
                    ),
                );
                ok = false;
                None
            }
        }
    };
    let host = text("host", true, r).map(|h| h.trim().to_owned());
    let username = text("username", true, r);
    let password = text("password", true, r).map(Secret::new);
    let folder = text("folder", false, r).unwrap_or_else(|| "INBOX".to_owned());
    let tls = match map.get("tls") {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(other) => {
            r.error(
                format!("{path}.tls"),
                format!(
                    "expected a boolean, found {}",
                    super::reader::describe(other, false)
                ),
            );
            ok = false;
            true
        }
    };
    let mut number = |key: &str, default: u64, min: u64, max: u64, r: &mut Reader| -> u64 {
        match map.get(key) {
            None | Some(serde_json::Value::Null) => default,
            Some(serde_json::Value::Number(n)) => match n.as_u64() {
                Some(n) if (min..=max).contains(&n) => n,
                _ => {
                    r.error(
                        format!("{path}.{key}"),
                        format!("expected an integer from {min} to {max}, found {n}"),
                    );
                    ok = false;
                    default
                }
            },
            Some(other) => {
                r.error(
                    format!("{path}.{key}"),
                    format!(
                        "expected an integer, found {}",
                        super::reader::describe(other, false)
                    ),
                );
                ok = false;
                default
            }
        }
    };
    let port = number("port", if tls { 993 } else { 143 }, 1, 65535, r);
    let timeout = number("timeout_sec", 300, 1, u64::from(u32::MAX), r);
    for key in map.keys() {
        if ![
            "host",
            "port",
            "tls",
            "username",
            "password",
            "folder",
            "timeout_sec",
        ]
        .contains(&key.as_str())
        {
            r.warn(format!("unknown key {path}.{key} (ignored)"));
        }
    }
    let (Some(host), Some(username), Some(password)) = (host, username, password) else {
        return None;
    };
    if !ok {
        return None;
    }
    Some(MailboxSettings {
        host,
        port: u16::try_from(port).unwrap_or(993),
        tls,
        username,
        password,
        folder,
        timeout: Duration::from_secs(timeout),
    })
}

#[cfg(test)]
mod otp_tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::time::Duration;

    use crate::config::test_support::*;

    #[test]
    fn mailboxes_take_defaults_and_per_account_ones_override_the_global_one() {
        let s = load(
            r#"{"otp": {
                "imap": {"host": "imap.example.com", "username": "u", "password": "pw-global-1"},
                "accounts": {" Bob@Example.com ": {"host": "plain.example.com", "tls": false,
                    "username": "bob", "password": "pw-bob-2", "folder": "Codes", "timeout_sec": 60}},
                "operator_timeout_sec": 90}}"#,
        )
        .settings;
        let global = s.otp.imap.clone().unwrap();
        assert_eq!(
            (global.port, global.tls, global.folder.as_str()),
            (993, true, "INBOX")
        );
        assert_eq!(global.timeout, Duration::from_secs(300));
        let bob = super::MailboxSettings::for_account(&s.otp, "bob@example.com").unwrap();
        assert_eq!(
            (bob.host.as_str(), bob.port, bob.tls),
            ("plain.example.com", 143, false)
        );
        assert_eq!(
            (bob.folder.as_str(), bob.timeout),
            ("Codes", Duration::from_secs(60))
        );
        let other = super::MailboxSettings::for_account(&s.otp, "carol@example.com").unwrap();
        assert_eq!(other.host, "imap.example.com");
        assert_eq!(s.otp.operator_timeout, Duration::from_secs(90));
        // Passwords stay out of Debug.
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("pw-global-1") && !debug.contains("pw-bob-2"),
            "{debug}"
        );
        let none = load("{}").settings;
        assert!(none.otp.imap.is_none() && none.otp.accounts.is_empty());
        assert_eq!(none.otp.operator_timeout, Duration::from_secs(300));
    }

    #[test]
    fn bad_mailboxes_are_errors_with_key_paths_and_never_show_passwords() {
        let errors = load_err(
            r#"{"otp": {
                "imap": {"username": "u", "password": "pw-secret-3", "port": 70000},
                "accounts": {"not-an-address": {}, "a@example.com": {"host": "h",
                    "username": "u", "password": 12345678, "tls": "yes"}},
                "operator_timeout_sec": 0}}"#,
        );
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "otp.imap.host",
            "otp.imap.port",
            "otp.accounts.not-an-address",
            "otp.accounts.a@example.com.password",
            "otp.accounts.a@example.com.tls",
            "otp.operator_timeout_sec",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
        let text = format!("{errors:?}");
        assert!(
            !text.contains("pw-secret-3") && !text.contains("12345678"),
            "{text}"
        );
        let errors = load_err(r#"{"otp": {"accounts": ["x"]}}"#);
        assert_eq!(errors[0].path, "otp.accounts");
    }
}
