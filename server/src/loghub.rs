//! The log hub: the last [`RING_LINES`] formatted log lines in memory, and a broadcast of new
//! ones, for the admin panel's live logs (`GET /admin/logs`, `GET /admin/logs/stream`).
//!
//! A `tracing_subscriber` fmt layer next to the stderr one ([`crate::telemetry::init`]) writes
//! each formatted event into the hub through [`HubMakeWriter`]. Writing never blocks on a reader:
//! the ring is a bounded queue behind a lock held only to push or copy, and new lines go out on a
//! bounded [`tokio::sync::broadcast`] channel, where a slow reader lags (it is told how many lines
//! it missed) instead of holding the logger up.
//!
//! Every line passes through the telemetry escaping ([`crate::telemetry::printable`]: no control
//! characters, no forged lines), is cut to [`LINE_MAX_CHARS`], and has what looks like a secret
//! replaced by `[redacted]` ([`redact_patterns`]: `Bearer` tokens, `key=` values, cookie values).
//! The configured secrets (API and admin keys, proxy passwords) are redacted again when a line
//! is served ([`redact`]), by the configuration in force then.
//!
//! There is one hub per process ([`hub`]): every gateway in the process (tests start several)
//! shares it, as they share the one global subscriber.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::broadcast;
use tracing_subscriber::fmt::MakeWriter;

/// Lines kept in the ring.
pub const RING_LINES: usize = 1000;
/// Longest line kept, in characters; the rest is replaced by `…`.
pub const LINE_MAX_CHARS: usize = 2000;
/// New lines a stream reader may fall behind before it lags (misses lines).
pub const BROADCAST_CAPACITY: usize = 512;
/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";
/// Shortest configured secret that is searched for in lines (shorter ones would redact common
/// words; keys that short are refused by the configuration anyway).
pub const MIN_SECRET_CHARS: usize = 8;

/// One captured line and its sequence number (1, 2, … since the process started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub seq: u64,
    pub line: Arc<str>,
}

/// The ring of recent lines and the broadcast of new ones.
#[derive(Debug)]
pub struct LogHub {
    ring: Mutex<VecDeque<LogLine>>,
    capacity: usize,
    next_seq: AtomicU64,
    sender: broadcast::Sender<LogLine>,
    /// Whether a subscriber layer writes into this hub.
    installed: AtomicBool,
}

impl LogHub {
    /// An empty hub keeping `capacity` lines.
    pub fn new(capacity: usize) -> LogHub {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        LogHub {
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(RING_LINES))),
            capacity: capacity.max(1),
            next_seq: AtomicU64::new(1),
            sender,
            installed: AtomicBool::new(false),
        }
    }

    /// Adds one formatted line (escaped, cut and pattern-redacted here).
    pub fn push(&self, raw: &str) {
        let line = clean(raw);
        if line.is_empty() {
            return;
        }
        let line: Arc<str> = Arc::from(line);
        let entry = {
            let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            // The sequence number is taken under the lock, so the ring is in order.
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            let entry = LogLine { seq, line };
            if ring.len() >= self.capacity {
                ring.pop_front();
            }
            ring.push_back(entry.clone());
            entry
        };
        // No receiver is not an error; a full channel drops the oldest for laggards.
        let _ = self.sender.send(entry);
    }

    /// The lines kept, oldest first; only those after `after` when given.
    pub fn recent(&self, after: Option<u64>) -> Vec<LogLine> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter()
            .filter(|l| after.is_none_or(|a| l.seq > a))
            .cloned()
            .collect()
    }

    /// New lines from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.sender.subscribe()
    }

    /// Whether a subscriber writes into this hub (else it stays empty).
    pub fn is_installed(&self) -> bool {
        self.installed.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_installed(&self) {
        self.installed.store(true, Ordering::Relaxed);
    }
}

/// The process's hub.
pub fn hub() -> &'static LogHub {
    static HUB: OnceLock<LogHub> = OnceLock::new();
    HUB.get_or_init(|| LogHub::new(RING_LINES))
}

/// Escapes, cuts and pattern-redacts one formatted line (its final newline dropped).
fn clean(raw: &str) -> String {
    let body = raw.trim_end_matches(['\n', '\r']);
    let printable = crate::telemetry::printable(body);
    let cut: String = if printable.chars().count() > LINE_MAX_CHARS {
        let mut s: String = printable.chars().take(LINE_MAX_CHARS).collect();
        s.push('…');
        s
    } else {
        printable.into_owned()
    };
    redact_patterns(&cut)
}

/// Characters that end a token value in a line.
fn ends_value(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '&' | ';' | ',' | ')' | ']' | '}' | '\\')
}

/// Replaces the value after every case-insensitive occurrence of `marker` (up to the next
/// [`ends_value`] character) by [`REDACTED`].
fn redact_after(text: &str, marker: &str, whole_rest: bool) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(found) = lower[i..].find(marker) {
        let start = i + found + marker.len();
        out.push_str(&text[i..start]);
        let rest = &text[start..];
        if rest.starts_with(REDACTED) {
            out.push_str(REDACTED);
            i = start + REDACTED.len();
            continue;
        }
        let len = if whole_rest {
            rest.find(['"', '\'']).unwrap_or(rest.len())
        } else {
            rest.find(ends_value).unwrap_or(rest.len())
        };
        if len > 0 {
            out.push_str(REDACTED);
        }
        i = start + len;
    }
    out.push_str(&text[i..]);
    out
}

