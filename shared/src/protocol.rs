//! The server ⇄ worker protocol: versioned JSON text frames over one WebSocket.
//!
//! A worker dials the server's `GET /ws` with `Authorization: Bearer <pool_server.secret>` on the
//! upgrade request (never in the URL; a wrong or missing credential is refused with HTTP 401
//! before the upgrade). Then every frame is one JSON object, a text frame of at most
//! [`MAX_FRAME_BYTES`], whose `type` field names the message: [`WorkerMessage`] from the worker,
//! [`ServerMessage`] from the server.
//!
//! # Handshake
//! 1. The worker sends [`Hello`] (protocol version, worker id, software version, capacity, the
//!    task kinds it runs) within [`HELLO_TIMEOUT`].
//! 2. The server answers with [`Welcome`] (the agreed version, heartbeat interval, lease
//!    duration) or [`Refusal`] followed by a close frame with the same code and reason;
//!    [`negotiate`] decides. A different major version is refused ([`code::INCOMPATIBLE`]); the
//!    minor versions agree on the lower one.
//!
//! # Task life cycle
//! - The server sends [`Task`]: a lease on one task for [`Task::lease_ms`]. A task is leased to
//!   one worker at a time, never more tasks at once than the worker's capacity.
//! - The worker answers `accepted` (or `declined`: the server queues it again without counting
//!   an attempt), may send `progress`, and ends with `result` ([`TaskOutcome`]).
//! - Liveness is an application heartbeat (not WebSocket ping/pong, which both sides answer but
//!   do not rely on): the worker sends `heartbeat` every `heartbeat_interval_ms` listing the tasks
//!   it runs, which renews their leases; the server answers `heartbeat_ack`. Either side ends the
//!   session with [`code::HEARTBEAT_TIMEOUT`] after [`MISSED_HEARTBEATS`] intervals without a
//!   frame from the other.
//! - A lease that is not renewed expires; the server then sends `cancel` (if the worker is still
//!   connected) and gives the task to another worker with the next attempt number. When a worker
//!   disconnects, its tasks are queued again at once.
//! - Completion is idempotent by task id: the first valid result for a task leased to the sender
//!   completes it; a duplicate or late result (after the lease moved on) changes nothing.
//!
//! # Compatibility
//! Unknown fields are ignored (a newer minor version may add some). A message `type` the
//! receiver does not know parses as `Unknown` (not an error), so the receiver decides: the server
//! closes the session with [`code::UNSUPPORTED_MESSAGE`] ([`WorkerMessage::require_known`]); a
//! worker ignores an unknown server message. A known type with missing or ill-typed fields is a
//! [`ProtocolError`].
//!
//! Credentials travel only in [`Task`], [`ServerMessage::Otp`] and a `relogged_in` result; they
//! are [`Secret`]s, so `Debug` of any message prints none of them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::{serialize_exposed, serialize_exposed_option};
use crate::{AccountKey, Secret};

mod close;
mod ids;

pub use close::{Close, MAX_CLOSE_REASON_BYTES, ProtocolError, code};
pub use ids::{InvalidId, MAX_ID_BYTES, TaskId, WorkerId};

/// The protocol's major version: bumped on an incompatible change. Peers of different major
/// versions refuse each other.
pub const PROTOCOL_MAJOR: u32 = 1;
/// The protocol's minor version: bumped when a message type or field is added. Peers agree on
/// the lower minor version and send only what it has.
pub const PROTOCOL_MINOR: u32 = 0;

