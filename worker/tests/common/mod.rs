//! Test doubles that follow THE LOGIN CONTRACT: the login pages ([`pages`]) and the operator's
//! mailbox over IMAP ([`imap`]), both on 127.0.0.1.
#![allow(clippy::unwrap_used, reason = "test helpers")]
#![allow(dead_code, reason = "each test binary uses a part")]

pub mod imap;
pub mod pages;

/// The code e-mail of the contract.
pub fn code_mail(to: &str, code: &str) -> String {
    format!(
        "From: Gemini Business <noreply-googlecloud@google.com>\r\n\
         To: {to}\r\n\
         Subject: Your Gemini Business verification code\r\n\
         Date: Mon, 07 Dec 2026 06:56:14 +0000\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Hello,\r\n\
         \r\n\
         Your one-time verification code is: {code}\r\n"
    )
}
