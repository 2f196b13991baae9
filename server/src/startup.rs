//! [`Application`]: the wiring shared by `main` and the tests. `build` does everything that can
//! fail (data dir, store, account import, API keys, upstream client, binding the port) and
//! returns an application whose `run_until_stopped` only serves.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use tracing_actix_web::TracingLogger;

use crate::auth::{ApiKeyGate, KeySource};
use crate::config::live::LiveConfig;
use crate::config::{Mode, Settings};
use crate::dialects::{self, Dialect, openai};
use crate::error::GatewayError;
use crate::health;
use crate::media::{MediaFetcher, MediaStore};
use crate::pool::import::{ImportReport, Rejected, import_dir};
use crate::pool::{Persistence, Pool, PoolConfig};
use crate::reload::{ConfigSource, Reloader};
use crate::service::ChatService;
use crate::store::{Store, StoreError};
use crate::telemetry::RequestSpan;
use crate::upstream::flow::{self, FlowClient, FlowPool, FlowUpstream};
use crate::upstream::gemini_business::{self, GeminiBusiness, GeminiBusinessClient};
use crate::upstream::{ModelRegistry, RegistryError, Upstream};

/// What the HTTP handlers share.
#[derive(Debug)]
pub struct AppState {
    pub chat: ChatService,
    /// The persistence facade (admin import/export). Blocking: use from `spawn_blocking`.
    pub store: Arc<Store>,
    /// Where new credentials enter: store, then pool (admin import and refresh).
    pub accounts: crate::accounts::AccountsService,
    /// Where account files live.
    pub accounts_dir: std::path::PathBuf,
    /// The mode the process runs (bound at start).
    pub mode: Mode,
    /// The running configuration; the accessors below read it at use.
    pub live: LiveConfig,
    /// Unix time the process started (the `created` of listed models).
    pub started_unix: u64,
    /// Generated media on disk, served under `/media/`.
    pub media: Arc<MediaStore>,
    /// Signs the `thinking` blocks of Anthropic answers (`<data_dir>/thinking-signing.key`).
    pub thinking_signer: dialects::anthropic::ThinkingSigner,
    /// Google Labs Flow (its token pool for the admin API).
    pub flow: FlowUpstream,
    /// The egress proxies and the account pins (`/admin/proxies`).
    pub egress: crate::egress::EgressPool,
    /// This application's metrics (`GET /metrics`).
    pub metrics: crate::metrics::Metrics,
}

impl AppState {
    /// `default_config`, for credentials of imported accounts.
    pub fn default_config(&self) -> String {
        self.live.load().default_config.clone()
    }

    /// `pool.daily_limit_text` (admin status).
    pub fn daily_limit_text(&self) -> u32 {
        self.live.load().pool.daily_limits.text
    }

    /// `note`: lines shown on `GET /`.
    pub fn note(&self) -> Vec<String> {
        self.live.load().note.clone()
    }

    /// `http.stream_keepalive_ms`: interval of keep-alives while the upstream is silent.
    pub fn keepalive(&self) -> Duration {
        self.live.load().http.stream_keepalive
    }

