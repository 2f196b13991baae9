//! [`Relay`]: a proxy without credentials on loopback in front of an upstream proxy with
//! credentials, so that Chromium (whose `--proxy-server` cannot carry a user name and password)
//! can go through an account's authenticating proxy.
//!
//! - A SOCKS upstream (`socks5://`, `socks5h://`) gets a SOCKS5 relay: no authentication towards
//!   the browser, `CONNECT` for IPv4, IPv6 and domain addresses (passed on as the browser sent
//!   them), user name and password towards the upstream (RFC 1929).
//! - An HTTP upstream (`http://`, or `https://`: TLS to the proxy, verified by the platform) gets
//!   an HTTP proxy relay: `CONNECT host:port` is sent on with `Proxy-Authorization: Basic`; a
//!   plain absolute-form request (`GET http://host/path`) is sent on with that header (the
//!   client's own removed) and `Connection: close`, one request per connection, so that every
//!   request the upstream sees carries the credentials.
//!
//! At most [`MAX_CONNECTIONS`] client connections at once; the handshake of each is bounded by
//! [`HANDSHAKE_TIMEOUT`] and request heads by [`MAX_HEAD_BYTES`]. The credentials are never
//! logged and never part of an error or of `Debug`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

/// The most client connections a relay serves at once (more wait to be accepted).
pub const MAX_CONNECTIONS: usize = 256;
/// The bound on a connection's handshake (the client's request, the upstream's answer).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest HTTP request or response head the relay reads.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// A loopback proxy without credentials in front of an upstream proxy with credentials. It
/// stops when dropped: the port is closed and every connection through it is dropped.
pub struct Relay {
    addr: SocketAddr,
    kind: Kind,
    task: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Socks,
    Http,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("addr", &self.addr)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The listener task owns the listener and the set of connection tasks: aborting it
        // drops both, which aborts every connection.
        self.task.abort();
    }
}

impl Relay {
    /// Binds 127.0.0.1:0 and serves until dropped. `upstream`: the task's proxy URL with
    /// credentials (`socks5`, `socks5h`, `http` or `https`; user and password percent-encoded
    /// as in any URL). An error never contains the URL or its credentials.
    pub async fn start(upstream: &str) -> io::Result<Relay> {
        let upstream = Upstream::parse(upstream)?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let kind = upstream.kind;
        let task = tokio::spawn(serve(listener, Arc::new(upstream)));
        Ok(Relay { addr, kind, task })
    }

    /// What the browser gets: `socks5://127.0.0.1:PORT` for a SOCKS upstream,
    /// `http://127.0.0.1:PORT` for an HTTP(S) upstream.
    pub fn browser_proxy(&self) -> String {
        match self.kind {
            Kind::Socks => format!("socks5://{}", self.addr),
            Kind::Http => format!("http://{}", self.addr),
        }
    }

    /// The loopback address the relay listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The upstream proxy (deliberately without `Debug`: it holds the credentials).
struct Upstream {
    kind: Kind,
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    user: Vec<u8>,
    password: Vec<u8>,
}

/// A connection to the upstream proxy (TCP, or TLS over TCP).
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

fn invalid_input(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_owned())
}

