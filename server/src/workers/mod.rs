//! Workers: the [`hub::WorkerHub`] actor that owns the task queue and the leases, in server mode
//! the `GET /ws` endpoint with one [`session::WorkerSession`] actor per connected worker, and in
//! local mode one in-process worker ([`business2api_worker::in_process`]) attached to the same
//! hub through a [`local::LocalSession`] actor. Probe tasks run with [`probe::ProbeRunner`].
//! The wire protocol is `business2api_shared::protocol`; ARCHITECTURE.md ("Workers") says how
//! the pieces fit.
//!
//! Authentication happens before the upgrade: `Authorization: Bearer <pool_server.secret>`,
//! compared in constant time. A missing or wrong credential, or any query string (a secret is
//! never accepted in the URL, even next to a valid header), is answered with HTTP 401 and a JSON
//! error that never repeats what was sent.

use std::sync::Arc;

use actix::prelude::*;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use business2api_shared::AccountKey;
use business2api_shared::protocol::{MAX_FRAME_BYTES, ServerTerms, TaskKindName};
use serde_json::json;

use crate::accounts::AccountsService;
use crate::config::live::LiveConfig;
use crate::config::{Mode, Settings};

pub mod hub;
pub mod local;
pub mod probe;
pub mod session;

use business2api_shared::Secret;
use business2api_shared::protocol::{AccountCredentials, WireCookie};
use business2api_worker::{ComposedRunner, TaskRunner, WorkerConfig};
use tokio_util::sync::CancellationToken;

use hub::{DeliverOtp, EnqueueProbe, EnqueueRelogin, ListTasks, ListWorkers, WorkerHub};

/// What the HTTP handlers hold: the hub's address (server and local mode), whether `/ws` runs
/// (server mode), and local mode's in-process worker.
#[derive(Clone)]
pub struct Workers {
    hub: Option<Addr<WorkerHub>>,
    /// Server mode: `GET /ws` takes remote workers.
    endpoint: bool,
    terms: ServerTerms,
    /// Local mode: stops the in-process worker (it drains).
    local: Option<LocalWorker>,
    hub_thread: Option<Arc<HubThread>>,
}

/// Local mode's in-process worker: cancel to drain it; `done` turns true once it stopped.
#[derive(Clone)]
struct LocalWorker {
    shutdown: CancellationToken,
    done: tokio::sync::watch::Receiver<bool>,
    drain_bound: std::time::Duration,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("hub", &self.hub.is_some())
            .field("endpoint", &self.endpoint)
            .field("in_process_worker", &self.local.is_some())
            .finish_non_exhaustive()
    }
}

