//! Typed classification of Gemini Business failures (spec §1.3, §1.9, §1.11).
//!
//! Everything is decided from the HTTP status, the `Content-Type` and `Retry-After` headers and
//! the *parsed* JSON body: Google's error envelope
//! `{"error":{"code":429,"message":"…","status":"RESOURCE_EXHAUSTED","details":[…]}}` (possibly
//! wrapped in an array), a `uToken` challenge element or an `errorMessage` element. There is no
//! substring search on raw text anywhere, so an answer that merely *mentions* "quota", "error" or
//! "uToken" is never mistaken for a failure (the reference implementation's defect).
//!
//! Messages come only from the parsed `error.message` / `errorMessage` (control characters
//! removed, at most 300 characters) or are fixed descriptions; never raw text of a non-JSON body
//! and never header values.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use super::endpoint::Endpoint;
use super::json_stream::JsonElementSplitter;
use crate::upstream::error::{ErrorKind, UpstreamError};

/// The longest message taken from an upstream body, in characters.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// `ErrorInfo.reason` values that mean a quota is used up (rather than a short-term rate limit),
/// compared by equality. `RESOURCE_QUOTA_EXCEEDED` is the `googleapis.com` domain's reason for
/// exhausted resource quota (`google.api.ErrorReason`); `QUOTA_EXCEEDED` is the spelling some
/// Google services use for the same. `RATE_LIMIT_EXCEEDED` is deliberately not here.
pub const QUOTA_REASONS: &[&str] = &["RESOURCE_QUOTA_EXCEEDED", "QUOTA_EXCEEDED"];

/// The XSSI prefix Google may put in front of JSON.
const XSSI_PREFIX: &[u8] = b")]}'";

/// Google's error envelope, as far as classification needs it.
struct GoogleError<'a> {
    /// `error.code`, when it is an integer HTTP error status (400–599). gRPC codes (0–16),
    /// which some payloads carry instead, are ignored.
    code: Option<u16>,
    /// `error.status`, e.g. `RESOURCE_EXHAUSTED`.
    status: Option<&'a str>,
    /// `error.message`, sanitised.
    message: Option<String>,
    /// `error.details`.
    details: &'a [Value],
}

impl<'a> GoogleError<'a> {
    fn from_object(error: &'a Map<String, Value>) -> Self {
        let code = error
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (400..=599).contains(c));
        Self {
            code,
            status: error.get("status").and_then(Value::as_str),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .and_then(sanitize_message),
            details: error
                .get("details")
                .and_then(Value::as_array)
                .map_or(&[], Vec::as_slice),
        }
    }

    fn resource_exhausted(&self) -> bool {
        self.status == Some("RESOURCE_EXHAUSTED")
    }
}

/// The `error` object of an element, or of the first element of an array that has one.
fn find_error_object(value: &Value) -> Option<&Map<String, Value>> {
    match value {
        Value::Object(object) => object.get("error").and_then(Value::as_object),
        Value::Array(items) => items
            .iter()
            .find_map(|item| item.as_object()?.get("error").and_then(Value::as_object)),
        _ => None,
    }
}

/// Parses an error body: the whole body as JSON (after whitespace and an XSSI prefix), or, when
/// that fails (a body cut at 64 KiB, a streamed array), the complete top-level elements of it.
fn parse_body(body: &[u8]) -> Option<Value> {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let rest = &body[start..];
    let rest = rest.strip_prefix(XSSI_PREFIX).unwrap_or(rest);
    if let Ok(value) = serde_json::from_slice::<Value>(rest) {
        return Some(value);
    }
    let mut splitter = JsonElementSplitter::new();
    let elements = splitter.push(body).ok()?;
    let parsed: Vec<Value> = elements
        .iter()
        .filter_map(|raw| serde_json::from_slice(raw).ok())
        .collect();
    if parsed.is_empty() {
        None
    } else {
        Some(Value::Array(parsed))
    }
}

/// Removes control and bidi-override characters (line breaks and tabs become spaces), trims,
/// and truncates to [`MAX_MESSAGE_CHARS`] characters. `None` if nothing is left.
fn sanitize_message(raw: &str) -> Option<String> {
    let cleaned: String = raw
        .chars()
        .filter_map(|c| match c {
            '\n' | '\r' | '\t' => Some(' '),
            _ if c.is_control() => None,
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => None,
            _ => Some(c),
        })
        .collect();
    let trimmed: String = cleaned.trim().chars().take(MAX_MESSAGE_CHARS).collect();
    let trimmed = trimmed.trim_end();
    if trimmed.is_empty() {
        None
    } else {
        Some(trimmed.to_owned())
    }
}

