//! A strict, scriptable simulator of the Gemini Business upstream (endpoints U1–U6 of
//! `shared/spec/gemini-business-upstream.md`), and of the Google Labs Flow upstream
//! ([`FlowSimulator`], `shared/spec/flow-upstream.md`).
//!
//! It is a real HTTP server (actix-web) on `127.0.0.1`, used by the integration tests (each
//! starts its own on port 0), by the gateway's in-process `demo` command, and as the standalone
//! `upstream-sim` binary for benchmarks and SDK smoke tests.
//!
//! * **Strict**: U1 checks the `__Secure-C_SES` cookie; U2–U6 verify the self-signed HS256 JWT
//!   against the key issued by U1 (kid, signature, `sub`, `aud`, `iss`, `nbf`/`exp`); U2–U5
//!   bodies are validated field by field (envelope, request member, enum values, sessions and
//!   fileIds owned by the caller, known model ids). Violations get Google-shaped errors
//!   (`{"error":{"code","message","status"}}`) naming the offending field.
//! * **Scriptable**: per-test answers ([`Answer`]), faults ([`FaultRule`], [`Fault`]),
//!   pacing between streamed elements, holding the last element of a stream ([`Gate`]), and
//!   inspection of what arrived ([`Simulator::requests`], [`Simulator::stats`]). Each
//!   [`RecordedRequest`] keeps its TCP peer, which tells egress proxies bound to distinct
//!   loopback source addresses apart.
//!
//! Fault rules apply after authentication passed: a request with a bad JWT is always a 401
//! (counted in [`SimStats::jwts_rejected`]); the first matching rule (insertion order; a rule
//! matches by endpoint, optionally by account and, for U4, by a marker in the prompt — see
//! [`FaultRule::when_prompt_contains`]) then decides, before the body is validated.
//!
//! The same server also plays the browser login the worker automates (see `login.rs`): a
//! successful login rotates the account's `__Secure-C_SES` (so the cookies the gateway holds
//! die, as after [`Simulator::expire_cookies`]) and mails the code to [`Simulator::mailbox`],
//! which a test serves over IMAP with [`imap::ImapServer`].
//!
//! # Layout
//! * `lib.rs` — [`Simulator`] (start/stop, scripting and inspection API) and [`SimOptions`].
//! * `model.rs` — public data types: [`SimAccount`], [`Endpoint`], [`FaultRule`], [`Fault`],
//!   [`Answer`], [`SimStats`], [`RecordedRequest`], [`Upload`], [`FileUris`].
//! * `gate.rs` — [`Gate`], the latch that releases a held stream.
//! * `state.rs` — the shared, bounded state behind one mutex (keys, sessions, files, scripts,
//!   records).
//! * `jwt.rs` — JWT verification.
//! * `validate.rs` — U2–U5 body validation.
//! * `stream.rs` — the U4 element-by-element chunked JSON array and its default echo answer.
//! * `handlers.rs` — the actix-web routes for U1–U6.
//! * `login.rs` — the simulated browser login (`/login`, `/login/email`, `/verify`,
//!   `/home/cid/{cid}`, `/_/app/bootstrap`) and the per-account [`LoginScript`]s.
//! * `mail.rs` — [`mail::Mailbox`], where the login's code e-mails are delivered.
//! * `imap.rs` — [`imap::ImapServer`], a plaintext IMAP4rev1 subset over a mailbox.
//! * `error.rs` — Google-shaped errors and the fault responses.
//! * `browser_lock.rs` — [`one_browser_at_a_time`], for tests that run a real Chromium.
//! * `flow/` — [`FlowSimulator`], the Google Labs Flow (Imagen / Veo) upstream: both of its
//!   hosts on one server (see [`flow`]).
//! * `main.rs` — the `upstream-sim` binary.

mod browser_lock;
mod error;
pub mod flow;
mod gate;
mod handlers;
pub mod imap;
mod jwt;
mod login;
pub mod mail;
mod model;
mod script;
mod state;
mod stream;
mod validate;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};

