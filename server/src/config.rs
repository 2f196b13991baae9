//! Configuration: raw JSON (the reference's `config/config.json` keys plus our own) and
//! environment overrides → validated [`Settings`]. Every error is reported at once, each with its
//! key path. See `config/README.md` for every key.
//!
//! # How it works
//! The file is parsed into a [`serde_json::Value`] and walked by hand with a small reader that
//! records a [`ConfigError`] for every bad value (and keeps going, using the default for that key),
//! plus a warning for every unknown key. Then the environment is applied, then cross-key checks
//! run. Only if no error was recorded does the caller get [`Settings`].
//!
//! Merge rule: a missing key, or `null`, takes its documented default — booleans included (the
//! reference turned a missing boolean into `false`, defect 23). Sections are merged key by key.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use business2api_shared::Secret;
use serde_json::{Map, Value};

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

/// A proxy URL (`http`, `https`, `socks5` or `socks5h`). Its password is a secret: `Debug` and
/// [`ProxyUrl::redacted`] hide it.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl(url::Url);

/// Fully validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `listen_addr`: where the HTTP API listens (`:8000` = every IPv4 interface, port 8000).
    pub listen_addr: SocketAddr,
    /// `data_dir`: accounts, the generated API key, Flow token files. See [`Settings::accounts_dir`].
    pub data_dir: PathBuf,
    /// `default_config`: the configId used for an account whose file has none (empty = none).
    pub default_config: String,
    pub debug: bool,
    /// `proxy`: the egress proxy for all upstream (Gemini Business) traffic.
    pub proxy: Option<ProxyUrl>,
    /// Legacy `proxy_subscribe`; no effect yet (a warning says so).
    pub proxy_subscribe: Option<String>,
    /// `note`: free text lines shown on `GET /`.
    pub note: Vec<String>,
    /// `api_keys` + env `API_KEYS` / `API_KEY`: trimmed, no empties, no duplicates, file order.
    pub api_keys: Vec<Secret>,
    /// Keys accepted on the admin routes (`/admin/*`) only. An API key grants no admin route;
    /// with no admin key configured the admin routes answer 403.
    pub admin_keys: Vec<Secret>,
    /// With no API key configured: serve the API without authentication instead of generating a
    /// key on first start.
    pub allow_unauthenticated: bool,
    pub pool: PoolSettings,
    pub pool_server: PoolServerSettings,
    pub proxy_pool: ProxyPoolSettings,
    pub flow: FlowSettings,
    pub gemini_business: GeminiBusinessSettings,
    pub http: HttpSettings,
    pub media: MediaSettings,
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyPoolSettings {
    pub proxy: Option<ProxyUrl>,
    /// Subscription URLs (validated as `http`/`https`).
    pub subscribes: Vec<String>,
    pub files: Vec<PathBuf>,
    pub health_check: bool,
    pub check_on_startup: bool,
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

impl ProxyUrl {
    /// Parses a proxy URL: scheme `http`, `https`, `socks5` or `socks5h`, a host, optionally
    /// `user:password@` and a port. Error messages never repeat the input (it may hold a
    /// password).
    pub fn parse(s: &str) -> Result<ProxyUrl, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty proxy URL".to_owned());
        }
        if !s.contains("://") {
            return Err(
                "missing scheme: expected a URL such as http://host:port or socks5://host:port"
                    .to_owned(),
            );
        }
        let url = url::Url::parse(s).map_err(|e| format!("not a valid proxy URL ({e})"))?;
        let scheme = url.scheme();
        if !matches!(scheme, "http" | "https" | "socks5" | "socks5h") {
            return Err(format!(
                "unsupported proxy scheme \"{scheme}\" (expected http, https, socks5 or socks5h)"
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("proxy URL has no host".to_owned());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("a proxy URL takes no query or fragment".to_owned());
        }
        Ok(ProxyUrl(url))
    }

    /// The URL with its password replaced by `[redacted]`, for logs and admin views.
    pub fn redacted(&self) -> String {
        let u = &self.0;
        let Some(password) = u.password() else {
            return u.to_string();
        };
        // `set_password` would percent-encode the brackets; splice the text instead. The
        // serialisation is `scheme://user:password@host…`, and the first `@` after `://` ends the
        // userinfo (`@` inside it is always percent-encoded).
        let s = u.as_str();
        let start = u.scheme().len() + 3 + u.username().len() + 1;
        match s.get(start..start + password.len()) {
            Some(p) if p == password => {
                format!("{}[redacted]{}", &s[..start], &s[start + password.len()..])
            }
            _ => {
                let mut copy = u.clone();
                let _ = copy.set_password(Some("redacted"));
                copy.to_string()
            }
        }
    }

    /// The real URL, for building the HTTP client.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxyUrl({})", self.redacted())
    }
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: a key path such as `pool.use_cooldown_sec` or `api_keys[2]`, `env LISTEN_ADDR`, or
    /// the file itself for read and syntax errors.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem at once. `Display` prints one line per error, `<path>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The outcome of a successful load.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub settings: Settings,
    /// Unknown keys, legacy keys that have no effect, foot-guns. Log each at `warn`.
    pub warnings: Vec<String>,
    /// The file read; `None` when it did not exist (all defaults).
    pub source: Option<PathBuf>,
}

// Documented defaults. `config/README.md` and `config/config.example.json` repeat them; a test
// checks the example against these.
const DEFAULT_PORT: u16 = 8000;
const DEFAULT_DATA_DIR: &str = "./data";
const DEFAULT_AUTH_BASE_URL: &str = "https://business.gemini.google";
const DEFAULT_API_BASE_URL: &str = "https://biz-discoveryengine.googleapis.com";
/// A pool secret shorter than this draws a warning.
const MIN_SECRET_LEN: usize = 16;
/// A session JWT is usable for about this long; a longer refresh cooldown is a foot-gun.
const JWT_USABLE_SECS: u64 = 270;
const MIB: u64 = 1024 * 1024;
/// The placeholder key of `config/config.example.json`; a warning fires while it is configured.
const EXAMPLE_API_KEY: &str = "sk-change-me";

/// Why the reference's sign-up knobs do nothing here.
const NO_SIGN_UP: &str = "business2api does not sign up accounts automatically";