/// `error.status` if it looks like an enum value (`[A-Z_]`, at most 64 characters), for a
/// message when the upstream gave none.
fn status_token(status: Option<&str>) -> Option<&str> {
    status.filter(|s| {
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
    })
}

/// The kind for refused credentials: on U1 the cookies are dead, elsewhere the JWT.
fn auth_kind(endpoint: Endpoint) -> ErrorKind {
    match endpoint {
        Endpoint::GetXsrfKey => ErrorKind::CookiesInvalid,
        _ => ErrorKind::AuthExpired,
    }
}

/// Whether `@type` names the `google.rpc` message `name` (any type-URL prefix).
fn detail_is(detail: &Value, name: &str) -> bool {
    detail
        .get("@type")
        .and_then(Value::as_str)
        .is_some_and(|t| {
            t.strip_suffix(name)
                .is_some_and(|prefix| prefix.ends_with("google.rpc."))
        })
}

/// Whether the details say a quota (not a rate) is exhausted.
fn is_quota(details: &[Value]) -> bool {
    details.iter().any(|detail| {
        detail_is(detail, "QuotaFailure")
            || (detail_is(detail, "ErrorInfo")
                && detail
                    .get("reason")
                    .and_then(Value::as_str)
                    .is_some_and(|reason| QUOTA_REASONS.contains(&reason)))
    })
}

/// The `retryDelay` of a `RetryInfo` detail.
fn retry_info_delay(details: &[Value]) -> Option<Duration> {
    details
        .iter()
        .filter(|detail| detail_is(detail, "RetryInfo"))
        .find_map(|detail| parse_proto_duration(detail.get("retryDelay")?))
}

/// A protobuf `Duration` in its JSON form, `"<decimal>s"` (`"30s"`, `"1.5s"`), or as an object
/// `{"seconds": …, "nanos": …}`. Negative durations are rejected.
fn parse_proto_duration(value: &Value) -> Option<Duration> {
    match value {
        Value::String(text) => {
            let number = text.trim().strip_suffix('s')?;
            let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
            if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            if !fraction.bytes().all(|b| b.is_ascii_digit())
                || (number.contains('.') && fraction.is_empty())
            {
                return None;
            }
            let seconds: u64 = whole.parse().ok()?;
            // Nanosecond precision; further digits are dropped.
            let mut nanos = 0u32;
            for (i, digit) in fraction.bytes().take(9).enumerate() {
                nanos += u32::from(digit - b'0') * 10u32.pow(8 - i as u32);
            }
            Some(Duration::new(seconds, nanos))
        }
        Value::Object(object) => {
            let seconds = match object.get("seconds") {
                Some(Value::Number(n)) => n.as_u64()?,
                Some(Value::String(s)) => s.parse().ok()?,
                None => 0,
                Some(_) => return None,
            };
            let nanos = match object.get("nanos") {
                Some(n) => u32::try_from(n.as_u64()?)
                    .ok()
                    .filter(|n| *n < 1_000_000_000)?,
                None => 0,
            };
            Some(Duration::new(seconds, nanos))
        }
        _ => None,
    }
}

/// RateLimited or QuotaExhausted, with the delay from the `Retry-After` header if it parses,
/// else from a `RetryInfo` detail.
fn exhausted_kind(details: &[Value], retry_after_header: Option<&str>) -> ErrorKind {
    let retry_after = retry_after_header
        .and_then(parse_retry_after)
        .or_else(|| retry_info_delay(details));
    if is_quota(details) {
        ErrorKind::QuotaExhausted { retry_after }
    } else {
        ErrorKind::RateLimited { retry_after }
    }
}

/// The kind for a non-2xx HTTP status (or an error element's `code`).
fn kind_for_status(
    endpoint: Endpoint,
    status: u16,
    error: Option<&GoogleError<'_>>,
    retry_after_header: Option<&str>,
) -> ErrorKind {
    let details = error.map_or(&[][..], |e| e.details);
    match status {
        401 | 403 => auth_kind(endpoint),
        _ if status == 429 || error.is_some_and(GoogleError::resource_exhausted) => {
            exhausted_kind(details, retry_after_header)
        }
        400 | 413 | 422 => ErrorKind::BadRequest,
        404 => ErrorKind::NotFound,
        408 => ErrorKind::Timeout,
        _ => ErrorKind::Server { status },
    }
}

