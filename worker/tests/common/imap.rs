//! A tiny IMAP server: the commands of THE LOGIN CONTRACT (LOGIN, SELECT, NOOP, UID SEARCH
//! UID n:*, UID FETCH <set> (UID BODY.PEEK[]), LOGOUT) over plaintext, messages kept in memory.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Default)]
pub struct MailboxState {
    /// (uid, raw message)
    pub messages: Vec<(u32, String)>,
    pub next_uid: u32,
    /// Every command line received (LOGIN lines with the password masked).
    pub commands: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Mailbox {
    pub port: u16,
    pub user: String,
    pub password: String,
    pub state: Arc<Mutex<MailboxState>>,
}

impl Mailbox {
    pub fn deliver(&self, message: String) -> u32 {
        let mut s = self.state.lock().unwrap();
        let uid = s.next_uid;
        s.next_uid += 1;
        s.messages.push((uid, message));
        uid
    }

    pub fn commands(&self) -> Vec<String> {
        self.state.lock().unwrap().commands.clone()
    }
}

pub async fn start(user: &str, password: &str) -> Mailbox {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mailbox = Mailbox {
        port: listener.local_addr().unwrap().port(),
        user: user.to_owned(),
        password: password.to_owned(),
        state: Arc::new(Mutex::new(MailboxState {
            next_uid: 1,
            ..MailboxState::default()
        })),
    };
    let m = mailbox.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve(socket, m.clone()));
        }
    });
    mailbox
}

fn unquote(s: &str) -> String {
    s.trim_matches('"').to_owned()
}

async fn serve(socket: tokio::net::TcpStream, m: Mailbox) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    let _ = write
        .write_all(b"* OK IMAP4rev1 test mailbox ready\r\n")
        .await;
    while let Ok(Some(line)) = lines.next_line().await {
        let mut parts = line.splitn(3, ' ');
        let tag = parts.next().unwrap_or("*").to_owned();
        let command = parts.next().unwrap_or("").to_ascii_uppercase();
        let rest = parts.next().unwrap_or("").to_owned();
        let logged = if command == "LOGIN" {
            format!("{tag} LOGIN ***")
        } else {
            line.clone()
        };
        m.state.lock().unwrap().commands.push(logged);
        let reply = match command.as_str() {
            "LOGIN" => {
                let mut args = rest.splitn(2, ' ');
                let user = unquote(args.next().unwrap_or(""));
                let pass = unquote(args.next().unwrap_or(""));
                if user == m.user && pass == m.password {
                    format!("{tag} OK LOGIN completed\r\n")
                } else {
                    format!("{tag} NO [AUTHENTICATIONFAILED] Invalid credentials\r\n")
                }
            }
            "SELECT" => {
                let s = m.state.lock().unwrap();
                format!(
                    "* FLAGS (\\Seen)\r\n* {} EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 7] ok\r\n\
                     * OK [UIDNEXT {}] ok\r\n{tag} OK [READ-WRITE] SELECT completed\r\n",
                    s.messages.len(),
                    s.next_uid
                )
            }
            "NOOP" => format!("{tag} OK NOOP completed\r\n"),
            "LOGOUT" => {
                let _ = write
                    .write_all(
                        format!("* BYE logging out\r\n{tag} OK LOGOUT completed\r\n").as_bytes(),
                    )
                    .await;
                return;
            }
            "UID" => uid_command(&tag, &rest, &m),
            _ => format!("{tag} BAD unsupported\r\n"),
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn uid_command(tag: &str, rest: &str, m: &Mailbox) -> String {
    let s = m.state.lock().unwrap();
    let upper = rest.to_ascii_uppercase();
    if let Some(range) = upper.strip_prefix("SEARCH UID ") {
        let from: u32 = range.trim().trim_end_matches(":*").parse().unwrap_or(1);
        let mut uids: Vec<u32> = s
            .messages
            .iter()
            .map(|(u, _)| *u)
            .filter(|u| *u >= from)
            .collect();
        // `n:*` names the highest message even when every uid is below n.
        if uids.is_empty()
            && let Some(max) = s.messages.iter().map(|(u, _)| *u).max()
        {
            uids.push(max);
        }
        let list: Vec<String> = uids.iter().map(u32::to_string).collect();
        return format!(
            "* SEARCH {}\r\n{tag} OK SEARCH completed\r\n",
            list.join(" ")
        );
    }
    if let Some(args) = upper.strip_prefix("FETCH ") {
        let set = args.split(' ').next().unwrap_or("");
        let wanted: Vec<u32> = set.split(',').filter_map(|u| u.parse().ok()).collect();
        let mut out = String::new();
        for (seq, (uid, body)) in s.messages.iter().enumerate() {
            if wanted.contains(uid) {
                out.push_str(&format!(
                    "* {} FETCH (UID {uid} BODY[] {{{}}}\r\n{body})\r\n",
                    seq + 1,
                    body.len()
                ));
            }
        }
        out.push_str(&format!("{tag} OK FETCH completed\r\n"));
        return out;
    }
    format!("{tag} BAD unsupported UID command\r\n")
}
