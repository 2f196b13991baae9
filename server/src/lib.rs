//! business2api: a gateway that lets OpenAI, Anthropic and Gemini clients use Gemini Business
//! through a pool of accounts the operator owns.
//!
//! # Layout
//! - [`config`]: raw JSON + environment → validated [`config::Settings`].
//! - [`startup`]: [`startup::Application`], the wiring shared by `main` and the tests.
//! - [`domain`]: the vendor-neutral chat request, stream events, model ids, usage estimates.
//! - [`dialects`]: the client-facing wire formats (OpenAI, Anthropic, Gemini), each converting
//!   to and from the domain.
//! - [`upstream`]: the `Upstream` and `Authenticator` traits, the model registry, and the
//!   adapters (Gemini Business), with typed, classified errors.
//! - [`accounts`]: what an account is (its credentials).
//! - [`pool`]: the accounts as actors and how a request gets one.
//! - [`service`]: one chat request end to end: route by the registry, lease an account, call
//!   the upstream, fail over before the first byte.
//! - [`store`]: persistence in redb.
//! - [`body`]: what a request body may cost before a handler reads it (size, silence, the
//!   global budget of bytes in flight).
//! - [`auth`]: API keys (generated on first start when none is configured).
//! - [`cli_accounts`]: the `accounts` subcommands (import, export, list the stored accounts).
//! - [`forwarded`]: trusted proxies and the scheme and host of the gateway's own links.
//! - [`egress`]: egress proxies: each account's sticky proxy, proxy health and quarantine, proxy
//!   lists and subscriptions, and the sing-box process that serves tunnelled links.
//! - [`head_limits`]: URL and header limits answered in the caller's dialect.
//! - [`metrics`]: `GET /metrics` (Prometheus text 0.0.4 / OpenMetrics): the application's
//!   registry, the request and upstream counters, and gauges computed at scrape time.
//! - [`telemetry`]: tracing setup, the request root span, escaping untrusted text in logs.
//! - [`loghub`]: the last log lines in memory and a broadcast of new ones (the panel's live logs).
//! - [`videos`]: the asynchronous video jobs of `/v1/videos` (persisted, resumed at start).
//! - [`workers`]: server mode's worker endpoint `GET /ws`, the worker sessions and the task hub.

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod body;
pub mod cli_accounts;
pub mod client_mode;
pub mod config;
pub mod dialects;
pub mod domain;
pub mod egress;
pub mod error;
pub mod forwarded;
pub mod head_limits;
pub mod health;
pub mod keys;
pub mod loghub;
pub mod media;
pub mod metrics;
pub mod pool;
pub mod reload;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod upstream;
pub mod usage;
pub mod videos;
pub mod workers;
