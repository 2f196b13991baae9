//! The business2api worker: the process that runs in **client** mode.
//!
//! A worker connects out to a business2api server over WebSocket, takes tasks (re-login of an
//! account the operator owns in a real browser driven over WebDriver, account health probes) and
//! reports results. It serves no API.
//!
//! # Status
//! Only the crate boundary exists so far: the server–worker contract lives in
//! [`business2api_shared`], and the WebSocket client, task runners and the `Browser` trait arrive
//! with the worker issue. Until then `business2api serve` refuses `pool_server.mode = "client"`
//! with a clear message instead of pretending to run a worker.

/// The protocol version this worker speaks (re-exported so the binary can report it).
pub use business2api_shared::PROTOCOL_VERSION;
