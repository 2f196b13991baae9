//! Errors in Anthropic's shape:
//! `{"type":"error","error":{"type":"invalid_request_error"|…,"message":"…"}}`.

use actix_web::HttpResponse;
use bytes::Bytes;
use serde_json::json;

use crate::error::{Category, GatewayError};

/// Anthropic's error `type` for an error.
pub fn error_type(error: &GatewayError) -> &'static str {
    if matches!(error, GatewayError::PayloadTooLarge { .. }) {
        return "request_too_large";
    }
    match error.category() {
        Category::Authentication => "authentication_error",
        Category::PermissionDenied => "permission_error",
        Category::InvalidRequest => "invalid_request_error",
        Category::NotFound => "not_found_error",
        Category::RateLimited | Category::QuotaExhausted => "rate_limit_error",
        Category::Unavailable => "overloaded_error",
        Category::Upstream | Category::Timeout | Category::Internal => "api_error",
    }
}

/// The inner error object (also the payload of a streamed `event: error`).
pub fn object(error: &GatewayError) -> serde_json::Value {
    json!({"type": error_type(error), "message": error.client_message()})
}

/// The JSON body of an error.
pub fn body(error: &GatewayError) -> Bytes {
    let v = json!({"type": "error", "error": object(error)});
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

/// A complete error response. Overloaded (no account) is Anthropic's 529 only in name: the
/// status stays 503 so that generic HTTP clients and proxies understand it.
pub fn response(error: &GatewayError) -> HttpResponse {
    crate::dialects::error_with_body(error, body(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let v: serde_json::Value =
            serde_json::from_slice(&body(&GatewayError::InvalidApiKey)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not valid")
        );
        let v: serde_json::Value =
            serde_json::from_slice(&body(&GatewayError::invalid("bad", None))).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
}
