//! Rules that involve more than one key, checked after the environment is applied, and the
//! foot-gun warnings.

use super::Settings;
use super::reader::Reader;
use super::sections::{ExpiredAction, Mode};

/// A pool secret shorter than this draws a warning.
const MIN_SECRET_LEN: usize = 16;
/// A session JWT is usable for about this long; a longer refresh cooldown is a foot-gun.
const JWT_USABLE_SECS: u64 = 270;
/// The placeholder key of `config/config.example.json`; a warning fires while it is configured.
const EXAMPLE_API_KEY: &str = "sk-change-me";
/// Rules that involve more than one key (after the environment is applied), and foot-gun
/// warnings.
pub(super) fn cross_checks(settings: &mut Settings, r: &mut Reader) {
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

    let http = &settings.http;
    if http.inflight_body_bytes < http.max_request_body_bytes {
        r.warn(format!(
            "http.inflight_body_mb ({} MiB) is below http.max_request_body_mb ({} MiB): a body \
             of the largest allowed size waits until no other body is in flight",
            http.inflight_body_bytes / (1024 * 1024),
            http.max_request_body_bytes / (1024 * 1024)
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

    short_key_warnings(settings, r);
}

/// A warning for every API or admin key shorter than [`MIN_SECRET_LEN`], naming the key by its
/// position (never by its value). The example file's placeholder has its own warning.
fn short_key_warnings(settings: &Settings, r: &mut Reader) {
    for (list, keys, sources) in [
        (
            "API",
            &settings.api_keys,
            "api_keys in file order, or API_KEYS, then API_KEY",
        ),
        (
            "admin",
            &settings.admin_keys,
            "admin_keys in file order, or ADMIN_KEYS, then ADMIN_KEY",
        ),
    ] {
        for (i, key) in keys.iter().enumerate() {
            if key.expose() != EXAMPLE_API_KEY && key.expose().chars().count() < MIN_SECRET_LEN {
                r.warn(format!(
                    "{list} key #{} ({sources}) is shorter than {MIN_SECRET_LEN} characters; \
                     use a long random value (e.g. `openssl rand -base64 32`)",
                    i + 1
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

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
    fn short_and_repeated_keys_are_pointed_out_without_their_values() {
        let long = "0123456789abcdef";
        let loaded = load_env(
            &format!(
                r#"{{"api_keys": ["{long}", "tiny-api", "{long}", " {long} "],
                    "admin_keys": ["{long}-admin", "x"]}}"#
            ),
            &[("API_KEY", "tiny-api")],
        )
        .unwrap();
        let w = &loaded.warnings;
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].starts_with("api_keys lists the same key more than once (2 repeat(s))"));
        assert!(w[1].starts_with("env API_KEY is already one of the API keys"));
        assert!(w[2].starts_with("API key #2 (") && w[2].contains("shorter than 16"));
        assert!(w[3].starts_with("admin key #2 (") && w[3].contains("shorter than 16"));
        for warning in w {
            assert!(
                !warning.contains("tiny-api") && !warning.contains(long),
                "{warning}"
            );
            assert!(!warning.contains("\"x\""), "{warning}");
        }
        let loaded = load_env(
            &format!(r#"{{"api_keys": ["{long}"]}}"#),
            &[("API_KEYS", "a1b2c3d4e5f6g7h8i9,a1b2c3d4e5f6g7h8i9")],
        )
        .unwrap();
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(
            loaded.warnings[0]
                .starts_with("env API_KEYS lists the same key more than once (1 repeat(s))")
        );
    }

    #[test]
    fn foot_gun_warnings() {
        let loaded = load(r#"{"pool": {"browser_refresh_max_retry": 0}}"#);
        assert!(!loaded.settings.pool.enable_browser_refresh);
        assert_eq!(loaded.warnings.len(), 1);

        let loaded = load(r#"{"pool": {"refresh_cooldown_sec": 600}}"#);
        assert!(loaded.warnings[0].contains("refresh_cooldown_sec"));

        let loaded = load(r#"{"http": {"max_request_body_mb": 64, "inflight_body_mb": 32}}"#);
        assert!(loaded.warnings[0].contains("http.inflight_body_mb (32 MiB)"));
        assert!(
            load(r#"{"http": {"inflight_body_mb": 32}}"#)
                .warnings
                .is_empty()
        );

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
}