fn invalid_data(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

impl Upstream {
    fn parse(proxy: &str) -> io::Result<Upstream> {
        let url = url::Url::parse(proxy)
            .map_err(|_| invalid_input("the account's proxy is not a valid URL"))?;
        let (kind, tls, default_port) = match url.scheme() {
            "socks5" | "socks5h" => (Kind::Socks, false, 1080),
            "http" => (Kind::Http, false, 80),
            "https" => (Kind::Http, true, 443),
            other => {
                return Err(invalid_input(&format!(
                    "the proxy scheme {other:?} is not supported for re-login \
                     (socks5, socks5h, http or https)"
                )));
            }
        };
        let host = match url.host() {
            Some(url::Host::Domain(domain)) => domain.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(invalid_input("the account's proxy URL has no host")),
        };
        let port = url.port().unwrap_or(default_port);
        let user = percent_decode(url.username());
        let password = percent_decode(url.password().unwrap_or(""));
        if kind == Kind::Socks && (user.len() > 255 || password.len() > 255) {
            return Err(invalid_input(
                "a SOCKS5 proxy's user name and password are at most 255 bytes each",
            ));
        }
        let tls = if tls {
            let config = crate::client::tls_config().map_err(|e| io::Error::other(e.0))?;
            let name = ServerName::try_from(host.clone())
                .map_err(|_| invalid_input("the proxy's host is not a valid TLS server name"))?;
            Some((tokio_rustls::TlsConnector::from(config), name))
        } else {
            None
        };
        Ok(Upstream {
            kind,
            host,
            port,
            tls,
            user,
            password,
        })
    }

    fn has_credentials(&self) -> bool {
        !self.user.is_empty() || !self.password.is_empty()
    }

    /// A new connection to the upstream proxy, within [`HANDSHAKE_TIMEOUT`].
    async fn dial(&self) -> io::Result<Box<dyn Stream>> {
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
            tcp.set_nodelay(true)?;
            Ok::<Box<dyn Stream>, io::Error>(match &self.tls {
                None => Box::new(tcp),
                Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
            })
        };
        timeout(HANDSHAKE_TIMEOUT, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the upstream proxy timed out"))?
    }

    /// `Basic base64(user:password)`.
    fn basic_authorization(&self) -> String {
        let mut pair = self.user.clone();
        pair.push(b':');
        pair.extend_from_slice(&self.password);
        format!("Basic {}", base64(&pair))
    }
}

/// `%XX` decoded (an invalid escape is kept as it is).
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            // Two hex digits: at most 0xFF.
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(u8::MAX));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Accepts client connections until the task is aborted.
async fn serve(listener: TcpListener, upstream: Arc<Upstream>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            return;
        };
        let client = loop {
            match listener.accept().await {
                Ok((client, _)) => break client,
                Err(e) => {
                    tracing::warn!(error = %e, "proxy relay: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        while connections.try_join_next().is_some() {}
        let upstream = Arc::clone(&upstream);
        connections.spawn(async move {
            let _permit = permit;
            let _ = client.set_nodelay(true);
            let served = match upstream.kind {
                Kind::Socks => serve_socks(client, &upstream).await,
                Kind::Http => serve_http(client, &upstream).await,
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "proxy relay: a connection ended with an error");
            }
        });
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the proxy handshake timed out")
}

// --- SOCKS5 -------------------------------------------------------------------------------------

const SOCKS_VERSION: u8 = 5;
const REPLY_GENERAL_FAILURE: u8 = 1;
const REPLY_NOT_ALLOWED: u8 = 2;
const REPLY_COMMAND_NOT_SUPPORTED: u8 = 7;
const REPLY_ADDRESS_NOT_SUPPORTED: u8 = 8;

async fn serve_socks(mut client: TcpStream, upstream: &Upstream) -> io::Result<()> {
    let handshake = timeout(HANDSHAKE_TIMEOUT, socks_handshake(&mut client, upstream))
        .await
        .map_err(|_| timed_out())??;
    if let Some(mut upstream) = handshake {
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    }
    Ok(())
}

/// A SOCKS5 reply with a zero IPv4 bound address.
async fn socks_reply(client: &mut TcpStream, reply: u8) -> io::Result<()> {
    client
        .write_all(&[SOCKS_VERSION, reply, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
}

/// The client's greeting and request, the upstream's authentication and answer. `None`: the
/// client got a failure reply and the connection ends.
async fn socks_handshake(
    client: &mut TcpStream,
    upstream: &Upstream,
) -> io::Result<Option<Box<dyn Stream>>> {
    let mut greeting = [0u8; 2];
    client.read_exact(&mut greeting).await?;
    if greeting[0] != SOCKS_VERSION {
        return Err(invalid_data("the client does not speak SOCKS5"));
    }
    let mut methods = vec![0u8; usize::from(greeting[1])];
    client.read_exact(&mut methods).await?;
    if !methods.contains(&0) {
        client.write_all(&[SOCKS_VERSION, 0xFF]).await?;
        return Ok(None);
    }
    client.write_all(&[SOCKS_VERSION, 0]).await?;

    let mut request = vec![0u8; 4];
    client.read_exact(&mut request).await?;
    if request[0] != SOCKS_VERSION {
        return Err(invalid_data("the client does not speak SOCKS5"));
    }
    if !read_socks_address(client, &mut request).await? {
        socks_reply(client, REPLY_ADDRESS_NOT_SUPPORTED).await?;
        return Ok(None);
    }
    if request[1] != 1 {
        socks_reply(client, REPLY_COMMAND_NOT_SUPPORTED).await?;
        return Ok(None);
    }
    request[2] = 0;

    let mut proxy = match upstream.dial().await {
        Ok(proxy) => proxy,
        Err(e) => {
            tracing::warn!(error = %e, "proxy relay: cannot reach the upstream SOCKS proxy");
            socks_reply(client, REPLY_GENERAL_FAILURE).await?;
            return Ok(None);
        }
    };
    match socks_login(&mut proxy, upstream).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("proxy relay: the upstream SOCKS proxy refused the credentials");
            socks_reply(client, REPLY_NOT_ALLOWED).await?;
            return Ok(None);
        }
        Err(e) => {
            socks_reply(client, REPLY_GENERAL_FAILURE).await?;
            return Err(e);
        }
    }
    proxy.write_all(&request).await?;

    let mut reply = vec![0u8; 4];
    proxy.read_exact(&mut reply).await?;
    if reply[0] != SOCKS_VERSION {
        socks_reply(client, REPLY_GENERAL_FAILURE).await?;
        return Err(invalid_data("the upstream proxy does not speak SOCKS5"));
    }
    if reply[1] != 0 {
        socks_reply(client, reply[1]).await?;
        return Ok(None);
    }
    if !read_socks_address(&mut proxy, &mut reply).await? {
        socks_reply(client, REPLY_GENERAL_FAILURE).await?;
        return Err(invalid_data(
            "the upstream proxy's reply has an unknown address",
        ));
    }
    client.write_all(&reply).await?;
    Ok(Some(proxy))
}

/// Reads the address and port that follow a SOCKS5 request's or reply's first four bytes
/// (already in `message`, whose byte 3 is the address type) onto `message`. `false`: an
/// unknown address type (nothing more read).
async fn read_socks_address<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    message: &mut Vec<u8>,
) -> io::Result<bool> {
    let address_len = match message[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await?;
            message.push(len[0]);
            usize::from(len[0])
        }
        _ => return Ok(false),
    };
    let start = message.len();
    message.resize(start + address_len + 2, 0);
    stream.read_exact(&mut message[start..]).await?;
    Ok(true)
}

