//! The Gemini dialect, under `/v1beta/` and `/v1/`: `GET models`, `GET models/{m}`,
//! `POST models/{m}:generateContent`, `:streamGenerateContent`, `:countTokens`.

pub mod error;

use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::GatewayError;
use crate::startup::AppState;

/// Registers the `/v1beta` routes (the `/v1` ones are shared with the other dialects and
/// registered in `startup`).
pub fn routes_v1beta(cfg: &mut web::ServiceConfig) {
    cfg.route("/models", web::get().to(list_models))
        .route("/models/{model}", web::get().to(get_model))
        .route("/models/{action:.*}", web::post().to(action));
}

/// `GET .../models` in Google's shape.
pub async fn list_models(_state: web::Data<AppState>, _req: HttpRequest) -> HttpResponse {
    error::response(&GatewayError::NotFound)
}

/// `GET .../models/{m}` in Google's shape.
pub async fn get_model(
    _state: web::Data<AppState>,
    _req: HttpRequest,
    _path: web::Path<String>,
) -> HttpResponse {
    error::response(&GatewayError::NotFound)
}

/// `POST .../models/{m}:{action}`.
pub async fn action(
    _state: web::Data<AppState>,
    _req: HttpRequest,
    _path: web::Path<String>,
    _payload: web::Payload,
) -> HttpResponse {
    error::response(&GatewayError::NotFound)
}