/// Stops the hub's thread when the last handle goes; [`Workers::shutdown`] stops it and waits.
struct HubThread {
    system: System,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl HubThread {
    /// Stops the hub's actix system and waits for its thread to end, so that everything the
    /// hub holds (the accounts service and its store) is released when this returns.
    async fn stop_and_join(&self) {
        self.system.stop();
        let thread = match self.thread.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for HubThread {
    fn drop(&mut self) {
        self.system.stop();
    }
}

impl Workers {
    /// No hub at all.
    pub fn disabled() -> Workers {
        Workers {
            hub: None,
            endpoint: false,
            terms: ServerTerms::default(),
            local: None,
            hub_thread: None,
        }
    }

    /// Starts the hub on its own thread and actix system. Server mode: remote workers connect to
    /// `GET /ws`. Local mode: no endpoint; one in-process worker running `runner` (capacity
    /// `pool_server.client_threads`) is attached to the hub through a [`local::LocalSession`].
    pub fn start(
        settings: &Settings,
        accounts: AccountsService,
        live: LiveConfig,
        runner: Arc<dyn TaskRunner>,
    ) -> std::io::Result<Workers> {
        let lease = settings.pool_server.lease;
        let terms = ServerTerms {
            heartbeat_interval: settings.pool_server.heartbeat_interval,
            lease,
            kinds: vec![TaskKindName::Relogin, TaskKindName::Probe],
            ..ServerTerms::default()
        };
        let endpoint = runs_endpoint(settings.mode());
        let local = if endpoint {
            None
        } else {
            let config = WorkerConfig::in_process(settings.pool_server.client_threads)
                .map_err(std::io::Error::other)?;
            let (done_tx, done) = tokio::sync::watch::channel(false);
            Some((
                config.clone(),
                done_tx,
                LocalWorker {
                    shutdown: CancellationToken::new(),
                    done,
                    drain_bound: config.drain_timeout,
                },
            ))
        };
        let handle = local.as_ref().map(|(_, _, l)| l.clone());
        let session_terms = terms.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("workers".to_owned())
            .spawn(move || {
                let system = System::new();
                system.block_on(async move {
                    let addr = WorkerHub::new(accounts, live, lease).start();
                    if let Some((config, done_tx, worker)) = local {
                        let (server_end, worker_end) = business2api_worker::in_process::link();
                        local::LocalSession::start(addr.clone(), session_terms, server_end);
                        actix::spawn(async move {
                            business2api_worker::in_process::run(
                                config,
                                runner,
                                worker_end,
                                worker.shutdown,
                            )
                            .await;
                            let _ = done_tx.send(true);
                        });
                    }
                    let _ = tx.send((addr, System::current()));
                });
                if let Err(e) = system.run() {
                    tracing::error!(error = %e, "the worker hub's actix system failed");
                }
            })?;
        let (hub, system) = rx.recv().map_err(|_| {
            std::io::Error::other("the worker hub's thread ended before it started")
        })?;
        Ok(Workers {
            hub: Some(hub),
            endpoint,
            terms,
            local: handle,
            hub_thread: Some(Arc::new(HubThread {
                system,
                thread: std::sync::Mutex::new(Some(thread)),
            })),
        })
    }

    /// Lets the pool's re-login requests queue tasks here, and reports back to the pool every
    /// re-login task that ends without new credentials (the pool owns the budget) and every
    /// probe that found the credentials refused.
    pub async fn take_relogins_from(&self, pool: &crate::pool::Pool) {
        if let Some(hub) = &self.hub {
            let _ = hub
                .send(hub::ReportFailuresTo(pool.relogin_failures()))
                .await;
            let _ = hub.send(hub::ReportProbesTo(pool.probe_rejections())).await;
            pool.send_relogins_to(hub.clone().recipient()).await;
        }
    }

    /// Whether `GET /ws` runs (server mode).
    pub fn enabled(&self) -> bool {
        self.endpoint
    }

    /// Connected workers, queued tasks and leased tasks (`/metrics`); zeros without a hub.
    pub async fn counts(&self) -> (usize, usize, usize) {
        let Some(hub) = &self.hub else {
            return (0, 0, 0);
        };
        let workers = hub.send(ListWorkers).await.map_or(0, |w| w.len());
        let (queued, leased) = hub
            .send(ListTasks)
            .await
            .map_or((0, 0), |t| (t.queued, t.leased));
        (workers, queued, leased)
    }

    /// Stops the hub. Local mode first drains the in-process worker (running tasks finish,
    /// bounded by its drain timeout). Then the hub's thread is stopped and joined, so that a
    /// restart in the same process finds the store released.
    pub async fn shutdown(&self) {
        if let Some(local) = &self.local {
            local.shutdown.cancel();
            let mut done = local.done.clone();
            let bound = local.drain_bound + std::time::Duration::from_secs(3);
            let _ = tokio::time::timeout(bound, done.wait_for(|d| *d)).await;
        }
        if let Some(thread) = &self.hub_thread {
            thread.stop_and_join().await;
        }
    }
}

/// The runner of local mode's in-process worker: re-login by `relogin` (normally
/// [`relogin_runner`]), probes by [`probe::ProbeRunner`] with the gateway's authenticator.
pub fn local_runner(
    relogin: Arc<dyn TaskRunner>,
    authenticator: Arc<dyn crate::upstream::Authenticator>,
) -> Arc<dyn TaskRunner> {
    Arc::new(ComposedRunner::new(
        relogin,
        Arc::new(probe::ProbeRunner::new(authenticator)),
    ))
}

/// Client mode's runner: `relogin` by `relogin`, probes by [`probe::ProbeRunner`] with a
/// Gemini Business client built from the worker's own settings (`gemini_business.*`, `proxy`),
/// so a probe tests the token fetch from the worker's network.
pub fn client_runner(
    settings: &Settings,
    relogin: Arc<dyn TaskRunner>,
) -> Result<Arc<dyn TaskRunner>, String> {
    let client = crate::upstream::gemini_business::GeminiBusinessClient::new(
        &settings.gemini_business,
        settings.proxy.as_ref(),
    )
    .map_err(|e| format!("the Gemini Business client for probes: {e}"))?;
    Ok(Arc::new(ComposedRunner::new(
        relogin,
        Arc::new(probe::ProbeRunner::new(Arc::new(client))),
    )))
}

/// The re-login side of the local worker: the same Chromium re-login as client mode's
/// ([`crate::client_mode::relogin_runner`]), run on this box.
pub fn relogin_runner(settings: &Settings) -> Arc<dyn TaskRunner> {
    crate::client_mode::relogin_runner(settings)
}

/// `202` with the task (new or already queued) for `key`, or `503` when the hub cannot take it.
fn enqueued_answer(
    sent: Result<Result<hub::Enqueued, hub::QueueFull>, actix::MailboxError>,
    key: &AccountKey,
) -> HttpResponse {
    match sent {
        Ok(Ok(enqueued)) => HttpResponse::Accepted().json(json!({
            "task": enqueued.task.as_str(),
            "created": enqueued.created,
            "account": key.as_str(),
        })),
        Ok(Err(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "the task queue is full ({} tasks); try again later",
                hub::MAX_TASKS
            ),
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the worker hub is not running",
        ),
    }
}

fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

fn unauthorised(message: &str) -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
        .json(json!({ "error": message }))
}

/// The bearer token of the request, if any.
fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `GET /ws`: authenticates the worker, then upgrades and starts its session actor.
pub async fn endpoint(
    req: HttpRequest,
    body: web::Payload,
    workers: web::Data<Workers>,
    live: web::Data<LiveConfig>,
) -> HttpResponse {
    let Some(hub) = workers.hub.clone().filter(|_| workers.endpoint) else {
        return error(
            StatusCode::NOT_FOUND,
            "no worker endpoint runs in this mode (pool_server.mode \"server\" runs one)",
        );
    };
    if !req.query_string().is_empty() {
        return unauthorised(
            "the worker endpoint takes no query string: a secret is never accepted in the URL; \
             send Authorization: Bearer <pool_server.secret>",
        );
    }
    let settings = live.load();
    let secret = &settings.pool_server.secret;
    if secret.expose().trim().is_empty() {
        return unauthorised("no pool_server.secret is configured: every worker is refused");
    }
    match bearer(&req) {
        None => {
            return unauthorised(
                "missing worker credential (Authorization: Bearer <pool_server.secret>)",
            );
        }
        Some(token) if !secret.matches(token.as_bytes()) => {
            tracing::warn!(peer = ?req.peer_addr(), "worker refused: wrong credential");
            return unauthorised("invalid worker credential");
        }
        Some(_) => {}
    }
    let (response, session, stream) = match actix_ws::handle(&req, body) {
        Ok(r) => r,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "expected a WebSocket upgrade request",
            );
        }
    };
    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    let peer = req
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    session::WorkerSession::start(hub, workers.terms.clone(), peer, session, stream);
    response
}

