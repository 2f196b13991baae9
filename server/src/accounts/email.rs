//! Account e-mails: which ones may enter the store, and how stored ones are printed.
//!
//! The e-mail is an account's key and names its file on export, its rows in `accounts list`
//! and its log lines, so only a plausible address `local@domain` is imported: no control
//! characters, no whitespace, no `/` or `\`, no leading `.`, no `..`, at most 254 bytes, exactly
//! one `@` with something on both sides. Records stored by older versions may still hold other
//! values; `telemetry::printable` escapes them wherever they are printed.

/// The longest e-mail imported, in bytes (RFC 5321's limit on a forward path).
pub const MAX_EMAIL_LEN: usize = 254;

/// How much of a rejected value a message shows, in characters.
const SHOWN_CHARS: usize = 80;

/// Why `email` is not a plausible address, or `Ok`. The reason names no value; see
/// [`rejection`] for the message an import reports.
pub fn check(email: &str) -> Result<(), &'static str> {
    if email.is_empty() {
        return Err("it is empty");
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err("it is longer than 254 bytes");
    }
    if email.chars().any(char::is_control) {
        return Err("it contains a control character");
    }
    if email.chars().any(char::is_whitespace) {
        return Err("it contains whitespace");
    }
    if email.chars().any(crate::telemetry::is_unsafe_char) {
        return Err("it contains a bidirectional-text control character");
    }
    if email.contains(['/', '\\']) {
        return Err("it contains `/` or `\\`");
    }
    if email.starts_with('.') {
        return Err("it starts with `.`");
    }
    if email.contains("..") {
        return Err("it contains `..`");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err("it has no `@`");
    };
    if domain.contains('@') {
        return Err("it has more than one `@`");
    }
    if local.is_empty() {
        return Err("nothing before the `@`");
    }
    if domain.is_empty() {
        return Err("nothing after the `@`");
    }
    Ok(())
}

/// The import's rejection message for an implausible `email`: the reason and the value,
/// escaped and shortened (never raw control characters).
pub fn rejection(email: &str) -> Option<String> {
    let why = check(email).err()?;
    Some(format!("invalid `email` {}: {why}", quoted(email)))
}

/// `value` in double quotes with every special character escaped (`{:?}`), cut after
/// [`SHOWN_CHARS`] characters.
fn quoted(value: &str) -> String {
    match value.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
        None => format!("{value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_addresses_pass() {
        for ok in [
            "alice@example.com",
            "Ann@example.com",
            "o'brien+tag@sub.example.co.uk",
            "a@b",
            "demo-0@sim.example",
            "Zoë@exämple.com",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        let longest = format!("{}@x.com", "a".repeat(MAX_EMAIL_LEN - 6));
        assert_eq!(check(&longest), Ok(()));
    }

    #[test]
    fn hostile_values_are_refused_with_an_escaped_message() {
        let too_long = format!("{}@x.com", "a".repeat(MAX_EMAIL_LEN));
        for bad in [
            "",
            "../../etc/x",
            "../../evil@x.com",
            "/etc/passwd@x",
            "a/b@c",
            "a\\b@c",
            "C:\\x@y",
            ".hidden@x.com",
            "a..b@x.com",
            "a@x..com",
            "nul\0@x.com",
            "line\n@x.com",
            "esc\u{1b}[2J@x.com",
            "del\u{7f}@x.com",
            "c1\u{9b}@x.com",
            "rtl\u{202e}moc.x@y",
            "a b@c",
            "tab\t@x",
            "nbsp\u{a0}@x",
            "no-at.example.com",
            "two@@x.com",
            "a@b@c",
            "@x.com",
            "a@",
            too_long.as_str(),
        ] {
            let message = rejection(bad).unwrap_or_else(|| panic!("{bad:?} passed"));
            assert!(
                !message.chars().any(crate::telemetry::is_unsafe_char),
                "{message:?}"
            );
            assert!(message.len() < 200, "the value is shortened: {message}");
        }
        assert_eq!(
            rejection("esc\u{1b}[2J@x.com").unwrap(),
            "invalid `email` \"esc\\u{1b}[2J@x.com\": it contains a control character"
        );
        assert_eq!(
            rejection("../../etc/x").unwrap(),
            "invalid `email` \"../../etc/x\": it contains `/` or `\\`"
        );
    }
}
