//! The sing-box process that carries the tunnelled nodes (vmess, vless, trojan, shadowsocks,
//! hysteria2) of [`super::links`].
//!
//! The gateway never speaks those protocols itself. When the operator names a sing-box
//! executable, [`SingBox::start`] writes one sing-box configuration for all the tunnelled
//! nodes and runs `sing-box run -c <work_dir>/singbox.json`. Every node gets its own SOCKS
//! inbound on `127.0.0.1:<port>` (tag `in-<id>`), its outbound (tag `out-<id>`) and a route
//! rule from the one to the other, so the HTTP client reaches a node through the plain proxy
//! `socks5h://127.0.0.1:<port>`.
//!
//! The configuration holds the nodes' secrets: it is written with mode 0600, and nothing from
//! it is logged. The process's stderr is kept as a bounded tail (2 KB) for the log line of an
//! unexpected exit, with every secret of the configuration blanked out first.
//!
//! The first start waits until every inbound port accepts a connection (up to 10 s) and fails
//! with the exit status when the process dies first. After that a supervisor task restarts
//! the process whenever it exits, after a backoff of 1 s doubling up to 60 s (back to 1 s once
//! a run has lasted 60 s). [`SingBox::stop`] ends it for good: SIGTERM, then SIGKILL after 3 s.
//! Dropping the [`SingBox`] stops it too (best effort; the child is killed on drop).

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::links::TunnelNode;
use crate::config::ProxyUrl;
use crate::telemetry::printable;

/// The configuration file's name inside [`SingBoxConfig::work_dir`].
pub const CONFIG_FILE: &str = "singbox.json";

/// How long the first start waits for every inbound port to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const READY_POLL: Duration = Duration::from_millis(50);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a stopped process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// Most stderr bytes logged after an exit.
const STDERR_TAIL: usize = 2048;
/// Stderr bytes kept (more than logged, so that a secret cut at the start of the buffer is
/// cut away with it rather than shown in part).
const STDERR_KEPT: usize = 2 * STDERR_TAIL;
/// Secrets shorter than this are not blanked out of stderr (it would blank ordinary text).
const MIN_SECRET_LEN: usize = 4;
/// How long to wait for the rest of stderr once the process has exited.
const STDERR_FLUSH: Duration = Duration::from_millis(500);

/// Where and how to run sing-box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingBoxConfig {
    /// The sing-box executable: a path, or a bare name looked up on `PATH`.
    pub executable: PathBuf,
    /// Created when missing; the configuration is written here as [`CONFIG_FILE`] (mode 0600,
    /// it holds secrets) and the process runs here.
    pub work_dir: PathBuf,
    /// The first node's local SOCKS port, the next node's the next one, and so on; 0 picks
    /// free ports (by binding `127.0.0.1:0` and releasing them).
    pub first_port: u16,
}

/// A running sing-box and its supervisor (see the module documentation).
pub struct SingBox {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    config_path: PathBuf,
}

#[derive(Default)]
struct Shared {
    restarts: AtomicU32,
    running: AtomicBool,
}

impl fmt::Debug for SingBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingBox")
            .field("config_path", &self.config_path)
            .field("running", &self.running())
            .field("restarts", &self.restarts())
            .finish()
    }
}

