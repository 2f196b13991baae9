//! The two halves of the worker protocol as shipped, end to end: the real binary in server
//! mode and the real binary in client mode (two worker processes, each re-logging in real
//! Chromium through chromedriver), against the simulator's login pages. An account whose cookies
//! die makes a request fail; the server queues a re-login; the first worker takes it and waits
//! for the one-time code; that worker is killed; the task goes to the second worker; the
//! operator types the code; the second worker logs in, the server stores the new credentials
//! and the next request is served. A worker with the wrong secret is never listed. Neither
//! process writes a secret, cookie or code to its log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use upstream_sim::Simulator;

mod common;

const SECRET: &str = "server-and-worker-secret-0123456789";
const ADMIN: &str = "admin-key-for-the-worker-test-0123";
const API_KEY: &str = "api-key-for-the-worker-test-0123";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &Value, dir: &std::path::Path, name: &str) -> Killed {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, config.to_string()).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = common::gateway_command()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .arg("--no-watch")
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Killed(child)
}

/// The process groups of the chromedrivers `parent` started (each chromedriver leads a group
/// that its Chromium joins).
fn chromedriver_groups_of(parent: u32) -> Vec<u32> {
    let mut groups = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let Some((left, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        if left.contains("(chromedriver")
            && fields.get(1) == Some(&parent.to_string().as_str())
            && let Some(pgrp) = fields.get(2).and_then(|p| p.parse().ok())
        {
            groups.push(pgrp);
        }
    }
    groups
}

/// Kills process groups when dropped (a SIGKILLed worker cannot end its own browsers).
struct KillGroups(Vec<u32>);

impl Drop for KillGroups {
    fn drop(&mut self) {
        for group in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .status();
        }
    }
}

