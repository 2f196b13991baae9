//! Live reload of the configuration: [`Reloader`] re-reads the file the gateway was started
//! from together with the environment the process started with, validates the result in full
//! and, only if it is valid, swaps it in ([`LiveConfig`]) and hands the new pool policy to the
//! pool. Triggers: `POST /admin/reload-config` and a file watcher ([`Reloader::watch`]).
//!
//! Keys that need a restart keep their running value (`config::reload::pin_restart_keys`) and
//! are reported as "changed, applies after a restart". Changed keys are logged by path only;
//! values of secrets never appear (lists of secrets show their count).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::auth::ApiKeyGate;
use crate::config::live::LiveConfig;
use crate::config::reload::{Apply, Change, changes, pin_restart_keys};
use crate::config::{ConfigError, ConfigErrors, Settings};
use crate::media::MediaFetcher;
use crate::pool::{Pool, PoolConfig};
use crate::upstream::gemini_business::GeminiBusinessClient;

/// The watcher reloads once the file's events have stopped for this long, so an editor's
/// several writes (truncate, write, rename) lead to one reload of the final content.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(200);

/// The environment variables the process started with (the loader's overrides apply again on
/// every reload, from this snapshot: a reload never sees a variable changed later).
#[derive(Clone, Default)]
pub struct Environment(Arc<HashMap<String, String>>);

impl Environment {
    /// The process's environment now (variables that are not valid UTF-8 are left out).
    pub fn of_process() -> Environment {
        Environment(Arc::new(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        ))
    }

    /// No variable at all.
    pub fn empty() -> Environment {
        Environment::default()
    }

    /// From explicit pairs (tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Environment {
        Environment(Arc::new(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        ))
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets (API_KEY, PROXY): names only.
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        f.debug_tuple("Environment").field(&names).finish()
    }
}

/// Where the running configuration came from, so that it can be read again.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The configuration file (it may not exist: then every key takes its default, and a file
    /// created later is picked up by the next reload).
    pub path: PathBuf,
    /// The environment the process started with.
    pub env: Environment,
    /// Watch the file and reload when it changes.
    pub watch: bool,
}

/// Why a reload did not apply. In every case nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(
        "the gateway was not started from a configuration file (--config), so there is nothing \
         to reload"
    )]
    NoSource,
    #[error("the configuration has {} error(s); nothing was changed", .0.0.len())]
    Invalid(ConfigErrors),
    #[error("the reload failed: {0}; nothing was changed")]
    Internal(String),
}

impl ReloadError {
    /// The admin API's body: `{"error": ..., "errors": [{"path", "message"}]}`.
    pub fn to_json(&self) -> Value {
        let errors: Vec<Value> = match self {
            ReloadError::Invalid(e) => {
                e.0.iter()
                    .map(|e| json!({ "path": e.path, "message": e.message }))
                    .collect()
            }
            _ => Vec::new(),
        };
        json!({ "error": self.to_string(), "errors": errors })
    }
}

/// What a successful reload did.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    /// Every key whose value in the file (with the environment) differs from the running one.
    pub changes: Vec<Change>,
    /// The loader's warnings and the sections that are parsed but not implemented.
    pub warnings: Vec<String>,
}

impl ReloadReport {
    pub fn to_json(&self) -> Value {
        let paths = |f: &dyn Fn(&Change) -> bool| -> Vec<&str> {
            self.changes
                .iter()
                .filter(|c| f(c))
                .map(|c| c.path)
                .collect()
        };
        let message = if self.changes.is_empty() {
            "configuration reloaded; nothing changed".to_owned()
        } else {
            format!(
                "configuration reloaded; {} key(s) changed",
                self.changes.len()
            )
        };
        json!({
            "message": message,
            "changed": paths(&|_| true),
            "restart_required": paths(&|c| c.apply == Apply::Restart),
            "no_effect": paths(&|c| c.apply == Apply::NoEffect),
            "warnings": self.warnings,
        })
    }
}

/// Everything a reload touches. Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

