//! Types shared by the `business2api` server and its workers.
//!
//! This crate is the wire contract between the two processes. It must stay free of actix-web and
//! reqwest so that both sides can depend on it cheaply.
//!
//! # Layout
//! - [`secret`]: [`Secret`], a wrapper for credentials that never prints its contents, and
//!   constant-time comparison helpers.
//! - [`account`]: [`AccountKey`], the normalised e-mail address that names an account.
//! - [`PROTOCOL_VERSION`]: the version of the server–worker message protocol.

pub mod account;
pub mod secret;

pub use account::AccountKey;
pub use secret::Secret;

/// Version of the server–worker message protocol. Bumped on any incompatible change; both sides
/// refuse a peer that speaks a different major version.
pub const PROTOCOL_VERSION: u32 = 1;
