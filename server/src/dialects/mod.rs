//! The client-facing wire formats. Each dialect converts its requests into the domain and the
//! domain's answers and errors back into its own exact shapes.
//!
//! # Layout
//! - [`openai`]: `/v1/chat/completions`, `/v1/responses`, `/v1/images/generations`, `/v1/models`.
//! - [`anthropic`]: `/v1/messages`, `/v1/messages/count_tokens`, `/v1/models` (Anthropic shape).
//! - [`gemini`]: `/v1beta/models...` and `/v1/models/{m}:action`.
//! - [`stream`]: the answer driver every dialect plugs its encoder into.
//! - this module: what every dialect shares — reading a bounded body, data URLs, which dialect
//!   a request speaks (for errors raised before a handler runs, like a missing key), and the
//!   `/v1/models` routes whose dialect depends on the request's headers.

pub mod anthropic;
pub mod gemini;
pub mod limits;
pub mod openai;
pub mod stream;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::auth::ApiKeyGate;
use crate::error::GatewayError;
use crate::startup::AppState;

/// The wire format a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Dialect {
    /// The dialect of a request, from its path and headers (client-compat.md):
    /// - `/v1beta/...` and `/v1/models/{m}:action` (with a colon) are Gemini;
    /// - `/v1/messages...` is Anthropic;
    /// - `/v1/models` and `/v1/models/{m}` are Gemini when the key came as `x-goog-api-key` or
    ///   `?key=`, Anthropic when `anthropic-version` is present, otherwise OpenAI;
    /// - everything else is OpenAI.
    pub fn of(req: &HttpRequest) -> Dialect {
        let path = req.path();
        if path.starts_with("/v1beta/") || path == "/v1beta" {
            return Dialect::Gemini;
        }
        if path.starts_with("/v1/messages") {
            return Dialect::Anthropic;
        }
        if let Some(rest) = path.strip_prefix("/v1/models") {
            if rest.contains(':') {
                return Dialect::Gemini;
            }
            return Self::of_models_listing(req);
        }
        Dialect::OpenAi
    }

    /// The dialect of a request to the API (`/v1…`, `/v1beta…`); `None` for other paths (the
    /// admin API, health, media).
    pub fn of_api(req: &HttpRequest) -> Option<Dialect> {
        let path = req.path();
        let api = ["/v1", "/v1beta"]
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")));
        api.then(|| Dialect::of(req))
    }

    /// The dialect of `GET /v1/models[/{m}]`, from the headers.
    fn of_models_listing(req: &HttpRequest) -> Dialect {
        let headers = req.headers();
        let query_key =
            url::form_urlencoded::parse(req.query_string().as_bytes()).any(|(k, _)| k == "key");
        if headers.contains_key("x-goog-api-key") || query_key {
            Dialect::Gemini
        } else if headers.contains_key("anthropic-version") {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        }
    }

    /// Renders an error in this dialect's shape with the right status and `retry-after`.
    pub fn error_response(self, error: &GatewayError) -> HttpResponse {
        match self {
            Dialect::OpenAi => openai::error::response(error),
            Dialect::Anthropic => anthropic::error::response(error),
            Dialect::Gemini => gemini::error::response(error),
        }
    }

    /// The JSON body of an error in this dialect's shape.
    pub fn error_body(self, error: &GatewayError) -> Bytes {
        match self {
            Dialect::OpenAi => openai::error::body(error),
            Dialect::Anthropic => anthropic::error::body(error),
            Dialect::Gemini => gemini::error::body(error),
        }
    }
}

/// An error response with `body` (already in the caller's dialect): the error's status, and
/// `retry-after` for 429 and 503.
pub fn error_with_body(error: &GatewayError, body: Bytes) -> HttpResponse {
    let mut builder = HttpResponse::build(error.status());
    if let Some(after) = error.retry_after() {
        builder.insert_header((
            actix_web::http::header::RETRY_AFTER,
            after.as_secs().max(1).to_string(),
        ));
    }
    builder.content_type("application/json").body(body)
}

/// `GET /v1/models`, in the dialect the headers indicate.
pub async fn list_models(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    match Dialect::of_models_listing(&req) {
        Dialect::OpenAi => openai::list_models(state, req).await,
        Dialect::Anthropic => anthropic::list_models(state, req).await,
        Dialect::Gemini => gemini::list_models(state, req).await,
    }
}

/// `GET /v1/models/{m}`, in the dialect the headers indicate.
pub async fn get_model(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    match Dialect::of_models_listing(&req) {
        Dialect::OpenAi => openai::get_model(state, req, path).await,
        Dialect::Anthropic => anthropic::get_model(state, req, path).await,
        Dialect::Gemini => gemini::get_model(state, req, path).await,
    }
}

