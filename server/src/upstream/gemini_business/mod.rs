//! The Gemini Business adapter (`../shared/spec/gemini-business-upstream.md`): cookie session →
//! self-signed short-lived JWT → create session → upload files → stream assist → download
//! generated files.
//!
//! # Layout
//! - [`client`]: one method per endpoint (U1–U6), each with its own timeout, and
//!   [`client::GeminiBusinessClient::converse`], a whole chat turn as a stream of domain events.
//! - [`wire`]: request and response shapes; [`convert`]: elements → domain events, features →
//!   `toolsSpec`.
//! - [`json_stream`]: the incremental JSON-array splitter that lets events flow as bytes arrive.
//! - [`jwt`]: the U1 key and the self-signed HS256 JWT.
//! - [`prompt`]: a domain conversation → the one query the upstream takes (flattening).
//! - [`models`]: the models it serves, as registered in the model registry.
//! - [`endpoint`]: the U1–U6 calls, named in errors.
//! - [`classify`]: status + parsed body → typed [`UpstreamError`](crate::upstream::UpstreamError).

pub mod classify;
pub mod client;
pub mod convert;
pub mod endpoint;
pub mod json_stream;
pub mod jwt;
pub mod models;
pub mod prompt;
pub mod sessions;
pub mod wire;

use std::sync::Arc;

pub use client::GeminiBusinessClient;
pub use endpoint::Endpoint;

use crate::domain::ChatRequest;
use crate::upstream::{CallAuth, EventStream, Upstream};

/// The name this upstream's models register under.
pub const NAME: &str = "gemini-business";

/// The adapter as the service sees it: an [`Upstream`] over one shared client.
#[derive(Debug, Clone)]
pub struct GeminiBusiness {
    client: Arc<GeminiBusinessClient>,
}

impl GeminiBusiness {
    pub fn new(client: Arc<GeminiBusinessClient>) -> GeminiBusiness {
        GeminiBusiness { client }
    }

    pub fn client(&self) -> &Arc<GeminiBusinessClient> {
        &self.client
    }
}

impl Upstream for GeminiBusiness {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The flattened query and its attachments, estimated (see [`prompt`]).
    fn input_tokens(&self, request: &ChatRequest) -> u32 {
        prompt::input_tokens(request)
    }

    fn converse(&self, auth: CallAuth, request: Arc<ChatRequest>) -> EventStream {
        self.client.converse(auth, request)
    }
}
