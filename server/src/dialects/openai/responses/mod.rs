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

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;

use self::encode::ResponsesEncoder;
use super::{error, unix_now};
use crate::dialects::{Dialect, read_body, stream};
use crate::domain::flatten;
use crate::domain::usage::input_tokens;
use crate::error::GatewayError;
use crate::media::MediaOut;
use crate::startup::AppState;

/// `POST /v1/responses`.
#[tracing::instrument(skip_all, fields(model, stream))]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    match handle(state, req, payload).await {
        Ok(response) => response,
        Err(e) => {
            tracing::info!(status = e.status().as_u16(), error = %e, "response refused");
            error::response(&e)
        }
    }
}

async fn handle(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, GatewayError> {
    let body = read_body(payload, state.max_body_bytes).await?;
    let parsed = parse::parse(&body)?;
    drop(body);
    let request = parsed.request;
    tracing::Span::current()
        .record("model", request.model.public_name())
        .record("stream", request.stream);
    let query = flatten(&request.messages);
    let input = input_tokens(&query);
    let id = format!("resp_{}", uuid::Uuid::new_v4().simple());
    let created = unix_now();
    let model_name = request.model.public_name().to_owned();
    let media = MediaOut::new(Arc::clone(&state.media), &req);
    let features = request.model.features();

    if !request.stream {
        let chat = state.chat.clone();
        let model = request.model.clone();
        let echo = parsed.echo;
        let answer = async move {
            let answer = stream::complete(&chat, &model, &query, input, &media).await?;
            let encoder = ResponsesEncoder::new(id, created, model_name, echo, false);
            let response = encoder.complete(&answer.events, answer.usage);
            Ok(Bytes::from(
                serde_json::to_vec(&response).unwrap_or_default(),
            ))
        };
        return Ok(stream::json_answer(
            Dialect::OpenAi,
            answer,
            features.image || features.video,
            state.nonstream_keepalive_after,
            state.keepalive,
        )
        .await);
    }

    let encoder = ResponsesEncoder::new(id, created, model_name, parsed.echo, true);
    let started = stream::start(&state.chat, &request.model, query, state.keepalive).await?;
    Ok(stream::sse_response(stream::body(
        started,
        encoder,
        state.keepalive,
        input,
        media,
    )))
}
