//! [`ImapServer`]: a plaintext IMAP4rev1 subset over a [`Mailbox`], on `127.0.0.1:0`.
//!
//! Enough for a real client crate (`async-imap`) and for the worker's code reader: the greeting
//! `* OK [CAPABILITY IMAP4rev1]`, `CAPABILITY`, `NOOP` (reports new `* n EXISTS`), `LOGIN`
//! (quoted or atom arguments), `SELECT` / `EXAMINE` of `INBOX` (FLAGS, EXISTS, RECENT,
//! UIDVALIDITY 1, UIDNEXT), `SEARCH` / `UID SEARCH` (`ALL`, a sequence set, `UID <set>`,
//! `TO` / `FROM` / `SUBJECT <string>`, `SEEN`, `UNSEEN`; ANDed; an optional leading
//! `CHARSET x`), `FETCH` / `UID FETCH` (`UID`, `FLAGS`, `INTERNALDATE`, `RFC822.SIZE`, `FAST`,
//! `BODY[]`, `BODY.PEEK[]`, `BODY[HEADER]`, `BODY[TEXT]` and their `PEEK` forms, `RFC822`, with
//! `{n}` literals) and `LOGOUT`. Anything else is `BAD`; so are literals sent by the client.
//!
//! Bounded: lines longer than [`MAX_LINE`] end the connection with `* BYE`, at most
//! [`MAX_CONNECTIONS`] connections are served at once, and an idle connection is closed after
//! [`IDLE_TIMEOUT`]. Dropping the server stops the listener and every connection.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::mail::{Mailbox, StoredMessage, imap_date};

/// Longest command line accepted, bytes (CRLF included).
pub const MAX_LINE: usize = 8 * 1024;
/// Connections served at once; later ones get `* BYE` and are closed.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A running IMAP server. Stops (listener and connections) when dropped.
#[derive(Debug)]
pub struct ImapServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for ImapServer {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

impl ImapServer {
    /// Starts serving `mailbox` on `127.0.0.1:0`. Must be called inside a tokio runtime.
    pub fn start(mailbox: Mailbox) -> std::io::Result<ImapServer> {
        let std_listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = TcpListener::from_std(std_listener)?;
        let task = tokio::spawn(accept_loop(listener, mailbox));
        Ok(ImapServer { addr, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

async fn accept_loop(listener: TcpListener, mailbox: Mailbox) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            // Transient accept errors (e.g. too many open files): back off briefly.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            connections.spawn(async move {
                let _ = stream.write_all(b"* BYE Too many connections\r\n").await;
            });
            continue;
        }
        let mailbox = mailbox.clone();
        connections.spawn(async move {
            let _ = serve(stream, mailbox).await;
        });
    }
}

enum Line {
    Text(Vec<u8>),
    TooLong,
    Eof,
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
    let n = reader.take(limit).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() != Some(&b'\n') {
        return Ok(if buf.len() >= MAX_LINE {
            Line::TooLong
        } else {
            // The peer closed mid-line.
            Line::Eof
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Line::Text(buf))
}

async fn serve(stream: TcpStream, mailbox: Mailbox) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write
        .write_all(b"* OK [CAPABILITY IMAP4rev1] upstream-sim IMAP4rev1 ready\r\n")
        .await?;
    let mut session = Session {
        mailbox,
        user: None,
        selected: None,
    };
    loop {
        let line = match tokio::time::timeout(IDLE_TIMEOUT, read_line(&mut reader)).await {
            Err(_) => {
                write.write_all(b"* BYE Idle for too long\r\n").await?;
                return Ok(());
            }
            Ok(line) => line?,
        };
        let line = match line {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                write.write_all(b"* BYE Line too long\r\n").await?;
                return Ok(());
            }
            Line::Text(line) => line,
        };
        let reply = session.handle(&line);
        write.write_all(&reply.out).await?;
        if reply.close {
            return Ok(());
        }
    }
}

/// One lexical token of a command line.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Atom(String),
    Quoted(String),
    Open,
    Close,
}

impl Tok {
    /// The string value of an atom or quoted string.
    fn astring(&self) -> Option<&str> {
        match self {
            Tok::Atom(s) | Tok::Quoted(s) => Some(s),
            Tok::Open | Tok::Close => None,
        }
    }
}