/// Classifies a non-2xx response, or a 2xx response that is not the expected API payload.
///
/// `content_type` and `retry_after` are the header values if present; `body` is at most the
/// first 64 KiB of the body.
///
/// * An HTML page ([`is_html`]), whatever the status: on [`Endpoint::GetXsrfKey`] Google sent
///   the sign-in page, so [`ErrorKind::CookiesInvalid`]; elsewhere [`ErrorKind::Challenge`].
/// * 2xx: the parsed body is classified as an element ([`classify_element`]); a body that is
///   neither an error nor a challenge is [`ErrorKind::Protocol`] (the caller expected something
///   else).
/// * 401/403: `CookiesInvalid` on U1, [`ErrorKind::AuthExpired`] elsewhere.
/// * 429, or `error.status` `RESOURCE_EXHAUSTED`: [`ErrorKind::QuotaExhausted`] if a detail is a
///   `google.rpc.QuotaFailure` or an `ErrorInfo` with a reason in [`QUOTA_REASONS`], otherwise
///   [`ErrorKind::RateLimited`]; `retry_after` from the header, else a `RetryInfo` detail.
/// * 400, 413, 422: BadRequest. 404: NotFound. 408: Timeout. Anything else: Server.
///
/// The result's `status` is the HTTP status; its message is `error.message` or `HTTP <status>`.
pub fn classify_response(
    endpoint: Endpoint,
    status: u16,
    content_type: Option<&str>,
    retry_after: Option<&str>,
    body: &[u8],
) -> UpstreamError {
    if is_html(content_type, body) {
        let (kind, message) = match endpoint {
            Endpoint::GetXsrfKey => (
                ErrorKind::CookiesInvalid,
                "sign-in page instead of the API response",
            ),
            _ => (
                ErrorKind::Challenge,
                "HTML page (sign-in or challenge) instead of the API response",
            ),
        };
        return UpstreamError::new(kind, endpoint, message).with_status(status);
    }
    let parsed = parse_body(body);
    if (200..300).contains(&status) {
        return match parsed
            .as_ref()
            .and_then(|value| classify_element(endpoint, value))
        {
            Some(error) => error.with_status(status),
            None => UpstreamError::new(
                ErrorKind::Protocol,
                endpoint,
                format!("HTTP {status} with a body that is not the expected API response"),
            )
            .with_status(status),
        };
    }
    let error = parsed
        .as_ref()
        .and_then(find_error_object)
        .map(GoogleError::from_object);
    let kind = kind_for_status(endpoint, status, error.as_ref(), retry_after);
    let message = error
        .and_then(|e| e.message)
        .unwrap_or_else(|| format!("HTTP {status}"));
    UpstreamError {
        kind,
        endpoint: endpoint.into(),
        status: Some(status),
        message,
    }
}

/// Classifies one parsed element of a 200 answer (or a whole parsed 200 body): `Some` if it is
/// an error or a challenge instead of an answer. An array is searched one level deep (the
/// array-wrapped error form); its first error or challenge element wins.
///
/// * An object with an `error` object: by `error.status` — `UNAUTHENTICATED` and
///   `PERMISSION_DENIED` → AuthExpired (CookiesInvalid on U1), `INVALID_ARGUMENT` and
///   `FAILED_PRECONDITION` → BadRequest, `NOT_FOUND` → NotFound, `RESOURCE_EXHAUSTED` →
///   quota/rate as in [`classify_response`], any other value → Server with `error.code` or 500.
///   Without `error.status`, `error.code` is classified as an HTTP status; without either,
///   Server 500. `status` is `error.code` when it is an HTTP error status (400–599).
/// * An object with `uToken` and no `streamAssistResponse`: Challenge.
/// * An object with a string `errorMessage` and no `streamAssistResponse`: Server 500.
/// * Anything else (including answers whose *text* mentions errors or quotas): `None`.
pub fn classify_element(endpoint: Endpoint, element: &Value) -> Option<UpstreamError> {
    match element {
        Value::Array(items) => items
            .iter()
            .find_map(|item| classify_object(endpoint, item)),
        _ => classify_object(endpoint, element),
    }
}

