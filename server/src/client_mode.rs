//! Client mode (`pool_server.enable = true`, `mode = "client"`): the binary runs a worker and
//! nothing else — no HTTP API, no pool, no store. The worker (`business2api_worker`) dials
//! `pool_server.server_addr` over WebSocket with `pool_server.secret` and runs up to
//! `pool_server.client_threads` tasks at once; SIGTERM or Ctrl-C drains it. Its runner is
//! [`crate::workers::client_runner`]: `relogin` tasks run in Chromium through chromedriver
//! ([`relogin_runner`], the `browser` section), `probe` tasks with a Gemini Business client built
//! from this process's own settings (`gemini_business.*`, `proxy`). `hello` announces both kinds.

use std::sync::Arc;

use business2api_worker::{BrowserConfig, BrowserRunner, TaskRunner, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::startup::install_crypto_provider;

/// Why client mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientModeError {
    #[error("pool_server.server_addr is required in client mode")]
    NoServerAddr,
    #[error("pool_server.server_addr: {0}")]
    ServerAddr(String),
    #[error("cannot start the worker: {0}")]
    Worker(String),
}

/// Runs the worker until SIGTERM or Ctrl-C (then it drains and returns).
pub async fn run(settings: &Settings) -> Result<(), ClientModeError> {
    install_crypto_provider();
    let ps = &settings.pool_server;
    let server_addr = ps
        .server_addr
        .clone()
        .ok_or(ClientModeError::NoServerAddr)?;
    let config = WorkerConfig::new(server_addr, ps.secret.clone(), ps.client_threads)
        .map_err(ClientModeError::ServerAddr)?;
    if u32::from(config.capacity) != ps.client_threads {
        tracing::warn!(
            client_threads = ps.client_threads,
            capacity = config.capacity,
            "pool_server.client_threads is above what the protocol allows; using the maximum"
        );
    }
    let url = config.ws_url().map_err(ClientModeError::ServerAddr)?;
    tracing::info!(
        server = %url,
        worker = %config.worker_id,
        capacity = config.capacity,
        protocol = business2api_worker::PROTOCOL_VERSION,
        headless = settings.pool.browser_refresh_headless,
        webdriver = settings.browser.webdriver_url.as_ref().map_or("chromedriver (started per login)", url::Url::as_str),
        "client mode: running a worker (no HTTP API, no pool) that re-logs accounts in Chromium and probes them"
    );
    let runner = crate::workers::client_runner(settings, relogin_runner(settings))
        .map_err(ClientModeError::Worker)?;
    let shutdown = CancellationToken::new();
    let signals = actix_web::rt::spawn(stop_on_signal(shutdown.clone()));
    let result = business2api_worker::run(config, runner, shutdown).await;
    signals.abort();
    result.map_err(|e| ClientModeError::Worker(e.to_string()))
}

/// The worker's configuration for browser re-login, from the `browser` section and
/// `pool.browser_refresh_headless`; screenshots of failed logins go to `<data_dir>/screenshots`.
pub fn browser_config(settings: &Settings) -> BrowserConfig {
    let b = &settings.browser;
    BrowserConfig {
        login_url: b.login_url.clone(),
        webdriver_url: b.webdriver_url.clone(),
        chromedriver_path: b.chromedriver_path.clone(),
        chromium_path: b.chromium_path.clone(),
        headless: settings.pool.browser_refresh_headless,
        step_timeout: b.step_timeout,
        screenshots_dir: (b.screenshots_keep > 0).then(|| settings.data_dir.join("screenshots")),
        screenshots_keep: usize::try_from(b.screenshots_keep).unwrap_or(usize::MAX),
    }
}

/// The runner that re-logs accounts in Chromium ([`BrowserRunner`]), for client mode and for
/// local mode's in-process worker. On its own it takes `relogin` tasks only (it fails a `probe`
/// as `unsupported`); both modes compose it with a probe runner
/// ([`crate::workers::client_runner`], [`crate::workers::local_runner`]), so their workers take
/// both kinds.
pub fn relogin_runner(settings: &Settings) -> Arc<dyn TaskRunner> {
    Arc::new(BrowserRunner::new(browser_config(settings)))
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C (SIGINT).
async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the worker");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stop requested: draining the worker");
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::path::PathBuf;
    use std::time::Duration;

    use business2api_shared::protocol::TaskKindName;

    use super::*;
    use crate::config::test_support::load;

    #[test]
    fn the_browser_config_follows_the_settings() {
        let s = load(
            r#"{"data_dir": "/srv/b2a", "pool": {"browser_refresh_headless": false},
                "browser": {"login_url": "http://127.0.0.1:4000/login", "step_timeout_sec": 12,
                "chromium_path": "/usr/bin/chromium", "screenshots_keep": 7}}"#,
        )
        .settings;
        let c = browser_config(&s);
        assert_eq!(c.login_url, "http://127.0.0.1:4000/login");
        assert!(!c.headless);
        assert_eq!(c.step_timeout, Duration::from_secs(12));
        assert_eq!(c.chromium_path, Some(PathBuf::from("/usr/bin/chromium")));
        assert_eq!(
            c.screenshots_dir,
            Some(PathBuf::from("/srv/b2a/screenshots"))
        );
        assert_eq!(c.screenshots_keep, 7);

        let none = load(r#"{"browser": {"screenshots_keep": 0}}"#).settings;
        let c = browser_config(&none);
        assert!(c.headless, "headless by default");
        assert_eq!(c.screenshots_dir, None);
        assert_eq!(relogin_runner(&none).kinds(), [TaskKindName::Relogin]);
    }
}
