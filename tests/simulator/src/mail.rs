//! [`Mailbox`]: the operator's simulated mail store, read over IMAP by [`crate::imap::ImapServer`].
//!
//! Users log in with a name (usually their address) and a password. A message addressed to an
//! address is delivered to the user of that name (case-insensitive), else to the catch-all
//! user when one is set, else it is dropped. Every user has one folder, `INBOX`, whose UIDs
//! start at 1 and only grow (UIDVALIDITY is always 1). Bounded: a full inbox refuses later
//! deliveries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Messages kept per user; later deliveries to a full inbox are dropped.
pub const MAX_MESSAGES_PER_USER: usize = 10_000;

/// The sender of the code e-mail.
pub const CODE_FROM: &str = "Gemini Business <noreply-googlecloud@google.com>";
/// The subject of the code e-mail.
pub const CODE_SUBJECT: &str = "Your Gemini Business verification code";
/// The body line that carries the code (followed by the code).
pub const CODE_LINE_PREFIX: &str = "Your one-time verification code is: ";

/// One stored message.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    /// The message's UID in its user's INBOX.
    pub uid: u32,
    /// The full RFC 5322 text (CRLF line ends).
    pub raw: String,
    /// Whether `\Seen` is set (a non-peek body fetch sets it).
    pub seen: bool,
    /// Arrival time, seconds since the Unix epoch.
    pub arrived: u64,
}

#[derive(Default)]
struct UserBox {
    password: String,
    messages: Vec<StoredMessage>,
    uid_next: u32,
}

#[derive(Default)]
struct Inner {
    users: HashMap<String, UserBox>,
    catch_all: Option<String>,
    dropped: u64,
}

/// A shared store of delivered messages. Cheap to clone (clones share the store).
#[derive(Clone, Default)]
pub struct Mailbox {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").finish_non_exhaustive()
    }
}

impl Mailbox {
    /// An empty mailbox with no users.
    pub fn new() -> Mailbox {
        Mailbox::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a user (or changes its password); the name is case-insensitive.
    pub fn add_user(&self, name: &str, password: &str) {
        let mut inner = self.lock();
        let user = inner
            .users
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| UserBox {
                uid_next: 1,
                ..UserBox::default()
            });
        user.password = password.to_string();
    }

    /// Makes `name` (added with [`Mailbox::add_user`]) receive every message addressed to an
    /// address that has no user of its own.
    pub fn set_catch_all(&self, name: &str) {
        self.lock().catch_all = Some(name.to_ascii_lowercase());
    }

    /// Delivers `raw` (an RFC 5322 message) addressed to `to`. Returns whether a user received it.
    pub fn deliver(&self, to: &str, raw: String) -> bool {
        let mut inner = self.lock();
        let to = to.to_ascii_lowercase();
        let target = if inner.users.contains_key(&to) {
            Some(to)
        } else {
            inner.catch_all.clone()
        };
        let delivered = match target.and_then(|t| inner.users.get_mut(&t)) {
            Some(user) if user.messages.len() < MAX_MESSAGES_PER_USER => {
                let uid = user.uid_next;
                user.uid_next = user.uid_next.saturating_add(1);
                user.messages.push(StoredMessage {
                    uid,
                    raw,
                    seen: false,
                    arrived: now_secs(),
                });
                true
            }
            _ => false,
        };
        if !delivered {
            inner.dropped += 1;
        }
        delivered
    }

    /// The messages in `name`'s INBOX, oldest first (empty for an unknown user).
    pub fn messages(&self, name: &str) -> Vec<StoredMessage> {
        self.lock()
            .users
            .get(&name.to_ascii_lowercase())
            .map(|u| u.messages.clone())
            .unwrap_or_default()
    }

    /// How many messages found no user.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Whether `name` / `password` are a user's credentials.
    pub(crate) fn check_login(&self, name: &str, password: &str) -> bool {
        self.lock()
            .users
            .get(&name.to_ascii_lowercase())
            .is_some_and(|u| u.password == password)
    }

    /// `(messages, uid_next)` of a user's INBOX.
    pub(crate) fn snapshot(&self, name: &str) -> (Vec<StoredMessage>, u32) {
        self.lock()
            .users
            .get(&name.to_ascii_lowercase())
            .map(|u| (u.messages.clone(), u.uid_next))
            .unwrap_or((Vec::new(), 1))
    }

