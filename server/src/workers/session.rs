//! [`WorkerSession`]: one actor per connected worker. It reads the worker's frames (bounded by
//! [`MAX_FRAME_BYTES`]), runs the handshake (`hello` within [`HELLO_TIMEOUT`], then
//! [`negotiate_with`]), answers heartbeats, watches for silence ([`MISSED_HEARTBEATS`]
//! intervals) and forwards every other valid message to the [`WorkerHub`]. Anything malformed,
//! oversized or out of turn closes this connection (and only this one) with a code and reason.
//!
//! Frames to the worker go through a bounded queue drained by one writer task, so they leave in
//! order; a worker that stops reading until the queue is full is disconnected.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Session};
use business2api_shared::protocol::{
    Close, HELLO_TIMEOUT, Hello, MISSED_HEARTBEATS, ProtocolError, Refusal, ServerMessage,
    ServerTerms, Welcome, WorkerMessage, code, negotiate_with,
};
use tokio::sync::mpsc;

use super::hub::{FromWorker, Register, ToSession, Unregister, WorkerHub};

/// Frames queued for one worker before it counts as not reading.
pub const OUTBOUND_QUEUE: usize = 64;

/// Messages from the hub a session can hold before it reads them.
const SESSION_MAILBOX: usize = 256;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A new session id (shared by WebSocket and in-process sessions).
pub(super) fn next_session_id() -> u64 {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}

enum Out {
    Text(String),
    Pong(bytes::Bytes),
    Close(Close),
}

/// The session actor (see the module docs).
pub struct WorkerSession {
    id: u64,
    hub: Addr<WorkerHub>,
    terms: ServerTerms,
    peer: String,
    out: mpsc::Sender<Out>,
    /// For a close when the queue is full.
    session: Session,
    registered: bool,
    closing: bool,
    last_heard: Instant,
}

