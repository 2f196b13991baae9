//! OpenAI's video API (`/v1/videos`) through the real wiring, against the Flow simulator:
//! create → poll → download, per-key scoping, deletion, failed jobs, a multipart upload with a
//! first frame, and a restart in the middle of a job.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use business2api_tests::{
    DEFAULT_IMAGE_PNG, TEST_KEY, TestApp, TestOptions, base_config, merge, spawn_app_with,
    start_app,
};
use serde_json::{Value, json};
use upstream_sim::flow::{FLOW_VIDEO_MP4, FlowRoute, FlowSimulator, VideoScript};

const ST: &str = "flow-session-token-vvvvvvvvvvvvvvvvvvvv";
const OTHER_KEY: &str = "other-key-0123456789abcdef";
const T2V: &str = "veo_3_1_t2v_fast_landscape";
const I2V: &str = "veo_3_1_i2v_s_fast_fl_landscape";

/// The Flow part of a test configuration (and a second API key).
fn flow_config(sim: &FlowSimulator) -> Value {
    let mut config = business2api_tests::flow_config(sim, &[ST]);
    merge(
        &mut config,
        json!({"api_keys": [TEST_KEY, OTHER_KEY], "flow": {"max_poll_attempts": 30}}),
    );
    config
}

async fn flow_app() -> (TestApp, FlowSimulator) {
    let sim = FlowSimulator::start().await.unwrap();
    sim.add_token(ST, "flow@example.com", 1000, "PAYGATE_TIER_TWO");
    let app = spawn_app_with(TestOptions::default().config(flow_config(&sim))).await;
    (app, sim)
}

/// Stops `app` and starts it again on the same data dir and configuration.
async fn restart(app: TestApp, sim: &FlowSimulator) -> TestApp {
    let (data_dir, gemini, accounts) = app.shutdown_gracefully().await;
    let mut config = base_config(data_dir.path(), &gemini);
    merge(&mut config, flow_config(sim));
    start_app(gemini, accounts, data_dir, config).await
}

