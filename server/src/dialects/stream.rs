//! What every dialect's answer path shares: starting the upstream turn, the SSE (or streamed
//! JSON) body with keep-alives and failover before the first event, publishing generated media,
//! and non-streamed answers that keep long generations alive.
//!
//! A dialect supplies a [`StreamEncoder`]: how its wire format opens, carries each event, keeps
//! the connection alive, finishes and fails. The driver guarantees the order
//! `open → (event | keepalive)* → (finish | fail)` and that exactly one of `finish`/`fail`
//! is written, so each encoder only has to get its own grammar right.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use actix_web::HttpResponse;
use actix_web::http::header;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use super::Dialect;
use crate::domain::{ChatRequest, FinishReason, OutputMeter, StreamEvent, Usage};
use crate::error::GatewayError;
use crate::media::MediaOut;
use crate::metrics::AnswerProbe;
use crate::service::{ChatService, ChatStream};
use crate::startup::AppState;
use crate::usage::UsageNote;
use std::sync::Arc;

/// Logs a refused request and renders the refusal in `dialect`'s shape.
pub fn refused(dialect: Dialect, error: &GatewayError) -> HttpResponse {
    tracing::info!(status = error.status().as_u16(), error = %crate::telemetry::untrusted(&error.to_string()), ?dialect, "request refused");
    dialect.error_response(error)
}

/// The response of a handler: its answer, or its refusal in `dialect`'s shape.
pub fn or_refused(dialect: Dialect, result: Result<HttpResponse, GatewayError>) -> HttpResponse {
    result.unwrap_or_else(|e| refused(dialect, &e))
}

/// One request to answer: its dialect and the domain request (model, conversation, whether it
/// streams).
#[derive(Debug)]
pub struct Turn {
    pub dialect: Dialect,
    pub request: ChatRequest,
}

/// Answers a parsed chat request in one dialect. Streamed: starts the upstream turn (failures
/// before the first event are returned, to get a real status) and streams the body built by
/// `encoder(input_tokens)`. Not streamed: runs the answer to its end and sends
/// `render(answer)` through [`json_answer`] (long generations are kept alive).
pub async fn respond<E, M, R>(
    state: &AppState,
    req: &actix_web::HttpRequest,
    turn: Turn,
    encoder: M,
    render: R,
) -> Result<HttpResponse, GatewayError>
where
    E: StreamEncoder,
    M: FnOnce(u32) -> E,
    R: FnOnce(Answer) -> Bytes + 'static,
{
    let Turn { dialect, request } = turn;
    let note = UsageNote::of(req);
    note.model(request.model.public_name());
    crate::keys::check_model(req, request.model.public_name())?;
    let probe = AnswerProbe::start(&state.metrics, req, &request.model);
    let input = state.chat.input_tokens(&request);
    note.input_tokens(input);
    let media = MediaOut::new(std::sync::Arc::clone(&state.media), req);
    if !request.stream {
        let chat = state.chat.clone();
        let long = request.model.features().image || request.model.features().video;
        let answer = async move {
            let answer = complete(&chat, request, input, &media, &note)
                .await
                .inspect_err(|_| note.failed())?;
            let upstream_done = Instant::now();
            let body = render(answer);
            probe.finished(upstream_done);
            Ok(body)
        };
        return Ok(json_answer(
            dialect,
            answer,
            long,
            state.nonstream_keepalive_after(),
            state.keepalive(),
        )
        .await);
    }
    let encoder = encoder(input);
    let content_type = encoder.content_type();
    let started = start(&state.chat, request, state.keepalive()).await?;
    Ok(streaming_response(
        content_type,
        body(
            started,
            encoder,
            state.keepalive(),
            input,
            media,
            note,
            probe,
        ),
    ))
}