fn tokenize(line: &str) -> Result<Vec<Tok>, &'static str> {
    let mut toks = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' => {
                chars.next();
            }
            '(' => {
                chars.next();
                toks.push(Tok::Open);
            }
            ')' => {
                chars.next();
                toks.push(Tok::Close);
            }
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err("Unterminated quoted string"),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\')) => s.push(e),
                            _ => return Err("Bad escape in quoted string"),
                        },
                        Some(ch) => s.push(ch),
                    }
                }
                toks.push(Tok::Quoted(s));
            }
            '{' => return Err("Literals are not supported"),
            _ => {
                let mut s = String::new();
                let mut depth = 0usize;
                while let Some(&ch) = chars.peek() {
                    // Brackets belong to the atom (BODY.PEEK[]), spaces inside them too.
                    match ch {
                        '[' => depth += 1,
                        ']' => depth = depth.saturating_sub(1),
                        ' ' | '(' | ')' | '"' if depth == 0 => break,
                        _ => {}
                    }
                    s.push(ch);
                    chars.next();
                }
                toks.push(Tok::Atom(s));
            }
        }
    }
    Ok(toks)
}

/// A parsed sequence set: ranges with `*` resolved later.
struct SeqSet(Vec<(Option<u32>, Option<u32>)>);

impl SeqSet {
    fn parse(s: &str) -> Option<SeqSet> {
        let one = |p: &str| -> Option<Option<u32>> {
            if p == "*" {
                Some(None)
            } else {
                p.parse::<u32>().ok().filter(|n| *n > 0).map(Some)
            }
        };
        let mut ranges = Vec::new();
        for item in s.split(',') {
            let range = match item.split_once(':') {
                Some((a, b)) => (one(a)?, one(b)?),
                None => {
                    let n = one(item)?;
                    (n, n)
                }
            };
            ranges.push(range);
        }
        Some(SeqSet(ranges))
    }

    /// Whether `n` is in the set, `*` being `max`.
    fn contains(&self, n: u32, max: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let a = a.unwrap_or(max);
            let b = b.unwrap_or(max);
            (a.min(b)..=a.max(b)).contains(&n)
        })
    }
}

/// One search key.
enum Key {
    All,
    Seq(SeqSet),
    Uid(SeqSet),
    Header(&'static str, String),
    Seen(bool),
}

fn parse_search(toks: &[Tok]) -> Result<Vec<Key>, String> {
    let mut keys = Vec::new();
    let mut i = 0;
    let arg = |i: usize| -> Result<String, String> {
        toks.get(i)
            .and_then(Tok::astring)
            .map(str::to_string)
            .ok_or_else(|| "Missing search argument".to_string())
    };
    if matches!(toks.first(), Some(Tok::Atom(a)) if a.eq_ignore_ascii_case("CHARSET")) {
        i = 2;
    }
    while let Some(tok) = toks.get(i) {
        let Tok::Atom(word) = tok else {
            return Err("Unsupported search syntax".into());
        };
        let upper = word.to_ascii_uppercase();
        match upper.as_str() {
            "ALL" => keys.push(Key::All),
            "SEEN" => keys.push(Key::Seen(true)),
            "UNSEEN" => keys.push(Key::Seen(false)),
            "UID" => {
                i += 1;
                let set = SeqSet::parse(&arg(i)?).ok_or("Bad UID set")?;
                keys.push(Key::Uid(set));
            }
            "TO" | "FROM" | "SUBJECT" => {
                i += 1;
                let header = match upper.as_str() {
                    "TO" => "to",
                    "FROM" => "from",
                    _ => "subject",
                };
                keys.push(Key::Header(header, arg(i)?.to_ascii_lowercase()));
            }
            _ => match SeqSet::parse(word) {
                Some(set) => keys.push(Key::Seq(set)),
                None => return Err(format!("Unsupported search key {word}")),
            },
        }
        i += 1;
    }
    if keys.is_empty() {
        return Err("Missing search criteria".into());
    }
    Ok(keys)
}

/// The (unfolded) values of a header, lowercased.
fn header_values(raw: &str, name: &str) -> Vec<String> {
    let head = raw.split("\r\n\r\n").next().unwrap_or("");
    let mut values: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = current.as_mut() {
                v.push_str(line);
            }
            continue;
        }
        values.extend(current.take());
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            current = Some(v.trim().to_ascii_lowercase());
        }
    }
    values.extend(current);
    values
}

/// A FETCH data item.
#[derive(Clone, Copy, PartialEq)]
enum Item {
    Uid,
    Flags,
    InternalDate,
    Size,
    /// `BODY[<section>]`: (section, peek).
    Body(Section, bool),
    Rfc822,
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    Full,
    Header,
    Text,
}

