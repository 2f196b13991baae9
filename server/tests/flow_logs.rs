//! No Flow secret in the log: the real binary, logging at debug (trace for the gateway's own
//! crate), runs every Flow path against the Flow simulator — images, a video whose access token
//! is revoked mid-job, a failed video, a dead session token, the admin routes that take and list
//! tokens, a token file in `<data_dir>/at/` — and its whole stderr is then searched for every
//! session token, every access token the simulator minted and every cookie string.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::free_port;
use serde_json::{Value, json};
use upstream_sim::flow::{FlowRoute, FlowSimulator, VideoScript};

mod common;

const API_KEY: &str = "flow-log-test-api-key-0123456789";
const ADMIN_KEY: &str = "flow-log-test-admin-key-0123456789";
const CONFIG_TOKEN: &str = "st-config-token-SECRET-0123456789abcdef";
const DYING_TOKEN: &str = "st-dying-token-SECRET-0123456789abcdef";
const API_TOKEN: &str = "st-admin-added-token-SECRET-0123456789abcdef";
const FILE_TOKEN: &str = "st-file-token-SECRET-0123456789abcdef";

async fn chat(client: &reqwest::Client, base: &str, model: &str, stream: bool) -> (u16, String) {
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .json(&json!({"model": model, "stream": stream,
            "messages": [{"role": "user", "content": "a quiet harbour"}]}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn admin(client: &reqwest::Client, base: &str, path: &str, body: Option<Value>) -> Value {
    let request = match body {
        Some(body) => client.post(format!("{base}{path}")).json(&body),
        None => client.get(format!("{base}{path}")),
    };
    request
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_flow_token_access_token_or_cookie_reaches_the_log() {
    business2api::startup::install_crypto_provider();
    let sim = FlowSimulator::start().await.unwrap();
    for t in [CONFIG_TOKEN, DYING_TOKEN, API_TOKEN, FILE_TOKEN] {
        sim.add_token(t, "someone@example.com", 500, "PAYGATE_TIER_ONE");
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("at")).unwrap();
    std::fs::write(
        data.join("at").join("file-token.txt"),
        format!("other=1; __Secure-next-auth.session-token={FILE_TOKEN}; x=y"),
    )
    .unwrap();
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
            "http": {"workers": 1, "stream_keepalive_ms": 500},
            "pool": {"refresh_on_startup": false},
            "gemini_business": {
                "auth_base_url": "http://127.0.0.1:9",
                "api_base_url": "http://127.0.0.1:9",
            },
            "flow": {
                "enable": true,
                "tokens": [DYING_TOKEN, CONFIG_TOKEN],
                "labs_base_url": sim.base_url(),
                "api_base_url": sim.base_url(),
                "poll_interval": 1,
                "max_poll_attempts": 10,
            },
        })
        .to_string(),
    )
    .unwrap();
    let mut child = common::Kill(
        common::gateway_command()
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "debug,business2api=trace")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    common::wait_healthy(&client, &base).await;

    // The first configuration token dies: requests move to the next token.
    sim.expire_session(DYING_TOKEN);
    let (status, body) = chat(
        &client,
        &base,
        "imagen-4.0-generate-preview-landscape",
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A video whose access token is refused mid-job, streamed.
    sim.script_video(VideoScript::success_after(2));
    let video = tokio::spawn({
        let client = client.clone();
        let base = base.clone();
        async move { chat(&client, &base, "veo_3_1_t2v_fast_landscape", true).await }
    });
    let wait = Instant::now() + Duration::from_secs(10);
    while sim.count(FlowRoute::CheckStatus) == 0 {
        assert!(Instant::now() < wait, "the video was never polled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sim.revoke_access_tokens(CONFIG_TOKEN);
    sim.revoke_access_tokens(FILE_TOKEN);
    let (status, body) = video.await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("/media/"), "{body}");
    // A video that fails upstream.
    sim.script_video(VideoScript::failed_after(
        "MEDIA_GENERATION_STATUS_ERROR_NSFW",
        0,
    ));
    let (status, _) = chat(&client, &base, "veo_2_0_t2v_portrait", false).await;
    assert_eq!(status, 400);
    // The admin routes that take and show tokens.
    let added = admin(
        &client,
        &base,
        "/admin/flow/add-token",
        Some(json!({"cookie": format!("a=b; __Secure-next-auth.session-token={API_TOKEN}")})),
    )
    .await;
    let id = added["token_id"].as_str().unwrap().to_owned();
    // A cookie with no token is refused without echoing it.
    admin(
        &client,
        &base,
        "/admin/flow/add-token",
        Some(json!({"cookie": format!("nope={DYING_TOKEN}")})),
    )
    .await;
    let status = admin(&client, &base, "/admin/flow/status", None).await;
    assert!(status["total"].as_u64().unwrap() >= 3, "{status}");
    admin(&client, &base, "/admin/flow/reload", Some(json!({}))).await;
    admin(
        &client,
        &base,
        "/admin/flow/remove-token",
        Some(json!({"token_id": id})),
    )
    .await;

    // Let the log lines reach stderr, then stop the gateway and read all of it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let raw = child.stop_and_read_stderr();
    let log = String::from_utf8_lossy(&raw);
    // The run did what it should have: the log is not empty of Flow.
    assert!(log.contains("Flow token added"), "{log}");
    assert!(log.contains("flow_token_0"), "{log}");

    let mut secrets: Vec<String> = [CONFIG_TOKEN, DYING_TOKEN, API_TOKEN, FILE_TOKEN]
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    // Every access token the simulator minted, as each Flow API call carried it.
    for request in sim.requests() {
        if let Some(auth) = request.header("authorization") {
            let token = auth.trim_start_matches("Bearer ").to_owned();
            assert!(token.len() > 20, "{auth}");
            secrets.push(token);
        }
        // A cookie header carries a session token (in the list already) after its name.
        if let Some(cookie) = request.header("cookie") {
            let value = cookie.rsplit('=').next().unwrap_or_default();
            assert!(secrets.iter().any(|s| s == value), "{cookie}");
        }
    }
    assert!(
        secrets.iter().any(|s| s.starts_with("ya29.")),
        "no access token was seen"
    );
    for secret in &secrets {
        // Also a distinctive part of it (a token cut by a formatter).
        let part = &secret[..secret.len().min(24)];
        for line in log.lines() {
            assert!(
                !line.contains(secret.as_str()) && !line.contains(part),
                "a Flow secret reached the log:\n{line}"
            );
        }
    }
}