async fn admin_get(client: &reqwest::Client, base: &str, path: &str) -> Option<Value> {
    let response = client
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

/// Polls `check` on `GET path` until it holds (or 60 s pass).
async fn wait_for(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        if let Some(v) = admin_get(client, base, path).await
            && check(&v)
        {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}: {:?}",
            admin_get(client, base, path).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The re-login task of `email` that is leased and waiting for its code, by a worker other
/// than `not_by`: its (id, worker).
fn waiting_task(tasks: &Value, email: &str, not_by: Option<&str>) -> Option<(String, String)> {
    tasks["tasks"].as_array()?.iter().find_map(|t| {
        let worker = t["worker"].as_str()?;
        (t["account"] == email
            && t["kind"] == "relogin"
            && t["waiting_for_code"] == true
            && not_by != Some(worker))
        .then(|| (t["id"].as_str().unwrap().to_owned(), worker.to_owned()))
    })
}

fn worker_config(base: &str, sim: &Simulator, secret: &str, threads: u32, data: &str) -> Value {
    json!({
        "data_dir": data,
        "pool_server": { "enable": true, "mode": "client", "server_addr": base,
                         "secret": secret, "client_threads": threads },
        "browser": {
            "login_url": format!("{}/login?continueUrl={}/", sim.base_url(), sim.base_url()),
            "step_timeout_sec": 60,
        },
    })
}

async fn chat(client: &reqwest::Client, base: &str) -> reqwest::Response {
    client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .json(&json!({
            "model": "gemini-2.5-flash",
            "messages": [{ "role": "user", "content": "hello" }],
        }))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_account_is_relogged_by_a_worker_process_after_the_first_one_dies() {
    business2api::startup::install_crypto_provider();
    let _one = upstream_sim::one_browser_at_a_time().unwrap();
    let sim = Simulator::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let accounts = common::write_demo_accounts(&sim, &data, 1);
    let email = accounts[0].email.clone();
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = start(
        &json!({
            "listen_addr": format!("127.0.0.1:{port}"),
            "data_dir": data,
            "api_keys": [API_KEY],
            "admin_keys": [ADMIN],
            "pool_server": { "enable": true, "mode": "server", "secret": SECRET,
                             "heartbeat_interval_sec": 1 },
            "pool": { "refresh_on_startup": false, "browser_refresh_max_retry": 2 },
            "gemini_business": { "auth_base_url": sim.base_url(), "api_base_url": sim.base_url() },
        }),
        dir.path(),
        "server",
    );
    let client = reqwest::Client::new();
    wait_for(&client, &base, "/admin/workers", "the server", |v| {
        v["endpoint"] == true
    })
    .await;

    // A worker with the wrong secret is refused at the upgrade and never listed.
    let intruder = start(
        &worker_config(
            &base,
            &sim,
            "not-the-secret-0123456789abcdef",
            1,
            "intruder-data",
        ),
        dir.path(),
        "intruder",
    );
    let mut first = start(
        &worker_config(&base, &sim, SECRET, 1, "first-data"),
        dir.path(),
        "first",
    );
    let workers = wait_for(&client, &base, "/admin/workers", "the first worker", |v| {
        v["count"] == 1
    })
    .await;
    assert_eq!(workers["workers"][0]["capacity"], 1, "{workers}");

    // The account's cookies die at Google: the request fails and the account needs a re-login.
    assert!(sim.expire_cookies(&email));
    let old_c_ses = accounts[0].c_ses.clone();
    let failed = chat(&client, &base).await;
    assert!(!failed.status().is_success(), "{}", failed.status());

    // The first worker takes the re-login, logs in up to the code page and waits for the code.
    let tasks = wait_for(
        &client,
        &base,
        "/admin/tasks",
        "the first worker's wait",
        |v| waiting_task(v, &email, None).is_some(),
    )
    .await;
    let (task, first_id) = waiting_task(&tasks, &email, None).unwrap();
    let accounts_view = admin_get(&client, &base, "/admin/accounts").await.unwrap();
    assert!(
        accounts_view.to_string().contains("needs_relogin"),
        "{accounts_view}"
    );
    let intruder_log = std::fs::read_to_string(dir.path().join("intruder.log")).unwrap();
    assert!(intruder_log.contains("401"), "{intruder_log}");
    drop(intruder);

    // A second worker connects; the first dies without a word (SIGKILL, its browser orphaned
    // and cleaned up by the test). The task goes to the second worker.
    let _second = start(
        &worker_config(&base, &sim, SECRET, 2, "second-data"),
        dir.path(),
        "second",
    );
    wait_for(&client, &base, "/admin/workers", "the second worker", |v| {
        v["count"] == 2
    })
    .await;
    let _orphans = KillGroups(chromedriver_groups_of(first.0.id()));
    assert!(
        !_orphans.0.is_empty(),
        "the first worker runs a chromedriver"
    );
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let tasks = wait_for(
        &client,
        &base,
        "/admin/tasks",
        "the second worker's wait",
        |v| waiting_task(v, &email, Some(&first_id)).is_some(),
    )
    .await;
    let (again, second_id) = waiting_task(&tasks, &email, Some(&first_id)).unwrap();
    assert_eq!(again, task, "the same task, leased again");
    assert_ne!(second_id, first_id);
    let view = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == task)
        .unwrap();
    assert_eq!(view["attempts"], 2, "{view}");
    assert_eq!(
        view["failures"], 0,
        "a lost lease is not a failed login: {view}"
    );

    // The operator types the code the login page mailed for the second worker's login.
    let code = sim.sent_codes(&email).last().cloned().unwrap();
    let typed = client
        .post(format!("{base}/admin/accounts/{email}/otp"))
        .bearer_auth(ADMIN)
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(typed.status(), 202, "{:?}", typed.text().await);
    let done = wait_for(&client, &base, "/admin/tasks", "the completed task", |v| {
        v["finished"].as_array().is_some_and(|f| {
            f.iter()
                .any(|t| t["id"] == task && t["state"] == "completed")
        })
    })
    .await;
    wait_for(
        &client,
        &base,
        "/admin/accounts",
        "the account ready",
        |v| {
            v["accounts"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|a| a["email"] == email && a["state"] == "ready")
            })
        },
    )
    .await;
    assert_eq!(sim.logins(&email), 1, "one login completed");
    let new_c_ses = sim.current_c_ses(&email).unwrap();
    assert_ne!(new_c_ses, old_c_ses);
    let served = chat(&client, &base).await;
    assert_eq!(served.status(), 200, "{:?}", served.text().await);
    let authorizations = sim.bootstrap_authorizations();
    assert_eq!(authorizations.len(), 1, "the app page ran once");

    // Nothing secret in what the admin sees, nor in any process's log.
    let admin_views = format!(
        "{done}{}{}",
        admin_get(&client, &base, "/admin/accounts").await.unwrap(),
        admin_get(&client, &base, "/admin/workers").await.unwrap()
    );
    for secret in [SECRET, &new_c_ses, &old_c_ses, &code, &authorizations[0]] {
        assert!(!admin_views.contains(secret), "{secret} in {admin_views}");
    }
    for log in ["server", "first", "second", "intruder"] {
        let text = std::fs::read_to_string(dir.path().join(format!("{log}.log"))).unwrap();
        for secret in [SECRET, &new_c_ses, &old_c_ses, &code] {
            assert!(!text.contains(secret), "{secret} in {log}.log:\n{text}");
        }
        let jwt = authorizations[0].trim_start_matches("Bearer ");
        assert!(!text.contains(jwt), "the JWT in {log}.log");
    }
}
