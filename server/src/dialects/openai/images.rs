//! The OpenAI Images API: `POST /v1/images/generations`.
//!
//! The prompt goes upstream as one user message to an image model (`model` must have the
//! `-image` feature; default `gemini-2.5-flash-image`). `n` (1–4) runs that many upstream
//! generations in parallel; every image they produce is returned, at most `n`. An answer with
//! no image at all is a 502. `response_format` is `b64_json` (the default, as for OpenAI's GPT
//! image models) or `url` (the gateway's expiring link to its stored copy; if storing failed,
//! that image comes back as `b64_json`). `size`, `quality`, `style`, `background`,
//! `output_format`, `moderation` and `user` are accepted and not applied (the upstream has no
//! such knobs). Generations take long: the answer goes through `stream::json_answer` with
//! `long = true`, so leading spaces keep the connection alive.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::unix_now;
use crate::dialects::{Dialect, read_body, stream};
use crate::domain::{
    ChatRequest, GeneratedMedia, MediaKind, Message, ModelId, Part, Role, StreamEvent, Usage,
};
use crate::error::GatewayError;
use crate::media::MediaOut;
use crate::startup::AppState;
use crate::upstream::{ErrorKind, ModelRegistry, UpstreamError};

/// The model used when the request names none.
pub const DEFAULT_IMAGE_MODEL: &str = "gemini-2.5-flash-image";
/// The most images one request may ask for.
pub const MAX_N: u32 = 4;

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    response_format: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Url,
    B64Json,
}

#[derive(Debug)]
struct Parsed {
    model: ModelId,
    prompt: String,
    n: u32,
    format: Format,
}

fn invalid(message: impl Into<String>, param: &str) -> GatewayError {
    GatewayError::invalid(message, Some(param.to_owned()))
}

fn parse(body: &[u8], models: &ModelRegistry, max_depth: u32) -> Result<Parsed, GatewayError> {
    crate::dialects::limits::check_depth(body, max_depth)?;
    let wire: Request = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid(
            format!("the request body is not valid JSON for this endpoint: {e}"),
            None,
        )
    })?;
    let name = wire
        .model
        .as_deref()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or(DEFAULT_IMAGE_MODEL);
    let model = models.parse(name)?;
    if !model.features().image {
        return Err(invalid(
            format!(
                "the model `{}` does not generate images; use an -image model such as {DEFAULT_IMAGE_MODEL}",
                model.public_name()
            ),
            "model",
        ));
    }
    let prompt = wire
        .prompt
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| invalid("prompt is required", "prompt"))?;
    let n = wire.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(invalid(format!("n must be between 1 and {MAX_N}"), "n"));
    }
    let format = match wire.response_format.as_deref() {
        None | Some("b64_json") => Format::B64Json,
        Some("url") => Format::Url,
        Some(other) => {
            return Err(invalid(
                format!("unknown response_format `{other}` (expected url or b64_json)"),
                "response_format",
            ));
        }
    };
    if wire.stream == Some(true) {
        return Err(invalid(
            "streamed image generation is not supported; omit stream",
            "stream",
        ));
    }
    Ok(Parsed {
        model,
        prompt,
        n,
        format,
    })
}

/// The `data` entry of one image.
fn image_json(m: &GeneratedMedia, format: Format) -> Value {
    match (format, &m.url) {
        (Format::Url, Some(url)) => json!({ "url": url }),
        _ => json!({ "b64_json": STANDARD.encode(&m.data) }),
    }
}

/// The images response body.
fn body(created: u64, images: &[GeneratedMedia], format: Format, usage: Usage) -> Value {
    let data: Vec<Value> = images.iter().map(|m| image_json(m, format)).collect();
    json!({
        "created": created,
        "data": data,
        "usage": {
            "input_tokens": usage.input_tokens,
            "input_tokens_details": {"text_tokens": usage.input_tokens, "image_tokens": 0},
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens(),
        },
    })
}

fn no_image() -> GatewayError {
    GatewayError::Upstream(UpstreamError::new(
        ErrorKind::Protocol,
        "images",
        "the upstream answered without generating an image",
    ))
}

