//! Errors in OpenAI's shape: `{"error":{"message","type","param","code"}}`.

use actix_web::HttpResponse;
use bytes::Bytes;

use super::wire::{ErrorEnvelope, ErrorObject};
use crate::domain::ModelError;
use crate::error::{Category, GatewayError};

/// OpenAI's `type` and `code` for an error.
fn type_and_code(error: &GatewayError) -> (&'static str, Option<&'static str>) {
    match error {
        GatewayError::MissingApiKey => ("invalid_request_error", Some("missing_api_key")),
        GatewayError::InvalidApiKey => ("invalid_request_error", Some("invalid_api_key")),
        GatewayError::PayloadTooLarge { .. } => {
            ("invalid_request_error", Some("request_too_large"))
        }
        GatewayError::UriTooLong { .. } => ("invalid_request_error", Some("uri_too_long")),
        GatewayError::HeadersTooLarge(_) => ("invalid_request_error", Some("headers_too_large")),
        GatewayError::Model(ModelError::Unknown(_)) => {
            ("invalid_request_error", Some("model_not_found"))
        }
        GatewayError::NoAccountAvailable { .. } => ("server_error", Some("no_account_available")),
        GatewayError::Busy => ("server_error", Some("server_busy")),
        GatewayError::BodyTimeout { .. } => ("invalid_request_error", Some("request_timeout")),
        _ => match error.category() {
            Category::Authentication | Category::InvalidRequest => ("invalid_request_error", None),
            Category::PermissionDenied => ("permission_error", Some("model_not_allowed")),
            Category::NotFound => ("invalid_request_error", Some("not_found")),
            Category::RateLimited => ("rate_limit_error", Some("rate_limit_exceeded")),
            Category::QuotaExhausted => ("insufficient_quota", Some("insufficient_quota")),
            Category::Unavailable => ("server_error", Some("upstream_unavailable")),
            Category::Upstream => ("server_error", Some("upstream_error")),
            Category::Timeout => ("server_error", Some("upstream_timeout")),
            Category::Internal => ("server_error", None),
        },
    }
}

fn param(error: &GatewayError) -> Option<&str> {
    match error {
        GatewayError::InvalidRequest { param, .. } => param.as_deref(),
        GatewayError::Model(_) => Some("model"),
        _ => None,
    }
}

/// The JSON body of an error.
pub fn body(error: &GatewayError) -> Bytes {
    let message = error.client_message();
    let (kind, code) = type_and_code(error);
    let envelope = ErrorEnvelope {
        error: ErrorObject {
            message: &message,
            kind,
            param: param(error),
            code,
        },
    };
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

/// A complete error response.
pub fn response(error: &GatewayError) -> HttpResponse {
    crate::dialects::error_with_body(error, body(error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn shapes() {
        let v: serde_json::Value =
            serde_json::from_slice(&body(&GatewayError::InvalidApiKey)).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert!(v["error"]["param"].is_null());
        let v: serde_json::Value = serde_json::from_slice(&body(&GatewayError::Model(
            ModelError::Unknown("gpt-x".into()),
        )))
        .unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-x"));
    }

    #[test]
    fn retry_after_header() {
        let r = response(&GatewayError::NoAccountAvailable {
            retry_after: Duration::from_secs(12),
            empty: false,
        });
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers().get("retry-after").unwrap(), "12");
    }
}
