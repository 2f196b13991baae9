//! Google Labs Flow (Imagen and Veo), the second upstream (`../shared/spec/flow-upstream.md`).
//!
//! Status (issue 13, first part): the model table ([`models`]) and every HTTP call of the
//! protocol ([`client::FlowClient`]), with typed failures, configurable hosts
//! (`flow.labs_base_url`, `flow.api_base_url`) and `flow.proxy` applied; tested against the
//! Flow simulator (`upstream_sim::flow`); where session tokens come from ([`tokens`]); one token
//! in use and a video job run to its end on it ([`session`]: access tokens reused until 5 min
//! before expiry and replaced when refused mid-job, poll errors waited out); what a chat request
//! asks Flow for ([`request`]: the prompt, the images, checked per model kind). Not yet:
//! the token pool, the registry entry that routes Flow models here, the dialects' output and
//! the async video job API.

pub mod client;
pub mod models;
pub mod pool;
pub mod request;
pub mod session;
pub mod tokens;
pub mod upstream;

pub use client::{AccessToken, Credits, FlowClient, VideoRequest, VideoStatus, VideoTask};
pub use models::{FlowModel, Orientation, VideoKind};
pub use pool::{FlowPool, TokenView};
pub use upstream::{FlowUpstream, SubmittedVideo, VideoPoll};
