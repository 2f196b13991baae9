//! The Anthropic dialect: `POST /v1/messages` (streamed and not), `POST
//! /v1/messages/count_tokens`, and `GET /v1/models[/{id}]` when `anthropic-version` is sent.
//!
//! # Layout
//! - [`wire`]: request and response shapes; [`convert`]: wire ⇄ domain;
//!   [`sse`]: domain events → stream events; [`signature`]: signing thinking blocks;
//!   [`error`]: Anthropic-shaped errors.
//! - this module: the handlers.
//!
//! Any `anthropic-version`, any `anthropic-beta` and query parameters such as `?beta=true` are
//! accepted and ignored; the key comes as `x-api-key` or `Authorization: Bearer` (middleware).

pub mod convert;
pub mod error;
pub mod signature;
pub mod sse;
pub mod wire;

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use time::format_description::well_known::Rfc3339;

use self::sse::MessageEncoder;
use crate::dialects::{Dialect, limits, read_body, stream};
use crate::domain::StreamEvent;
use crate::error::GatewayError;
use crate::startup::AppState;

pub use self::signature::ThinkingSigner;

/// Registers the Anthropic routes on the `/v1` scope.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/messages", web::post().to(messages))
        .route("/messages/count_tokens", web::post().to(count_tokens));
}

fn refused(e: GatewayError) -> HttpResponse {
    stream::refused(Dialect::Anthropic, &e)
}

/// `POST /v1/messages`.
#[tracing::instrument(skip_all, fields(model, stream))]
async fn messages(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    stream::or_refused(Dialect::Anthropic, handle(state, req, payload).await)
}

async fn handle(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, GatewayError> {
    let body = read_body(payload, state.max_body_bytes()).await?;
    let len = body.len();
    let st = state.clone();
    let convert::Parsed {
        request,
        show_thinking,
    } = limits::parse_body(body, len, move |body| {
        convert::parse_messages(
            body,
            &st.thinking_signer,
            st.chat.models(),
            &st.live.load().limits,
        )
    })
    .await?;
    tracing::Span::current()
        .record(
            "model",
            tracing::field::display(crate::telemetry::untrusted(request.model.public_name())),
        )
        .record("stream", request.stream);
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let model_name = request.model.public_name().to_owned();
    let signer = state.thinking_signer.clone();
    let (stream_id, stream_model, stream_signer) = (id.clone(), model_name.clone(), signer.clone());
    stream::respond(
        &state,
        &req,
        stream::Turn {
            dialect: Dialect::Anthropic,
            request,
        },
        move |input| {
            MessageEncoder::new(stream_id, stream_model, input, stream_signer)
                .show_thinking(show_thinking)
        },
        move |answer| {
            let shown: Vec<StreamEvent>;
            let events = if show_thinking {
                &answer.events
            } else {
                shown = answer
                    .events
                    .iter()
                    .filter(|e| !matches!(e, StreamEvent::Thought(_)))
                    .cloned()
                    .collect();
                &shown
            };
            Bytes::from(convert::message(
                &id,
                &model_name,
                events,
                answer.usage,
                answer.finish,
                &signer,
            ))
        },
    )
    .await
}

/// `POST /v1/messages/count_tokens`: the gateway's estimate of the request's input tokens
/// (the same estimate the answers report), after the same validation as `/v1/messages`.
async fn count_tokens(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let counted = async {
        let body = read_body(payload, state.max_body_bytes()).await?;
        let len = body.len();
        let st = state.clone();
        limits::parse_body(body, len, move |body| {
            let request = convert::parse(
                body,
                &st.thinking_signer,
                st.chat.models(),
                &st.live.load().limits,
            )?;
            Ok((
                request.model.public_name().to_owned(),
                st.chat.input_tokens(&request),
            ))
        })
        .await
        .and_then(|(model, n)| crate::keys::check_model(&req, &model).map(|()| n))
    };
    match counted.await {
        Ok(n) => HttpResponse::Ok().json(serde_json::json!({ "input_tokens": n })),
        Err(e) => refused(e),
    }
}

/// A display name from a model id: `gemini-2.5-flash-image` → `Gemini 2.5 Flash Image`.
fn display_name(id: &str) -> String {
    id.split('-')
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn model_object(id: String, created_at: &str) -> wire::ModelObject {
    wire::ModelObject {
        kind: "model",
        display_name: display_name(&id),
        id,
        created_at: created_at.to_owned(),
        lifecycle: "active",
    }
}

fn created_at(state: &AppState) -> String {
    i64::try_from(state.started_unix)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Anthropic's page of models: `limit` (1–1000, default 20), `after_id`, `before_id`.
fn page(ids: &[String], query: &str) -> Result<(Vec<String>, bool), GatewayError> {
    let mut limit = 20usize;
    let mut after = None;
    let mut before = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        GatewayError::invalid(
                            "limit: must be an integer from 1 to 1000",
                            Some("limit".to_owned()),
                        )
                    })?;
            }
            "after_id" => after = Some(v.into_owned()),
            "before_id" => before = Some(v.into_owned()),
            _ => {}
        }
    }
    let position = |id: &str, param: &str| {
        ids.iter().position(|m| m == id).ok_or_else(|| {
            GatewayError::invalid(
                format!("{param}: no model `{id}` is listed"),
                Some(param.to_owned()),
            )
        })
    };
    if let Some(before) = before {
        let end = position(&before, "before_id")?;
        let start = end.saturating_sub(limit);
        return Ok((ids[start..end].to_vec(), start > 0));
    }
    let start = match after {
        Some(after) => position(&after, "after_id")? + 1,
        None => 0,
    };
    let end = (start + limit).min(ids.len());
    Ok((ids[start..end].to_vec(), end < ids.len()))
}