/// The largest frame either side accepts, in bytes. Checked before parsing; a longer frame ends
/// the session with [`code::FRAME_TOO_LARGE`].
pub const MAX_FRAME_BYTES: usize = 256 * 1024;
/// How often the worker sends `heartbeat` (the server may announce another interval in
/// [`Welcome`]).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// How many heartbeat intervals without any frame from the peer end the session.
pub const MISSED_HEARTBEATS: u32 = 3;
/// How long a lease lasts unless renewed by a heartbeat that lists the task (or a `progress`).
pub const LEASE_DURATION: Duration = Duration::from_secs(60);
/// How long the server waits for `hello` after the upgrade.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest capacity (concurrent tasks) a worker may announce.
pub const MAX_CAPACITY: u16 = 32;
/// The longest free text a worker sends (software version, failure message), in bytes.
pub const MAX_TEXT_BYTES: usize = 512;
/// The most cookies in one set of credentials.
pub const MAX_COOKIES: usize = 50;
/// The longest cookie name and domain, in bytes.
pub const MAX_COOKIE_NAME_BYTES: usize = 256;
/// The longest cookie value, in bytes (browsers cap a cookie at 4096).
pub const MAX_COOKIE_VALUE_BYTES: usize = 4096;
/// The longest `authorization` value, in bytes.
pub const MAX_AUTHORIZATION_BYTES: usize = 8192;

/// A protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolVersion {
    pub major: u32,
    pub minor: u32,
}

impl ProtocolVersion {
    /// The version this crate speaks.
    pub const CURRENT: ProtocolVersion = ProtocolVersion {
        major: PROTOCOL_MAJOR,
        minor: PROTOCOL_MINOR,
    };
}

/// The kinds of task, as named in `hello` and `welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKindName {
    Relogin,
    Probe,
    /// A kind from a newer peer.
    #[serde(other)]
    Unknown,
}

// ---------------------------------------------------------------------------------------------
// Worker → server

/// A message from a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// The first message of a session.
    Hello(Hello),
    /// Sent every heartbeat interval: the tasks the worker is running (their leases are renewed).
    Heartbeat { running: Vec<TaskId> },
    /// The worker took the task.
    Accepted { task: TaskId },
    /// The worker will not run the task; the server queues it again without counting an attempt.
    Declined { task: TaskId, reason: DeclineReason },
    /// Where a running task is (renews its lease; `waiting_for_code` tells the operator surface
    /// that a typed code is awaited).
    Progress { task: TaskId, stage: ProgressStage },
    /// The task's end.
    Result(TaskResult),
    /// The worker is stopping: it takes no new task and finishes (or cancels) the ones it runs.
    Draining {},
    /// A `type` this crate does not know.
    #[serde(other)]
    Unknown,
}

/// `hello`: who the worker is and what it can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: ProtocolVersion,
    pub worker: WorkerId,
    /// The worker's software version (free text, at most 64 bytes of printable ASCII).
    pub software: String,
    /// How many tasks it runs at once: 1 to [`MAX_CAPACITY`].
    pub capacity: u16,
    /// The task kinds it runs.
    pub kinds: Vec<TaskKindName>,
}

/// Why a worker declines a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    /// It already runs as many tasks as it can.
    Busy,
    /// It does not run this kind of task.
    Unsupported,
    /// It is stopping.
    Draining,
    #[serde(other)]
    Other,
}

/// The stages of a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressStage {
    StartingBrowser,
    EmailSubmitted,
    /// The login page asks for the one-time code; the worker waits for it (mailbox or operator).
    WaitingForCode,
    CodeSubmitted,
    CapturingCredentials,
    Probing,
    #[serde(other)]
    Other,
}

/// `result`: how a task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task: TaskId,
    pub outcome: TaskOutcome,
}

/// The outcome of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TaskOutcome {
    /// A `relogin` succeeded: the account's new credentials.
    ReloggedIn { credentials: AccountCredentials },
    /// A `probe` ran: what the account's token fetch said from the worker's network.
    Probed { verdict: ProbeVerdict },
    /// The task failed.
    Failed {
        reason: FailureReason,
        /// A short explanation for the operator (at most [`MAX_TEXT_BYTES`]); never a
        /// credential or a one-time code.
        message: String,
    },
}