impl Settings {
    /// Reads the file at `path` (a missing file means "all defaults", not an error; an unreadable
    /// or non-JSON file IS an error), then applies the environment via `env`.
    pub fn load(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<LoadedConfig, ConfigErrors> {
        let label = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| {
                    ConfigErrors(vec![ConfigError {
                        path: label.clone(),
                        message: "the file is not valid UTF-8".to_owned(),
                    }])
                })?;
                let mut loaded = from_text(&text, env, &label)?;
                loaded.source = Some(path.to_path_buf());
                Ok(loaded)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => from_text("{}", env, &label),
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                path: label,
                message: format!("cannot read the configuration file: {e}"),
            }])),
        }
    }

    /// Parses a configuration document, then applies the environment via `env`.
    /// `source` of the result is `None`.
    pub fn from_json_str(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<LoadedConfig, ConfigErrors> {
        from_text(text, env, "config")
    }

    /// Every key at its documented default, no environment.
    pub fn defaults() -> Settings {
        let mut r = Reader::default();
        build(&Map::new(), &|_| None, &mut r)
    }

    /// The mode actually run: `Local` unless `pool_server.enable`, then `pool_server.mode`.
    pub fn mode(&self) -> Mode {
        if self.pool_server.enable {
            self.pool_server.mode
        } else {
            Mode::Local
        }
    }

    /// The directory accounts live in: `pool_server.data_dir` in server mode when set, else
    /// `data_dir`. The one rule used everywhere (reference defect 21).
    pub fn accounts_dir(&self) -> &Path {
        match (&self.pool_server.data_dir, self.mode()) {
            (Some(dir), Mode::Server) => dir,
            _ => &self.data_dir,
        }
    }
}

fn from_text(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    label: &str,
) -> Result<LoadedConfig, ConfigErrors> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: label.to_owned(),
            message: format!("invalid JSON: {e}"),
        }])
    })?;
    let Value::Object(root) = value else {
        return Err(ConfigErrors(vec![ConfigError {
            path: label.to_owned(),
            message: format!(
                "the configuration must be a JSON object ({{ ... }}), found {}",
                describe(&value, false)
            ),
        }]));
    };
    let mut r = Reader::default();
    let settings = build(&root, env, &mut r);
    if r.errors.is_empty() {
        Ok(LoadedConfig {
            settings,
            warnings: r.warnings,
            source: None,
        })
    } else {
        Err(ConfigErrors(r.errors))
    }
}

/// Collects errors and warnings while the document is walked.
#[derive(Default)]
struct Reader {
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    /// Every key path the walk looked at (known keys), for the documentation test.
    read_keys: Vec<String>,
}

impl Reader {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }
}

/// One JSON object being read. Remembers the keys read so that the rest can be reported as
/// unknown by [`Section::finish`].
struct Section<'a> {
    path: &'static str,
    map: Option<&'a Map<String, Value>>,
    seen: Vec<&'static str>,
}

/// What an integer key accepts.
#[derive(Clone, Copy)]
struct Range {
    min: u64,
    max: u64,
}

const ANY: Range = Range {
    min: 0,
    max: u32::MAX as u64,
};
const AT_LEAST_1: Range = Range {
    min: 1,
    max: u32::MAX as u64,
};

