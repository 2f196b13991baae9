//! The typed upstream error: whose fault a failure is, whether another account may succeed, and
//! what should happen to the account that failed.
//!
//! Classification happens once, in the adapter, from the HTTP status, headers and the *parsed*
//! body (never substring matches on raw text, reference defect 38). Everything above the adapter
//! decides on these types only.

use std::fmt;
use std::time::Duration;

/// What went wrong, as far as the gateway needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The short-lived JWT was refused (401/403 on U2–U6): mint a new one, try another account.
    AuthExpired,
    /// The account's cookies are no longer valid (U1 refused them, or `__Secure-C_SES` is
    /// missing): the account needs a re-login in a browser.
    CookiesInvalid,
    /// Google answered with a sign-in or challenge page instead of the API response.
    Challenge,
    /// Too many requests; `retry_after` from the `Retry-After` header or a `RetryInfo` detail.
    RateLimited { retry_after: Option<Duration> },
    /// A quota is used up (RESOURCE_EXHAUSTED with a `QuotaFailure`, or a quota error element).
    QuotaExhausted { retry_after: Option<Duration> },
    /// The upstream refused the request itself (400 / INVALID_ARGUMENT, 413, 422): another
    /// account would refuse it too.
    BadRequest,
    /// The session or file is gone (404).
    NotFound,
    /// 5xx, or another unexpected status.
    Server { status: u16 },
    /// Connection refused, reset, TLS failure, a connection cut mid-body.
    Transport,
    /// A call or the gap between two stream chunks took longer than its limit.
    Timeout,
    /// The upstream answered 200 with something we cannot use: malformed JSON, a missing field,
    /// an empty answer.
    Protocol,
    /// The account's egress proxy failed (connecting to or through it, TLS, its
    /// authentication), or — `exhausted` — no healthy proxy is left at all. Never the account's
    /// fault: the proxy pool scores it, the account is untouched.
    Proxy { exhausted: bool },
}

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The upstream or the account: not the client's fault.
    Upstream,
    /// The request itself.
    Client,
}

/// What should happen to the account that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountAction {
    /// Nothing: the failure says nothing about the account.
    None,
    /// Drop the cached JWT and mint a new one before the next use.
    RefreshToken,
    /// Do not use the account for a while; `None` means "the policy's default backoff".
    CoolDown(Option<Duration>),
    /// The cookies are dead: take the account out of rotation until it is re-logged in.
    NeedsRelogin,
}

/// An upstream failure, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub kind: ErrorKind,
    /// The upstream call that failed, as the adapter names it (e.g. `widgetStreamAssist`).
    pub endpoint: &'static str,
    /// The HTTP status, if the upstream answered.
    pub status: Option<u16>,
    /// A short description safe to log and to show a client: the upstream's own error message
    /// (from the parsed body) or ours. Never contains credentials.
    pub message: String,
}

impl UpstreamError {
    pub fn new(
        kind: ErrorKind,
        endpoint: impl Into<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            endpoint: endpoint.into(),
            status: None,
            message: message.into(),
        }
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Whose fault the failure is.
    pub fn source(&self) -> Source {
        match self.kind {
            ErrorKind::BadRequest => Source::Client,
            _ => Source::Upstream,
        }
    }

    /// Whether the same request may succeed on another account.
    pub fn retry_elsewhere(&self) -> bool {
        !matches!(
            self.kind,
            ErrorKind::BadRequest | ErrorKind::Proxy { exhausted: true }
        )
    }

    /// What to do with the account that produced this error.
    pub fn account_action(&self) -> AccountAction {
        match &self.kind {
            ErrorKind::AuthExpired => AccountAction::RefreshToken,
            ErrorKind::CookiesInvalid => AccountAction::NeedsRelogin,
            ErrorKind::Challenge => AccountAction::RefreshToken,
            ErrorKind::RateLimited { retry_after } | ErrorKind::QuotaExhausted { retry_after } => {
                AccountAction::CoolDown(*retry_after)
            }
            ErrorKind::Server { .. } | ErrorKind::Transport | ErrorKind::Timeout => {
                AccountAction::CoolDown(None)
            }
            ErrorKind::BadRequest
            | ErrorKind::NotFound
            | ErrorKind::Protocol
            | ErrorKind::Proxy { .. } => AccountAction::None,
        }
    }

    /// The retry-after the upstream asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.kind {
            ErrorKind::RateLimited { retry_after } | ErrorKind::QuotaExhausted { retry_after } => {
                *retry_after
            }
            _ => None,
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed", self.endpoint)?;
        if let Some(status) = self.status {
            write!(f, " with HTTP {status}")?;
        }
        write!(f, " ({:?}): {}", self.kind, self.message)
    }
}

impl std::error::Error for UpstreamError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: ErrorKind) -> UpstreamError {
        UpstreamError::new(kind, "widgetStreamAssist", "x")
    }

    #[test]
    fn decisions() {
        assert!(!err(ErrorKind::BadRequest).retry_elsewhere());
        assert_eq!(err(ErrorKind::BadRequest).source(), Source::Client);
        assert!(err(ErrorKind::Transport).retry_elsewhere());
        assert_eq!(
            err(ErrorKind::AuthExpired).account_action(),
            AccountAction::RefreshToken
        );
        assert_eq!(
            err(ErrorKind::CookiesInvalid).account_action(),
            AccountAction::NeedsRelogin
        );
        let d = Some(Duration::from_secs(7));
        assert_eq!(
            err(ErrorKind::RateLimited { retry_after: d }).account_action(),
            AccountAction::CoolDown(d)
        );
        assert_eq!(
            err(ErrorKind::QuotaExhausted { retry_after: d }).retry_after(),
            d
        );
        assert_eq!(
            err(ErrorKind::Server { status: 503 }).account_action(),
            AccountAction::CoolDown(None)
        );
    }

    #[test]
    fn display_names_endpoint_and_status() {
        let e = err(ErrorKind::Server { status: 502 }).with_status(502);
        assert_eq!(
            e.to_string(),
            "widgetStreamAssist failed with HTTP 502 (Server { status: 502 }): x"
        );
    }
}
