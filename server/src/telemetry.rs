//! Tracing setup, the request root span, and escaping of untrusted text in logs.
//!
//! Logs go to stderr as text. `RUST_LOG` overrides the level; otherwise `info`, or `debug` for
//! our own crates when `debug` is set in the config. The request span records method, route
//! pattern, path and status — never the query string (it may carry `?key=`), never headers.
//!
//! Client-controlled text (paths, model names, URLs, file names, error messages quoting the
//! client) is logged through [`untrusted`]: control characters and line separators are escaped
//! and the value is cut to [`UNTRUSTED_MAX_CHARS`] characters. As a second line of defence the
//! log writer itself ([`EscapingMakeWriter`]) escapes every control character of a formatted
//! line except its final newline, so that no value, escaped or not, can start a forged line.

use std::fmt;
use std::io::{self, Write};

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Longest untrusted value written to a log, in characters; the rest is counted, not shown.
pub const UNTRUSTED_MAX_CHARS: usize = 256;

/// A client-controlled value as it may appear in a log line (see [`untrusted`]).
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<'a>(&'a str);

/// Wraps client-controlled text for a log line: control characters (C0 including `\n`, `\r`,
/// `\t` and NUL, DEL, C1), the Unicode line and paragraph separators and the bidirectional
/// overrides are escaped (`\n`, `\r`, `\t`, `\0`, else `\u{…}`), a backslash is doubled (so an
/// escape in the output always comes from the escaping), and text past
/// [`UNTRUSTED_MAX_CHARS`] characters is replaced by `…(N more)`.
pub fn untrusted(text: &str) -> Untrusted<'_> {
    Untrusted(text)
}

