//! The OpenAI dialect: `POST /v1/chat/completions` (streamed and not) and `GET /v1/models`.
//!
//! # Layout
//! - [`wire`]: request and response shapes; [`convert`]: wire ⇄ domain;
//!   [`sse`]: domain events → chunks; [`error`]: OpenAI-shaped errors.
//! - this module: the handlers.

pub mod convert;
pub mod error;
pub mod sse;
pub mod wire;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use self::sse::{ChunkEncoder, DONE, KEEPALIVE};
use crate::dialects::read_body;
use crate::domain::usage::input_tokens;
use crate::domain::{FinishReason, ModelId, OutputMeter, StreamEvent, flatten};
use crate::error::GatewayError;
use crate::service::ChatStream;
use crate::startup::AppState;

/// Registers the OpenAI routes on a `/v1` scope.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/chat/completions", web::post().to(chat_completions))
        .route("/models", web::get().to(list_models))
        .route("/models/{model}", web::get().to(get_model));
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `GET /v1/models`.
async fn list_models(state: web::Data<AppState>) -> HttpResponse {
    let data = ModelId::listed()
        .into_iter()
        .map(|id| wire::ModelObject {
            id,
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
async fn get_model(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    match ModelId::parse(&path) {
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
    match handle(state, req, payload).await {
        Ok(response) => response,
        Err(e) => {
            tracing::info!(status = e.status().as_u16(), error = %e, "chat completion refused");
            error::response(&e)
        }
    }
}

async fn handle(
    state: web::Data<AppState>,
    _req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, GatewayError> {
    let body = read_body(payload, state.max_body_bytes).await?;
    let parsed = convert::parse(&body)?;
    drop(body);
    let request = parsed.request;
    tracing::Span::current()
        .record("model", request.model.public_name())
        .record("stream", request.stream);
    let query = flatten(&request.messages);
    let input = input_tokens(&query);
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = unix_now();
    let model_name = request.model.public_name().to_owned();

    if !request.stream {
        let events = state.chat.complete(&request.model, &query).await?;
        let mut meter = OutputMeter::default();
        events.iter().for_each(|e| meter.observe(e));
        let body = convert::completion(&id, created, &model_name, &events, meter.usage(input));
        return Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(body));
    }

    let service = state.chat.clone();
    let model = request.model.clone();
    let mut start: Pin<Box<dyn Future<Output = Result<ChatStream, GatewayError>>>> =
        Box::pin(async move { service.stream(&model, &query).await });
    let keepalive = state.keepalive;
    let encoder = ChunkEncoder::new(id, created, model_name, parsed.include_usage);
    // Wait for the first event up to one keep-alive interval, so that failures before any
    // answer still get a proper status; after that, commit to 200 and keep the client waiting
    // with keep-alives while failover goes on.
    let started = match tokio::time::timeout(keepalive, &mut start).await {
        Ok(Err(e)) => return Err(e),
        Ok(Ok(stream)) => Start::Ready(stream),
        Err(_) => Start::Pending(start),
    };
    Ok(sse_response(sse_body(started, encoder, keepalive, input)))
}

enum Start {
    Ready(ChatStream),
    Pending(Pin<Box<dyn Future<Output = Result<ChatStream, GatewayError>>>>),
}

/// A `text/event-stream` response that is never buffered by proxies.
pub fn sse_response(body: impl Stream<Item = Result<Bytes, Infallible>> + 'static) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}

/// The whole SSE body: role chunk, events as they arrive (keep-alives during silence), finish,
/// usage, `[DONE]`. Failures after the role chunk become an error chunk followed by `[DONE]`.
fn sse_body(
    start: Start,
    mut encoder: ChunkEncoder,
    keepalive: Duration,
    input: u32,
) -> impl Stream<Item = Result<Bytes, Infallible>> + 'static {
    async_stream::stream! {
        yield Ok(encoder.role());
        let mut chat = match start {
            Start::Ready(stream) => stream,
            Start::Pending(mut pending) => loop {
                match tokio::time::timeout(keepalive, &mut pending).await {
                    Err(_) => yield Ok(KEEPALIVE),
                    Ok(Ok(stream)) => break stream,
                    Ok(Err(e)) => {
                        tracing::info!(status = e.status().as_u16(), error = %e, "stream failed before its first event");
                        yield Ok(encoder.error(&e));
                        yield Ok(DONE);
                        return;
                    }
                }
            },
        };
        let mut meter = OutputMeter::default();
        let mut finish = FinishReason::Stop;
        loop {
            match tokio::time::timeout(keepalive, chat.next()).await {
                Err(_) => yield Ok(KEEPALIVE),
                Ok(None) => break,
                Ok(Some(Ok(event))) => {
                    meter.observe(&event);
                    if matches!(event, StreamEvent::ToolCall(_)) {
                        finish = FinishReason::ToolCalls;
                    }
                    yield Ok(encoder.event(&event));
                }
                Ok(Some(Err(e))) => {
                    yield Ok(encoder.error(&GatewayError::Upstream(e)));
                    yield Ok(DONE);
                    return;
                }
            }
        }
        yield Ok(encoder.finish(finish));
        if let Some(usage) = encoder.usage(meter.usage(input)) {
            yield Ok(usage);
        }
        yield Ok(DONE);
    }
}