    /// `http.max_request_body_mb` in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.live.load().http.max_request_body_bytes
    }

    /// `media.inline_in_chat`.
    pub fn inline_media_in_chat(&self) -> bool {
        self.live.load().media.inline_in_chat
    }

    /// `http.nonstream_keepalive_after_sec`.
    pub fn nonstream_keepalive_after(&self) -> Duration {
        self.live.load().http.nonstream_keepalive_after
    }
}

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Client mode runs a worker ([`crate::client_mode::run`]), not this application.
    #[error(
        "pool_server.mode \"client\" runs a worker, not the HTTP application \
         (business2api serve starts it)"
    )]
    ClientModeIsAWorker,
    #[error("cannot prepare the data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the account pool's thread: {0}")]
    Pool(std::io::Error),
    #[error("cannot build the upstream HTTP client: {0}")]
    HttpClient(String),
    #[error("cannot set up the media fetcher: {0}")]
    MediaFetcher(String),
    #[error("cannot register the models: {0}")]
    Registry(#[from] RegistryError),
    /// An admin key equals the generated API key (the message names the file, not the key).
    #[error("{0}")]
    AdminKeyIsApiKey(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What start-up found, for the operator.
#[derive(Debug, Clone)]
pub struct StartupReport {
    pub keys: KeySource,
    pub import: ImportReport,
    /// Stored accounts that cannot be used, by name, with the reason.
    pub unusable: Vec<Rejected>,
    /// Accounts in rotation.
    pub accounts: usize,
    /// The admin panel's one-time setup token, when no admin password is set: to be shown to
    /// the operator once (never logged).
    pub admin_setup_token: Option<business2api_shared::Secret>,
}

/// The actor topology a mode runs: the three shapes of the one binary, side by side.
///
/// | topology | actors | serves |
/// |---|---|---|
/// | `Local` | `PoolSupervisor` + one `AccountActor` per account + `WorkerHub` (task queue, leases) + one `LocalSession` actor for the in-process worker (browser re-login and probes; no `/ws`) | the HTTP API |
/// | `Server` | `PoolSupervisor` + `AccountActor`s + `WorkerHub` (task queue, leases) + one `WorkerSession` actor per connected worker at `/ws` | the HTTP API and `/ws` |
/// | `Client` | the worker only (`client_mode::run`): connects out to a server, runs its tasks; no pool | nothing |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Local,
    Server,
    Client,
}

impl Topology {
    pub fn of(mode: Mode) -> Topology {
        match mode {
            Mode::Local => Topology::Local,
            Mode::Server => Topology::Server,
            Mode::Client => Topology::Client,
        }
    }

    /// The actors this build starts for the topology (the start-up log says which).
    pub fn actors(self) -> &'static str {
        match self {
            Topology::Local => {
                "pool supervisor + one account actor per account (pool thread) + worker hub \
                 (workers thread) + one in-process worker (no /ws)"
            }
            Topology::Server => {
                "pool supervisor + one account actor per account (pool thread) + worker hub \
                 (workers thread) + one session actor per worker at /ws"
            }
            Topology::Client => "the worker: a WebSocket client of the server, no pool",
        }
    }
}

/// An upstream added to the registry besides the ones the configuration enables (tests, and
/// embedders of the library): it serves `models` from the account pool.
#[derive(Debug, Clone)]
pub struct ExtraUpstream {
    pub upstream: Arc<dyn Upstream>,
    pub models: Vec<crate::domain::ModelSpec>,
}

/// A built, bound, not yet running gateway.
/// How long `run_until_stopped` waits for the store to be closed after everything stopped.
const STORE_CLOSE_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Application {
    address: SocketAddr,
    server: Server,
    /// The `metrics.listen_addr` listener (its bound address and server), when configured.
    metrics_server: Option<(SocketAddr, Server)>,
    report: StartupReport,
    pool: Pool,
    /// The configuration file watcher, when one runs.
    watcher: Option<tokio::task::JoinHandle<()>>,
    /// The watch of `<data_dir>/at/` (Flow token files), when Flow is enabled.
    flow_watcher: Option<flow::pool::AtWatcher>,
    /// The async video jobs, stopped (left to resume) at shutdown.
    videos: Option<crate::videos::VideoJobs>,
    /// The task hub (and local mode's in-process worker, drained at the end).
    workers: crate::workers::Workers,
    /// The store, watched at the end: `run_until_stopped` returns once every holder let go,
    /// so the database file is closed (a restart in the same process can open it).
    store: std::sync::Weak<Store>,
    /// How long in-flight requests get once SIGINT or SIGTERM arrives.
    shutdown_timeout: Duration,
    /// The usage statistics and named keys: their last changes are written at shutdown.
    usage: web::Data<crate::usage::Usage>,
}

pub(crate) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(path)
}

/// Installs rustls' ring provider as the process default (reqwest is built without one).
pub fn install_crypto_provider() {
    // An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    Dialect::of(&req).error_response(&GatewayError::NotFound)
}

