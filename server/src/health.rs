//! Public, unauthenticated status routes: `GET /health` and `GET /`. They say whether the
//! gateway serves and how many accounts are ready — never which accounts, never statistics.

use actix_web::{HttpResponse, web};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::startup::AppState;

/// `GET /health`: 200 while serving; `ready` is the number of accounts that can take a request.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let summary = state.chat.pool().summary().await;
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "mode": state.mode.as_str(),
        "ready": summary.ready + summary.refreshing_token,
        "accounts": summary.total,
        "time": now,
    }))
}

/// `GET /`: what this service is.
pub async fn root(state: web::Data<AppState>) -> HttpResponse {
    let mut body = json!({
        "service": "business2api",
        "status": "running",
        "version": env!("CARGO_PKG_VERSION"),
        "mode": state.mode.as_str(),
        "endpoints": {
            "openai": ["/v1/chat/completions", "/v1/models"],
            "health": "/health",
        },
    });
    let note = state.note();
    if !note.is_empty() {
        body["note"] = json!(note);
    }
    HttpResponse::Ok().json(body)
}