impl SingBox {
    /// Writes the configuration for `nodes`, starts sing-box and waits until each node's local
    /// port accepts connections. Returns, in node order, each node's [`TunnelNode::id`] with
    /// its local proxy `socks5h://127.0.0.1:<port>` (a node repeated in `nodes` is run once
    /// and listed once).
    ///
    /// `Err` when `nodes` is empty, the configuration cannot be written, the executable cannot
    /// be started, it exits during start (the error gives the exit status and the end of its
    /// stderr, secrets blanked out) or the ports are not all open after 10 s.
    pub async fn start(
        config: SingBoxConfig,
        nodes: &[TunnelNode],
    ) -> io::Result<(SingBox, Vec<(String, ProxyUrl)>)> {
        let mut seen = HashSet::new();
        let nodes: Vec<(String, &TunnelNode)> = nodes
            .iter()
            .map(|n| (n.id(), n))
            .filter(|(id, _)| seen.insert(id.clone()))
            .collect();
        if nodes.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "sing-box: no tunnelled nodes to run",
            ));
        }
        let ports = pick_ports(config.first_port, nodes.len())?;
        let document = config_document(&nodes, &ports);
        let secrets = secrets_of(&document);

        // The process runs in the work directory: relative paths would resolve from there.
        let work_dir = std::path::absolute(&config.work_dir)?;
        let executable =
            if config.executable.is_relative() && config.executable.components().count() > 1 {
                std::path::absolute(&config.executable)?
            } else {
                // A bare name is looked up on PATH.
                config.executable
            };
        tokio::fs::create_dir_all(&work_dir)
            .await
            .map_err(|e| context(e, "cannot create the sing-box work directory"))?;
        let config_path = work_dir.join(CONFIG_FILE);
        let bytes = serde_json::to_vec_pretty(&document).map_err(io::Error::other)?;
        write_private(&config_path, &bytes)
            .await
            .map_err(|e| context(e, "cannot write the sing-box configuration"))?;

        let launcher = Launcher {
            executable,
            work_dir,
            config_path: config_path.clone(),
            secrets,
        };
        let mut process = launcher.spawn().await.map_err(|e| {
            context(
                e,
                &format!("cannot start sing-box ({})", launcher.executable.display()),
            )
        })?;
        if let Err(e) = wait_ready(&mut process, &ports, &launcher).await {
            let _ = process.child.kill().await;
            return Err(e);
        }
        tracing::info!(nodes = nodes.len(), "sing-box started");

        let mut urls = Vec::with_capacity(nodes.len());
        for ((id, _), port) in nodes.iter().zip(&ports) {
            let url = ProxyUrl::parse(&format!("socks5h://127.0.0.1:{port}"))
                .map_err(io::Error::other)?;
            urls.push((id.clone(), url));
        }

        let shared = Arc::new(Shared::default());
        shared.running.store(true, Ordering::SeqCst);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(launcher, process, Arc::clone(&shared), stop_rx));
        let singbox = SingBox {
            shared,
            stop: Some(stop_tx),
            task: Some(task),
            config_path,
        };
        Ok((singbox, urls))
    }

    /// Stops the process (SIGTERM, then SIGKILL after 3 s) and its supervisor, for good.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.shared.running.store(false, Ordering::SeqCst);
    }

    /// How many times the process was restarted after exiting on its own.
    pub fn restarts(&self) -> u32 {
        self.shared.restarts.load(Ordering::SeqCst)
    }

    /// Whether the process is running now (false while the supervisor waits to restart it).
    pub fn running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Where the configuration was written.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// `count` local ports: consecutive from `first`, or free ones when `first` is 0.
fn pick_ports(first: u16, count: usize) -> io::Result<Vec<u16>> {
    if first == 0 {
        // Hold every listener until all are chosen so that no port comes up twice.
        let listeners = (0..count)
            .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| context(e, "cannot find free local ports for sing-box"))?;
        return listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect();
    }
    let last = usize::from(first) + count - 1;
    if last > usize::from(u16::MAX) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("sing-box: {count} local ports from {first} go past 65535"),
        ));
    }
    Ok((0..count)
        .filter_map(|i| u16::try_from(usize::from(first) + i).ok())
        .collect())
}

/// The sing-box configuration: one SOCKS inbound, one outbound and one route rule per node.
fn config_document(nodes: &[(String, &TunnelNode)], ports: &[u16]) -> Value {
    let mut inbounds = Vec::with_capacity(nodes.len());
    let mut outbounds = Vec::with_capacity(nodes.len());
    let mut rules = Vec::with_capacity(nodes.len());
    for ((id, node), port) in nodes.iter().zip(ports) {
        let inbound = format!("in-{id}");
        let outbound = format!("out-{id}");
        inbounds.push(json!({
            "type": "socks",
            "tag": inbound,
            "listen": "127.0.0.1",
            "listen_port": port,
        }));
        let mut out = match &node.outbound {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        out.insert("tag".to_owned(), json!(outbound));
        outbounds.push(Value::Object(out));
        rules.push(json!({"inbound": [inbound], "outbound": outbound}));
    }
    json!({
        "log": {"level": "warn", "timestamp": true},
        "inbounds": inbounds,
        "outbounds": outbounds,
        "route": {"rules": rules},
    })
}

/// Every secret string of the configuration (passwords, UUIDs, REALITY keys), to blank out of
/// stderr.
fn secrets_of(document: &Value) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match value {
                        Value::String(s)
                            if matches!(
                                key.as_str(),
                                "password" | "uuid" | "public_key" | "short_id"
                            ) && s.len() >= MIN_SECRET_LEN =>
                        {
                            out.push(s.clone());
                        }
                        other => walk(other, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(document, &mut out);
    // Longest first, so that a secret containing another is blanked whole.
    out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    out.dedup();
    out
}

/// Writes `bytes` to `path` readable by the owner only, replacing it atomically.
async fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match tokio::fs::remove_file(&tmp).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp).await?;
    file.write_all(bytes).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, path).await
}