/// The greeting to the upstream and, with credentials, RFC 1929 authentication. `false`: the
/// upstream refused the method or the credentials.
async fn socks_login(proxy: &mut Box<dyn Stream>, upstream: &Upstream) -> io::Result<bool> {
    let method = if upstream.has_credentials() { 2 } else { 0 };
    proxy.write_all(&[SOCKS_VERSION, 1, method]).await?;
    let mut answer = [0u8; 2];
    proxy.read_exact(&mut answer).await?;
    if answer[0] != SOCKS_VERSION {
        return Err(invalid_data("the upstream proxy does not speak SOCKS5"));
    }
    if answer[1] != method {
        return Ok(false);
    }
    if method == 0 {
        return Ok(true);
    }
    // Both are at most 255 bytes (checked by `Upstream::parse`).
    let mut auth = Vec::with_capacity(3 + upstream.user.len() + upstream.password.len());
    auth.push(1);
    auth.push(u8::try_from(upstream.user.len()).unwrap_or(u8::MAX));
    auth.extend_from_slice(&upstream.user);
    auth.push(u8::try_from(upstream.password.len()).unwrap_or(u8::MAX));
    auth.extend_from_slice(&upstream.password);
    proxy.write_all(&auth).await?;
    proxy.read_exact(&mut answer).await?;
    Ok(answer[1] == 0)
}

// --- HTTP ---------------------------------------------------------------------------------------

/// A head read from a connection: the head up to and with its blank line, and what was read
/// after it.
struct Head {
    head: Vec<u8>,
    rest: Vec<u8>,
}

impl Head {
    /// The first line (request or status line).
    fn first_line(&self) -> &str {
        let end = self
            .head
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(self.head.len());
        std::str::from_utf8(&self.head[..end]).unwrap_or("")
    }

    /// The header lines (without their line ends).
    fn header_lines(&self) -> impl Iterator<Item = &[u8]> {
        let body = self.head.strip_suffix(b"\r\n\r\n").unwrap_or(&self.head);
        let first = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(body.len(), |p| p + 2);
        body[first.min(body.len())..]
            .split(|b| *b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.is_empty())
    }
}