impl TaskOutcome {
    /// Whether this outcome can end a task of `kind` (`failed` ends any).
    pub fn fits(&self, kind: TaskKindName) -> bool {
        match self {
            TaskOutcome::ReloggedIn { .. } => kind == TaskKindName::Relogin,
            TaskOutcome::Probed { .. } => kind == TaskKindName::Probe,
            TaskOutcome::Failed { .. } => true,
        }
    }
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeVerdict {
    /// The token fetch succeeded.
    Healthy,
    /// Google refused the credentials (the account needs a re-login).
    CredentialsRejected,
}

/// Why a task failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// No one-time code arrived in time (mailbox or operator).
    CodeNeverArrived,
    /// The login page refused the code.
    WrongCode,
    /// The login page did not look as expected (Google changed it).
    PageChanged,
    /// The browser or WebDriver failed.
    BrowserFailed,
    /// The worker's network or proxy failed.
    NetworkFailed,
    /// The login succeeded but the credentials could not be captured.
    CaptureFailed,
    /// The task was cancelled (by the server, or the worker is stopping).
    Cancelled,
    /// The worker cannot run this task (a kind or option it does not support).
    Unsupported,
    /// A newer reason this crate does not know.
    #[serde(other)]
    Other,
}

/// An account's credentials, as the pool uses them (field names as in the reference account
/// file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountCredentials {
    pub cookies: Vec<WireCookie>,
    /// The web app's `authorization` header value (`Bearer <JWT>`).
    #[serde(serialize_with = "serialize_exposed")]
    pub authorization: Secret,
    #[serde(rename = "configId")]
    pub config_id: String,
    pub csesidx: String,
}

/// One browser cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCookie {
    pub name: String,
    #[serde(serialize_with = "serialize_exposed")]
    pub value: Secret,
    pub domain: String,
}

// ---------------------------------------------------------------------------------------------
// Server → worker

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The worker is accepted.
    Welcome(Welcome),
    /// The worker is refused; a close frame with the same code and reason follows.
    Refused(Refusal),
    /// A lease on a task.
    Task(Task),
    /// The one-time code an operator typed (`POST /admin/accounts/{email}/otp`) for a `relogin`
    /// task waiting for it.
    Otp {
        task: TaskId,
        #[serde(serialize_with = "serialize_exposed")]
        code: Secret,
    },
    /// Stop the task: its lease is gone (a result for it changes nothing).
    Cancel { task: TaskId, reason: CancelReason },
    /// The answer to `heartbeat`.
    HeartbeatAck {},
    /// A `type` this crate does not know.
    #[serde(other)]
    Unknown,
}

/// `welcome`: the session's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The agreed version: the common major version and the lower minor version.
    pub protocol: ProtocolVersion,
    /// The server's software version.
    pub server: String,
    pub heartbeat_interval_ms: u64,
    pub missed_heartbeats: u32,
    /// The default lease duration (each task says its own).
    pub lease_ms: u64,
    pub max_frame_bytes: u64,
    /// The task kinds the server will send this worker (those both know).
    pub kinds: Vec<TaskKindName>,
}

/// `refused`: why the server will not work with this worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// A close code from [`code`].
    pub code: u16,
    /// At most [`MAX_CLOSE_REASON_BYTES`] bytes.
    pub reason: String,
}

impl Refusal {
    fn new(code: u16, reason: &str) -> Refusal {
        let close = Close::new(code, reason);
        Refusal {
            code,
            reason: close.reason().to_owned(),
        }
    }

    /// The close frame that follows the `refused` message.
    pub fn close(&self) -> Close {
        Close::new(self.code, &self.reason)
    }
}

/// `task`: a lease on one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The same across attempts.
    pub id: TaskId,
    /// 1 for the first lease, +1 each time the task is leased again.
    pub attempt: u32,
    /// The lease lasts this long from when the worker receives the message unless renewed
    /// (durations, not wall-clock deadlines: the peers' clocks are not trusted to agree).
    pub lease_ms: u64,
    pub spec: TaskSpec,
}