/// What the supervisor needs to start the process again.
struct Launcher {
    executable: PathBuf,
    work_dir: PathBuf,
    config_path: PathBuf,
    secrets: Vec<String>,
}

/// One run of the process and the tail of its stderr.
struct Process {
    child: Child,
    tail: Arc<Mutex<Vec<u8>>>,
    drain: Option<JoinHandle<()>>,
}

impl Launcher {
    async fn spawn(&self) -> io::Result<Process> {
        let mut attempts = 0;
        let mut child = loop {
            let spawned = Command::new(&self.executable)
                .arg("run")
                .arg("-c")
                .arg(&self.config_path)
                .current_dir(&self.work_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn();
            match spawned {
                // The executable was just replaced (or, in tests, just written) and some other
                // fork still holds it open for writing: try again shortly.
                Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && attempts < 5 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other?,
            }
        };
        let tail = Arc::new(Mutex::new(Vec::new()));
        let drain = child
            .stderr
            .take()
            .map(|stderr| tokio::spawn(drain_stderr(stderr, Arc::clone(&tail))));
        Ok(Process { child, tail, drain })
    }

    /// The end of the process's stderr, at most 2 KB, secrets blanked out, control characters
    /// escaped; `""` when it wrote nothing.
    async fn stderr_tail(&self, process: &mut Process) -> String {
        if let Some(drain) = process.drain.take() {
            let _ = tokio::time::timeout(STDERR_FLUSH, drain).await;
        }
        let bytes = match process.tail.lock() {
            Ok(tail) => tail.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "[redacted]");
        }
        let text = text.trim();
        let mut start = text.len().saturating_sub(STDERR_TAIL);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        printable(text.get(start..).unwrap_or("")).into_owned()
    }
}

async fn drain_stderr(mut stderr: ChildStderr, tail: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 1024];
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut tail = match tail.lock() {
                    Ok(tail) => tail,
                    Err(poisoned) => poisoned.into_inner(),
                };
                tail.extend_from_slice(buf.get(..n).unwrap_or(&[]));
                if tail.len() > STDERR_KEPT {
                    let excess = tail.len() - STDERR_KEPT;
                    tail.drain(..excess);
                }
            }
        }
    }
}

/// Waits until every port accepts a TCP connection; `Err` when the process exits first or
/// [`READY_TIMEOUT`] passes.
async fn wait_ready(process: &mut Process, ports: &[u16], launcher: &Launcher) -> io::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut closed: Vec<u16> = ports.to_vec();
    loop {
        if let Some(status) = process.child.try_wait()? {
            let tail = launcher.stderr_tail(process).await;
            return Err(io::Error::other(format!(
                "sing-box exited during start ({}){}",
                describe(status),
                stderr_suffix(&tail)
            )));
        }
        let mut still_closed = Vec::new();
        for port in closed {
            let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
            if !matches!(
                tokio::time::timeout(CONNECT_TIMEOUT, connect).await,
                Ok(Ok(_))
            ) {
                still_closed.push(port);
            }
        }
        closed = still_closed;
        if closed.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let tail = launcher.stderr_tail(process).await;
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "sing-box did not open {} of its {} local ports within {} s{}",
                    closed.len(),
                    ports.len(),
                    READY_TIMEOUT.as_secs(),
                    stderr_suffix(&tail)
                ),
            ));
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

fn stderr_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; stderr: {tail}")
    }
}

