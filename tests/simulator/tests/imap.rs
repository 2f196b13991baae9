//! The simulated IMAP server, driven by a real client crate (`async-imap`, as the worker uses
//! it) and by a raw TCP client for hostile input.

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures_util::TryStreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use upstream_sim::imap::{ImapServer, MAX_LINE};
use upstream_sim::mail::{Mailbox, code_message};
use upstream_sim::{SimAccount, Simulator};

type Session = async_imap::Session<TcpStream>;

async fn connect(server: &ImapServer) -> async_imap::Client<TcpStream> {
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let mut client = async_imap::Client::new(stream);
    let greeting = client.read_response().await.unwrap().unwrap();
    assert!(
        format!("{:?}", greeting.parsed()).contains("IMAP4rev1"),
        "{:?}",
        greeting.parsed()
    );
    client
}

async fn login(server: &ImapServer, user: &str, pass: &str) -> Session {
    connect(server)
        .await
        .login(user, pass)
        .await
        .map_err(|(e, _)| e)
        .unwrap()
}

/// `UID FETCH <set> (UID BODY.PEEK[])` → `(uid, body)` pairs.
async fn fetch_bodies(session: &mut Session, set: &str) -> Vec<(u32, String)> {
    let fetches: Vec<_> = session
        .uid_fetch(set, "(UID BODY.PEEK[])")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    fetches
        .iter()
        .map(|f| {
            (
                f.uid.unwrap(),
                String::from_utf8(f.body().unwrap().to_vec()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn async_imap_reads_the_login_code_the_way_the_worker_will() {
    let sim = Simulator::start().await.unwrap();
    sim.add_account(SimAccount::demo(0));
    sim.add_account(SimAccount::demo(1));
    let mailbox = sim.mailbox();
    mailbox.add_user("ops@example.com", "s3cret \"pw\"");
    mailbox.set_catch_all("ops@example.com");
    // Older mail for this account and mail for another one (a catch-all).
    mailbox.deliver(
        "demo0@example.com",
        code_message("demo0@example.com", "OLD111"),
    );
    mailbox.deliver(
        "demo1@example.com",
        code_message("demo1@example.com", "OTHER1"),
    );
    let server = ImapServer::start(mailbox.clone()).unwrap();

    // Wrong password: NO [AUTHENTICATIONFAILED].
    let err = connect(&server)
        .await
        .login("ops@example.com", "wrong")
        .await
        .err()
        .unwrap()
        .0;
    assert!(
        format!("{err:?}").contains("AUTHENTICATIONFAILED"),
        "{err:?}"
    );

    let mut session = login(&server, "ops@example.com", "s3cret \"pw\"").await;
    let inbox = session.select("INBOX").await.unwrap();
    assert_eq!(inbox.exists, 2);
    assert_eq!(inbox.uid_validity, Some(1));
    let start = inbox.uid_next.unwrap();
    assert_eq!(start, 3);

    // Nothing new yet: `n:*` still names the highest (old) message, which the reader drops.
    let uids = session.uid_search(format!("UID {start}:*")).await.unwrap();
    assert_eq!(uids.into_iter().collect::<Vec<_>>(), vec![2]);

    // The login sends the code: NOOP sees it, UID SEARCH finds it, UID FETCH reads it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = c
        .post(format!("{}/login/email", sim.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=demo0%40example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    session.noop().await.unwrap();
    let mut uids: Vec<u32> = session
        .uid_search(format!("UID {start}:*"))
        .await
        .unwrap()
        .into_iter()
        .collect();
    uids.sort_unstable();
    assert_eq!(uids, vec![3]);
    let bodies = fetch_bodies(&mut session, "3:*").await;
    assert_eq!(bodies.len(), 1);
    let (uid, body) = &bodies[0];
    assert_eq!(*uid, 3);
    assert!(body.contains("To: demo0@example.com\r\n"));
    let code = body
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Your one-time verification code is: "))
        .unwrap();
    assert_eq!(sim.sent_codes("demo0@example.com"), vec![code.to_string()]);

    // Searching by recipient and seen state (PEEK left every message unseen).
    let mut to: Vec<u32> = session
        .uid_search("UNSEEN TO \"demo0@example.com\"")
        .await
        .unwrap()
        .into_iter()
        .collect();
    to.sort_unstable();
    assert_eq!(to, vec![1, 3]);
    let all = session.search("ALL").await.unwrap();
    assert_eq!(all.len(), 3);

    // Plain FETCH by sequence number with the other items; BODY[] marks the message seen.
    let fetches: Vec<_> = session
        .fetch("1", "(UID FLAGS INTERNALDATE RFC822.SIZE BODY[])")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(fetches.len(), 1);
    let f = &fetches[0];
    assert_eq!(f.uid, Some(1));
    assert!(f.internal_date().is_some());
    assert_eq!(
        f.size,
        Some(u32::try_from(f.body().unwrap().len()).unwrap())
    );
    assert!(String::from_utf8_lossy(f.body().unwrap()).contains("OLD111"));
    let unseen = session.uid_search("UNSEEN").await.unwrap();
    assert!(!unseen.contains(&1) && unseen.contains(&3));
    let rfc822: Vec<_> = session
        .fetch("2", "RFC822")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(rfc822[0].body().unwrap()).contains("OTHER1"));

    session.logout().await.unwrap();
}

#[tokio::test]
async fn examine_is_read_only_and_unknown_folders_are_refused() {
    let mailbox = Mailbox::new();
    mailbox.add_user("a@example.com", "pw");
    mailbox.deliver("a@example.com", code_message("a@example.com", "ABC123"));
    let server = ImapServer::start(mailbox.clone()).unwrap();
    let mut session = login(&server, "A@example.com", "pw").await;
    assert!(session.select("Archive").await.is_err());
    let inbox = session.examine("inbox").await.unwrap();
    assert_eq!((inbox.exists, inbox.uid_next), (1, Some(2)));
    let fetched: Vec<_> = session
        .fetch("1:*", "BODY[]")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(fetched.len(), 1);
    assert!(!mailbox.messages("a@example.com")[0].seen);
    session.logout().await.unwrap();
}

/// A raw connection: sends `line` (CRLF added) and reads lines until one starts with `until`.
struct Raw {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn open(server: &ImapServer) -> Raw {
        let (r, w) = TcpStream::connect(server.addr())
            .await
            .unwrap()
            .into_split();
        let mut raw = Raw {
            reader: BufReader::new(r),
            writer: w,
        };
        let greeting = raw.line().await;
        assert!(
            greeting.starts_with("* OK [CAPABILITY IMAP4rev1]"),
            "{greeting}"
        );
        raw
    }

    async fn line(&mut self) -> String {
        let mut s = String::new();
        tokio::time::timeout(Duration::from_secs(5), self.reader.read_line(&mut s))
            .await
            .unwrap()
            .unwrap();
        s
    }

    async fn send(&mut self, line: &str) -> Vec<String> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        let tag = line.split(' ').next().unwrap().to_string();
        let mut lines = Vec::new();
        loop {
            let l = self.line().await;
            assert!(!l.is_empty(), "connection closed after {lines:?}");
            let done = l.starts_with(&format!("{tag} ")) || l.starts_with("* BAD");
            lines.push(l);
            if done {
                return lines;
            }
        }
    }
}

#[tokio::test]
async fn malformed_commands_get_bad_and_the_connection_goes_on() {
    let mailbox = Mailbox::new();
    mailbox.add_user("a@example.com", "pw");
    let server = ImapServer::start(mailbox).unwrap();
    let mut raw = Raw::open(&server).await;
    for (line, expect) in [
        ("a1 FROB", "a1 BAD"),
        ("a2 SELECT INBOX", "a2 BAD"),
        ("a3 LOGIN {5}", "a3 BAD"),
        ("a4 LOGIN \"unterminated", "a4 BAD"),
        ("a5 LOGIN onlyuser", "a5 BAD"),
        ("(((", "* BAD"),
        (
            "a6 LOGIN a@example.com nope",
            "a6 NO [AUTHENTICATIONFAILED]",
        ),
        ("a7 LOGIN \"a@example.com\" \"pw\"", "a7 OK"),
        ("a8 FETCH 1 (UID)", "a8 BAD"),
        ("a9 SELECT INBOX", "a9 OK [READ-WRITE]"),
        ("b1 UID FETCH 1:* (ENVELOPE)", "b1 BAD"),
        ("b2 UID SEARCH NOT SEEN", "b2 BAD"),
        ("b3 UID EXPUNGE 1", "b3 BAD"),
        ("b4 FETCH x:y UID", "b4 BAD"),
        ("b5 CAPABILITY", "b5 OK"),
    ] {
        let lines = raw.send(line).await;
        assert!(
            lines.last().unwrap().starts_with(expect),
            "{line}: {lines:?}"
        );
    }
    let lines = raw.send("b6 SELECT INBOX").await;
    assert!(
        lines.iter().any(|l| l.starts_with("* OK [UIDNEXT 1]")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "* 0 EXISTS\r\n"), "{lines:?}");
    let lines = raw.send("b7 LOGOUT").await;
    assert_eq!(
        lines,
        vec!["* BYE Logging out\r\n", "b7 OK LOGOUT completed\r\n"]
    );
    assert_eq!(raw.line().await, "", "closed after LOGOUT");
}

#[tokio::test]
async fn an_oversized_line_ends_the_connection_and_others_are_still_served() {
    let mailbox = Mailbox::new();
    mailbox.add_user("a@example.com", "pw");
    let server = ImapServer::start(mailbox).unwrap();
    let mut raw = Raw::open(&server).await;
    let huge = format!("a1 LOGIN {} pw\r\n", "x".repeat(MAX_LINE * 4));
    // The server may close before reading everything; a write error is fine.
    let _ = raw.writer.write_all(huge.as_bytes()).await;
    assert_eq!(raw.line().await, "* BYE Line too long\r\n");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), raw.reader.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing after BYE");

    let mut other = Raw::open(&server).await;
    let lines = other.send("c1 LOGIN a@example.com pw").await;
    assert!(lines.last().unwrap().starts_with("c1 OK"), "{lines:?}");
}

#[tokio::test]
async fn dropping_the_server_closes_its_port_and_connections() {
    let server = ImapServer::start(Mailbox::new()).unwrap();
    let addr = server.addr();
    let mut raw = Raw::open(&server).await;
    drop(server);
    assert_eq!(raw.line().await, "", "the open connection is closed");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(addr).await.is_err());
}