impl Task {
    pub fn kind(&self) -> TaskKindName {
        match self.spec {
            TaskSpec::Relogin(_) => TaskKindName::Relogin,
            TaskSpec::Probe(_) => TaskKindName::Probe,
            TaskSpec::Unknown => TaskKindName::Unknown,
        }
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskSpec {
    /// Log the account in again in a real browser and capture its new credentials.
    Relogin(ReloginTask),
    /// Check the account's token fetch from the worker's network.
    Probe(ProbeTask),
    /// A kind this crate does not know (the worker declines it as `unsupported`).
    #[serde(other)]
    Unknown,
}

/// `relogin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloginTask {
    /// The account's e-mail address.
    pub account: AccountKey,
    /// Where the one-time code comes from.
    pub otp: OtpSource,
    /// The egress proxy URL for the browser (may carry a password), if the account has one.
    #[serde(default, serialize_with = "serialize_exposed_option")]
    pub proxy: Option<Secret>,
}

/// `probe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeTask {
    pub account: AccountKey,
    pub credentials: AccountCredentials,
    #[serde(default, serialize_with = "serialize_exposed_option")]
    pub proxy: Option<Secret>,
}

/// Where a re-login's one-time code comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum OtpSource {
    /// The operator's own mailbox over IMAP.
    Imap(ImapMailbox),
    /// Typed by the operator; the server forwards it as [`ServerMessage::Otp`].
    Operator { timeout_ms: u64 },
}

/// An IMAP mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImapMailbox {
    pub host: String,
    pub port: u16,
    /// Implicit TLS (IMAPS) when true.
    pub tls: bool,
    /// Often the account's address: personal data, kept out of `Debug`.
    #[serde(serialize_with = "serialize_exposed")]
    pub username: Secret,
    #[serde(serialize_with = "serialize_exposed")]
    pub password: Secret,
    pub folder: String,
    /// How long to wait for the code.
    pub timeout_ms: u64,
}

/// Why the server cancels a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// The lease expired (not renewed in time); the task went back to the queue.
    LeaseExpired,
    /// The account was removed or disabled.
    AccountRemoved,
    /// The account got new credentials another way (import, another task).
    Superseded,
    /// The operator cancelled it.
    Operator,
    /// The server is stopping.
    Shutdown,
    #[serde(other)]
    Other,
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation

fn check_size(text: &str) -> Result<(), ProtocolError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(ProtocolError::FrameTooLarge { bytes: text.len() });
    }
    Ok(())
}

impl WorkerMessage {
    /// Parses and validates one text frame from a worker: the size bound first, then the JSON,
    /// then every field's bounds. A `type` this crate does not know is `Ok(Unknown)`; see
    /// [`WorkerMessage::require_known`]. Never panics, whatever `text` holds.
    ///
    /// ```
    /// use business2api_shared::protocol::{PROTOCOL_MAJOR, WorkerMessage, negotiate};
    ///
    /// let hello = format!(
    ///     r#"{{"type":"hello","protocol":{{"major":{PROTOCOL_MAJOR},"minor":0}},"worker":"box-1",
    ///        "software":"0.1.0","capacity":2,"kinds":["relogin","probe"]}}"#
    /// );
    /// let WorkerMessage::Hello(parsed) = WorkerMessage::parse(&hello)? else {
    ///     return Err("not a hello".into());
    /// };
    /// assert_eq!(parsed.capacity, 2);
    /// assert!(negotiate(&parsed).is_ok());
    ///
    /// // A field out of its bounds is refused; a type from a newer peer is not an error.
    /// assert!(WorkerMessage::parse(&hello.replace(r#""capacity":2"#, r#""capacity":0"#)).is_err());
    /// let newer = WorkerMessage::parse(r#"{"type":"from_the_future"}"#)?;
    /// assert!(matches!(newer, WorkerMessage::Unknown));
    /// assert!(newer.require_known().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(text: &str) -> Result<WorkerMessage, ProtocolError> {
        check_size(text)?;
        let message: WorkerMessage =
            serde_json::from_str(text).map_err(|e| ProtocolError::from_json(&e))?;
        message.validate()?;
        Ok(message)
    }

    /// `Unknown` as [`ProtocolError::UnknownType`] (what the server does with it).
    pub fn require_known(self) -> Result<WorkerMessage, ProtocolError> {
        match self {
            WorkerMessage::Unknown => Err(ProtocolError::UnknownType),
            known => Ok(known),
        }
    }

    /// Checks every field's bounds (what serde's types alone do not).
    pub fn validate(&self) -> Result<(), ProtocolError> {
        match self {
            WorkerMessage::Hello(hello) => hello.validate(),
            WorkerMessage::Heartbeat { running } => {
                if running.len() > usize::from(MAX_CAPACITY) {
                    return Err(invalid("heartbeat.running", "more tasks than any capacity"));
                }
                Ok(())
            }
            WorkerMessage::Result(result) => result.outcome.validate(),
            WorkerMessage::Accepted { .. }
            | WorkerMessage::Declined { .. }
            | WorkerMessage::Progress { .. }
            | WorkerMessage::Draining {}
            | WorkerMessage::Unknown => Ok(()),
        }
    }

    /// The frame's text.
    pub fn to_text(&self) -> String {
        to_text(self)
    }
}

