//! Remote workers (server mode): the `GET /ws` endpoint, one [`session::WorkerSession`] actor per
//! connected worker, and the [`hub::WorkerHub`] actor that owns the task queue and the leases.
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
pub mod session;

use hub::{EnqueueRelogin, ListTasks, ListWorkers, WorkerHub};

/// What the HTTP handlers hold: the hub's address when this mode runs the worker endpoint.
#[derive(Clone)]
pub struct Workers {
    hub: Option<Addr<WorkerHub>>,
    terms: ServerTerms,
    _thread: Option<Arc<HubThread>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("endpoint", &self.hub.is_some())
            .finish_non_exhaustive()
    }
}

/// Stops the hub's thread when the last handle goes.
struct HubThread {
    system: System,
}

impl Drop for HubThread {
    fn drop(&mut self) {
        self.system.stop();
    }
}

impl Workers {
    /// No worker endpoint (local mode).
    pub fn disabled() -> Workers {
        Workers {
            hub: None,
            terms: ServerTerms::default(),
            _thread: None,
        }
    }

    /// Server mode: starts the hub on its own thread and actix system.
    pub fn start(
        settings: &Settings,
        accounts: AccountsService,
        live: LiveConfig,
    ) -> std::io::Result<Workers> {
        let lease = settings.pool_server.lease;
        let terms = ServerTerms {
            heartbeat_interval: settings.pool_server.heartbeat_interval,
            lease,
            // Only re-login tasks are created today.
            kinds: vec![TaskKindName::Relogin],
            ..ServerTerms::default()
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("workers".to_owned())
            .spawn(move || {
                let runner = System::new();
                runner.block_on(async move {
                    let addr = WorkerHub::new(accounts, live, lease).start();
                    let _ = tx.send((addr, System::current()));
                });
                if let Err(e) = runner.run() {
                    tracing::error!(error = %e, "the worker hub's actix system failed");
                }
            })?;
        let (hub, system) = rx.recv().map_err(|_| {
            std::io::Error::other("the worker hub's thread ended before it started")
        })?;
        Ok(Workers {
            hub: Some(hub),
            terms,
            _thread: Some(Arc::new(HubThread { system })),
        })
    }

    /// Lets the pool's re-login requests queue tasks here (server mode), and reports back to
    /// the pool every re-login task that ends without new credentials (the pool owns the budget).
    pub async fn take_relogins_from(&self, pool: &crate::pool::Pool) {
        if let Some(hub) = &self.hub {
            let _ = hub
                .send(hub::ReportFailuresTo(pool.relogin_failures()))
                .await;
            pool.send_relogins_to(hub.clone().recipient()).await;
        }
    }

    pub fn enabled(&self) -> bool {
        self.hub.is_some()
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
    let Some(hub) = workers.hub.clone() else {
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
            "endpoint": true, "count": list.len(), "workers": list,
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
        Ok(view) => HttpResponse::Ok().json(view),
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
        let mode = state.mode.as_str();
        return error(
            StatusCode::CONFLICT,
            &format!(
                "no worker endpoint runs in {mode} mode: browser re-login needs remote workers \
                 (pool_server.enable true and pool_server.mode \"server\")"
            ),
        );
    };
    let key = AccountKey::new(&request.email);
    let known = state
        .chat
        .pool()
        .snapshot()
        .await
        .iter()
        .any(|a| AccountKey::new(&a.email) == key);
    if !known {
        return error(StatusCode::NOT_FOUND, "no such account");
    }
    match hub
        .send(EnqueueRelogin {
            account: key.clone(),
        })
        .await
    {
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

/// Whether `mode` runs the worker endpoint.
pub fn runs_endpoint(mode: Mode) -> bool {
    mode == Mode::Server
}
