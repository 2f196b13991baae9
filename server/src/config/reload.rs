//! What a configuration reload changes: every key of the file, how it takes effect when it
//! changes ([`Apply`]), the changed keys between two [`Settings`], and the pinning of the keys
//! that need a restart (their running value is kept until the process restarts).
//!
//! The table [`KEYS`] is the one place that says, key by key, what reloads live;
//! `config/README.md` repeats it (a test checks the two agree, and that every key the loader
//! reads is in the table).

use super::Settings;

/// How a changed key takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// The running gateway uses the new value from the next use on (the next request, the next
    /// failure, the next refresh).
    Live,
    /// Bound at start (a socket, a directory, an HTTP client, a thread count …): the running
    /// value stays until the process is restarted.
    Restart,
    /// Parsed but not implemented yet (or a reference knob with no effect): a warning says so.
    NoEffect,
}

impl Apply {
    pub fn as_str(self) -> &'static str {
        match self {
            Apply::Live => "live",
            Apply::Restart => "restart",
            Apply::NoEffect => "no effect",
        }
    }
}

/// One key of the file.
pub struct KeySpec {
    /// The key path as written in the file, e.g. `pool.max_fail_count`.
    pub path: &'static str,
    pub apply: Apply,
    differs: fn(&Settings, &Settings) -> bool,
    /// For [`Apply::Restart`] keys: copy the running value into the next settings.
    pin: fn(&Settings, &mut Settings),
    /// For lists of secrets: how many entries (shown as `(2 → 3 keys)`; never the values).
    count: Option<fn(&Settings) -> usize>,
}

macro_rules! key {
    ($path:literal, Restart, $($field:ident).+) => {
        KeySpec {
            path: $path,
            apply: Apply::Restart,
            differs: |a, b| a.$($field).+ != b.$($field).+,
            pin: |running, next| next.$($field).+ = Clone::clone(&running.$($field).+),
            count: None,
        }
    };
    ($path:literal, $apply:ident, $($field:ident).+) => {
        KeySpec {
            path: $path,
            apply: Apply::$apply,
            differs: |a, b| a.$($field).+ != b.$($field).+,
            pin: |_, _| {},
            count: None,
        }
    };
    ($path:literal, $apply:ident, $($field:ident).+, count) => {
        KeySpec {
            path: $path,
            apply: Apply::$apply,
            differs: |a, b| a.$($field).+ != b.$($field).+,
            pin: |_, _| {},
            count: Some(|s| s.$($field).+.len()),
        }
    };
}

