//! `GET /admin/stats`, `GET /admin/ip` (the usage statistics, with the reference's field
//! names) and the named API keys under `/admin/keys`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::error;
use crate::keys::{KeyError, KeySpec};
use crate::startup::AppState;
use crate::usage::Usage;

/// Clients listed by `/admin/ip` unless `?limit=` says otherwise.
const DEFAULT_IP_LIMIT: usize = 100;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/stats", web::get().to(stats))
        .route("/ip", web::get().to(clients))
        .route("/keys", web::get().to(list_keys))
        .route("/keys", web::post().to(create_key))
        .route("/keys/{id}", web::patch().to(update_key))
        .route("/keys/{id}", web::delete().to(delete_key));
}

fn now_ms() -> u64 {
    crate::pool::supervisor::now_ms()
}

async fn stats(state: web::Data<AppState>, usage: web::Data<Usage>) -> HttpResponse {
    let mut body = usage.book.stats_json(now_ms());
    body["pool"] = super::pool_stats(&state).await;
    let proxies = state.egress.view();
    let in_use = proxies
        .proxies
        .iter()
        .filter(|p| !p.accounts.is_empty())
        .count();
    body["proxy_pool"] = json!({
        "total": proxies.total,
        "idle": proxies.healthy.saturating_sub(in_use),
        "in_use": in_use,
        "healthy": proxies.healthy,
        "quarantined": proxies.quarantined,
    });
    HttpResponse::Ok().json(body)
}

async fn clients(usage: web::Data<Usage>, req: HttpRequest) -> HttpResponse {
    let limit = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(DEFAULT_IP_LIMIT);
    HttpResponse::Ok().json(usage.book.clients_json(now_ms(), limit))
}

async fn list_keys(usage: web::Data<Usage>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "keys": usage.keys.list() }))
}

fn spec_of(body: &[u8]) -> Result<KeySpec, String> {
    serde_json::from_slice::<KeySpec>(body).map_err(|e| {
        format!("the body must be a JSON object with name, models, rpm, tokens_per_day: {e}")
    })
}

fn key_error(e: &KeyError) -> HttpResponse {
    match e {
        KeyError::Invalid(m) => error(StatusCode::BAD_REQUEST, m.clone()),
        KeyError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        KeyError::Store(s) => super::store_error(s),
    }
}

/// The model names a key may list: those `/v1/models` shows.
fn known_models(state: &AppState) -> Vec<String> {
    state
        .chat
        .models()
        .listed()
        .iter()
        .map(|m| m.public_name().to_owned())
        .collect()
}

async fn create_key(
    state: web::Data<AppState>,
    usage: web::Data<Usage>,
    body: web::Bytes,
) -> HttpResponse {
    let spec = match spec_of(&body) {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let known = known_models(&state);
    let created =
        web::block(move || usage.keys.create(spec, |m| known.iter().any(|k| k == m))).await;
    match created {
        Ok(Ok((key, secret))) => HttpResponse::Created().json(json!({
            "key": key,
            "secret": secret,
            "note": "the key is shown only now: store it",
        })),
        Ok(Err(e)) => key_error(&e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

async fn update_key(
    state: web::Data<AppState>,
    usage: web::Data<Usage>,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let spec = match spec_of(&body) {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let known = known_models(&state);
    let id = id.into_inner();
    let updated = web::block(move || {
        usage
            .keys
            .update(&id, spec, |m| known.iter().any(|k| k == m))
    })
    .await;
    match updated {
        Ok(Ok(key)) => HttpResponse::Ok().json(json!({ "key": key })),
        Ok(Err(e)) => key_error(&e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

async fn delete_key(usage: web::Data<Usage>, id: web::Path<String>) -> HttpResponse {
    let id = id.into_inner();
    let shown = id.clone();
    match web::block(move || usage.keys.delete(&id)).await {
        Ok(Ok(())) => HttpResponse::Ok().json(json!({ "deleted": shown })),
        Ok(Err(e)) => key_error(&e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}
