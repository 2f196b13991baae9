//! The worker endpoint `GET /ws` (server mode) through the real wiring, with a raw WebSocket
//! client playing the workers: authentication before the upgrade, the handshake, hostile frames
//! closing only their own connection, and the task queue's leases (one holder at a time,
//! reassignment on disconnect and on expiry, idempotent results that make the account serve
//! again with its new credentials).

use std::time::{Duration, Instant};

use business2api_tests::{TestApp, TestOptions, chat_body, spawn_app_with};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use upstream_sim::{Endpoint, Fault, FaultRule, SimAccount};

const ADMIN_KEY: &str = "admin-key-for-tests-0123456789";
const SECRET: &str = "pool-secret-for-tests-0123456789";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn server_app(accounts: u32, extra: Value) -> TestApp {
    let mut config = json!({
        "admin_keys": [ADMIN_KEY],
        "pool_server": { "enable": true, "mode": "server", "secret": SECRET },
    });
    business2api_tests::merge(&mut config, extra);
    spawn_app_with(TestOptions::default().accounts(accounts).config(config)).await
}

/// Opens `/ws<suffix>` with `authorization` (if any); the HTTP refusal as (status, body).
async fn open(
    app: &TestApp,
    suffix: &str,
    authorization: Option<&str>,
) -> Result<Ws, (u16, String)> {
    let mut request = format!("ws://127.0.0.1:{}/ws{suffix}", app.port)
        .into_client_request()
        .unwrap();
    if let Some(a) = authorization {
        request
            .headers_mut()
            .insert("authorization", HeaderValue::from_str(a).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => Err((
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("unexpected connect error: {e}"),
    }
}

async fn connect(app: &TestApp) -> Ws {
    open(app, "", Some(&format!("Bearer {SECRET}")))
        .await
        .unwrap_or_else(|e| panic!("refused: {e:?}"))
}

fn hello(worker: &str, major: u32, capacity: u16) -> Value {
    json!({
        "type": "hello",
        "protocol": { "major": major, "minor": 0 },
        "worker": worker,
        "software": "test-worker/1.0",
        "capacity": capacity,
        "kinds": ["relogin", "probe"],
    })
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next JSON frame within `wait` (`None` when nothing came or the connection closed).
async fn next_json(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(Some(Ok(other))) => panic!("unexpected frame: {other:?}"),
            Ok(Some(Err(_)) | None) | Err(_) => return None,
        }
    }
}

/// The next frame of `type` (skipping heartbeat acks).
async fn expect(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = next_json(ws, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no {kind} frame"));
        if v["type"] == "heartbeat_ack" && kind != "heartbeat_ack" {
            continue;
        }
        assert_eq!(v["type"], kind, "{v}");
        return v;
    }
}

/// Whether the connection stays open (no close, no end) for `wait`, ignoring other frames.
async fn stays_open(ws: &mut Ws, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return true;
        };
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return true,
            Ok(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => return false,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Reads until the close frame: its code and reason.
async fn closed(ws: &mut Ws) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("no close frame");
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Ok(Some(Ok(Message::Close(None)))) => panic!("a close frame without a code"),
            Ok(Some(Ok(_))) => {}
            other => panic!("the connection ended without a close frame: {other:?}"),
        }
    }
}

async fn welcomed(app: &TestApp, worker: &str, capacity: u16) -> Ws {
    let mut ws = connect(app).await;
    send(&mut ws, hello(worker, 1, capacity)).await;
    let welcome = expect(&mut ws, "welcome").await;
    assert_eq!(welcome["protocol"]["major"], 1);
    ws
}

async fn admin(app: &TestApp, path: &str) -> Value {
    app.get_json_as(ADMIN_KEY, path).await
}

async fn browser_refresh(app: &TestApp, email: &str) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/admin/browser-refresh"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn credentials_of(account: &SimAccount) -> Value {
    json!({
        "cookies": [{ "name": "__Secure-C_SES", "value": account.c_ses, "domain": ".gemini.google" }],
        "authorization": "Bearer relogin-authorization-value",
        "configId": account.config_id,
        "csesidx": account.csesidx,
    })
}

