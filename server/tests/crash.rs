//! Crash safety: the real binary is killed with SIGKILL in the middle of sustained load, then
//! started again on the same data dir. Every account must be there, with a consistent state.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use serde_json::{Value, json};
use upstream_sim::{Endpoint, Fault, FaultRule, Simulator};

mod common;

const API_KEY: &str = "crash-test-api-key-0123456789";
const ADMIN_KEY: &str = "crash-test-admin-key-0123456789";

fn start(config: &std::path::Path) -> Child {
    common::gateway_command()
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/health")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not come up");
}

async fn accounts(client: &reqwest::Client, base: &str) -> Value {
    let r = client
        .get(format!("{base}/admin/accounts"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_account_and_leaves_a_consistent_state() {
    business2api::startup::install_crypto_provider();
    let sim = Simulator::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let accounts_in = common::write_demo_accounts(&sim, &data, 4);
    // Some turbulence: rate limits and refused tokens keep the state changing.
    sim.add_fault(
        FaultRule::always(
            Endpoint::StreamAssist,
            Fault::RateLimited {
                retry_after_secs: Some(1),
            },
        )
        .for_account(&accounts_in[0].csesidx)
        .times(5),
    );
    sim.add_fault(
        FaultRule::always(Endpoint::StreamAssist, Fault::Unauthorized)
            .for_account(&accounts_in[1].csesidx)
            .times(5),
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({
            "listen_addr": format!("127.0.0.1:{port}"),
            "data_dir": data,
            "api_keys": [API_KEY],
            "admin_keys": [ADMIN_KEY],
            "pool": { "use_cooldown_sec": 0 },
            "gemini_business": { "auth_base_url": sim.base_url(), "api_base_url": sim.base_url() },
            "http": { "workers": 2 },
        })
        .to_string(),
    )
    .unwrap();

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut child = start(&config);
    wait_ready(&client, &base).await;

    // Sustained load from 16 loops; SIGKILL after 1.5 s, with requests in flight.
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let mut loops = Vec::new();
    for i in 0..16 {
        let client = client.clone();
        let base = base.clone();
        loops.push(tokio::spawn(async move {
            let mut ok = 0u64;
            while Instant::now() < stop_at + Duration::from_secs(1) {
                let r = client
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(API_KEY)
                    .json(&json!({"model": "gemini-2.5-flash", "stream": i % 2 == 0,
                        "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        if r.bytes().await.is_ok() {
                            ok += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            ok
        }));
    }
    tokio::time::sleep_until(stop_at.into()).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut served = 0;
    for l in loops {
        served += l.await.unwrap();
    }
    assert!(served > 20, "the load did not run ({served} answers)");

    let mut child = start(&config);
    wait_ready(&client, &base).await;
    let listing = accounts(&client, &base).await;
    assert_eq!(listing["count"], 4, "every account is back: {listing}");
    let mut success = 0;
    for a in listing["accounts"].as_array().unwrap() {
        assert!(
            ["ready", "cooling_down", "refreshing_token"].contains(&a["state"].as_str().unwrap()),
            "{a}"
        );
        assert_eq!(a["in_flight"]["text"], 0);
        let c = &a["counters"];
        assert!(
            c["daily"]["counts"]["text"].as_u64() <= c["success"].as_u64(),
            "{a}"
        );
        success += c["success"].as_u64().unwrap();
    }
    // The persisted successes never exceed what clients received (a kill can lose at most the
    // last write interval, never invent one).
    assert!(success <= served, "{success} counted > {served} served");
    assert!(success > 0, "nothing was persisted before the kill");
    // And the pool serves again.
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .json(
            &json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}