fn parse_items(toks: &[Tok]) -> Result<Vec<Item>, String> {
    let words: Vec<&Tok> = match toks {
        [Tok::Open, inner @ .., Tok::Close] => inner.iter().collect(),
        [one] => vec![one],
        _ => return Err("Bad fetch item list".into()),
    };
    let mut items = Vec::new();
    for tok in words {
        let Tok::Atom(word) = tok else {
            return Err("Bad fetch item".into());
        };
        let upper = word.to_ascii_uppercase();
        match upper.as_str() {
            "UID" => items.push(Item::Uid),
            "FLAGS" => items.push(Item::Flags),
            "INTERNALDATE" => items.push(Item::InternalDate),
            "RFC822.SIZE" => items.push(Item::Size),
            "FAST" => items.extend([Item::Flags, Item::InternalDate, Item::Size]),
            "RFC822" => items.push(Item::Rfc822),
            _ => {
                let (peek, section) = if let Some(s) = upper.strip_prefix("BODY.PEEK[") {
                    (true, s)
                } else if let Some(s) = upper.strip_prefix("BODY[") {
                    (false, s)
                } else {
                    return Err(format!("Unsupported fetch item {word}"));
                };
                let section = match section {
                    "]" => Section::Full,
                    "HEADER]" => Section::Header,
                    "TEXT]" => Section::Text,
                    _ => return Err(format!("Unsupported fetch item {word}")),
                };
                items.push(Item::Body(section, peek));
            }
        }
    }
    Ok(items)
}

struct Selected {
    read_only: bool,
    /// The message count last reported to the client.
    exists: usize,
}

struct Session {
    mailbox: Mailbox,
    user: Option<String>,
    selected: Option<Selected>,
}

struct Reply {
    out: Vec<u8>,
    close: bool,
}

impl Reply {
    fn text(s: String) -> Reply {
        Reply {
            out: s.into_bytes(),
            close: false,
        }
    }
}

impl Session {
    fn handle(&mut self, line: &[u8]) -> Reply {
        let Ok(line) = std::str::from_utf8(line) else {
            return Reply::text("* BAD Command is not UTF-8\r\n".into());
        };
        let toks = match tokenize(line) {
            Ok(t) => t,
            Err(e) => {
                // Answer with the tag when there is one.
                let tag = line.split(' ').next().filter(|t| is_tag(t)).unwrap_or("*");
                return Reply::text(format!("{tag} BAD {e}\r\n"));
            }
        };
        let tag = match toks.first() {
            Some(Tok::Atom(t)) if is_tag(t) => t.clone(),
            _ => return Reply::text("* BAD Missing or invalid tag\r\n".into()),
        };
        let Some(Tok::Atom(command)) = toks.get(1) else {
            return Reply::text(format!("{tag} BAD Missing command\r\n"));
        };
        let command = command.to_ascii_uppercase();
        let args = toks.get(2..).unwrap_or(&[]);
        let result = match command.as_str() {
            "CAPABILITY" => Ok("* CAPABILITY IMAP4rev1\r\n".to_string()),
            "NOOP" => Ok(self.noop()),
            "LOGOUT" => {
                return Reply {
                    out: format!("* BYE Logging out\r\n{tag} OK LOGOUT completed\r\n").into_bytes(),
                    close: true,
                };
            }
            "LOGIN" => return Reply::text(self.login(&tag, args)),
            "SELECT" | "EXAMINE" => return Reply::text(self.select(&tag, &command, args)),
            "SEARCH" => self.search(args, false),
            "FETCH" => return self.fetch(&tag, args, false),
            "UID" => {
                let sub = match args.first() {
                    Some(Tok::Atom(s)) => s.to_ascii_uppercase(),
                    _ => String::new(),
                };
                let rest = args.get(1..).unwrap_or(&[]);
                match sub.as_str() {
                    "SEARCH" => self.search(rest, true),
                    "FETCH" => return self.fetch(&tag, rest, true),
                    _ => Err("Unsupported UID command".to_string()),
                }
            }
            _ => Err(format!(
                "Unknown or unsupported command {}",
                command.chars().take(32).collect::<String>()
            )),
        };
        let name = if command == "UID" {
            "UID command"
        } else {
            command.as_str()
        };
        Reply::text(match result {
            Ok(untagged) => format!("{untagged}{tag} OK {name} completed\r\n"),
            Err(e) => format!("{tag} BAD {e}\r\n"),
        })
    }

