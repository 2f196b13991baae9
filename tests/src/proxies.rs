//! Real egress proxies for tests: Debian's `microsocks` (SOCKS5) and `tinyproxy` (HTTP proxy
//! with CONNECT), each a child process listening on `127.0.0.1` on a free port.
//!
//! Telling proxies apart: Linux routes all of 127.0.0.0/8 to loopback, so each proxy binds its
//! outgoing connections to its own source address (127.0.0.2, 127.0.0.3, …) and the upstream
//! simulator, listening on 127.0.0.1, records that address as the request's peer
//! ([`upstream_sim::RecordedRequest::peer`], [`upstream_sim::FlowRequest::peer`]). Only
//! 127.0.0.1 is ever contacted.
//!
//! ```no_run
//! # use business2api_tests::proxies::ProxyProcess;
//! # use std::net::Ipv4Addr;
//! let socks = ProxyProcess::microsocks(Some(("user", "pass")), Ipv4Addr::new(127, 0, 0, 2))?;
//! let http = ProxyProcess::tinyproxy(Some(("user", "pass")), Ipv4Addr::new(127, 0, 0, 3))?;
//! assert!(socks.url().starts_with("socks5://user:pass@127.0.0.1:"));
//! assert!(http.url().starts_with("http://user:pass@127.0.0.1:"));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Starting, killing and restarting block the calling thread (for milliseconds: until the port
//! accepts connections, at most [`READY_TIMEOUT`]). The process is killed when the
//! [`ProxyProcess`] is dropped.
//!
//! tinyproxy 1.11 answers a request carrying no credentials with `407 Proxy Authentication
//! Required` but one carrying wrong credentials with `401 Unauthorized` (plain HTTP requests and
//! CONNECT alike); microsocks refuses wrong credentials during the SOCKS5 handshake (the client
//! sees a connect error).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a started proxy may take to accept TCP connections.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect, write and read timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(20);
/// Fresh ports tried when the proxy cannot listen on the one picked (another process took it).
const PORT_ATTEMPTS: usize = 5;
/// Attempts to listen on the same port again in [`ProxyProcess::restart`].
const RESTART_ATTEMPTS: usize = 5;
/// How much of the process's output an error quotes (its end).
const LOG_TAIL_BYTES: u64 = 4096;

/// Which proxy program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `microsocks`, SOCKS5.
    Microsocks,
    /// `tinyproxy`, HTTP proxy (absolute-form requests and CONNECT).
    Tinyproxy,
}

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Kind::Microsocks => "microsocks",
            Kind::Tinyproxy => "tinyproxy",
        }
    }

    /// Connects to `addr` and checks that it answers as this program: microsocks a SOCKS5
    /// greeting (version 5, whichever method it picks), tinyproxy an origin-form request (an
    /// HTTP error of its own; nothing is forwarded).
    fn probe(self, addr: SocketAddr) -> io::Result<()> {
        let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
        stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
        stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
        let (request, expected): (&[u8], &[u8]) = match self {
            // VER 5, one method: 0 (no authentication).
            Kind::Microsocks => (&[5, 1, 0], &[5]),
            Kind::Tinyproxy => (b"GET / HTTP/1.0\r\n\r\n", b"HTTP/"),
        };
        stream.write_all(request)?;
        let mut answer = vec![0u8; expected.len()];
        stream.read_exact(&mut answer)?;
        if answer == expected {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the port does not answer as {}", self.program()),
            ))
        }
    }

    fn scheme(self) -> &'static str {
        match self {
            Kind::Microsocks => "socks5",
            Kind::Tinyproxy => "http",
        }
    }
}

/// A proxy server process listening on `127.0.0.1:`[`port`](ProxyProcess::port), its outgoing
/// connections bound to [`bind_ip`](ProxyProcess::bind_ip). Killed on drop.
#[derive(Debug)]
pub struct ProxyProcess {
    kind: Kind,
    auth: Option<(String, String)>,
    bind: Ipv4Addr,
    port: u16,
    /// Holds tinyproxy's configuration, its log and pid file, and the process's output.
    dir: TempDir,
    child: Option<Child>,
}

