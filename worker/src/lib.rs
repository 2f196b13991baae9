//! The business2api worker: the process that runs in **client** mode.
//!
//! A worker dials out to a business2api server over WebSocket (`GET <server_addr>/ws`, `ws://`
//! or `wss://` with rustls), authenticates with `Authorization: Bearer <pool_server.secret>` on
//! the upgrade request (never in the URL), announces itself in `hello` (capacity =
//! `pool_server.client_threads`, the task kinds its runner takes) and then runs the tasks the
//! server leases to it, reporting `accepted`, `progress` and `result`. It serves no API.
//!
//! - [`run`] is the whole life of a worker: connect, serve, reconnect after any disconnection
//!   with jittered exponential backoff ([`Backoff`], 1 s → 60 s by default; a refusal for an
//!   incompatible protocol waits [`config::INCOMPATIBLE_RETRY`]), and drain when its shutdown
//!   token is cancelled (`draining`, no new tasks, running ones finish or are cancelled after
//!   [`WorkerConfig::drain_timeout`], close 1001).
//! - Tasks run concurrently up to the capacity through a [`TaskRunner`]; a `cancel` from the
//!   server aborts that task (its future is dropped; no result is sent, the lease is gone).
//!   Heartbeats at the welcome's interval list the running tasks.
//! - The server's `Unknown` messages are ignored; malformed frames close the session with the
//!   protocol's close code and the worker reconnects.
//!
//! # Status
//! The connection is complete; the task runners are not. This build's production runner,
//! [`NoBrowserRunner`], fails every `relogin` (no browser automation yet: thirtyfour, the
//! `Browser` trait and the one-time-code sources come with their own work) and every `probe`
//! (the Gemini Business client lives in the server crate, which depends on this one) with
//! [`FailureReason::Unsupported`](business2api_shared::protocol::FailureReason::Unsupported)
//! and a message that says so. Local mode's in-process worker (no socket) is not built yet.

pub mod browser;
pub mod browser_runner;
pub mod client;
pub mod config;
pub mod in_process;
pub mod otp;
pub mod relogin;
pub mod runner;

pub use browser_runner::{BrowserConfig, BrowserRunner};
pub use client::{SOFTWARE, StartError, run};
pub use config::{Backoff, WorkerConfig};
pub use runner::{ComposedRunner, NoBrowserRunner, TaskContext, TaskRunner};

/// The protocol version this worker speaks (re-exported so the binary can report it).
pub use business2api_shared::PROTOCOL_VERSION;