impl Application {
    /// Prepares everything and binds the listening socket (port 0 picks a free port). Without a
    /// configuration source, `POST /admin/reload-config` answers 409 and nothing is watched.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        Self::build_full(settings, None, Vec::new()).await
    }

    /// [`Application::build`], remembering where `settings` came from: the file and the
    /// environment are read again by `POST /admin/reload-config`, and with `source.watch` the
    /// file is watched and reloaded when it changes.
    pub async fn build_with_source(
        settings: Settings,
        source: Option<ConfigSource>,
    ) -> Result<Application, StartupError> {
        Self::build_full(settings, source, Vec::new()).await
    }

    /// [`Application::build`], with `extra` upstreams registered next to the configured ones.
    pub async fn build_with(
        settings: Settings,
        extra: Vec<ExtraUpstream>,
    ) -> Result<Application, StartupError> {
        Self::build_full(settings, None, extra).await
    }

    /// Everything: a configuration source to reload from (if any) and extra upstreams.
    pub async fn build_full(
        settings: Settings,
        source: Option<ConfigSource>,
        extra: Vec<ExtraUpstream>,
    ) -> Result<Application, StartupError> {
        Self::build_custom(settings, source, extra, None).await
    }

    /// [`Application::build_full`], with local mode's in-process worker re-logging accounts with
    /// `relogin_runner` instead of Chromium (tests script re-logins with it); probes always run
    /// with the gateway's own token fetch.
    pub async fn build_custom(
        settings: Settings,
        source: Option<ConfigSource>,
        extra: Vec<ExtraUpstream>,
        relogin_runner: Option<Arc<dyn business2api_worker::TaskRunner>>,
    ) -> Result<Application, StartupError> {
        install_crypto_provider();
        let mode = settings.mode();
        let topology = Topology::of(mode);
        match topology {
            // API + the account pool's actors + the worker hub: `Server` takes remote workers at
            // `/ws`, `Local` runs one in-process worker (`crate::workers::Workers::start`).
            Topology::Local | Topology::Server => {}
            // The worker only, no API and no pool: `client_mode::run`, not this application.
            Topology::Client => return Err(StartupError::ClientModeIsAWorker),
        }
        tracing::info!(
            mode = mode.as_str(),
            actors = topology.actors(),
            "building the topology"
        );
        let data_dir = settings.data_dir.clone();
        let accounts_dir = settings.accounts_dir().to_path_buf();
        for dir in [&data_dir, &accounts_dir] {
            create_private_dir(dir).map_err(|source| StartupError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
        }

        // Start-up I/O is blocking and runs once, before serving; keep it off the runtime.
        let (store, import) = {
            let data_dir = data_dir.clone();
            let accounts_dir = accounts_dir.clone();
            tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
                let store = Store::open(&data_dir)?;
                let import = import_dir(&accounts_dir, &store)?;
                Ok((store, import))
            })
            .await
            .map_err(|e| StoreError::Corrupt(format!("start-up task failed: {e}")))??
        };
        for rejected in &import.rejected {
            tracing::warn!(file = %crate::telemetry::untrusted(&rejected.name), reason = %crate::telemetry::untrusted(&rejected.reason), "account file not imported");
        }

        // The pool's first members: the stored accounts with their persisted state.
        let (accounts, unusable) =
            crate::accounts::service::load(&store, &settings.default_config)?;
        for u in &unusable {
            tracing::warn!(account = %crate::telemetry::untrusted(&u.name), reason = %crate::telemetry::untrusted(&u.reason), "account cannot be used");
        }
        let store = Arc::new(store);
        let store_watch = Arc::downgrade(&store);

        for warning in crate::reload::unimplemented_warnings(&settings) {
            tracing::warn!("config: {warning}");
        }
        let live = LiveConfig::new(settings.clone());
        let (keys, key_source) =
            ApiKeyGate::start(live.clone(), &data_dir).map_err(|source| StartupError::DataDir {
                path: data_dir.display().to_string(),
                source,
            })?;
        if let Some(conflict) = keys.admin_key_conflict(
            &settings.api_keys,
            settings.allow_unauthenticated,
            &settings.admin_keys,
        ) {
            return Err(StartupError::AdminKeyIsApiKey(conflict));
        }
        if matches!(key_source, KeySource::Unauthenticated) {
            tracing::warn!(
                "allow_unauthenticated is set and no API key is configured: the API is open to anyone who can reach it"
            );
        }

        // The egress proxies: every account leaves through its own pinned proxy (`proxy`,
        // `proxy_pool`, an account's own `proxy`); the client's direct route is used only
        // when none is configured.
        let egress = crate::egress::EgressPool::start(
            &settings,
            GeminiBusinessClient::recipe(&settings.gemini_business),
            Some(Arc::clone(&store)),
        )
        .await;
        // One registry per application (the tests run several in one process).
        let metrics = crate::metrics::Metrics::new();
        let upstream = GeminiBusinessClient::new(&settings.gemini_business, None)
            .map_err(|e| StartupError::HttpClient(e.to_string()))?
            .with_metrics(metrics.clone());
        let fetcher = MediaFetcher::new(&settings.media).map_err(StartupError::MediaFetcher)?;
        let client = Arc::new(
            upstream
                .with_media_fetcher(Arc::new(fetcher))
                .with_live(live.clone()),
        );
        let account_count = accounts.iter().filter(|a| a.credentials.is_ok()).count();
        let authenticator_for_tasks =
            Arc::clone(&client) as Arc<dyn crate::upstream::Authenticator>;
        // The account pool: Gemini Business accounts, whose tokens its client mints.
        let pool = Pool::start(
            PoolConfig::from_settings(&settings),
            accounts,
            Arc::clone(&client) as Arc<dyn crate::upstream::Authenticator>,
            egress.clone(),
            Some(Persistence {
                store: Arc::clone(&store),
                accounts_dir: accounts_dir.clone(),
            }),
        )
        .map_err(StartupError::Pool)?;
        let upstream_for_reload = Arc::clone(&client);
        // The model registry: every upstream, its models and the pool it draws from.
        let mut registry = ModelRegistry::new();
        registry.register(
            Arc::new(GeminiBusiness::new(client)),
            pool.clone(),
            gemini_business::models::specs(),
            Some(gemini_business::models::listing()),
        )?;
        for e in extra {
            registry.register(e.upstream, pool.clone(), e.models, None)?;
        }
        // Google Labs Flow: its own token pool; its models answer a clear 400 when disabled.
        let (flow, flow_watcher) = start_flow(&settings, &data_dir, &store, &metrics)?;
        registry.register_own(Arc::new(flow.clone()), flow::models::specs())?;
        let registry = Arc::new(registry);
        let chat = ChatService::new(Arc::clone(&registry), pool.clone(), live.clone());
        let media = {
            let dir = data_dir.clone();
            let media_settings = settings.media.clone();
            tokio::task::spawn_blocking(move || MediaStore::open(&dir, &media_settings))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|opened| opened)
                .map_err(|source| StartupError::DataDir {
                    path: data_dir.join("media").display().to_string(),
                    source,
                })?
        };
        let media = Arc::new(media);
        // The async video jobs (`/v1/videos`), resumed where a previous run left them.
        let videos = settings.flow.enable.then(|| {
            crate::videos::VideoJobs::new(
                Arc::clone(&store),
                Arc::new(flow.clone()),
                Arc::clone(&media),
                Arc::clone(&registry),
            )
        });
        if let Some(v) = &videos {
            match v.resume_unfinished().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "unfinished video jobs resumed"),
                Err(e) => tracing::warn!(error = %e, "the unfinished video jobs could not be read"),
            }
        }
        let videos_data = videos.clone().map(web::Data::new);
        MediaStore::spawn_janitor(&media, crate::media::store::JANITOR_INTERVAL);
        let media_data = web::Data::from(Arc::clone(&media));
        let thinking_signer = dialects::anthropic::ThinkingSigner::load_or_create(&data_dir)
            .map_err(|source| StartupError::DataDir {
                path: data_dir
                    .join(dialects::anthropic::signature::KEY_FILE)
                    .display()
                    .to_string(),
                source,
            })?;
        // The admin panel's login: its setup token when no password is set yet.
        let (panel_auth, admin_setup_token) = {
            let dir = data_dir.clone();
            tokio::task::spawn_blocking(move || crate::admin::panel::PanelAuth::start(dir))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|started| started)
                .map_err(|source| StartupError::DataDir {
                    path: crate::admin::panel::password::path(&data_dir)
                        .display()
                        .to_string(),
                    source,
                })?
        };
        let panel_auth = web::Data::new(panel_auth);
        for warning in crate::auth::tighten_secret_files(&data_dir) {
            tracing::warn!("{warning}");
        }
        let accounts_service =
            crate::accounts::AccountsService::new(Arc::clone(&store), pool.clone(), egress.clone());
        // The task hub (queue, leases, worker sessions): remote workers on /ws in server mode,
        // one in-process worker in local mode.
        let relogin = relogin_runner.unwrap_or_else(|| crate::workers::relogin_runner(&settings));
        let runner = crate::workers::local_runner(relogin, authenticator_for_tasks.clone());
        let workers = crate::workers::Workers::start(
            &settings,
            accounts_service.clone(),
            live.clone(),
            runner,
        )
        .map_err(StartupError::Pool)?;
        workers.take_relogins_from(&pool).await;
        let workers_handle = workers.clone();
        let workers_data = web::Data::new(workers);
        let state = web::Data::new(AppState {
            chat,
            accounts: accounts_service,
            store,
            accounts_dir: accounts_dir.clone(),
            mode,
            live: live.clone(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            media,
            thinking_signer,
            flow,
            egress,
            metrics,
        });
        let usage = {
            let store = Arc::clone(&state.store);
            let live = live.clone();
            let started_ms = state.started_unix * 1000;
            tokio::task::spawn_blocking(move || {
                crate::usage::Usage::start(&store, live, started_ms)
            })
            .await
            .map_err(|e| StartupError::Store(StoreError::Corrupt(e.to_string())))?
            .map_err(StartupError::Store)?
        };
        let usage_data = web::Data::new(usage);
        let usage_handle = usage_data.clone();
        let reloader = Reloader::new(
            live.clone(),
            source.clone(),
            keys.clone(),
            pool.clone(),
            Arc::clone(&upstream_for_reload),
            state.flow.pool().cloned(),
        );
        let keys = web::Data::new(keys);
        let body_budget = web::Data::new(crate::body::BodyBudget::new(
            settings.http.inflight_body_bytes,
        ));
        let live_data = web::Data::new(live);
        let reloader_data = web::Data::new(reloader.clone());

        if settings.media.public_base_url.is_none() {
            tracing::warn!(
                "media.public_base_url is not set: links to generated media follow each request's \
                 Host header (validated; forwarding headers only from http.trusted_proxies), else \
                 the listening address, else they are relative; set media.public_base_url to the \
                 gateway's public address"
            );
        }
        let listener =
            TcpListener::bind(settings.listen_addr).map_err(|source| StartupError::Bind {
                addr: settings.listen_addr,
                source,
            })?;
        let address = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: settings.listen_addr,
            source,
        })?;
        let metrics_data = (state.clone(), workers_data.clone());
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(keys.clone())
                .app_data(live_data.clone())
                .app_data(reloader_data.clone())
                .app_data(media_data.clone())
                .app_data(body_budget.clone())
                .app_data(workers_data.clone())
                .app_data(usage_data.clone())
                .app_data(panel_auth.clone())
                .configure(|cfg| {
                    if let Some(v) = &videos_data {
                        cfg.app_data(v.clone());
                    }
                })
                // Head limits first (inside the request span, so refusals are logged too).
                .wrap(from_fn(crate::head_limits::enforce))
                .wrap(TracingLogger::<RequestSpan>::new())
                .route("/", web::get().to(health::root))
                .route("/health", web::get().to(health::health))
                .configure(|cfg| {
                    if workers_data.enabled() {
                        cfg.route("/ws", web::get().to(crate::workers::endpoint));
                    }
                })
                .route("/media/{name}", web::get().to(crate::media::store::serve))
                .route("/media/{name}", web::head().to(crate::media::store::serve))
                .service(
                    web::resource("/metrics")
                        .wrap(from_fn(crate::admin::require_admin_key))
                        .route(web::get().to(crate::metrics::endpoint)),
                )
                .service(
                    web::scope("/v1")
                        .wrap(from_fn(crate::body::guard_body))
                        .wrap(from_fn(dialects::require_api_key))
                        .wrap(from_fn(crate::metrics::count))
                        .wrap(from_fn(crate::usage::track))
                        .configure(openai::routes)
                        .configure(dialects::anthropic::routes)
                        .route("/models", web::get().to(dialects::list_models))
                        .route("/models/{model}", web::get().to(dialects::get_model))
                        .route(
                            "/models/{action:.*}",
                            web::post().to(dialects::gemini::action),
                        ),
                )
                .service(
                    web::scope("/v1beta")
                        .wrap(from_fn(crate::body::guard_body))
                        .wrap(from_fn(dialects::require_api_key))
                        .wrap(from_fn(crate::metrics::count))
                        .wrap(from_fn(crate::usage::track))
                        .configure(dialects::gemini::routes_v1beta),
                )
                .service(
                    web::scope("/admin")
                        .wrap(from_fn(crate::body::guard_body))
                        .wrap(from_fn(crate::admin::require_admin_key))
                        .configure(crate::admin::routes),
                )
                .default_service(web::to(not_found))
        })
        .shutdown_timeout(settings.http.shutdown_timeout.as_secs())
        // SIGINT and SIGTERM are handled by `run_until_stopped`, alike (actix would stop at once
        // on SIGINT).
        .disable_signals()
        // A client that closes its side has gone away: drop its response (and so cancel the
        // upstream call) instead of waiting for the next write to fail.
        .h1_allow_half_closed(false)
        // SSE frames are small and must leave at once; Nagle would hold a frame written while
        // the previous one is unacknowledged for up to a delayed-ACK period (~40 ms on Linux).
        .tcp_nodelay(true)
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: settings.listen_addr,
            source,
        })?;
        if let Some(workers) = settings.http.workers {
            server = server.workers(workers);
        }
        // `metrics.listen_addr`: a second listener that serves only `GET /metrics`, no key.
        let metrics_server = match settings.metrics.listen_addr {
            None => None,
            Some(addr) => Some(metrics_server(addr, metrics_data.0, metrics_data.1)?),
        };
        let server = server.run();
        // Watch only once everything else has succeeded.
        let watcher = match &source {
            Some(s) if s.watch => reloader.watch(),
            _ => None,
        };

        let report = StartupReport {
            keys: key_source,
            import,
            unusable,
            accounts: account_count,
            admin_setup_token,
        };
        Ok(Application {
            address,
            server,
            metrics_server,
            report,
            pool,
            watcher,
            flow_watcher,
            videos,
            workers: workers_handle,
            store: store_watch,
            shutdown_timeout: settings.http.shutdown_timeout,
            usage: usage_handle,
        })
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The bound address of the `metrics.listen_addr` listener, when configured.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|(addr, _)| *addr)
    }

    pub fn report(&self) -> &StartupReport {
        &self.report
    }

    /// A handle to stop the server (gracefully or not).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (SIGINT/SIGTERM drain in-flight requests up to
    /// `http.shutdown_timeout_sec`).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let grace = self.shutdown_timeout;
        let signals = tokio::spawn(async move {
            let Some(first) = shutdown_signal().await else {
                return;
            };
            tracing::info!(
                signal = first,
                grace_secs = grace.as_secs(),
                "shutting down gracefully: requests in flight get up to http.shutdown_timeout_sec \
                 to finish; send the signal again to stop at once"
            );
            let graceful = handle.clone();
            tokio::spawn(async move { graceful.stop(true).await });
            if let Some(second) = shutdown_signal().await {
                tracing::warn!(signal = second, "second signal: stopping at once");
                handle.stop(false).await;
            }
        });
        // The metrics listener serves as long as the API does.
        let metrics = self.metrics_server.map(|(_, server)| {
            let handle = server.handle();
            (handle, tokio::spawn(server))
        });
        let served = self.server.await;
        if let Some((handle, task)) = metrics {
            handle.stop(false).await;
            if let Ok(Err(e)) = task.await {
                tracing::warn!(error = %e, "the metrics listener stopped with an error");
            }
        }
        // Running video jobs stop where they are; the next start resumes them.
        if let Some(videos) = &self.videos {
            videos.shutdown();
        }
        drop(self.videos);
        signals.abort();
        if let Some(watcher) = self.watcher {
            watcher.abort();
        }
        drop(self.flow_watcher);
        // Local mode's in-process worker drains (its running tasks finish, bounded).
        self.workers.shutdown().await;
        // Every request has finished (or the drain timeout passed): write the pool state.
        self.pool.shutdown().await;
        drop(self.pool);
        drop(self.workers);
        let usage = self.usage;
        if let Err(e) = tokio::task::spawn_blocking(move || usage.flush()).await {
            tracing::warn!(error = %e, "the usage statistics could not be written at shutdown");
        }
        // The HTTP workers, the pool's actors and the hub drop their handles as their threads
        // end; wait (bounded) until the store is closed.
        let closing = std::time::Instant::now();
        while self.store.strong_count() > 0 && closing.elapsed() < STORE_CLOSE_BOUND {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if self.store.strong_count() > 0 {
            tracing::warn!("the store is still open after shutdown");
        }
        tracing::info!("pool state written; stopped");
        served
    }
}