/// A request with `key`: status and body (JSON, or `null`).
async fn call(
    app: &TestApp,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn create(app: &TestApp, key: &str, body: &Value) -> Value {
    let (status, video) = call(app, key, reqwest::Method::POST, "/v1/videos", Some(body)).await;
    assert_eq!(status, 200, "{video}");
    assert_video_shape(&video);
    video
}

async fn get(app: &TestApp, key: &str, id: &str) -> (u16, Value) {
    call(
        app,
        key,
        reqwest::Method::GET,
        &format!("/v1/videos/{id}"),
        None,
    )
    .await
}

/// Every field of OpenAI's `Video`, with the types its SDK parses.
fn assert_video_shape(v: &Value) {
    assert_eq!(v["object"], "video", "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("video_"), "{v}");
    assert!(v["model"].is_string() && v["prompt"].is_string(), "{v}");
    assert!(
        ["queued", "in_progress", "completed", "failed"].contains(&v["status"].as_str().unwrap()),
        "{v}"
    );
    assert!(v["progress"].as_u64().unwrap() <= 100, "{v}");
    assert!(v["created_at"].is_u64(), "{v}");
    for key in ["completed_at", "expires_at"] {
        assert!(v[key].is_null() || v[key].is_u64(), "{key}: {v}");
    }
    assert!(
        ["720x1280", "1280x720", "1024x1792", "1792x1024"].contains(&v["size"].as_str().unwrap()),
        "{v}"
    );
    assert!(v["seconds"].is_string(), "{v}");
    assert!(v.get("remixed_from_video_id").is_some(), "{v}");
    match &v["error"] {
        Value::Null => {}
        e => assert!(e["code"].is_string() && e["message"].is_string(), "{v}"),
    }
}

/// Polls the job until `done` holds (60 s at most); returns it.
async fn wait_video(app: &TestApp, key: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_progress = 0;
    loop {
        let (status, video) = get(app, key, id).await;
        assert_eq!(status, 200, "{video}");
        assert_video_shape(&video);
        let progress = video["progress"].as_u64().unwrap();
        assert!(progress >= last_progress, "progress went back: {video}");
        last_progress = progress;
        if done(&video) {
            return video;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not get there: {video}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn finished(v: &Value) -> bool {
    v["status"] == "completed" || v["status"] == "failed"
}

async fn content(app: &TestApp, key: &str, id: &str, query: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/v1/videos/{id}/content{query}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_video_is_created_polled_and_downloaded() {
    let (app, sim) = flow_app().await;
    let video = create(
        &app,
        TEST_KEY,
        &json!({"model": T2V, "prompt": "a cat on a boat"}),
    )
    .await;
    assert_eq!(video["status"], "queued");
    assert_eq!(video["model"], T2V);
    assert_eq!(video["prompt"], "a cat on a boat");
    assert_eq!(
        (video["size"].as_str(), video["seconds"].as_str()),
        (Some("1280x720"), Some("8"))
    );
    let id = video["id"].as_str().unwrap().to_owned();

    // Not ready yet: 404, as OpenAI answers.
    let early = content(&app, TEST_KEY, &id, "").await;
    assert_eq!(early.status(), 404);
    let body: Value = early.json().await.unwrap();
    assert_eq!(body["error"]["code"], "video_not_ready", "{body}");

    let done = wait_video(&app, TEST_KEY, &id, finished).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 100);
    assert!(done["completed_at"].as_u64().unwrap() >= done["created_at"].as_u64().unwrap());
    assert!(done["expires_at"].as_u64().unwrap() > done["completed_at"].as_u64().unwrap());
    assert!(done["error"].is_null());

    let response = content(&app, TEST_KEY, &id, "?variant=video").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "video/mp4");
    assert_eq!(response.bytes().await.unwrap().as_ref(), FLOW_VIDEO_MP4);
    let thumbnail = content(&app, TEST_KEY, &id, "?variant=thumbnail").await;
    assert_eq!(thumbnail.status(), 400);

    assert_eq!(sim.count(FlowRoute::VideoText), 1);
    app.stop().await;
}

#[tokio::test]
async fn jobs_belong_to_their_key_and_can_be_listed_and_deleted() {
    let (app, _sim) = flow_app().await;
    let first = create(&app, TEST_KEY, &json!({"model": T2V, "prompt": "one"})).await;
    let second = create(&app, TEST_KEY, &json!({"model": T2V, "prompt": "two"})).await;
    let theirs = create(&app, OTHER_KEY, &json!({"model": T2V, "prompt": "three"})).await;
    let (first, second) = (
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    );
    let theirs = theirs["id"].as_str().unwrap();

    // Another key sees none of them.
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/videos/{first}")),
        (reqwest::Method::GET, format!("/v1/videos/{first}/content")),
        (reqwest::Method::DELETE, format!("/v1/videos/{first}")),
    ] {
        let (status, body) = call(&app, OTHER_KEY, method, &path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }

    let (status, list) = call(&app, TEST_KEY, reqwest::Method::GET, "/v1/videos", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert_video_shape(v);
            v["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(ids.contains(&first) && ids.contains(&second) && !ids.contains(&theirs));
    assert_eq!(list["first_id"], ids[0]);
    assert_eq!(list["last_id"], ids[1]);
    assert_eq!(list["has_more"], false);

    let (_, page) = call(
        &app,
        TEST_KEY,
        reqwest::Method::GET,
        "/v1/videos?limit=1&order=asc",
        None,
    )
    .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["has_more"], true, "{page}");
    let after = page["last_id"].as_str().unwrap();
    let (_, rest) = call(
        &app,
        TEST_KEY,
        reqwest::Method::GET,
        &format!("/v1/videos?limit=1&order=asc&after={after}"),
        None,
    )
    .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1, "{rest}");
    assert_ne!(rest["first_id"], page["first_id"]);
    assert_eq!(rest["has_more"], false, "{rest}");
    let (status, _) = call(
        &app,
        TEST_KEY,
        reqwest::Method::GET,
        "/v1/videos?limit=0",
        None,
    )
    .await;
    assert_eq!(status, 400);

    let (status, deleted) = call(
        &app,
        TEST_KEY,
        reqwest::Method::DELETE,
        &format!("/v1/videos/{first}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(
        deleted,
        json!({"id": first, "object": "video.deleted", "deleted": true})
    );
    assert_eq!(get(&app, TEST_KEY, first).await.0, 404);
    let (_, list) = call(&app, TEST_KEY, reqwest::Method::GET, "/v1/videos", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    // The other key's job is untouched.
    assert_eq!(get(&app, OTHER_KEY, theirs).await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_generation_ends_failed_with_an_error() {
    let (app, sim) = flow_app().await;
    sim.script_video(VideoScript::failed_after(
        "MEDIA_GENERATION_STATUS_ERROR_UNKNOWN",
        1,
    ));
    let video = create(&app, TEST_KEY, &json!({"model": T2V, "prompt": "doomed"})).await;
    let id = video["id"].as_str().unwrap();
    let done = wait_video(&app, TEST_KEY, id, finished).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        !done["error"]["code"].as_str().unwrap().is_empty(),
        "{done}"
    );
    assert!(
        !done["error"]["message"].as_str().unwrap().is_empty(),
        "{done}"
    );
    assert!(done["completed_at"].is_u64());
    assert_eq!(content(&app, TEST_KEY, id, "").await.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn requests_are_checked_before_a_job_exists() {
    let (app, sim) = flow_app().await;
    for (body, param) in [
        (json!({"model": T2V}), "prompt"),
        (json!({"model": "gemini-2.5-flash", "prompt": "p"}), "model"),
        (
            json!({"model": "gemini-2.5-flash-image-landscape", "prompt": "p"}),
            "model",
        ),
        (
            json!({"model": T2V, "prompt": "p", "size": "720x1280"}),
            "size",
        ),
        (
            json!({"model": T2V, "prompt": "p", "seconds": "5"}),
            "seconds",
        ),
        (json!({"model": I2V, "prompt": "p"}), "input_reference"),
    ] {
        let (status, error) = call(
            &app,
            TEST_KEY,
            reqwest::Method::POST,
            "/v1/videos",
            Some(&body),
        )
        .await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["error"]["param"], param, "{body}: {error}");
    }
    let (status, error) = call(
        &app,
        TEST_KEY,
        reqwest::Method::POST,
        "/v1/videos",
        Some(&json!({"model": "sora-2", "prompt": "p"})),
    )
    .await;
    assert_eq!(status, 404, "{error}");
    assert_eq!(
        sim.count(FlowRoute::VideoText) + sim.count(FlowRoute::VideoStartEnd),
        0
    );
    let (_, list) = call(&app, TEST_KEY, reqwest::Method::GET, "/v1/videos", None).await;
    assert_eq!(list["data"], json!([]));
    assert!(list["first_id"].is_null() && list["last_id"].is_null());
    app.stop().await;
}

#[tokio::test]
async fn a_multipart_upload_gives_an_image_to_video_job_its_first_frame() {
    let (app, sim) = flow_app().await;
    // What the OpenAI SDK sends: a form with the image as a file part.
    let boundary = "----b2a-video-boundary";
    let mut body = Vec::new();
    for (name, value) in [
        ("model", I2V),
        ("prompt", "the cat jumps"),
        ("seconds", "8"),
    ] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"input_reference\"; \
             filename=\"cat.png\"\r\nContent-Type: image/png\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(DEFAULT_IMAGE_PNG);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let response = app
        .client
        .post(app.url("/v1/videos"))
        .bearer_auth(TEST_KEY)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let video: Value = response.json().await.unwrap();
    assert_video_shape(&video);
    assert_eq!(video["model"], I2V);
    let done = wait_video(&app, TEST_KEY, video["id"].as_str().unwrap(), finished).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(sim.count(FlowRoute::UploadImage), 1);
    assert_eq!(sim.count(FlowRoute::VideoStartEnd), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_restart_during_a_job_resumes_it_to_completion() {
    let (app, sim) = flow_app().await;
    sim.script_video(VideoScript::success_after(6));
    let video = create(&app, TEST_KEY, &json!({"model": T2V, "prompt": "patience"})).await;
    let id = video["id"].as_str().unwrap().to_owned();
    let running = wait_video(&app, TEST_KEY, &id, |v| v["status"] == "in_progress").await;
    assert_eq!(sim.count(FlowRoute::VideoText), 1);

    let app = restart(app, &sim).await;
    let (status, after) = get(&app, TEST_KEY, &id).await;
    assert_eq!(status, 200, "{after}");
    assert!(
        after["progress"].as_u64() >= running["progress"].as_u64(),
        "{running} then {after}"
    );
    let done = wait_video(&app, TEST_KEY, &id, finished).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        sim.count(FlowRoute::VideoText),
        1,
        "polled again, not submitted again"
    );
    let response = content(&app, TEST_KEY, &id, "").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), FLOW_VIDEO_MP4);
    app.stop().await;
}

#[tokio::test]
async fn a_job_whose_token_dies_is_submitted_again_on_another_token_and_completes() {
    const ST2: &str = "flow-session-token-wwwwwwwwwwwwwwwwwwww";
    let sim = FlowSimulator::start().await.unwrap();
    sim.add_token(ST, "a@example.com", 1000, "PAYGATE_TIER_TWO");
    sim.add_token(ST2, "b@example.com", 1000, "PAYGATE_TIER_TWO");
    let mut config = flow_config(&sim);
    merge(&mut config, json!({"flow": {"tokens": [ST, ST2]}}));
    let app = spawn_app_with(TestOptions::default().config(config)).await;
    // The first job runs long on the first token (both are fresh: the first is picked).
    sim.script_video(VideoScript::success_after(20));
    sim.script_video(VideoScript::success_after(0));
    let frame = format!(
        "data:image/png;base64,{}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            DEFAULT_IMAGE_PNG
        )
    );
    let video = create(
        &app,
        TEST_KEY,
        &json!({"model": I2V, "prompt": "the kite flies", "input_reference": frame}),
    )
    .await;
    let id = video["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim.count(FlowRoute::CheckStatus) == 0 {
        assert!(Instant::now() < deadline, "never polled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sim.projects(ST).len(), 1);
    // The token dies under the job.
    sim.expire_session(ST);
    sim.revoke_access_tokens(ST);
    let done = wait_video(&app, TEST_KEY, &id, finished).await;
    assert_eq!(done["status"], "completed", "{done}");
    // Submitted again, on the second token, with its frame uploaded again.
    assert_eq!(sim.count(FlowRoute::VideoStartEnd), 2);
    assert_eq!(sim.projects(ST2).len(), 1);
    let uploads = sim.uploads();
    assert_eq!(uploads.len(), 2, "the frame went up for each submission");
    let response = content(&app, TEST_KEY, &id, "").await;
    assert_eq!(response.status(), 200);
    app.stop().await;
}
