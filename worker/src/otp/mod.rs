//! Where a re-login's one-time code comes from: the [`CodeSource`] trait, the operator's typed
//! code ([`OperatorCodes`]), the operator's mailbox over IMAP ([`ImapCodes`]), and
//! [`extract_code`], which finds the code in a Gemini Business e-mail.

use std::time::Duration;

use business2api_shared::Secret;
use business2api_shared::protocol::FailureReason;
use futures_util::future::BoxFuture;

use crate::runner::TaskContext;

mod imap;

pub use imap::ImapCodes;

/// Why no code could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeError {
    pub reason: FailureReason,
    /// For the operator; never a password or a code.
    pub message: String,
}

impl CodeError {
    pub fn new(reason: FailureReason, message: impl Into<String>) -> CodeError {
        CodeError {
            reason,
            message: message.into(),
        }
    }
}

/// A source of one-time codes for one login (named so it does not clash with the protocol's
/// `OtpSource`, which says which source a task uses).
pub trait CodeSource: Send {
    /// Called before the e-mail address is submitted: a mailbox notes where new mail starts.
    fn start(&mut self) -> BoxFuture<'_, Result<(), CodeError>>;

    /// Waits (bounded by the source's own timeout) for the code sent after [`start`].
    ///
    /// [`start`]: CodeSource::start
    fn code<'a>(&'a mut self, ctx: &'a mut TaskContext)
    -> BoxFuture<'a, Result<Secret, CodeError>>;

    /// Releases what the source holds (a mailbox logs out).
    fn finish(&mut self) -> BoxFuture<'_, ()>;
}

/// The code an operator types (`POST /admin/accounts/{email}/otp`), forwarded to the task.
#[derive(Debug, Clone)]
pub struct OperatorCodes {
    pub timeout: Duration,
}

impl CodeSource for OperatorCodes {
    fn start(&mut self) -> BoxFuture<'_, Result<(), CodeError>> {
        Box::pin(async { Ok(()) })
    }

    fn code<'a>(
        &'a mut self,
        ctx: &'a mut TaskContext,
    ) -> BoxFuture<'a, Result<Secret, CodeError>> {
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, ctx.next_code()).await {
                Ok(Some(code)) => Ok(code),
                Ok(None) => Err(CodeError::new(
                    FailureReason::Cancelled,
                    "the connection to the server ended while waiting for the operator's code",
                )),
                Err(_) => Err(CodeError::new(
                    FailureReason::CodeNeverArrived,
                    format!(
                        "no code was typed by the operator within {} s",
                        timeout.as_secs()
                    ),
                )),
            }
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The one-time code in a Gemini Business verification e-mail (the whole raw message or only
/// its body): the 6 characters `[A-Z0-9]` after "code is:". Quoted-printable soft line breaks
/// and `=3D` are undone and HTML tags are skipped, so a text/html-only body works too.
pub fn extract_code(message: &str) -> Option<String> {
    let text = message
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
        .replace("=3d", "=");
    let text = strip_tags(&text).replace("&nbsp;", " ");
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find("code is:") {
        let start = from + at + "code is:".len();
        let rest = text[start..].trim_start();
        let token: String = rest
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        if token.len() == 6
            && token
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Some(token);
        }
        from = start;
    }
    None
}

/// `text` with every `<...>` replaced by a space.
fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Whether the raw message's `To:` header names `address` (case-insensitively; folded header
/// lines are joined).
pub fn addressed_to(message: &str, address: &str) -> bool {
    let address = address.to_ascii_lowercase();
    let head = message
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .split("\n\n")
        .next()
        .unwrap_or("");
    let mut headers: Vec<String> = Vec::new();
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            headers.push(line.to_owned());
        }
    }
    headers.iter().any(|h| {
        h.get(..3).is_some_and(|n| n.eq_ignore_ascii_case("to:"))
            && h[3..].to_ascii_lowercase().contains(&address)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIL: &str = "From: Gemini Business <noreply-googlecloud@google.com>\r\n\
        To: alice@example.com\r\n\
        Subject: Your Gemini Business verification code\r\n\
        Date: Mon, 07 Dec 2026 06:56:14 +0000\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\r\n\
        Hello,\r\n\r\nYour one-time verification code is: AB12CD\r\n\r\nThanks\r\n";

    #[test]
    fn the_code_is_found_in_a_plain_mail() {
        assert_eq!(extract_code(MAIL).as_deref(), Some("AB12CD"));
    }

    #[test]
    fn quoted_printable_soft_breaks_are_undone() {
        let body = "Your one-time verification co=\r\nde is: 9Z=\r\nY8X7\r\n";
        assert_eq!(extract_code(body).as_deref(), Some("9ZY8X7"));
    }

    #[test]
    fn an_html_only_body_works() {
        let body = "<html><body><p style=3D\"x\">Your one-time verification code is:</p>\
            <div><b>QW3RT6</b></div></body></html>";
        assert_eq!(extract_code(body).as_deref(), Some("QW3RT6"));
    }

    #[test]
    fn a_token_of_the_wrong_shape_is_no_code() {
        assert_eq!(extract_code("your code is: abc123"), None);
        assert_eq!(extract_code("your code is: ABC1234"), None);
        assert_eq!(extract_code("your code is: ABC12"), None);
        assert_eq!(extract_code("no code here"), None);
        // A later well-shaped mention still counts.
        assert_eq!(
            extract_code("code is: nope. Your code is: ZZ99ZZ").as_deref(),
            Some("ZZ99ZZ")
        );
    }

    #[test]
    fn the_recipient_is_read_from_the_to_header_only() {
        assert!(addressed_to(MAIL, "Alice@Example.com"));
        assert!(!addressed_to(MAIL, "bob@example.com"));
        let folded = "To: \"Team\" <x@example.com>,\r\n\tbob@example.com\r\nSubject: s\r\n\r\nbody";
        assert!(addressed_to(folded, "bob@example.com"));
        let in_body = "To: x@example.com\r\n\r\nTo: bob@example.com";
        assert!(!addressed_to(in_body, "bob@example.com"));
    }
}