    fn noop(&mut self) -> String {
        let (Some(user), Some(selected)) = (&self.user, self.selected.as_mut()) else {
            return String::new();
        };
        let (messages, _) = self.mailbox.snapshot(user);
        if messages.len() > selected.exists {
            selected.exists = messages.len();
            format!("* {} EXISTS\r\n* 0 RECENT\r\n", messages.len())
        } else {
            String::new()
        }
    }

    fn login(&mut self, tag: &str, args: &[Tok]) -> String {
        if self.user.is_some() {
            return format!("{tag} BAD Already logged in\r\n");
        }
        let (Some(user), Some(pass), None) = (
            args.first().and_then(Tok::astring),
            args.get(1).and_then(Tok::astring),
            args.get(2),
        ) else {
            return format!("{tag} BAD LOGIN needs a user name and a password\r\n");
        };
        if self.mailbox.check_login(user, pass) {
            self.user = Some(user.to_string());
            format!("{tag} OK [CAPABILITY IMAP4rev1] LOGIN completed\r\n")
        } else {
            format!("{tag} NO [AUTHENTICATIONFAILED] Invalid credentials\r\n")
        }
    }

    fn select(&mut self, tag: &str, command: &str, args: &[Tok]) -> String {
        let Some(user) = &self.user else {
            return format!("{tag} BAD Not logged in\r\n");
        };
        let (Some(folder), None) = (args.first().and_then(Tok::astring), args.get(1)) else {
            return format!("{tag} BAD {command} needs one mailbox name\r\n");
        };
        self.selected = None;
        if !folder.eq_ignore_ascii_case("INBOX") {
            return format!("{tag} NO [NONEXISTENT] No such mailbox\r\n");
        }
        let read_only = command == "EXAMINE";
        let (messages, uid_next) = self.mailbox.snapshot(user);
        self.selected = Some(Selected {
            read_only,
            exists: messages.len(),
        });
        let mut out = String::new();
        out.push_str("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n");
        if read_only {
            out.push_str("* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n");
        } else {
            out.push_str("* OK [PERMANENTFLAGS (\\Seen)] Limited\r\n");
        }
        let _ = write!(out, "* {} EXISTS\r\n* 0 RECENT\r\n", messages.len());
        out.push_str("* OK [UIDVALIDITY 1] UIDs valid\r\n");
        let _ = write!(out, "* OK [UIDNEXT {uid_next}] Predicted next UID\r\n");
        let code = if read_only { "READ-ONLY" } else { "READ-WRITE" };
        let _ = write!(out, "{tag} OK [{code}] {command} completed\r\n");
        out
    }

    fn selected_messages(&self) -> Result<(String, Vec<StoredMessage>), String> {
        match (&self.user, &self.selected) {
            (Some(user), Some(_)) => Ok((user.clone(), self.mailbox.snapshot(user).0)),
            _ => Err("No mailbox selected".into()),
        }
    }

    fn search(&mut self, args: &[Tok], by_uid: bool) -> Result<String, String> {
        let (_, messages) = self.selected_messages()?;
        let keys = parse_search(args)?;
        let max_uid = messages.last().map_or(0, |m| m.uid);
        let max_seq = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        let mut out = String::from("* SEARCH");
        for (i, m) in messages.iter().enumerate() {
            let seq = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let hit = keys.iter().all(|k| match k {
                Key::All => true,
                Key::Seq(set) => set.contains(seq, max_seq),
                Key::Uid(set) => set.contains(m.uid, max_uid),
                Key::Header(name, needle) => header_values(&m.raw, name)
                    .iter()
                    .any(|v| v.contains(needle.as_str())),
                Key::Seen(seen) => m.seen == *seen,
            });
            if hit {
                let _ = write!(out, " {}", if by_uid { m.uid } else { seq });
            }
        }
        out.push_str("\r\n");
        Ok(out)
    }