impl ProxyProcess {
    /// Starts `microsocks` (SOCKS5) on `127.0.0.1` on a free port, requiring `auth`
    /// (user, password) when given, its outgoing connections bound to `bind`.
    pub fn microsocks(auth: Option<(&str, &str)>, bind: Ipv4Addr) -> io::Result<ProxyProcess> {
        ProxyProcess::start(Kind::Microsocks, auth, bind)
    }

    /// Starts `tinyproxy` (HTTP proxy; CONNECT to any port) on `127.0.0.1` on a free port,
    /// requiring Basic `auth` (user, password) when given, its outgoing connections bound to
    /// `bind`.
    pub fn tinyproxy(auth: Option<(&str, &str)>, bind: Ipv4Addr) -> io::Result<ProxyProcess> {
        ProxyProcess::start(Kind::Tinyproxy, auth, bind)
    }

    fn start(kind: Kind, auth: Option<(&str, &str)>, bind: Ipv4Addr) -> io::Result<ProxyProcess> {
        if let Some((user, pass)) = auth {
            check_credential(user)?;
            check_credential(pass)?;
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("b2a-{}-", kind.program()))
            .tempdir()?;
        let mut proxy = ProxyProcess {
            kind,
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
            bind,
            port: 0,
            dir,
            child: None,
        };
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            proxy.port = free_port()?;
            match proxy.spawn() {
                Ok(()) => return Ok(proxy),
                // A missing program or a bad setting does not get better with another port.
                Err(e) if e.kind() != io::ErrorKind::AddrInUse => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no port attempt was made")))
    }

    /// The port it listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy URL with its own credentials (if it requires any):
    /// `socks5://user:pass@127.0.0.1:PORT`, `http://user:pass@127.0.0.1:PORT`, or without
    /// `user:pass@` when it requires none.
    pub fn url(&self) -> String {
        match &self.auth {
            Some((user, pass)) => self.url_with(user, pass),
            None => format!("{}://127.0.0.1:{}", self.kind.scheme(), self.port),
        }
    }

    /// The proxy URL with the given credentials (percent-encoded), e.g. wrong ones.
    pub fn url_with(&self, user: &str, pass: &str) -> String {
        format!(
            "{}://{}:{}@127.0.0.1:{}",
            self.kind.scheme(),
            percent_encode(user),
            percent_encode(pass),
            self.port
        )
    }

    /// The source address of its outgoing connections (what the simulator records as peer).
    pub fn bind_ip(&self) -> Ipv4Addr {
        self.bind
    }

    /// Whether the process is running (it was not killed and has not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops it now (SIGKILL, then reaped): connections through it break and later connections
    /// to its port are refused. Does nothing when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only when it already exited; it is reaped either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same settings (killing it first if it is
    /// running). Fails if the port was taken by another process meanwhile.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        let mut last = None;
        for _ in 0..RESTART_ATTEMPTS {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() != io::ErrorKind::AddrInUse => return Err(e),
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no restart attempt was made")))
    }

    /// What the process wrote (its output, and tinyproxy's log file), for failure messages.
    pub fn log(&self) -> String {
        let mut text = read_lossy(&self.output_path());
        text.push_str(&read_lossy(&self.log_path()));
        text
    }

    /// Where the process's stdout and stderr go (appended to across restarts).
    fn output_path(&self) -> PathBuf {
        self.dir.path().join("output.log")
    }

    /// tinyproxy's `LogFile` (microsocks has none: it never exists).
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("tinyproxy.log")
    }

