//! The business2api worker: what runs a server's tasks. In **client** mode it is the whole
//! process ([`run`], over WebSocket); in **local** mode the gateway runs one inside its own process
//! ([`in_process`], over channels, with the same session loop).
//!
//! In client mode the worker dials out to a business2api server over WebSocket
//! (`GET <server_addr>/ws`, `ws://` or `wss://` with rustls), authenticates with
//! `Authorization: Bearer <pool_server.secret>` on the upgrade request (never in the URL),
//! announces itself in `hello` (capacity = `pool_server.client_threads`, the task kinds its
//! runner takes) and then runs the tasks the server leases to it, reporting `accepted`,
//! `progress` and `result`. It serves no API.
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
//! # What runs a task
//! - [`BrowserRunner`] takes `relogin` tasks: [`relogin`] walks the login pages in a fresh
//!   Chromium session ([`browser::WebDriverBrowser`]: chromedriver through thirtyfour, a
//!   temporary profile per login; the scripted [`browser::FakeBrowser`] in tests), with the
//!   one-time code from the task's source ([`otp`]: a mailbox over IMAP, or the code the
//!   operator types, which the server forwards as `otp`), and keeps a bounded number of
//!   screenshots of failed logins. A `probe` is not its kind. An account's proxy with a
//!   password reaches Chromium through a loopback [`relay::Relay`] (Chromium's `--proxy-server`
//!   cannot carry credentials).
//! - [`ComposedRunner`] routes `relogin` to one runner and `probe` to another. The server crate
//!   composes the browser runner with its probe runner (the Gemini Business client lives there)
//!   for client mode and for local mode's in-process worker, so both announce both kinds.
//! - [`NoBrowserRunner`] fails every task as
//!   [`FailureReason::Unsupported`](business2api_shared::protocol::FailureReason::Unsupported);
//!   only tests use it.

pub mod browser;
pub mod browser_runner;
pub mod client;
pub mod config;
pub mod in_process;
pub mod otp;
pub mod relay;
pub mod relogin;
pub mod runner;

pub use browser_runner::{BrowserConfig, BrowserRunner};
pub use client::{SOFTWARE, StartError, run};
pub use config::{Backoff, WorkerConfig};
pub use runner::{ComposedRunner, NoBrowserRunner, TaskContext, TaskRunner};

/// The protocol version this worker speaks (re-exported so the binary can report it).
pub use business2api_shared::PROTOCOL_VERSION;
