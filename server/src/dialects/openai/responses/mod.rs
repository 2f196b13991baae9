//! The OpenAI Responses API: `POST /v1/responses`, streamed and not.
//!
//! # Layout
//! - [`parse`]: the request → the domain (and the fields the response echoes);
//! - [`encode`]: domain events → output items and stream events;
//! - this module: the handler. Errors are OpenAI-shaped (`super::error`).
//!
//! Nothing is stored: `previous_response_id`, `conversation` and `background` are refused with
//! a 400 that says so, and `store` is accepted but the response reports `store: false`.

pub mod encode;
pub mod parse;

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;

use self::encode::ResponsesEncoder;
use super::unix_now;
use crate::dialects::{Dialect, limits, read_body, stream};
use crate::error::GatewayError;
use crate::startup::AppState;

/// `POST /v1/responses`.
#[tracing::instrument(skip_all, fields(model, stream))]
pub async fn create(
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
        parse::parse(body, st.chat.models(), &st.live.load().limits)
    })
    .await?;
    let request = parsed.request;
    tracing::Span::current()
        .record(
            "model",
            tracing::field::display(crate::telemetry::untrusted(request.model.public_name())),
        )
        .record("stream", request.stream);
    let id = format!("resp_{}", uuid::Uuid::new_v4().simple());
    let created = unix_now();
    let model_name = request.model.public_name().to_owned();
    let echo = parsed.echo;
    let (stream_id, stream_model, stream_echo) = (id.clone(), model_name.clone(), echo.clone());
    stream::respond(
        &state,
        &req,
        stream::Turn {
            dialect: Dialect::OpenAi,
            request,
        },
        |_| ResponsesEncoder::new(stream_id, created, stream_model, stream_echo, true),
        move |answer| {
            let encoder = ResponsesEncoder::new(id, created, model_name, echo, false);
            let response = encoder.complete(&answer.events, answer.usage);
            Bytes::from(serde_json::to_vec(&response).unwrap_or_default())
        },
    )
    .await
}
