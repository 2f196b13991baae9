//! Local mode's in-process worker, through the real wiring: the gateway in local mode (no `/ws`)
//! runs the task hub and one in-process worker whose runner the test scripts. Re-login,
//! operator-typed one-time codes, probes with the production probe runner, the per-account
//! backoff between failed attempts and the credential-generation rule.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use business2api_shared::Secret;
use business2api_shared::protocol::{
    AccountCredentials, FailureReason, ProgressStage, Task, TaskKindName, TaskOutcome, TaskSpec,
    WireCookie,
};
use business2api_tests::{TestApp, TestOptions, chat_body, spawn_app_with};
use business2api_worker::{TaskContext, TaskRunner};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use upstream_sim::{Endpoint, Fault, FaultRule, SimAccount};

const ADMIN_KEY: &str = "admin-key-local-worker-0123";
const CODE: &str = "AB12CD";

/// What the scripted runner does with a re-login.
#[derive(Clone)]
enum Script {
    /// Answer these credentials at once.
    Succeed(AccountCredentials),
    /// Report `waiting_for_code`, wait for the operator's code: the right one gives these
    /// credentials, another fails with `wrong_code`.
    WaitForCode(AccountCredentials),
    /// Fail every attempt.
    Fail,
}

/// A scripted runner: re-login per [`Script`]; records when each re-login started.
struct Scripted {
    script: Script,
    started: Arc<Mutex<Vec<Instant>>>,
}

impl TaskRunner for Scripted {
    fn kinds(&self) -> Vec<TaskKindName> {
        vec![TaskKindName::Relogin]
    }

    fn run(&self, task: Task, mut ctx: TaskContext) -> BoxFuture<'static, TaskOutcome> {
        self.started.lock().unwrap().push(Instant::now());
        let script = self.script.clone();
        Box::pin(async move {
            assert!(matches!(task.spec, TaskSpec::Relogin(_)));
            ctx.progress(ProgressStage::StartingBrowser);
            match script {
                Script::Succeed(credentials) => TaskOutcome::ReloggedIn { credentials },
                Script::WaitForCode(credentials) => {
                    ctx.progress(ProgressStage::WaitingForCode);
                    match ctx.next_code().await {
                        Some(code) if code.expose() == CODE => {
                            ctx.progress(ProgressStage::CodeSubmitted);
                            TaskOutcome::ReloggedIn { credentials }
                        }
                        _ => TaskOutcome::Failed {
                            reason: FailureReason::WrongCode,
                            message: "the page said no".to_owned(),
                        },
                    }
                }
                Script::Fail => TaskOutcome::Failed {
                    reason: FailureReason::WrongCode,
                    message: "the page said no".to_owned(),
                },
            }
        })
    }
}

fn wire(account: &SimAccount) -> AccountCredentials {
    AccountCredentials {
        cookies: vec![WireCookie {
            name: "__Secure-C_SES".to_owned(),
            value: Secret::new(account.c_ses.clone()),
            domain: ".gemini.google".to_owned(),
        }],
        authorization: Secret::new("Bearer relogin-authorization-value"),
        config_id: account.config_id.clone(),
        csesidx: account.csesidx.clone(),
    }
}

/// The fresh browser session a successful re-login of account 0 captures.
fn fresh_of(old: &SimAccount) -> SimAccount {
    SimAccount {
        email: old.email.clone(),
        ..SimAccount::demo(7)
    }
}

async fn local_app(
    accounts: u32,
    extra: Value,
    script: Script,
) -> (TestApp, Arc<Mutex<Vec<Instant>>>) {
    let started = Arc::new(Mutex::new(Vec::new()));
    let mut config = json!({ "admin_keys": [ADMIN_KEY] });
    business2api_tests::merge(&mut config, extra);
    let runner = Arc::new(Scripted {
        script,
        started: Arc::clone(&started),
    });
    let app = spawn_app_with(
        TestOptions::default()
            .accounts(accounts)
            .config(config)
            .local_runner(runner),
    )
    .await;
    (app, started)
}

async fn admin(app: &TestApp, path: &str) -> Value {
    app.get_json_as(ADMIN_KEY, path).await
}

