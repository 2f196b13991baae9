//! The two halves of the worker protocol as shipped: the real binary in server mode and the
//! real binary in client mode, each in its own process. The worker dials the server's `/ws`,
//! is listed by `GET /admin/workers` with its capacity, takes a re-login task queued through
//! `POST /admin/browser-refresh`, and its answer (this build has no browser: `unsupported`)
//! reaches the task's record. A worker with the wrong secret is never listed.
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
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Killed(child)
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

/// Polls `check` on `GET path` until it holds (or 20 s pass).
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
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}: {:?}",
            admin_get(client, base, path).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_serves_the_server_process_tasks() {
    business2api::startup::install_crypto_provider();
    let sim = Simulator::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let accounts = common::write_demo_accounts(&sim, &data, 1);
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = start(
        &json!({
            "listen_addr": format!("127.0.0.1:{port}"),
            "data_dir": data,
            "api_keys": ["api-key-for-the-worker-test-0123"],
            "admin_keys": [ADMIN],
            "pool_server": { "enable": true, "mode": "server", "secret": SECRET },
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
    let _intruder = start(
        &json!({
            "pool_server": { "enable": true, "mode": "client", "server_addr": base,
                             "secret": "not-the-secret-0123456789abcdef", "client_threads": 1 },
        }),
        dir.path(),
        "intruder",
    );
    let _worker = start(
        &json!({
            "pool_server": { "enable": true, "mode": "client", "server_addr": base,
                             "secret": SECRET, "client_threads": 2 },
        }),
        dir.path(),
        "worker",
    );
    let workers = wait_for(&client, &base, "/admin/workers", "the worker", |v| {
        v["count"] == 1
    })
    .await;
    assert_eq!(workers["workers"][0]["capacity"], 2, "{workers}");
    // Give the intruder time to have tried (and been refused) more than once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let workers = admin_get(&client, &base, "/admin/workers").await.unwrap();
    assert_eq!(workers["count"], 1, "{workers}");
    let intruder_log = std::fs::read_to_string(dir.path().join("intruder.log")).unwrap();
    assert!(intruder_log.contains("401"), "{intruder_log}");
    assert!(!intruder_log.contains(SECRET));

    // A re-login queued by the operator reaches the worker, whose answer reaches the task.
    let queued = client
        .post(format!("{base}/admin/browser-refresh"))
        .bearer_auth(ADMIN)
        .json(&json!({ "email": accounts[0].email }))
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), 202);
    let task = queued.json::<Value>().await.unwrap()["task"].clone();
    let tasks = wait_for(&client, &base, "/admin/tasks", "the task's failure", |v| {
        let all = v["tasks"]
            .as_array()
            .into_iter()
            .chain(v["finished"].as_array())
            .flatten();
        all.clone().any(|t| {
            t["id"] == task
                && t["failures"].as_u64() >= Some(1)
                && t["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("browser"))
        })
    })
    .await;
    let text = tasks.to_string();
    assert!(!text.contains(SECRET), "{text}");
    assert!(!text.contains(&accounts[0].c_ses), "{text}");
    let worker_log = std::fs::read_to_string(dir.path().join("worker.log")).unwrap();
    assert!(!worker_log.contains(SECRET));
}
