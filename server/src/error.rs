//! The gateway's one error type for everything a client can be told, and the one place that
//! decides its HTTP status. Each dialect renders it in its own shape (`dialects::*::error`).

use std::time::Duration;

use actix_web::http::StatusCode;

use crate::domain::ModelError;
use crate::upstream::{ErrorKind, UpstreamError};

/// The client's input cannot be used: a media URL the gateway refused or could not fetch, an
/// unsupported media type, a file over the limit. Not an upstream failure: no other account is
/// tried and the account is not affected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InputError {
    /// 413 for "too large", else 400.
    pub too_large: bool,
    /// Written for the client (no credentials, no internals).
    pub message: String,
}

impl InputError {
    pub fn invalid(message: impl Into<String>) -> InputError {
        InputError {
            too_large: false,
            message: message.into(),
        }
    }

    pub fn too_large(message: impl Into<String>) -> InputError {
        InputError {
            too_large: true,
            message: message.into(),
        }
    }
}

/// A failure to answer a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("no API key was provided")]
    MissingApiKey,
    #[error("the API key is not valid")]
    InvalidApiKey,
    /// The request is malformed or asks for something the gateway cannot do. `param` names the
    /// offending field (e.g. `messages[2].content`).
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The client stopped sending its request body (`http.body_read_timeout_sec`).
    #[error(
        "the request body did not arrive: no bytes for {} s (http.body_read_timeout_sec)",
        after.as_secs()
    )]
    BodyTimeout { after: Duration },
    /// Too many request bodies are being received or parsed at once (`http.inflight_body_mb`).
    #[error("the gateway is busy receiving other large requests; retry shortly")]
    Busy,
    #[error("{0}")]
    Model(ModelError),
    #[error("no upstream account is available right now")]
    NoAccountAvailable {
        retry_after: Duration,
        /// The pool holds no account at all (not merely none free right now).
        empty: bool,
    },
    /// The upstream failed on every account tried (the last failure).
    #[error("{0}")]
    Upstream(UpstreamError),
    /// The client's input (media) cannot be used.
    #[error("{0}")]
    Input(InputError),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The URL (path and query) is longer than the gateway accepts (414).
    #[error("the request URL is longer than the limit of {limit} bytes")]
    UriTooLong { limit: usize },
    /// Too many header lines, or too many header bytes (431).
    #[error("{0}")]
    HeadersTooLarge(String),
    /// A named API key is over one of its limits (`crate::keys`).
    #[error("{message}")]
    KeyLimit {
        message: String,
        retry_after: Duration,
    },
    /// A named API key may not use the requested model (`crate::keys`).
    #[error("{0}")]
    ModelNotAllowed(String),
    /// A bug or an environment failure; details are logged, never sent.
    #[error("internal error")]
    Internal,
}

/// The broad class of an error, which each dialect maps to its own error type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Authentication,
    /// A valid key that may not do this (403).
    PermissionDenied,
    InvalidRequest,
    NotFound,
    RateLimited,
    QuotaExhausted,
    /// The gateway cannot serve now (no account, accounts need attention).
    Unavailable,
    /// The upstream failed.
    Upstream,
    Timeout,
    Internal,
}