pub use browser_lock::one_browser_at_a_time;
pub use flow::{
    FlowRequest, FlowRoute, FlowSimulator, FlowUpload, ImageOutcome, VideoOutcome, VideoScript,
};
pub use gate::Gate;
pub use login::{DEFAULT_LOGIN_TTL, LOGIN_COOKIE, LoginScript};
pub use model::{
    Answer, AnswerPart, Endpoint, Fault, FaultRule, FileUris, Grounding, RecordedRequest,
    SimAccount, SimReference, SimSegment, SimStats, Upload,
};
pub use script::{
    AGENT_DIRECTIVE, AGENT_DONE, CALL_DIRECTIVE, GROUNDED_CITES, GROUNDED_DIRECTIVE, GROUNDED_TEXT,
    grounded_answer,
};
pub use stream::{CUT_DIRECTIVE, CUT_DIRECTIVE_AFTER, DEFAULT_IMAGE_PNG};
pub use validate::KNOWN_MODELS;

use state::State;

/// How a simulator runs.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Delay between U4 array elements (default 0).
    pub pacing: Duration,
    /// actix worker threads (default 1).
    pub workers: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            pacing: Duration::ZERO,
            workers: 1,
        }
    }
}

struct Shared {
    state: Arc<State>,
    handle: ServerHandle,
    addr: SocketAddr,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Sends the stop command; the server future finishes on its runtime.
        drop(self.handle.stop(false));
    }
}