/// Reads a head (up to `\r\n\r\n`) of at most [`MAX_HEAD_BYTES`].
async fn read_head<S: AsyncRead + Unpin + ?Sized>(stream: &mut S) -> io::Result<Head> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed before the end of the head",
            ));
        }
        let searched = buffer.len().saturating_sub(3);
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(p) = buffer[searched..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = searched + p + 4;
            let rest = buffer.split_off(end);
            return Ok(Head { head: buffer, rest });
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(invalid_data("the head is too large"));
        }
    }
}

async fn respond(client: &mut TcpStream, status: &str) -> io::Result<()> {
    let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

/// The status code of a response's status line.
fn status_code(status_line: &str) -> Option<u16> {
    let mut parts = status_line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

fn header_is(line: &[u8], name: &str) -> bool {
    line.iter().position(|b| *b == b':').is_some_and(|colon| {
        line[..colon]
            .trim_ascii()
            .eq_ignore_ascii_case(name.as_bytes())
    })
}

async fn serve_http(mut client: TcpStream, upstream: &Upstream) -> io::Result<()> {
    let request = match timeout(HANDSHAKE_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => {
            if e.kind() == io::ErrorKind::InvalidData {
                respond(&mut client, "431 Request Header Fields Too Large").await?;
            }
            return Err(e);
        }
        Err(_) => {
            respond(&mut client, "408 Request Timeout").await?;
            return Err(timed_out());
        }
    };
    let line = request.first_line().to_owned();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        respond(&mut client, "400 Bad Request").await?;
        return Err(invalid_data("a malformed request line"));
    };
    if target.is_empty()
        || target.bytes().any(|b| b.is_ascii_control())
        || !version.starts_with("HTTP/")
    {
        respond(&mut client, "400 Bad Request").await?;
        return Err(invalid_data("a malformed request line"));
    }
    if method.eq_ignore_ascii_case("CONNECT") {
        http_connect(client, upstream, target, request.rest).await
    } else if target
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
    {
        http_forward(client, upstream, &request).await
    } else {
        respond(&mut client, "400 Bad Request").await?;
        Err(invalid_data("not a proxy request"))
    }
}

/// `CONNECT host:port`: sent on with the credentials; on a 2xx answer the tunnel is open.
async fn http_connect(
    mut client: TcpStream,
    upstream: &Upstream,
    target: &str,
    early: Vec<u8>,
) -> io::Result<()> {
    let mut proxy = match upstream.dial().await {
        Ok(proxy) => proxy,
        Err(e) => {
            tracing::warn!(error = %e, "proxy relay: cannot reach the upstream HTTP proxy");
            respond(&mut client, "502 Bad Gateway").await?;
            return Ok(());
        }
    };
    let connect = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {}\r\n\r\n",
        upstream.basic_authorization()
    );
    proxy.write_all(connect.as_bytes()).await?;
    let answer = match timeout(HANDSHAKE_TIMEOUT, read_head(&mut proxy)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            respond(&mut client, "502 Bad Gateway").await?;
            return Err(e);
        }
        Err(_) => {
            respond(&mut client, "504 Gateway Timeout").await?;
            return Err(timed_out());
        }
    };
    let status_line = answer.first_line();
    match status_code(status_line) {
        Some(200..=299) => {
            client.write_all(&answer.head).await?;
            client.write_all(&answer.rest).await?;
            proxy.write_all(&early).await?;
            tokio::io::copy_bidirectional(&mut client, &mut proxy).await?;
            Ok(())
        }
        Some(code @ (401 | 407)) => {
            tracing::warn!(
                status = code,
                "proxy relay: the upstream HTTP proxy refused the credentials"
            );
            // The browser has no credentials to offer: not an authentication challenge for it.
            respond(&mut client, "502 Bad Gateway").await
        }
        Some(_) => {
            let status = status_line
                .split_once(' ')
                .map_or("502 Bad Gateway", |s| s.1);
            respond(&mut client, status).await
        }
        None => {
            respond(&mut client, "502 Bad Gateway").await?;
            Err(invalid_data("the upstream proxy's answer is not HTTP"))
        }
    }
}

