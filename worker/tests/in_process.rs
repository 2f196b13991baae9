//! The in-process worker (local mode) against a hand-driven server end: the same session as over
//! a WebSocket (hello, welcome, tasks, `otp` forwarding, drain on shutdown), typed messages over
//! bounded channels.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test: a failed unwrap or an unexpected message is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use business2api_shared::protocol::{
    AccountCredentials, FailureReason, OtpSource, ProgressStage, ReloginTask, ServerMessage, Task,
    TaskId, TaskKindName, TaskOutcome, TaskSpec, WorkerMessage, code, negotiate,
};
use business2api_shared::{AccountKey, Secret};
use business2api_worker::in_process::{self, FromWorker, ServerEnd, ToWorker};
use business2api_worker::{TaskContext, TaskRunner, WorkerConfig};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);

/// Waits for the code, then answers credentials.
struct NeedsCode;

impl TaskRunner for NeedsCode {
    fn kinds(&self) -> Vec<TaskKindName> {
        vec![TaskKindName::Relogin]
    }

    fn run(&self, _task: Task, mut ctx: TaskContext) -> BoxFuture<'static, TaskOutcome> {
        Box::pin(async move {
            ctx.progress(ProgressStage::WaitingForCode);
            match ctx.next_code().await {
                Some(code) if code.expose() == "ZX98YW" => TaskOutcome::ReloggedIn {
                    credentials: AccountCredentials {
                        cookies: Vec::new(),
                        authorization: Secret::new("Bearer x"),
                        config_id: "cid".to_owned(),
                        csesidx: "123".to_owned(),
                    },
                },
                _ => TaskOutcome::Failed {
                    reason: FailureReason::WrongCode,
                    message: "wrong".to_owned(),
                },
            }
        })
    }
}

async fn next(end: &mut ServerEnd) -> FromWorker {
    tokio::time::timeout(WAIT, end.from_worker.recv())
        .await
        .expect("a message from the worker in time")
        .expect("the worker's side is open")
}

async fn next_msg(end: &mut ServerEnd) -> WorkerMessage {
    loop {
        match next(end).await {
            FromWorker::Message(WorkerMessage::Heartbeat { .. }) => {}
            FromWorker::Message(m) => return m,
            FromWorker::Close(c) => panic!("closed: {c:?}"),
        }
    }
}

fn relogin(id: &TaskId) -> Task {
    Task {
        id: id.clone(),
        attempt: 1,
        lease_ms: 60_000,
        spec: TaskSpec::Relogin(ReloginTask {
            account: AccountKey::new("a@example.com"),
            otp: OtpSource::Operator { timeout_ms: 60_000 },
            proxy: None,
        }),
    }
}

#[tokio::test]
async fn the_in_process_worker_runs_the_same_session_and_drains_on_shutdown() {
    let (mut server, worker_end) = in_process::link();
    let config = WorkerConfig::in_process(2).unwrap();
    assert!(config.worker_id.as_str().starts_with("local-"));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(in_process::run(
        config,
        Arc::new(NeedsCode),
        worker_end,
        shutdown.clone(),
    ));

    let WorkerMessage::Hello(hello) = next_msg(&mut server).await else {
        panic!("expected hello");
    };
    assert_eq!(hello.capacity, 2);
    assert_eq!(hello.kinds, vec![TaskKindName::Relogin]);
    let welcome = negotiate(&hello).unwrap();
    server
        .to_worker
        .send(ToWorker::Message(ServerMessage::Welcome(welcome)))
        .await
        .unwrap();

    // A task: accepted, waiting for its code; the forwarded code completes it.
    let id = TaskId::parse("t-local-1").unwrap();
    server
        .to_worker
        .send(ToWorker::Message(ServerMessage::Task(relogin(&id))))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut server).await,
        WorkerMessage::Accepted { task: id.clone() }
    );
    assert_eq!(
        next_msg(&mut server).await,
        WorkerMessage::Progress {
            task: id.clone(),
            stage: ProgressStage::WaitingForCode
        }
    );
    server
        .to_worker
        .send(ToWorker::Message(ServerMessage::Otp {
            task: id.clone(),
            code: Secret::new("ZX98YW"),
        }))
        .await
        .unwrap();
    let WorkerMessage::Result(result) = next_msg(&mut server).await else {
        panic!("expected a result");
    };
    assert_eq!(result.task, id);
    assert!(matches!(result.outcome, TaskOutcome::ReloggedIn { .. }));

    // Shutdown: draining, then the close (no task runs), and `run` returns.
    shutdown.cancel();
    assert_eq!(next_msg(&mut server).await, WorkerMessage::Draining {});
    let FromWorker::Close(close) = next(&mut server).await else {
        panic!("expected the close");
    };
    assert_eq!(close.code, code::GOING_AWAY);
    tokio::time::timeout(WAIT, running).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_in_process_worker_stops_when_the_server_side_closes() {
    let (mut server, worker_end) = in_process::link();
    let running = tokio::spawn(in_process::run(
        WorkerConfig::in_process(1).unwrap(),
        Arc::new(NeedsCode),
        worker_end,
        CancellationToken::new(),
    ));
    let WorkerMessage::Hello(hello) = next_msg(&mut server).await else {
        panic!("expected hello");
    };
    server
        .to_worker
        .send(ToWorker::Message(ServerMessage::Welcome(
            negotiate(&hello).unwrap(),
        )))
        .await
        .unwrap();
    drop(server);
    tokio::time::timeout(WAIT, running).await.unwrap().unwrap();
}
