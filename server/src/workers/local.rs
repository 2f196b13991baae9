//! [`LocalSession`]: local mode's in-process worker session. It plays the role
//! [`super::session::WorkerSession`] plays for a socket — the handshake (`hello`, then
//! [`negotiate_with`]), heartbeat answers, forwarding to the [`WorkerHub`] (Register /
//! FromWorker / ToSession / Unregister) — over the typed, bounded channels of
//! [`business2api_worker::in_process`]. What the worker sends is validated exactly as a remote
//! worker's frames are (bounds of every field, no unknown type, `hello` first and once); a
//! violation ends the session with the same close code.

use actix::prelude::*;
use business2api_shared::protocol::{Close, ServerMessage, ServerTerms, WorkerMessage};
use business2api_worker::in_process::{FromWorker as Inbound, ServerEnd, ToWorker};
use tokio::sync::mpsc;

use super::hub::{FromWorker, Register, ToSession, Unregister, WorkerHub};
use super::session::{Step, next_session_id, step};

/// The in-process session actor (see the module docs).
pub struct LocalSession {
    id: u64,
    hub: Addr<WorkerHub>,
    terms: ServerTerms,
    out: mpsc::Sender<ToWorker>,
    registered: bool,
    closing: bool,
}

impl LocalSession {
    /// Starts the session for the server's end of an in-process link.
    pub fn start(hub: Addr<WorkerHub>, terms: ServerTerms, end: ServerEnd) -> Addr<LocalSession> {
        let ServerEnd {
            to_worker,
            from_worker,
        } = end;
        let stream = futures_util::stream::unfold(from_worker, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        });
        LocalSession::create(move |ctx| {
            ctx.add_stream(stream);
            LocalSession {
                id: next_session_id(),
                hub,
                terms,
                out: to_worker,
                registered: false,
                closing: false,
            }
        })
    }

    fn send(&mut self, message: ServerMessage, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        if self.out.try_send(ToWorker::Message(message)).is_err() {
            // Full: the worker does not read; closed: it is gone.
            self.closing = true;
            ctx.stop();
        }
    }

    fn close(&mut self, close: Close, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        tracing::info!(
            session = self.id,
            code = close.code,
            reason = close.reason(),
            "closing the in-process worker session"
        );
        let _ = self.out.try_send(ToWorker::Close(close));
        self.closing = true;
        ctx.stop();
    }

    fn on_message(&mut self, message: WorkerMessage, ctx: &mut Context<Self>) {
        let message = match message.validate().and_then(|()| message.require_known()) {
            Ok(m) => m,
            Err(e) => return self.close(e.close(), ctx),
        };
        match step(self.registered, message, &self.terms) {
            Step::Welcome(welcome, hello) => {
                let kinds = welcome.kinds.clone();
                self.send(ServerMessage::Welcome(welcome), ctx);
                self.registered = true;
                self.hub.do_send(Register {
                    session: self.id,
                    addr: ctx.address().recipient(),
                    hello,
                    kinds,
                    peer: "in-process".to_owned(),
                });
            }
            Step::Refuse(refusal) => {
                let close = refusal.close();
                self.send(ServerMessage::Refused(refusal), ctx);
                self.close(close, ctx);
            }
            Step::Close(close) => self.close(close, ctx),
            Step::Forward { message, ack } => {
                if ack {
                    self.send(ServerMessage::HeartbeatAck {}, ctx);
                }
                self.hub.do_send(FromWorker {
                    session: self.id,
                    message,
                });
            }
        }
    }
}

impl Actor for LocalSession {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        if self.registered {
            self.hub.do_send(Unregister { session: self.id });
        }
    }
}

impl Handler<ToSession> for LocalSession {
    type Result = ();

    fn handle(&mut self, msg: ToSession, ctx: &mut Context<Self>) {
        match msg {
            ToSession::Send(m) => self.send(m, ctx),
            ToSession::Close(c) => self.close(c, ctx),
        }
    }
}

impl StreamHandler<Inbound> for LocalSession {
    fn handle(&mut self, item: Inbound, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        match item {
            Inbound::Message(m) => self.on_message(m, ctx),
            Inbound::Close(c) => {
                tracing::info!(
                    session = self.id,
                    code = c.code,
                    reason = c.reason(),
                    "the in-process worker closed its session"
                );
                self.closing = true;
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.closing = true;
        ctx.stop();
    }
}
