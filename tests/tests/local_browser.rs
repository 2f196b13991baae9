//! Local mode's in-process worker re-logging accounts in real Chromium (chromedriver), against
//! the simulator's login pages: the code read from the operator's mailbox over IMAP, the code
//! typed by the operator into the admin API, and a mailbox that only ever carries wrong codes
//! (the account's re-login budget is spent, then `expired_action` applies).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use business2api_tests::{
    TEST_KEY, TestApp, base_config, chat_body, merge, start_app_full, write_account_file,
};
use serde_json::{Value, json};
use upstream_sim::imap::ImapServer;
use upstream_sim::{LoginScript, SimAccount, Simulator};

const ADMIN: &str = "admin-key-for-local-browser-tests-0123";
const MAIL_USER: &str = "codes@operator.example";
const MAIL_PASSWORD: &str = "imap-password-for-the-tests-0123";

/// A simulator with one account, its mailbox served over IMAP (a catch-all user receives
/// every code e-mail), and a local-mode gateway whose in-process worker re-logs in Chromium.
async fn local_app(extra: Value, with_mailbox: bool) -> (TestApp, Option<ImapServer>) {
    business2api_tests::init();
    let sim = Simulator::start().await.unwrap();
    let mailbox = sim.mailbox();
    mailbox.add_user(MAIL_USER, MAIL_PASSWORD);
    mailbox.set_catch_all(MAIL_USER);
    let imap = with_mailbox.then(|| ImapServer::start(mailbox).unwrap());
    let data_dir = tempfile::tempdir().unwrap();
    let accounts = vec![SimAccount::demo(0)];
    for a in &accounts {
        sim.add_account(a.clone());
        write_account_file(data_dir.path(), a);
    }
    let mut config = base_config(data_dir.path(), &sim);
    merge(
        &mut config,
        json!({
            "api_keys": [TEST_KEY],
            "admin_keys": [ADMIN],
            "browser": {
                "login_url": format!("{}/login?continueUrl={}/", sim.base_url(), sim.base_url()),
                "step_timeout_sec": 60,
            },
        }),
    );
    if let Some(imap) = &imap {
        merge(
            &mut config,
            json!({ "otp": { "imap": {
                "host": "127.0.0.1", "port": imap.port(), "tls": false,
                "username": MAIL_USER, "password": MAIL_PASSWORD, "timeout_sec": 60,
            } } }),
        );
    }
    merge(&mut config, extra);
    let app = start_app_full(sim, accounts, data_dir, config, Vec::new(), None).await;
    (app, imap)
}

async fn admin(app: &TestApp, path: &str) -> Value {
    app.get_json_as(ADMIN, path).await
}

async fn wait_for(app: &TestApp, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let v = admin(app, path).await;
        if check(&v) {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn account<'a>(accounts: &'a Value, email: &str) -> &'a Value {
    business2api_tests::account_in(accounts, email)
}

/// Kills the account's cookies at the simulator and makes one request fail on them.
async fn kill_cookies(app: &TestApp) {
    assert!(app.sim.expire_cookies(&app.accounts[0].email));
    let r = app.chat(chat_body("gemini-2.5-flash", "x", false)).await;
    assert!(!r.status().is_success(), "{}", r.status());
}