#[tokio::test]
async fn a_worker_must_authenticate_with_the_header_before_the_upgrade() {
    let app = server_app(1, json!({})).await;
    let in_url = format!("?secret={SECRET}");
    let cases: Vec<(&str, Option<String>)> = vec![
        ("", None),
        ("", Some("Bearer wrong-secret-value-123".to_owned())),
        ("", Some(format!("Basic {SECRET}"))),
        (&in_url, None),
        ("?key=x", Some(format!("Bearer {SECRET}"))),
    ];
    for (suffix, authorization) in &cases {
        let (status, body) = open(&app, suffix, authorization.as_deref())
            .await
            .err()
            .unwrap_or_else(|| panic!("upgraded: {suffix} {authorization:?}"));
        assert_eq!(status, 401, "{suffix} {authorization:?}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(body["error"].is_string(), "{body}");
        assert!(!body.to_string().contains(SECRET), "{body}");
        assert!(!body.to_string().contains("wrong-secret"), "{body}");
    }
    // A valid header plus a secret in the URL is refused too.
    let Err((status, _)) = open(
        &app,
        &format!("?secret={SECRET}"),
        Some(&format!("Bearer {SECRET}")),
    )
    .await
    else {
        panic!("upgraded with a secret in the URL");
    };
    assert_eq!(status, 401);
    // The right header alone upgrades.
    let mut ws = connect(&app).await;
    send(&mut ws, hello("w-ok", 1, 1)).await;
    expect(&mut ws, "welcome").await;
}

#[tokio::test]
async fn local_mode_runs_no_worker_endpoint() {
    let app =
        spawn_app_with(TestOptions::default().config(json!({ "admin_keys": [ADMIN_KEY] }))).await;
    let Err((status, _)) = open(&app, "", Some(&format!("Bearer {SECRET}"))).await else {
        panic!("upgraded in local mode");
    };
    assert_eq!(status, 404);
    // The task hub runs in local mode too (its worker is in-process): a re-login is queued.
    let (status, body) = browser_refresh(&app, &app.accounts[0].email).await;
    assert_eq!(status, 202, "{body}");
    assert!(body["task"].as_str().is_some(), "{body}");
}

#[tokio::test]
async fn an_incompatible_worker_is_refused_with_a_reason() {
    let app = server_app(1, json!({})).await;
    let mut ws = connect(&app).await;
    send(&mut ws, hello("w-old", 2, 1)).await;
    let refused = expect(&mut ws, "refused").await;
    assert_eq!(refused["code"], 4002, "{refused}");
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 4002);
    assert!(reason.contains("protocol 2.0"), "{reason}");
}