/// `GET /v1/models` in Anthropic's shape.
pub async fn list_models(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let listed: Vec<String> = state
        .chat
        .models()
        .listed()
        .iter()
        .map(|m| m.public_name().to_owned())
        .filter(|m| crate::keys::allows(&req, m))
        .collect();
    let (ids, has_more) = match page(&listed, req.query_string()) {
        Ok(p) => p,
        Err(e) => return refused(e),
    };
    let created = created_at(&state);
    let first_id = ids.first().cloned();
    let last_id = ids.last().cloned();
    HttpResponse::Ok().json(wire::ModelList {
        data: ids
            .into_iter()
            .map(|id| model_object(id, &created))
            .collect(),
        has_more,
        first_id,
        last_id,
    })
}

/// `GET /v1/models/{id}` in Anthropic's shape.
pub async fn get_model(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    match state.chat.models().parse(&path) {
        Ok(m) if !crate::keys::allows(&req, m.public_name()) => {
            refused(crate::keys::refusal(&req, m.public_name()))
        }
        Ok(m) => HttpResponse::Ok().json(model_object(
            m.public_name().to_owned(),
            &created_at(&state),
        )),
        Err(e) => refused(GatewayError::Model(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names() {
        assert_eq!(
            display_name("gemini-2.5-flash-image"),
            "Gemini 2.5 Flash Image"
        );
    }

    #[test]
    fn pages() {
        let ids: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
        assert_eq!(page(&ids, "").unwrap(), (ids.clone(), false));
        assert_eq!(
            page(&ids, "limit=2").unwrap(),
            (vec!["m0".into(), "m1".into()], true)
        );
        assert_eq!(
            page(&ids, "limit=2&after_id=m2").unwrap(),
            (vec!["m3".into(), "m4".into()], false)
        );
        assert_eq!(
            page(&ids, "limit=2&before_id=m3").unwrap(),
            (vec!["m1".into(), "m2".into()], true)
        );
        assert_eq!(page(&ids, "beta=true").unwrap(), (ids.clone(), false));
        assert_eq!(page(&ids, "limit=0").unwrap_err().status(), 400);
        assert_eq!(page(&ids, "after_id=nope").unwrap_err().status(), 400);
    }
}