/// Middleware: refuses requests without a valid API key, in the caller's dialect.
pub async fn require_api_key(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let verdict = caller(&req);
    match verdict {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(e) => {
            let response = Dialect::of(req.request()).error_response(&e);
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

/// Who the request is: a named key (admitted under its limits), else a configured key, else
/// open access; or why it may not use the API.
fn caller(req: &ServiceRequest) -> Result<crate::keys::Caller, GatewayError> {
    let Some(gate) = req.app_data::<web::Data<ApiKeyGate>>() else {
        return Err(GatewayError::Internal);
    };
    if let Some(usage) = req.app_data::<web::Data<crate::usage::Usage>>()
        && let Some(presented) = crate::auth::presented_key(req.request())
        && let Some(named) = usage.keys.lookup(&presented)
    {
        // Known even when refused below: a request over the key's limit counts as its failure.
        let caller = crate::keys::Caller::Named(std::sync::Arc::clone(&named));
        req.extensions_mut().insert(caller.clone());
        // POST requests are the ones that cost: listing models or polling a job does not count
        // toward the per-minute limit.
        usage
            .keys
            .admit(&named, req.method() == actix_web::http::Method::POST)?;
        return Ok(caller);
    }
    gate.caller(req.request())
}

/// Reads a request body of at most `limit` bytes.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Bytes, GatewayError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| crate::body::payload_error(e, limit))?;
        if buf.len() + chunk.len() > limit {
            return Err(GatewayError::PayloadTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A decoded `data:` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataUrl {
    pub mime: String,
    pub data: Bytes,
}

/// Parses `data:<mime>;base64,<data>`. Only base64 data URLs are accepted (media is binary).
pub fn parse_data_url(url: &str) -> Result<DataUrl, String> {
    let rest = url
        .strip_prefix("data:")
        .ok_or_else(|| "not a data URL".to_owned())?;
    let (header, data) = rest
        .split_once(',')
        .ok_or_else(|| "the data URL has no comma".to_owned())?;
    let mut params = header.split(';');
    let mime = params
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !params.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err("only base64 data URLs are supported".to_owned());
    }
    let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|_| "the data URL is not valid base64".to_owned())?;
    if bytes.is_empty() {
        return Err("the data URL is empty".to_owned());
    }
    let mime = if mime.is_empty() {
        "application/octet-stream".to_owned()
    } else {
        mime
    };
    Ok(DataUrl {
        mime,
        data: Bytes::from(bytes),
    })
}

/// Generation options from a dialect's loosely typed fields. A value of an unexpected type is
/// ignored, as before these options were read (no request that was accepted is now refused).
pub fn generation_options(
    max_output_tokens: Option<&serde_json::Value>,
    temperature: Option<&serde_json::Value>,
    top_p: Option<&serde_json::Value>,
    stop: Option<&serde_json::Value>,
) -> crate::domain::GenerationOptions {
    use serde_json::Value;
    let stop = match stop {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    crate::domain::GenerationOptions {
        max_output_tokens: max_output_tokens
            .and_then(Value::as_u64)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        temperature: temperature.and_then(Value::as_f64),
        top_p: top_p.and_then(Value::as_f64),
        stop,
    }
}

/// Settles a request's tool choice against its declared tools: `allowed` (OpenAI's
/// `allowed_tools`, Gemini's `allowedFunctionNames`) narrows the tools first; "none" clears
/// them (the model is given no tools); a forced choice must have a tool to call. The error is
/// the message for the dialect's `tool_choice` parameter.
pub fn settle_tool_choice(
    tools: &mut Vec<crate::domain::ToolSpec>,
    choice: crate::domain::ToolChoice,
    allowed: Option<&[String]>,
) -> Result<crate::domain::ToolChoice, String> {
    use crate::domain::ToolChoice;
    if let Some(allowed) = allowed {
        if let Some(unknown) = allowed
            .iter()
            .find(|n| !tools.iter().any(|t| &t.name == *n))
        {
            return Err(format!(
                "names the tool \"{unknown}\", which is not among the declared tools"
            ));
        }
        tools.retain(|t| allowed.contains(&t.name));
    }
    match &choice {
        ToolChoice::None => tools.clear(),
        ToolChoice::Named(name) if !tools.iter().any(|t| &t.name == name) => {
            return Err(format!(
                "names the tool \"{name}\", which is not among the declared tools"
            ));
        }
        ToolChoice::Required if tools.is_empty() => {
            return Err("requires a tool call, but no tools are declared".to_owned());
        }
        _ => {}
    }
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls() {
        let d = parse_data_url("data:image/PNG;base64,AAEC").unwrap();
        assert_eq!(d.mime, "image/png");
        assert_eq!(&d.data[..], &[0, 1, 2]);
        let d = parse_data_url("data:;base64,AA\nEC").unwrap();
        assert_eq!(d.mime, "application/octet-stream");
        assert!(
            parse_data_url("data:image/png,abc")
                .unwrap_err()
                .contains("base64")
        );
        assert!(
            parse_data_url("data:image/png;base64,!!")
                .unwrap_err()
                .contains("valid base64")
        );
        assert!(parse_data_url("https://x").is_err());
        assert!(parse_data_url("data:image/png;base64,").is_err());
    }
}
