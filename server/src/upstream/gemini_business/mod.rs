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
//! - [`classify`]: status + parsed body → typed [`UpstreamError`](crate::upstream::UpstreamError).

pub mod classify;
pub mod client;
pub mod convert;
pub mod json_stream;
pub mod jwt;
pub mod wire;

pub use client::{EventStream, GeminiBusinessClient};