impl WorkerSession {
    /// Starts the session's actor and its writer for an upgraded connection.
    pub fn start(
        hub: Addr<WorkerHub>,
        terms: ServerTerms,
        peer: String,
        session: Session,
        stream: actix_ws::AggregatedMessageStream,
    ) {
        let (tx, mut rx) = mpsc::channel::<Out>(OUTBOUND_QUEUE);
        let mut writer = session.clone();
        actix::spawn(async move {
            while let Some(frame) = rx.recv().await {
                let sent = match frame {
                    Out::Text(t) => writer.text(t).await,
                    Out::Pong(b) => writer.pong(&b).await,
                    Out::Close(c) => {
                        let _ = writer.close(Some(close_reason(&c))).await;
                        return;
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        WorkerSession::create(move |ctx| {
            ctx.add_stream(stream);
            WorkerSession {
                id: next_session_id(),
                hub,
                terms,
                peer,
                out: tx,
                session,
                registered: false,
                closing: false,
                last_heard: Instant::now(),
            }
        });
    }

    fn push(&mut self, frame: Out, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        if let Err(e) = self.out.try_send(frame) {
            let full = matches!(e, mpsc::error::TrySendError::Full(_));
            if full {
                self.close_now(
                    Close::new(
                        code::PROTOCOL_VIOLATION,
                        "the worker does not read its frames",
                    ),
                    ctx,
                );
            } else {
                self.closing = true;
                ctx.stop();
            }
        }
    }

    fn send(&mut self, message: &ServerMessage, ctx: &mut Context<Self>) {
        self.push(Out::Text(message.to_text()), ctx);
    }

    /// Queues the close frame after what is already queued, then stops reading.
    fn close(&mut self, close: Close, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        tracing::info!(
            session = self.id,
            code = close.code,
            reason = close.reason(),
            "closing a worker session"
        );
        self.push(Out::Close(close), ctx);
        self.closing = true;
        ctx.stop();
    }

    /// Closes at once, bypassing the queue.
    fn close_now(&mut self, close: Close, ctx: &mut Context<Self>) {
        self.closing = true;
        tracing::info!(
            session = self.id,
            code = close.code,
            reason = close.reason(),
            "closing a worker session"
        );
        let session = self.session.clone();
        let reason = close_reason(&close);
        actix::spawn(async move {
            let _ = session.close(Some(reason)).await;
        });
        ctx.stop();
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let message = match WorkerMessage::parse(text).and_then(WorkerMessage::require_known) {
            Ok(m) => m,
            Err(e) => return self.close(e.close(), ctx),
        };
        match step(self.registered, message, &self.terms) {
            Step::Welcome(welcome, hello) => {
                let kinds = welcome.kinds.clone();
                self.send(&ServerMessage::Welcome(welcome), ctx);
                self.registered = true;
                self.hub.do_send(Register {
                    session: self.id,
                    addr: ctx.address().recipient(),
                    hello,
                    kinds,
                    peer: self.peer.clone(),
                });
            }
            Step::Refuse(refusal) => {
                let close = refusal.close();
                self.send(&ServerMessage::Refused(refusal), ctx);
                self.close(close, ctx);
            }
            Step::Close(close) => self.close(close, ctx),
            Step::Forward { message, ack } => {
                if ack {
                    self.send(&ServerMessage::HeartbeatAck {}, ctx);
                }
                // The hub's mailbox is large; a full one means the server is overloaded, and
                // this worker's message is dropped rather than blocking the connection.
                if self
                    .hub
                    .try_send(FromWorker {
                        session: self.id,
                        message,
                    })
                    .is_err()
                {
                    tracing::warn!(
                        session = self.id,
                        "the worker hub is busy; a worker message was dropped"
                    );
                }
            }
        }
    }
}

fn close_reason(close: &Close) -> CloseReason {
    CloseReason {
        code: CloseCode::from(close.code),
        description: Some(close.reason().to_owned()),
    }
}

impl Actor for WorkerSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The hub never waits on a session: room for a burst of tasks and cancels (a heartbeat
        // may list up to 32 stale tasks) beyond actix's default of 16.
        ctx.set_mailbox_capacity(SESSION_MAILBOX);
        ctx.run_later(HELLO_TIMEOUT, |s, ctx| {
            if !s.registered {
                s.close(
                    Close::new(
                        code::PROTOCOL_VIOLATION,
                        "no hello within the hello timeout",
                    ),
                    ctx,
                );
            }
        });
        let interval = self.terms.heartbeat_interval;
        let silence = interval.saturating_mul(self.terms.missed_heartbeats.max(1));
        ctx.run_interval(interval.min(Duration::from_secs(1)), move |s, ctx| {
            if s.registered && s.last_heard.elapsed() > silence {
                s.close(
                    Close::new(
                        code::HEARTBEAT_TIMEOUT,
                        &format!("nothing heard for {MISSED_HEARTBEATS} heartbeat intervals"),
                    ),
                    ctx,
                );
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if self.registered {
            self.hub.do_send(Unregister { session: self.id });
        }
    }
}

impl Handler<ToSession> for WorkerSession {
    type Result = ();

    fn handle(&mut self, msg: ToSession, ctx: &mut Context<Self>) {
        match msg {
            ToSession::Send(m) => self.send(&m, ctx),
            ToSession::Close(c) => self.close(c, ctx),
        }
    }
}

impl StreamHandler<Result<AggregatedMessage, actix_ws::ProtocolError>> for WorkerSession {
    fn handle(
        &mut self,
        item: Result<AggregatedMessage, actix_ws::ProtocolError>,
        ctx: &mut Context<Self>,
    ) {
        if self.closing {
            return;
        }
        self.last_heard = Instant::now();
        match item {
            Ok(AggregatedMessage::Text(text)) => self.on_text(&text, ctx),
            Ok(AggregatedMessage::Binary(_)) => self.close(ProtocolError::NotText.close(), ctx),
            Ok(AggregatedMessage::Ping(b)) => self.push(Out::Pong(b), ctx),
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(_)) => {
                self.close(Close::new(code::NORMAL, "bye"), ctx);
            }
            Err(actix_ws::ProtocolError::Overflow) => self.close(
                ProtocolError::FrameTooLarge {
                    bytes: business2api_shared::protocol::MAX_FRAME_BYTES + 1,
                }
                .close(),
                ctx,
            ),
            Err(e) => {
                tracing::info!(session = self.id, error = %e, "bad WebSocket frame");
                self.close(
                    Close::new(code::BAD_MESSAGE, "not a valid WebSocket frame"),
                    ctx,
                );
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.closing = true;
        ctx.stop();
    }
}

/// What a session does with one well-formed message from its worker: the same rules for a
/// remote worker ([`WorkerSession`]) and local mode's in-process one
/// ([`super::local::LocalSession`]).
pub(super) enum Step {
    /// The first hello, accepted: send the welcome, then register with the hub.
    Welcome(Welcome, Hello),
    /// The first hello, refused: send the refusal, then close.
    Refuse(Refusal),
    /// A protocol violation: close with this reason.
    Close(Close),
    /// After the hello: hand the message to the hub (answering a heartbeat first when `ack`).
    Forward { message: WorkerMessage, ack: bool },
}

/// The [`Step`] for `message`, given whether the worker said hello already.
pub(super) fn step(registered: bool, message: WorkerMessage, terms: &ServerTerms) -> Step {
    match (registered, message) {
        (false, WorkerMessage::Hello(hello)) => match negotiate_with(&hello, terms) {
            Ok(welcome) => Step::Welcome(welcome, hello),
            Err(refusal) => Step::Refuse(refusal),
        },
        (false, _) => Step::Close(
            ProtocolError::Unexpected {
                what: "a message before hello",
            }
            .close(),
        ),
        (true, WorkerMessage::Hello(_)) => Step::Close(
            ProtocolError::Unexpected {
                what: "a second hello",
            }
            .close(),
        ),
        (true, message) => Step::Forward {
            ack: matches!(message, WorkerMessage::Heartbeat { .. }),
            message,
        },
    }
}
