//! The OpenAI Images API (`POST /v1/images/generations`) end to end, through the real
//! application and a real simulator.

use std::time::{Duration, Instant};

use base64::Engine as _;
use business2api_tests::{
    Answer, DEFAULT_IMAGE_PNG, Endpoint, Fault, FaultRule, TEST_KEY, TestApp, TestOptions,
    spawn_app, spawn_app_with,
};
use serde_json::{Value, json};

const BOUND: Duration = Duration::from_secs(15);

async fn post(app: &TestApp, body: Value) -> reqwest::Response {
    tokio::time::timeout(
        BOUND,
        app.client
            .post(app.url("/v1/images/generations"))
            .bearer_auth(TEST_KEY)
            .json(&body)
            .send(),
    )
    .await
    .expect("the gateway answers in time")
    .expect("request reaches the gateway")
}

/// The SDK's `ImagesResponse`: `created` (int), `data` of `{url|b64_json|revised_prompt}`,
/// optional `usage` with integer token counts.
fn assert_images_response(v: &Value) {
    assert!(v["created"].is_u64(), "{v}");
    let data = v["data"].as_array().expect("data is an array");
    for image in data {
        let keys: Vec<&String> = image.as_object().unwrap().keys().collect();
        assert!(
            keys.iter()
                .all(|k| ["url", "b64_json", "revised_prompt"].contains(&k.as_str())),
            "{v}"
        );
        assert!(
            image["url"].is_string() || image["b64_json"].is_string(),
            "{v}"
        );
    }
    let u = &v["usage"];
    for key in ["input_tokens", "output_tokens", "total_tokens"] {
        assert!(u[key].is_u64(), "{v}");
    }
    assert!(u["input_tokens_details"]["text_tokens"].is_u64(), "{v}");
    assert!(u["input_tokens_details"]["image_tokens"].is_u64(), "{v}");
}

async fn ok_json(app: &TestApp, body: Value) -> Value {
    let r = post(app, body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_images_response(&v);
    v
}

#[tokio::test]
async fn url_format_links_to_the_stored_image() {
    let app = spawn_app().await;
    let png = vec![0x89, b'P', b'N', b'G', 1, 1, 2, 3, 5];
    app.sim.set_answer(
        Answer::new()
            .text("Here you go")
            .image("image/png", png.clone()),
    );
    let v = ok_json(
        &app,
        json!({"model": "gemini-2.5-flash-image", "prompt": "a red fox", "response_format": "url",
            "size": "1024x1024", "quality": "standard", "style": "vivid", "user": "u"}),
    )
    .await;
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    let url = data[0]["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/media/", app.address)), "{url}");
    let got = app.client.get(url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.bytes().await.unwrap().to_vec(), png);
    // The prompt went upstream as the user's message, to the image model.
    let sent = app.sim.last_stream_assist_body().unwrap();
    assert_eq!(
        sent["streamAssistRequest"]["query"]["parts"][0]["text"],
        "a red fox"
    );
    assert_eq!(
        sent["streamAssistRequest"]["toolsSpec"],
        json!({"imageGenerationSpec": {}})
    );
    app.stop().await;
}

#[tokio::test]
async fn b64_json_is_the_default_and_decodes_to_the_upstream_bytes() {
    let app = spawn_app().await;
    // No model, no response_format: the default image model and b64_json; the simulator's
    // default answer to an image-only request carries DEFAULT_IMAGE_PNG.
    let v = ok_json(&app, json!({"prompt": "a tiny dot"})).await;
    let b64 = v["data"][0]["b64_json"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(bytes, DEFAULT_IMAGE_PNG);
    let sent = app.sim.last_stream_assist_body().unwrap();
    assert_eq!(
        sent["streamAssistRequest"]["assistGenerationConfig"]["modelId"],
        "gemini-2.5-flash"
    );
    app.stop().await;
}

#[tokio::test]
async fn n_runs_that_many_generations() {
    let app = spawn_app_with(TestOptions::default().accounts(2)).await;
    let v = ok_json(
        &app,
        json!({"model": "gemini-3-pro-image", "prompt": "two cats", "n": 2, "response_format": "b64_json"}),
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(app.sim.requests(Endpoint::StreamAssist).len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn models_that_do_not_generate_images_are_refused() {
    let app = spawn_app().await;
    let r = post(&app, json!({"model": "gemini-2.5-flash", "prompt": "x"})).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "model");
    let r = post(&app, json!({"model": "dall-e-3", "prompt": "x"})).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    let r = post(&app, json!({"prompt": "x", "n": 9})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(app.sim.requests(Endpoint::StreamAssist).len(), 0);
    app.stop().await;
}

#[tokio::test]
async fn an_answer_without_an_image_is_a_502() {
    let app = spawn_app().await;
    app.sim
        .set_answer(Answer::new().text("I would rather not draw that."));
    let r = post(&app, json!({"prompt": "x"})).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("without generating an image"),
        "{v}"
    );
    app.stop().await;
}

#[tokio::test]
async fn long_generations_keep_the_connection_alive() {
    let app = spawn_app_with(TestOptions::default().config(json!({
        "http": {"nonstream_keepalive_after_sec": 1, "stream_keepalive_ms": 200}
    })))
    .await;
    app.sim.add_fault(FaultRule::once(
        Endpoint::StreamAssist,
        Fault::SlowFirstByte(Duration::from_secs(3)),
    ));
    let started = Instant::now();
    let r = post(
        &app,
        json!({"prompt": "slow", "response_format": "b64_json"}),
    )
    .await;
    // Committed to 200 after 1 s, long before the answer.
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.headers()["content-type"], "application/json");
    let body = tokio::time::timeout(BOUND, r.bytes())
        .await
        .unwrap()
        .unwrap();
    let spaces = body.iter().take_while(|b| **b == b' ').count();
    assert!(spaces >= 5, "expected keep-alive spaces, got {spaces}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_images_response(&v);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, DEFAULT_IMAGE_PNG);
    app.stop().await;
}