async fn admin_post(app: &TestApp, path: &str, body: Option<Value>) -> (u16, String) {
    let mut request = app.client.post(app.url(path)).bearer_auth(ADMIN_KEY);
    if let Some(b) = body {
        request = request.json(&b);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn account_view(app: &TestApp, email: &str) -> Value {
    let accounts = admin(app, "/admin/accounts").await;
    accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["email"] == email)
        .cloned()
        .unwrap_or(Value::Null)
}

/// U1 refuses the account's cookies; chats until the pool has met the refusal.
async fn kill_cookies(app: &TestApp, account: &SimAccount) {
    app.sim.add_fault(
        FaultRule::always(Endpoint::GetOxsrf, Fault::Unauthorized).for_account(&account.csesidx),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let _ = app.chat(chat_body("gemini-2.5-flash", "x", false)).await;
        let refused = app
            .sim
            .requests(Endpoint::GetOxsrf)
            .iter()
            .any(|r| r.csesidx.as_deref() == Some(account.csesidx.as_str()) && r.status == 401);
        if refused {
            return;
        }
        assert!(Instant::now() < deadline, "the cookies were never refused");
    }
}

async fn wait_for(app: &TestApp, email: &str, what: &str, test: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let view = account_view(app, email).await;
        if test(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "never {what}: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn local_mode_relogs_in_in_process_and_the_account_serves_again() {
    let old = SimAccount::demo(0);
    let fresh = fresh_of(&old);
    let (app, started) = local_app(1, json!({}), Script::Succeed(wire(&fresh))).await;
    app.sim.add_account(fresh.clone());
    // Local mode, truthfully: no worker endpoint, one in-process worker on the hub.
    assert_eq!(app.get_json("/health").await["mode"], "local");
    assert_eq!(app.get_json("/").await["mode"], "local");
    let ws = app.client.get(app.url("/ws")).send().await.unwrap();
    assert_eq!(ws.status(), 404);
    let workers = admin(&app, "/admin/workers").await;
    assert_eq!(workers["endpoint"], false, "{workers}");
    assert_eq!(workers["count"], 1, "{workers}");
    assert_eq!(workers["workers"][0]["address"], "in-process", "{workers}");
    assert_eq!(workers["workers"][0]["capacity"], 1, "{workers}");

    kill_cookies(&app, &old).await;
    // The pool asks for a re-login, the in-process worker runs it, the credentials are stored.
    let view = wait_for(&app, &old.email, "ready again", |v| {
        v["state"] == "ready" && started.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(view["relogin_attempts"], 0, "{view}");
    assert!(!view.to_string().contains(&fresh.c_ses), "{view}");
    let r = app
        .chat(chat_body("gemini-2.5-flash", "hello", false))
        .await;
    assert_eq!(r.status(), 200);
    let mints = app.sim.requests(Endpoint::GetOxsrf);
    let last = mints.last().unwrap();
    assert_eq!(last.csesidx.as_deref(), Some(fresh.csesidx.as_str()));
    let tasks = admin(&app, "/admin/tasks").await;
    assert_eq!(tasks["finished"][0]["state"], "completed", "{tasks}");
    assert_eq!(tasks["finished"][0]["worker"], Value::Null, "{tasks}");
}

#[tokio::test]
async fn an_operator_code_reaches_the_waiting_in_process_task() {
    let old = SimAccount::demo(0);
    let fresh = fresh_of(&old);
    let (app, _) = local_app(1, json!({}), Script::WaitForCode(wire(&fresh))).await;
    app.sim.add_account(fresh.clone());
    let otp = format!("/admin/accounts/{}/otp", old.email);

    // Nothing waits for a code yet: 409. Malformed codes: 400. Unknown account: 404.
    let (status, body) = admin_post(&app, &otp, Some(json!({ "code": CODE }))).await;
    assert_eq!(status, 409, "{body}");
    for bad in [
        json!({}),
        json!({ "code": "" }),
        json!({ "code": "abc" }),
        json!({ "code": "ABCDEFGHIJKLMNOPQ" }),
        json!({ "code": "AB-12!" }),
        json!({ "code": 123456 }),
    ] {
        let (status, body) = admin_post(&app, &otp, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = admin_post(&app, &otp, None).await;
    assert_eq!(status, 400);
    let (status, body) = admin_post(
        &app,
        "/admin/accounts/nobody@example.com/otp",
        Some(json!({ "code": CODE })),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // The operator queues a re-login; the task waits for the code.
    let (status, body) = admin_post(
        &app,
        "/admin/browser-refresh",
        Some(json!({ "email": old.email })),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let view = wait_for(&app, &old.email, "waiting for a code", |v| {
        v["task"]["waiting_for_code"] == true
    })
    .await;
    assert_eq!(view["task"]["kind"], "relogin", "{view}");
    assert_eq!(view["task"]["state"], "leased", "{view}");
    assert_eq!(view["task"]["attempts"], 1, "{view}");
    assert!(
        view["task"]["worker"]
            .as_str()
            .unwrap()
            .starts_with("local-"),
        "{view}"
    );
    let tasks = admin(&app, "/admin/tasks").await;
    assert_eq!(tasks["tasks"][0]["waiting_for_code"], true, "{tasks}");
    let task_id = view["task"]["id"].as_str().unwrap().to_owned();

    let (status, body) = admin_post(&app, &otp, Some(json!({ "code": CODE }))).await;
    assert_eq!(status, 202, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer, json!({ "task": task_id, "delivered": true }));
    assert!(!body.contains(CODE));
    let view = wait_for(&app, &old.email, "re-logged in", |v| {
        v["task"].is_null() && v["state"] == "ready"
    })
    .await;
    assert_eq!(view["relogin_attempts"], 0, "{view}");
    let tasks = admin(&app, "/admin/tasks").await;
    assert_eq!(tasks["finished"][0]["state"], "completed", "{tasks}");
    assert!(!tasks.to_string().contains(CODE), "{tasks}");
}

#[tokio::test]
async fn failed_attempts_wait_a_doubling_backoff_capped_at_the_retry_interval() {
    let (app, started) = local_app(
        2,
        json!({ "pool": {
            "browser_refresh_max_retry": 4,
            "browser_refresh_backoff_sec": 1,
            "relogin_retry_interval_sec": 2,
        }, "pool_server": { "expired_action": "queue" } }),
        Script::Fail,
    )
    .await;
    let dead = app.accounts[1].clone();
    kill_cookies(&app, &dead).await;
    let view = wait_for(&app, &dead.email, "out of attempts", |v| {
        v["state"] == "disabled"
    })
    .await;
    assert_eq!(view["relogin_attempts"], 4, "{view}");
    let at = started.lock().unwrap().clone();
    assert_eq!(at.len(), 4, "one task per attempt");
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // 1 s after the first failure, 2 s after the second, then capped at the retry interval.
    let slack = Duration::from_millis(900);
    assert!(
        gaps[0] >= Duration::from_secs(1) - Duration::from_millis(100),
        "{gaps:?}"
    );
    assert!(gaps[0] < Duration::from_secs(1) + slack, "{gaps:?}");
    assert!(
        gaps[1] >= Duration::from_secs(2) - Duration::from_millis(100),
        "{gaps:?}"
    );
    assert!(
        gaps[2] >= Duration::from_secs(2) - Duration::from_millis(100),
        "{gaps:?}"
    );
    assert!(gaps[2] < Duration::from_secs(2) + slack, "capped: {gaps:?}");
    // The other account served throughout.
    let r = app.chat(chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_probe_runs_in_process_with_the_gateways_token_fetch() {
    // The production runner: probes with the gateway's authenticator against the simulator.
    let app = spawn_app_with(
        TestOptions::default()
            .accounts(2)
            .config(json!({ "admin_keys": [ADMIN_KEY] })),
    )
    .await;
    let (status, body) = admin_post(&app, "/admin/accounts/nobody@example.com/probe", None).await;
    assert_eq!(status, 404, "{body}");

    // A healthy account stays ready.
    let healthy = app.accounts[0].clone();
    let (status, body) = admin_post(
        &app,
        &format!("/admin/accounts/{}/probe", healthy.email),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["task"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let tasks = admin(&app, "/admin/tasks").await;
        if let Some(done) = tasks["finished"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id.as_str())
        {
            assert_eq!(done["state"], "completed", "{tasks}");
            assert_eq!(done["kind"], "probe", "{tasks}");
            break;
        }
        assert!(Instant::now() < deadline, "probe never ended: {tasks}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(account_view(&app, &healthy.email).await["state"], "ready");

    // Refused cookies: the probe sends the account to re-login, without any chat.
    let dead = app.accounts[1].clone();
    app.sim.add_fault(
        FaultRule::always(Endpoint::GetOxsrf, Fault::Unauthorized).for_account(&dead.csesidx),
    );
    let (status, body) =
        admin_post(&app, &format!("/admin/accounts/{}/probe", dead.email), None).await;
    assert_eq!(status, 202, "{body}");
    let view = wait_for(&app, &dead.email, "needs_relogin", |v| {
        v["state"] == "needs_relogin"
    })
    .await;
    assert_eq!(view["last_error"]["kind"], "CookiesInvalid", "{view}");
    assert!(
        view["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("probe"),
        "{view}"
    );
    // The probe's token fetch came with the account's own cookie.
    let probes = app.sim.requests(Endpoint::GetOxsrf);
    assert!(
        probes
            .iter()
            .any(|r| r.csesidx.as_deref() == Some(dead.csesidx.as_str()) && r.status == 401)
    );
}
