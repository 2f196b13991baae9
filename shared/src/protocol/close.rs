//! WebSocket close codes and reasons, and the error a frame can raise.

use std::fmt;

/// The longest close reason a WebSocket close frame can carry (RFC 6455 §5.5: a control frame's
/// payload is at most 125 bytes, two of which are the code).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// The close codes either side uses, with their meaning. 1000–1011 are RFC 6455's; 4000–4999 are
/// reserved for applications, and these are ours. The reason text says the detail.
pub mod code {
    /// The session ended normally (a worker leaving after it drained).
    pub const NORMAL: u16 = 1000;
    /// The sender is going away: the server shuts down, or a worker stops.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame was not a valid message: not JSON, a known `type` with missing or ill-typed
    /// fields, a field out of its bounds (length, task-id shape, capacity range), or a binary
    /// frame.
    pub const BAD_MESSAGE: u16 = 4000;
    /// The worker's credential is no longer valid (the pool secret changed or was removed while
    /// it was connected). A wrong or missing credential never gets this far: the upgrade is
    /// refused with HTTP 401.
    pub const UNAUTHORISED: u16 = 4001;
    /// The peers cannot work together: a different major protocol version, or no task kind in
    /// common.
    pub const INCOMPATIBLE: u16 = 4002;
    /// A message `type` the receiver does not know. Within one major version a peer sends only
    /// the types the other side's minor version knows (each side learns it from `hello` /
    /// `welcome`), so this is the sender's fault.
    pub const UNSUPPORTED_MESSAGE: u16 = 4003;
    /// A frame longer than [`MAX_FRAME_BYTES`](crate::protocol::MAX_FRAME_BYTES).
    pub const FRAME_TOO_LARGE: u16 = 4004;
    /// A valid message at the wrong time: anything before `hello`, a second `hello`, an
    /// `accepted`/`progress`/`result` for a task not leased to this worker, more tasks running
    /// than the announced capacity, no `hello` within
    /// [`HELLO_TIMEOUT`](crate::protocol::HELLO_TIMEOUT).
    pub const PROTOCOL_VIOLATION: u16 = 4005;
    /// Nothing was heard from the peer for
    /// [`MISSED_HEARTBEATS`](crate::protocol::MISSED_HEARTBEATS) heartbeat intervals.
    pub const HEARTBEAT_TIMEOUT: u16 = 4006;
    /// A new session with the same worker id took this one's place.
    pub const REPLACED: u16 = 4007;
    /// The server already holds as many worker sessions as it allows.
    pub const TOO_MANY_WORKERS: u16 = 4008;

    /// A short description of a close code, for logs and the admin surface.
    pub fn describe(code: u16) -> &'static str {
        match code {
            NORMAL => "normal closure",
            GOING_AWAY => "going away",
            BAD_MESSAGE => "bad message",
            UNAUTHORISED => "unauthorised",
            INCOMPATIBLE => "incompatible peer",
            UNSUPPORTED_MESSAGE => "unsupported message type",
            FRAME_TOO_LARGE => "frame too large",
            PROTOCOL_VIOLATION => "protocol violation",
            HEARTBEAT_TIMEOUT => "heartbeat timeout",
            REPLACED => "replaced by a newer session",
            TOO_MANY_WORKERS => "too many workers",
            _ => "unknown close code",
        }
    }
}

/// What to put in a close frame: a code from [`code`] and a reason of at most
/// [`MAX_CLOSE_REASON_BYTES`] bytes without control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    reason: String,
}

impl Close {
    /// A close frame's content. The reason's control characters become spaces and it is cut (at a
    /// character boundary) to [`MAX_CLOSE_REASON_BYTES`].
    pub fn new(code: u16, reason: &str) -> Close {
        let mut out = String::new();
        for c in reason.chars() {
            let c = if c.is_control() { ' ' } else { c };
            if out.len() + c.len_utf8() > MAX_CLOSE_REASON_BYTES {
                break;
            }
            out.push(c);
        }
        Close { code, reason: out }
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Why a frame (or a message at the wrong time) ends a session. [`ProtocolError::close`] says
/// how. The texts never quote what the peer sent: a frame can carry credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The frame is longer than [`MAX_FRAME_BYTES`](crate::protocol::MAX_FRAME_BYTES).
    FrameTooLarge { bytes: usize },
    /// A binary frame: the protocol is JSON text only.
    NotText,
    /// Not JSON, or JSON that does not fit the message's type (missing or ill-typed fields, an
    /// invalid task id). `detail` is ours (a position, a field name), never the peer's text.
    Malformed { detail: String },
    /// A field out of its bounds (checked after parsing).
    Invalid {
        field: &'static str,
        problem: &'static str,
    },
    /// A `type` the receiver does not know.
    UnknownType,
    /// A valid message at the wrong time (see [`code::PROTOCOL_VIOLATION`]).
    Unexpected { what: &'static str },
}

impl ProtocolError {
    /// The close frame that ends the session for this error.
    pub fn close(&self) -> Close {
        let code = match self {
            ProtocolError::FrameTooLarge { .. } => code::FRAME_TOO_LARGE,
            ProtocolError::NotText
            | ProtocolError::Malformed { .. }
            | ProtocolError::Invalid { .. } => code::BAD_MESSAGE,
            ProtocolError::UnknownType => code::UNSUPPORTED_MESSAGE,
            ProtocolError::Unexpected { .. } => code::PROTOCOL_VIOLATION,
        };
        Close::new(code, &self.to_string())
    }

    /// Builds [`ProtocolError::Malformed`] from a serde_json error without quoting the input:
    /// only our own texts (a missing field's name, a validator's message) and the position.
    pub(crate) fn from_json(err: &serde_json::Error) -> ProtocolError {
        use serde_json::error::Category;
        let text = err.to_string();
        // serde_json appends the position to a message when it knows it (errors raised while
        // re-reading a buffered tagged message have none).
        let message = text
            .find(" at line ")
            .map_or(text.as_str(), |end| &text[..end]);
        let what = match err.classify() {
            Category::Syntax | Category::Io => "malformed JSON",
            Category::Eof => "truncated JSON",
            Category::Data => {
                // serde's own texts for missing / duplicate fields name our field, and our
                // validators' texts are fixed; anything else (an invalid type or value) may
                // quote the input, so it is reduced to a category.
                let ours = message.starts_with("missing field")
                    || message.starts_with("duplicate field")
                    || message.starts_with(super::ids::INVALID_ID_PREFIX);
                if ours {
                    message
                } else {
                    "a field has the wrong type or value"
                }
            }
        };
        let detail = if err.line() == 0 {
            what.to_owned()
        } else {
            format!("{what} at line {} column {}", err.line(), err.column())
        };
        ProtocolError::Malformed { detail }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::FrameTooLarge { bytes } => write!(
                f,
                "frame of {bytes} bytes exceeds the limit of {} bytes",
                crate::protocol::MAX_FRAME_BYTES
            ),
            ProtocolError::NotText => f.write_str("binary frames are not part of the protocol"),
            ProtocolError::Malformed { detail } => write!(f, "bad message: {detail}"),
            ProtocolError::Invalid { field, problem } => write!(f, "invalid {field}: {problem}"),
            ProtocolError::UnknownType => f.write_str("unknown message type"),
            ProtocolError::Unexpected { what } => write!(f, "unexpected message: {what}"),
        }
    }
}

impl std::error::Error for ProtocolError {}
