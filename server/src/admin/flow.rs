//! `/admin/flow/*`: the Flow token pool (the reference's routes and field names, plus ours).
//! Token ids, states, credits, tiers and errors only: a session or access token never leaves.
//!
//! - `GET  /admin/flow/status` — `{enabled, total, ready, disabled, errored, tokens: [..]}`.
//! - `POST /admin/flow/add-token` `{cookie}` — a cookie string or a bare session token; written
//!   to `<data_dir>/at/` and added; a token already in the pool is a 400.
//! - `POST /admin/flow/remove-token` `{token_id}` — never selected again; unknown id: 404.
//! - `POST /admin/flow/reload` — `flow.tokens` and `<data_dir>/at/` read again.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::error;
use crate::startup::AppState;
use crate::upstream::flow::FlowPool;
use crate::upstream::flow::pool::{AddError, Added, TokenStateView};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/flow/status", web::get().to(status))
        .route("/flow/add-token", web::post().to(add_token))
        .route("/flow/remove-token", web::post().to(remove_token))
        .route("/flow/reload", web::post().to(reload));
}

fn disabled() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "enabled": false,
        "message": "Flow is disabled (flow.enable)",
    }))
}

fn pool(state: &AppState) -> Option<&FlowPool> {
    state.flow.pool()
}

/// The string field `key` of a JSON object body, or why there is none (a 400).
fn field(body: &[u8], key: &str) -> Result<String, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| format!("expected a JSON object {{\"{key}\": \"...\"}}"))?;
    value
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| format!("`{key}` is required"))
}

async fn status(state: web::Data<AppState>) -> HttpResponse {
    let Some(pool) = pool(&state) else {
        return disabled();
    };
    let tokens = pool.status().await;
    let count = |s: TokenStateView| tokens.iter().filter(|t| t.state == s).count();
    let listed: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                // The reference's names, for its admin page.
                m.insert(
                    "disabled".into(),
                    Value::Bool(t.state == TokenStateView::Disabled),
                );
                m.insert("error_count".into(), json!(t.errors));
            }
            v
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "enabled": true,
        "total": tokens.len(),
        "ready": count(TokenStateView::Active),
        "cooling": count(TokenStateView::Cooling),
        "disabled": count(TokenStateView::Disabled),
        "errored": count(TokenStateView::Failing),
        "tokens": listed,
    }))
}

async fn add_token(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let Some(pool) = pool(&state) else {
        return error(StatusCode::CONFLICT, "Flow is disabled (flow.enable)");
    };
    let cookie = match field(&body, "cookie") {
        Ok(c) => c,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match pool.add(&cookie).await {
        Ok((id, Added::Added)) => HttpResponse::Ok().json(json!({
            "message": "token added",
            "token_id": id,
            "total": pool.status().await.len(),
        })),
        Ok((id, Added::Present)) => HttpResponse::BadRequest().json(json!({
            "error": "this token is already in the pool",
            "token_id": id,
        })),
        Err(AddError::NoToken) => error(StatusCode::BAD_REQUEST, AddError::NoToken.to_string()),
        Err(e) => {
            tracing::error!(error = %e, "admin: cannot add a Flow token");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the token could not be saved; see the server log",
            )
        }
    }
}

async fn remove_token(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let Some(pool) = pool(&state) else {
        return error(StatusCode::CONFLICT, "Flow is disabled (flow.enable)");
    };
    let id = match field(&body, "token_id") {
        Ok(id) => id,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if !pool.remove(&id).await {
        return error(
            StatusCode::NOT_FOUND,
            format!("no Flow token `{id}` in the pool"),
        );
    }
    HttpResponse::Ok().json(json!({
        "message": "token removed",
        "token_id": id,
        "total": pool.status().await.len(),
    }))
}

async fn reload(state: web::Data<AppState>) -> HttpResponse {
    let Some(pool) = pool(&state) else {
        return error(StatusCode::CONFLICT, "Flow is disabled (flow.enable)");
    };
    let tokens = state.live.load().flow.tokens.clone();
    let report = pool.reload(&tokens).await;
    HttpResponse::Ok().json(json!({
        "message": "reloaded",
        "loaded": report.added,
        "removed": report.removed,
        "unusable": report.unusable,
        "total": report.tokens,
    }))
}