/// Redacts what looks like a secret whatever its value: `Bearer <token>`, the value of a
/// `key=` (also `api_key=`, `?key=`), and cookie values (`cookie: …`, `cookie=…`,
/// `__Secure-…=`/`__Host-…=` cookies).
pub fn redact_patterns(line: &str) -> String {
    let mut s = redact_after(line, "bearer ", false);
    s = redact_after(&s, "key=", false);
    for marker in ["cookie: ", "cookie=", "cookies="] {
        s = redact_after(&s, marker, true);
    }
    for prefix in ["__secure-", "__host-"] {
        s = redact_cookie_values(&s, prefix);
    }
    s
}

/// `__Secure-NAME=value`: the value redacted, the name kept.
fn redact_cookie_values(text: &str, prefix: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(found) = lower[i..].find(prefix) {
        let name_start = i + found;
        let after = &text[name_start..];
        let Some(eq) = after.find('=') else { break };
        let name = &after[..eq];
        if name.contains(ends_value) {
            out.push_str(&text[i..name_start + prefix.len()]);
            i = name_start + prefix.len();
            continue;
        }
        let value_start = name_start + eq + 1;
        out.push_str(&text[i..value_start]);
        let rest = &text[value_start..];
        if rest.starts_with(REDACTED) {
            out.push_str(REDACTED);
            i = value_start + REDACTED.len();
            continue;
        }
        let len = rest.find(ends_value).unwrap_or(rest.len());
        if len > 0 {
            out.push_str(REDACTED);
        }
        i = value_start + len;
    }
    out.push_str(&text[i..]);
    out
}

/// `line` with every occurrence of each secret (at least [`MIN_SECRET_CHARS`] long) replaced
/// by [`REDACTED`].
pub fn redact(line: &str, secrets: &[&str]) -> String {
    let mut out = line.to_owned();
    for secret in secrets {
        if secret.chars().count() >= MIN_SECRET_CHARS && out.contains(secret) {
            out = out.replace(secret, REDACTED);
        }
    }
    out
}

/// A [`MakeWriter`] into the hub: each event's formatted line is one `write`.
#[derive(Debug, Clone, Copy)]
pub struct HubMakeWriter(pub &'static LogHub);

/// The writer of one event.
#[derive(Debug)]
pub struct HubWriter(&'static LogHub);

impl io::Write for HubWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        for line in text.split_terminator('\n') {
            self.0.push(line);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for HubMakeWriter {
    type Writer = HubWriter;

    fn make_writer(&'a self) -> HubWriter {
        HubWriter(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_lines_in_order() {
        let hub = LogHub::new(3);
        for i in 0..5 {
            hub.push(&format!("line {i}\n"));
        }
        let lines = hub.recent(None);
        assert_eq!(lines.len(), 3);
        assert_eq!(&*lines[0].line, "line 2");
        assert_eq!(&*lines[2].line, "line 4");
        assert_eq!(lines[2].seq, 5);
        assert_eq!(hub.recent(Some(4)).len(), 1);
    }

    #[test]
    fn long_lines_are_cut_and_control_characters_escaped() {
        let hub = LogHub::new(2);
        hub.push(&"x".repeat(LINE_MAX_CHARS + 50));
        hub.push("a\u{1b}[31mb\rc");
        let lines = hub.recent(None);
        assert_eq!(lines[0].line.chars().count(), LINE_MAX_CHARS + 1);
        assert!(lines[0].line.ends_with('…'));
        assert_eq!(&*lines[1].line, "a\\u{1b}[31mb\\rc");
    }

    #[test]
    fn a_slow_reader_lags_and_never_blocks_the_writer() {
        let hub = LogHub::new(10);
        let mut rx = hub.subscribe();
        for i in 0..(BROADCAST_CAPACITY + 20) {
            hub.push(&format!("l{i}"));
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(20))
        ));
        assert_eq!(&*rx.try_recv().unwrap().line, "l20");
        assert_eq!(hub.recent(None).len(), 10);
    }

    #[test]
    fn patterns_are_redacted() {
        let cases = [
            (
                "auth header=Bearer sk-abc.def rest",
                "auth header=Bearer [redacted] rest",
            ),
            (
                "GET /v1beta/models?alt=sse&key=AIzaSECRET&x=1",
                "GET /v1beta/models?alt=sse&key=[redacted]&x=1",
            ),
            ("api_key=zzz", "api_key=[redacted]"),
            (
                "cookie: __Secure-C_SES=abc; NID=1 \"next\"",
                "cookie: [redacted]\"next\"",
            ),
            (
                "set __Secure-C_SES=abc123;x __Host-C_OSES=q",
                "set __Secure-C_SES=[redacted];x __Host-C_OSES=[redacted]",
            ),
            ("nothing to see", "nothing to see"),
            ("Bearer [redacted]", "Bearer [redacted]"),
            ("key=[redacted]&b=1", "key=[redacted]&b=1"),
            ("__Secure-X=[redacted]; y", "__Secure-X=[redacted]; y"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_patterns(input), want, "{input}");
        }
    }

    #[test]
    fn configured_secrets_are_redacted() {
        let line = "proxy http://u:hunter22pw@p key sk-configured-1 short abc";
        let out = redact(line, &["hunter22pw", "sk-configured-1", "abc"]);
        assert_eq!(out, "proxy http://u:[redacted]@p key [redacted] short abc");
    }

    #[test]
    fn the_hub_writer_splits_lines() {
        let hub: &'static LogHub = Box::leak(Box::new(LogHub::new(10)));
        let mut w = HubMakeWriter(hub).make_writer();
        io::Write::write_all(&mut w, b"one\ntwo\n").unwrap();
        assert_eq!(hub.recent(None).len(), 2);
    }
}