/// Every key of the file and how it reloads. Keep `config/README.md`'s "Reload" column in step.
pub static KEYS: &[KeySpec] = &[
    key!("api_keys", Live, api_keys, count),
    key!("admin_keys", Live, admin_keys, count),
    key!("allow_unauthenticated", Live, allow_unauthenticated),
    key!("listen_addr", Restart, listen_addr),
    key!("data_dir", Restart, data_dir),
    key!("default_config", Live, default_config),
    key!("debug", Restart, debug),
    key!("proxy", Restart, proxy),
    key!("proxy_subscribe", Restart, proxy_subscribe),
    key!("note", Live, note),
    key!("pool.target_count", NoEffect, pool.target_count),
    key!("pool.min_count", NoEffect, pool.min_count),
    key!(
        "pool.check_interval_minutes",
        NoEffect,
        pool.check_interval_minutes
    ),
    key!("pool.register_threads", NoEffect, pool.register_threads),
    key!("pool.register_headless", NoEffect, pool.register_headless),
    key!("pool.refresh_on_startup", Restart, pool.refresh_on_startup),
    key!("pool.refresh_cooldown_sec", Live, pool.refresh_cooldown),
    key!("pool.use_cooldown_sec", Live, pool.use_cooldown),
    key!("pool.max_fail_count", Live, pool.max_fail_count),
    key!(
        "pool.enable_browser_refresh",
        Live,
        pool.enable_browser_refresh
    ),
    key!(
        "pool.browser_refresh_headless",
        Restart,
        pool.browser_refresh_headless
    ),
    key!(
        "pool.browser_refresh_max_retry",
        Live,
        pool.browser_refresh_max_retry
    ),
    key!("pool.auto_delete_401", Live, pool.auto_delete_401),
    key!("pool.selection", Live, pool.selection),
    key!(
        "pool.max_concurrent_per_account",
        Live,
        pool.max_concurrent_per_account
    ),
    key!("pool.daily_limit_text", Live, pool.daily_limits.text),
    key!("pool.daily_limit_image", Live, pool.daily_limits.image),
    key!("pool.daily_limit_video", Live, pool.daily_limits.video),
    key!("pool.max_backoff_sec", Live, pool.max_backoff),
    key!(
        "pool.refresh_concurrency",
        Restart,
        pool.refresh_concurrency
    ),
    key!("pool.quota_reset_utc_hour", Live, pool.quota_reset_utc_hour),
    key!(
        "pool.relogin_retry_interval_sec",
        Live,
        pool.relogin_retry_interval
    ),
    key!("pool.failover_deadline_sec", Live, pool.failover_deadline),
    key!(
        "pool.browser_refresh_backoff_sec",
        Live,
        pool.browser_refresh_backoff
    ),
    key!("pool_server.enable", Restart, pool_server.enable),
    key!("pool_server.mode", Restart, pool_server.mode),
    key!("pool_server.server_addr", Restart, pool_server.server_addr),
    key!("pool_server.listen_addr", NoEffect, pool_server.listen_addr),
    key!("pool_server.secret", Restart, pool_server.secret),
    key!(
        "pool_server.target_count",
        NoEffect,
        pool_server.target_count
    ),
    key!("pool_server.data_dir", Restart, pool_server.data_dir),
    key!(
        "pool_server.client_threads",
        Restart,
        pool_server.client_threads
    ),
    key!(
        "pool_server.expired_action",
        Live,
        pool_server.expired_action
    ),
    key!("pool_server.lease_sec", Restart, pool_server.lease),
    key!(
        "pool_server.heartbeat_interval_sec",
        Restart,
        pool_server.heartbeat_interval
    ),
    key!("proxy_pool.proxy", Restart, proxy_pool.proxy),
    key!("proxy_pool.subscribes", Restart, proxy_pool.subscribes),
    key!("proxy_pool.files", Restart, proxy_pool.files),
    key!("proxy_pool.health_check", Restart, proxy_pool.health_check),
    key!(
        "proxy_pool.check_on_startup",
        Restart,
        proxy_pool.check_on_startup
    ),
    key!("proxy_pool.check_url", Restart, proxy_pool.check_url),
    key!(
        "proxy_pool.check_interval_sec",
        Restart,
        proxy_pool.check_interval
    ),
    key!(
        "proxy_pool.check_timeout_sec",
        Restart,
        proxy_pool.check_timeout
    ),
    key!(
        "proxy_pool.fail_threshold",
        Restart,
        proxy_pool.fail_threshold
    ),
    key!("proxy_pool.quarantine_sec", Restart, proxy_pool.quarantine),
    key!(
        "proxy_pool.subscribe_interval_sec",
        Restart,
        proxy_pool.subscribe_interval
    ),
    key!("proxy_pool.singbox_path", Restart, proxy_pool.singbox_path),
    key!("flow.enable", Restart, flow.enable),
    // Applied at once: the Flow pool's configuration tokens are replaced (`crate::reload`).
    key!("flow.tokens", Live, flow.tokens, count),
    key!("flow.proxy", Restart, flow.proxy),
    key!("flow.timeout", Restart, flow.timeout),
    key!("flow.poll_interval", Restart, flow.poll_interval),
    key!("flow.max_poll_attempts", Restart, flow.max_poll_attempts),
    key!("flow.labs_base_url", Restart, flow.labs_base_url),
    key!("flow.api_base_url", Restart, flow.api_base_url),
    key!(
        "gemini_business.auth_base_url",
        Restart,
        gemini_business.auth_base_url
    ),
    key!(
        "gemini_business.api_base_url",
        Restart,
        gemini_business.api_base_url
    ),
    key!(
        "gemini_business.connect_timeout_sec",
        Restart,
        gemini_business.connect_timeout
    ),
    key!(
        "gemini_business.request_timeout_sec",
        Live,
        gemini_business.request_timeout
    ),
    key!(
        "gemini_business.stream_first_byte_timeout_sec",
        Live,
        gemini_business.stream_first_byte_timeout
    ),
    key!(
        "gemini_business.stream_idle_timeout_sec",
        Live,
        gemini_business.stream_idle_timeout
    ),
    key!(
        "gemini_business.download_timeout_sec",
        Live,
        gemini_business.download_timeout
    ),
    key!(
        "gemini_business.max_download_mb",
        Live,
        gemini_business.max_download_bytes
    ),
    key!(
        "gemini_business.max_attempts",
        Live,
        gemini_business.max_attempts
    ),
    key!(
        "gemini_business.session_prefetch",
        Live,
        gemini_business.session_prefetch
    ),
    key!(
        "gemini_business.session_prefetch_ttl_sec",
        Live,
        gemini_business.session_prefetch_ttl
    ),
    key!(
        "gemini_business.language_code",
        Restart,
        gemini_business.language_code
    ),
    key!(
        "gemini_business.time_zone",
        Restart,
        gemini_business.time_zone
    ),
    key!("http.workers", Restart, http.workers),
    key!("http.stream_keepalive_ms", Live, http.stream_keepalive),
    key!(
        "http.max_request_body_mb",
        Live,
        http.max_request_body_bytes
    ),
    key!("http.shutdown_timeout_sec", Restart, http.shutdown_timeout),
    key!(
        "http.nonstream_keepalive_after_sec",
        Live,
        http.nonstream_keepalive_after
    ),
    key!("http.body_read_timeout_sec", Live, http.body_read_timeout),
    key!("http.inflight_body_mb", Restart, http.inflight_body_bytes),
    key!("http.inflight_wait_ms", Live, http.inflight_wait),
    key!("http.trusted_proxies", Live, http.trusted_proxies),
    key!("media.public_base_url", Restart, media.public_base_url),
    key!("media.inline_in_chat", Live, media.inline_in_chat),
    key!("media.store_max_mb", Restart, media.store_max_bytes),
    key!("media.store_ttl_hours", Restart, media.store_ttl),
    key!("media.fetch_allow", Live, media.fetch_allow),
    key!("media.fetch_max_mb", Live, media.fetch_max_bytes),
    key!("media.fetch_timeout_sec", Live, media.fetch_timeout),
    key!("media.fetch_max_redirects", Live, media.fetch_max_redirects),
    key!("limits.max_messages", Live, limits.max_messages),
    key!("limits.max_parts", Live, limits.max_parts),
    key!("limits.max_attachments", Live, limits.max_attachments),
    key!("limits.max_tools", Live, limits.max_tools),
    key!("limits.max_depth", Live, limits.max_depth),
    key!("stats.max_clients", Restart, stats.max_clients),
    key!("otp.imap", Live, otp.imap),
    key!("otp.accounts", Live, otp.accounts),
    key!("otp.operator_timeout_sec", Live, otp.operator_timeout),
    key!("metrics.listen_addr", Restart, metrics.listen_addr),
    key!("browser.login_url", Restart, browser.login_url),
    key!("browser.webdriver_url", Restart, browser.webdriver_url),
    key!(
        "browser.chromedriver_path",
        Restart,
        browser.chromedriver_path
    ),
    key!("browser.chromium_path", Restart, browser.chromium_path),
    key!("browser.step_timeout_sec", Restart, browser.step_timeout),
    key!(
        "browser.screenshots_keep",
        Restart,
        browser.screenshots_keep
    ),
];

