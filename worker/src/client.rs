//! The connection: dial, handshake, serve tasks, heartbeat, drain, reconnect.
//!
//! One async loop owns the WebSocket ([`run`]): the upgrade with the bearer secret, `hello`, the
//! `welcome` (or `refused`), then a `select!` over the server's frames, the heartbeat timer, the
//! running tasks' events and the shutdown signal. Tasks run as spawned futures (at most the
//! capacity), each aborted when the server cancels it, when a drain outlasts its bound or when
//! the connection is lost (the server then queues its tasks again at once). After any
//! disconnection the loop dials again after a jittered exponential [`Backoff`].
//!
//! This is a task rather than an actix actor on purpose: the session is a strict sequence
//! (handshake, then serve) whose every step writes to the one socket, awc's framed socket is
//! `!Send` and owned by exactly one place, and nothing else needs to send it messages except its
//! own tasks (a channel). An actor would add a mailbox and `Handler` impls around the same
//! `select!` without taking any state away from it.

use std::collections::HashMap;
use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use awc::error::WsProtocolError;
use awc::ws::{CloseCode, CloseReason, Frame, Message};
use business2api_shared::Secret;
use business2api_shared::protocol::{
    Close, DeclineReason, FailureReason, Hello, MAX_FRAME_BYTES, ProtocolError, ProtocolVersion,
    ServerMessage, TaskId, TaskOutcome, TaskResult, Welcome, WorkerMessage, code,
};
use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use rustls_platform_verifier::BuilderVerifierExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::config::{Backoff, WorkerConfig};
use crate::runner::{TaskContext, TaskEvent, TaskRunner};

/// The software version announced in `hello`.
pub const SOFTWARE: &str = concat!("business2api-worker/", env!("CARGO_PKG_VERSION"));