fn classify_object(endpoint: Endpoint, element: &Value) -> Option<UpstreamError> {
    let object = element.as_object()?;
    if let Some(error) = object.get("error").and_then(Value::as_object) {
        return Some(classify_error_object(
            endpoint,
            &GoogleError::from_object(error),
        ));
    }
    if object.contains_key("streamAssistResponse") {
        return None;
    }
    if object.contains_key("uToken") {
        return Some(UpstreamError::new(
            ErrorKind::Challenge,
            endpoint,
            "challenge (uToken) instead of an answer",
        ));
    }
    if let Some(Value::String(message)) = object.get("errorMessage") {
        let message =
            sanitize_message(message).unwrap_or_else(|| "error element without a message".into());
        return Some(UpstreamError::new(
            ErrorKind::Server { status: 500 },
            endpoint,
            message,
        ));
    }
    None
}

fn classify_error_object(endpoint: Endpoint, error: &GoogleError<'_>) -> UpstreamError {
    let kind = match error.status {
        Some("UNAUTHENTICATED" | "PERMISSION_DENIED") => auth_kind(endpoint),
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION") => ErrorKind::BadRequest,
        Some("NOT_FOUND") => ErrorKind::NotFound,
        Some("RESOURCE_EXHAUSTED") => exhausted_kind(error.details, None),
        Some(_) => ErrorKind::Server {
            status: error.code.unwrap_or(500),
        },
        None => match error.code {
            Some(code) => kind_for_status(endpoint, code, Some(error), None),
            None => ErrorKind::Server { status: 500 },
        },
    };
    let message = error
        .message
        .clone()
        .unwrap_or_else(|| match status_token(error.status) {
            Some(token) => format!("error element {token}"),
            None => "error element without a message".to_owned(),
        });
    UpstreamError {
        kind,
        endpoint: endpoint.into(),
        status: error.code,
        message,
    }
}

/// Whether a response is an HTML page (sign-in or challenge) rather than JSON: the content type
/// is `text/html` (or `application/xhtml+xml`), or the body, after a byte-order mark and leading
/// whitespace, starts case-insensitively with `<!doctype` or `<html`, whatever the content type
/// claims.
pub fn is_html(content_type: Option<&str>, body_prefix: &[u8]) -> bool {
    if let Some(content_type) = content_type {
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or(content_type)
            .trim();
        if media_type.eq_ignore_ascii_case("text/html")
            || media_type.eq_ignore_ascii_case("application/xhtml+xml")
        {
            return true;
        }
    }
    let body = body_prefix
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(body_prefix);
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let body = &body[start..];
    let starts_with = |marker: &[u8]| {
        body.get(..marker.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(marker))
    };
    starts_with(b"<!doctype") || starts_with(b"<html")
}

/// Parses a `Retry-After` value: delta-seconds, or an HTTP-date relative to now (a date in the
/// past gives zero). `None` if it is neither.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, SystemTime::now())
}