/// Whether `c` must not appear raw in a log line or on a terminal: control characters, the
/// Unicode line and paragraph separators, and the bidirectional formatting characters (they
/// reorder what a terminal shows).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` safe to print on a terminal, whole (no length cap): the characters of
/// [`is_unsafe_char`] escaped as in log lines. For the CLI's listings of stored values.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe_char(c) {
            // Writing to a String cannot fail.
            let _ = write_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn write_escaped(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        '\0' => out.write_str("\\0"),
        c => write!(out, "\\u{{{:x}}}", u32::from(c)),
    }
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        for (shown, c) in chars.by_ref().enumerate() {
            if shown == UNTRUSTED_MAX_CHARS {
                // One character already taken from the rest.
                let more = 1 + chars.count();
                return write!(f, "…({more} more)");
            }
            if c == '\\' {
                f.write_str("\\\\")?;
            } else if is_unsafe_char(c) {
                write_escaped(f, c)?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// Escapes the control characters of one formatted log line, keeping its final newline (and
/// `ESC` when the output has ANSI colours on, since the formatter writes colour codes).
fn escape_line(line: &str, keep_esc: bool) -> String {
    let (body, newline) = match line.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (line, ""),
    };
    let mut out = String::with_capacity(line.len() + 8);
    for c in body.chars() {
        if is_unsafe_char(c) && !(keep_esc && c == '\u{1b}') {
            // Writing to a String cannot fail.
            let _ = write_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out.push_str(newline);
    out
}

/// A writer that escapes control characters in what it is given except a final newline; the
/// fmt layer writes each event with one `write_all` of the whole formatted line.
#[derive(Debug)]
pub struct EscapingWriter<W> {
    inner: W,
    keep_esc: bool,
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let body = text.strip_suffix('\n').unwrap_or(&text);
        if body
            .chars()
            .any(|c| is_unsafe_char(c) && !(self.keep_esc && c == '\u{1b}'))
        {
            self.inner
                .write_all(escape_line(&text, self.keep_esc).as_bytes())?;
        } else {
            self.inner.write_all(text.as_bytes())?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// [`MakeWriter`] of [`EscapingWriter`]s around another `MakeWriter` (stderr in the binary).
#[derive(Debug, Clone)]
pub struct EscapingMakeWriter<M> {
    inner: M,
    keep_esc: bool,
}

impl<M> EscapingMakeWriter<M> {
    /// `keep_esc`: let `ESC` through (the formatter's own ANSI colour codes).
    pub fn new(inner: M, keep_esc: bool) -> Self {
        EscapingMakeWriter { inner, keep_esc }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for EscapingMakeWriter<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter {
            inner: self.inner.make_writer(),
            keep_esc: self.keep_esc,
        }
    }
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(debug: bool) {
    // actix-server's start-up lines ("starting 2 workers", "Actix runtime found") say nothing
    // an operator needs.
    init_with(if debug {
        "info,actix_server=warn,business2api=debug,upstream_sim=debug"
    } else {
        "info,actix_server=warn"
    });
}

/// Warnings and errors only (unless `RUST_LOG` says otherwise): `demo`, whose stdout banner is
/// what its user reads.
pub fn init_quiet() {
    init_with("warn");
}

fn init_with(default: &str) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(EscapingMakeWriter::new(std::io::stderr, ansi))
        .with_target(false);
    let hub = crate::loghub::hub();
    if tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(hub_layer(hub))
        .try_init()
        .is_ok()
    {
        hub.mark_installed();
    }
}

/// The fmt layer that writes each event, formatted like the stderr line (without colours),
/// into the log hub ([`crate::loghub`]).
fn hub_layer<S>(hub: &'static crate::loghub::LogHub) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(crate::loghub::HubMakeWriter(hub))
        .with_target(false)
}

/// Installs a global subscriber that writes only into the log hub, at `info` (or `RUST_LOG`),
/// when none is installed yet: for in-process test gateways that assert on log lines without
/// printing them. Does nothing when a subscriber is already installed.
pub fn init_capture() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let hub = crate::loghub::hub();
    if tracing_subscriber::registry()
        .with(filter)
        .with(hub_layer(hub))
        .try_init()
        .is_ok()
    {
        hub.mark_installed();
    }
}

/// The root span of every request.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        tracing::info_span!(
            "request",
            method = %request.method(),
            route = %route,
            path = %untrusted(request.path()),
            status = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let status = match outcome {
            Ok(response) => response.status().as_u16(),
            Err(e) => e.as_response_error().status_code().as_u16(),
        };
        span.record("status", status);
        span.in_scope(|| {
            if status >= 500 {
                tracing::warn!(status, "request finished");
            } else {
                tracing::debug!(status, "request finished");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn printable_escapes_only_what_a_terminal_would_act_on() {
        assert!(matches!(
            printable("Zoë@x.com"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("a\u{1b}[31mred\n\u{202e}\u{9b}\u{200f}x"),
            "a\\u{1b}[31mred\\n\\u{202e}\\u{9b}\\u{200f}x"
        );
    }

    #[test]
    fn untrusted_text_is_escaped_and_capped() {
        let shown =
            untrusted("a\nb\r\tc\0d\u{7f}\u{85}e\u{2028}f\u{2029}g\u{202e}h\\n").to_string();
        assert_eq!(
            shown,
            "a\\nb\\r\\tc\\0d\\u{7f}\\u{85}e\\u{2028}f\\u{2029}g\\u{202e}h\\\\n"
        );
        assert!(!shown.chars().any(is_unsafe_char));
        assert_eq!(
            untrusted("gemini-2.5-flash").to_string(),
            "gemini-2.5-flash"
        );
        let long = "é".repeat(UNTRUSTED_MAX_CHARS + 10);
        let shown = untrusted(&long).to_string();
        assert_eq!(
            shown,
            format!("{}…(10 more)", "é".repeat(UNTRUSTED_MAX_CHARS))
        );
        let exact = "x".repeat(UNTRUSTED_MAX_CHARS);
        assert_eq!(untrusted(&exact).to_string(), exact);
    }

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn logged(keep_esc: bool, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(EscapingMakeWriter::new(buffer.clone(), keep_esc))
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_writer_escapes_a_forgotten_call_site() {
        let forged = "x\n2030-01-01T00:00:00Z  INFO request finished status=200\0\r\u{2028}";
        let out = logged(false, || {
            tracing::info!(model = %forged, "first");
            tracing::warn!("second {forged}");
        });
        let lines: Vec<&str> = out.split_terminator('\n').collect();
        assert_eq!(lines.len(), 2, "{out:?}");
        assert!(lines[0].contains("model=x\\n2030-01-01"), "{out:?}");
        assert!(lines[0].contains("status=200\\0\\r\\u{2028}"), "{out:?}");
        assert!(lines[1].contains("second x\\n2030"), "{out:?}");
        assert!(!out.contains('\0') && !out.contains('\r') && !out.contains('\u{2028}'));
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn the_writer_keeps_colour_codes_only_when_asked() {
        let write = |keep_esc: bool, line: &str| {
            let buffer = Buffer::default();
            let mut w = EscapingMakeWriter::new(buffer.clone(), keep_esc).make_writer();
            w.write_all(line.as_bytes()).unwrap();
            let bytes = buffer.0.lock().unwrap().clone();
            String::from_utf8(bytes).unwrap()
        };
        let line = "\u{1b}[31mred\u{1b}[0m x\ny\n";
        assert_eq!(write(true, line), "\u{1b}[31mred\u{1b}[0m x\\ny\n");
        assert_eq!(write(false, line), "\\u{1b}[31mred\\u{1b}[0m x\\ny\n");
    }

    #[test]
    fn clean_lines_pass_unchanged() {
        let out = logged(
            false,
            || tracing::info!(path = %"/v1/chat", "request finished"),
        );
        assert!(
            out.ends_with(": request finished path=/v1/chat\n"),
            "{out:?}"
        );
        assert_eq!(out.matches('\n').count(), 1);
    }
}
