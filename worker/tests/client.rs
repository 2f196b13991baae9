//! The worker against a fake server (actix-web + actix-ws on 127.0.0.1:0) that records every
//! upgrade and frame and lets each test play the server's part.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failed unwrap or an unexpected frame is a failed test"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use business2api_shared::protocol::{
    AccountCredentials, CancelReason, DeclineReason, FailureReason, ProbeTask, ProbeVerdict,
    ProtocolVersion, Refusal, ServerMessage, Task, TaskId, TaskKindName, TaskOutcome, TaskSpec,
    Welcome, WireCookie, WorkerMessage, code,
};
use business2api_shared::{AccountKey, Secret};
use business2api_worker::{SOFTWARE, TaskContext, TaskRunner, WorkerConfig};
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "worker-test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------------------------------
// The fake server

#[derive(Debug)]
enum Incoming {
    Msg(WorkerMessage),
    Close(Option<u16>),
    Ended,
}

enum Outgoing {
    Msg(ServerMessage),
    Raw(String),
    Close(u16, String),
}

struct Conn {
    auth: Option<String>,
    uri: String,
    frames: mpsc::UnboundedReceiver<Incoming>,
    out: mpsc::UnboundedSender<Outgoing>,
}

impl Conn {
    async fn next(&mut self) -> Incoming {
        tokio::time::timeout(WAIT, self.frames.recv())
            .await
            .expect("a frame from the worker in time")
            .unwrap_or(Incoming::Ended)
    }

    /// The next message that is not a heartbeat.
    async fn next_msg(&mut self) -> WorkerMessage {
        loop {
            match self.next().await {
                Incoming::Msg(WorkerMessage::Heartbeat { .. }) => {}
                Incoming::Msg(m) => return m,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    fn send(&self, m: ServerMessage) {
        self.out.send(Outgoing::Msg(m)).unwrap();
    }

    /// Reads the hello and answers with a welcome announcing `heartbeat_ms`.
    async fn welcome(&mut self, heartbeat_ms: u64) -> WorkerMessage {
        let hello = self.next_msg().await;
        self.send(ServerMessage::Welcome(welcome(heartbeat_ms)));
        hello
    }
}

fn welcome(heartbeat_ms: u64) -> Welcome {
    Welcome {
        protocol: ProtocolVersion::CURRENT,
        server: "fake".to_owned(),
        heartbeat_interval_ms: heartbeat_ms,
        missed_heartbeats: 1000,
        lease_ms: 60_000,
        max_frame_bytes: 262_144,
        kinds: vec![TaskKindName::Relogin, TaskKindName::Probe],
    }
}

struct FakeServer {
    addr: SocketAddr,
    conns: mpsc::UnboundedReceiver<Conn>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeServer {
    async fn start() -> FakeServer {
        FakeServer::start_on(0).await
    }

    async fn start_on(port: u16) -> FakeServer {
        let (tx, conns) = mpsc::unbounded_channel::<Conn>();
        let tx = web::Data::new(tx);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(tx.clone())
                .route("/ws", web::get().to(upgrade))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .bind(("127.0.0.1", port))
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        FakeServer {
            addr,
            conns,
            handle,
        }
    }

    async fn accept(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("a connection in time")
            .unwrap()
    }

    fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}/", self.addr)).unwrap()
    }
}

async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    conns: web::Data<mpsc::UnboundedSender<Conn>>,
) -> actix_web::Result<HttpResponse> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let uri = req.uri().to_string();
    let (response, mut session, mut stream) = actix_ws::handle(&req, body)?;
    let (in_tx, frames) = mpsc::unbounded_channel();
    let (out, mut out_rx) = mpsc::unbounded_channel();
    let _ = conns.send(Conn {
        auth,
        uri,
        frames,
        out,
    });
    actix_web::rt::spawn(async move {
        loop {
            tokio::select! {
                m = stream.next() => match m {
                    Some(Ok(actix_ws::Message::Text(t))) => {
                        let _ = in_tx.send(Incoming::Msg(WorkerMessage::parse(&t).unwrap()));
                    }
                    Some(Ok(actix_ws::Message::Close(r))) => {
                        let _ = in_tx.send(Incoming::Close(r.map(|r| r.code.into())));
                        break;
                    }
                    Some(Ok(actix_ws::Message::Ping(b))) => { let _ = session.pong(&b).await; }
                    Some(Ok(_)) => {}
                    None | Some(Err(_)) => { let _ = in_tx.send(Incoming::Ended); break; }
                },
                o = out_rx.recv() => match o {
                    Some(Outgoing::Msg(m)) => { let _ = session.text(m.to_text()).await; }
                    Some(Outgoing::Raw(t)) => { let _ = session.text(t).await; }
                    Some(Outgoing::Close(c, r)) => {
                        let _ = session.close(Some(actix_ws::CloseReason {
                            code: c.into(),
                            description: Some(r),
                        })).await;
                        break;
                    }
                    None => break,
                },
            }
        }
    });
    Ok(response)
}

