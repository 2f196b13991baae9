//! Upstream adapters. Each speaks one upstream's wire format and turns its answers into domain
//! [`StreamEvent`](crate::domain::StreamEvent)s, and its failures into a classified
//! [`UpstreamError`].

pub mod error;
pub mod gemini_business;

pub use error::{AccountAction, Endpoint, ErrorKind, Source, UpstreamError};