impl ServerMessage {
    /// Parses one text frame from the server (the worker's side): the size bound, then the
    /// JSON. Never panics.
    pub fn parse(text: &str) -> Result<ServerMessage, ProtocolError> {
        check_size(text)?;
        serde_json::from_str(text).map_err(|e| ProtocolError::from_json(&e))
    }

    /// The frame's text.
    pub fn to_text(&self) -> String {
        to_text(self)
    }
}

fn to_text<T: Serialize>(message: &T) -> String {
    // Serialising these types cannot fail: every map key is a string and no value is a float.
    serde_json::to_string(message).unwrap_or_default()
}

fn invalid(field: &'static str, problem: &'static str) -> ProtocolError {
    ProtocolError::Invalid { field, problem }
}

/// Printable ASCII (space to `~`).
fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

impl Hello {
    pub fn validate(&self) -> Result<(), ProtocolError> {
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            return Err(invalid("hello.capacity", "must be between 1 and 32"));
        }
        if self.software.is_empty() || self.software.len() > 64 || !printable(&self.software) {
            return Err(invalid(
                "hello.software",
                "must be 1 to 64 bytes of printable ASCII",
            ));
        }
        if self.kinds.len() > 16 {
            return Err(invalid("hello.kinds", "more than 16 kinds"));
        }
        Ok(())
    }
}

impl TaskOutcome {
    pub fn validate(&self) -> Result<(), ProtocolError> {
        match self {
            TaskOutcome::ReloggedIn { credentials } => credentials.validate(),
            TaskOutcome::Probed { .. } => Ok(()),
            TaskOutcome::Failed { message, .. } => {
                if message.len() > MAX_TEXT_BYTES {
                    return Err(invalid("result.message", "longer than 512 bytes"));
                }
                if message.chars().any(char::is_control) {
                    return Err(invalid("result.message", "control characters"));
                }
                Ok(())
            }
        }
    }
}

impl AccountCredentials {
    /// Bounds and shapes that keep a credential from breaking the requests built from it (no
    /// control characters or separators that would split a `Cookie` header or an HTTP header).
    pub fn validate(&self) -> Result<(), ProtocolError> {
        if self.cookies.is_empty() {
            return Err(invalid("credentials.cookies", "empty"));
        }
        if self.cookies.len() > MAX_COOKIES {
            return Err(invalid("credentials.cookies", "more than 50 cookies"));
        }
        for cookie in &self.cookies {
            let name_ok = !cookie.name.is_empty()
                && cookie.name.len() <= MAX_COOKIE_NAME_BYTES
                && cookie.name.bytes().all(is_token_byte);
            if !name_ok {
                return Err(invalid(
                    "credentials.cookies.name",
                    "must be 1 to 256 bytes of token characters",
                ));
            }
            let value = cookie.value.expose();
            let value_ok = value.len() <= MAX_COOKIE_VALUE_BYTES
                && value
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && b != b';' && b != b',');
            if !value_ok {
                return Err(invalid(
                    "credentials.cookies.value",
                    "must be at most 4096 bytes of cookie-value characters",
                ));
            }
            let domain_ok = !cookie.domain.is_empty()
                && cookie.domain.len() <= MAX_COOKIE_NAME_BYTES
                && cookie
                    .domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
            if !domain_ok {
                return Err(invalid(
                    "credentials.cookies.domain",
                    "must be a host name of at most 256 bytes",
                ));
            }
        }
        let authorization = self.authorization.expose();
        if authorization.is_empty()
            || authorization.len() > MAX_AUTHORIZATION_BYTES
            || !printable(authorization)
        {
            return Err(invalid(
                "credentials.authorization",
                "must be 1 to 8192 bytes of printable ASCII",
            ));
        }
        let config_ok = !self.config_id.is_empty()
            && self.config_id.len() <= 128
            && self
                .config_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !config_ok {
            return Err(invalid(
                "credentials.configId",
                "must be 1 to 128 letters, digits, '-', '_' or '.'",
            ));
        }
        if self.csesidx.is_empty()
            || self.csesidx.len() > 32
            || !self.csesidx.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid("credentials.csesidx", "must be 1 to 32 digits"));
        }
        Ok(())
    }
}

