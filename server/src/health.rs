//! Public, unauthenticated status routes: `GET /health` and `GET /`. They say whether the
//! gateway serves and how many accounts are ready — never which accounts, never statistics.

use actix_web::{HttpResponse, web};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::startup::AppState;

/// `GET /health`: 200 while serving; `ready` is the number of accounts that can take a request.
/// `status` is `"ok"` when at least one can, else `"degraded"` with the `reason` (an empty pool
/// says where account files go).
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let summary = state.chat.pool().summary().await;
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let ready = summary.ready + summary.refreshing_token;
    let mut body = json!({
        "status": "ok",
        "mode": state.mode.as_str(),
        "ready": ready,
        "accounts": summary.total,
        "time": now,
    });
    let reason = if summary.total == 0 {
        Some(crate::error::EMPTY_POOL.to_owned())
    } else if ready == 0 {
        Some(format!(
            "no account can take a request now: {} cooling down, {} waiting for re-login, {} disabled",
            summary.cooling_down, summary.needs_relogin, summary.disabled
        ))
    } else {
        None
    };
    if let Some(reason) = reason {
        body["status"] = json!("degraded");
        body["reason"] = json!(reason);
    }
    HttpResponse::Ok().json(body)
}

/// `GET /`: what this service is.
pub async fn root(state: web::Data<AppState>) -> HttpResponse {
    let mut body = json!({
        "service": "business2api",
        "status": "running",
        "version": env!("CARGO_PKG_VERSION"),
        "mode": state.mode.as_str(),
        // The reference's key: whether Flow (Imagen, Veo) is on.
        "flow_enabled": state.flow.pool().is_some(),
        "endpoints": {
            "openai": [
                "POST /v1/chat/completions",
                "POST /v1/responses",
                "POST /v1/images/generations",
                "POST /v1/videos, GET /v1/videos, GET|DELETE /v1/videos/{id}, GET /v1/videos/{id}/content (Flow)",
                "GET /v1/models",
                "GET /v1/models/{model}",
            ],
            "anthropic": [
                "POST /v1/messages",
                "POST /v1/messages/count_tokens",
                "GET /v1/models (with an anthropic-version header)",
            ],
            "gemini": [
                "POST /v1beta/models/{model}:generateContent",
                "POST /v1beta/models/{model}:streamGenerateContent?alt=sse",
                "POST /v1beta/models/{model}:countTokens",
                "GET /v1beta/models",
                "GET /v1beta/models/{model}",
                "POST /v1/models/{model}:generateContent (and the other actions under /v1)",
            ],
            "media": "GET /media/{name}",
            "health": "GET /health",
            "admin": "/admin/* (admin key)",
        },
    });
    if state.mode == crate::config::Mode::Server {
        body["endpoints"]["workers"] = json!("GET /ws (WebSocket, worker secret)");
    }
    let note = state.note();
    if !note.is_empty() {
        body["note"] = json!(note);
    }
    HttpResponse::Ok().json(body)
}
