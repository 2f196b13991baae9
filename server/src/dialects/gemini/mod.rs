//! The Gemini dialect, under `/v1beta/` and `/v1/`: `GET models`, `GET models/{m}`,
//! `POST models/{m}:generateContent`, `:streamGenerateContent` (SSE with `?alt=sse`, otherwise
//! a streamed JSON array), `:countTokens`.
//!
//! # Layout
//! - [`wire`]: request and response shapes; [`convert`]: wire ⇄ domain;
//!   [`encoder`]: domain events → stream chunks; [`error`]: Google-shaped errors.
//! - this module: the handlers.

pub mod convert;
pub mod encoder;
pub mod error;
pub mod grounding;
pub mod wire;

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;

use self::encoder::{ChunkEncoder, Framing};
use crate::dialects::{Dialect, limits, read_body, stream};
use crate::domain::{ChatRequest, ModelId};
use crate::error::GatewayError;
use crate::startup::AppState;

/// Registers the `/v1beta` routes (the `/v1` ones are shared with the other dialects and
/// registered in `startup`).
pub fn routes_v1beta(cfg: &mut web::ServiceConfig) {
    cfg.route("/models", web::get().to(list_models))
        .route("/models/{model}", web::get().to(get_model))
        .route("/models/{action:.*}", web::post().to(action));
}

/// The methods every model supports.
const METHODS: [&str; 3] = ["generateContent", "streamGenerateContent", "countTokens"];
const INPUT_TOKEN_LIMIT: u32 = 1_048_576;
const OUTPUT_TOKEN_LIMIT: u32 = 65_536;

/// `gemini-2.5-flash-preview-latest` → `Gemini 2.5 Flash Preview Latest`.
fn title(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(" ")
}

fn model_out(model: &ModelId) -> wire::ModelOut {
    let base = model.spec().name.as_str();
    let features = model.features();
    let mut tools = Vec::new();
    if features.image {
        tools.push("image generation");
    }
    if features.video {
        tools.push("video generation");
    }
    if features.search {
        tools.push("web search");
    }
    let (display_suffix, description) = if tools.is_empty() {
        (
            String::new(),
            format!("{} through Gemini Business, with every tool", title(base)),
        )
    } else {
        (
            format!(" ({})", tools.join(", ")),
            format!(
                "{} through Gemini Business, with {}",
                title(base),
                tools.join(" and ")
            ),
        )
    };
    wire::ModelOut {
        name: format!("models/{}", model.public_name()),
        base_model_id: base.to_owned(),
        version: base
            .strip_prefix("gemini-")
            .and_then(|rest| rest.split('-').next())
            .unwrap_or("1")
            .to_owned(),
        display_name: format!("{}{display_suffix}", title(base)),
        description,
        input_token_limit: INPUT_TOKEN_LIMIT,
        output_token_limit: OUTPUT_TOKEN_LIMIT,
        supported_generation_methods: METHODS,
        temperature: 1.0,
        max_temperature: 2.0,
        top_p: 0.95,
        top_k: 64,
        thinking: true,
    }
}

/// `GET .../models` in Google's shape. `pageSize` and `pageToken` are accepted; every model
/// fits in one page, so there is never a `nextPageToken`.
pub async fn list_models(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let models = state
        .chat
        .models()
        .listed()
        .iter()
        .filter(|m| crate::keys::allows(&req, m.public_name()))
        .map(model_out)
        .collect();
    HttpResponse::Ok().json(wire::ModelList { models })
}

/// `GET .../models/{m}` in Google's shape (`m` with or without `models/`).
pub async fn get_model(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    match state.chat.models().parse(&path) {
        Ok(m) if !crate::keys::allows(&req, m.public_name()) => {
            error::response(&crate::keys::refusal(&req, m.public_name()))
        }
        Ok(m) => HttpResponse::Ok().json(model_out(&m)),
        Err(e) => error::response(&GatewayError::Model(e)),
    }
}

/// The methods of `POST models/{m}:{method}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Generate,
    Stream,
    CountTokens,
}

/// Splits `gemini-2.5-flash:generateContent` at its last colon (or says why it cannot, for a
/// 404).
fn split_action(path: &str) -> Result<(&str, Method), String> {
    let Some((model, method)) = path.rsplit_once(':') else {
        return Err(format!(
            "POST models/{path} names no method: use models/{{model}}:generateContent, :streamGenerateContent or :countTokens"
        ));
    };
    let method = match method {
        "generateContent" => Method::Generate,
        "streamGenerateContent" => Method::Stream,
        "countTokens" => Method::CountTokens,
        other => {
            return Err(format!(
                "the method `{other}` is not supported by this gateway (supported: generateContent, streamGenerateContent, countTokens)"
            ));
        }
    };
    Ok((model, method))
}

