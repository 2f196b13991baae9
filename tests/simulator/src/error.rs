//! Google-shaped error responses and the responses of scripted faults.

use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use bytes::Bytes;
use futures_util::stream;
use serde_json::{Value, json};

use crate::model::Fault;

/// Content type of every JSON error body (as Google sends it).
pub(crate) const JSON_ERROR_CT: &str = "application/json; charset=UTF-8";
/// Content type of successful JSON bodies.
pub(crate) const JSON_CT: &str = "application/json";

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `{"error":{"code","message","status"}}` with that HTTP status.
pub(crate) fn google_error(code: u16, status: &str, message: &str) -> HttpResponse {
    google_error_value(
        code,
        json!({"error": {"code": code, "message": message, "status": status}}),
        None,
    )
}

fn google_error_value(code: u16, body: Value, retry_after: Option<String>) -> HttpResponse {
    let mut builder = HttpResponse::build(status_code(code));
    builder.insert_header(("content-type", JSON_ERROR_CT));
    if let Some(ra) = retry_after {
        builder.insert_header(("retry-after", ra));
    }
    builder.body(body.to_string())
}

/// 401 `UNAUTHENTICATED`.
pub(crate) fn unauthenticated() -> HttpResponse {
    google_error(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials.",
    )
}

/// 400 `INVALID_ARGUMENT`.
pub(crate) fn invalid_argument(message: &str) -> HttpResponse {
    google_error(400, "INVALID_ARGUMENT", message)
}

/// 404 `NOT_FOUND`.
pub(crate) fn not_found(message: &str) -> HttpResponse {
    google_error(404, "NOT_FOUND", message)
}

fn retry_info(secs: u64) -> Value {
    json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{secs}s")})
}

fn quota_failure() -> Value {
    json!({
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{"subject": "project", "description": "Daily quota exceeded"}]
    })
}

/// The response of a fault that ends the request on its own, or `None` for faults that only
/// modify normal processing (`SlowFirstByte`, and `CutAfter` on U4).
pub(crate) fn fault_response(fault: &Fault) -> Option<HttpResponse> {
    let resp = match fault {
        Fault::Unauthorized => unauthenticated(),
        Fault::RateLimited { retry_after_secs } => {
            let mut details = vec![json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RATE_LIMIT_EXCEEDED",
                "domain": "discoveryengine.googleapis.com"
            })];
            if let Some(secs) = retry_after_secs {
                details.push(retry_info(*secs));
            }
            google_error_value(
                429,
                json!({"error": {
                    "code": 429,
                    "message": "Too many requests, please slow down.",
                    "status": "RESOURCE_EXHAUSTED",
                    "details": details
                }}),
                retry_after_secs.map(|s| s.to_string()),
            )
        }
        Fault::QuotaExhausted { retry_after_secs } => {
            let mut details = vec![quota_failure()];
            if let Some(secs) = retry_after_secs {
                details.push(retry_info(*secs));
            }
            google_error_value(
                429,
                json!({"error": {
                    "code": 429,
                    "message": "Quota exceeded for the day.",
                    "status": "RESOURCE_EXHAUSTED",
                    "details": details
                }}),
                retry_after_secs.map(|s| s.to_string()),
            )
        }
        Fault::QuotaInStream => {
            let element = json!({"error": {
                "code": 429,
                "message": "Quota exceeded for the day.",
                "status": "RESOURCE_EXHAUSTED",
                "details": [quota_failure()]
            }});
            HttpResponse::Ok()
                .insert_header(("content-type", JSON_CT))
                .body(format!("[{element}]"))
        }
        Fault::ChallengePage => HttpResponse::Ok()
            .insert_header(("content-type", "text/html; charset=utf-8"))
            .body(CHALLENGE_HTML),
        Fault::UTokenChallenge => HttpResponse::Ok()
            .insert_header(("content-type", JSON_CT))
            .body(
                json!({
                    "uToken": "AHxSimulatedUTokenChallenge0123456789abcdefABCDEF",
                    "redirectUrl": "https://accounts.google.com/ServiceLogin"
                })
                .to_string(),
            ),
        Fault::ServerError(code) => {
            let status = if *code == 500 {
                "INTERNAL"
            } else {
                "UNAVAILABLE"
            };
            google_error(*code, status, "The service is currently unavailable.")
        }
        Fault::BadRequest(message) => invalid_argument(message),
        Fault::Raw {
            status,
            content_type,
            body,
            retry_after,
        } => {
            let mut builder = HttpResponse::build(status_code(*status));
            builder.insert_header(("content-type", content_type.as_str()));
            if let Some(ra) = retry_after {
                builder.insert_header(("retry-after", ra.as_str()));
            }
            builder.body(body.clone())
        }
        Fault::SlowFirstByte(_) | Fault::CutAfter(_) => return None,
    };
    Some(resp)
}

/// A 200 response whose body breaks before any byte (for `CutAfter` outside U4).
pub(crate) fn cut_response() -> HttpResponse {
    let body = stream::once(async {
        // Let the response head reach the socket before the body error tears the connection down.
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "simulated connection cut",
        ))
    });
    HttpResponse::Ok()
        .insert_header(("content-type", JSON_CT))
        .streaming(body)
}

const CHALLENGE_HTML: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Sign in - Google Accounts</title>
</head>
<body>
<div id="initialView">
<h1>Sign in</h1>
<p>to continue to Gemini Business</p>
<form action="https://accounts.google.com/ServiceLogin" method="post">
<input type="email" name="identifier" autocomplete="username">
<button type="submit">Next</button>
</form>
</div>
</body>
</html>
"#;