// ------------------------------------------------------------------------------------------
// A scripted runner

#[derive(Default)]
struct Script {
    now: AtomicUsize,
    max: AtomicUsize,
    outcomes: Mutex<HashMap<String, oneshot::Receiver<TaskOutcome>>>,
    dropped: Mutex<Vec<String>>,
}

#[derive(Clone, Default)]
struct Scripted(Arc<Script>);

impl Scripted {
    /// The task `id` runs until the returned sender gives its outcome.
    fn script(&self, id: &str) -> oneshot::Sender<TaskOutcome> {
        let (tx, rx) = oneshot::channel();
        self.0.outcomes.lock().unwrap().insert(id.to_owned(), rx);
        tx
    }

    fn max(&self) -> usize {
        self.0.max.load(Ordering::SeqCst)
    }

    fn dropped(&self) -> Vec<String> {
        self.0.dropped.lock().unwrap().clone()
    }
}

struct Guard {
    script: Arc<Script>,
    id: String,
    finished: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.script.now.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.script.dropped.lock().unwrap().push(self.id.clone());
        }
    }
}

impl TaskRunner for Scripted {
    fn kinds(&self) -> Vec<TaskKindName> {
        vec![TaskKindName::Probe]
    }

    fn run(&self, task: Task, _ctx: TaskContext) -> BoxFuture<'static, TaskOutcome> {
        let script = self.0.clone();
        let id = task.id.as_str().to_owned();
        let outcome = script.outcomes.lock().unwrap().remove(&id);
        Box::pin(async move {
            let now = script.now.fetch_add(1, Ordering::SeqCst) + 1;
            script.max.fetch_max(now, Ordering::SeqCst);
            let mut guard = Guard {
                script,
                id,
                finished: false,
            };
            let outcome = match outcome {
                Some(rx) => rx.await.unwrap_or(healthy()),
                None => healthy(),
            };
            guard.finished = true;
            outcome
        })
    }
}

fn healthy() -> TaskOutcome {
    TaskOutcome::Probed {
        verdict: ProbeVerdict::Healthy,
    }
}

fn probe(id: &str) -> ServerMessage {
    ServerMessage::Task(Task {
        id: TaskId::parse(id).unwrap(),
        attempt: 1,
        lease_ms: 60_000,
        spec: TaskSpec::Probe(ProbeTask {
            account: AccountKey::new("someone@example.com"),
            credentials: AccountCredentials {
                cookies: vec![WireCookie {
                    name: "__Secure-C_SES".to_owned(),
                    value: Secret::new("cookie"),
                    domain: ".gemini.google".to_owned(),
                }],
                authorization: Secret::new("Bearer x"),
                config_id: "cfg".to_owned(),
                csesidx: "1".to_owned(),
            },
            proxy: None,
        }),
    })
}