impl<'a> Section<'a> {
    fn root(map: &'a Map<String, Value>) -> Self {
        Section {
            path: "",
            map: Some(map),
            seen: Vec::new(),
        }
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`; `None` when missing or `null` (both mean "default").
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        self.map?.get(key).filter(|v| !v.is_null())
    }

    /// A nested object. Missing, `null` or the wrong type (an error) read as an empty object.
    fn section(&mut self, r: &mut Reader, key: &'static str) -> Section<'a> {
        let map = match self.get(key) {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                r.error(self.key_path(key), expected("an object", other, false));
                None
            }
        };
        Section {
            path: key,
            map,
            seen: Vec::new(),
        }
    }

    /// Warns about every key that was not read.
    fn finish(self, r: &mut Reader) {
        r.read_keys
            .extend(self.seen.iter().map(|k| self.key_path(k)));
        let Some(map) = self.map else { return };
        for key in map.keys() {
            if !self.seen.contains(&key.as_str()) {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                r.warn(format!("unknown key {path} (ignored)"));
            }
        }
    }

    fn bool(&mut self, r: &mut Reader, key: &'static str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                r.error(self.key_path(key), expected("a boolean", other, false));
                default
            }
        }
    }

    fn uint(&mut self, r: &mut Reader, key: &'static str, default: u64, range: Range) -> u64 {
        let Some(v) = self.get(key) else {
            return default;
        };
        let path = self.key_path(key);
        let n = match v {
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u,
                (None, Some(_)) => {
                    r.error(path, format!("must not be negative, found {n}"));
                    return default;
                }
                (None, None) => {
                    r.error(path, format!("expected an integer, found number {n}"));
                    return default;
                }
            },
            other => {
                r.error(path, expected("an integer", other, false));
                return default;
            }
        };
        if n < range.min {
            r.error(path, format!("must be at least {}, found {n}", range.min));
            default
        } else if n > range.max {
            r.error(path, format!("must be at most {}, found {n}", range.max));
            default
        } else {
            n
        }
    }

    fn u32(&mut self, r: &mut Reader, key: &'static str, default: u32, range: Range) -> u32 {
        let range = Range {
            min: range.min,
            max: range.max.min(u64::from(u32::MAX)),
        };
        u32::try_from(self.uint(r, key, u64::from(default), range)).unwrap_or(default)
    }

    fn secs(&mut self, r: &mut Reader, key: &'static str, default: u64, range: Range) -> Duration {
        Duration::from_secs(self.uint(r, key, default, range))
    }

    /// A string; `None` when missing or `null`. `sensitive` keeps the value out of messages.
    fn string(&mut self, r: &mut Reader, key: &'static str, sensitive: bool) -> Option<String> {
        match self.get(key) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                r.error(self.key_path(key), expected("a string", other, sensitive));
                None
            }
        }
    }

    /// A trimmed string, `None` when missing, `null`, empty or blank.
    fn nonblank(&mut self, r: &mut Reader, key: &'static str, sensitive: bool) -> Option<String> {
        self.string(r, key, sensitive)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// A list of strings, each trimmed; blank entries are dropped.
    fn string_list(&mut self, r: &mut Reader, key: &'static str, sensitive: bool) -> Vec<String> {
        let mut out = Vec::new();
        match self.get(key) {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if s.trim().is_empty() => {}
                        Value::String(s) => out.push(s.trim().to_owned()),
                        other => r.error(
                            format!("{}[{i}]", self.key_path(key)),
                            expected("a string", other, sensitive),
                        ),
                    }
                }
            }
            Some(other) => r.error(
                self.key_path(key),
                expected("an array of strings", other, sensitive),
            ),
        }
        out
    }

    fn proxy(&mut self, r: &mut Reader, key: &'static str) -> Option<ProxyUrl> {
        let s = self.nonblank(r, key, true)?;
        match ProxyUrl::parse(&s) {
            Ok(p) => Some(p),
            Err(e) => {
                r.error(self.key_path(key), e);
                None
            }
        }
    }

    /// An `http`/`https` base URL, normalised (see [`parse_base_url`]); blank means `default`.
    fn base_url(
        &mut self,
        r: &mut Reader,
        key: &'static str,
        default: Option<&str>,
    ) -> Option<url::Url> {
        let s = self.nonblank(r, key, false);
        match parse_base_url(s.as_deref().or(default)?) {
            Ok(u) => Some(u),
            Err(e) => {
                r.error(self.key_path(key), e);
                None
            }
        }
    }
}

fn expected(what: &str, found: &Value, sensitive: bool) -> String {
    format!("expected {what}, found {}", describe(found, sensitive))
}

/// `string "yes"`, `number 5`, `an array`, … ; with `sensitive`, no value is shown.
fn describe(v: &Value, sensitive: bool) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(_) if sensitive => "a number".to_owned(),
        Value::Number(n) => format!("number {n}"),
        Value::String(_) if sensitive => "a string".to_owned(),
        Value::String(s) => format!("string {}", quote(s)),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// A JSON-quoted string, shortened to 60 characters.
fn quote(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let short: String = s.chars().take(MAX).collect();
        format!("{short:?}…")
    }
}

/// Parses a listen address: `:PORT` (every IPv4 interface, as in Go), `IP:PORT`, `[IPv6]:PORT`
/// or `localhost:PORT` (127.0.0.1).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let forms = "expected \":PORT\", \"IP:PORT\", \"[IPv6]:PORT\" or \"localhost:PORT\"";
    if s.is_empty() {
        return Err(format!("empty address; {forms}"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "missing ':' before the port; did you mean \":{s}\"?"
        ));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{forms}, found {}", quote(s)));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port {} (expected 0..=65535)", quote(port)))?;
    let ip = if host.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else if host.parse::<IpAddr>().is_ok() {
        // An IPv6 literal without brackets: ambiguous with the port separator.
        return Err(format!(
            "write an IPv6 address in brackets, e.g. \"[::1]:{port}\""
        ));
    } else {
        return Err(format!(
            "host {} is neither an IP address nor localhost; {forms}",
            quote(host)
        ));
    };
    Ok(SocketAddr::new(ip, port))
}

/// Parses an `http`/`https` base URL and normalises it: the path ends in `/` (so
/// `Url::join("relative")` appends), no query or fragment.
fn parse_base_url(s: &str) -> Result<url::Url, String> {
    let mut url = url::Url::parse(s.trim()).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "expected an http or https URL, found scheme \"{}\"",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a base URL takes no query or fragment".to_owned());
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// API keys or tokens: trimmed, blank ones dropped, duplicates removed (first kept).
fn dedup_secrets(values: impl IntoIterator<Item = String>) -> Vec<Secret> {
    let mut out: Vec<Secret> = Vec::new();
    for v in values {
        let v = v.trim();
        if !v.is_empty() && !out.iter().any(|s| s.expose() == v) {
            out.push(Secret::new(v));
        }
    }
    out
}

/// Walks the document. Always returns settings (a bad value falls back to its default); the
/// caller discards them when `r.errors` is not empty.
fn build(
    root: &Map<String, Value>,
    env: &dyn Fn(&str) -> Option<String>,
    r: &mut Reader,
) -> Settings {
    let mut top = Section::root(root);

    let listen_addr = match top.nonblank(r, "listen_addr", false) {
        None => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
        Some(s) => parse_listen_addr(&s).unwrap_or_else(|e| {
            r.error("listen_addr", e);
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT)
        }),
    };
    let data_dir = PathBuf::from(
        top.nonblank(r, "data_dir", false)
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
    );
    let default_config = top.nonblank(r, "default_config", false).unwrap_or_default();
    let debug = top.bool(r, "debug", false);
    let proxy = top.proxy(r, "proxy");
    let proxy_subscribe = top.nonblank(r, "proxy_subscribe", true);
    if proxy_subscribe.is_some() {
        r.warn(
            "proxy_subscribe (legacy) has no effect yet; list subscription URLs in \
             proxy_pool.subscribes instead",
        );
    }
    let note = top.string_list(r, "note", false);
    let api_keys = top.string_list(r, "api_keys", true);
    let admin_keys = top.string_list(r, "admin_keys", true);
    let allow_unauthenticated = top.bool(r, "allow_unauthenticated", false);

    let pool = read_pool(&mut top, r);
    let pool_server = read_pool_server(&mut top, r);
    let proxy_pool = read_proxy_pool(&mut top, r);
    let flow = read_flow(&mut top, r);
    let gemini_business = read_gemini_business(&mut top, r);
    let http = read_http(&mut top, r);
    let media = read_media(&mut top, r);
    top.finish(r);

    let mut settings = Settings {
        listen_addr,
        data_dir,
        default_config,
        debug,
        proxy,
        proxy_subscribe,
        note,
        api_keys: dedup_secrets(api_keys),
        admin_keys: dedup_secrets(admin_keys),
        allow_unauthenticated,
        pool,
        pool_server,
        proxy_pool,
        flow,
        gemini_business,
        http,
        media,
    };
    apply_env(&mut settings, env, r);
    cross_checks(&mut settings, r);
    settings
}

fn read_pool(top: &mut Section<'_>, r: &mut Reader) -> PoolSettings {
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
        browser_refresh_headless: s.bool(r, "browser_refresh_headless", false),
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
        failover_deadline: s.secs(r, "failover_deadline_sec", 180, AT_LEAST_1),
    };
    s.finish(r);
    pool
}

fn read_pool_server(top: &mut Section<'_>, r: &mut Reader) -> PoolServerSettings {
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
    }
}

fn read_proxy_pool(top: &mut Section<'_>, r: &mut Reader) -> ProxyPoolSettings {
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
    let pool = ProxyPoolSettings {
        proxy,
        subscribes,
        files,
        health_check: s.bool(r, "health_check", false),
        check_on_startup: s.bool(r, "check_on_startup", false),
    };
    s.finish(r);
    pool
}

fn read_flow(top: &mut Section<'_>, r: &mut Reader) -> FlowSettings {
    let mut s = top.section(r, "flow");
    let flow = FlowSettings {
        enable: s.bool(r, "enable", false),
        tokens: dedup_secrets(s.string_list(r, "tokens", true)),
        proxy: s.proxy(r, "proxy"),
        timeout: s.secs(r, "timeout", 120, AT_LEAST_1),
        poll_interval: s.secs(r, "poll_interval", 3, AT_LEAST_1),
        max_poll_attempts: s.u32(r, "max_poll_attempts", 500, AT_LEAST_1),
    };
    s.finish(r);
    flow
}

fn read_gemini_business(top: &mut Section<'_>, r: &mut Reader) -> GeminiBusinessSettings {
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
        language_code,
        time_zone,
    }
}

fn read_http(top: &mut Section<'_>, r: &mut Reader) -> HttpSettings {
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
    s.finish(r);
    HttpSettings {
        workers,
        stream_keepalive,
        max_request_body_bytes,
        shutdown_timeout,
        nonstream_keepalive_after,
    }
}

fn read_media(top: &mut Section<'_>, r: &mut Reader) -> MediaSettings {
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

/// Environment overrides, applied after the file. A variable set to the empty string counts as
/// unset (as in the reference, which tested `!= ""`).
fn apply_env(settings: &mut Settings, env: &dyn Fn(&str) -> Option<String>, r: &mut Reader) {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());

    if let Some(v) = var("LISTEN_ADDR") {
        match parse_listen_addr(&v) {
            Ok(addr) => settings.listen_addr = addr,
            Err(e) => r.error("env LISTEN_ADDR", e),
        }
    }
    if let Some(v) = var("DATA_DIR") {
        settings.data_dir = PathBuf::from(v.trim());
    }
    if let Some(v) = var("PROXY") {
        match ProxyUrl::parse(&v) {
            Ok(p) => settings.proxy = Some(p),
            Err(e) => r.error("env PROXY", e),
        }
    }
    if let Some(v) = var("CONFIG_ID") {
        settings.default_config = v.trim().to_owned();
    }
    if let Some(v) = var("API_KEYS") {
        settings.api_keys = dedup_secrets(v.split(',').map(str::to_owned));
    }
    if let Some(v) = var("ADMIN_KEYS") {
        settings.admin_keys = dedup_secrets(v.split(',').map(str::to_owned));
    }
    if let Some(v) = var("ADMIN_KEY") {
        let mut keys: Vec<String> = settings
            .admin_keys
            .iter()
            .map(|k| k.expose().to_owned())
            .collect();
        keys.push(v);
        settings.admin_keys = dedup_secrets(keys);
    }
    if let Some(v) = var("API_KEY") {
        let mut keys: Vec<String> = settings
            .api_keys
            .iter()
            .map(|k| k.expose().to_owned())
            .collect();
        keys.push(v);
        settings.api_keys = dedup_secrets(keys);
    }
}

/// Rules that involve more than one key (after the environment is applied), and foot-gun
/// warnings.
fn cross_checks(settings: &mut Settings, r: &mut Reader) {
    let ps = &settings.pool_server;
    if ps.enable && matches!(ps.mode, Mode::Server | Mode::Client) {
        let mode = ps.mode.as_str();
        if ps.secret.expose().trim().is_empty() {
            r.error(
                "pool_server.secret",
                format!(
                    "required when pool_server.enable is true and mode is \"{mode}\": without \
                     it anyone could connect as a worker and receive account credentials"
                ),
            );
        } else if ps.secret.expose().chars().count() < MIN_SECRET_LEN {
            r.warn(format!(
                "pool_server.secret is shorter than {MIN_SECRET_LEN} characters; use a long \
                 random value"
            ));
        }
    }
    if ps.enable && ps.mode == Mode::Client && ps.server_addr.is_none() {
        r.error(
            "pool_server.server_addr",
            "required when pool_server.enable is true and mode is \"client\" (the server's base \
             URL, e.g. http://host:8000)",
        );
    }
    if !ps.enable && ps.mode != Mode::Local {
        r.warn(format!(
            "pool_server.mode is \"{}\" but pool_server.enable is false: running in local mode",
            ps.mode.as_str()
        ));
    }
    if ps.enable
        && ps.mode == Mode::Server
        && ps.expired_action == ExpiredAction::Delete
        && !settings.pool.auto_delete_401
    {
        r.warn(
            "pool_server.expired_action is \"delete\" but pool.auto_delete_401 is false: \
             unlike the reference, business2api does not switch auto_delete_401 on by itself",
        );
    }

    let pool = &mut settings.pool;
    if pool.enable_browser_refresh && pool.browser_refresh_max_retry == 0 {
        pool.enable_browser_refresh = false;
        r.warn(
            "pool.enable_browser_refresh is true but pool.browser_refresh_max_retry is 0: \
             browser refresh is off",
        );
    }
    if pool.refresh_cooldown.as_secs() > JWT_USABLE_SECS {
        r.warn(format!(
            "pool.refresh_cooldown_sec is {} s, longer than a session JWT is usable (about \
             {JWT_USABLE_SECS} s): accounts may sit with expired JWTs until the cooldown ends",
            pool.refresh_cooldown.as_secs()
        ));
    }

    if settings
        .api_keys
        .iter()
        .any(|k| k.expose() == EXAMPLE_API_KEY)
    {
        r.warn(format!(
            "api_keys contains the placeholder \"{EXAMPLE_API_KEY}\" from config.example.json: \
             anyone who has read the example can use it; replace it"
        ));
    }

    if settings.admin_keys.iter().any(|a| {
        settings.api_keys.iter().any(|k| {
            business2api_shared::secret::constant_time_eq(
                k.expose().as_bytes(),
                a.expose().as_bytes(),
            )
        })
    }) {
        r.error(
            "admin_keys",
            "an admin key is also listed as an API key; admin and API keys must differ (an API \
             key must never grant the admin routes)",
        );
    }

    let mode = settings.mode();
    if mode != Mode::Client && settings.allow_unauthenticated {
        if settings.api_keys.is_empty() {
            r.warn(
                "allow_unauthenticated is true and no API key is configured: the API is open to \
                 anyone who can reach it",
            );
        } else {
            r.warn(
                "allow_unauthenticated has no effect because API keys are configured; the keys \
                 are required",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load(json: &str) -> LoadedConfig {
        Settings::from_json_str(json, &no_env).unwrap()
    }

    fn load_err(json: &str) -> Vec<ConfigError> {
        Settings::from_json_str(json, &no_env).unwrap_err().0
    }

    fn load_env(json: &str, vars: &[(&str, &str)]) -> Result<LoadedConfig, ConfigErrors> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_json_str(json, &move |k| map.get(k).cloned())
    }

    fn paths(errors: &[ConfigError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn defaults_match_the_documentation() {
        let loaded = load("{}");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.source, None);
        let s = loaded.settings;
        assert_eq!(s, Settings::defaults());

        assert_eq!(s.listen_addr, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.default_config, "");
        assert!(!s.debug);
        assert!(s.proxy.is_none());
        assert!(s.proxy_subscribe.is_none());
        assert!(s.note.is_empty());
        assert!(s.api_keys.is_empty());
        assert!(!s.allow_unauthenticated);

        let p = &s.pool;
        assert_eq!(p.target_count, 50);
        assert_eq!(p.min_count, 10);
        assert_eq!(p.check_interval_minutes, 30);
        assert_eq!(p.register_threads, 1);
        assert!(!p.register_headless);
        assert!(
            p.refresh_on_startup,
            "defect 23: a missing bool keeps its default"
        );
        assert_eq!(p.refresh_cooldown, Duration::from_secs(240));
        assert_eq!(p.use_cooldown, Duration::from_secs(15));
        assert_eq!(p.max_fail_count, 3);
        assert!(p.enable_browser_refresh);
        assert!(!p.browser_refresh_headless);
        assert_eq!(p.browser_refresh_max_retry, 1);
        assert!(!p.auto_delete_401);

        let ps = &s.pool_server;
        assert!(!ps.enable);
        assert_eq!(ps.mode, Mode::Local);
        assert!(ps.server_addr.is_none());
        assert!(ps.listen_addr.is_none());
        assert!(ps.secret.is_empty());
        assert_eq!(ps.target_count, 50);
        assert!(ps.data_dir.is_none());
        assert_eq!(ps.client_threads, 1);
        assert_eq!(ps.expired_action, ExpiredAction::Queue);

        let pp = &s.proxy_pool;
        assert!(pp.proxy.is_none() && pp.subscribes.is_empty() && pp.files.is_empty());
        assert!(!pp.health_check && !pp.check_on_startup);

        let f = &s.flow;
        assert!(!f.enable && f.tokens.is_empty() && f.proxy.is_none());
        assert_eq!(f.timeout, Duration::from_secs(120));
        assert_eq!(f.poll_interval, Duration::from_secs(3));
        assert_eq!(f.max_poll_attempts, 500);

        let g = &s.gemini_business;
        assert_eq!(g.auth_base_url.as_str(), "https://business.gemini.google/");
        assert_eq!(
            g.api_base_url.as_str(),
            "https://biz-discoveryengine.googleapis.com/"
        );
        assert_eq!(g.connect_timeout, Duration::from_secs(10));
        assert_eq!(g.request_timeout, Duration::from_secs(30));
        assert_eq!(g.stream_first_byte_timeout, Duration::from_secs(120));
        assert_eq!(g.stream_idle_timeout, Duration::from_secs(120));
        assert_eq!(g.download_timeout, Duration::from_secs(300));
        assert_eq!(g.max_download_bytes, 64 * 1024 * 1024);
        assert_eq!(g.max_attempts, 3);
        assert_eq!(g.language_code, "en-US");
        assert_eq!(g.time_zone, "UTC");

        let h = &s.http;
        assert_eq!(h.workers, None);
        assert_eq!(h.stream_keepalive, Duration::from_millis(10_000));
        assert_eq!(h.max_request_body_bytes, 32 * 1024 * 1024);
        assert_eq!(h.shutdown_timeout, Duration::from_secs(30));

        assert_eq!(s.mode(), Mode::Local);
        assert_eq!(s.accounts_dir(), Path::new("./data"));
    }

    #[test]
    fn nulls_mean_defaults() {
        let s = load(
            r#"{"api_keys": null, "pool": {"refresh_on_startup": null}, "flow": null,
                "listen_addr": null, "data_dir": ""}"#,
        )
        .settings;
        assert_eq!(s, Settings::defaults());
    }

    /// A file as the reference writes it, with every §0.4 key.
    const REFERENCE_FILE: &str = r#"{
      "api_keys": ["sk-one", "sk-two"],
      "listen_addr": ":9000",
      "data_dir": "/srv/b2a/data",
      "default_config": "0f1e2d3c-aaaa-bbbb-cccc-123456789abc",
      "debug": true,
      "proxy": "http://user:pa55@10.0.0.2:3128",
      "proxy_subscribe": "",
      "note": ["hello", "world"],
      "pool": {
        "target_count": 50, "min_count": 10, "check_interval_minutes": 30,
        "register_threads": 1, "register_headless": false, "refresh_on_startup": false,
        "refresh_cooldown_sec": 200, "use_cooldown_sec": 20, "max_fail_count": 5,
        "enable_browser_refresh": true, "browser_refresh_headless": true,
        "browser_refresh_max_retry": 2, "auto_delete_401": true
      },
      "pool_server": {
        "enable": true, "mode": "server", "server_addr": "", "listen_addr": "",
        "secret": "a-long-random-secret-value", "target_count": 50, "data_dir": "/srv/b2a/accounts",
        "client_threads": 2, "expired_action": "refresh"
      },
      "proxy_pool": {
        "proxy": "socks5://127.0.0.1:1080",
        "subscribes": ["https://example.com/sub?token=abc"],
        "files": ["proxies.txt"],
        "health_check": true, "check_on_startup": true
      },
      "flow": {
        "enable": true, "tokens": ["st-token-1", " st-token-1 ", "st-token-2"],
        "proxy": "", "timeout": 60, "poll_interval": 5, "max_poll_attempts": 100
      }
    }"#;

    #[test]
    fn a_full_reference_file_loads() {
        let loaded = load(REFERENCE_FILE);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let s = loaded.settings;
        assert_eq!(s.listen_addr, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(s.data_dir, PathBuf::from("/srv/b2a/data"));
        assert_eq!(s.default_config, "0f1e2d3c-aaaa-bbbb-cccc-123456789abc");
        assert!(s.debug);
        assert_eq!(
            s.proxy.as_ref().unwrap().expose(),
            "http://user:pa55@10.0.0.2:3128/"
        );
        assert_eq!(s.note, ["hello", "world"]);
        let keys: Vec<&str> = s.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["sk-one", "sk-two"]);
        assert!(!s.pool.refresh_on_startup);
        assert_eq!(s.pool.refresh_cooldown, Duration::from_secs(200));
        assert_eq!(s.pool.use_cooldown, Duration::from_secs(20));
        assert_eq!(s.pool.max_fail_count, 5);
        assert!(s.pool.browser_refresh_headless);
        assert_eq!(s.pool.browser_refresh_max_retry, 2);
        assert!(s.pool.auto_delete_401);
        assert_eq!(s.mode(), Mode::Server);
        assert_eq!(s.pool_server.secret.expose(), "a-long-random-secret-value");
        assert_eq!(s.pool_server.client_threads, 2);
        assert_eq!(s.pool_server.expired_action, ExpiredAction::Refresh);
        assert!(s.pool_server.server_addr.is_none() && s.pool_server.listen_addr.is_none());
        assert_eq!(s.accounts_dir(), Path::new("/srv/b2a/accounts"));
        assert_eq!(
            s.proxy_pool.proxy.as_ref().unwrap().expose(),
            "socks5://127.0.0.1:1080"
        );
        assert_eq!(s.proxy_pool.subscribes.len(), 1);
        assert_eq!(s.proxy_pool.files, [PathBuf::from("proxies.txt")]);
        assert!(s.proxy_pool.health_check && s.proxy_pool.check_on_startup);
        assert!(s.flow.enable);
        assert_eq!(s.flow.tokens.len(), 2, "trimmed and de-duplicated");
        assert!(s.flow.proxy.is_none());
        assert_eq!(s.flow.timeout, Duration::from_secs(60));
        assert_eq!(s.flow.poll_interval, Duration::from_secs(5));
        assert_eq!(s.flow.max_poll_attempts, 100);
    }

    #[test]
    fn partial_objects_merge_key_by_key() {
        let s = load(
            r#"{"pool": {"use_cooldown_sec": 0},
                "pool_server": {"enable": true},
                "gemini_business": {"max_attempts": 5},
                "http": {"workers": 4}}"#,
        )
        .settings;
        assert_eq!(s.pool.use_cooldown, Duration::ZERO);
        assert!(s.pool.refresh_on_startup);
        assert!(s.pool.enable_browser_refresh);
        assert_eq!(s.pool.refresh_cooldown, Duration::from_secs(240));
        assert!(s.pool_server.enable);
        assert_eq!(s.pool_server.mode, Mode::Local);
        assert_eq!(s.pool_server.expired_action, ExpiredAction::Queue);
        assert_eq!(s.pool_server.client_threads, 1);
        assert_eq!(s.mode(), Mode::Local);
        assert_eq!(s.gemini_business.max_attempts, 5);
        assert_eq!(s.gemini_business.request_timeout, Duration::from_secs(30));
        assert_eq!(s.http.workers, Some(4));
        assert_eq!(s.http.max_request_body_bytes, 32 * 1024 * 1024);
    }

    #[test]
    fn listen_addr_forms() {
        let ok = |s: &str| parse_listen_addr(s).unwrap().to_string();
        assert_eq!(ok(":8000"), "0.0.0.0:8000");
        assert_eq!(ok(":0"), "0.0.0.0:0");
        assert_eq!(ok("127.0.0.1:9000"), "127.0.0.1:9000");
        assert_eq!(ok("0.0.0.0:80"), "0.0.0.0:80");
        assert_eq!(ok("[::]:8000"), "[::]:8000");
        assert_eq!(ok("[::1]:8000"), "[::1]:8000");
        assert_eq!(ok("localhost:8080"), "127.0.0.1:8080");
        assert_eq!(ok(" LOCALHOST:8080 "), "127.0.0.1:8080");
        for bad in [
            "8000",
            "",
            "example.com:80",
            ":99999",
            ":",
            "localhost",
            "::1:80",
            "1.2.3.4",
        ] {
            assert!(parse_listen_addr(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_listen_addr("8000").unwrap_err().contains("\":8000\""));

        let s = load(r#"{"listen_addr": "localhost:1234"}"#).settings;
        assert_eq!(s.listen_addr, "127.0.0.1:1234".parse().unwrap());
        let e = load_err(r#"{"listen_addr": "my-host:80"}"#);
        assert_eq!(paths(&e), ["listen_addr"]);
    }

    #[test]
    fn every_error_is_collected_at_once() {
        let e = load_err(
            r#"{"debug": "yes",
                "pool": {"use_cooldown_sec": -5, "max_fail_count": 1.5},
                "pool_server": {"mode": "cluster"}}"#,
        );
        assert_eq!(
            paths(&e),
            [
                "debug",
                "pool.use_cooldown_sec",
                "pool.max_fail_count",
                "pool_server.mode"
            ],
            "{e:?}"
        );
        assert_eq!(e[0].message, "expected a boolean, found string \"yes\"");
        assert_eq!(e[1].message, "must not be negative, found -5");
        assert_eq!(e[2].message, "expected an integer, found number 1.5");

        let three = load_err(
            r#"{"listen_addr": 8000, "flow": {"poll_interval": 0},
                "gemini_business": {"api_base_url": "ftp://x"}}"#,
        );
        assert_eq!(
            paths(&three),
            [
                "listen_addr",
                "flow.poll_interval",
                "gemini_business.api_base_url"
            ]
        );
        let text = ConfigErrors(three).to_string();
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.starts_with("listen_addr: expected a string, found number 8000\n"),
            "{text}"
        );
        assert!(
            text.contains("flow.poll_interval: must be at least 1, found 0"),
            "{text}"
        );
    }

    #[test]
    fn type_and_range_errors() {
        let e = load_err(
            r#"{"api_keys": ["ok", 5], "note": "x", "pool": [],
                "gemini_business": {"max_attempts": 11, "language_code": 1},
                "http": {"stream_keepalive_ms": 10, "max_request_body_mb": 0},
                "pool_server": {"expired_action": "drop"}}"#,
        );
        assert_eq!(
            paths(&e),
            [
                "note",
                "api_keys[1]",
                "pool",
                "pool_server.expired_action",
                "gemini_business.max_attempts",
                "gemini_business.language_code",
                "http.stream_keepalive_ms",
                "http.max_request_body_mb",
            ],
            "{e:?}"
        );
        // API keys are secrets: their values never appear in messages.
        assert_eq!(e[1].message, "expected a string, found a number");
        assert_eq!(e[2].message, "expected an object, found an array");
    }

    #[test]
    fn syntax_errors_and_non_objects() {
        let e = load_err("{\n  \"debug\": true,\n}");
        assert_eq!(e.len(), 1);
        assert!(e[0].message.contains("line 3 column 1"), "{}", e[0].message);
        let e = load_err("[1, 2]");
        assert!(
            e[0].message.contains("must be a JSON object"),
            "{}",
            e[0].message
        );
        assert!(load_err("").len() == 1);
        // A UTF-8 byte-order mark is tolerated.
        load("\u{feff}{}");
    }

    #[test]
    fn env_overrides() {
        let file = r#"{"api_keys": ["file-key"], "listen_addr": ":1", "data_dir": "/file"}"#;
        let s = load_env(
            file,
            &[
                ("LISTEN_ADDR", ":8000"),
                ("DATA_DIR", "/app/data"),
                ("PROXY", "socks5h://u:p@proxy:1080"),
                ("CONFIG_ID", "cfg-123"),
                ("API_KEYS", " a , b,,a ,"),
                ("API_KEY", "c"),
            ],
        )
        .unwrap()
        .settings;
        assert_eq!(s.listen_addr, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(s.data_dir, PathBuf::from("/app/data"));
        assert_eq!(s.proxy.unwrap().expose(), "socks5h://u:p@proxy:1080");
        assert_eq!(s.default_config, "cfg-123");
        let keys: Vec<&str> = s.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["a", "b", "c"], "API_KEYS replaces, API_KEY appends");

        // API_KEY alone appends to the file's keys (and a duplicate is dropped).
        let s = load_env(file, &[("API_KEY", " file-key ")])
            .unwrap()
            .settings;
        assert_eq!(s.api_keys.len(), 1);
        let s = load_env(file, &[("API_KEY", "env-key")]).unwrap().settings;
        let keys: Vec<&str> = s.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["file-key", "env-key"]);

        // Empty variables count as unset.
        let s = load_env(file, &[("API_KEYS", ""), ("DATA_DIR", "")])
            .unwrap()
            .settings;
        assert_eq!(s.api_keys.len(), 1);
        assert_eq!(s.data_dir, PathBuf::from("/file"));

        // Every env error is reported, with its variable's name; the proxy is not echoed.
        let e = load_env(
            "{}",
            &[("LISTEN_ADDR", "nope"), ("PROXY", "ftp://u:hunter2@x")],
        )
        .unwrap_err()
        .0;
        assert_eq!(paths(&e), ["env LISTEN_ADDR", "env PROXY"]);
        assert!(!e[1].message.contains("hunter2"));
    }

    #[test]
    fn duplicate_and_blank_api_keys() {
        let s = load(r#"{"api_keys": [" k1 ", "", "k2", "k1", "   "]}"#).settings;
        let keys: Vec<&str> = s.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["k1", "k2"]);
    }

    #[test]
    fn secret_required_in_server_and_client_mode() {
        let e = load_err(r#"{"pool_server": {"enable": true, "mode": "server"}}"#);
        assert_eq!(paths(&e), ["pool_server.secret"]);
        let e = load_err(r#"{"pool_server": {"enable": true, "mode": "server", "secret": "  "}}"#);
        assert_eq!(paths(&e), ["pool_server.secret"]);
        let e = load_err(r#"{"pool_server": {"enable": true, "mode": "client"}}"#);
        assert_eq!(paths(&e), ["pool_server.secret", "pool_server.server_addr"]);

        // Not enabled: no secret needed (local mode), but the mismatch is pointed out.
        let loaded = load(r#"{"pool_server": {"mode": "server"}}"#);
        assert_eq!(loaded.settings.mode(), Mode::Local);
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.contains("enable is false"))
        );

        // A short secret works, with a warning.
        let loaded = load(r#"{"pool_server": {"enable": true, "mode": "server", "secret": "s3"}}"#);
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.contains("shorter than 16"))
        );

        let s = load(
            r#"{"pool_server": {"enable": true, "mode": "client", "secret": "0123456789abcdef",
                "server_addr": "http://10.0.0.1:8000"}}"#,
        )
        .settings;
        assert_eq!(s.mode(), Mode::Client);
        assert_eq!(
            s.pool_server.server_addr.unwrap().as_str(),
            "http://10.0.0.1:8000/"
        );
    }

    #[test]
    fn accounts_dir_rule() {
        let s = load(r#"{"data_dir": "/d", "pool_server": {"data_dir": "/p"}}"#).settings;
        assert_eq!(
            s.accounts_dir(),
            Path::new("/d"),
            "local mode ignores pool_server.data_dir"
        );
        let s = load(
            r#"{"data_dir": "/d", "pool_server": {"enable": true, "mode": "server",
                "secret": "0123456789abcdef", "data_dir": "/p"}}"#,
        )
        .settings;
        assert_eq!(s.accounts_dir(), Path::new("/p"));
        let s = load(
            r#"{"data_dir": "/d", "pool_server": {"enable": true, "mode": "server",
                "secret": "0123456789abcdef", "data_dir": ""}}"#,
        )
        .settings;
        assert_eq!(s.accounts_dir(), Path::new("/d"));
    }

    #[test]
    fn unknown_keys_warn() {
        let loaded = load(r#"{"colour": 1, "pool": {"speed": 2, "use_cooldown_sec": 3}}"#);
        assert_eq!(
            loaded.warnings,
            [
                "unknown key pool.speed (ignored)",
                "unknown key colour (ignored)"
            ]
        );
    }

    #[test]
    fn legacy_keys_warn_only_when_set_to_non_defaults() {
        let loaded = load(
            r#"{"pool": {"register_threads": 4, "target_count": 50, "register_headless": true},
                "pool_server": {"listen_addr": ":9000", "target_count": 7},
                "proxy_subscribe": "https://example.com/sub"}"#,
        );
        let w = loaded.warnings.join("\n");
        assert_eq!(loaded.warnings.len(), 5, "{w}");
        assert!(w.contains("proxy_subscribe (legacy) has no effect yet"));
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
    fn foot_gun_warnings() {
        let loaded = load(r#"{"pool": {"browser_refresh_max_retry": 0}}"#);
        assert!(!loaded.settings.pool.enable_browser_refresh);
        assert_eq!(loaded.warnings.len(), 1);

        let loaded = load(r#"{"pool": {"refresh_cooldown_sec": 600}}"#);
        assert!(loaded.warnings[0].contains("refresh_cooldown_sec"));

        let loaded = load(r#"{"allow_unauthenticated": true}"#);
        assert!(loaded.settings.allow_unauthenticated);
        assert!(loaded.warnings[0].contains("open to anyone"));
        let loaded = load(r#"{"allow_unauthenticated": true, "api_keys": ["k"]}"#);
        assert!(loaded.warnings[0].contains("no effect"));

        let loaded = load(
            r#"{"pool_server": {"enable": true, "mode": "server", "secret": "0123456789abcdef",
                "expired_action": "delete"}}"#,
        );
        assert!(loaded.warnings[0].contains("auto_delete_401"));
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
    fn proxy_url_parse_and_redaction() {
        for ok in [
            "http://proxy:3128",
            "https://proxy:443",
            "socks5://127.0.0.1:1080",
            "socks5h://user:pw@proxy:1080",
            "  http://[::1]:8080  ",
        ] {
            ProxyUrl::parse(ok).unwrap();
        }
        for bad in [
            "",
            "proxy:3128",
            "user:hunter2@proxy:3128",
            "ftp://proxy:21",
            "socks4://proxy:1080",
            "http://",
            "socks5://:1080",
            "http://proxy:3128/?x=1",
        ] {
            let e = ProxyUrl::parse(bad).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
        }

        let p = ProxyUrl::parse("http://alice:s3cr%21t@proxy.example:3128").unwrap();
        assert_eq!(p.redacted(), "http://alice:[redacted]@proxy.example:3128/");
        assert_eq!(
            format!("{p:?}"),
            "ProxyUrl(http://alice:[redacted]@proxy.example:3128/)"
        );
        assert!(p.expose().contains("s3cr%21t"));
        let p = ProxyUrl::parse("socks5://bob:hunter2@10.0.0.1:1080").unwrap();
        assert_eq!(p.redacted(), "socks5://bob:[redacted]@10.0.0.1:1080");
        assert!(!format!("{p:?}").contains("hunter2"));
        let p = ProxyUrl::parse("http://proxy:3128").unwrap();
        assert_eq!(p.redacted(), "http://proxy:3128/");

        // Through settings: Debug of the whole Settings hides proxy passwords and keys.
        let s = load(
            r#"{"proxy": "http://u:topsecret@p:1", "api_keys": ["sk-hidden"],
                "flow": {"tokens": ["tok-hidden"]}}"#,
        )
        .settings;
        let debug = format!("{s:?}");
        for secret in ["topsecret", "sk-hidden", "tok-hidden"] {
            assert!(!debug.contains(secret), "{secret} leaked");
        }
        // The bad value itself never shows up in a proxy error.
        let e = load_err(r#"{"flow": {"proxy": "gopher://u:topsecret@h"}}"#);
        assert_eq!(paths(&e), ["flow.proxy"]);
        assert!(!e[0].message.contains("topsecret"));
    }

    #[test]
    fn load_reads_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("config.json");
        let loaded = Settings::load(&missing, &no_env).unwrap();
        assert_eq!(loaded.source, None);
        assert_eq!(loaded.settings, Settings::defaults());
        assert!(!missing.exists(), "nothing is written");

        std::fs::write(&missing, r#"{"debug": true}"#).unwrap();
        let loaded = Settings::load(&missing, &no_env).unwrap();
        assert_eq!(loaded.source.as_deref(), Some(missing.as_path()));
        assert!(loaded.settings.debug);

        std::fs::write(&missing, "{ nope").unwrap();
        let e = Settings::load(&missing, &no_env).unwrap_err();
        assert_eq!(e.0[0].path, missing.display().to_string());
        assert!(
            e.0[0].message.contains("line 1 column 3"),
            "{}",
            e.0[0].message
        );

        std::fs::write(&missing, [0xff, 0xfe]).unwrap();
        assert!(Settings::load(&missing, &no_env).is_err());

        // A directory is not readable as a file.
        assert!(Settings::load(dir.path(), &no_env).is_err());
    }

    #[test]
    fn the_example_file_loads() {
        let example = include_str!("../../config/config.example.json");
        let loaded = load(example);
        // The one documented warning (config/README.md): the placeholder API key.
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("placeholder \"sk-change-me\""));
        // Every key is present: nothing in the example is unknown, and every section is there.
        let v: Value = serde_json::from_str(example).unwrap();
        for section in [
            "pool",
            "pool_server",
            "proxy_pool",
            "flow",
            "gemini_business",
            "http",
        ] {
            assert!(v[section].is_object(), "{section} missing from the example");
        }
        let d = Settings::defaults();
        let s = loaded.settings;
        assert_eq!(s.pool, d.pool);
        assert_eq!(s.gemini_business, d.gemini_business);
        assert_eq!(s.http, d.http);
        assert_eq!(s.flow.timeout, d.flow.timeout);
    }

    #[test]
    fn the_example_file_lists_every_key() {
        let example: Value =
            serde_json::from_str(include_str!("../../config/config.example.json")).unwrap();
        let mut r = Reader::default();
        build(&Map::new(), &no_env, &mut r);
        assert!(r.read_keys.len() > 60, "{:?}", r.read_keys);
        for path in &r.read_keys {
            let pointer = format!("/{}", path.replace('.', "/"));
            assert!(
                example.pointer(&pointer).is_some(),
                "{path} missing from the example"
            );
        }
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
}
