//! Flow through the real wiring: the gateway's token pool and every dialect against the Flow
//! simulator (a real HTTP server on loopback).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use business2api_tests::{
    FLOW_ADMIN_KEY, SseReader, TEST_KEY, TestApp, TestOptions, base_config, collect_delta,
    flow_app, flow_config, merge, spawn_app_with, start_app,
};
use serde_json::{Value, json};
use upstream_sim::flow::{FlowRoute, FlowSimulator, VideoScript};

const ST: &str = "flow-session-token-aaaaaaaaaaaaaaaaaaaa";
const ST2: &str = "flow-session-token-bbbbbbbbbbbbbbbbbbbb";
const ADMIN: &str = FLOW_ADMIN_KEY;

/// Stops `app` and starts it again on the same data dir and configuration.
async fn restart(app: TestApp, sim: &FlowSimulator, tokens: &[&str]) -> TestApp {
    let (data_dir, gemini, accounts) = app.shutdown_gracefully().await;
    let mut config = base_config(data_dir.path(), &gemini);
    merge(&mut config, json!({ "api_keys": [TEST_KEY] }));
    merge(&mut config, flow_config(sim, tokens));
    start_app(gemini, accounts, data_dir, config).await
}

async fn admin_get(app: &TestApp, path: &str) -> Value {
    app.get_json_as(ADMIN, path).await
}

async fn admin_post(app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    app.post_json_as(ADMIN, path, body).await
}

/// The token `id` in `/admin/flow/status`, if listed.
async fn token_status(app: &TestApp, id: &str) -> Option<Value> {
    let status = admin_get(app, "/admin/flow/status").await;
    status["tokens"]
        .as_array()
        .unwrap_or_else(|| panic!("{status}"))
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
}