fn tid(id: &str) -> TaskId {
    TaskId::parse(id).unwrap()
}

struct Worker {
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

fn config(server: &FakeServer, capacity: u32) -> WorkerConfig {
    let mut c = WorkerConfig::new(server.url(), Secret::new(SECRET), capacity).unwrap();
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c
}

fn start(config: WorkerConfig, runner: Scripted) -> Worker {
    let stop = CancellationToken::new();
    let token = stop.clone();
    let done = actix_web::rt::spawn(async move {
        business2api_worker::run(config, Arc::new(runner), token)
            .await
            .unwrap();
    });
    Worker { stop, done }
}

// ------------------------------------------------------------------------------------------
// Tests

#[actix_web::test]
async fn the_upgrade_carries_the_bearer_secret_and_hello_the_capacity() {
    let mut server = FakeServer::start().await;
    let _w = start(config(&server, 3), Scripted::default());
    let mut conn = server.accept().await;
    assert_eq!(
        conn.auth.as_deref(),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert_eq!(conn.uri, "/ws", "nothing but the path in the URL");
    assert!(!conn.uri.contains(SECRET));
    match conn.next_msg().await {
        WorkerMessage::Hello(h) => {
            assert_eq!(h.capacity, 3);
            assert_eq!(h.protocol, ProtocolVersion::CURRENT);
            assert_eq!(h.kinds, vec![TaskKindName::Probe]);
            assert_eq!(h.software, SOFTWARE);
        }
        other => panic!("expected hello, got {other:?}"),
    }
}

#[actix_web::test]
async fn a_task_is_accepted_run_and_its_result_sent() {
    let mut server = FakeServer::start().await;
    let runner = Scripted::default();
    let release = runner.script("t1");
    let _w = start(config(&server, 1), runner);
    let mut conn = server.accept().await;
    conn.welcome(60_000).await;
    conn.send(probe("t1"));
    assert_eq!(
        conn.next_msg().await,
        WorkerMessage::Accepted { task: tid("t1") }
    );
    let outcome = TaskOutcome::Probed {
        verdict: ProbeVerdict::CredentialsRejected,
    };
    release.send(outcome.clone()).unwrap();
    match conn.next_msg().await {
        WorkerMessage::Result(r) => {
            assert_eq!(r.task, tid("t1"));
            assert_eq!(r.outcome, outcome);
        }
        other => panic!("expected result, got {other:?}"),
    }
}

#[actix_web::test]
async fn at_most_capacity_tasks_run_at_once() {
    let mut server = FakeServer::start().await;
    let runner = Scripted::default();
    let r1 = runner.script("t1");
    let _r2 = runner.script("t2");
    let _w = start(config(&server, 2), runner.clone());
    let mut conn = server.accept().await;
    conn.welcome(60_000).await;
    for id in ["t1", "t2", "t3"] {
        conn.send(probe(id));
    }
    assert_eq!(
        conn.next_msg().await,
        WorkerMessage::Accepted { task: tid("t1") }
    );
    assert_eq!(
        conn.next_msg().await,
        WorkerMessage::Accepted { task: tid("t2") }
    );
    assert_eq!(
        conn.next_msg().await,
        WorkerMessage::Declined {
            task: tid("t3"),
            reason: DeclineReason::Busy
        }
    );
    r1.send(healthy()).unwrap();
    assert!(matches!(conn.next_msg().await, WorkerMessage::Result(r) if r.task == tid("t1")));
    // Room again: the third task is taken now.
    let _r3 = runner.script("t3");
    conn.send(probe("t3"));
    assert_eq!(
        conn.next_msg().await,
        WorkerMessage::Accepted { task: tid("t3") }
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(runner.max(), 2, "never more than the capacity at once");
}

#[actix_web::test]
async fn heartbeats_list_the_running_tasks() {
    let mut server = FakeServer::start().await;
    let runner = Scripted::default();
    let mut release = Some(runner.script("t1"));
    let _w = start(config(&server, 2), runner);
    let mut conn = server.accept().await;
    conn.welcome(30).await;
    conn.send(probe("t1"));
    let mut saw_running = false;
    let mut saw_result = false;
    for _ in 0..100 {
        match conn.next().await {
            Incoming::Msg(WorkerMessage::Heartbeat { running }) => {
                if !saw_result && running == vec![tid("t1")] {
                    saw_running = true;
                    if let Some(r) = release.take() {
                        r.send(healthy()).ok();
                    }
                } else if saw_result {
                    assert!(running.is_empty(), "a finished task is not listed");
                    return;
                }
            }
            Incoming::Msg(WorkerMessage::Result(_)) => {
                assert!(saw_running);
                saw_result = true;
            }
            Incoming::Msg(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no heartbeat listed the running task and then none");
}

#[actix_web::test]
async fn cancel_aborts_the_running_task_and_sends_no_result() {
    let mut server = FakeServer::start().await;
    let runner = Scripted::default();
    let _release = runner.script("t1");
    let _w = start(config(&server, 1), runner.clone());
    let mut conn = server.accept().await;
    conn.welcome(30).await;
    conn.send(probe("t1"));
    assert_eq!(
        conn.next_msg().await,
        WorkerMessage::Accepted { task: tid("t1") }
    );
    conn.send(ServerMessage::Cancel {
        task: tid("t1"),
        reason: CancelReason::LeaseExpired,
    });
    // Heartbeats stop listing it, and no result comes.
    loop {
        match conn.next().await {
            Incoming::Msg(WorkerMessage::Heartbeat { running }) if running.is_empty() => break,
            Incoming::Msg(WorkerMessage::Heartbeat { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    for _ in 0..3 {
        assert!(matches!(
            conn.next().await,
            Incoming::Msg(WorkerMessage::Heartbeat { running }) if running.is_empty()
        ));
    }
    assert_eq!(
        runner.dropped(),
        vec!["t1".to_owned()],
        "the task's future was dropped"
    );
    // The slot is free again.
    conn.send(probe("t2"));
    assert_eq!(
        conn.next_msg().await,
        WorkerMessage::Accepted { task: tid("t2") }
    );
}

#[actix_web::test]
async fn unknown_server_messages_are_ignored() {
    let mut server = FakeServer::start().await;
    let _w = start(config(&server, 1), Scripted::default());
    let mut conn = server.accept().await;
    conn.welcome(60_000).await;
    conn.out
        .send(Outgoing::Raw(
            r#"{"type":"from_the_future","x":1}"#.to_owned(),
        ))
        .unwrap();
    conn.send(probe("t1"));
    assert_eq!(
        conn.next_msg().await,
        WorkerMessage::Accepted { task: tid("t1") }
    );
}

#[actix_web::test]
async fn the_worker_reconnects_after_the_server_closes_the_connection() {
    let mut server = FakeServer::start().await;
    let _w = start(config(&server, 1), Scripted::default());
    let mut first = server.accept().await;
    first.welcome(60_000).await;
    first
        .out
        .send(Outgoing::Close(code::GOING_AWAY, "restarting".to_owned()))
        .unwrap();
    let mut second = server.accept().await;
    assert!(matches!(second.next_msg().await, WorkerMessage::Hello(_)));
    assert_eq!(
        second.auth.as_deref(),
        Some(format!("Bearer {SECRET}").as_str())
    );
}

#[actix_web::test]
async fn the_worker_survives_a_server_restart_on_the_same_port() {
    let mut server = FakeServer::start().await;
    let port = server.addr.port();
    let _w = start(config(&server, 1), Scripted::default());
    let mut conn = server.accept().await;
    conn.welcome(60_000).await;
    server.handle.stop(false).await;
    drop(conn);
    drop(server);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut restarted = FakeServer::start_on(port).await;
    let mut conn = restarted.accept().await;
    conn.welcome(60_000).await;
    conn.send(probe("t9"));
    assert_eq!(
        conn.next_msg().await,
        WorkerMessage::Accepted { task: tid("t9") }
    );
}

#[actix_web::test]
async fn an_incompatible_refusal_is_not_retried_in_a_tight_loop() {
    let mut server = FakeServer::start().await;
    let mut c = config(&server, 1);
    c.incompatible_retry = Duration::from_millis(1500);
    let _w = start(c, Scripted::default());
    let mut conn = server.accept().await;
    let _hello = conn.next_msg().await;
    let refusal = Refusal {
        code: code::INCOMPATIBLE,
        reason: "protocol 1.0 is not supported: this server speaks 2.x".to_owned(),
    };
    conn.send(ServerMessage::Refused(refusal.clone()));
    conn.out
        .send(Outgoing::Close(refusal.code, refusal.reason))
        .unwrap();
    let started = std::time::Instant::now();
    // With the ordinary backoff (20 ms here) it would be back at once.
    let again = tokio::time::timeout(Duration::from_millis(1200), server.conns.recv()).await;
    assert!(
        again.is_err(),
        "reconnected right after an incompatible refusal"
    );
    let mut conn = server.accept().await;
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert!(matches!(conn.next_msg().await, WorkerMessage::Hello(_)));
}

#[actix_web::test]
async fn a_drain_sends_draining_lets_the_task_finish_and_closes_with_1001() {
    let mut server = FakeServer::start().await;
    let runner = Scripted::default();
    let release = runner.script("t1");
    let w = start(config(&server, 2), runner);
    let mut conn = server.accept().await;
    conn.welcome(60_000).await;
    conn.send(probe("t1"));
    assert_eq!(
        conn.next_msg().await,
        WorkerMessage::Accepted { task: tid("t1") }
    );
    w.stop.cancel();
    assert_eq!(conn.next_msg().await, WorkerMessage::Draining {});
    // No new task while draining.
    conn.send(probe("t2"));
    assert_eq!(
        conn.next_msg().await,
        WorkerMessage::Declined {
            task: tid("t2"),
            reason: DeclineReason::Draining
        }
    );
    release.send(healthy()).unwrap();
    assert!(matches!(conn.next_msg().await, WorkerMessage::Result(r) if r.task == tid("t1")));
    assert!(matches!(conn.next().await, Incoming::Close(Some(1001))));
    tokio::time::timeout(WAIT, w.done).await.unwrap().unwrap();
    // It stays stopped.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), server.conns.recv())
            .await
            .is_err()
    );
}

#[actix_web::test]
async fn a_drain_cancels_tasks_that_outlive_its_bound() {
    let mut server = FakeServer::start().await;
    let runner = Scripted::default();
    let _never = runner.script("t1");
    let mut c = config(&server, 1);
    c.drain_timeout = Duration::from_millis(200);
    let w = start(c, runner.clone());
    let mut conn = server.accept().await;
    conn.welcome(60_000).await;
    conn.send(probe("t1"));
    assert_eq!(
        conn.next_msg().await,
        WorkerMessage::Accepted { task: tid("t1") }
    );
    w.stop.cancel();
    assert_eq!(conn.next_msg().await, WorkerMessage::Draining {});
    match conn.next_msg().await {
        WorkerMessage::Result(r) => {
            assert_eq!(r.task, tid("t1"));
            assert!(matches!(
                r.outcome,
                TaskOutcome::Failed {
                    reason: FailureReason::Cancelled,
                    ..
                }
            ));
        }
        other => panic!("expected a cancelled result, got {other:?}"),
    }
    assert!(matches!(conn.next().await, Incoming::Close(Some(1001))));
    tokio::time::timeout(WAIT, w.done).await.unwrap().unwrap();
    assert_eq!(runner.dropped(), vec!["t1".to_owned()]);
}
