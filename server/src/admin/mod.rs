//! The admin JSON API under `/admin`, and the admin panel ([`panel`]). A request passes with
//! an admin key from `admin_keys` (no CSRF token: not a browser), or with a live panel session
//! (the `b2a_session` cookie) plus, for a state-changing method, the session's CSRF token in
//! `x-csrf-token` (else 403). An API key grants nothing here; with no admin key configured and
//! no session every admin route answers 403, an unknown or expired session cookie 401. The
//! panel's pages and assets, `GET /admin/session`, `POST /admin/setup` and `POST /admin/login`
//! need nothing. Keys are read from `Authorization: Bearer` or `x-admin-key` (never from the
//! query string, which ends up in logs) and compared in constant time.
//!
//! Panel routes: `GET /admin/panel` (the app), `/admin/panel/assets/{name}`, `GET
//! /admin/session`, `POST /admin/setup`, `POST /admin/login`, `POST /admin/logout`; the live
//! logs `GET /admin/logs` and `GET /admin/logs/stream` ([`logs`]).
//!
//! Routes (field names follow the reference where it had the route):
//! - `GET  /admin/status` — pool counts, request totals, cooldown settings.
//! - `GET  /admin/accounts` — every account: state, cooldowns, counters, last error; no credentials.
//! - `POST /admin/refresh` — re-import the account files of the accounts dir.
//! - `POST /admin/force-refresh` — mint new tokens for every serving account; old tokens stay in
//!   use until the new ones arrive, so the pool never empties.
//! - `POST /admin/config/cooldown` — `{refresh_cooldown_sec, use_cooldown_sec}`, each applied if > 0.
//! - `POST /admin/reload-config` — re-read the configuration file and the environment the process
//!   started with; apply what can change while running (see `crate::reload`).
//! - `GET  /admin/pool-files/export` — every account in the reference file format (a JSON array).
//! - `POST /admin/pool-files/import` — one account object, an array of them, or a multipart upload
//!   of such files.
//! - `POST /admin/pool-files/delete-invalid/preview` and `/execute` — accounts that cannot serve
//!   without the operator (unusable credentials, needs re-login, disabled).
//! - `GET  /admin/workers`, `GET /admin/tasks`, `POST /admin/browser-refresh {email}` — the
//!   connected workers, the task queue, and queueing a re-login now (`crate::workers`).
//! - `/admin/flow/status`, `/add-token`, `/remove-token`, `/reload` — the Flow token pool
//!   ([`flow`]).
//! - `GET /admin/proxies`, `POST /admin/proxies/check` — the egress proxies, their health and
//!   the accounts pinned to each ([`proxies`]).
//! - `GET /admin/stats`, `GET /admin/ip[?limit=N]` — usage statistics (totals, per model, per
//!   key, per hour, per client address); `GET|POST /admin/keys`, `PATCH|DELETE
//!   /admin/keys/{id}` — named API keys with limits ([`usage`]).

mod flow;
pub mod logs;
pub mod panel;
mod proxies;
mod usage;

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use business2api_shared::secret::matches_any;
use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::accounts::Incoming;
use crate::config::live::LiveConfig;
use crate::dialects::read_body;
use crate::pool::AccountView;
use crate::pool::account_state::{AccountState, Capability};
use crate::pool::files::{parse_documents, reference_json};
use crate::pool::import::Rejected;
use crate::pool::supervisor::key_of;
use crate::reload::{ReloadError, Reloader};
use crate::startup::AppState;
use crate::store::{StoreError, Upsert};

fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message.into() }))
}