async fn ready_and_served(app: &TestApp) {
    let email = &app.accounts[0].email;
    wait_for(app, "/admin/accounts", "the account ready", |v| {
        account(v, email)["state"] == "ready"
    })
    .await;
    let r = app
        .chat(chat_body("gemini-2.5-flash", "hello", false))
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(app.sim.logins(email), 1);
    assert_ne!(
        app.sim.current_c_ses(email).unwrap(),
        app.accounts[0].c_ses,
        "the account serves with the login's new cookie"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_relogs_in_with_the_code_from_the_operators_mailbox() {
    let _one = upstream_sim::one_browser_at_a_time().unwrap();
    let (app, imap) = local_app(json!({}), true).await;
    kill_cookies(&app).await;
    let tasks = wait_for(&app, "/admin/tasks", "the completed re-login", |v| {
        v["finished"]
            .as_array()
            .is_some_and(|f| f.iter().any(|t| t["state"] == "completed"))
    })
    .await;
    ready_and_served(&app).await;
    let email = &app.accounts[0].email;
    let codes = app.sim.sent_codes(email);
    assert_eq!(codes.len(), 1, "one code mailed");
    // The mailbox's password and the code stay out of the admin views.
    let views = format!("{tasks}{}", admin(&app, "/admin/accounts").await);
    assert!(!views.contains(MAIL_PASSWORD), "{views}");
    assert!(!views.contains(&codes[0]), "{views}");
    drop(imap);
    app.stop().await;
}

/// The re-login leaves through the account's egress proxy, one with a password (Chromium gets a
/// loopback relay that authenticates to it), as its API traffic does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_relogin_leaves_through_the_accounts_proxy_with_its_password() {
    let _one = upstream_sim::one_browser_at_a_time().unwrap();
    let exit = std::net::Ipv4Addr::new(127, 0, 0, 31);
    let proxy = business2api_tests::proxies::ProxyProcess::microsocks(
        Some(("browser", "browser-proxy-pw")),
        exit,
    )
    .unwrap();
    let (app, imap) = local_app(json!({ "proxy": proxy.url() }), true).await;
    kill_cookies(&app).await;
    wait_for(&app, "/admin/tasks", "the completed re-login", |v| {
        v["finished"]
            .as_array()
            .is_some_and(|f| f.iter().any(|t| t["state"] == "completed"))
    })
    .await;
    ready_and_served(&app).await;
    let peers = app.sim.login_peers(&app.accounts[0].email);
    assert!(!peers.is_empty());
    for peer in peers {
        assert_eq!(
            peer.ip(),
            std::net::IpAddr::V4(exit),
            "the browser went around the proxy"
        );
    }
    for r in app.sim.requests(upstream_sim::Endpoint::StreamAssist) {
        assert_eq!(r.peer.unwrap().ip(), std::net::IpAddr::V4(exit));
    }
    drop(imap);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_takes_the_code_the_operator_types() {
    let _one = upstream_sim::one_browser_at_a_time().unwrap();
    let (app, _imap) = local_app(json!({}), false).await;
    let email = app.accounts[0].email.clone();
    kill_cookies(&app).await;
    wait_for(&app, "/admin/tasks", "the wait for the code", |v| {
        v["tasks"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["waiting_for_code"] == true))
    })
    .await;
    let accounts = admin(&app, "/admin/accounts").await;
    assert_eq!(account(&accounts, &email)["state"], "needs_relogin");
    let code = app.sim.sent_codes(&email).last().cloned().unwrap();
    let typed = app
        .client
        .post(app.url(&format!("/admin/accounts/{email}/otp")))
        .bearer_auth(ADMIN)
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(typed.status(), 202);
    ready_and_served(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_spend_the_relogin_budget_then_the_expired_action_applies() {
    let _one = upstream_sim::one_browser_at_a_time().unwrap();
    let (app, _imap) = local_app(
        json!({ "pool": { "browser_refresh_max_retry": 2, "browser_refresh_backoff_sec": 1 } }),
        true,
    )
    .await;
    let email = app.accounts[0].email.clone();
    app.sim
        .set_login_script(&email, LoginScript::WrongCodeMailed);
    kill_cookies(&app).await;
    let tasks = wait_for(&app, "/admin/tasks", "two failed re-logins", |v| {
        v["finished"].as_array().is_some_and(|f| {
            f.iter()
                .filter(|t| {
                    t["state"] == "failed"
                        && t["last_error"]
                            .as_str()
                            .is_some_and(|e| e.starts_with("wrong_code"))
                })
                .count()
                == 2
        })
    })
    .await;
    let accounts = wait_for(&app, "/admin/accounts", "the exhausted account", |v| {
        account(v, &email)["state"] == "disabled"
    })
    .await;
    let a = account(&accounts, &email);
    assert_eq!(a["relogin_attempts"], 2, "{a}");
    assert!(
        a["state_reason"]
            .as_str()
            .is_some_and(|r| r.contains("re-login exhausted")),
        "{a}"
    );
    // No third attempt: the budget is spent (wait past a backoff that would allow one).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = admin(&app, "/admin/tasks").await;
    assert!(
        later["tasks"].as_array().unwrap().is_empty(),
        "no task queued after the budget: {later}"
    );
    assert_eq!(
        later["finished"].as_array().unwrap().len(),
        tasks["finished"].as_array().unwrap().len()
    );
    assert_eq!(app.sim.logins(&email), 0);
    assert_eq!(app.sim.sent_codes(&email).len(), 2, "two logins tried");
    app.stop().await;
}