fn describe(status: ExitStatus) -> String {
    status.to_string()
}

/// Restarts the process whenever it exits, until `stop` fires or its sender is dropped.
async fn supervise(
    launcher: Launcher,
    first: Process,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut current = Some(first);
    loop {
        if let Some(mut process) = current.take() {
            let started = Instant::now();
            let exited = tokio::select! {
                status = process.child.wait() => Some(status),
                _ = &mut stop => None,
            };
            shared.running.store(false, Ordering::SeqCst);
            let Some(status) = exited else {
                terminate(&mut process.child).await;
                return;
            };
            if started.elapsed() >= HEALTHY_RUN {
                backoff = BACKOFF_MIN;
            }
            let status = match status {
                Ok(status) => describe(status),
                Err(e) => format!("cannot wait for it: {e}"),
            };
            let stderr = launcher.stderr_tail(&mut process).await;
            tracing::warn!(
                %status,
                %stderr,
                restart_in_s = backoff.as_secs(),
                "sing-box exited unexpectedly; restarting it"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = &mut stop => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        match launcher.spawn().await {
            Ok(process) => {
                shared.restarts.fetch_add(1, Ordering::SeqCst);
                shared.running.store(true, Ordering::SeqCst);
                current = Some(process);
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    retry_in_s = backoff.as_secs(),
                    "cannot restart sing-box"
                );
            }
        }
    }
}

/// SIGTERM, then SIGKILL if the process is still there after [`STOP_GRACE`]. The signal is sent
/// with the `kill` utility (this crate has no unsafe code to call `kill(2)`); without it, or
/// when it fails, the process is killed at once.
async fn terminate(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    // The child is not reaped yet, so its pid cannot have been reused.
    let signalled = match child.id() {
        Some(pid) => Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success()),
        None => false,
    };
    if signalled && tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
        return;
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::links::parse_list;
    use std::os::unix::fs::PermissionsExt;

    const UUID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";

    /// A stand-in for sing-box: parses `run -c FILE`, notes its pid in `pids` (it runs in the
    /// work directory) and listens on every inbound's port, accepting and closing.
    /// `mode`: `serve`; `exit_once` (the first run exits after 0.5 s); `fail` (prints the
    /// whole configuration to stderr and exits 7); `ignore_term` (serves, ignoring SIGTERM).
    fn fake_singbox(dir: &Path, mode: &str) -> PathBuf {
        let script = format!(
            r#"#!/usr/bin/env python3
import json, os, select, signal, socket, sys, time
MODE = "{mode}"
if len(sys.argv) != 4 or sys.argv[1:3] != ["run", "-c"]:
    sys.stderr.write("fake sing-box: bad arguments\n")
    sys.exit(2)
with open(sys.argv[3]) as f:
    cfg = json.load(f)
with open("pids", "a") as f:
    f.write("%d\n" % os.getpid())
if MODE == "fail":
    sys.stderr.write("FATAL decode config: " + json.dumps(cfg) + "\n")
    sys.exit(7)
if MODE == "ignore_term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
socks = []
for inbound in cfg["inbounds"]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((inbound["listen"], inbound["listen_port"]))
    s.listen(64)
    socks.append(s)
exit_at = None
if MODE == "exit_once" and not os.path.exists("exited-once"):
    open("exited-once", "w").close()
    exit_at = time.monotonic() + 0.5
while True:
    ready, _, _ = select.select(socks, [], [], 0.05)
    for s in ready:
        conn, _ = s.accept()
        conn.close()
    if exit_at is not None and time.monotonic() >= exit_at:
        sys.stderr.write("fake sing-box: crashing on purpose\n")
        sys.exit(3)
"#
        );
        let path = dir.join("fake-sing-box");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn nodes() -> Vec<TunnelNode> {
        let vmess = serde_json::json!({"ps": "v", "add": "v.example", "port": "443", "id": UUID,
                                       "net": "ws", "path": "/ws", "tls": "tls"});
        let body = format!(
            "vmess://{}\n\
             trojan://trojan-hunter2@t.example:443?sni=t.example#T\n\
             hy2://hy-hunter2@h.example:8443?obfs=salamander&obfs-password=obfs-hunter2#H\n",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                vmess.to_string()
            )
        );
        let list = parse_list(body.as_bytes()).unwrap();
        assert_eq!(list.tunnelled.len(), 3);
        list.tunnelled
    }

    fn config(dir: &Path, mode: &str) -> SingBoxConfig {
        SingBoxConfig {
            executable: fake_singbox(dir, mode),
            work_dir: dir.join("work"),
            first_port: 0,
        }
    }

    fn port_of(url: &ProxyUrl) -> u16 {
        let rest = url.expose().strip_prefix("socks5h://127.0.0.1:").unwrap();
        rest.trim_end_matches('/').parse().unwrap()
    }

    async fn accepts(port: u16) -> bool {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    }

    fn pids(work_dir: &Path) -> Vec<u32> {
        std::fs::read_to_string(work_dir.join("pids"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    }

    fn alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    /// Polls `check` every 20 ms for up to `within`.
    async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if check().await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn start_writes_the_config_serves_every_node_and_stop_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "serve");
        let work_dir = config.work_dir.clone();
        let mut nodes = nodes();
        // A repeated node runs once.
        nodes.push(nodes[0].clone());
        let (singbox, urls) = SingBox::start(config, &nodes).await.unwrap();
        assert!(singbox.running());
        assert_eq!(singbox.restarts(), 0);

        // One URL per distinct node, in node order, each port distinct and open.
        let ids: Vec<String> = nodes[..3].iter().map(TunnelNode::id).collect();
        assert_eq!(
            urls.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            ids
        );
        let ports: Vec<u16> = urls.iter().map(|(_, url)| port_of(url)).collect();
        assert_eq!(ports.iter().collect::<HashSet<_>>().len(), 3);
        for (_, url) in &urls {
            assert_eq!(
                url.expose(),
                format!("socks5h://127.0.0.1:{}", port_of(url))
            );
        }
        for &port in &ports {
            assert!(accepts(port).await, "port {port}");
        }

        // The configuration: private, one inbound, outbound and rule per node.
        let path = work_dir.join(CONFIG_FILE);
        assert_eq!(singbox.config_path(), path);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!work_dir.join("singbox.json.tmp").exists());
        let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["log"]["level"], "warn");
        let inbounds = written["inbounds"].as_array().unwrap();
        let outbounds = written["outbounds"].as_array().unwrap();
        let rules = written["route"]["rules"].as_array().unwrap();
        assert_eq!((inbounds.len(), outbounds.len(), rules.len()), (3, 3, 3));
        for (i, node) in nodes[..3].iter().enumerate() {
            let id = node.id();
            assert_eq!(
                inbounds[i],
                serde_json::json!({"type": "socks", "tag": format!("in-{id}"),
                                   "listen": "127.0.0.1", "listen_port": ports[i]})
            );
            let mut expected = node.outbound.clone();
            expected["tag"] = serde_json::json!(format!("out-{id}"));
            assert_eq!(outbounds[i], expected);
            assert_eq!(
                rules[i],
                serde_json::json!({"inbound": [format!("in-{id}")],
                                   "outbound": format!("out-{id}")})
            );
        }

        // stop(): SIGTERM is enough for this one; the ports close and the process is gone.
        let pid = pids(&work_dir)[0];
        assert!(alive(pid));
        let begun = Instant::now();
        singbox.stop().await;
        assert!(begun.elapsed() < STOP_GRACE, "{:?}", begun.elapsed());
        assert!(!alive(pid));
        for &port in &ports {
            assert!(!accepts(port).await, "port {port} still open");
        }
        assert_eq!(pids(&work_dir).len(), 1, "not restarted after stop");
    }

    #[tokio::test]
    async fn a_process_that_dies_is_restarted_on_the_same_ports() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "exit_once");
        let work_dir = config.work_dir.clone();
        let (singbox, urls) = SingBox::start(config, &nodes()).await.unwrap();
        assert_eq!(singbox.restarts(), 0);
        // The first run exits after 0.5 s; the restart comes 1 s later.
        assert!(eventually(Duration::from_secs(4), async || singbox.restarts() == 1).await);
        assert!(singbox.running());
        for (_, url) in &urls {
            let port = port_of(url);
            assert!(
                eventually(Duration::from_secs(2), async || accepts(port).await).await,
                "port {port} did not come back"
            );
        }
        let pids = pids(&work_dir);
        assert_eq!(pids.len(), 2);
        assert!(!alive(pids[0]));
        assert!(alive(pids[1]));
        singbox.stop().await;
        assert!(!alive(pids[1]));
    }

    #[tokio::test]
    async fn stop_kills_a_process_that_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "ignore_term");
        let work_dir = config.work_dir.clone();
        let (singbox, _) = SingBox::start(config, &nodes()[..1]).await.unwrap();
        let pid = pids(&work_dir)[0];
        let begun = Instant::now();
        singbox.stop().await;
        let took = begun.elapsed();
        assert!(
            took >= STOP_GRACE && took < STOP_GRACE + Duration::from_secs(1),
            "{took:?}"
        );
        assert!(!alive(pid));
    }

    #[tokio::test]
    async fn dropping_it_stops_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "serve");
        let work_dir = config.work_dir.clone();
        let (singbox, _) = SingBox::start(config, &nodes()[..1]).await.unwrap();
        let pid = pids(&work_dir)[0];
        drop(singbox);
        assert!(eventually(Duration::from_secs(2), async || !alive(pid)).await);
    }

    #[tokio::test]
    async fn a_process_that_exits_during_start_is_an_error_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let e = SingBox::start(config(dir.path(), "fail"), &nodes())
            .await
            .unwrap_err();
        let message = e.to_string();
        assert!(
            message.starts_with("sing-box exited during start (exit status: 7)"),
            "{message}"
        );
        assert!(message.contains("FATAL decode config"), "{message}");
        assert!(message.contains("[redacted]"), "{message}");
        for secret in [UUID, "trojan-hunter2", "hy-hunter2", "obfs-hunter2"] {
            assert!(!message.contains(secret), "{secret} in {message}");
        }
        assert!(message.len() < STDERR_TAIL + 200, "{}", message.len());
    }

    #[tokio::test]
    async fn a_missing_executable_or_no_nodes_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = SingBoxConfig {
            executable: dir.path().join("no-such-sing-box"),
            work_dir: dir.path().join("work"),
            first_port: 0,
        };
        let e = SingBox::start(config.clone(), &nodes()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("no-such-sing-box"), "{e}");
        let e = SingBox::start(config, &[]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn relative_paths_are_taken_from_the_current_directory() {
        let dir = tempfile::tempdir().unwrap();
        let absolute = config(dir.path(), "serve");
        // The same paths, relative to the current directory (`../..` up to `/`).
        let cwd = std::env::current_dir().unwrap();
        let up: PathBuf = (1..cwd.components().count()).map(|_| "..").collect();
        let relative = |p: &Path| up.join(p.strip_prefix("/").unwrap());
        let config = SingBoxConfig {
            executable: relative(&absolute.executable),
            work_dir: relative(&absolute.work_dir),
            first_port: 0,
        };
        assert!(config.executable.is_relative());
        let (singbox, urls) = SingBox::start(config, &nodes()[..1]).await.unwrap();
        assert!(accepts(port_of(&urls[0].1)).await);
        assert_eq!(pids(&absolute.work_dir).len(), 1);
        singbox.stop().await;
    }

    #[test]
    fn ports_and_secrets() {
        assert_eq!(pick_ports(40000, 3).unwrap(), [40000, 40001, 40002]);
        assert_eq!(pick_ports(65534, 2).unwrap(), [65534, 65535]);
        assert_eq!(
            pick_ports(65535, 2).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let free = pick_ports(0, 5).unwrap();
        assert_eq!(free.iter().collect::<HashSet<_>>().len(), 5);
        assert!(free.iter().all(|&p| p != 0));

        let nodes = nodes();
        let pairs: Vec<(String, &TunnelNode)> = nodes.iter().map(|n| (n.id(), n)).collect();
        let secrets = secrets_of(&config_document(&pairs, &[1, 2, 3]));
        for secret in [UUID, "trojan-hunter2", "hy-hunter2", "obfs-hunter2"] {
            assert!(secrets.iter().any(|s| s == secret), "{secret}");
        }
        assert!(!secrets.iter().any(|s| s == "t.example"));
    }
}
