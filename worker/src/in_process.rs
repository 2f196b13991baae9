//! Local mode's in-process worker: the same session loop as over a WebSocket ([`crate::run`]),
//! over typed messages on bounded channels instead of JSON frames. The server's side of the
//! link ([`ServerEnd`]) is driven by an in-process session actor in the server crate, which
//! validates what the worker sends exactly as the WebSocket session does.
//!
//! There is no reconnection: the link lives as long as the process, and [`run`] returns when
//! the session ends (drained on shutdown, or the server's side went away).

use std::sync::Arc;

use business2api_shared::protocol::{Close, ServerMessage, WorkerMessage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::{Inbound, SendFailed, SessionEnd, Transport, run_session};
use crate::config::WorkerConfig;
use crate::runner::TaskRunner;

/// Messages in flight each way before the sender waits.
pub const LINK_CAPACITY: usize = 64;

/// From the server to the worker.
#[derive(Debug)]
pub enum ToWorker {
    Message(ServerMessage),
    /// The server ends the session with this code and reason.
    Close(Close),
}

/// From the worker to the server.
#[derive(Debug)]
pub enum FromWorker {
    Message(WorkerMessage),
    /// The worker ends the session with this code and reason.
    Close(Close),
}

/// The server's side of a link.
#[derive(Debug)]
pub struct ServerEnd {
    pub to_worker: mpsc::Sender<ToWorker>,
    pub from_worker: mpsc::Receiver<FromWorker>,
}

/// The worker's side of a link (give it to [`run`]).
#[derive(Debug)]
pub struct WorkerEnd {
    to_server: mpsc::Sender<FromWorker>,
    from_server: mpsc::Receiver<ToWorker>,
}

/// A new link: bounded channels both ways.
pub fn link() -> (ServerEnd, WorkerEnd) {
    let (to_worker, from_server) = mpsc::channel(LINK_CAPACITY);
    let (to_server, from_worker) = mpsc::channel(LINK_CAPACITY);
    (
        ServerEnd {
            to_worker,
            from_worker,
        },
        WorkerEnd {
            to_server,
            from_server,
        },
    )
}

impl Transport for WorkerEnd {
    async fn send(&mut self, message: &WorkerMessage) -> Result<(), SendFailed> {
        self.to_server
            .send(FromWorker::Message(message.clone()))
            .await
            .map_err(|_| SendFailed)
    }

    async fn recv(&mut self) -> Inbound {
        match self.from_server.recv().await {
            None => Inbound::Lost("the in-process server side went away".to_owned()),
            Some(ToWorker::Message(m)) => Inbound::Message(m),
            Some(ToWorker::Close(c)) => Inbound::Closed {
                code: c.code,
                reason: c.reason().to_owned(),
            },
        }
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let _ = self
            .to_server
            .send(FromWorker::Close(Close::new(code, reason)))
            .await;
        self.from_server.close();
    }
}

/// Runs one in-process session until `shutdown` is cancelled (then it drains like a remote
/// worker: `draining`, running tasks finish or are cancelled after
/// [`WorkerConfig::drain_timeout`]) or the server's side goes away. Needs a tokio runtime.
pub async fn run(
    config: WorkerConfig,
    runner: Arc<dyn TaskRunner>,
    mut end: WorkerEnd,
    shutdown: CancellationToken,
) {
    tracing::info!(worker = %config.worker_id, capacity = config.capacity, "in-process worker starting");
    let ended = run_session(&mut end, &config, runner.as_ref(), &shutdown).await;
    match ended {
        SessionEnd::Stopped => tracing::info!("in-process worker stopped"),
        other => tracing::warn!(end = ?other, "in-process worker session ended"),
    }
}