/// Why [`run`] could not start at all.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// The TLS configuration for `wss://`: rustls with the ring provider (the workspace builds no
/// other) and the platform's certificate verifier, HTTP/1.1 only (a WebSocket upgrade).
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, StartError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError(format!("TLS setup: {e}")))?
        .with_platform_verifier()
        .map_err(|e| StartError(format!("TLS setup: {e}")))?
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Runs the worker until `shutdown` is cancelled: connects, serves, reconnects. On shutdown a
/// connected worker drains (sends `draining`, takes no new task, waits up to
/// [`WorkerConfig::drain_timeout`] for its running tasks, cancels the rest) and closes with 1001.
/// Must run on an actix (or tokio local) runtime: awc's socket is not `Send`.
pub async fn run(
    config: WorkerConfig,
    runner: Arc<dyn TaskRunner>,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let url = config.ws_url().map_err(StartError)?;
    let client = awc::Client::builder()
        .connector(
            awc::Connector::new()
                .rustls_0_23(tls_config()?)
                .timeout(config.connect_timeout),
        )
        .timeout(config.connect_timeout)
        .finish();
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    loop {
        tracing::info!(server = %url, worker = %config.worker_id, "connecting to the server");
        let end = session(&client, &url, &config, runner.as_ref(), &shutdown).await;
        let delay = match end {
            SessionEnd::Stopped => {
                tracing::info!("worker stopped");
                return Ok(());
            }
            SessionEnd::Refused { code: c, reason } if c == code::INCOMPATIBLE => {
                let delay = config.incompatible_retry;
                tracing::error!(
                    code = c,
                    reason = %reason,
                    ours = %format_args!("{}.{}", ProtocolVersion::CURRENT.major, ProtocolVersion::CURRENT.minor),
                    retry_in_s = delay.as_secs(),
                    "the server refused this worker as incompatible; upgrade the worker or the \
                     server (retrying only after a long pause)"
                );
                delay
            }
            SessionEnd::Refused { code: c, reason } => {
                let delay = backoff.next_delay();
                tracing::warn!(code = c, what = code::describe(c), reason = %reason,
                    retry_in_ms = millis(delay), "the server refused this worker");
                delay
            }
            SessionEnd::Lost { welcomed } => {
                if welcomed {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::info!(retry_in_ms = millis(delay), "disconnected; reconnecting");
                delay
            }
        };
        tokio::select! {
            () = sleep(delay) => {}
            () = shutdown.cancelled() => {
                tracing::info!("worker stopped while disconnected");
                return Ok(());
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How a session ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// Shutdown: drained (or stopped before a session existed). The worker exits.
    Stopped,
    /// The server refused the worker (`refused`, or a close with a refusal code before any
    /// welcome).
    Refused { code: u16, reason: String },
    /// The connection failed or ended; `welcomed` when it had got as far as `welcome`.
    Lost { welcomed: bool },
}

async fn session(
    client: &awc::Client,
    url: &url::Url,
    config: &WorkerConfig,
    runner: &dyn TaskRunner,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let connect = client
        .ws(url.as_str())
        .bearer_auth(config.secret.expose())
        .max_frame_size(MAX_FRAME_BYTES)
        .connect();
    let connected = tokio::select! {
        r = timeout(config.connect_timeout, connect) => r,
        () = shutdown.cancelled() => return SessionEnd::Stopped,
    };
    let socket = match connected {
        Ok(Ok((_, socket))) => socket,
        Ok(Err(awc::error::WsClientError::InvalidResponseStatus(status)))
            if status == awc::http::StatusCode::UNAUTHORIZED =>
        {
            tracing::error!(
                "the server refused the upgrade with 401: pool_server.secret does not match the \
                 server's"
            );
            return SessionEnd::Lost { welcomed: false };
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot connect to the server");
            return SessionEnd::Lost { welcomed: false };
        }
        Err(_) => {
            tracing::warn!("connecting to the server timed out");
            return SessionEnd::Lost { welcomed: false };
        }
    };
    let mut transport = WsTransport(socket);
    run_session(&mut transport, config, runner, shutdown).await
}

/// One session over any transport: `hello`, the handshake, then serving until it ends.
pub(crate) async fn run_session<T: Transport>(
    transport: &mut T,
    config: &WorkerConfig,
    runner: &dyn TaskRunner,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let hello = WorkerMessage::Hello(Hello {
        protocol: ProtocolVersion::CURRENT,
        worker: config.worker_id.clone(),
        software: SOFTWARE.to_owned(),
        capacity: config.capacity,
        kinds: runner.kinds(),
    });
    if transport.send(&hello).await.is_err() {
        return SessionEnd::Lost { welcomed: false };
    }
    let welcome = match handshake(transport, config, shutdown).await {
        Ok(welcome) => welcome,
        Err(end) => return end,
    };
    tracing::info!(
        worker = %config.worker_id,
        server = %welcome.server,
        protocol = %format_args!("{}.{}", welcome.protocol.major, welcome.protocol.minor),
        capacity = config.capacity,
        "connected: the server accepted this worker"
    );
    let mut session = Session::new(config, runner, &welcome);
    session.serve(transport, shutdown).await
}

/// What a transport hands the session.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A valid message from the server.
    Message(ServerMessage),
    /// The server closed the connection (its close was answered).
    Closed { code: u16, reason: String },
    /// Something that breaks the protocol: the session closes with this code and reason.
    Bad(Close),
    /// The connection failed or ended without a close.
    Lost(String),
}

/// The sending failed: the connection is gone.
#[derive(Debug)]
pub(crate) struct SendFailed;

/// How a session talks to its server: a WebSocket ([`WsTransport`]) or, in local mode, typed
/// messages over bounded channels ([`crate::in_process`]). Pings, pongs and parsing stay
/// inside the transport; the session sees only [`Inbound`].
pub(crate) trait Transport {
    /// Sends one message (waits for room).
    async fn send(&mut self, message: &WorkerMessage) -> Result<(), SendFailed>;
    /// The next thing from the server. Cancel-safe enough for `select!`: a dropped call loses
    /// at most a ping's answer.
    async fn recv(&mut self) -> Inbound;
    /// Closes with `code` and `reason` (bounded wait for the peer's answer), then ends.
    async fn close(&mut self, code: u16, reason: &str);
}

/// The WebSocket transport: text frames of JSON, bounded by [`MAX_FRAME_BYTES`].
struct WsTransport<S>(S);

impl<S> Transport for WsTransport<S>
where
    S: Sink<Message, Error = WsProtocolError>
        + Stream<Item = Result<Frame, WsProtocolError>>
        + Unpin,
{
    async fn send(&mut self, message: &WorkerMessage) -> Result<(), SendFailed> {
        self.0
            .send(Message::Text(message.to_text().into()))
            .await
            .map_err(|_| SendFailed)
    }

    async fn recv(&mut self) -> Inbound {
        loop {
            match self.0.next().await {
                None => return Inbound::Lost("the server went away".to_owned()),
                Some(Err(e)) => return Inbound::Lost(e.to_string()),
                Some(Ok(Frame::Text(bytes))) => {
                    return match parse(&bytes) {
                        Ok(m) => Inbound::Message(m),
                        Err(e) => Inbound::Bad(e.close()),
                    };
                }
                Some(Ok(Frame::Ping(p))) => {
                    let _ = self.0.send(Message::Pong(p)).await;
                }
                Some(Ok(Frame::Pong(_))) => {}
                Some(Ok(Frame::Close(reason))) => {
                    let (code, reason_text) = close_parts(reason.as_ref());
                    let _ = self.0.send(Message::Close(reason)).await;
                    return Inbound::Closed {
                        code,
                        reason: reason_text,
                    };
                }
                Some(Ok(Frame::Binary(_) | Frame::Continuation(_))) => {
                    return Inbound::Bad(ProtocolError::NotText.close());
                }
            }
        }
    }

    async fn close(&mut self, code: u16, reason: &str) {
        close(&mut self.0, code, reason).await;
    }
}

/// Waits for `welcome` (or `refused`).
async fn handshake<T: Transport>(
    socket: &mut T,
    config: &WorkerConfig,
    shutdown: &CancellationToken,
) -> Result<Welcome, SessionEnd> {
    let deadline = Instant::now() + config.connect_timeout;
    let lost = SessionEnd::Lost { welcomed: false };
    loop {
        let inbound = tokio::select! {
            f = socket.recv() => f,
            () = sleep_until(deadline) => {
                tracing::warn!("no welcome from the server in time");
                socket.close(code::PROTOCOL_VIOLATION, "no welcome in time").await;
                return Err(lost);
            }
            () = shutdown.cancelled() => {
                socket.close(code::GOING_AWAY, "worker stopping").await;
                return Err(SessionEnd::Stopped);
            }
        };
        match inbound {
            Inbound::Lost(e) => {
                tracing::warn!(error = %e, "the connection failed during the handshake");
                return Err(lost);
            }
            Inbound::Message(ServerMessage::Welcome(w)) => {
                if w.protocol.major != ProtocolVersion::CURRENT.major {
                    socket
                        .close(code::INCOMPATIBLE, "welcome with another major version")
                        .await;
                    return Err(SessionEnd::Refused {
                        code: code::INCOMPATIBLE,
                        reason: format!(
                            "the server's welcome names protocol {}.{}",
                            w.protocol.major, w.protocol.minor
                        ),
                    });
                }
                return Ok(w);
            }
            Inbound::Message(ServerMessage::Refused(r)) => {
                let close_frame = r.close();
                return Err(SessionEnd::Refused {
                    code: close_frame.code,
                    reason: close_frame.reason().to_owned(),
                });
            }
            Inbound::Message(ServerMessage::Unknown) => {}
            Inbound::Message(_) => {
                socket
                    .close(code::PROTOCOL_VIOLATION, "expected welcome")
                    .await;
                return Err(lost);
            }
            Inbound::Bad(c) => {
                socket.close(c.code, c.reason()).await;
                return Err(lost);
            }
            Inbound::Closed { code: c, reason } => {
                return Err(if c == code::INCOMPATIBLE || c == code::TOO_MANY_WORKERS {
                    SessionEnd::Refused { code: c, reason }
                } else {
                    tracing::warn!(code = c, what = code::describe(c), reason = %reason,
                        "the server closed the connection before welcome");
                    lost
                });
            }
        }
    }
}

fn parse(bytes: &[u8]) -> Result<ServerMessage, ProtocolError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(ProtocolError::FrameTooLarge { bytes: bytes.len() });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ProtocolError::NotText)?;
    ServerMessage::parse(text)
}

fn close_parts(reason: Option<&CloseReason>) -> (u16, String) {
    match reason {
        Some(r) => (
            u16::from(r.code),
            Close::new(0, r.description.as_deref().unwrap_or_default())
                .reason()
                .to_owned(),
        ),
        None => (1005, String::new()),
    }
}

/// How long a close waits for the server's close frame (the closing handshake) before it drops
/// the connection. Dropping it at once can lose the last frames: the server may see the end of
/// the stream before it has read what was buffered.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Sends a close frame, waits (bounded) for the peer's, and shuts the connection down.
async fn close<T>(socket: &mut T, code: u16, reason: &str)
where
    T: Sink<Message, Error = WsProtocolError>
        + Stream<Item = Result<Frame, WsProtocolError>>
        + Unpin,
{
    let close = Close::new(code, reason);
    let sent = socket
        .send(Message::Close(Some(CloseReason {
            code: CloseCode::from(code),
            description: Some(close.reason().to_owned()),
        })))
        .await;
    if sent.is_ok() {
        let _ = timeout(CLOSE_WAIT, async {
            while let Some(Ok(frame)) = socket.next().await {
                if matches!(frame, Frame::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    let _ = socket.close().await;
}

/// A task this worker runs.
struct Running {
    handle: JoinHandle<()>,
    codes: mpsc::Sender<Secret>,
}

/// The tasks of one session; dropping it (the session ended) aborts them.
#[derive(Default)]
struct RunningTasks(HashMap<TaskId, Running>);

impl Drop for RunningTasks {
    fn drop(&mut self) {
        for running in self.0.values() {
            running.handle.abort();
        }
    }
}

impl RunningTasks {
    fn ids(&self) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self.0.keys().cloned().collect();
        ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        ids
    }
}

/// A welcomed session.
struct Session<'a> {
    config: &'a WorkerConfig,
    runner: &'a dyn TaskRunner,
    heartbeat: Duration,
    dead_after: Duration,
    running: RunningTasks,
    events_tx: mpsc::UnboundedSender<TaskEvent>,
    events_rx: mpsc::UnboundedReceiver<TaskEvent>,
}

/// The outcome sent for a task the worker cancels itself while draining.
const DRAIN_CANCELLED: &str = "the worker stopped before the task ended";

impl<'a> Session<'a> {
    fn new(config: &'a WorkerConfig, runner: &'a dyn TaskRunner, welcome: &Welcome) -> Self {
        // A zero interval would spin; an absurd one would never beat.
        let heartbeat = Duration::from_millis(welcome.heartbeat_interval_ms.clamp(10, 600_000));
        let dead_after = heartbeat.saturating_mul(welcome.missed_heartbeats.max(1));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Session {
            config,
            runner,
            heartbeat,
            dead_after,
            running: RunningTasks::default(),
            events_tx,
            events_rx,
        }
    }

    async fn serve<T: Transport>(
        &mut self,
        socket: &mut T,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let lost = SessionEnd::Lost { welcomed: true };
        let mut ticker = tokio::time::interval_at(Instant::now() + self.heartbeat, self.heartbeat);
        let mut last_heard = Instant::now();
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let drain_bound = async {
                match drain_deadline {
                    Some(d) => sleep_until(d).await,
                    None => pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled(), if drain_deadline.is_none() => {
                    tracing::info!(running = self.running.0.len(), "draining: no new tasks");
                    drain_deadline = Some(Instant::now() + self.config.drain_timeout);
                    if socket.send(&WorkerMessage::Draining {}).await.is_err() {
                        return SessionEnd::Stopped;
                    }
                    if self.running.0.is_empty() {
                        socket.close(code::GOING_AWAY, "worker stopping").await;
                        return SessionEnd::Stopped;
                    }
                }
                () = drain_bound => {
                    tracing::warn!(
                        running = self.running.0.len(),
                        "the drain bound passed: cancelling the running tasks"
                    );
                    for id in self.running.ids() {
                        if let Some(r) = self.running.0.remove(&id) {
                            r.handle.abort();
                        }
                        let result = WorkerMessage::Result(TaskResult {
                            task: id,
                            outcome: TaskOutcome::Failed {
                                reason: FailureReason::Cancelled,
                                message: DRAIN_CANCELLED.to_owned(),
                            },
                        });
                        if socket.send(&result).await.is_err() {
                            return SessionEnd::Stopped;
                        }
                    }
                    socket.close(code::GOING_AWAY, "worker stopping").await;
                    return SessionEnd::Stopped;
                }
                _ = ticker.tick() => {
                    if last_heard.elapsed() > self.dead_after {
                        tracing::warn!("nothing heard from the server: closing");
                        socket.close(code::HEARTBEAT_TIMEOUT, "no frame from the server").await;
                        return lost;
                    }
                    let beat = WorkerMessage::Heartbeat { running: self.running.ids() };
                    if socket.send(&beat).await.is_err() {
                        return lost;
                    }
                }
                Some(event) = self.events_rx.recv() => {
                    match event {
                        TaskEvent::Done(id, outcome) => {
                            if self.running.0.remove(&id).is_none() {
                                continue;
                            }
                            tracing::info!(task = %id, outcome = outcome_name(&outcome), "task ended");
                            let result = WorkerMessage::Result(TaskResult { task: id, outcome });
                            if socket.send(&result).await.is_err() {
                                return lost;
                            }
                            if drain_deadline.is_some() && self.running.0.is_empty() {
                                socket.close(code::GOING_AWAY, "worker stopping").await;
                                return SessionEnd::Stopped;
                            }
                        }
                        TaskEvent::Progress(id, stage) => {
                            if self.running.0.contains_key(&id) {
                                let progress = WorkerMessage::Progress { task: id, stage };
                                if socket.send(&progress).await.is_err() {
                                    return lost;
                                }
                            }
                        }
                    }
                }
                inbound = socket.recv() => {
                    last_heard = Instant::now();
                    let draining = drain_deadline.is_some();
                    match self.on_inbound(socket, inbound, draining).await {
                        Ok(()) => {}
                        Err(end) => return end,
                    }
                }
            }
        }
    }

    async fn on_inbound<T: Transport>(
        &mut self,
        socket: &mut T,
        inbound: Inbound,
        draining: bool,
    ) -> Result<(), SessionEnd> {
        let lost = SessionEnd::Lost { welcomed: true };
        let message = match inbound {
            Inbound::Message(m) => m,
            Inbound::Lost(e) => {
                tracing::warn!(error = %e, "the connection failed");
                return Err(lost);
            }
            Inbound::Closed { code: c, reason } => {
                tracing::warn!(code = c, what = code::describe(c), reason = %reason,
                    "the server closed the connection");
                return Err(if draining { SessionEnd::Stopped } else { lost });
            }
            Inbound::Bad(c) => {
                tracing::warn!(
                    code = c.code,
                    reason = c.reason(),
                    "bad frame from the server"
                );
                socket.close(c.code, c.reason()).await;
                return Err(lost);
            }
        };
        let reply = match message {
            ServerMessage::Task(task) => {
                let id = task.id.clone();
                let kind = task.kind();
                if self.running.0.contains_key(&id) {
                    // The same lease twice: the task already runs.
                    None
                } else if draining {
                    Some(WorkerMessage::Declined {
                        task: id,
                        reason: DeclineReason::Draining,
                    })
                } else if !self.runner.kinds().contains(&kind)
                    || kind == business2api_shared::protocol::TaskKindName::Unknown
                {
                    Some(WorkerMessage::Declined {
                        task: id,
                        reason: DeclineReason::Unsupported,
                    })
                } else if self.running.0.len() >= usize::from(self.config.capacity) {
                    Some(WorkerMessage::Declined {
                        task: id,
                        reason: DeclineReason::Busy,
                    })
                } else {
                    tracing::info!(task = %id, kind = ?kind, attempt = task.attempt, "task accepted");
                    let (ctx, codes) = TaskContext::new(id.clone(), self.events_tx.clone());
                    let work = self.runner.run(task, ctx);
                    let events = self.events_tx.clone();
                    let done_id = id.clone();
                    let handle = tokio::spawn(async move {
                        let outcome = work.await;
                        let _ = events.send(TaskEvent::Done(done_id, outcome));
                    });
                    self.running.0.insert(id.clone(), Running { handle, codes });
                    Some(WorkerMessage::Accepted { task: id })
                }
            }
            ServerMessage::Cancel { task, reason } => {
                // The lease is gone: the task stops and no result is sent (the server would
                // treat one for a task this worker no longer holds as a violation).
                if let Some(r) = self.running.0.remove(&task) {
                    r.handle.abort();
                    tracing::info!(task = %task, reason = ?reason, "task cancelled by the server");
                }
                None
            }
            ServerMessage::Otp { task, code } => {
                if let Some(r) = self.running.0.get(&task) {
                    let _ = r.codes.try_send(code);
                }
                None
            }
            ServerMessage::Refused(r) => {
                let c = r.close();
                return Err(SessionEnd::Refused {
                    code: c.code,
                    reason: c.reason().to_owned(),
                });
            }
            ServerMessage::HeartbeatAck {} | ServerMessage::Welcome(_) | ServerMessage::Unknown => {
                None
            }
        };
        if let Some(reply) = reply
            && socket.send(&reply).await.is_err()
        {
            return Err(lost);
        }
        Ok(())
    }
}

fn outcome_name(outcome: &TaskOutcome) -> &'static str {
    match outcome {
        TaskOutcome::ReloggedIn { .. } => "relogged_in",
        TaskOutcome::Probed { .. } => "probed",
        TaskOutcome::Failed { .. } => "failed",
    }
}