    fn fetch(&mut self, tag: &str, args: &[Tok], by_uid: bool) -> Reply {
        let name = if by_uid { "UID FETCH" } else { "FETCH" };
        let parsed = (|| {
            let (user, messages) = self.selected_messages()?;
            let set = args
                .first()
                .and_then(|t| match t {
                    Tok::Atom(s) => SeqSet::parse(s),
                    _ => None,
                })
                .ok_or("Bad sequence set")?;
            let mut items = parse_items(args.get(1..).unwrap_or(&[]))?;
            if by_uid && !items.contains(&Item::Uid) {
                items.insert(0, Item::Uid);
            }
            Ok::<_, String>((user, messages, set, items))
        })();
        let (user, messages, set, items) = match parsed {
            Ok(p) => p,
            Err(e) => return Reply::text(format!("{tag} BAD {e}\r\n")),
        };
        let max_uid = messages.last().map_or(0, |m| m.uid);
        let max_seq = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        let read_only = self.selected.as_ref().is_none_or(|s| s.read_only);
        let mut out = Vec::new();
        let mut newly_seen = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let seq = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let hit = if by_uid {
                set.contains(m.uid, max_uid)
            } else {
                set.contains(seq, max_seq)
            };
            if !hit {
                continue;
            }
            let sets_seen = !read_only
                && items
                    .iter()
                    .any(|it| matches!(it, Item::Body(_, false) | Item::Rfc822));
            let seen = m.seen || sets_seen;
            if sets_seen && !m.seen {
                newly_seen.push(m.uid);
            }
            let mut parts: Vec<Vec<u8>> = Vec::new();
            for item in &items {
                let part = match item {
                    Item::Uid => format!("UID {}", m.uid).into_bytes(),
                    Item::Flags => {
                        if seen {
                            b"FLAGS (\\Seen)".to_vec()
                        } else {
                            b"FLAGS ()".to_vec()
                        }
                    }
                    Item::InternalDate => {
                        format!("INTERNALDATE \"{}\"", imap_date(m.arrived)).into_bytes()
                    }
                    Item::Size => format!("RFC822.SIZE {}", m.raw.len()).into_bytes(),
                    Item::Rfc822 => literal("RFC822", m.raw.as_bytes()),
                    Item::Body(section, _) => {
                        let (head, body) = match m.raw.find("\r\n\r\n") {
                            Some(i) => m.raw.split_at(i + 4),
                            None => (m.raw.as_str(), ""),
                        };
                        match section {
                            Section::Full => literal("BODY[]", m.raw.as_bytes()),
                            Section::Header => literal("BODY[HEADER]", head.as_bytes()),
                            Section::Text => literal("BODY[TEXT]", body.as_bytes()),
                        }
                    }
                };
                parts.push(part);
            }
            out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
            out.extend_from_slice(&parts.join(&b' '));
            out.extend_from_slice(b")\r\n");
        }
        if !newly_seen.is_empty() {
            self.mailbox.mark_seen(&user, &newly_seen);
        }
        out.extend_from_slice(format!("{tag} OK {name} completed\r\n").as_bytes());
        Reply { out, close: false }
    }
}

fn literal(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut v = format!("{name} {{{}}}\r\n", bytes.len()).into_bytes();
    v.extend_from_slice(bytes);
    v
}

/// A tag: 1–64 ASTRING-CHARs other than `+`.
fn is_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_brackets_and_unescape_quotes() {
        assert_eq!(
            tokenize(r#"a1 UID FETCH 3:* (UID BODY.PEEK[])"#).unwrap_or_default(),
            vec![
                Tok::Atom("a1".into()),
                Tok::Atom("UID".into()),
                Tok::Atom("FETCH".into()),
                Tok::Atom("3:*".into()),
                Tok::Open,
                Tok::Atom("UID".into()),
                Tok::Atom("BODY.PEEK[]".into()),
                Tok::Close,
            ]
        );
        assert_eq!(
            tokenize(r#"a LOGIN "u\"x" "p\\w""#).unwrap_or_default(),
            vec![
                Tok::Atom("a".into()),
                Tok::Atom("LOGIN".into()),
                Tok::Quoted("u\"x".into()),
                Tok::Quoted("p\\w".into()),
            ]
        );
        assert!(tokenize("a LOGIN {5}").is_err());
        assert!(tokenize("a LOGIN \"open").is_err());
    }

    #[test]
    fn star_ranges_include_the_highest_even_when_below_the_start() {
        let set = SeqSet::parse("7:*").unwrap_or(SeqSet(Vec::new()));
        assert!(set.contains(5, 5));
        assert!(!set.contains(4, 5));
        assert!(set.contains(9, 9));
        let set = SeqSet::parse("1,3:4").unwrap_or(SeqSet(Vec::new()));
        assert!(set.contains(1, 9) && set.contains(4, 9) && !set.contains(2, 9));
        assert!(SeqSet::parse("0").is_none());
        assert!(SeqSet::parse("a:b").is_none());
    }

    #[test]
    fn headers_are_unfolded() {
        let raw = "To: a@x,\r\n b@y\r\nSubject: hi\r\n\r\nTo: body@z\r\n";
        assert_eq!(header_values(raw, "to"), vec!["a@x, b@y".to_string()]);
        assert!(header_values(raw, "from").is_empty());
    }
}