/// One dialect's streamed wire format. Each method appends complete frames to `out`.
pub trait StreamEncoder: Send + 'static {
    /// Written once, when the response commits to 200 (before any event).
    fn open(&mut self, out: &mut BytesMut);
    /// One event. Generated media arrive published (`url` set) unless storing failed.
    fn event(&mut self, event: &StreamEvent, out: &mut BytesMut);
    /// The upstream has been silent for one keep-alive interval.
    fn keepalive(&mut self, out: &mut BytesMut);
    /// The answer is complete.
    fn finish(&mut self, reason: FinishReason, usage: Usage, out: &mut BytesMut);
    /// The answer cannot complete (`usage` counts what was sent).
    fn fail(&mut self, error: &GatewayError, usage: Usage, out: &mut BytesMut);
    /// The `Content-Type` of the streamed body.
    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }
}

type Pending = Pin<Box<dyn Future<Output = Result<ChatStream, GatewayError>>>>;

/// A started (or still starting) upstream answer.
pub enum Start {
    Ready(ChatStream),
    Pending(Pending),
}

/// Starts the upstream turn and waits for its first event up to one keep-alive interval, so
/// that failures before any answer still get a proper status. After that the caller commits
/// to 200 and the driver keeps the client waiting with keep-alives while failover goes on.
pub async fn start(
    chat: &ChatService,
    request: ChatRequest,
    keepalive: Duration,
) -> Result<Start, GatewayError> {
    let service = chat.clone();
    let mut pending: Pending = Box::pin(async move { service.stream(request).await });
    match tokio::time::timeout(keepalive, &mut pending).await {
        Ok(Err(e)) => Err(e),
        Ok(Ok(stream)) => Ok(Start::Ready(stream)),
        Err(_) => Ok(Start::Pending(pending)),
    }
}

/// The streamed body: `open`, events as they arrive (keep-alives during silence), then
/// `finish` or `fail`. Dropping the body (client gone) drops the upstream call.
pub fn body<E: StreamEncoder>(
    start: Start,
    mut encoder: E,
    keepalive: Duration,
    input_tokens: u32,
    media: MediaOut,
    note: Arc<UsageNote>,
    mut probe: AnswerProbe,
) -> impl Stream<Item = Result<Bytes, Infallible>> + 'static {
    async_stream::stream! {
        let mut out = BytesMut::with_capacity(512);
        let mut meter = OutputMeter::default();
        encoder.open(&mut out);
        yield Ok(out.split().freeze());
        let mut chat = match start {
            Start::Ready(stream) => stream,
            Start::Pending(mut pending) => loop {
                match tokio::time::timeout(keepalive, &mut pending).await {
                    Err(_) => {
                        encoder.keepalive(&mut out);
                        yield Ok(out.split().freeze());
                    }
                    Ok(Ok(stream)) => break stream,
                    Ok(Err(e)) => {
                        tracing::info!(status = e.status().as_u16(), error = %crate::telemetry::untrusted(&e.to_string()), "stream failed before its first event");
                        note.failed();
                        encoder.fail(&e, meter.usage(input_tokens), &mut out);
                        yield Ok(out.split().freeze());
                        return;
                    }
                }
            },
        };
        let mut finish = FinishReason::Stop;
        loop {
            match tokio::time::timeout(keepalive, chat.next()).await {
                Err(_) => encoder.keepalive(&mut out),
                Ok(None) => break,
                Ok(Some(Ok(mut event))) => {
                    if let StreamEvent::Media(m) = &mut event {
                        media.publish(m).await;
                        note.media(&m.mime);
                    }
                    meter.observe(&event);
                    note_output(&note, &meter, input_tokens);
                    if matches!(event, StreamEvent::ToolCall(_)) {
                        finish = FinishReason::ToolCalls;
                    }
                    probe.event();
                    encoder.event(&event, &mut out);
                }
                Ok(Some(Err(e))) => {
                    tracing::info!(error = %crate::telemetry::untrusted(&e.to_string()), "upstream failed mid-stream");
                    note.failed();
                    encoder.fail(&e, meter.usage(input_tokens), &mut out);
                    yield Ok(out.split().freeze());
                    return;
                }
            }
            if !out.is_empty() {
                yield Ok(out.split().freeze());
            }
        }
        let upstream_done = Instant::now();
        encoder.finish(finish, meter.usage(input_tokens), &mut out);
        yield Ok(out.split().freeze());
        probe.finished(upstream_done);
    }
}