// ---------------------------------------------------------------------------------------------
// Admin routes (mounted under `/admin`, behind the admin key).

/// `GET /admin/workers`.
pub async fn admin_workers(workers: web::Data<Workers>) -> HttpResponse {
    let Some(hub) = &workers.hub else {
        return HttpResponse::Ok().json(json!({ "endpoint": false, "count": 0, "workers": [] }));
    };
    match hub.send(ListWorkers).await {
        Ok(list) => HttpResponse::Ok().json(json!({
            "endpoint": workers.endpoint, "count": list.len(), "workers": list,
        })),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the worker hub is not running",
        ),
    }
}

/// `GET /admin/tasks`.
pub async fn admin_tasks(workers: web::Data<Workers>) -> HttpResponse {
    let Some(hub) = &workers.hub else {
        return HttpResponse::Ok().json(json!({
            "endpoint": false, "queued": 0, "leased": 0, "tasks": [], "finished": [],
        }));
    };
    match hub.send(ListTasks).await {
        Ok(view) => {
            let mut body = serde_json::to_value(view).unwrap_or_default();
            body["endpoint"] = json!(workers.endpoint);
            HttpResponse::Ok().json(body)
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the worker hub is not running",
        ),
    }
}

#[derive(serde::Deserialize)]
struct BrowserRefresh {
    email: String,
}

/// `POST /admin/browser-refresh {"email": ...}`: queue a re-login of the account now.
pub async fn admin_browser_refresh(
    workers: web::Data<Workers>,
    state: web::Data<crate::startup::AppState>,
    body: web::Bytes,
) -> HttpResponse {
    let Ok(request) = serde_json::from_slice::<BrowserRefresh>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a JSON object {\"email\": \"<account e-mail>\"}",
        );
    };
    let Some(hub) = &workers.hub else {
        return no_hub(&state);
    };
    let key = AccountKey::new(&request.email);
    let Some(generation) = generation_of(&state, &key).await else {
        return error(StatusCode::NOT_FOUND, "no such account");
    };
    let sent = hub
        .send(EnqueueRelogin {
            account: key.clone(),
            generation: Some(generation),
        })
        .await;
    enqueued_answer(sent, &key)
}