#[tokio::test]
async fn hostile_frames_close_only_their_own_connection() {
    let app = server_app(1, json!({})).await;
    let mut good = welcomed(&app, "w-good", 1).await;

    let oversized = format!(
        "{{\"type\":\"heartbeat\",\"running\":[],\"pad\":\"{}\"}}",
        "x".repeat(300 * 1024)
    );
    let never_leased = json!({
        "type": "result", "task": "t999-never",
        "outcome": { "status": "failed", "reason": "wrong_code", "message": "no" },
    })
    .to_string();
    let cases: Vec<(&str, Message, u16)> = vec![
        ("oversized", Message::text(oversized), 4004),
        ("unknown type", Message::text(r#"{"type":"explode"}"#), 4003),
        ("malformed", Message::text(r#"{"type":"heartbeat","#), 4000),
        ("binary", Message::binary(vec![1u8, 2, 3]), 4000),
        ("never leased", Message::text(never_leased), 4005),
    ];
    for (name, frame, code) in cases {
        let mut hostile = welcomed(&app, &format!("w-{}", name.replace(' ', "-")), 1).await;
        hostile.send(frame).await.unwrap();
        let (got, reason) = closed(&mut hostile).await;
        assert_eq!(got, code, "{name}: {reason}");
        assert!(!reason.is_empty(), "{name}");
    }
    // Before hello, anything else is a protocol violation.
    let mut early = connect(&app).await;
    send(&mut early, json!({ "type": "heartbeat", "running": [] })).await;
    assert_eq!(closed(&mut early).await.0, 4005);

    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // The good worker is still connected and still served.
    send(&mut good, json!({ "type": "heartbeat", "running": [] })).await;
    expect(&mut good, "heartbeat_ack").await;
    let (status, body) = browser_refresh(&app, &app.accounts[0].email).await;
    assert_eq!(status, 202, "{body}");
    let task = expect(&mut good, "task").await;
    assert_eq!(task["id"], body["task"]);
    assert_eq!(task["spec"]["kind"], "relogin");
    let workers = admin(&app, "/admin/workers").await;
    assert_eq!(
        workers["count"], 1,
        "only the good worker is left: {workers}"
    );
}

#[tokio::test]
async fn a_relogin_task_moves_on_disconnect_and_its_result_makes_the_account_serve_again() {
    let app = server_app(1, json!({})).await;
    let old = app.accounts[0].clone();
    // The account's cookies die.
    app.sim.add_fault(
        FaultRule::always(Endpoint::GetOxsrf, Fault::Unauthorized).for_account(&old.csesidx),
    );
    let r = app.chat(chat_body("gemini-2.5-flash", "x", false)).await;
    assert_ne!(r.status(), 200);
    let accounts = admin(&app, "/admin/accounts").await;
    assert_eq!(
        accounts["accounts"][0]["state"], "needs_relogin",
        "{accounts}"
    );

    let mut w1 = welcomed(&app, "w-one", 1).await;
    let mut w2 = welcomed(&app, "w-two", 1).await;
    let (status, body) = browser_refresh(&app, &old.email).await;
    assert_eq!(status, 202, "{body}");
    let task_id = body["task"].as_str().unwrap().to_owned();
    // Queueing it again returns the same task.
    let (_, again) = browser_refresh(&app, &old.email).await;
    assert_eq!(again["task"], task_id.as_str());
    assert_eq!(again["created"], false);

    // Exactly one worker gets it.
    let first = next_json(&mut w1, Duration::from_secs(2)).await;
    let second = next_json(&mut w2, Duration::from_millis(500)).await;
    let (mut holder, mut other, task) = match (first, second) {
        (Some(t), None) => (w1, w2, t),
        (None, Some(t)) => (w2, w1, t),
        both => panic!("not exactly one holder: {both:?}"),
    };
    assert_eq!(task["type"], "task");
    assert_eq!(task["id"], task_id.as_str());
    assert_eq!(task["attempt"], 1);
    assert_eq!(task["spec"]["account"], old.email.as_str());
    send(&mut holder, json!({ "type": "accepted", "task": task_id })).await;
    assert!(
        next_json(&mut other, Duration::from_millis(300))
            .await
            .is_none()
    );
    let tasks = admin(&app, "/admin/tasks").await;
    assert_eq!(tasks["leased"], 1, "{tasks}");
    assert_eq!(tasks["tasks"][0]["attempts"], 1, "{tasks}");

    // The holder goes away mid-task: the other worker gets it, attempt 2.
    holder.close(None).await.unwrap();
    drop(holder);
    let moved = expect(&mut other, "task").await;
    assert_eq!(moved["id"], task_id.as_str());
    assert_eq!(moved["attempt"], 2);
    send(&mut other, json!({ "type": "accepted", "task": task_id })).await;

    // New credentials (a new browser session) come back.
    let fresh = SimAccount {
        email: old.email.clone(),
        ..SimAccount::demo(7)
    };
    app.sim.add_account(fresh.clone());
    let result = json!({
        "type": "result", "task": task_id,
        "outcome": { "status": "relogged_in", "credentials": credentials_of(&fresh) },
    });
    send(&mut other, result.clone()).await;

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let accounts = admin(&app, "/admin/accounts").await;
        if accounts["accounts"][0]["state"] == "ready" {
            assert!(!accounts.to_string().contains(&fresh.c_ses), "{accounts}");
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {accounts}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = app
        .chat(chat_body("gemini-2.5-flash", "hello", false))
        .await;
    assert_eq!(r.status(), 200);
    let mints = app.sim.requests(Endpoint::GetOxsrf);
    let last = mints.last().unwrap();
    assert_eq!(last.csesidx.as_deref(), Some(fresh.csesidx.as_str()));
    assert_eq!(last.status, 200);

    // A duplicate result changes nothing and keeps the connection.
    let before = admin(&app, "/admin/tasks").await;
    let stale = SimAccount {
        email: old.email.clone(),
        ..SimAccount::demo(8)
    };
    send(
        &mut other,
        json!({
            "type": "result", "task": task_id,
            "outcome": { "status": "relogged_in", "credentials": credentials_of(&stale) },
        }),
    )
    .await;
    assert!(
        stays_open(&mut other, Duration::from_millis(500)).await,
        "a duplicate result from the worker that held the task does not close its connection"
    );
    let after = admin(&app, "/admin/tasks").await;
    assert_eq!(before, after);
    assert_eq!(after["finished"][0]["state"], "completed", "{after}");
    assert_eq!(after["finished"][0]["attempts"], 2, "{after}");
    let r = app
        .chat(chat_body("gemini-2.5-flash", "hello", false))
        .await;
    assert_eq!(r.status(), 200);
    let last = app.sim.requests(Endpoint::GetOxsrf);
    assert!(
        last.iter()
            .all(|m| m.csesidx.as_deref() != Some(stale.csesidx.as_str())),
        "the duplicate's credentials were never used"
    );
    // No credential in the operator's views.
    let views = format!(
        "{}{}",
        admin(&app, "/admin/tasks").await,
        admin(&app, "/admin/workers").await
    );
    assert!(!views.contains(&fresh.c_ses) && !views.contains("relogin-authorization"));
}

#[tokio::test]
async fn an_expired_lease_is_cancelled_and_the_task_reassigned() {
    let app = server_app(1, json!({ "pool_server": { "lease_sec": 1 } })).await;
    let mut w1 = welcomed(&app, "w-slow", 1).await;
    let (status, body) = browser_refresh(&app, &app.accounts[0].email).await;
    assert_eq!(status, 202, "{body}");
    let task = expect(&mut w1, "task").await;
    assert_eq!(task["lease_ms"], 1000);
    send(&mut w1, json!({ "type": "accepted", "task": task["id"] })).await;
    let mut w2 = welcomed(&app, "w-fresh", 1).await;
    // w1 never renews the lease (no heartbeat lists the task).
    let cancel = expect(&mut w1, "cancel").await;
    assert_eq!(cancel["task"], task["id"]);
    assert_eq!(cancel["reason"], "lease_expired");
    let moved = expect(&mut w2, "task").await;
    assert_eq!(moved["id"], task["id"]);
    assert_eq!(moved["attempt"], 2);
    // w2 keeps it alive with heartbeats listing it: past several lease durations it is still
    // w2's.
    for _ in 0..6 {
        send(
            &mut w2,
            json!({ "type": "heartbeat", "running": [task["id"]] }),
        )
        .await;
        expect(&mut w2, "heartbeat_ack").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let tasks = admin(&app, "/admin/tasks").await;
    assert_eq!(tasks["tasks"][0]["worker"], "w-fresh", "{tasks}");
    assert_eq!(tasks["tasks"][0]["attempts"], 2, "{tasks}");
    // The late result from w1 changes nothing (w1 held it before: no violation).
    send(
        &mut w1,
        json!({ "type": "result", "task": task["id"],
                "outcome": { "status": "failed", "reason": "cancelled", "message": "late" } }),
    )
    .await;
    assert!(stays_open(&mut w1, Duration::from_millis(500)).await);
    let after = admin(&app, "/admin/tasks").await;
    assert_eq!(after["tasks"][0]["failures"], 0, "{after}");
    assert_eq!(after["tasks"][0]["worker"], "w-fresh", "{after}");
}

#[tokio::test]
async fn a_failed_result_ends_its_task_and_unknown_accounts_are_404() {
    let app = server_app(1, json!({ "pool": { "browser_refresh_max_retry": 2 } })).await;
    let (status, _) = browser_refresh(&app, "nobody@example.com").await;
    assert_eq!(status, 404);
    let mut w = welcomed(&app, "w-fail", 1).await;
    // The operator asks for a re-login of an account that serves: one attempt, no budget (the
    // pool counts attempts only for an account waiting for a re-login).
    let (_, body) = browser_refresh(&app, &app.accounts[0].email).await;
    let task = expect(&mut w, "task").await;
    assert_eq!(task["id"], body["task"]);
    fail(&mut w, &task).await;
    assert!(
        next_json(&mut w, Duration::from_millis(500))
            .await
            .is_none()
    );
    let tasks = admin(&app, "/admin/tasks").await;
    assert_eq!(tasks["queued"], 0, "{tasks}");
    let failed = &tasks["finished"][0];
    assert_eq!(failed["state"], "failed", "{tasks}");
    assert_eq!(failed["failures"], 1, "{tasks}");
    assert_eq!(
        failed["last_error"], "wrong_code: the page said no",
        "{tasks}"
    );
    let accounts = admin(&app, "/admin/accounts").await;
    assert_eq!(accounts["accounts"][0]["state"], "ready", "{accounts}");
}

/// Answers `task` with `failed`.
async fn fail(ws: &mut Ws, task: &Value) {
    send(
        ws,
        json!({ "type": "result", "task": task["id"],
                "outcome": { "status": "failed", "reason": "wrong_code", "message": "the page said no" } }),
    )
    .await;
}

/// Makes `account`'s cookies die and sends requests until the pool parks it in `needs_relogin`.
async fn kill_cookies(app: &TestApp, account: &SimAccount) {
    app.sim.add_fault(
        FaultRule::always(Endpoint::GetOxsrf, Fault::Unauthorized).for_account(&account.csesidx),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let _ = app.chat(chat_body("gemini-2.5-flash", "x", false)).await;
        if account_view(app, &account.email)
            .await
            .map(|a| a["state"].clone())
            == Some(json!("needs_relogin"))
        {
            return;
        }
        assert!(Instant::now() < deadline, "never needs_relogin");
    }
}

/// The account's entry in `/admin/accounts` (`None` once it is gone).
async fn account_view(app: &TestApp, email: &str) -> Option<Value> {
    let accounts = admin(app, "/admin/accounts").await;
    accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["email"] == email)
        .cloned()
}

/// A worker answers every re-login task with `failed`: each task is one attempt of the pool's
/// budget (`pool.browser_refresh_max_retry`), a new task per attempt, and once the budget is spent
/// `expired_action` applies and no further task is created.
async fn fail_every_relogin(app: &TestApp, w: &mut Ws, budget: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..budget {
        let task = expect(w, "task").await;
        assert_eq!(task["spec"]["kind"], "relogin");
        assert_eq!(task["attempt"], 1, "a new task per attempt: {task}");
        let id = task["id"].as_str().unwrap().to_owned();
        assert!(!ids.contains(&id), "{id} came twice");
        ids.push(id);
        fail(w, &task).await;
    }
    // Not a tight loop: the budget is spent, nothing more comes.
    assert!(
        next_json(w, Duration::from_secs(1)).await.is_none(),
        "a task after the budget was spent"
    );
    let tasks = admin(app, "/admin/tasks").await;
    assert_eq!(tasks["queued"], 0, "{tasks}");
    assert_eq!(tasks["leased"], 0, "{tasks}");
    let finished = tasks["finished"].as_array().unwrap();
    assert_eq!(finished.len(), budget, "{tasks}");
    assert!(finished.iter().all(|t| t["state"] == "failed"), "{tasks}");
    ids
}

#[tokio::test]
async fn failed_relogins_spend_the_budget_then_expired_action_queue_disables_the_account() {
    let app = server_app(
        2,
        // No backoff between attempts here (tests/tests/local_worker.rs tests the backoff).
        json!({ "pool": { "browser_refresh_max_retry": 3, "browser_refresh_backoff_sec": 0 },
                "pool_server": { "expired_action": "queue" } }),
    )
    .await;
    let mut w = welcomed(&app, "w-hopeless", 1).await;
    let dead = app.accounts[1].clone();
    kill_cookies(&app, &dead).await;
    fail_every_relogin(&app, &mut w, 3).await;
    let view = account_view(&app, &dead.email).await.unwrap();
    assert_eq!(view["state"], "disabled", "{view}");
    assert_eq!(
        view["state_reason"],
        "re-login exhausted; waiting for the operator (new cookies or enable)",
        "{view}"
    );
    assert_eq!(view["relogin_attempts"], 3, "{view}");
    assert_eq!(view["relogin_pending"], false, "{view}");
    assert_eq!(view["last_error"]["kind"], "relogin_failed", "{view}");
    assert_eq!(
        view["last_error"]["message"], "wrong_code: the page said no",
        "{view}"
    );
    // The other account still serves.
    let r = app.chat(chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn failed_relogins_spend_the_budget_then_expired_action_delete_retires_the_file() {
    let app = server_app(
        2,
        json!({ "pool": { "browser_refresh_max_retry": 1 },
                "pool_server": { "expired_action": "delete" } }),
    )
    .await;
    let mut w = welcomed(&app, "w-hopeless", 1).await;
    let dead = app.accounts[0].clone();
    kill_cookies(&app, &dead).await;
    fail_every_relogin(&app, &mut w, 1).await;
    assert!(account_view(&app, &dead.email).await.is_none());
    let file = format!("{}.json", dead.email);
    let moved = app.data_dir.path().join("expired").join(&file);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !moved.exists() {
        assert!(Instant::now() < deadline, "{} never moved", file);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!app.data_dir.path().join(&file).exists());
}

#[tokio::test]
async fn a_silent_worker_is_closed_after_the_missed_heartbeats() {
    let app = server_app(1, json!({ "pool_server": { "heartbeat_interval_sec": 1 } })).await;
    let mut chatty = welcomed(&app, "w-chatty", 1).await;
    let mut silent = connect(&app).await;
    // Taken before the hello: the gateway's silence clock cannot start earlier than this
    // (measured after the welcome, the welcome's own latency made 3 s look like 2.9994 s).
    let started = Instant::now();
    send(&mut silent, hello("w-silent", 1, 1)).await;
    let welcome = expect(&mut silent, "welcome").await;
    assert_eq!(welcome["heartbeat_interval_ms"], 1000);
    let keep_alive = async {
        loop {
            send(&mut chatty, json!({ "type": "heartbeat", "running": [] })).await;
            expect(&mut chatty, "heartbeat_ack").await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let (code, reason) = tokio::select! {
        closed = closed(&mut silent) => closed,
        () = keep_alive => unreachable!(),
    };
    assert_eq!(code, 4006, "{reason}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A worker that keeps sending is kept.
    send(&mut chatty, json!({ "type": "heartbeat", "running": [] })).await;
    expect(&mut chatty, "heartbeat_ack").await;
    let workers = admin(&app, "/admin/workers").await;
    assert_eq!(workers["count"], 1, "{workers}");
    assert_eq!(workers["workers"][0]["id"], "w-chatty", "{workers}");
    assert!(
        workers["workers"][0]["last_heartbeat"].is_u64(),
        "{workers}"
    );
}

#[tokio::test]
async fn a_heartbeat_listing_more_tasks_than_the_capacity_is_a_violation() {
    let app = server_app(1, json!({})).await;
    let mut ws = welcomed(&app, "w-greedy", 1).await;
    send(
        &mut ws,
        json!({ "type": "heartbeat", "running": ["t1-a", "t2-b"] }),
    )
    .await;
    assert_eq!(closed(&mut ws).await.0, 4005);
}

#[tokio::test]
async fn an_account_whose_cookies_die_is_queued_for_a_relogin_by_the_pool() {
    let app = server_app(2, json!({})).await;
    let mut w = welcomed(&app, "w-watch", 2).await;
    let dead = app.accounts[1].clone();
    app.sim.add_fault(
        FaultRule::always(Endpoint::GetOxsrf, Fault::Unauthorized).for_account(&dead.csesidx),
    );
    // Requests until the pool has tried (and refused) the dead account.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let _ = app.chat(chat_body("gemini-2.5-flash", "x", false)).await;
        let accounts = admin(&app, "/admin/accounts").await;
        let state = accounts["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["email"] == dead.email.as_str())
            .map(|a| a["state"].clone());
        if state == Some(json!("needs_relogin")) {
            break;
        }
        assert!(Instant::now() < deadline, "never needs_relogin: {accounts}");
    }
    // No admin call: the pool's re-login request became a task.
    let task = expect(&mut w, "task").await;
    assert_eq!(task["spec"]["kind"], "relogin");
    assert_eq!(task["spec"]["account"], dead.email.as_str());
    let (_, body) = browser_refresh(&app, &dead.email).await;
    assert_eq!(body["task"], task["id"]);
    assert_eq!(body["created"], false);
}

async fn admin_post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    app.post_json_as(ADMIN_KEY, path, &body).await
}

#[tokio::test]
async fn an_operator_code_reaches_the_worker_holding_the_relogin_and_mailboxes_come_from_config() {
    let app = server_app(
        2,
        json!({ "otp": {
            "operator_timeout_sec": 42,
            "accounts": { "demo1@example.com": {
                "host": "imap.example.com", "username": "catch-all", "password": "imap-pass-secret-1",
            } },
        } }),
    )
    .await;
    let mut w = welcomed(&app, "w-otp", 2).await;
    let typed = app.accounts[0].clone();
    let otp = format!("/admin/accounts/{}/otp", typed.email);
    // No task leased yet: 409.
    let (status, body) = admin_post(&app, &otp, json!({ "code": "AB12CD" })).await;
    assert_eq!(status, 409, "{body}");

    let (status, body) = browser_refresh(&app, &typed.email).await;
    assert_eq!(status, 202, "{body}");
    let task = expect(&mut w, "task").await;
    let id = task["id"].as_str().unwrap().to_owned();
    // No mailbox for this account: the operator types the code, within otp.operator_timeout_sec.
    assert_eq!(
        task["spec"]["otp"],
        json!({ "source": "operator", "timeout_ms": 42_000 }),
        "{task}"
    );
    send(&mut w, json!({ "type": "accepted", "task": id })).await;
    send(
        &mut w,
        json!({ "type": "progress", "task": id, "stage": "waiting_for_code" }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let tasks = admin(&app, "/admin/tasks").await;
        if tasks["tasks"][0]["waiting_for_code"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "never waiting: {tasks}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let view = account_view(&app, &typed.email).await.unwrap();
    assert_eq!(view["task"]["id"], id.as_str(), "{view}");
    assert_eq!(view["task"]["worker"], "w-otp", "{view}");
    assert_eq!(view["task"]["waiting_for_code"], true, "{view}");

    let (status, body) = admin_post(&app, &otp, json!({ "code": "AB12CD" })).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({ "task": id, "delivered": true }));
    let code = expect(&mut w, "otp").await;
    assert_eq!(code, json!({ "type": "otp", "task": id, "code": "AB12CD" }));

    // The other account has its own mailbox (from otp.accounts), sent to the holder only.
    let mailbox = app.accounts[1].clone();
    let (status, _) = browser_refresh(&app, &mailbox.email).await;
    assert_eq!(status, 202);
    let task = expect(&mut w, "task").await;
    let otp_source = &task["spec"]["otp"];
    assert_eq!(otp_source["source"], "imap", "{task}");
    assert_eq!(otp_source["host"], "imap.example.com");
    assert_eq!(otp_source["port"], 993);
    assert_eq!(otp_source["tls"], true);
    assert_eq!(otp_source["folder"], "INBOX");
    assert_eq!(otp_source["password"], "imap-pass-secret-1");
    assert_eq!(otp_source["timeout_ms"], 300_000);
    // Neither the mailbox password nor the code shows in the admin views.
    for path in ["/admin/tasks", "/admin/accounts", "/admin/workers"] {
        let view = admin(&app, path).await.to_string();
        assert!(!view.contains("imap-pass-secret-1"), "{path}: {view}");
        assert!(!view.contains("AB12CD"), "{path}: {view}");
    }
}

#[tokio::test]
async fn a_probe_goes_to_a_worker_and_rejected_credentials_send_the_account_to_relogin() {
    let app = server_app(1, json!({})).await;
    let account = app.accounts[0].clone();
    let (status, _) = admin_post(&app, "/admin/accounts/nobody@example.com/probe", json!({})).await;
    assert_eq!(status, 404);
    let mut w = welcomed(&app, "w-probe", 1).await;
    let (status, body) = admin_post(
        &app,
        &format!("/admin/accounts/{}/probe", account.email),
        json!({}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["task"].as_str().unwrap().to_owned();
    let task = expect(&mut w, "task").await;
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["spec"]["kind"], "probe", "{task}");
    assert_eq!(task["spec"]["account"], account.email.as_str());
    // The account's current credentials travel with the task, to this worker only.
    let credentials = &task["spec"]["credentials"];
    assert_eq!(credentials["csesidx"], account.csesidx.as_str(), "{task}");
    assert_eq!(credentials["configId"], account.config_id.as_str());
    assert!(
        credentials["cookies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "__Secure-C_SES" && c["value"] == account.c_ses.as_str()),
        "{task}"
    );
    send(&mut w, json!({ "type": "accepted", "task": id })).await;
    send(
        &mut w,
        json!({ "type": "result", "task": id,
                "outcome": { "status": "probed", "verdict": "credentials_rejected" } }),
    )
    .await;
    // The pool treats it as a refused token fetch: the account needs a re-login, and the
    // re-login task follows to the worker.
    let relogin = expect(&mut w, "task").await;
    assert_eq!(relogin["spec"]["kind"], "relogin", "{relogin}");
    let view = account_view(&app, &account.email).await.unwrap();
    assert_eq!(view["state"], "needs_relogin", "{view}");
    assert_eq!(view["task"]["kind"], "relogin", "{view}");
    let tasks = admin(&app, "/admin/tasks").await;
    let probe = tasks["finished"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert_eq!(probe["state"], "completed", "{tasks}");
}

#[tokio::test]
async fn a_failure_reported_after_new_credentials_arrived_changes_nothing() {
    let app = server_app(1, json!({ "pool": { "browser_refresh_max_retry": 3 } })).await;
    let mut w = welcomed(&app, "w-late", 1).await;
    let old = app.accounts[0].clone();
    kill_cookies(&app, &old).await;
    let task = expect(&mut w, "task").await;
    send(&mut w, json!({ "type": "accepted", "task": task["id"] })).await;
    // Meanwhile the operator imports fresh credentials: a new generation, ready again.
    let fresh = SimAccount {
        email: old.email.clone(),
        ..SimAccount::demo(9)
    };
    app.sim.add_account(fresh.clone());
    business2api_tests::write_account_file(app.data_dir.path(), &fresh);
    let (status, body) = admin_post(&app, "/admin/refresh", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while account_view(&app, &old.email).await.unwrap()["state"] != "ready" {
        assert!(Instant::now() < deadline, "never ready after the import");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The worker's late failure is about the old credentials: ignored.
    fail(&mut w, &task).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = account_view(&app, &old.email).await.unwrap();
    assert_eq!(view["state"], "ready", "{view}");
    assert_eq!(view["relogin_attempts"], 0, "{view}");
    assert_ne!(view["last_error"]["kind"], "relogin_failed", "{view}");
    let r = app.chat(chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(r.status(), 200);
}
