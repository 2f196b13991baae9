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
//!
//! # Layout
//! - [`reader`] — the raw-JSON walker (`Reader`, `Section`) and shared small parsers.
//! - [`sections`] — the section types and how each section is read.
//! - [`proxy`] — [`ProxyUrl`].
//! - [`env`] — environment overrides.
//! - [`checks`] — cross-key rules and foot-gun warnings.
//! - [`live`] — [`LiveConfig`](live::LiveConfig), the running configuration behind an atomic swap.
//! - [`reload`] — re-reading the file, what changed, what needs a restart; the file watcher.

mod checks;
mod env;
pub mod live;
mod proxy;
mod reader;
pub mod reload;
mod sections;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use business2api_shared::Secret;
use serde_json::{Map, Value};

pub use proxy::ProxyUrl;
pub use reader::parse_listen_addr;
pub use sections::LimitsSettings;
pub use sections::StatsSettings;
pub use sections::{BrowserSettings, DEFAULT_LOGIN_URL};
pub use sections::{
    DailyLimits, ExpiredAction, FlowSettings, GeminiBusinessSettings, HttpSettings, MediaSettings,
    MetricsSettings, Mode, PoolServerSettings, PoolSettings, ProxyPoolSettings, Selection,
};
pub use sections::{MailboxSettings, OtpSettings};

use reader::{Reader, Section, dedup_secrets, describe, repeated_keys_warning, repeats};

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
    /// Legacy `proxy_subscribe`: one more subscription URL, fetched with `proxy_pool.subscribes`.
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
    pub limits: LimitsSettings,
    /// `stats`: usage statistics.
    pub stats: StatsSettings,
    /// `otp`: where re-login one-time codes come from.
    pub otp: OtpSettings,
    pub browser: BrowserSettings,
    /// `metrics`: the separate listener of `GET /metrics`.
    pub metrics: MetricsSettings,
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
    if let Some(u) = &proxy_subscribe
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        r.error("proxy_subscribe", "expected an http or https URL");
    }
    let note = top.string_list(r, "note", false);
    let api_keys = top.string_list(r, "api_keys", true);
    match repeats(&api_keys) {
        0 => {}
        n => r.warn(repeated_keys_warning("api_keys", n)),
    }
    let admin_keys = top.string_list(r, "admin_keys", true);
    let allow_unauthenticated = top.bool(r, "allow_unauthenticated", false);

    let pool = sections::read_pool(&mut top, r);
    let pool_server = sections::read_pool_server(&mut top, r);
    let proxy_pool = sections::read_proxy_pool(&mut top, r);
    let flow = sections::read_flow(&mut top, r);
    let gemini_business = sections::read_gemini_business(&mut top, r);
    let http = sections::read_http(&mut top, r);
    let media = sections::read_media(&mut top, r);
    let limits = sections::read_limits(&mut top, r);
    let stats = sections::read_stats(&mut top, r);
    let otp = sections::read_otp(&mut top, r);
    let browser = sections::read_browser(&mut top, r);
    let metrics = sections::read_metrics(&mut top, r);
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
        limits,
        stats,
        otp,
        browser,
        metrics,
    };
    env::apply_env(&mut settings, env, r);
    checks::cross_checks(&mut settings, r);
    settings
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::HashMap;

    use super::*;

    pub(crate) fn no_env(_: &str) -> Option<String> {
        None
    }

    pub(crate) fn load(json: &str) -> LoadedConfig {
        Settings::from_json_str(json, &no_env).unwrap()
    }

    pub(crate) fn load_err(json: &str) -> Vec<ConfigError> {
        Settings::from_json_str(json, &no_env).unwrap_err().0
    }

    pub(crate) fn load_env(
        json: &str,
        vars: &[(&str, &str)],
    ) -> Result<LoadedConfig, ConfigErrors> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_json_str(json, &move |k| map.get(k).cloned())
    }

    pub(crate) fn paths(errors: &[ConfigError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::test_support::*;

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
        assert!(
            p.browser_refresh_headless,
            "the re-login browser is headless by default (issue 11)"
        );
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
        // Its keys are short: each draws a warning naming its position, never its value.
        assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
        for (i, w) in loaded.warnings.iter().enumerate() {
            assert!(w.starts_with(&format!("API key #{} (", i + 1)), "{w}");
            assert!(w.contains("shorter than 16") && !w.contains("sk-"), "{w}");
        }
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
        // A value in place of a section is never echoed: it is often a URL with a password.
        let e = load_err(r#"{"proxy_pool": "http://user:hunter2@proxy.example:3128"}"#);
        assert_eq!(paths(&e), ["proxy_pool"]);
        assert!(!e[0].message.contains("hunter2"), "{}", e[0].message);
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
    fn duplicate_and_blank_api_keys() {
        let s = load(r#"{"api_keys": [" k1 ", "", "k2", "k1", "   "]}"#).settings;
        let keys: Vec<&str> = s.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["k1", "k2"]);
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
        let example = include_str!("../../../config/config.example.json");
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
            serde_json::from_str(include_str!("../../../config/config.example.json")).unwrap();
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
}