/// Whether `mode` runs the worker endpoint.
pub fn runs_endpoint(mode: Mode) -> bool {
    mode == Mode::Server
}

/// The credential generation of the account `key`, or `None` when the pool has no such account.
async fn generation_of(state: &crate::startup::AppState, key: &AccountKey) -> Option<u64> {
    state
        .chat
        .pool()
        .snapshot()
        .await
        .into_iter()
        .find(|a| AccountKey::new(&a.email) == *key)
        .map(|a| a.credential_generation)
}

fn no_hub(state: &crate::startup::AppState) -> HttpResponse {
    let mode = state.mode.as_str();
    error(
        StatusCode::CONFLICT,
        &format!("no task hub runs in {mode} mode"),
    )
}

/// `POST /admin/accounts/{email}/probe`: queue a probe of the account's token fetch from a
/// worker's network, with its current credentials (sent only to the worker holding the task).
/// 202 with the task id; 404 for an unknown account.
pub async fn admin_probe(
    workers: web::Data<Workers>,
    state: web::Data<crate::startup::AppState>,
    live: web::Data<LiveConfig>,
    path: web::Path<String>,
) -> HttpResponse {
    let key = AccountKey::new(&path.into_inner());
    let Some(generation) = generation_of(&state, &key).await else {
        return error(StatusCode::NOT_FOUND, "no such account");
    };
    let Some(hub) = &workers.hub else {
        return no_hub(&state);
    };
    let stored = match state.accounts.stored(key.as_str().to_owned()).await {
        Ok(Some(record)) => record,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such account"),
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the account store cannot be read",
            );
        }
    };
    let default_config = live.load().default_config.clone();
    let credentials = match crate::pool::import::credentials_of(&stored, &default_config) {
        Ok(c) => AccountCredentials {
            cookies: c
                .cookies
                .iter()
                .map(|c| WireCookie {
                    name: c.name.clone(),
                    value: c.value.clone(),
                    domain: c.domain.clone(),
                })
                .collect(),
            authorization: c.authorization.clone(),
            config_id: c.config_id.clone(),
            csesidx: c.csesidx.clone(),
        },
        Err(why) => {
            return error(
                StatusCode::CONFLICT,
                &format!(
                    "the account has no usable credentials to probe: {}",
                    crate::telemetry::printable(&why)
                ),
            );
        }
    };
    let sent = hub
        .send(EnqueueProbe {
            account: key.clone(),
            credentials,
            generation: Some(generation),
        })
        .await;
    enqueued_answer(sent, &key)
}

/// A one-time code as the admin route takes it: 4 to 16 ASCII letters or digits.
fn valid_code(code: &str) -> bool {
    (4..=16).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `POST /admin/accounts/{email}/otp {"code": "..."}`: forwards a one-time code to the worker
/// holding the account's re-login task. 400 for a missing or malformed code, 404 for an unknown
/// account, 409 when no re-login task of the account is leased to a worker, else 202
/// `{"task": id, "delivered": true}`. The code is never logged nor echoed.
pub async fn admin_otp(
    workers: web::Data<Workers>,
    state: web::Data<crate::startup::AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned))
        .map(Secret::new);
    let Some(code) = code.filter(|c| valid_code(c.expose())) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a JSON object {\"code\": \"<one-time code>\"} whose code is 4 to 16 \
             ASCII letters or digits",
        );
    };
    let key = AccountKey::new(&path.into_inner());
    if generation_of(&state, &key).await.is_none() {
        return error(StatusCode::NOT_FOUND, "no such account");
    }
    let Some(hub) = &workers.hub else {
        return no_hub(&state);
    };
    match hub.send(DeliverOtp { account: key, code }).await {
        Ok(Ok(task)) => HttpResponse::Accepted().json(json!({
            "task": task.as_str(), "delivered": true,
        })),
        Ok(Err(_)) => error(
            StatusCode::CONFLICT,
            "the account has no re-login task leased to a worker (nothing waits for a code)",
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the worker hub is not running",
        ),
    }
}

/// The task of every account that has one, for `GET /admin/accounts` (empty without a hub).
pub async fn account_tasks(
    workers: &Workers,
) -> std::collections::HashMap<String, hub::AccountTaskView> {
    match &workers.hub {
        Some(hub) => hub.send(hub::AccountTasks).await.unwrap_or_default(),
        None => std::collections::HashMap::new(),
    }
}
