//! [`ImapCodes`]: the one-time code from the operator's mailbox over IMAP (async-imap on tokio,
//! plaintext or implicit TLS through tokio-rustls with the ring provider and the platform
//! verifier). Only `LOGIN`, `SELECT` (its `[UIDNEXT n]`, noted at the task's start), then every
//! second `NOOP`, `UID SEARCH UID n:*` and `UID FETCH <uids> (UID BODY.PEEK[])`, and `LOGOUT`.
//! Only messages with a uid of at least `n` whose `To:` names the account count (the mailbox may
//! be a catch-all); the newest one's code wins.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_imap::Session;
use business2api_shared::Secret;
use business2api_shared::protocol::{FailureReason, ImapMailbox};
use futures_util::TryStreamExt as _;
use futures_util::future::BoxFuture;
use rustls_platform_verifier::BuilderVerifierExt as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use super::{CodeError, CodeSource, addressed_to, extract_code};
use crate::runner::TaskContext;

/// How often the mailbox is polled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The most messages fetched in one poll (a busy catch-all cannot flood the worker).
const MAX_FETCH: usize = 20;

trait ImapIo: AsyncRead + AsyncWrite + Unpin + Send + Sync + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + fmt::Debug> ImapIo for T {}

type ImapSession = Session<Box<dyn ImapIo>>;

/// The code from an IMAP mailbox (see the module documentation).
pub struct ImapCodes {
    mailbox: ImapMailbox,
    account: String,
    session: Option<ImapSession>,
    next_uid: u32,
    checked: BTreeSet<u32>,
}

impl fmt::Debug for ImapCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapCodes")
            .field("host", &self.mailbox.host)
            .field("port", &self.mailbox.port)
            .field("tls", &self.mailbox.tls)
            .finish_non_exhaustive()
    }
}

impl ImapCodes {
    /// Codes for `account` (the e-mail address the code is sent to) from `mailbox`.
    pub fn new(mailbox: ImapMailbox, account: &str) -> ImapCodes {
        ImapCodes {
            mailbox,
            account: account.to_owned(),
            session: None,
            next_uid: 1,
            checked: BTreeSet::new(),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.mailbox.timeout_ms)
    }

    fn where_(&self) -> String {
        format!("{}:{}", self.mailbox.host, self.mailbox.port)
    }

    fn network(&self, what: &str, e: impl fmt::Display) -> CodeError {
        CodeError::new(
            FailureReason::NetworkFailed,
            format!("mailbox {}: {what}: {e}", self.where_()),
        )
    }

    async fn connect(&self) -> Result<ImapSession, CodeError> {
        let tcp = TcpStream::connect((self.mailbox.host.as_str(), self.mailbox.port))
            .await
            .map_err(|e| self.network("cannot connect", e))?;
        let stream: Box<dyn ImapIo> = if self.mailbox.tls {
            let config = tls_config().map_err(|e| self.network("TLS setup", e))?;
            let name = rustls::pki_types::ServerName::try_from(self.mailbox.host.clone())
                .map_err(|e| self.network("bad host name", e))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| self.network("TLS handshake failed", e))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut client = async_imap::Client::new(stream);
        match client.read_response().await {
            Ok(Some(_greeting)) => {}
            Ok(None) => return Err(self.network("no greeting", "the connection closed")),
            Err(e) => return Err(self.network("no greeting", e)),
        }
        let session = client
            .login(
                self.mailbox.username.expose(),
                self.mailbox.password.expose(),
            )
            .await
            // The server's answer may echo the user name; say only that it refused.
            .map_err(|_| {
                self.network(
                    "the login was refused",
                    "check the mailbox's user name and password",
                )
            })?;
        Ok(session)
    }

    /// One poll: the newest code for the account among the messages not checked yet.
    async fn poll(&mut self) -> Result<Option<Secret>, CodeError> {
        let next_uid = self.next_uid;
        let Some(session) = self.session.as_mut() else {
            return Err(CodeError::new(
                FailureReason::NetworkFailed,
                "the mailbox is not connected",
            ));
        };
        let result: Result<Option<Secret>, async_imap::error::Error> = async {
            session.noop().await?;
            let uids = session.uid_search(format!("UID {next_uid}:*")).await?;
            // `n:*` names the highest message even when every uid is below n.
            let fresh: Vec<u32> = uids
                .into_iter()
                .filter(|uid| *uid >= next_uid && !self.checked.contains(uid))
                .collect::<BTreeSet<u32>>()
                .into_iter()
                .rev()
                .take(MAX_FETCH)
                .collect();
            if fresh.is_empty() {
                return Ok(None);
            }
            let set = fresh
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let fetches: Vec<_> = session
                .uid_fetch(set, "(UID BODY.PEEK[])")
                .await?
                .try_collect()
                .await?;
            let mut best: Option<(u32, String)> = None;
            for fetch in &fetches {
                let Some(uid) = fetch.uid else { continue };
                let Some(body) = fetch.body() else { continue };
                let text = String::from_utf8_lossy(body);
                if uid < next_uid || !addressed_to(&text, &self.account) {
                    continue;
                }
                if let Some(code) = extract_code(&text)
                    && best.as_ref().is_none_or(|(b, _)| uid > *b)
                {
                    best = Some((uid, code));
                }
            }
            self.checked.extend(fresh);
            Ok(best.map(|(_, code)| Secret::new(code)))
        }
        .await;
        result.map_err(|e| {
            CodeError::new(
                FailureReason::NetworkFailed,
                format!("mailbox {}: {e}", self.where_()),
            )
        })
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The `[UIDNEXT n]` of the selected folder (none: one past the highest uid there).
async fn uid_next(
    session: &mut ImapSession,
    folder: &str,
) -> Result<u32, async_imap::error::Error> {
    let selected = session.select(folder).await?;
    if let Some(n) = selected.uid_next {
        return Ok(n);
    }
    let uids = session.uid_search("UID 1:*").await?;
    Ok(uids.into_iter().max().map_or(1, |m| m.saturating_add(1)))
}

impl CodeSource for ImapCodes {
    fn start(&mut self) -> BoxFuture<'_, Result<(), CodeError>> {
        Box::pin(async move {
            let bound = self.timeout();
            let connected = timeout(bound, async {
                let mut session = self.connect().await?;
                let folder = self.mailbox.folder.clone();
                let n = uid_next(&mut session, &folder)
                    .await
                    .map_err(|e| self.network(&format!("cannot select folder {:?}", folder), e))?;
                Ok::<_, CodeError>((session, n))
            })
            .await
            .map_err(|_| {
                CodeError::new(
                    FailureReason::NetworkFailed,
                    format!(
                        "mailbox {}: no answer within {} s",
                        self.where_(),
                        bound.as_secs()
                    ),
                )
            })??;
            self.session = Some(connected.0);
            self.next_uid = connected.1;
            Ok(())
        })
    }

    fn code<'a>(
        &'a mut self,
        _ctx: &'a mut TaskContext,
    ) -> BoxFuture<'a, Result<Secret, CodeError>> {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match timeout(left, self.poll()).await {
                    Ok(Ok(Some(code))) => return Ok(code),
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => break,
                }
                if Instant::now() + POLL_INTERVAL > deadline {
                    break;
                }
                sleep(POLL_INTERVAL).await;
            }
            Err(CodeError::new(
                FailureReason::CodeNeverArrived,
                format!(
                    "no code for the account arrived in mailbox {} within {} s",
                    self.where_(),
                    self.timeout().as_secs()
                ),
            ))
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(mut session) = self.session.take() {
                let _ = timeout(Duration::from_secs(5), session.logout()).await;
            }
        })
    }
}