/// Polls `/admin/flow/status` until `check` holds (5 s at most).
async fn wait_status(app: &TestApp, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = admin_get(app, "/admin/flow/status").await;
        if check(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(status: &Value) -> Vec<String> {
    status["tokens"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|t| t["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A non-streamed OpenAI chat for `model`: status and body.
async fn chat(app: &TestApp, model: &str, prompt: &str) -> (u16, Value) {
    let response = post(
        app,
        "/v1/chat/completions",
        &json!({"model": model, "messages": [{"role": "user", "content": prompt}]}),
    )
    .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A streamed OpenAI chat for `model`, started (200): its reader.
async fn stream_chat(app: &TestApp, model: &str, prompt: &str) -> SseReader {
    let response = post(
        app,
        "/v1/chat/completions",
        &json!({"model": model, "stream": true,
            "messages": [{"role": "user", "content": prompt}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    SseReader::new(response)
}

/// The `content` of OpenAI chat chunks (data payloads; `[DONE]` is skipped).
fn streamed_content(payloads: &[String]) -> String {
    let chunks: Vec<Value> = payloads
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    collect_delta(&chunks, "content")
}

/// The md5 hex of a session token: the id of file and API tokens.
fn md5_id(token: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn post(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(TEST_KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_openai_chat_gets_a_flow_image_as_a_link_to_the_gateways_copy() {
    let (app, sim) = flow_app(&[ST]).await;
    let models = app.get_json_as(TEST_KEY, "/v1/models").await;
    assert!(models["data"].is_array(), "{models}");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"gemini-2.5-flash-image-landscape"), "{ids:?}");
    assert!(ids.contains(&"veo_3_1_t2v_fast_landscape"), "{ids:?}");
    let root = app.get_json("/").await;
    assert_eq!(root["flow_enabled"], true, "{root}");
    assert!(root["endpoints"].to_string().contains("POST /v1/videos"));
    let response = post(
        &app,
        "/v1/chat/completions",
        &json!({
            "model": "imagen-4.0-generate-preview-portrait",
            "messages": [{"role": "user", "content": "a lighthouse at dusk"}],
        }),
    )
    .await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("/media/"), "{content}");
    let generate = sim.requests_to(FlowRoute::GenerateImages);
    assert_eq!(generate.len(), 1);
    let sent = generate[0].body.as_ref().unwrap();
    assert_eq!(sent["requests"][0]["prompt"], "a lighthouse at dusk");
    assert_eq!(
        sent["requests"][0]["imageAspectRatio"],
        "IMAGE_ASPECT_RATIO_PORTRAIT"
    );
}

#[tokio::test]
async fn an_access_token_refused_mid_video_is_replaced_and_the_job_completes() {
    let (app, sim) = flow_app(&[ST]).await;
    sim.script_video(VideoScript::success_after(3));
    let mut reader = stream_chat(&app, "veo_3_1_t2v_fast_landscape", "waves").await;
    // The job is running: its access token is revoked under it.
    let mut reasoning = String::new();
    while sim.count(FlowRoute::CheckStatus) == 0 {
        let data = reader.next_data().await.expect("the stream goes on");
        let chunk: Value = serde_json::from_str(&data).unwrap();
        if let Some(r) = chunk["choices"][0]["delta"]["reasoning_content"].as_str() {
            reasoning.push_str(r);
        }
    }
    let sessions_before = sim.count(FlowRoute::Session);
    sim.revoke_access_tokens(ST);
    let rest = reader.rest().await;
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"), "{rest:?}");
    let content = streamed_content(&rest);
    assert!(content.contains("/media/"), "{content}");
    assert!(reasoning.contains("Video submitted"), "{reasoning}");
    // A new access token was minted and the same job polled to its end: one submit.
    assert!(sim.count(FlowRoute::Session) > sessions_before);
    assert_eq!(sim.count(FlowRoute::VideoText), 1);
}

#[tokio::test]
async fn a_token_whose_session_dies_hands_the_request_to_the_next_token() {
    let (app, sim) = flow_app(&[ST, ST2]).await;
    // Both tokens are read at start; then the first one's session dies.
    wait_status(&app, "both tokens read", |s| {
        s["tokens"]
            .as_array()
            .is_some_and(|t| t.iter().all(|t| t["credits"] == 1000))
    })
    .await;
    sim.expire_session(ST);
    sim.revoke_access_tokens(ST);
    let (status, body) = chat(&app, "gemini-2.5-flash-image-landscape", "a red kite").await;
    assert_eq!(status, 200, "{body}");
    let first = token_status(&app, "flow_token_0").await.unwrap();
    assert_eq!(first["state"], "disabled", "{first}");
    assert_eq!(first["disabled"], true);
    // Why, in words the operator can act on: the session was refused.
    let why = first["last_error"].as_str().unwrap();
    assert!(why.contains("CookiesInvalid"), "{first}");
    // The disabled token is not tried again: the next image goes to the second token directly.
    let sessions = sim.count(FlowRoute::Session);
    let (status, _) = chat(&app, "gemini-2.5-flash-image-landscape", "a blue kite").await;
    assert_eq!(status, 200);
    assert_eq!(
        sim.count(FlowRoute::Session),
        sessions,
        "no new mint for a disabled token"
    );
    assert_eq!(sim.projects(ST2).len(), 1);
}

#[tokio::test]
async fn a_token_that_dies_mid_video_loses_nothing_the_job_runs_on_the_next_token() {
    let (app, sim) = flow_app(&[ST, ST2]).await;
    wait_status(&app, "both tokens read", |s| {
        s["tokens"]
            .as_array()
            .is_some_and(|t| t.iter().all(|t| t["credits"] == 1000))
    })
    .await;
    sim.script_video(VideoScript::success_after(5));
    sim.script_video(VideoScript::success_after(0));
    let mut reader = stream_chat(&app, "veo_3_1_t2v_fast_portrait", "a storm").await;
    while sim.count(FlowRoute::CheckStatus) == 0 {
        reader.next_data().await.expect("the stream goes on");
    }
    // The token the job runs on dies: its session and its access tokens are refused.
    assert_eq!(sim.projects(ST).len(), 1, "the job runs on the first token");
    sim.expire_session(ST);
    sim.revoke_access_tokens(ST);
    let rest = reader.rest().await;
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"), "{rest:?}");
    let content = streamed_content(&rest);
    assert!(content.contains("/media/"), "{content}");
    // Submitted again on the second token.
    assert_eq!(sim.count(FlowRoute::VideoText), 2);
    assert_eq!(
        token_status(&app, "flow_token_0").await.unwrap()["state"],
        "disabled"
    );
}

#[tokio::test]
async fn admin_routes_add_list_and_remove_tokens_and_never_show_one() {
    let (app, sim) = flow_app(&[ST]).await;
    let new = "flow-session-token-cccccccccccccccccccc";
    sim.add_token(new, "c@example.com", 40, "PAYGATE_TIER_ONE");
    // API keys grant nothing here.
    let (status, _) = app
        .post_json_as(TEST_KEY, "/admin/flow/add-token", &json!({"cookie": new}))
        .await;
    assert_eq!(status, 401);
    let (status, body) = admin_post(
        &app,
        "/admin/flow/add-token",
        &json!({"cookie": format!("a=b; __Secure-next-auth.session-token={new}; c=d")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = md5_id(new);
    assert_eq!(body["token_id"], id);
    assert_eq!(body["total"], 2);
    // Saved under <data_dir>/at/, readable by the owner only.
    let file = app
        .data_dir
        .path()
        .join("at")
        .join(format!("{}.txt", &id[..16]));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // The same token again is refused.
    let (status, body) = admin_post(
        &app,
        "/admin/flow/add-token",
        &json!({"cookie": format!("__Secure-next-auth.session-token={new}")}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already"),
        "{body}"
    );
    let (status, _) = admin_post(&app, "/admin/flow/add-token", &json!({"cookie": "x=y"})).await;
    assert_eq!(status, 400);
    // Status: ids, state, credits, tier; never a token.
    let status = wait_status(&app, "the new token's credits", |s| {
        s["tokens"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["credits"] == 40))
    })
    .await;
    assert_eq!(status["enabled"], true);
    assert_eq!(status["total"], 2);
    let added = status["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap();
    assert_eq!(added["tier"], "PAYGATE_TIER_ONE");
    assert_eq!(added["state"], "active");
    let text = status.to_string();
    assert!(
        !text.contains(ST) && !text.contains(new) && !text.contains("ya29."),
        "{text}"
    );
    // Removed: never selected again, its file gone.
    let (status, body) = admin_post(
        &app,
        "/admin/flow/remove-token",
        &json!({"token_id": "flow_token_0"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = admin_post(
        &app,
        "/admin/flow/remove-token",
        &json!({"token_id": "flow_token_0"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = chat(&app, "gemini-2.5-flash-image-portrait", "a cat").await;
    assert_eq!(status, 200, "{body}");
    assert!(sim.projects(ST).is_empty(), "the removed token was used");
    let (status, _) = admin_post(&app, "/admin/flow/remove-token", &json!({"token_id": id})).await;
    assert_eq!(status, 200);
    assert!(!file.exists());
    // No token left: Flow models are not listed, and a request is a clear 503.
    let (status, body) = chat(&app, "gemini-2.5-flash-image-portrait", "a dog").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    let models = app.get_json_as(TEST_KEY, "/v1/models").await;
    assert!(!models.to_string().contains("veo_"), "{models}");
}

#[tokio::test]
async fn removed_configuration_tokens_and_disabled_tokens_stay_so_after_a_restart() {
    let (app, sim) = flow_app(&[ST, ST2]).await;
    let (status, _) = admin_post(
        &app,
        "/admin/flow/remove-token",
        &json!({"token_id": "flow_token_1"}),
    )
    .await;
    assert_eq!(status, 200);
    sim.expire_session(ST);
    sim.revoke_access_tokens(ST);
    admin_post(&app, "/admin/flow/reload", &json!({})).await;
    let (status, _) = chat(&app, "gemini-2.5-flash-image-landscape", "x").await;
    assert_eq!(status, 503);
    wait_status(&app, "token 0 disabled", |s| s["disabled"] == 1).await;
    let app = restart(app, &sim, &[ST, ST2]).await;
    let status = admin_get(&app, "/admin/flow/status").await;
    assert_eq!(ids(&status), vec!["flow_token_0"], "{status}");
    assert_eq!(status["tokens"][0]["state"], "disabled", "{status}");
    // Re-adding the removed token by hand is the operator's word: it serves again.
    let (status, body) = admin_post(
        &app,
        "/admin/flow/add-token",
        &json!({"cookie": format!("__Secure-next-auth.session-token={ST2}")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = chat(&app, "gemini-2.5-flash-image-landscape", "y").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn token_files_in_the_at_dir_apply_live_when_created_changed_and_deleted() {
    let (app, sim) = flow_app(&[]).await;
    let at = app.data_dir.path().join("at");
    let status = admin_get(&app, "/admin/flow/status").await;
    assert_eq!(status["total"], 0, "{status}");
    // The watcher is up once the directory exists.
    assert!(at.is_dir());
    sim.add_token(ST, "a@example.com", 10, "PAYGATE_TIER_ONE");
    sim.add_token(ST2, "b@example.com", 20, "PAYGATE_TIER_ONE");
    let file = at.join("mine.txt");
    std::fs::write(
        &file,
        format!("__Secure-next-auth.session-token={ST}; other=1"),
    )
    .unwrap();
    wait_status(&app, "the created file's token", |s| {
        ids(s) == vec![md5_id(ST)]
    })
    .await;
    std::fs::write(&file, format!("__Secure-next-auth.session-token={ST2}")).unwrap();
    wait_status(&app, "the changed file's token", |s| {
        ids(s) == vec![md5_id(ST2)]
    })
    .await;
    let (status, body) = chat(&app, "gemini-2.5-flash-image-landscape", "z").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sim.projects(ST2).len(), 1);
    std::fs::remove_file(&file).unwrap();
    wait_status(&app, "the deleted file's token gone", |s| s["total"] == 0).await;
    // A file with no token is reported by reload, never echoed.
    std::fs::write(at.join("junk.txt"), "not-a-cookie=1").unwrap();
    let (status, body) = admin_post(&app, "/admin/flow/reload", &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["unusable"].as_array().unwrap().len(), 1, "{body}");
    assert!(!body.to_string().contains("not-a-cookie"), "{body}");
    let files = files_in(&at);
    assert!(files.contains(&"junk.txt".to_owned()));
}

#[tokio::test]
async fn flow_disabled_lists_no_flow_model_and_answers_a_clear_400() {
    let app = spawn_app_with(TestOptions::default().config(json!({"admin_keys": [ADMIN]}))).await;
    let models = app.get_json_as(TEST_KEY, "/v1/models").await;
    assert!(!models.to_string().contains("veo_"), "{models}");
    let (status, body) = chat(&app, "veo_3_1_t2v_fast_landscape", "x").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("flow.enable"),
        "{body}"
    );
    let status = admin_get(&app, "/admin/flow/status").await;
    assert_eq!(status["enabled"], false, "{status}");
    assert_eq!(app.get_json("/").await["flow_enabled"], false);
}

/// A plain HTTP forward proxy on loopback that records the head of each connection's first
/// request and then relays bytes both ways.
async fn recording_proxy() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&heads);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let seen = std::sync::Arc::clone(&seen);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if inbound.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                // `GET http://127.0.0.1:port/path HTTP/1.1`: the origin is in the target.
                let target = text
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let host = target
                    .trim_start_matches("http://")
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().unwrap().push(text);
                let Ok(mut outbound) = tokio::net::TcpStream::connect(host).await else {
                    return;
                };
                if outbound.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (format!("http://flowuser:proxy-pass-123@{address}"), heads)
}

#[tokio::test]
async fn flow_traffic_goes_through_flow_proxy_with_its_credentials() {
    flow_traffic_goes_through(|proxy| json!({"flow": {"proxy": proxy}})).await;
}

#[tokio::test]
async fn without_flow_proxy_flow_traffic_goes_through_the_gateways_proxy() {
    flow_traffic_goes_through(|proxy| json!({"proxy": proxy})).await;
}

/// A Flow image made with the recording proxy set by `setting`: every Flow call went through it.
async fn flow_traffic_goes_through(setting: impl Fn(&str) -> Value) {
    let sim = FlowSimulator::start().await.unwrap();
    sim.add_token(ST, "a@example.com", 100, "PAYGATE_TIER_ONE");
    let (proxy, heads) = recording_proxy().await;
    let mut config = flow_config(&sim, &[ST]);
    merge(&mut config, setting(&proxy));
    let app = spawn_app_with(TestOptions::default().config(config)).await;
    let (status, body) = chat(&app, "gemini-3.0-pro-image-portrait", "a map").await;
    assert_eq!(status, 200, "{body}");
    let heads: Vec<String> = heads.lock().unwrap().clone();
    let sim_origin = sim.base_url();
    let sim_origin = sim_origin.trim_end_matches('/');
    // (The gateway's `proxy` carries Gemini Business traffic too; only Flow's is checked here.)
    let heads: Vec<&String> = heads.iter().filter(|h| h.contains(sim_origin)).collect();
    assert!(!heads.is_empty(), "nothing went through the proxy");
    for head in &heads {
        // Basic credentials for flowuser:proxy-pass-123.
        assert!(
            head.to_ascii_lowercase()
                .contains("proxy-authorization: basic zmxvd3vzzxi6chjvehktcgfzcy0xmjm="),
            "{head}"
        );
    }
    // Every Flow call of the image went out through it (session, project, generate, file).
    assert_eq!(sim.count(FlowRoute::GenerateImages), 1);
    // The proxy password is not shown by the admin status or the health page.
    let health = app.get_json("/health").await.to_string();
    assert!(!health.contains("proxy-pass-123"), "{health}");
}

#[tokio::test]
async fn a_token_out_of_credits_cools_down_and_the_video_goes_to_the_next_token() {
    let sim = FlowSimulator::start().await.unwrap();
    // A video costs 20 credits: the first token cannot pay for one.
    sim.add_token(ST, "poor@example.com", 10, "PAYGATE_TIER_ONE");
    sim.add_token(ST2, "rich@example.com", 1000, "PAYGATE_TIER_TWO");
    let app = spawn_app_with(TestOptions::default().config(flow_config(&sim, &[ST, ST2]))).await;
    wait_status(&app, "both tokens read", |s| {
        s["tokens"]
            .as_array()
            .is_some_and(|t| t.iter().all(|t| t["credits"].is_i64()))
    })
    .await;
    sim.script_video(VideoScript::success_after(0));
    let (status, body) = chat(&app, "veo_2_0_t2v_landscape", "rain").await;
    assert_eq!(status, 200, "{body}");
    let poor = token_status(&app, "flow_token_0").await.unwrap();
    assert_eq!(poor["state"], "cooling", "{poor}");
    assert!(poor["cooldown_secs"].as_u64().unwrap() > 0, "{poor}");
    // Out of credits is not an error of the token: it is not counted as one.
    assert_eq!(poor["errors"], 0, "{poor}");
    assert_eq!(sim.credits(ST2), Some(980));
    // While it cools, the next video goes straight to the second token.
    let submits = sim.count(FlowRoute::VideoText);
    sim.script_video(VideoScript::success_after(0));
    let (status, _) = chat(&app, "veo_2_0_t2v_landscape", "snow").await;
    assert_eq!(status, 200);
    assert_eq!(sim.count(FlowRoute::VideoText), submits + 1);
    assert_eq!(sim.credits(ST2), Some(960));
}