/// An absolute-form request: its head is sent on with the relay's `Proxy-Authorization` and
/// `Connection: close` (so that the next request comes on a new connection, with the
/// credentials again), then bytes are copied both ways.
async fn http_forward(
    mut client: TcpStream,
    upstream: &Upstream,
    request: &Head,
) -> io::Result<()> {
    const HOP_BY_HOP: [&str; 4] = [
        "proxy-authorization",
        "proxy-connection",
        "connection",
        "keep-alive",
    ];
    let mut head = Vec::with_capacity(request.head.len() + 128);
    head.extend_from_slice(request.first_line().as_bytes());
    head.extend_from_slice(b"\r\n");
    for line in request.header_lines() {
        if HOP_BY_HOP.iter().any(|name| header_is(line, name)) {
            continue;
        }
        head.extend_from_slice(line);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Proxy-Authorization: ");
    head.extend_from_slice(upstream.basic_authorization().as_bytes());
    head.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    let mut proxy = match upstream.dial().await {
        Ok(proxy) => proxy,
        Err(e) => {
            tracing::warn!(error = %e, "proxy relay: cannot reach the upstream HTTP proxy");
            respond(&mut client, "502 Bad Gateway").await?;
            return Ok(());
        }
    };
    proxy.write_all(&head).await?;
    proxy.write_all(&request.rest).await?;
    tokio::io::copy_bidirectional(&mut client, &mut proxy).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const USER: &str = "relay-user";
    /// What microsocks is given; in a URL: `p%40ss%3Aw%25rd-secret`.
    const SOCKS_PASSWORD: &str = "p@ss:w%rd-secret";
    const SOCKS_PASSWORD_IN_URL: &str = "p%40ss%3Aw%25rd-secret";
    /// tinyproxy's configuration takes only a plain word.
    const HTTP_PASSWORD: &str = "s3cret-pw";

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn wait_for_port(port: u16) {
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nothing listens on 127.0.0.1:{port}");
    }

    /// A proxy process, killed on drop.
    struct Proxy {
        child: std::process::Child,
        port: u16,
        _dir: Option<tempfile::TempDir>,
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Starts `command` (listening on `port`) and waits until the port accepts.
    async fn start_proxy(
        command: &mut std::process::Command,
        port: u16,
        dir: Option<tempfile::TempDir>,
    ) -> Proxy {
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let proxy = Proxy {
            child,
            port,
            _dir: dir,
        };
        wait_for_port(port).await;
        proxy
    }

    async fn microsocks(user: &str, password: &str) -> Proxy {
        let port = free_port();
        let mut command = std::process::Command::new("microsocks");
        command
            .args(["-u", user, "-P", password, "-i", "127.0.0.1", "-p"])
            .arg(port.to_string());
        start_proxy(&mut command, port, None).await
    }

    async fn tinyproxy(user: &str, password: &str) -> Proxy {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nBasicAuth {user} {password}\n\
                 LogFile \"{log}\"\nPidFile \"{pid}\"\n",
                log = dir.path().join("tinyproxy.log").display(),
                pid = dir.path().join("tinyproxy.pid").display(),
            ),
        )
        .unwrap();
        let mut command = std::process::Command::new("tinyproxy");
        command.arg("-d").arg("-c").arg(&config);
        start_proxy(&mut command, port, Some(dir)).await
    }

    /// A target answering `ok` to anything; counts the requests that reached it.
    struct Target {
        addr: SocketAddr,
        hits: Arc<AtomicUsize>,
        _task: AbortOnDrop,
    }

    struct AbortOnDrop(JoinHandle<()>);

    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    async fn target() -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&hits);
        // `localhost` may resolve to ::1 first where the host has IPv6: listen there too.
        let v6 = TcpListener::bind(("::1", addr.port())).await.ok();
        let task = tokio::spawn(async move {
            loop {
                let accepted = match &v6 {
                    Some(v6) => tokio::select! {
                        a = listener.accept() => a,
                        a = v6.accept() => a,
                    },
                    None => listener.accept().await,
                };
                let Ok((mut stream, _)) = accepted else {
                    return;
                };
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    if read_head(&mut stream).await.is_ok() {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                            )
                            .await;
                        let _ = stream.shutdown().await;
                    }
                });
            }
        });
        Target {
            addr,
            hits,
            _task: AbortOnDrop(task),
        }
    }

    fn client(proxy: &str) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(proxy).unwrap())
            // The relay serves one request per connection: a pooled connection could be
            // reused just as it closes (a browser retries then; this client would fail).
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    async fn get(client: &reqwest::Client, url: &str) -> reqwest::Result<(u16, String)> {
        let response = client.get(url).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// A raw `CONNECT` through an HTTP proxy, then a GET in the tunnel: the status line of the
    /// proxy's answer and what came through the tunnel.
    async fn raw_connect(proxy: SocketAddr, target: SocketAddr) -> (String, String) {
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        stream
            .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let answer = read_head(&mut stream).await.unwrap();
        let status = answer.first_line().to_owned();
        if status_code(&status).is_some_and(|c| (200..300).contains(&c)) {
            stream
                .write_all(b"GET /tunnel HTTP/1.1\r\nHost: target\r\n\r\n")
                .await
                .unwrap();
        }
        let mut body = answer.rest;
        let _ = timeout(Duration::from_secs(5), stream.read_to_end(&mut body)).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_socks_relay_reaches_the_target_through_an_authenticating_socks_proxy() {
        let upstream = microsocks(USER, SOCKS_PASSWORD).await;
        let target = target().await;
        for scheme in ["socks5", "socks5h"] {
            let relay = Relay::start(&format!(
                "{scheme}://{USER}:{SOCKS_PASSWORD_IN_URL}@127.0.0.1:{}",
                upstream.port
            ))
            .await
            .unwrap();
            let browser = relay.browser_proxy();
            assert_eq!(browser, format!("socks5://{}", relay.local_addr()));
            assert!(relay.local_addr().ip().is_loopback());
            let port = relay.local_addr().port();
            // An IPv4 address, then a domain name (resolved by the upstream).
            let via_ip = client(&format!("socks5h://127.0.0.1:{port}"));
            let (status, body) = get(&via_ip, &format!("http://{}/a", target.addr))
                .await
                .unwrap();
            assert_eq!((status, body.as_str()), (200, "ok"));
            let (status, body) = get(
                &via_ip,
                &format!("http://localhost:{}/b", target.addr.port()),
            )
            .await
            .unwrap();
            assert_eq!((status, body.as_str()), (200, "ok"));
        }
        assert_eq!(target.hits.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn an_http_relay_forwards_plain_requests_and_tunnels_through_an_authenticating_http_proxy()
     {
        let upstream = tinyproxy(USER, HTTP_PASSWORD).await;
        let target = target().await;
        let relay = Relay::start(&format!(
            "http://{USER}:{HTTP_PASSWORD}@127.0.0.1:{}",
            upstream.port
        ))
        .await
        .unwrap();
        assert_eq!(
            relay.browser_proxy(),
            format!("http://{}", relay.local_addr())
        );
        let client = client(&relay.browser_proxy());
        // Two requests: the second on a new connection, with the credentials again.
        for path in ["/one", "/two"] {
            let (status, body) = get(&client, &format!("http://{}{path}", target.addr))
                .await
                .unwrap();
            assert_eq!((status, body.as_str()), (200, "ok"));
        }
        // A client's own Proxy-Authorization is replaced, not passed on.
        let response = client
            .get(format!("http://{}/three", target.addr))
            .header("proxy-authorization", "Basic d3Jvbmc6d3Jvbmc=")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);

        let (status, body) = raw_connect(relay.local_addr(), target.addr).await;
        assert!(
            status.starts_with("HTTP/1.") && status.contains(" 200"),
            "{status}"
        );
        assert!(body.ends_with("\r\n\r\nok"), "{body}");
        assert_eq!(target.hits.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn wrong_upstream_credentials_fail_and_never_reach_the_target() {
        let target = target().await;

        let socks = microsocks(USER, SOCKS_PASSWORD).await;
        let relay = Relay::start(&format!(
            "socks5h://{USER}:wrong-secret@127.0.0.1:{}",
            socks.port
        ))
        .await
        .unwrap();
        let socks_client = client(&format!("socks5h://{}", relay.local_addr()));
        let error = get(&socks_client, &format!("http://{}/", target.addr))
            .await
            .unwrap_err();
        assert!(!format!("{error:?}").contains("wrong-secret"));
        // The relay's reply to the client: "not allowed" (2), then the connection ends.
        let mut raw = TcpStream::connect(relay.local_addr()).await.unwrap();
        raw.write_all(&[5, 1, 0]).await.unwrap();
        let mut method = [0u8; 2];
        raw.read_exact(&mut method).await.unwrap();
        assert_eq!(method, [5, 0]);
        let mut request = vec![5, 1, 0, 1, 127, 0, 0, 1];
        request.extend_from_slice(&target.addr.port().to_be_bytes());
        raw.write_all(&request).await.unwrap();
        let mut reply = Vec::new();
        raw.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply[..2], [5, REPLY_NOT_ALLOWED]);

        let http = tinyproxy(USER, HTTP_PASSWORD).await;
        let relay = Relay::start(&format!(
            "http://{USER}:wrong-secret@127.0.0.1:{}",
            http.port
        ))
        .await
        .unwrap();
        let http_client = client(&relay.browser_proxy());
        let (status, body) = get(&http_client, &format!("http://{}/", target.addr))
            .await
            .unwrap();
        assert!(status == 401 || status == 407, "{status}");
        assert!(!body.contains("wrong-secret"));
        let (status, _) = raw_connect(relay.local_addr(), target.addr).await;
        assert!(status.contains(" 502 "), "{status}");

        assert_eq!(target.hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn neither_debug_nor_errors_show_the_credentials() {
        let relay = Relay::start("socks5://user:pw-secret@127.0.0.1:1")
            .await
            .unwrap();
        let debug = format!("{relay:?}");
        assert!(
            debug.contains("Relay") && !debug.contains("pw-secret"),
            "{debug}"
        );

        // An upstream that refuses connections: the client gets a failure, nothing leaks.
        let client = client(&format!("socks5h://{}", relay.local_addr()));
        let error = get(&client, "http://127.0.0.1:9/").await.unwrap_err();
        assert!(!format!("{error:?}").contains("pw-secret"));

        for bad in [
            "ftp://user:pw-secret@127.0.0.1:21",
            "pw-secret",
            "http://user:pw-secret@",
            &format!("socks5://user:{}@127.0.0.1:1080", "pw-secret".repeat(30)),
        ] {
            let error = Relay::start(bad).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
            assert!(
                !format!("{error} {error:?}").contains("pw-secret"),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn dropping_the_relay_closes_its_port_and_its_connections() {
        let upstream = microsocks(USER, SOCKS_PASSWORD).await;
        let relay = Relay::start(&format!(
            "socks5://{USER}:{SOCKS_PASSWORD_IN_URL}@127.0.0.1:{}",
            upstream.port
        ))
        .await
        .unwrap();
        let addr = relay.local_addr();
        // A connection in its handshake (the greeting answered, no request yet).
        let mut open = TcpStream::connect(addr).await.unwrap();
        open.write_all(&[5, 1, 0]).await.unwrap();
        let mut method = [0u8; 2];
        open.read_exact(&mut method).await.unwrap();
        drop(relay);

        let mut closed = false;
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(closed, "the relay still accepts connections");
        let mut rest = Vec::new();
        let read = timeout(Duration::from_secs(2), open.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(read.is_err() || read.is_ok_and(|n| n == 0));
    }

    #[test]
    fn credentials_are_percent_decoded_and_base64_encoded() {
        assert_eq!(percent_decode("p%40ss%3Aw%25rd"), b"p@ss:w%rd");
        assert_eq!(percent_decode("a%zz%4"), b"a%zz%4");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn heads_are_parsed() {
        let head = Head {
            head: b"GET http://x/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: a\r\n\r\n".to_vec(),
            rest: vec![],
        };
        assert_eq!(head.first_line(), "GET http://x/ HTTP/1.1");
        let lines: Vec<&[u8]> = head.header_lines().collect();
        assert_eq!(lines, [&b"Host: x"[..], &b"Proxy-Authorization: a"[..]]);
        assert!(header_is(lines[1], "proxy-authorization"));
        assert!(!header_is(lines[0], "proxy-authorization"));
        assert_eq!(
            status_code("HTTP/1.1 407 Proxy Authentication Required"),
            Some(407)
        );
        assert_eq!(status_code("SSH-2.0"), None);
    }
}