/// One changed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: &'static str,
    pub apply: Apply,
    /// `(2 → 3 keys)` for lists of secrets; never a value.
    pub detail: Option<String>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} changed", self.path)?;
        if let Some(d) = &self.detail {
            write!(f, " {d}")?;
        }
        match self.apply {
            Apply::Live => Ok(()),
            Apply::Restart => f.write_str(", applies after a restart"),
            Apply::NoEffect => f.write_str(", has no effect yet"),
        }
    }
}

/// The keys whose value differs between `running` and `next`, in table order.
pub fn changes(running: &Settings, next: &Settings) -> Vec<Change> {
    KEYS.iter()
        .filter(|k| (k.differs)(running, next))
        .map(|k| Change {
            path: k.path,
            apply: k.apply,
            detail: k.count.map(|count| {
                let (a, b) = (count(running), count(next));
                let unit = if b == 1 { "key" } else { "keys" };
                format!("({a} → {b} {unit})")
            }),
        })
        .collect()
}

/// Keeps the running value of every key that needs a restart: the settings swapped in by a
/// reload change only what can change while running.
pub fn pin_restart_keys(running: &Settings, next: &mut Settings) {
    for k in KEYS.iter().filter(|k| k.apply == Apply::Restart) {
        (k.pin)(running, next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn the_table_names_every_key_the_loader_reads() {
        let mut r = crate::config::reader::Reader::default();
        crate::config::build(&serde_json::Map::new(), &no_env, &mut r);
        let mut read: Vec<&str> = r
            .read_keys
            .iter()
            .map(String::as_str)
            // Sections themselves are not keys.
            .filter(|k| {
                !matches!(
                    *k,
                    "pool"
                        | "pool_server"
                        | "proxy_pool"
                        | "flow"
                        | "gemini_business"
                        | "http"
                        | "media"
                        | "limits"
                        | "stats"
                        | "otp"
                        | "browser"
                        | "metrics"
                )
            })
            .collect();
        read.sort_unstable();
        let mut table: Vec<&str> = KEYS.iter().map(|k| k.path).collect();
        table.sort_unstable();
        assert_eq!(read, table);
    }

    #[test]
    fn changes_name_key_paths_and_count_secrets_without_values() {
        let old = load(r#"{"api_keys": ["a", "b"], "pool": {"max_fail_count": 3}}"#).settings;
        let new = load(
            r#"{"api_keys": ["a", "b", "sk-new-secret"], "pool": {"max_fail_count": 5},
                "listen_addr": ":9999", "flow": {"enable": true}}"#,
        )
        .settings;
        let c = changes(&old, &new);
        let paths: Vec<&str> = c.iter().map(|c| c.path).collect();
        assert_eq!(
            paths,
            [
                "api_keys",
                "listen_addr",
                "pool.max_fail_count",
                "flow.enable"
            ]
        );
        let text: Vec<String> = c.iter().map(ToString::to_string).collect();
        assert_eq!(text[0], "api_keys changed (2 → 3 keys)");
        assert_eq!(text[1], "listen_addr changed, applies after a restart");
        assert_eq!(text[2], "pool.max_fail_count changed");
        assert!(!text.join("\n").contains("sk-new-secret"));
        assert!(changes(&old, &old).is_empty());
    }

    #[test]
    fn restart_keys_keep_their_running_value() {
        let running = load(r#"{"listen_addr": ":1000", "http": {"workers": 2}}"#).settings;
        let mut next = load(
            r#"{"listen_addr": ":2000", "http": {"workers": 4, "stream_keepalive_ms": 500},
                "pool": {"max_backoff_sec": 7}}"#,
        )
        .settings;
        pin_restart_keys(&running, &mut next);
        assert_eq!(next.listen_addr, running.listen_addr);
        assert_eq!(next.http.workers, Some(2));
        assert_eq!(next.http.stream_keepalive.as_millis(), 500);
        assert_eq!(next.pool.max_backoff.as_secs(), 7);
        let left: Vec<&str> = changes(&running, &next).iter().map(|c| c.path).collect();
        assert_eq!(left, ["pool.max_backoff_sec", "http.stream_keepalive_ms"]);
    }

    /// `config/README.md` says for every key whether it reloads live; it must say what the
    /// table says.
    #[test]
    fn the_readme_agrees_with_the_table() {
        let readme = include_str!("../../../config/README.md");
        let mut section = "";
        let mut seen = Vec::new();
        for line in readme.lines() {
            if let Some(h) = line.strip_prefix("## ") {
                section = match h.split_whitespace().next().unwrap_or("") {
                    "`pool`" => "pool",
                    "`pool_server`" => "pool_server",
                    "`proxy_pool`" => "proxy_pool",
                    "`flow`" => "flow",
                    "`gemini_business`" => "gemini_business",
                    "`http`" => "http",
                    "`media`" => "media",
                    "`limits`" => "limits",
                    "`stats`" => "stats",
                    "`otp`" => "otp",
                    "`browser`" => "browser",
                    "`metrics`" => "metrics",
                    "Top" => "",
                    _ => "-",
                };
                continue;
            }
            if section == "-" || !line.starts_with("| `") {
                continue;
            }
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let key = cells[1].trim_matches('`');
            let reload = cells[cells.len() - 2];
            let path = if section.is_empty() {
                key.to_owned()
            } else {
                format!("{section}.{key}")
            };
            let spec = KEYS
                .iter()
                .find(|k| k.path == path)
                .unwrap_or_else(|| panic!("README lists {path}, the table does not"));
            assert_eq!(reload, spec.apply.as_str(), "{path}");
            seen.push(path);
        }
        for k in KEYS {
            assert!(seen.iter().any(|s| s == k.path), "README misses {}", k.path);
        }
    }
}
