//! The OpenAI dialect: `POST /v1/chat/completions` (streamed and not), `POST /v1/responses`,
//! `POST /v1/images/generations`, the video API (`/v1/videos…`) and `GET /v1/models`.
//!
//! # Layout
//! - [`wire`]: request and response shapes; [`convert`]: wire ⇄ domain;
//!   [`sse`]: domain events → chunks; [`error`]: OpenAI-shaped errors; [`citations`]:
//!   web-search citations → `url_citation` annotations.
//! - [`responses`]: the Responses API; [`images`]: the Images API; [`videos`]: the video
//!   jobs API.
//! - this module: the chat and models handlers.

pub mod citations;
pub mod convert;
pub mod error;
pub mod images;
pub mod responses;
pub mod sse;
pub mod videos;
pub mod wire;

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;

use self::sse::ChunkEncoder;
use crate::dialects::{Dialect, limits, read_body, stream};
use crate::error::GatewayError;
use crate::startup::AppState;

/// Registers the OpenAI routes on the `/v1` scope (`/v1/models` is shared: see
/// `dialects::list_models`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/chat/completions", web::post().to(chat_completions))
        .route("/responses", web::post().to(responses::create))
        .route("/images/generations", web::post().to(images::generations))
        .route("/videos", web::post().to(videos::create))
        .route("/videos", web::get().to(videos::list))
        .route("/videos/{id}", web::get().to(videos::retrieve))
        .route("/videos/{id}", web::delete().to(videos::delete))
        .route("/videos/{id}/content", web::get().to(videos::content));
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `GET /v1/models`.
/// A named key that lists models sees only those.
pub async fn list_models(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let data = state
        .chat
        .models()
        .listed()
        .into_iter()
        .filter(|m| crate::keys::allows(&req, m.public_name()))
        .map(|m| wire::ModelObject {
            id: m.public_name().to_owned(),
            object: "model",
            created: state.started_unix,
            owned_by: "google",
        })
        .collect();
    HttpResponse::Ok().json(wire::ModelList {
        object: "list",
        data,
    })
}

/// `GET /v1/models/{model}`.
pub async fn get_model(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    match state.chat.models().parse(&path) {
        Ok(m) if !crate::keys::allows(&req, m.public_name()) => {
            error::response(&crate::keys::refusal(&req, m.public_name()))
        }
        Ok(m) => HttpResponse::Ok().json(wire::ModelObject {
            id: m.public_name().to_owned(),
            object: "model",
            created: state.started_unix,
            owned_by: "google",
        }),
        Err(e) => error::response(&GatewayError::Model(e)),
    }
}

/// `POST /v1/chat/completions`.
#[tracing::instrument(skip_all, fields(model, stream))]
async fn chat_completions(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    stream::or_refused(Dialect::OpenAi, handle(state, req, payload).await)
}

async fn handle(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, GatewayError> {
    let body = read_body(payload, state.max_body_bytes()).await?;
    let len = body.len();
    let st = state.clone();
    let parsed = limits::parse_body(body, len, move |body| {
        convert::parse(body, st.chat.models(), &st.live.load().limits)
    })
    .await?;
    let request = parsed.request;
    tracing::Span::current()
        .record(
            "model",
            tracing::field::display(crate::telemetry::untrusted(request.model.public_name())),
        )
        .record("stream", request.stream);
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = unix_now();
    let model_name = request.model.public_name().to_owned();
    let inline = state.inline_media_in_chat();
    let include_usage = parsed.include_usage;
    let (stream_id, stream_model) = (id.clone(), model_name.clone());
    stream::respond(
        &state,
        &req,
        stream::Turn {
            dialect: Dialect::OpenAi,
            request,
        },
        |_| ChunkEncoder::new(stream_id, created, stream_model, include_usage, inline),
        move |answer| {
            Bytes::from(convert::completion(
                &id,
                created,
                &model_name,
                &answer.events,
                answer.usage,
                inline,
            ))
        },
    )
    .await
}