/// Retry-after suggested when the upstream rate-limits without saying for how long.
const DEFAULT_RATE_LIMIT_RETRY: Duration = Duration::from_secs(15);

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: impl Into<Option<String>>) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param: param.into(),
        }
    }

    pub fn category(&self) -> Category {
        match self {
            GatewayError::MissingApiKey | GatewayError::InvalidApiKey => Category::Authentication,
            GatewayError::InvalidRequest { .. }
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::BodyTimeout { .. }
            | GatewayError::MethodNotAllowed
            | GatewayError::UriTooLong { .. }
            | GatewayError::HeadersTooLarge(_)
            | GatewayError::Input(_) => Category::InvalidRequest,
            GatewayError::Model(ModelError::Missing) => Category::InvalidRequest,
            GatewayError::Model(ModelError::Unknown(_)) | GatewayError::NotFound => {
                Category::NotFound
            }
            GatewayError::NoAccountAvailable { .. } | GatewayError::Busy => Category::Unavailable,
            GatewayError::Internal => Category::Internal,
            GatewayError::KeyLimit { .. } => Category::RateLimited,
            GatewayError::ModelNotAllowed(_) => Category::PermissionDenied,
            GatewayError::Upstream(e) => match e.kind {
                ErrorKind::BadRequest => Category::InvalidRequest,
                ErrorKind::RateLimited { .. } => Category::RateLimited,
                ErrorKind::QuotaExhausted { .. } => Category::QuotaExhausted,
                ErrorKind::AuthExpired
                | ErrorKind::CookiesInvalid
                | ErrorKind::Challenge
                | ErrorKind::Proxy { .. } => Category::Unavailable,
                ErrorKind::Timeout => Category::Timeout,
                ErrorKind::NotFound
                | ErrorKind::Server { .. }
                | ErrorKind::Transport
                | ErrorKind::Protocol => Category::Upstream,
            },
        }
    }

    /// The HTTP status (see README "Errors").
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            GatewayError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::Input(InputError {
                too_large: true, ..
            }) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => match self.category() {
                Category::Authentication => StatusCode::UNAUTHORIZED,
                Category::PermissionDenied => StatusCode::FORBIDDEN,
                Category::InvalidRequest => StatusCode::BAD_REQUEST,
                Category::NotFound => StatusCode::NOT_FOUND,
                Category::RateLimited | Category::QuotaExhausted => StatusCode::TOO_MANY_REQUESTS,
                Category::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                Category::Upstream => StatusCode::BAD_GATEWAY,
                Category::Timeout => StatusCode::GATEWAY_TIMEOUT,
                Category::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// The `retry-after` to send, for 429 and 503 answers.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::NoAccountAvailable { retry_after, .. } => Some(*retry_after),
            GatewayError::Busy => Some(Duration::from_secs(1)),
            GatewayError::KeyLimit { retry_after, .. } => Some(*retry_after),
            GatewayError::Upstream(e) => match self.category() {
                Category::RateLimited | Category::QuotaExhausted => {
                    Some(e.retry_after().unwrap_or(DEFAULT_RATE_LIMIT_RETRY))
                }
                Category::Unavailable => Some(crate::pool::selection::NO_ACCOUNT_RETRY),
                _ => None,
            },
            _ => None,
        }
    }

    /// The message a client sees. Upstream failures say what failed without internals.
    pub fn client_message(&self) -> String {
        match self {
            GatewayError::Upstream(e) => match e.kind {
                ErrorKind::BadRequest => {
                    format!("the upstream rejected the request: {}", e.message)
                }
                ErrorKind::RateLimited { .. } => {
                    "the upstream is rate limiting every available account; retry later".to_owned()
                }
                ErrorKind::QuotaExhausted { .. } => {
                    "the upstream quota of every available account is used up; retry later"
                        .to_owned()
                }
                ErrorKind::AuthExpired | ErrorKind::CookiesInvalid | ErrorKind::Challenge => {
                    "no upstream account could be authenticated; retry later".to_owned()
                }
                ErrorKind::Timeout => "the upstream did not answer in time".to_owned(),
                // Names the proxy (its password redacted) and what went wrong with it.
                ErrorKind::Proxy { .. } => e.message.clone(),
                ErrorKind::NotFound
                | ErrorKind::Server { .. }
                | ErrorKind::Transport
                | ErrorKind::Protocol => format!("the upstream failed: {}", e.message),
            },
            GatewayError::NoAccountAvailable { empty: true, .. } => EMPTY_POOL.to_owned(),
            GatewayError::NoAccountAvailable { .. } => {
                "no upstream account is available right now; retry later".to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// What a request is told when the pool holds no account (also said at start and in `/health`).
pub const EMPTY_POOL: &str = "the gateway has no upstream accounts: put account files \
     (<email>.json, see config/account.example.json) in the data directory and restart, or \
     import them with `business2api accounts import` or POST /admin/pool-files/import";

impl From<ModelError> for GatewayError {
    fn from(e: ModelError) -> Self {
        GatewayError::Model(e)
    }
}

impl From<UpstreamError> for GatewayError {
    fn from(e: UpstreamError) -> Self {
        GatewayError::Upstream(e)
    }
}

impl From<InputError> for GatewayError {
    fn from(e: InputError) -> Self {
        GatewayError::Input(e)
    }
}

impl From<crate::upstream::CallError> for GatewayError {
    fn from(e: crate::upstream::CallError) -> Self {
        match e {
            crate::upstream::CallError::Upstream(e) => GatewayError::Upstream(e),
            crate::upstream::CallError::Input(e) => GatewayError::Input(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(kind: ErrorKind) -> GatewayError {
        GatewayError::Upstream(UpstreamError::new(kind, "widgetStreamAssist", "boom"))
    }

    #[test]
    fn statuses() {
        assert_eq!(GatewayError::MissingApiKey.status(), 401);
        assert_eq!(
            GatewayError::Model(ModelError::Unknown("x".into())).status(),
            404
        );
        assert_eq!(GatewayError::Model(ModelError::Missing).status(), 400);
        assert_eq!(up(ErrorKind::BadRequest).status(), 400);
        let invalid = GatewayError::Input(InputError::invalid("bad media"));
        let large = GatewayError::Input(InputError::too_large("big media"));
        assert_eq!(invalid.status(), 400);
        assert_eq!(large.status(), 413);
        assert_eq!(large.category(), Category::InvalidRequest);
        assert_eq!(invalid.client_message(), "bad media");
        assert_eq!(
            up(ErrorKind::RateLimited { retry_after: None }).status(),
            429
        );
        assert_eq!(
            up(ErrorKind::QuotaExhausted { retry_after: None }).status(),
            429
        );
        assert_eq!(up(ErrorKind::Challenge).status(), 503);
        assert_eq!(up(ErrorKind::Server { status: 500 }).status(), 502);
        assert_eq!(up(ErrorKind::Transport).status(), 502);
        assert_eq!(up(ErrorKind::Timeout).status(), 504);
        let none = GatewayError::NoAccountAvailable {
            retry_after: Duration::from_secs(9),
            empty: false,
        };
        assert_eq!(none.status(), 503);
        assert_eq!(none.retry_after(), Some(Duration::from_secs(9)));
    }

    #[test]
    fn retry_after_prefers_the_upstream_value() {
        let d = Some(Duration::from_secs(33));
        assert_eq!(
            up(ErrorKind::RateLimited { retry_after: d }).retry_after(),
            d
        );
        assert_eq!(
            up(ErrorKind::RateLimited { retry_after: None }).retry_after(),
            Some(DEFAULT_RATE_LIMIT_RETRY)
        );
        assert_eq!(up(ErrorKind::Server { status: 500 }).retry_after(), None);
    }
}