    /// Sets `\Seen` on the messages with these UIDs.
    pub(crate) fn mark_seen(&self, name: &str, uids: &[u32]) {
        if let Some(user) = self.lock().users.get_mut(&name.to_ascii_lowercase()) {
            for m in user.messages.iter_mut().filter(|m| uids.contains(&m.uid)) {
                m.seen = true;
            }
        }
    }
}

/// The code e-mail the simulated login sends to `to` (headers of the login contract, CRLF).
pub fn code_message(to: &str, code: &str) -> String {
    let now = now_secs();
    format!(
        "From: {CODE_FROM}\r\n\
         To: {to}\r\n\
         Subject: {CODE_SUBJECT}\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}@sim.business.gemini.google>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=UTF-8\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         \r\n\
         Hello,\r\n\
         \r\n\
         {CODE_LINE_PREFIX}{code}\r\n\
         \r\n\
         This code expires in 10 minutes. If you didn't request it, ignore this e-mail.\r\n",
        date = rfc5322_date(now),
        id = crate::state::random_hex(12),
    )
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// `(year, month 1-12, day, hh, mm, ss, weekday index from Thursday)` of a Unix time (UTC).
fn civil(secs: u64) -> (i64, usize, i64, u64, u64, u64, usize) {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = usize::try_from(days.rem_euclid(7)).unwrap_or(0);
    (
        year,
        usize::try_from(month).unwrap_or(1),
        day,
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        weekday,
    )
}

/// `Mon, 07 Dec 2026 06:56:13 +0000`.
pub(crate) fn rfc5322_date(secs: u64) -> String {
    let (y, m, d, hh, mm, ss, wd) = civil(secs);
    format!(
        "{}, {d:02} {} {y:04} {hh:02}:{mm:02}:{ss:02} +0000",
        WEEKDAYS.get(wd).copied().unwrap_or("Thu"),
        MONTHS.get(m.saturating_sub(1)).copied().unwrap_or("Jan"),
    )
}

/// IMAP `date-time`: `07-Dec-2026 06:56:13 +0000`.
pub(crate) fn imap_date(secs: u64) -> String {
    let (y, m, d, hh, mm, ss, _) = civil(secs);
    format!(
        "{d:02}-{}-{y:04} {hh:02}:{mm:02}:{ss:02} +0000",
        MONTHS.get(m.saturating_sub(1)).copied().unwrap_or("Jan"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_formatted_in_utc() {
        // 2026-12-07T06:56:13Z was a Monday.
        let t = 1_796_626_573;
        assert_eq!(rfc5322_date(t), "Mon, 07 Dec 2026 06:56:13 +0000");
        assert_eq!(imap_date(t), "07-Dec-2026 06:56:13 +0000");
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    }

    #[test]
    fn delivery_goes_to_the_user_else_the_catch_all_else_nowhere() {
        let m = Mailbox::new();
        m.add_user("a@example.com", "pw");
        assert!(m.deliver("A@example.com", "x".into()));
        assert!(!m.deliver("b@example.com", "y".into()));
        assert_eq!(m.dropped(), 1);
        m.add_user("ops", "pw");
        m.set_catch_all("ops");
        assert!(m.deliver("b@example.com", "y".into()));
        assert_eq!(m.messages("a@example.com").len(), 1);
        let ops = m.messages("OPS");
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].uid, 1);
        assert!(m.check_login("ops", "pw"));
        assert!(!m.check_login("ops", "PW"));
    }

    #[test]
    fn the_code_message_has_the_contract_headers() {
        let raw = code_message("demo0@example.com", "AB12CD");
        assert!(raw.starts_with(
            "From: Gemini Business <noreply-googlecloud@google.com>\r\nTo: demo0@example.com\r\n\
             Subject: Your Gemini Business verification code\r\nDate: "
        ));
        assert!(raw.contains("\r\n\r\n"));
        assert!(raw.contains("\r\nYour one-time verification code is: AB12CD\r\n"));
        assert!(!raw.replace("\r\n", "").contains('\n'));
    }
}
