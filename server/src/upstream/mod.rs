//! Upstream adapters. Each speaks one upstream's wire format and turns its answers into domain
//! [`StreamEvent`](crate::domain::StreamEvent)s, and its failures into a classified
//! [`UpstreamError`].
//!
//! The seam between the service and an adapter: [`Upstream`] (one conversation turn from a
//! domain [`ChatRequest`](crate::domain::ChatRequest) to a stream of domain events, failing with
//! a [`CallError`]); the [`registry`] maps each public model name to the upstream serving it.
//!
//! The seam between the pool and an adapter:
//! - [`Authenticator`]: an account's long-lived [`Credentials`] → a short-lived [`AccessToken`]
//!   (for Gemini Business: U1 + a self-signed JWT). The account actors call it; a result
//!   carries no generation of its own, the actor that started the mint knows it.
//! - [`CallAuth`]: what one upstream call is made with: the token and the account's
//!   credentials (each adapter reads what it needs from them).

pub mod error;
pub mod flow;
pub mod gemini_business;
pub mod registry;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use business2api_shared::Secret;
use futures_util::Stream;

pub use error::{AccountAction, ErrorKind, Source, UpstreamError};
pub use registry::{ModelRegistry, RegistryError, Route};

use crate::accounts::Credentials;
use crate::domain::{ChatRequest, StreamEvent};
use crate::error::InputError;

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
    /// The account's route: its pinned egress proxy, or direct.
    pub egress: crate::egress::Egress,
}

/// Turns an account's credentials into a short-lived token. Implemented by every upstream that
/// serves from the account pool; tests substitute fakes (no HTTP).
pub trait Authenticator: Send + Sync + std::fmt::Debug + 'static {
    /// Mints a token through `egress` (the account's proxy, or direct). Failures are
    /// classified ([`UpstreamError::account_action`] says what the pool does with the account).
    fn authenticate<'a>(
        &'a self,
        credentials: &'a Credentials,
        egress: &'a crate::egress::Egress,
    ) -> BoxFuture<'a, Result<AccessToken, UpstreamError>>;
}

/// Why a turn failed: the upstream (classified, with what to do about the account), or the
/// client's input (a media file that cannot be used: no other account is tried and the
/// account is not affected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Input(#[from] InputError),
}

/// The answer of one turn, as it arrives. Dropping it cancels whatever call is in flight.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, CallError>> + Send>>;

/// An upstream that answers chat turns for the models it registered.
///
/// Everything about the upstream's wire lives behind this trait: how a conversation becomes its
/// query, its endpoints, its error classification. The service calls it only after leasing a
/// pool member and getting its [`CallAuth`].
pub trait Upstream: Send + Sync + std::fmt::Debug + 'static {
    /// The name models register under ([`crate::domain::ModelSpec::upstream`]).
    fn name(&self) -> &'static str;

    /// The estimated input tokens of `request` as this upstream would be sent it (reported in
    /// usage and by the count-tokens routes).
    fn input_tokens(&self, request: &ChatRequest) -> u32;

    /// One turn: events as they arrive. A failure before the first event lets the service try
    /// another pool member (when [`UpstreamError::retry_elsewhere`] says so).
    fn converse(&self, auth: CallAuth, request: Arc<ChatRequest>) -> EventStream;
}

/// An upstream that draws on credentials of its own instead of the account pool, and fails
/// over among them itself (Flow and its token pool). The service calls it directly.
pub trait OwnPoolUpstream: Send + Sync + std::fmt::Debug + 'static {
    /// The name models register under ([`crate::domain::ModelSpec::upstream`]).
    fn name(&self) -> &'static str;

    /// The estimated input tokens of `request`.
    fn input_tokens(&self, request: &ChatRequest) -> u32;

    /// Whether its models are listed by `/v1/models` now (enabled, with a usable credential).
    fn listed(&self) -> bool;

    /// One turn: events as they arrive. A failure before the first event is the answer's
    /// status.
    fn converse(&self, request: Arc<ChatRequest>) -> EventStream;
}