struct Inner {
    live: LiveConfig,
    source: Option<ConfigSource>,
    keys: ApiKeyGate,
    pool: Pool,
    upstream: Arc<GeminiBusinessClient>,
    /// The Flow token pool, when Flow is enabled (its configuration tokens follow `flow.tokens`).
    flow: Option<crate::upstream::flow::FlowPool>,
    /// One reload at a time (the watcher and the admin API may race).
    lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

/// Warnings for sections that are read but not implemented yet; logged at start and on every
/// reload. (None today: every section of the file is applied.)
pub fn unimplemented_warnings(_s: &Settings) -> Vec<String> {
    Vec::new()
}

impl Reloader {
    pub fn new(
        live: LiveConfig,
        source: Option<ConfigSource>,
        keys: ApiKeyGate,
        pool: Pool,
        upstream: Arc<GeminiBusinessClient>,
        flow: Option<crate::upstream::flow::FlowPool>,
    ) -> Reloader {
        Reloader {
            inner: Arc::new(Inner {
                live,
                source,
                keys,
                pool,
                upstream,
                flow,
                lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Re-reads and applies the configuration. `trigger` names the cause in the log.
    pub async fn reload(&self, trigger: &'static str) -> Result<ReloadReport, ReloadError> {
        let inner = &self.inner;
        let _one_at_a_time = inner.lock.lock().await;
        let source = inner.source.clone().ok_or(ReloadError::NoSource)?;
        let loaded = {
            let (path, env) = (source.path.clone(), source.env.clone());
            tokio::task::spawn_blocking(move || Settings::load(&path, &|name| env.get(name)))
                .await
                .map_err(|e| ReloadError::Internal(format!("the reading task failed: {e}")))?
                .map_err(ReloadError::Invalid)?
        };
        let running = inner.live.load();
        let mut next = loaded.settings;
        let changed = changes(&running, &next);
        pin_restart_keys(&running, &mut next);

        // Everything that can fail runs before the swap.
        if next.api_keys.is_empty() && !next.allow_unauthenticated {
            let keys = inner.keys.clone();
            let allow = next.allow_unauthenticated;
            tokio::task::spawn_blocking(move || keys.prepare(&[], allow))
                .await
                .map_err(|e| ReloadError::Internal(format!("the key task failed: {e}")))?
                .map_err(|e| {
                    ReloadError::Internal(format!(
                        "cannot read or create the generated API key: {e}"
                    ))
                })?;
        }
        // The generated key is checked like a configured API key: no admin key may equal it.
        if let Some(message) = inner.keys.admin_key_conflict(
            &next.api_keys,
            next.allow_unauthenticated,
            &next.admin_keys,
        ) {
            return Err(ReloadError::Invalid(ConfigErrors(vec![ConfigError {
                path: "admin_keys".to_owned(),
                message,
            }])));
        }
        let fetcher = if changed.iter().any(|c| c.path.starts_with("media.fetch_")) {
            Some(Arc::new(MediaFetcher::new(&next.media).map_err(|e| {
                ReloadError::Internal(format!("cannot set up the media fetcher: {e}"))
            })?))
        } else {
            None
        };
        let pool_changed = changed.iter().any(|c| {
            c.apply == Apply::Live
                && (c.path.starts_with("pool.") || c.path == "pool_server.expired_action")
        });
        let mut pool_config = PoolConfig::from_settings(&next);

        inner.live.store(next.clone());
        if let Some(fetcher) = fetcher {
            inner.upstream.set_media_fetcher(fetcher);
        }
        if let Some(flow) = &inner.flow
            && changed.iter().any(|c| c.path == "flow.tokens")
        {
            let applied = flow.reload(&next.flow.tokens).await;
            tracing::info!(
                added = applied.added,
                removed = applied.removed,
                "flow.tokens applied to the Flow token pool"
            );
        }
        if pool_changed {
            // Cooldowns changed at run time (`POST /admin/config/cooldown`) stay unless the
            // file changed that key.
            if let Some((refresh, use_)) = inner.pool.set_cooldowns(None, None).await {
                if running.pool.refresh_cooldown == next.pool.refresh_cooldown {
                    pool_config.refresh_period = refresh;
                }
                if running.pool.use_cooldown == next.pool.use_cooldown {
                    pool_config.selection.use_cooldown = use_;
                }
            }
            inner.pool.reconfigure(pool_config).await;
        }

        let mut warnings = loaded.warnings;
        warnings.extend(unimplemented_warnings(&next));
        // File metadata and chmod: blocking I/O, off the HTTP worker. The key files live in the
        // data dir in force (`data_dir` applies after a restart).
        let data_dir = running.data_dir.clone();
        match tokio::task::spawn_blocking(move || crate::auth::tighten_secret_files(&data_dir))
            .await
        {
            Ok(tightened) => warnings.extend(tightened),
            Err(e) => tracing::error!(error = %e, "the key-file check task failed"),
        }
        for w in &warnings {
            tracing::warn!("config: {w}");
        }
        if changed.is_empty() {
            tracing::info!(trigger, "configuration reloaded; nothing changed");
        }
        for c in &changed {
            tracing::info!(trigger, "config: {c}");
        }
        Ok(ReloadReport {
            changes: changed,
            warnings,
        })
    }

    /// Reloads, logging the outcome (the watcher's path: no one to answer).
    async fn reload_and_log(&self, trigger: &'static str) {
        match self.reload(trigger).await {
            Ok(_) => {}
            Err(ReloadError::Invalid(errors)) => {
                tracing::warn!(
                    trigger,
                    "the configuration file has {} error(s); the running configuration is unchanged",
                    errors.0.len()
                );
                for e in &errors.0 {
                    tracing::warn!(trigger, path = %e.path, "config: {}", e.message);
                }
            }
            Err(e) => tracing::warn!(trigger, "{e}"),
        }
    }

    /// Watches the configuration file (its directory, so that a file created or renamed into
    /// place later is seen) and reloads after its events have stopped for
    /// [`WATCH_DEBOUNCE`]. The watcher lives as long as the returned task; `None` when there is
    /// no file to watch or the watch cannot be set up (logged).
    pub fn watch(&self) -> Option<tokio::task::JoinHandle<()>> {
        let source = self.inner.source.as_ref()?;
        let path = source.path.clone();
        let Some(name) = path.file_name().map(ToOwned::to_owned) else {
            tracing::warn!(config = %path.display(), "cannot watch the configuration: not a file path");
            return None;
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.kind.is_access() {
                return;
            }
            if event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
            {
                // The receiver is gone only when the gateway stops.
                let _ = tx.send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the configuration file; reload with POST /admin/reload-config");
                return None;
            }
        };
        if let Err(e) = notify::Watcher::watch(
            &mut watcher,
            Path::new(&dir),
            notify::RecursiveMode::NonRecursive,
        ) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the configuration directory; reload with POST /admin/reload-config");
            return None;
        }
        tracing::info!(config = %path.display(), "watching the configuration file for changes");
        let reloader = self.clone();
        Some(tokio::spawn(async move {
            // Owned by the task: dropping it stops the watch.
            let _watcher = watcher;
            while rx.recv().await.is_some() {
                // Debounce: wait until the events stop, so the final write is the one read.
                loop {
                    match tokio::time::timeout(WATCH_DEBOUNCE, rx.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                reloader.reload_and_log("file watcher").await;
            }
        }))
    }
}