fn presented_admin_key(req: &HttpRequest) -> Option<String> {
    let headers = req.headers();
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some((scheme, token)) = v.trim().split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
        && !token.trim().is_empty()
    {
        return Some(token.trim().to_owned());
    }
    headers
        .get("x-admin-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Middleware: a configured admin key passes; so does a live panel session, with its CSRF
/// token for a state-changing method; the panel's public routes ([`panel::is_public`]) need
/// nothing. The keys are read from the live configuration at every request (a reload applies
/// at once).
pub async fn require_admin_key(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let refusal = if panel::is_public(req.method(), req.path()) {
        None
    } else {
        admin_refusal(req.request())
    };
    match refusal {
        None => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
        Some(response) => Ok(req.into_response(response).map_into_right_body()),
    }
}

/// Why `req` may not use a (non-public) admin route, or `None` when it may.
fn admin_refusal(req: &HttpRequest) -> Option<HttpResponse> {
    let settings = req
        .app_data::<web::Data<LiveConfig>>()
        .map(|live| live.load());
    let keys: &[business2api_shared::Secret] = settings
        .as_deref()
        .map_or(&[][..], |s| s.admin_keys.as_slice());
    let presented = presented_admin_key(req);
    // An admin key: not a browser, no CSRF token needed.
    if let Some(k) = &presented
        && !keys.is_empty()
        && matches_any(keys, k.as_bytes())
    {
        return None;
    }
    // A panel session: a state-changing call must carry the session's CSRF token.
    if let Some(id) = panel::session_cookie(req) {
        let csrf = req
            .app_data::<web::Data<panel::PanelAuth>>()
            .and_then(|auth| auth.session(&id));
        match csrf {
            Some(expected) => {
                if panel::is_state_changing(req.method()) {
                    let given = req
                        .headers()
                        .get(panel::CSRF_HEADER)
                        .and_then(|v| v.to_str().ok());
                    if !panel::sessions::csrf_matches(&expected, given) {
                        return Some(error(
                            StatusCode::FORBIDDEN,
                            "missing or wrong CSRF token (x-csrf-token): reload the panel",
                        ));
                    }
                }
                return None;
            }
            None if presented.is_none() => {
                return Some(error(
                    StatusCode::UNAUTHORIZED,
                    "the panel session expired or is unknown: log in again",
                ));
            }
            None => {}
        }
    }
    if keys.is_empty() {
        return Some(error(
            StatusCode::FORBIDDEN,
            "the admin API is disabled: configure admin_keys (or ADMIN_KEY) to use it, or log \
             in to the admin panel at /admin/panel",
        ));
    }
    match presented {
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "missing admin key (Authorization: Bearer <admin key>) or panel session",
        )),
        Some(_) => Some(error(StatusCode::UNAUTHORIZED, "invalid admin key")),
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/status", web::get().to(status))
        .route("/accounts", web::get().to(accounts))
        .route("/refresh", web::post().to(refresh))
        .route("/force-refresh", web::post().to(force_refresh))
        .route("/config/cooldown", web::post().to(set_cooldown))
        .route("/reload-config", web::post().to(reload_config))
        .route("/pool-files/export", web::get().to(export))
        .route("/pool-files/import", web::post().to(import))
        .route(
            "/pool-files/delete-invalid/preview",
            web::post().to(delete_invalid_preview),
        )
        .route(
            "/pool-files/delete-invalid/execute",
            web::post().to(delete_invalid_execute),
        )
        .route("/workers", web::get().to(crate::workers::admin_workers))
        .route("/tasks", web::get().to(crate::workers::admin_tasks))
        .route(
            "/browser-refresh",
            web::post().to(crate::workers::admin_browser_refresh),
        )
        .route(
            "/accounts/{email}/probe",
            web::post().to(crate::workers::admin_probe),
        )
        .route(
            "/accounts/{email}/otp",
            web::post().to(crate::workers::admin_otp),
        )
        .route("/logs", web::get().to(logs::recent))
        .route("/logs/stream", web::get().to(logs::stream))
        .configure(panel::routes)
        .configure(flow::routes)
        .configure(proxies::routes)
        .configure(usage::routes);
}

/// A failed store operation, as the admin API answers it (the cause goes to the log).
fn store_error(e: &StoreError) -> HttpResponse {
    tracing::error!(error = %e, "admin: store operation failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the data store failed; see the server log",
    )
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, HttpResponse> {
    crate::accounts::service::blocking(f)
        .await
        .map_err(|e| store_error(&e))
}

fn rate(ok: u64, total: u64) -> String {
    if total == 0 {
        "0.0%".to_owned()
    } else {
        format!("{:.1}%", ok as f64 * 100.0 / total as f64)
    }
}

async fn status(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(pool_stats(&state).await)
}

/// The pool statistics of `/admin/status` (also `pool` in `/admin/stats`).
async fn pool_stats(state: &AppState) -> Value {
    let pool = state.chat.pool();
    let views = pool.snapshot().await;
    let summary = crate::pool::PoolSummary::of(&views);
    let (refresh, use_) = pool
        .set_cooldowns(None, None)
        .await
        .unwrap_or((Duration::ZERO, Duration::ZERO));
    let now = crate::pool::supervisor::now_ms();
    let limit = state.daily_limit_text();
    let exceeded = views
        .iter()
        .filter(|v| limit > 0 && v.status.counters.daily.on(Capability::Text, now) >= limit)
        .count();
    let success: u64 = views.iter().map(|v| v.status.counters.success).sum();
    let failed: u64 = views.iter().map(|v| v.status.counters.failed).sum();
    json!({
        "mode": state.mode.as_str(),
        "total": summary.total,
        "ready": summary.ready + summary.refreshing_token,
        "pending": summary.cooling_down + summary.needs_relogin,
        "states": summary,
        "available_today": summary.total - exceeded,
        "exceeded_today": exceeded,
        "total_requests": success + failed,
        "total_success": success,
        "total_failed": failed,
        "success_rate": rate(success, success + failed),
        "daily_limit": limit,
        "cooldowns": { "refresh_sec": refresh.as_secs(), "use_sec": use_.as_secs() },
        "is_registering": false,
    })
}

async fn accounts(
    state: web::Data<AppState>,
    workers: web::Data<crate::workers::Workers>,
) -> HttpResponse {
    let views: Vec<AccountView> = state.chat.pool().snapshot().await;
    let tasks = crate::workers::account_tasks(&workers).await;
    // Each account with its task (re-login or probe) as the hub sees it, or null.
    let accounts: Vec<serde_json::Value> = views
        .iter()
        .map(|v| {
            let mut a = serde_json::to_value(v).unwrap_or_default();
            let key = business2api_shared::AccountKey::new(&v.email);
            a["task"] = tasks
                .get(key.as_str())
                .and_then(|t| serde_json::to_value(t).ok())
                .unwrap_or(serde_json::Value::Null);
            // The proxy it leaves through (password redacted), or null when direct.
            a["egress"] =
                serde_json::to_value(state.egress.pin_of(&key)).unwrap_or(serde_json::Value::Null);
            a
        })
        .collect();
    HttpResponse::Ok().json(json!({ "count": accounts.len(), "accounts": accounts }))
}

async fn refresh(state: web::Data<AppState>) -> HttpResponse {
    let merged = match state
        .accounts
        .import_dir(state.accounts_dir.clone(), state.default_config())
        .await
    {
        Ok(m) => m,
        Err(e) => return store_error(&e),
    };
    let report = merged.report;
    let summary = state.chat.pool().summary().await;
    let count = |u: Upsert| report.imported.iter().filter(|(_, x)| *x == u).count();
    HttpResponse::Ok().json(json!({
        "message": "refresh complete",
        "inserted": count(Upsert::Inserted),
        "updated": count(Upsert::Updated),
        "unchanged": count(Upsert::Unchanged),
        "rejected": rejected_json(&report.rejected),
        "ready": summary.ready + summary.refreshing_token,
        "pending": summary.cooling_down + summary.needs_relogin,
        "total": summary.total,
    }))
}

fn rejected_json(rejected: &[Rejected]) -> Value {
    Value::Array(
        rejected
            .iter()
            .map(|r| json!({ "name": r.name, "reason": r.reason }))
            .collect(),
    )
}

async fn force_refresh(state: web::Data<AppState>) -> HttpResponse {
    let count = state.chat.pool().force_refresh().await;
    HttpResponse::Ok().json(json!({ "message": "forced refresh started", "count": count }))
}

async fn set_cooldown(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(m)) => Value::Object(m),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "expected a JSON object {\"refresh_cooldown_sec\": N, \"use_cooldown_sec\": N}",
            );
        }
    };
    // `Err(key)`: that key is not an integer.
    let read = |key: &'static str| -> Result<Option<Duration>, &'static str> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(n) => match n.as_i64() {
                Some(n) if n > 0 => Ok(Some(Duration::from_secs(n.unsigned_abs()))),
                Some(_) => Ok(None),
                None => Err(key),
            },
        }
    };
    let (refresh, use_) = match (read("refresh_cooldown_sec"), read("use_cooldown_sec")) {
        (Ok(r), Ok(u)) => (r, u),
        (Err(key), _) | (_, Err(key)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{key} must be an integer number of seconds"),
            );
        }
    };
    match state.chat.pool().set_cooldowns(refresh, use_).await {
        Some((r, u)) => HttpResponse::Ok().json(json!({
            "message": "cooldowns updated (until restart; the config file is unchanged)",
            "refresh_cooldown_sec": r.as_secs(),
            "use_cooldown_sec": u.as_secs(),
        })),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "the pool is stopping"),
    }
}

