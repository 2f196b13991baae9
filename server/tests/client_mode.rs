//! Client mode through the real binary: `business2api serve` with `pool_server.mode = "client"`
//! runs the worker — it dials a fake server's `/ws` with the secret as a bearer header, says
//! hello with `client_threads` as its capacity, answers a task, and drains on SIGTERM.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failed unwrap or an unexpected frame is a failed test"
)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use business2api_shared::protocol::{
    FailureReason, OtpSource, ProtocolVersion, ReloginTask, ServerMessage, Task, TaskId,
    TaskKindName, TaskOutcome, TaskSpec, Welcome, WorkerMessage,
};
use business2api_shared::{AccountKey, Secret};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

mod common;

const SECRET: &str = "client-mode-secret-0123456789";

#[derive(Debug)]
enum Incoming {
    Msg(WorkerMessage),
    Close(Option<u16>),
    Ended,
}

struct Conn {
    auth: Option<String>,
    uri: String,
    frames: mpsc::UnboundedReceiver<Incoming>,
    out: mpsc::UnboundedSender<ServerMessage>,
}

impl Conn {
    async fn next(&mut self) -> Incoming {
        tokio::time::timeout(Duration::from_secs(10), self.frames.recv())
            .await
            .expect("a frame from the worker in time")
            .unwrap_or(Incoming::Ended)
    }

    async fn next_msg(&mut self) -> WorkerMessage {
        loop {
            match self.next().await {
                Incoming::Msg(WorkerMessage::Heartbeat { .. }) => {}
                Incoming::Msg(m) => return m,
                other => panic!("expected a message, got {other:?}"),
            }
        }
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
    let (out, mut out_rx) = mpsc::unbounded_channel::<ServerMessage>();
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
                    Some(Ok(_)) => {}
                    None | Some(Err(_)) => {
                        let _ = in_tx.send(Incoming::Ended);
                        break;
                    }
                },
                o = out_rx.recv() => match o {
                    Some(m) => { let _ = session.text(m.to_text()).await; }
                    None => break,
                },
            }
        }
    });
    Ok(response)
}

#[actix_web::test]
async fn client_mode_runs_the_worker_which_says_hello_and_drains_on_sigterm() {
    let (tx, mut conns) = mpsc::unbounded_channel::<Conn>();
    let tx = web::Data::new(tx);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(tx.clone())
            .route("/ws", web::get().to(upgrade))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let addr = server.addrs()[0];
    actix_web::rt::spawn(server.run());

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        serde_json::json!({
            "listen_addr": "127.0.0.1:0",
            "data_dir": data,
            "pool_server": {
                "enable": true, "mode": "client", "server_addr": format!("http://{addr}"),
                "secret": SECRET, "client_threads": 3
            }
        })
        .to_string(),
    )
    .unwrap();
    let err_path = dir.path().join("stderr");
    let out_path = dir.path().join("stdout");
    let mut child = common::gateway_command()
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();

    let mut conn = tokio::time::timeout(Duration::from_secs(30), conns.recv())
        .await
        .expect("the worker connects")
        .unwrap();
    assert_eq!(
        conn.auth.as_deref(),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert_eq!(conn.uri, "/ws");
    match conn.next_msg().await {
        WorkerMessage::Hello(h) => {
            assert_eq!(h.capacity, 3, "client_threads is the capacity");
            assert_eq!(h.protocol, ProtocolVersion::CURRENT);
            assert_eq!(
                h.kinds,
                [TaskKindName::Relogin, TaskKindName::Probe],
                "a client worker re-logs accounts in Chromium and probes them from its own network"
            );
        }
        other => panic!("expected hello, got {other:?}"),
    }
    conn.out
        .send(ServerMessage::Welcome(Welcome {
            protocol: ProtocolVersion::CURRENT,
            server: "fake".to_owned(),
            heartbeat_interval_ms: 60_000,
            missed_heartbeats: 3,
            lease_ms: 60_000,
            max_frame_bytes: 262_144,
            kinds: vec![TaskKindName::Relogin, TaskKindName::Probe],
        }))
        .unwrap();
    // The worker runs re-logins in a browser; a proxy with a password reaches Chromium through
    // a loopback relay, which speaks SOCKS5 and HTTP but not SOCKS4: this task fails at once
    // (before any browser starts), saying why, without the password.
    let id = TaskId::parse("task-1").unwrap();
    conn.out
        .send(ServerMessage::Task(Task {
            id: id.clone(),
            attempt: 1,
            lease_ms: 60_000,
            spec: TaskSpec::Relogin(ReloginTask {
                account: AccountKey::new("someone@example.com"),
                otp: OtpSource::Operator { timeout_ms: 60_000 },
                proxy: Some(Secret::new("socks4://user:proxy-pw-secret@127.0.0.1:1080")),
            }),
        }))
        .unwrap();
    assert_eq!(
        conn.next_msg().await,
        WorkerMessage::Accepted { task: id.clone() }
    );
    match conn.next_msg().await {
        WorkerMessage::Result(r) => {
            assert_eq!(r.task, id);
            match r.outcome {
                TaskOutcome::Failed { reason, message } => {
                    assert_eq!(reason, FailureReason::Unsupported);
                    assert!(message.contains("not supported for re-login"), "{message}");
                    assert!(!message.contains("proxy-pw-secret"), "{message}");
                }
                other => panic!("expected failed, got {other:?}"),
            }
        }
        other => panic!("expected a result, got {other:?}"),
    }

    // SIGTERM: draining, close 1001, exit 0.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(conn.next_msg().await, WorkerMessage::Draining {});
    assert!(matches!(conn.next().await, Incoming::Close(Some(1001))));
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the worker did not exit after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");

    let logs =
        std::fs::read_to_string(&err_path).unwrap() + &std::fs::read_to_string(&out_path).unwrap();
    assert!(
        logs.contains(&format!("ws://{addr}/ws")),
        "the log names the server: {logs}"
    );
    assert!(!logs.contains(SECRET), "the secret never reaches the log");
    assert!(!logs.contains("listening on"), "no HTTP API in client mode");
    assert!(!data.exists(), "no store in client mode");
}
