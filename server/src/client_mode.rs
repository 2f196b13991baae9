//! Client mode (`pool_server.enable = true`, `mode = "client"`): the binary runs a worker and
//! nothing else — no HTTP API, no pool, no store. The worker (`business2api_worker`) dials
//! `pool_server.server_addr` over WebSocket with `pool_server.secret` and runs up to
//! `pool_server.client_threads` tasks at once; SIGTERM or Ctrl-C drains it.

use std::sync::Arc;

use business2api_worker::{NoBrowserRunner, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::startup::install_crypto_provider;

/// Why client mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientModeError {
    #[error("pool_server.server_addr is required in client mode")]
    NoServerAddr,
    #[error("pool_server.server_addr: {0}")]
    ServerAddr(String),
    #[error("cannot start the worker: {0}")]
    Worker(String),
}

/// Runs the worker until SIGTERM or Ctrl-C (then it drains and returns).
pub async fn run(settings: &Settings) -> Result<(), ClientModeError> {
    install_crypto_provider();
    let ps = &settings.pool_server;
    let server_addr = ps
        .server_addr
        .clone()
        .ok_or(ClientModeError::NoServerAddr)?;
    let config = WorkerConfig::new(server_addr, ps.secret.clone(), ps.client_threads)
        .map_err(ClientModeError::ServerAddr)?;
    if u32::from(config.capacity) != ps.client_threads {
        tracing::warn!(
            client_threads = ps.client_threads,
            capacity = config.capacity,
            "pool_server.client_threads is above what the protocol allows; using the maximum"
        );
    }
    let url = config.ws_url().map_err(ClientModeError::ServerAddr)?;
    tracing::info!(
        server = %url,
        worker = %config.worker_id,
        capacity = config.capacity,
        protocol = business2api_worker::PROTOCOL_VERSION,
        "client mode: running a worker (no HTTP API, no pool); this build has no browser \
         automation, so re-login tasks fail as unsupported (probes run)"
    );
    let runner = crate::workers::client_runner(settings, Arc::new(NoBrowserRunner))
        .map_err(ClientModeError::Worker)?;
    let shutdown = CancellationToken::new();
    let signals = actix_web::rt::spawn(stop_on_signal(shutdown.clone()));
    let result = business2api_worker::run(config, runner, shutdown).await;
    signals.abort();
    result.map_err(|e| ClientModeError::Worker(e.to_string()))
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C (SIGINT).
async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the worker");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stop requested: draining the worker");
    shutdown.cancel();
}