async fn export(state: web::Data<AppState>) -> HttpResponse {
    let store = Arc::clone(&state.store);
    let records = match blocking(move || store.accounts()).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut body = b"[".to_vec();
    let mut first = true;
    for (_, record) in records {
        let Ok(record) = record else { continue };
        if !first {
            body.push(b',');
        }
        first = false;
        body.push(b'\n');
        body.extend_from_slice(&reference_json(&record));
    }
    body.extend_from_slice(b"\n]");
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"accounts-export.json\"",
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

async fn import(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    let mut documents: Vec<(String, Vec<u8>)> = Vec::new();
    if is_multipart {
        let mut multipart = actix_multipart::Multipart::new(req.headers(), payload);
        let mut total = 0usize;
        let mut index = 0usize;
        while let Some(field) = multipart.next().await {
            let mut field = match field {
                Ok(f) => f,
                Err(e) => {
                    return error(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}"));
                }
            };
            index += 1;
            let name = field
                .content_disposition()
                .and_then(|cd| cd.get_filename().map(str::to_owned))
                .unwrap_or_else(|| format!("part {index}"));
            let mut bytes = Vec::new();
            while let Some(chunk) = field.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        return error(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}"));
                    }
                };
                total += chunk.len();
                if total > state.max_body_bytes() {
                    return error(StatusCode::PAYLOAD_TOO_LARGE, "the upload is too large");
                }
                bytes.extend_from_slice(&chunk);
            }
            documents.push((name, bytes));
        }
    } else {
        match read_body(payload, state.max_body_bytes()).await {
            Ok(b) => documents.push(("body".to_owned(), b.to_vec())),
            Err(e) => {
                return error(
                    StatusCode::from_u16(e.status().as_u16()).unwrap_or(StatusCode::BAD_REQUEST),
                    e.client_message(),
                );
            }
        }
    }
    if documents.is_empty() {
        return error(StatusCode::BAD_REQUEST, "no account in the request");
    }
    let mut records = Vec::new();
    let mut rejected = Vec::new();
    for (name, bytes) in &documents {
        for parsed in parse_documents(name, bytes) {
            match parsed {
                Ok(mut record) => {
                    // Accounts imported over HTTP have no file in the data dir.
                    record.source_file = None;
                    records.push(Incoming {
                        name: record.email.clone(),
                        record,
                    });
                }
                Err(r) => rejected.push(r),
            }
        }
    }
    let merged = match state
        .accounts
        .import(records, rejected, state.default_config())
        .await
    {
        Ok(m) => m,
        Err(e) => return store_error(&e),
    };
    // Each record was named by its e-mail.
    let rejected = merged.report.rejected;
    let outcomes = merged.report.imported;
    let status = if outcomes.is_empty() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    HttpResponse::build(status).json(json!({
        "imported": outcomes.iter().map(|(email, u)| json!({
            "email": email,
            "result": match u {
                Upsert::Inserted => "inserted",
                Upsert::Updated => "updated",
                Upsert::Unchanged => "unchanged",
            },
        })).collect::<Vec<_>>(),
        "rejected": rejected_json(&rejected),
    }))
}