    /// Spawns the process on `self.port` and waits until the port accepts connections. An
    /// error of kind `AddrInUse` means it exited without listening (try another port).
    fn spawn(&mut self) -> io::Result<()> {
        let program = self.kind.program();
        let mut command = Command::new(program);
        match self.kind {
            Kind::Microsocks => {
                command
                    .args(["-i", "127.0.0.1", "-p"])
                    .arg(self.port.to_string())
                    .arg("-b")
                    .arg(self.bind.to_string());
                if let Some((user, pass)) = &self.auth {
                    command.arg("-u").arg(user).arg("-P").arg(pass);
                }
            }
            Kind::Tinyproxy => {
                let config = self.dir.path().join("tinyproxy.conf");
                std::fs::write(&config, self.tinyproxy_config())?;
                command.arg("-d").arg("-c").arg(&config);
            }
        }
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.output_path())?;
        let output_start = output.metadata()?.len();
        let log_start = std::fs::metadata(self.log_path()).map_or(0, |m| m.len());
        command
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        let child = command.spawn().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "`{program}` is not installed: install Debian's {program} \
                         (apt-get install {program}; .ci/run does)"
                    ),
                )
            } else {
                io::Error::new(e.kind(), format!("cannot start `{program}`: {e}"))
            }
        })?;
        self.child = Some(child);
        match self.wait_ready() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill();
                let mut message = format!("{program} on 127.0.0.1:{}: {e}", self.port);
                let tails = [
                    ("its output", tail_of(&self.output_path(), output_start)),
                    ("its log", tail_of(&self.log_path(), log_start)),
                ];
                for (what, tail) in tails {
                    if !tail.trim().is_empty() {
                        let _ = write!(message, "\n--- {what} ---\n{tail}");
                    }
                }
                Err(io::Error::new(e.kind(), message))
            }
        }
    }

    /// Polls until the port answers as this proxy does (the process still running). Answering
    /// at all is not enough: if another process took the port in the meantime, ours fails to
    /// bind and exits, but the port still accepts connections.
    fn wait_ready(&mut self) -> io::Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(io::Error::other("the process is gone"));
            };
            if let Some(status) = child.try_wait()? {
                // Exiting before listening almost always means the port was taken.
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("exited before listening ({status})"),
                ));
            }
            if self.kind.probe(addr).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "not answering as {} after {READY_TIMEOUT:?}",
                        self.kind.program()
                    ),
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// tinyproxy's configuration. No `ConnectPort` line: CONNECT to any port is allowed.
    fn tinyproxy_config(&self) -> String {
        let dir = self.dir.path();
        let mut config = format!(
            "Port {port}\n\
             Listen 127.0.0.1\n\
             Bind {bind}\n\
             Allow 127.0.0.1\n\
             MaxClients 100\n\
             Timeout 600\n\
             LogLevel Info\n\
             LogFile \"{log}\"\n\
             PidFile \"{pid}\"\n",
            port = self.port,
            bind = self.bind,
            log = self.log_path().display(),
            pid = dir.join("tinyproxy.pid").display(),
        );
        if let Some((user, pass)) = &self.auth {
            let _ = writeln!(config, "BasicAuth {user} {pass}");
        }
        config
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port free on 127.0.0.1 just now (bound to port 0, read, released).
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Credentials go on a command line and into tinyproxy's configuration unquoted: no whitespace,
/// quotes or control characters, and not empty.
fn check_credential(value: &str) -> io::Result<()> {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\'' || c == '#')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unusable proxy credential {value:?} (empty, whitespace, quotes or '#')"),
        ));
    }
    Ok(())
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for URL userinfo).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The end (at most [`LOG_TAIL_BYTES`]) of what `path` holds after byte `from`.
fn tail_of(path: &Path, from: u64) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(
            from.max(len.saturating_sub(LOG_TAIL_BYTES)),
        ))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_reported_as_addr_in_use_with_the_output() {
        // Listening, never accepting: the port takes connections but does not answer.
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        for kind in [Kind::Microsocks, Kind::Tinyproxy] {
            let mut proxy = ProxyProcess {
                kind,
                auth: None,
                bind: Ipv4Addr::new(127, 0, 0, 7),
                port,
                dir: tempfile::tempdir().unwrap(),
                child: None,
            };
            let error = proxy.spawn().unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{error}");
            let message = error.to_string();
            assert!(message.contains("exited before listening"), "{message}");
            assert!(message.contains("---"), "quotes its output: {message}");
            assert!(!proxy.is_running());
        }
    }

    #[test]
    fn userinfo_is_percent_encoded() {
        assert_eq!(percent_encode("user-1.a_b~"), "user-1.a_b~");
        assert_eq!(percent_encode("p@ss:w/rd%"), "p%40ss%3Aw%2Frd%25");
    }

    #[test]
    fn credentials_that_cannot_be_passed_unquoted_are_refused() {
        assert!(check_credential("user").is_ok());
        for bad in ["", "a b", "a\"b", "a#b", "a\nb"] {
            assert_eq!(
                check_credential(bad).map_err(|e| e.kind()),
                Err(io::ErrorKind::InvalidInput)
            );
        }
    }
}
