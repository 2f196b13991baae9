//! Errors in Google's shape: `{"error":{"code":<int>,"message":"…","status":"…"}}`.

use actix_web::HttpResponse;
use bytes::Bytes;
use serde_json::json;

use crate::error::{Category, GatewayError};

/// Google's canonical `status` for an error.
pub fn status_name(error: &GatewayError) -> &'static str {
    if matches!(error, GatewayError::PayloadTooLarge { .. }) {
        return "INVALID_ARGUMENT";
    }
    match error.category() {
        Category::Authentication => "UNAUTHENTICATED",
        Category::PermissionDenied => "PERMISSION_DENIED",
        Category::InvalidRequest => "INVALID_ARGUMENT",
        Category::NotFound => "NOT_FOUND",
        Category::RateLimited | Category::QuotaExhausted => "RESOURCE_EXHAUSTED",
        Category::Unavailable | Category::Upstream => "UNAVAILABLE",
        Category::Timeout => "DEADLINE_EXCEEDED",
        Category::Internal => "INTERNAL",
    }
}

/// The error as a JSON value (`{"error":{…}}`), also used as the last chunk of a stream.
pub fn value(error: &GatewayError) -> serde_json::Value {
    json!({"error": {
        "code": error.status().as_u16(),
        "message": error.client_message(),
        "status": status_name(error),
    }})
}

/// The JSON body of an error.
pub fn body(error: &GatewayError) -> Bytes {
    Bytes::from(serde_json::to_vec(&value(error)).unwrap_or_default())
}

/// A `404 NOT_FOUND` with a specific message (an unknown method, say).
pub fn not_found(message: &str) -> HttpResponse {
    let body = json!({"error": {"code": 404, "message": message, "status": "NOT_FOUND"}});
    HttpResponse::NotFound()
        .content_type("application/json")
        .body(body.to_string())
}

/// A complete error response.
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
        assert_eq!(v["error"]["code"], 401);
        assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
        let v: serde_json::Value = serde_json::from_slice(&body(&GatewayError::NotFound)).unwrap();
        assert_eq!(v["error"]["status"], "NOT_FOUND");
    }
}