/// `POST /v1/images/generations`.
#[tracing::instrument(skip_all, fields(model, n))]
pub async fn generations(
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
    let body_bytes = read_body(payload, state.max_body_bytes()).await?;
    let len = body_bytes.len();
    let st = state.clone();
    let parsed = crate::dialects::limits::parse_body(body_bytes, len, move |body| {
        parse(body, st.chat.models(), st.live.load().limits.max_depth)
    })
    .await?;
    tracing::Span::current()
        .record(
            "model",
            tracing::field::display(crate::telemetry::untrusted(parsed.model.public_name())),
        )
        .record("n", parsed.n);
    crate::metrics::note_model(&req, &parsed.model);
    let request = ChatRequest::new(
        parsed.model.clone(),
        vec![Message::new(
            Role::User,
            vec![Part::Text(parsed.prompt.clone())],
        )],
    );
    let note = crate::usage::UsageNote::of(&req);
    note.model(parsed.model.public_name());
    crate::keys::check_model(&req, parsed.model.public_name())?;
    let input = state.chat.input_tokens(&request);
    note.input_tokens(input);
    let media = MediaOut::new(Arc::clone(&state.media), &req);
    let chat = state.chat.clone();
    let (n, format) = (parsed.n, parsed.format);
    let answer = async move {
        let runs = (0..n).map(|_| stream::complete(&chat, request.clone(), input, &media, &note));
        let results = futures_util::future::join_all(runs).await;
        let mut images = Vec::new();
        let mut usage = Usage {
            input_tokens: 0,
            output_tokens: 0,
            reasoning_tokens: 0,
        };
        let mut first_error = None;
        for result in results {
            match result {
                Ok(answer) => {
                    usage.input_tokens += answer.usage.input_tokens;
                    usage.output_tokens += answer.usage.output_tokens;
                    usage.reasoning_tokens += answer.usage.reasoning_tokens;
                    images.extend(answer.events.into_iter().filter_map(|e| match e {
                        StreamEvent::Media(m)
                            if MediaKind::from_mime(&m.mime) == MediaKind::Image =>
                        {
                            Some(m)
                        }
                        _ => None,
                    }));
                }
                Err(e) => {
                    tracing::info!(error = %crate::telemetry::untrusted(&e.to_string()), "one image generation failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        images.truncate(n as usize);
        if images.is_empty() {
            return Err(first_error.unwrap_or_else(no_image));
        }
        let body = body(unix_now(), &images, format, usage);
        Ok(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()))
    };
    Ok(stream::json_answer(
        Dialect::OpenAi,
        answer,
        true,
        state.nonstream_keepalive_after(),
        state.keepalive(),
    )
    .await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_json(v: Value) -> Result<Parsed, GatewayError> {
        parse(
            &serde_json::to_vec(&v).unwrap(),
            &ModelRegistry::gemini_business_names(),
            64,
        )
    }

    #[test]
    fn defaults_and_refusals() {
        let p = parse_json(
            json!({"prompt": "a cat", "size": "1024x1024", "quality": "hd",
            "style": "vivid", "user": "u", "background": "auto", "output_format": "png"}),
        )
        .unwrap();
        assert_eq!(p.model.public_name(), DEFAULT_IMAGE_MODEL);
        assert_eq!((p.n, p.format), (1, Format::B64Json));
        let p = parse_json(json!({"model": "gemini-3-pro-image", "prompt": "x", "n": 4,
            "response_format": "url"}))
        .unwrap();
        assert_eq!((p.n, p.format), (4, Format::Url));
        for (body, status, param) in [
            (
                json!({"model": "gemini-2.5-flash", "prompt": "x"}),
                400,
                Some("model"),
            ),
            (
                json!({"model": "dall-e-9", "prompt": "x"}),
                404,
                Some("model"),
            ),
            (json!({"prompt": "x", "n": 5}), 400, Some("n")),
            (json!({"prompt": "x", "n": 0}), 400, Some("n")),
            (json!({"prompt": " "}), 400, Some("prompt")),
            (
                json!({"prompt": "x", "response_format": "png"}),
                400,
                Some("response_format"),
            ),
            (json!({"prompt": "x", "stream": true}), 400, Some("stream")),
        ] {
            let e = parse_json(body.clone()).unwrap_err();
            assert_eq!(e.status(), status, "{body}");
            let got = match &e {
                GatewayError::InvalidRequest { param, .. } => param.as_deref(),
                GatewayError::Model(_) => Some("model"),
                _ => None,
            };
            assert_eq!(got, param, "{body}");
        }
    }

    #[test]
    fn url_falls_back_to_b64_when_not_stored() {
        let mut m = GeneratedMedia::new("image/png", Bytes::from_static(&[1, 2]));
        assert_eq!(image_json(&m, Format::Url), json!({"b64_json": "AQI="}));
        m.url = Some("http://gw/media/x.png".into());
        assert_eq!(
            image_json(&m, Format::Url),
            json!({"url": "http://gw/media/x.png"})
        );
        assert_eq!(image_json(&m, Format::B64Json), json!({"b64_json": "AQI="}));
        let v = body(7, &[m], Format::Url, Usage::default());
        assert_eq!(v["created"], 7);
        assert_eq!(v["data"].as_array().unwrap().len(), 1);
    }
}
