//! The Anthropic dialect: `POST /v1/messages` (streamed and not), `POST
//! /v1/messages/count_tokens`, and `GET /v1/models[/{id}]` when `anthropic-version` is sent.

pub mod error;

use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::GatewayError;
use crate::startup::AppState;

/// Registers the Anthropic routes on the `/v1` scope.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/messages", web::post().to(messages))
        .route("/messages/count_tokens", web::post().to(count_tokens));
}

async fn messages() -> HttpResponse {
    error::response(&GatewayError::NotFound)
}

async fn count_tokens() -> HttpResponse {
    error::response(&GatewayError::NotFound)
}

/// `GET /v1/models` in Anthropic's shape.
pub async fn list_models(_state: web::Data<AppState>, _req: HttpRequest) -> HttpResponse {
    error::response(&GatewayError::NotFound)
}

/// `GET /v1/models/{id}` in Anthropic's shape.
pub async fn get_model(
    _state: web::Data<AppState>,
    _req: HttpRequest,
    _path: web::Path<String>,
) -> HttpResponse {
    error::response(&GatewayError::NotFound)
}