/// A running simulator. Cheap to clone (all clones share one server); the server stops when
/// [`Simulator::stop`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Starts a simulator on `127.0.0.1:0` with default options. Must be called inside a
    /// tokio runtime (a `#[tokio::test]`, `#[tokio::main]` or actix-rt runtime).
    pub async fn start() -> std::io::Result<Simulator> {
        Simulator::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), SimOptions::default()).await
    }

    /// Starts a simulator on `addr` (port 0 = any free port) with `options`.
    pub async fn start_with(addr: SocketAddr, options: SimOptions) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let base_url = format!("http://{local}");
        let state = Arc::new(State::new(base_url, options.pacing));
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .configure(login::configure)
                .configure(handlers::configure)
        })
        .workers(options.workers.max(1))
        .disable_signals()
        .shutdown_timeout(1)
        // Notice a client that went away even while a held stream is idle.
        .h1_allow_half_closed(false)
        .tcp_nodelay(true)
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Simulator {
            shared: Arc::new(Shared {
                state,
                handle,
                addr: local,
            }),
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        self.shared.state.base_url.clone()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.shared.addr.port()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Registers (or replaces, by `csesidx`) an account.
    pub fn add_account(&self, account: SimAccount) {
        self.shared.state.add_account(account);
    }

    /// Forgets every session (as Google does when they expire): later calls naming one get 404
    /// `NOT_FOUND`.
    pub fn forget_sessions(&self) {
        self.shared.state.lock().sessions.clear();
    }

    /// Sets the time each later U2–U5 call waits before it is answered (U4: before its first
    /// byte), as a round trip to Google would take.
    pub fn set_call_latency(&self, latency: Duration) {
        self.shared.state.lock().call_latency = latency;
    }

    /// Sets the delay between U4 array elements for later streams.
    pub fn set_pacing(&self, pacing: Duration) {
        self.shared.state.lock().pacing = pacing;
    }

    /// The answer of every later U4 call (replaces the default echo answer).
    pub fn set_answer(&self, answer: Answer) {
        self.shared.state.lock().answer = Some(answer);
    }

    /// Goes back to the default echo answer for later U4 calls.
    pub fn clear_answer(&self) {
        self.shared.state.lock().answer = None;
    }

    /// A one-shot answer; one-shot answers are consumed FIFO before the set/default answer.
    pub fn push_answer(&self, answer: Answer) {
        self.shared.state.lock().queued.push_back(answer);
    }

    /// Adds a fault rule (after the existing ones).
    pub fn add_fault(&self, rule: FaultRule) {
        self.shared.state.add_fault(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.shared.state.lock().faults.clear();
    }

    /// Makes the next U4 stream send every element but the last, then wait until the returned
    /// gate is opened (or 30 s passed) before sending the last element and `]`.
    pub fn hold_last_element(&self) -> Gate {
        let gate = Gate::new();
        self.shared.state.lock().hold = Some(gate.clone());
        gate
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.shared.state.lock().stats.clone()
    }

    /// Every request that reached `endpoint`, in order (including rejected ones; the newest
    /// 10 000 are kept).
    pub fn requests(&self, endpoint: Endpoint) -> Vec<RecordedRequest> {
        self.shared
            .state
            .lock()
            .records
            .get(&endpoint)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The JSON body of the latest U4 request (whether accepted or not).
    pub fn last_stream_assist_body(&self) -> Option<serde_json::Value> {
        self.shared.state.lock().last_stream_assist_body.clone()
    }

    /// How later U3 calls treat uploads by `fileUri` (default: accept).
    pub fn set_file_uris(&self, mode: FileUris) {
        self.shared.state.lock().file_uris = mode;
    }

    /// Accepted U3 uploads, in order (the newest 1 000 are kept).
    pub fn uploads(&self) -> Vec<Upload> {
        self.shared.state.lock().uploads.iter().cloned().collect()
    }

    /// How the simulated login behaves for the account with this e-mail (default
    /// [`LoginScript::Normal`]).
    pub fn set_login_script(&self, email: &str, script: LoginScript) {
        self.shared.state.lock().login.set_script(email, script);
    }

    /// Delivers every code e-mail held by [`LoginScript::HoldCode`] (in order) into the mailbox.
    pub fn release_codes(&self) {
        let held = self.shared.state.lock().login.take_held();
        login::deliver_all(&self.shared.state.mailbox, held);
    }

    /// Gives the account a new `__Secure-C_SES` (and `__Host-C_OSES`) without a login: the
    /// cookies the gateway holds stop working (U1 answers 401 as for any dead cookie).
    /// Returns `false` when no account has this e-mail.
    pub fn expire_cookies(&self, email: &str) -> bool {
        let mut inner = self.shared.state.lock();
        match inner
            .accounts
            .values_mut()
            .find(|a| a.email.eq_ignore_ascii_case(email))
        {
            Some(account) => {
                login::rotate(account);
                true
            }
            None => false,
        }
    }

    /// The addresses this e-mail's sign-in submissions (`POST /login/email`) came from: the
    /// browser's, or the proxy's it went through (at most 100 kept).
    pub fn login_peers(&self, email: &str) -> Vec<std::net::SocketAddr> {
        self.shared.state.lock().login.email_peers(email)
    }

    /// Successful logins of the account with this e-mail.
    pub fn logins(&self, email: &str) -> u32 {
        self.shared.state.lock().login.logins(email)
    }

    /// The codes generated for this e-mail's logins, oldest first (the codes the code page
    /// accepts, whether or not they were mailed; the newest 100 are kept).
    pub fn sent_codes(&self, email: &str) -> Vec<String> {
        self.shared.state.lock().login.sent_codes(email)
    }

    /// The account's current `__Secure-C_SES` value.
    pub fn current_c_ses(&self, email: &str) -> Option<String> {
        self.account_by_email(email).map(|a| a.c_ses)
    }

    /// The account (with its current cookies and authorization) that has this e-mail.
    pub fn account_by_email(&self, email: &str) -> Option<SimAccount> {
        self.shared
            .state
            .lock()
            .accounts
            .values()
            .find(|a| a.email.eq_ignore_ascii_case(email))
            .cloned()
    }

    /// Every `authorization` header value `POST /_/app/bootstrap` saw, in order (the newest
    /// 1 000 are kept).
    pub fn bootstrap_authorizations(&self) -> Vec<String> {
        self.shared.state.lock().login.bootstraps()
    }

    /// How long a pending login (between the e-mail and the code form) lives, for later
    /// logins (default [`DEFAULT_LOGIN_TTL`]).
    pub fn set_login_ttl(&self, ttl: Duration) {
        self.shared.state.lock().login.ttl = ttl;
    }

    /// The mailbox the code e-mails are delivered to (shared; serve it with
    /// [`imap::ImapServer::start`]).
    pub fn mailbox(&self) -> mail::Mailbox {
        self.shared.state.mailbox.clone()
    }

    /// Stops the server (not gracefully: open connections are dropped). Returns at once.
    pub fn stop(&self) {
        drop(self.shared.handle.stop(false));
    }

    /// Stops the server and waits until it has shut down.
    pub async fn shutdown(&self) {
        self.shared.handle.stop(false).await;
    }
}