/// RFC 7230 `tchar` (the characters of a cookie name).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

// ---------------------------------------------------------------------------------------------
// Negotiation

/// The server's side of the terms a [`Welcome`] announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTerms {
    /// The server's software version.
    pub software: String,
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: u32,
    pub lease: Duration,
    /// The task kinds the server hands out.
    pub kinds: Vec<TaskKindName>,
}

impl Default for ServerTerms {
    /// This crate's version, [`HEARTBEAT_INTERVAL`], [`MISSED_HEARTBEATS`], [`LEASE_DURATION`],
    /// every task kind.
    fn default() -> ServerTerms {
        ServerTerms {
            software: env!("CARGO_PKG_VERSION").to_owned(),
            heartbeat_interval: HEARTBEAT_INTERVAL,
            missed_heartbeats: MISSED_HEARTBEATS,
            lease: LEASE_DURATION,
            kinds: vec![TaskKindName::Relogin, TaskKindName::Probe],
        }
    }
}

/// [`negotiate_with`] the default [`ServerTerms`].
pub fn negotiate(hello: &Hello) -> Result<Welcome, Refusal> {
    negotiate_with(hello, &ServerTerms::default())
}

/// Decides whether the server works with the worker that sent `hello`: a different major version
/// is refused ([`code::INCOMPATIBLE`]), as is a worker with no task kind in common with the
/// server, or with fields out of bounds ([`code::BAD_MESSAGE`]). Otherwise the agreed version
/// is the common major and the lower minor.
pub fn negotiate_with(hello: &Hello, terms: &ServerTerms) -> Result<Welcome, Refusal> {
    if hello.protocol.major != PROTOCOL_MAJOR {
        return Err(Refusal::new(
            code::INCOMPATIBLE,
            &format!(
                "protocol {}.{} is not supported: this server speaks {}.x",
                hello.protocol.major, hello.protocol.minor, PROTOCOL_MAJOR
            ),
        ));
    }
    if let Err(e) = hello.validate() {
        return Err(Refusal::new(code::BAD_MESSAGE, &e.to_string()));
    }
    let kinds: Vec<TaskKindName> = terms
        .kinds
        .iter()
        .copied()
        .filter(|k| *k != TaskKindName::Unknown && hello.kinds.contains(k))
        .collect();
    if kinds.is_empty() {
        return Err(Refusal::new(
            code::INCOMPATIBLE,
            "no task kind in common with this server",
        ));
    }
    #[allow(
        clippy::unnecessary_min_or_max,
        reason = "PROTOCOL_MINOR is 0 today; the rule holds once it grows"
    )]
    let minor = hello.protocol.minor.min(PROTOCOL_MINOR);
    Ok(Welcome {
        protocol: ProtocolVersion {
            major: PROTOCOL_MAJOR,
            minor,
        },
        server: terms.software.clone(),
        heartbeat_interval_ms: millis(terms.heartbeat_interval),
        missed_heartbeats: terms.missed_heartbeats,
        lease_ms: millis(terms.lease),
        max_frame_bytes: MAX_FRAME_BYTES as u64,
        kinds,
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