/// The `metrics.listen_addr` server: `GET /metrics` without a key, nothing else (404), one
/// HTTP worker thread.
fn metrics_server(
    addr: SocketAddr,
    state: web::Data<AppState>,
    workers: web::Data<crate::workers::Workers>,
) -> Result<(SocketAddr, Server), StartupError> {
    let bind = |source| StartupError::Bind { addr, source };
    let listener = TcpListener::bind(addr).map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(workers.clone())
            .wrap(TracingLogger::<RequestSpan>::new())
            .route("/metrics", web::get().to(crate::metrics::endpoint))
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)
    .map_err(bind)?
    .run();
    tracing::info!(address = %bound, "serving GET /metrics without a key on metrics.listen_addr");
    Ok((bound, server))
}

/// Flow as the configuration has it: disabled, or its token pool started (configuration
/// tokens, `<data_dir>/at/`, the stored token states) with `<data_dir>/at/` watched.
fn start_flow(
    settings: &Settings,
    data_dir: &Path,
    store: &Arc<Store>,
    metrics: &crate::metrics::Metrics,
) -> Result<(FlowUpstream, Option<flow::pool::AtWatcher>), StartupError> {
    if !settings.flow.enable {
        return Ok((FlowUpstream::disabled(), None));
    }
    // `flow.proxy`, else the gateway's `proxy`: Flow leaves through the egress the operator set
    // for upstream traffic, and never through one from the environment.
    let mut flow_settings = settings.flow.clone();
    if flow_settings.proxy.is_none() {
        flow_settings.proxy = settings.proxy.clone();
    }
    // The proxy URL is not echoed (it may hold a password).
    let client = FlowClient::new(&flow_settings)
        .map(|c| c.with_metrics(metrics.clone()))
        .map_err(|_| {
            StartupError::HttpClient(format!(
                "the Flow proxy is not usable: {}",
                flow_settings
                    .proxy
                    .as_ref()
                    .map_or_else(String::new, |p| p.redacted())
            ))
        })?;
    let pool = FlowPool::start(
        client.clone(),
        &settings.flow.tokens,
        data_dir.join("at"),
        Some(Arc::clone(store)),
    )
    .map_err(StartupError::Pool)?;
    let watcher = pool.watch();
    Ok((FlowUpstream::new(pool, client, &settings.flow), watcher))
}

/// The next SIGINT or SIGTERM, by name; `None` when signals cannot be watched.
async fn shutdown_signal() -> Option<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot watch SIGINT/SIGTERM");
        return None;
    };
    tokio::select! {
        _ = interrupt.recv() => Some("SIGINT"),
        _ = terminate.recv() => Some("SIGTERM"),
    }
}
