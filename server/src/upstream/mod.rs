//! Upstream adapters. Each speaks one upstream's wire format and turns its answers into domain
//! [`StreamEvent`](crate::domain::StreamEvent)s, and its failures into a classified
//! [`UpstreamError`].
//!
//! The seam between the pool and an adapter:
//! - [`Authenticator`]: an account's long-lived [`Credentials`] → a short-lived [`AccessToken`]
//!   (for Gemini Business: U1 + a self-signed JWT). The account actors call it; a result
//!   carries no generation of its own, the actor that started the mint knows it.
//! - [`CallAuth`]: what one upstream call is made with: the token and the account's
//!   credentials (each adapter reads what it needs from them).

pub mod error;
pub mod gemini_business;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use business2api_shared::Secret;

pub use error::{AccountAction, Endpoint, ErrorKind, Source, UpstreamError};

use crate::accounts::Credentials;

/// A boxed, sendable future (the trait methods below return one so the traits stay
/// object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A short-lived token minted from an account's credentials.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub value: Secret,
    /// After this instant the token must not be used any more.
    pub use_until: Instant,
}

impl AccessToken {
    /// Whether the token may still be sent at `now`.
    pub fn usable_at(&self, now: Instant) -> bool {
        now < self.use_until
    }
}

/// What one upstream call on behalf of an account is made with.
#[derive(Debug, Clone)]
pub struct CallAuth {
    /// The account's current short-lived token.
    pub token: Secret,
    /// The account's long-lived credentials (shared, not copied per call).
    pub credentials: Arc<Credentials>,
}

/// Turns an account's credentials into a short-lived token. Implemented by every upstream that
/// serves from the account pool; tests substitute fakes (no HTTP).
pub trait Authenticator: Send + Sync + std::fmt::Debug + 'static {
    /// Mints a token. Failures are classified ([`UpstreamError::account_action`] says what the
    /// pool does with the account).
    fn authenticate<'a>(
        &'a self,
        credentials: &'a Credentials,
    ) -> BoxFuture<'a, Result<AccessToken, UpstreamError>>;
}