/// Whether the query asks for SSE (`alt=sse`, also spelled `$alt=sse`).
fn wants_sse(req: &HttpRequest) -> bool {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .any(|(k, v)| (k == "alt" || k == "$alt") && v.eq_ignore_ascii_case("sse"))
}

/// `POST .../models/{m}:{method}`.
#[tracing::instrument(skip_all, fields(model, method))]
pub async fn action(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let (model, method) = match split_action(&path) {
        Ok(found) => found,
        Err(message) => return error::not_found(&message),
    };
    tracing::Span::current().record("method", format!("{method:?}"));
    let result = match state.chat.models().parse(model) {
        Err(e) => Err(GatewayError::Model(e)),
        Ok(model) => {
            tracing::Span::current().record(
                "model",
                tracing::field::display(crate::telemetry::untrusted(model.public_name())),
            );
            match method {
                Method::CountTokens => match crate::keys::check_model(&req, model.public_name()) {
                    Ok(()) => count_tokens(&state, model, payload).await,
                    Err(e) => Err(e),
                },
                Method::Generate | Method::Stream => {
                    generate(&state, &req, model, method == Method::Stream, payload).await
                }
            }
        }
    };
    stream::or_refused(Dialect::Gemini, result)
}

async fn count_tokens(
    state: &web::Data<AppState>,
    model: ModelId,
    payload: web::Payload,
) -> Result<HttpResponse, GatewayError> {
    let body = read_body(payload, state.max_body_bytes()).await?;
    let len = body.len();
    let st = state.clone();
    let total_tokens = limits::parse_body(body, len, move |body| {
        let parsed = convert::parse_count(body, &st.live.load().limits)?;
        let mut request = ChatRequest::new(model, parsed.messages);
        request.tools = parsed.tools;
        request.tool_choice = parsed.tool_choice;
        Ok(st.chat.input_tokens(&request))
    })
    .await?;
    Ok(HttpResponse::Ok().json(wire::CountTokensResponse { total_tokens }))
}

async fn generate(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    model: ModelId,
    streamed: bool,
    payload: web::Payload,
) -> Result<HttpResponse, GatewayError> {
    let body = read_body(payload, state.max_body_bytes()).await?;
    let len = body.len();
    let st = state.clone();
    let parsed = limits::parse_body(body, len, move |body| {
        convert::parse_generate(body, &st.live.load().limits)
    })
    .await?;
    let response_id = uuid::Uuid::new_v4().simple().to_string();
    let model_name = model.public_name().to_owned();
    let include_thoughts = parsed.include_thoughts;
    let framing = if wants_sse(req) {
        Framing::Sse
    } else {
        Framing::Array
    };
    let (name, id) = (model_name.clone(), response_id.clone());
    stream::respond(
        state,
        req,
        stream::Turn {
            dialect: Dialect::Gemini,
            request: ChatRequest {
                model,
                messages: parsed.messages,
                stream: streamed,
                tools: parsed.tools,
                tool_choice: parsed.tool_choice,
                parallel_tool_calls: true,
                options: parsed.options,
            },
        },
        |_| ChunkEncoder::new(framing, name, id, include_thoughts),
        move |answer| {
            Bytes::from(convert::response_body(
                &answer.events,
                answer.usage,
                &model_name,
                &response_id,
                include_thoughts,
            ))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::ModelRegistry;

    #[test]
    fn actions_split_at_the_last_colon() {
        let (m, method) = split_action("gemini-2.5-flash:streamGenerateContent").unwrap();
        assert_eq!((m, method), ("gemini-2.5-flash", Method::Stream));
        let (m, method) = split_action("models/gemini-2.5-pro:countTokens").unwrap();
        assert_eq!((m, method), ("models/gemini-2.5-pro", Method::CountTokens));
        assert!(
            split_action("gemini-2.5-flash:embedContent")
                .unwrap_err()
                .contains("`embedContent` is not supported")
        );
        assert!(
            split_action("gemini-2.5-flash")
                .unwrap_err()
                .contains("names no method")
        );
    }

    #[test]
    fn model_entries() {
        let m = model_out(
            &ModelRegistry::gemini_business_names()
                .parse("gemini-2.5-flash-image")
                .unwrap(),
        );
        assert_eq!(m.name, "models/gemini-2.5-flash-image");
        assert_eq!(m.display_name, "Gemini 2.5 Flash (image generation)");
        assert_eq!(m.version, "2.5");
        let m = model_out(
            &ModelRegistry::gemini_business_names()
                .parse("gemini-3-pro-preview")
                .unwrap(),
        );
        assert_eq!(m.version, "3");
        assert_eq!(m.display_name, "Gemini 3 Pro Preview");
    }
}