/// A `text/event-stream` response that is never buffered by proxies.
pub fn sse_response(body: impl Stream<Item = Result<Bytes, Infallible>> + 'static) -> HttpResponse {
    streaming_response("text/event-stream", body)
}

/// A streamed response of the given content type, never buffered by proxies.
pub fn streaming_response(
    content_type: &'static str,
    body: impl Stream<Item = Result<Bytes, Infallible>> + 'static,
) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}

/// A whole (non-streamed) answer: every event, media published, and its usage.
#[derive(Debug)]
pub struct Answer {
    pub events: Vec<StreamEvent>,
    pub usage: Usage,
    pub finish: FinishReason,
}

/// Runs a non-streamed answer to its end (with failover) and publishes its media.
pub async fn complete(
    chat: &ChatService,
    request: ChatRequest,
    input_tokens: u32,
    media: &MediaOut,
    note: &UsageNote,
) -> Result<Answer, GatewayError> {
    let mut events = chat.complete(request).await?;
    let mut meter = OutputMeter::default();
    let mut finish = FinishReason::Stop;
    for event in &mut events {
        if let StreamEvent::Media(m) = event {
            media.publish(m).await;
            note.media(&m.mime);
        }
        if matches!(event, StreamEvent::ToolCall(_)) {
            finish = FinishReason::ToolCalls;
        }
        meter.observe(event);
    }
    let usage = meter.usage(input_tokens);
    note.output_tokens(usage.output_tokens);
    Ok(Answer {
        events,
        usage,
        finish,
    })
}

/// Keeps the note's output tokens at what the meter has counted so far (a stream can end at
/// any event when the client leaves).
fn note_output(note: &UsageNote, meter: &OutputMeter, input_tokens: u32) {
    note.set_output_tokens(meter.usage(input_tokens).output_tokens);
}

/// A non-streamed JSON answer. When `long` (image and video generation) and the answer takes
/// longer than `commit_after` (`http.nonstream_keepalive_after_sec`, 0 = never), the response
/// commits to `200 application/json` and writes one space per keep-alive interval (JSON allows
/// leading whitespace) so that proxies do not cut the connection; an error after that point is
/// sent as the dialect's error body (the status can no longer change — documented). Otherwise
/// errors get their real status.
pub async fn json_answer<F>(
    dialect: Dialect,
    answer: F,
    long: bool,
    commit_after: Duration,
    keepalive: Duration,
) -> HttpResponse
where
    F: Future<Output = Result<Bytes, GatewayError>> + 'static,
{
    let mut answer: Pin<Box<F>> = Box::pin(answer);
    let first_wait = if long && !commit_after.is_zero() {
        Some(commit_after)
    } else {
        None
    };
    let outcome = match first_wait {
        None => Some(answer.as_mut().await),
        Some(wait) => tokio::time::timeout(wait, answer.as_mut()).await.ok(),
    };
    match outcome {
        Some(Ok(body)) => HttpResponse::Ok()
            .content_type("application/json")
            .body(body),
        Some(Err(e)) => {
            tracing::info!(status = e.status().as_u16(), error = %crate::telemetry::untrusted(&e.to_string()), "request refused");
            dialect.error_response(&e)
        }
        None => {
            let body = async_stream::stream! {
                yield Ok::<Bytes, Infallible>(Bytes::from_static(b" "));
                loop {
                    match tokio::time::timeout(keepalive, answer.as_mut()).await {
                        Err(_) => yield Ok(Bytes::from_static(b" ")),
                        Ok(Ok(body)) => {
                            yield Ok(body);
                            break;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(status = e.status().as_u16(), error = %crate::telemetry::untrusted(&e.to_string()), "long request failed after the response was committed");
                            yield Ok(dialect.error_body(&e));
                            break;
                        }
                    }
                }
            };
            streaming_response("application/json", body)
        }
    }
}