/// Accounts that cannot serve without the operator, with the reason.
fn invalid(views: &[AccountView]) -> Vec<(String, String)> {
    views
        .iter()
        .filter_map(|v| {
            let reason = match &v.status.state {
                AccountState::NeedsRelogin { reason, .. } => format!("needs re-login: {reason}"),
                AccountState::Disabled { reason } => format!("disabled: {reason}"),
                _ if !v.usable_credentials => "unusable credentials".to_owned(),
                _ => return None,
            };
            Some((v.email.clone(), reason))
        })
        .collect()
}

async fn delete_invalid_preview(state: web::Data<AppState>) -> HttpResponse {
    let list = invalid(&state.chat.pool().snapshot().await);
    HttpResponse::Ok().json(json!({
        "count": list.len(),
        "accounts": list.iter().map(|(e, r)| json!({"email": e, "reason": r})).collect::<Vec<_>>(),
    }))
}

async fn delete_invalid_execute(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    // Optional `{"emails": [...]}`: delete only those (as confirmed from a preview), and only if
    // they are still invalid.
    let only: Option<Vec<String>> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => match v.get("emails") {
                None | Some(Value::Null) => None,
                Some(Value::Array(items)) => {
                    Some(items.iter().filter_map(Value::as_str).map(key_of).collect())
                }
                Some(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "emails must be an array of strings",
                    );
                }
            },
            Err(_) => return error(StatusCode::BAD_REQUEST, "expected a JSON object"),
        }
    };
    let pool = state.chat.pool();
    let targets: Vec<String> = invalid(&pool.snapshot().await)
        .into_iter()
        .map(|(e, _)| e)
        .filter(|e| only.as_ref().is_none_or(|o| o.contains(&key_of(e))))
        .collect();
    let removed = pool.remove(targets).await;
    HttpResponse::Ok().json(json!({ "count": removed.len(), "deleted": removed }))
}

/// `POST /admin/reload-config`: re-reads the configuration file (and the environment the process
/// started with), validates it in full and applies it; on any error nothing changes.
async fn reload_config(reloader: Option<web::Data<Reloader>>) -> HttpResponse {
    let Some(reloader) = reloader else {
        return error(StatusCode::CONFLICT, ReloadError::NoSource.to_string());
    };
    match reloader.reload("admin API").await {
        Ok(report) => HttpResponse::Ok().json(report.to_json()),
        Err(e) => {
            let status = match &e {
                ReloadError::NoSource => StatusCode::CONFLICT,
                ReloadError::Invalid(_) => StatusCode::BAD_REQUEST,
                ReloadError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            HttpResponse::build(status).json(e.to_json())
        }
    }
}