fn parse_retry_after_at(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const U1: Endpoint = Endpoint::GetXsrfKey;
    const U4: Endpoint = Endpoint::StreamAssist;

    fn json_body(value: Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    fn google_error(code: u16, status: &str, message: &str, details: Value) -> Value {
        json!({"error": {"code": code, "message": message, "status": status, "details": details}})
    }

    fn classify(endpoint: Endpoint, status: u16, body: &[u8]) -> UpstreamError {
        classify_response(
            endpoint,
            status,
            Some("application/json; charset=UTF-8"),
            None,
            body,
        )
    }

    const QUOTA_FAILURE: &str = "type.googleapis.com/google.rpc.QuotaFailure";
    const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";
    const ERROR_INFO: &str = "type.googleapis.com/google.rpc.ErrorInfo";

    #[test]
    fn html_is_sign_in_on_u1_and_challenge_elsewhere_whatever_the_status() {
        let page = b"<!DOCTYPE html><html><title>Sign in</title></html>";
        for status in [200, 302, 400, 401, 429, 500] {
            let e = classify_response(U1, status, Some("text/html; charset=utf-8"), None, page);
            assert_eq!(e.kind, ErrorKind::CookiesInvalid, "{status}");
            assert_eq!(e.status, Some(status));
            assert!(!e.message.contains("Sign in"));
            let e = classify_response(U4, status, None, None, page);
            assert_eq!(e.kind, ErrorKind::Challenge, "{status}");
            assert_eq!(e.status, Some(status));
        }
        // Content type says JSON, body is HTML.
        let e = classify_response(U4, 200, Some("application/json"), None, b"\n  <HTML>");
        assert_eq!(e.kind, ErrorKind::Challenge);
    }

    #[test]
    fn html_detection() {
        assert!(is_html(Some("text/html"), b""));
        assert!(is_html(Some(" TEXT/HTML ; charset=utf-8"), b"{}"));
        assert!(is_html(Some("application/xhtml+xml"), b""));
        assert!(is_html(None, b"<!doctype html>"));
        assert!(is_html(None, b"\xEF\xBB\xBF \r\n\t<!DocType HTML>"));
        assert!(is_html(Some("text/plain"), b"  <html lang=en>"));
        assert!(!is_html(None, b"<!doc"));
        assert!(!is_html(Some("application/json"), b"{\"html\":\"<html>\"}"));
        assert!(!is_html(Some("text/htmlx"), b"[]"));
        assert!(!is_html(None, b"<?xml version=\"1.0\"?>"));
        assert!(!is_html(None, b""));
    }

    #[test]
    fn unauthorized() {
        for status in [401, 403] {
            assert_eq!(classify(U1, status, b"").kind, ErrorKind::CookiesInvalid);
            for endpoint in [
                Endpoint::CreateSession,
                Endpoint::AddContextFile,
                U4,
                Endpoint::ListSessionFiles,
                Endpoint::DownloadFile,
            ] {
                let e = classify(endpoint, status, b"");
                assert_eq!(e.kind, ErrorKind::AuthExpired);
                assert_eq!(e.status, Some(status));
                assert_eq!(e.message, format!("HTTP {status}"));
            }
        }
        let body = json_body(google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid auth",
            json!([]),
        ));
        let e = classify(U4, 401, &body);
        assert_eq!(e.kind, ErrorKind::AuthExpired);
        assert_eq!(e.message, "Request had invalid auth");
    }

    #[test]
    fn rate_limited_without_details() {
        let e = classify(U4, 429, b"");
        assert_eq!(e.kind, ErrorKind::RateLimited { retry_after: None });
        assert_eq!(e.status, Some(429));
        assert_eq!(e.message, "HTTP 429");
    }

    #[test]
    fn quota_failure_detail_means_quota_exhausted() {
        let body = json_body(google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for quota metric 'Requests'",
            json!([
                {"@type": QUOTA_FAILURE, "violations": [{"subject": "x"}]},
                {"@type": RETRY_INFO, "retryDelay": "30s"},
                {"@type": ERROR_INFO, "reason": "RATE_LIMIT_EXCEEDED"},
            ]),
        ));
        let e = classify(U4, 429, &body);
        assert_eq!(
            e.kind,
            ErrorKind::QuotaExhausted {
                retry_after: Some(Duration::from_secs(30))
            }
        );
        assert_eq!(e.message, "Quota exceeded for quota metric 'Requests'");
        assert_eq!(e.status, Some(429));
    }

    #[test]
    fn error_info_quota_reason_means_quota_exhausted() {
        let body = json_body(google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "m",
            json!([{"@type": ERROR_INFO, "reason": "RESOURCE_QUOTA_EXCEEDED"}]),
        ));
        assert_eq!(
            classify(U4, 429, &body).kind,
            ErrorKind::QuotaExhausted { retry_after: None }
        );
        // Equality, not substring.
        let body = json_body(google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "m",
            json!([{"@type": ERROR_INFO, "reason": "NOT_A_RESOURCE_QUOTA_EXCEEDED_THING"}]),
        ));
        assert_eq!(
            classify(U4, 429, &body).kind,
            ErrorKind::RateLimited { retry_after: None }
        );
        // RATE_LIMIT_EXCEEDED alone is a rate limit.
        let body = json_body(google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "m",
            json!([{"@type": ERROR_INFO, "reason": "RATE_LIMIT_EXCEEDED"},
                   {"@type": "type.googleapis.com/google.rpc.NotQuotaFailure"}]),
        ));
        assert_eq!(
            classify(U4, 429, &body).kind,
            ErrorKind::RateLimited { retry_after: None }
        );
    }

    #[test]
    fn resource_exhausted_body_on_another_status() {
        let body = json_body(google_error(400, "RESOURCE_EXHAUSTED", "m", json!([])));
        assert_eq!(
            classify(U4, 400, &body).kind,
            ErrorKind::RateLimited { retry_after: None }
        );
        let body = json_body(google_error(
            503,
            "RESOURCE_EXHAUSTED",
            "m",
            json!([{"@type": QUOTA_FAILURE}]),
        ));
        assert_eq!(
            classify(U4, 503, &body).kind,
            ErrorKind::QuotaExhausted { retry_after: None }
        );
    }

    #[test]
    fn retry_after_header_wins_over_retry_info() {
        let body = json_body(google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "m",
            json!([{"@type": RETRY_INFO, "retryDelay": "30s"}]),
        ));
        let e = classify_response(U4, 429, None, Some("7"), &body);
        assert_eq!(
            e.kind,
            ErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert!(!e.message.contains('7'));
        // An unparsable header falls back to RetryInfo.
        let e = classify_response(U4, 429, None, Some("soon"), &body);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
        assert!(!e.message.contains("soon"));
        // Header without any body.
        let e = classify_response(U4, 429, None, Some("120"), b"");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(120)));
    }

    #[test]
    fn retry_after_as_http_date() {
        let future = SystemTime::now() + Duration::from_secs(3600);
        let header = httpdate::fmt_http_date(future);
        let e = classify_response(U4, 429, None, Some(&header), b"");
        let delay = e.retry_after().unwrap();
        assert!(
            delay > Duration::from_secs(3590) && delay <= Duration::from_secs(3600),
            "{delay:?}"
        );

        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after_at("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after_at("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(" 42 "), Some(Duration::from_secs(42)));
        assert_eq!(parse_retry_after(""), None);
        assert_eq!(parse_retry_after("-5"), None);
        assert_eq!(parse_retry_after("1.5"), None);
        assert_eq!(parse_retry_after("tomorrow"), None);
        assert_eq!(parse_retry_after("99999999999999999999999"), None);
    }

    #[test]
    fn retry_info_parsing() {
        let parse = |v: Value| parse_proto_duration(&v);
        assert_eq!(parse(json!("30s")), Some(Duration::from_secs(30)));
        assert_eq!(parse(json!("1.5s")), Some(Duration::from_millis(1500)));
        assert_eq!(parse(json!("0.000000001s")), Some(Duration::from_nanos(1)));
        assert_eq!(
            parse(json!("2.1234567891s")),
            Some(Duration::new(2, 123_456_789))
        );
        assert_eq!(parse(json!("0s")), Some(Duration::ZERO));
        assert_eq!(
            parse(json!({"seconds": "12", "nanos": 500})),
            Some(Duration::new(12, 500))
        );
        assert_eq!(parse(json!({"seconds": 3})), Some(Duration::from_secs(3)));
        for bad in [
            json!("30"),
            json!("-1s"),
            json!("s"),
            json!(".5s"),
            json!("1.s"),
            json!("1.5ms"),
            json!("a s"),
            json!(30),
            json!({"seconds": -1}),
            json!({"nanos": 2_000_000_000u64}),
        ] {
            assert_eq!(parse(bad.clone()), None, "{bad}");
        }
        let details = [
            json!({"@type": "type.googleapis.com/google.rpc.Help"}),
            json!({"@type": RETRY_INFO, "retryDelay": "2.5s"}),
        ];
        assert_eq!(
            retry_info_delay(&details),
            Some(Duration::from_millis(2500))
        );
        // The @type must name google.rpc.RetryInfo.
        let details = [json!({"@type": "type.googleapis.com/other.RetryInfo", "retryDelay": "2s"})];
        assert_eq!(retry_info_delay(&details), None);
    }

    #[test]
    fn status_table() {
        for (status, kind) in [
            (400, ErrorKind::BadRequest),
            (413, ErrorKind::BadRequest),
            (422, ErrorKind::BadRequest),
            (404, ErrorKind::NotFound),
            (408, ErrorKind::Timeout),
            (500, ErrorKind::Server { status: 500 }),
            (502, ErrorKind::Server { status: 502 }),
            (503, ErrorKind::Server { status: 503 }),
            (504, ErrorKind::Server { status: 504 }),
            (302, ErrorKind::Server { status: 302 }),
            (409, ErrorKind::Server { status: 409 }),
            (418, ErrorKind::Server { status: 418 }),
        ] {
            let e = classify(U4, status, b"");
            assert_eq!(e.kind, kind, "{status}");
            assert_eq!(e.status, Some(status));
            assert_eq!(e.message, format!("HTTP {status}"));
        }
        let body = json_body(google_error(
            400,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument.",
            json!([]),
        ));
        let e = classify(Endpoint::CreateSession, 400, &body);
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert_eq!(e.message, "Request contains an invalid argument.");
        assert!(!e.retry_elsewhere());
    }

    #[test]
    fn array_wrapped_error() {
        let body = json_body(json!([google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "wrapped",
            json!([{"@type": QUOTA_FAILURE}, {"@type": RETRY_INFO, "retryDelay": "5s"}]),
        )]));
        let e = classify(U4, 429, &body);
        assert_eq!(
            e.kind,
            ErrorKind::QuotaExhausted {
                retry_after: Some(Duration::from_secs(5))
            }
        );
        assert_eq!(e.message, "wrapped");
        let e = classify_element(U4, &serde_json::from_slice(&body).unwrap()).unwrap();
        assert_eq!(
            e.kind,
            ErrorKind::QuotaExhausted {
                retry_after: Some(Duration::from_secs(5))
            }
        );
    }

    #[test]
    fn truncated_and_prefixed_bodies_are_still_read() {
        let mut body = b")]}'\n".to_vec();
        body.extend(json_body(google_error(
            404,
            "NOT_FOUND",
            "Session not found",
            json!([]),
        )));
        let e = classify(U4, 404, &body);
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::NotFound, "Session not found")
        );

        // A streamed array cut at 64 KiB: the complete first element is still used.
        let mut body = b"[".to_vec();
        body.extend(json_body(google_error(
            503,
            "UNAVAILABLE",
            "The service is unavailable",
            json!([]),
        )));
        body.extend_from_slice(b",\n{\"padding\":\"xxxxxxxx");
        let e = classify(U4, 503, &body);
        assert_eq!(e.kind, ErrorKind::Server { status: 503 });
        assert_eq!(e.message, "The service is unavailable");
    }

    #[test]
    fn messages_are_sanitised_and_never_raw_text() {
        let long = "é".repeat(400);
        let body = json_body(google_error(
            500,
            "INTERNAL",
            &format!("\u{1b}[31mbad\n\tthing\u{202e}{long}"),
            json!([]),
        ));
        let e = classify(U4, 500, &body);
        assert!(e.message.starts_with("[31mbad  thing"), "{}", e.message);
        assert_eq!(e.message.chars().count(), MAX_MESSAGE_CHARS);
        assert!(!e.message.chars().any(|c| c.is_control() || c == '\u{202e}'));

        let e = classify(
            U4,
            502,
            b"upstream connect error: secret-host:1234 password=hunter2",
        );
        assert_eq!(e.message, "HTTP 502");
        let e = classify_response(
            U4,
            500,
            Some("text/plain"),
            Some("Bearer abc"),
            b"{not json: secret}",
        );
        assert_eq!(e.message, "HTTP 500");
        assert!(!e.to_string().contains("secret"));
        // A JSON body without an error envelope is not echoed either.
        let e = classify(U4, 500, br#"{"detail":"internal secret"}"#);
        assert_eq!(e.message, "HTTP 500");
        // An empty message falls back.
        let body = json_body(google_error(500, "INTERNAL", " \n\u{7} ", json!([])));
        assert_eq!(classify(U4, 500, &body).message, "HTTP 500");
    }

    #[test]
    fn ok_status_bodies() {
        let e = classify(U4, 200, br#"{"uToken":"abc"}"#);
        assert_eq!((e.kind, e.status), (ErrorKind::Challenge, Some(200)));
        let body = json_body(google_error(429, "RESOURCE_EXHAUSTED", "q", json!([])));
        let e = classify(U4, 200, &body);
        assert_eq!(e.kind, ErrorKind::RateLimited { retry_after: None });
        assert_eq!(e.status, Some(200));
        let e = classify(U4, 200, b"garbage");
        assert_eq!(
            (e.kind, e.message.contains("garbage")),
            (ErrorKind::Protocol, false)
        );
    }

    #[test]
    fn element_error_statuses() {
        let element = |status: &str, code: Value| json!({"error": {"code": code, "status": status, "message": "msg"}});
        for (endpoint, status, code, kind) in [
            (U4, "UNAUTHENTICATED", json!(401), ErrorKind::AuthExpired),
            (U1, "UNAUTHENTICATED", json!(401), ErrorKind::CookiesInvalid),
            (U4, "PERMISSION_DENIED", json!(403), ErrorKind::AuthExpired),
            (
                U1,
                "PERMISSION_DENIED",
                json!(403),
                ErrorKind::CookiesInvalid,
            ),
            (U4, "INVALID_ARGUMENT", json!(400), ErrorKind::BadRequest),
            (U4, "FAILED_PRECONDITION", json!(400), ErrorKind::BadRequest),
            (U4, "NOT_FOUND", json!(404), ErrorKind::NotFound),
            (
                U4,
                "RESOURCE_EXHAUSTED",
                json!(429),
                ErrorKind::RateLimited { retry_after: None },
            ),
            (
                U4,
                "UNAVAILABLE",
                json!(503),
                ErrorKind::Server { status: 503 },
            ),
            (
                U4,
                "INTERNAL",
                json!(500),
                ErrorKind::Server { status: 500 },
            ),
            (
                U4,
                "INTERNAL",
                Value::Null,
                ErrorKind::Server { status: 500 },
            ),
            (
                U4,
                "DEADLINE_EXCEEDED",
                json!(504),
                ErrorKind::Server { status: 504 },
            ),
            // A gRPC code is not an HTTP status.
            (
                U4,
                "UNAVAILABLE",
                json!(14),
                ErrorKind::Server { status: 500 },
            ),
        ] {
            let e = classify_element(endpoint, &element(status, code.clone())).unwrap();
            assert_eq!(e.kind, kind, "{status} {code}");
            assert_eq!(e.message, "msg");
            assert_eq!(
                e.status,
                code.as_u64()
                    .and_then(|c| u16::try_from(c).ok())
                    .filter(|c| *c >= 400)
            );
        }
        let quota = json!({"error": {"status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": QUOTA_FAILURE}, {"@type": RETRY_INFO, "retryDelay": "1.5s"}]}});
        let e = classify_element(U4, &quota).unwrap();
        assert_eq!(
            e.kind,
            ErrorKind::QuotaExhausted {
                retry_after: Some(Duration::from_millis(1500))
            }
        );
        assert_eq!(e.message, "error element RESOURCE_EXHAUSTED");
    }

    #[test]
    fn element_error_code_only() {
        for (code, kind) in [
            (401, ErrorKind::AuthExpired),
            (429, ErrorKind::RateLimited { retry_after: None }),
            (400, ErrorKind::BadRequest),
            (404, ErrorKind::NotFound),
            (500, ErrorKind::Server { status: 500 }),
        ] {
            let e = classify_element(U4, &json!({"error": {"code": code}})).unwrap();
            assert_eq!(e.kind, kind, "{code}");
            assert_eq!(e.status, Some(code));
            assert_eq!(e.message, "error element without a message");
        }
        let e = classify_element(U4, &json!({"error": {}})).unwrap();
        assert_eq!(
            (e.kind, e.status),
            (ErrorKind::Server { status: 500 }, None)
        );
    }

    #[test]
    fn element_challenge_and_error_message() {
        let e = classify_element(U4, &json!({"uToken": "AHx…"})).unwrap();
        assert_eq!(e.kind, ErrorKind::Challenge);
        assert!(!e.message.contains("AHx"));
        let e =
            classify_element(U4, &json!({"errorMessage": "Something\nwent wrong\u{0}"})).unwrap();
        assert_eq!(e.kind, ErrorKind::Server { status: 500 });
        assert_eq!(e.message, "Something went wrong");
        // Not a string: not this rule.
        assert_eq!(
            classify_element(U4, &json!({"errorMessage": {"a": 1}})),
            None
        );
        // With an answer present, neither counts.
        assert_eq!(
            classify_element(U4, &json!({"uToken": "x", "streamAssistResponse": {}})),
            None
        );
        assert_eq!(
            classify_element(
                U4,
                &json!({"errorMessage": "x", "streamAssistResponse": {}})
            ),
            None
        );
        // `error` that is not an object is not an error envelope.
        assert_eq!(classify_element(U4, &json!({"error": "text"})), None);
    }

    #[test]
    fn answer_text_mentioning_errors_is_not_an_error() {
        let text = r#"Your "error": RESOURCE_EXHAUSTED quota exceeded, "errorMessage" uToken 429 UNAUTHENTICATED <html>"#;
        let answer = json!({"streamAssistResponse": {
            "sessionInfo": {"session": "sessions/1"},
            "answer": {"replies": [{"groundedContent": {"content": {"text": text, "thought": false}}}]},
        }});
        assert_eq!(classify_element(U4, &answer), None);
        assert_eq!(
            classify_element(U4, &json!([answer.clone(), answer.clone()])),
            None
        );
        let thought = json!({"streamAssistResponse": {"answer": {"replies": [
            {"groundedContent": {"content": {"text": "checking the quota error", "thought": true}}}]}}});
        assert_eq!(classify_element(U4, &thought), None);
        assert_eq!(
            classify_element(
                U4,
                &json!({"quota": "error", "status": "RESOURCE_EXHAUSTED"})
            ),
            None
        );
        assert_eq!(classify_element(U4, &json!("error quota uToken")), None);
        // A 200 body made of such answers is no error or challenge either.
        let body = json_body(json!([answer]));
        let e = classify(U4, 200, &body);
        assert_eq!(e.kind, ErrorKind::Protocol);
    }
}
