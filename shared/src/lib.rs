//! Types shared by the `business2api` server and its workers.
//!
//! This crate is the wire contract between the two processes. It must stay free of actix-web and
//! reqwest so that both sides can depend on it cheaply.
//!
//! # Layout
//! - [`secret`]: [`Secret`], a wrapper for credentials that never prints its contents, and
//!   constant-time comparison helpers.
//! - [`account`]: [`AccountKey`], the normalised e-mail address that names an account.
//! - [`protocol`]: the server ⇄ worker protocol — versioned, `type`-tagged JSON text frames
//!   ([`protocol::WorkerMessage`], [`protocol::ServerMessage`]), the handshake
//!   ([`protocol::negotiate`]), task ids, heartbeat and size constants, close codes, and the
//!   parser a server runs on every frame ([`protocol::WorkerMessage::parse`]).
//! - [`PROTOCOL_VERSION`]: the protocol's major version.

pub mod account;
pub mod protocol;
pub mod secret;

pub use account::AccountKey;
pub use secret::Secret;

/// Major version of the server–worker message protocol ([`protocol::PROTOCOL_MAJOR`]). Bumped on
/// any incompatible change; both sides refuse a peer that speaks a different major version.
pub const PROTOCOL_VERSION: u32 = protocol::PROTOCOL_MAJOR;
