//! The OpenAI Responses API (`POST /v1/responses`) end to end, through the real application
//! and a real simulator. Every stream goes through the Responses checker.

use std::time::Duration;

use base64::Engine as _;
use business2api_tests::{
    Answer, Endpoint, Fault, FaultRule, TEST_KEY, TestApp, Wire, read_stream, schemas, spawn_app,
};
use serde_json::{Value, json};

const BOUND: Duration = Duration::from_secs(15);

async fn post(app: &TestApp, body: Value) -> reqwest::Response {
    tokio::time::timeout(
        BOUND,
        app.client
            .post(app.url("/v1/responses"))
            .bearer_auth(TEST_KEY)
            .json(&body)
            .send(),
    )
    .await
    .expect("the gateway answers in time")
    .expect("request reaches the gateway")
}

/// A non-streamed response body, validated against the SDK's `Response` type (as the
/// `response` of a `response.completed` event, the schema the SDK export has).
async fn response_json(app: &TestApp, body: Value) -> Value {
    let r = post(app, body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    schemas::assert_valid(
        "openai.ResponseStreamEvent",
        &json!({"type": "response.completed", "sequence_number": 0, "response": v}),
    );
    v
}

fn output_text(v: &Value) -> String {
    v["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"] == "message")
        .flat_map(|o| o["content"].as_array().unwrap().iter())
        .filter_map(|c| c["text"].as_str())
        .collect()
}

fn types(v: &Value) -> Vec<String> {
    v["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap().to_owned())
        .collect()
}

async fn error_json(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status(), status);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v
}

#[tokio::test]
async fn a_plain_response_has_the_sdk_shape_reasoning_text_and_usage() {
    let app = spawn_app().await;
    let v = response_json(
        &app,
        json!({"model": "gemini-2.5-flash", "input": "hello", "store": true, "metadata": {"k": "v"},
            "temperature": 0.5, "max_output_tokens": 100, "reasoning": {"effort": "low"},
            "text": {"format": {"type": "text"}}, "parallel_tool_calls": false,
            "truncation": "auto", "include": ["reasoning.encrypted_content"], "user": "u1",
            "tools": [{"type": "web_search"}], "tool_choice": "auto"}),
    )
    .await;
    assert!(v["id"].as_str().unwrap().starts_with("resp_"), "{v}");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gemini-2.5-flash");
    assert_eq!(v["metadata"], json!({"k": "v"}));
    assert_eq!(v["parallel_tool_calls"], false);
    assert_eq!(types(&v), ["reasoning", "message"]);
    assert!(v["output"][0]["id"].as_str().unwrap().starts_with("rs_"));
    assert_eq!(
        v["output"][0]["summary"],
        json!([{"type": "summary_text", "text": "Considering the question."}])
    );
    let msg = &v["output"][1];
    assert!(msg["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(msg["status"], "completed");
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["content"][0]["annotations"], json!([]));
    assert!(output_text(&v).contains("You asked: «hello»"), "{v}");
    let u = &v["usage"];
    assert!(u["input_tokens"].as_u64().unwrap() > 0);
    assert!(
        u["output_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_streamed_response_follows_the_event_order() {
    let app = spawn_app().await;
    let r = post(
        &app,
        json!({"model": "gemini-2.5-pro", "input": "stream me", "stream": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let s = read_stream(r, Wire::Responses).await;
    assert!(s.text.contains("You asked: «stream me»"), "{}", s.text);
    assert_eq!(s.thinking, "Considering the question.");
    let mut kinds: Vec<&str> = s
        .events
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let done = &s.events.last().unwrap()["response"];
    assert_eq!(output_text(done), s.text);
    assert!(done["usage"]["output_tokens"].as_u64().unwrap() > 0);
    app.stop().await;
}

#[tokio::test]
async fn thoughts_after_text_open_new_items_in_both_forms() {
    let app = spawn_app().await;
    let answer = || {
        Answer::new()
            .thought("first ")
            .text("Part one. ")
            .thought("second")
            .text("Part two.")
    };
    app.sim.set_answer(answer());
    let v = response_json(&app, json!({"model": "gemini-2.5-flash", "input": "x"})).await;
    assert_eq!(types(&v), ["reasoning", "message", "reasoning", "message"]);
    assert_eq!(output_text(&v), "Part one. Part two.");

    app.sim.set_answer(answer());
    let r = post(
        &app,
        json!({"model": "gemini-2.5-flash", "input": "x", "stream": true}),
    )
    .await;
    let s = read_stream(r, Wire::Responses).await;
    assert_eq!(s.text, "Part one. Part two.");
    assert_eq!(s.thinking, "first second");
    assert_eq!(
        types(&s.events.last().unwrap()["response"]),
        ["reasoning", "message", "reasoning", "message"]
    );
    app.stop().await;
}

#[tokio::test]
async fn instructions_and_history_reach_the_upstream_flattened() {
    let app = spawn_app().await;
    let body = json!({"model": "gemini-2.5-flash", "instructions": "Be terse.", "input": [
        {"role": "user", "content": "weather in Paris?"},
        {"type": "reasoning", "id": "rs_0", "summary": []},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is sunny.", "annotations": []}]},
        {"role": "user", "content": [{"type": "input_text", "text": "and tomorrow?"}]}
    ], "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]});
    response_json(&app, body).await;
    let sent = app.sim.last_stream_assist_body().unwrap();
    let text = sent["streamAssistRequest"]["query"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    // The request declares tools: the tools section comes first, and the earlier call is
    // written in the tool protocol's grammar (docs/TOOLS.md).
    let (tools, transcript) = text.split_once("</tools>\n\n").unwrap();
    assert!(tools.starts_with("<tools protocol=\"1\">"), "{tools}");
    assert!(
        tools.contains(r#"{"name":"get_weather","parameters":{"type":"object"}}"#),
        "{tools}"
    );
    assert_eq!(
        transcript,
        "<system>\nBe terse.\n</system>\n\nHuman: weather in Paris?\n\n\
         Assistant: <tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call>\n\n\
         Tool Result [get_weather]: sunny\n\nAssistant: It is sunny.\n\n\
         Human: and tomorrow?\n\nAssistant:"
    );
    app.stop().await;
}

#[tokio::test]
async fn input_images_as_data_and_http_urls_reach_the_upstream() {
    let app = spawn_app().await;
    let body = json!({"model": "gemini-2.5-flash", "stream": true, "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "compare"},
        {"type": "input_image", "image_url": "data:image/jpeg;base64,/9j/4AAQSkZJRg==", "detail": "auto"},
        {"type": "input_image", "image_url": "https://example.com/cat.png"}]}]});
    let r = post(&app, body).await;
    assert_eq!(r.status(), 200);
    read_stream(r, Wire::Responses).await;
    let uploads = app.sim.uploads();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert_eq!(uploads[0].mime_type.as_deref(), Some("image/jpeg"));
    assert_eq!(
        uploads[0].bytes.as_deref(),
        Some(&[0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46][..])
    );
    assert_eq!(
        uploads[1].file_uri.as_deref(),
        Some("https://example.com/cat.png")
    );
    let sent = app.sim.last_stream_assist_body().unwrap();
    assert_eq!(
        sent["streamAssistRequest"]["fileIds"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    app.stop().await;
}

#[tokio::test]
async fn generated_images_are_image_generation_calls_and_videos_links() {
    let app = spawn_app().await;
    let png = vec![0x89, b'P', b'N', b'G', 4, 5, 6];
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    app.sim
        .set_answer(Answer::new().text("Here: ").image("image/png", png.clone()));
    let v = response_json(
        &app,
        json!({"model": "gemini-2.5-flash-image", "input": "draw"}),
    )
    .await;
    assert_eq!(types(&v), ["message", "image_generation_call"]);
    let call = &v["output"][1];
    assert_eq!(call["status"], "completed");
    assert_eq!(call["result"], b64);
    assert!(call["id"].as_str().unwrap().starts_with("ig_"));

    app.sim
        .set_answer(Answer::new().image("image/png", png.clone()));
    let r = post(
        &app,
        json!({"model": "gemini-2.5-flash-image", "input": "draw", "stream": true}),
    )
    .await;
    let s = read_stream(r, Wire::Responses).await;
    assert_eq!(s.media, [format!("data:image/png;base64,{b64}")]);

    let mp4 = vec![0, 0, 0, 0x18, b'f', b't', b'y', b'p'];
    app.sim
        .set_answer(Answer::new().text("Clip: ").video("video/mp4", mp4.clone()));
    let r = post(
        &app,
        json!({"model": "gemini-2.5-flash-video", "input": "film", "stream": true}),
    )
    .await;
    let s = read_stream(r, Wire::Responses).await;
    assert_eq!(s.media.len(), 1, "{s:?}");
    assert!(s.text.starts_with("Clip: [video]("), "{}", s.text);
    let got = app.client.get(&s.media[0]).send().await.unwrap();
    assert_eq!(got.headers()["content-type"], "video/mp4");
    assert_eq!(got.bytes().await.unwrap().to_vec(), mp4);
    app.stop().await;
}

#[tokio::test]
async fn requests_the_gateway_cannot_honour_are_clear_400s() {
    let app = spawn_app().await;
    for stream in [false, true] {
        for (extra, param) in [
            (
                json!({"tool_choice": {"type": "function", "name": "get_time"}}),
                "tool_choice",
            ),
            (
                json!({"tool_choice": {"type": "file_search"}}),
                "tool_choice",
            ),
            (
                json!({"previous_response_id": "resp_abc"}),
                "previous_response_id",
            ),
        ] {
            let mut body = json!({"model": "gemini-2.5-flash", "input": "x", "stream": stream,
                "tools": [{"type": "function", "name": "get_weather", "parameters": {}}]});
            business2api_tests::merge(&mut body, extra);
            let v = error_json(post(&app, body).await, 400).await;
            assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
            assert_eq!(v["error"]["param"], param, "{v}");
        }
    }
    let body = json!({"model": "gemini-2.5-flash", "input": [{"role": "user", "content": [
        {"type": "input_image", "file_id": "file-123"}]}]});
    let v = error_json(post(&app, body).await, 400).await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("file_id"),
        "{v}"
    );
    assert_eq!(app.sim.requests(Endpoint::StreamAssist).len(), 0);
    app.stop().await;
}

#[tokio::test]
async fn unknown_model_is_404_and_a_missing_key_401() {
    let app = spawn_app().await;
    for stream in [false, true] {
        let v = error_json(
            post(
                &app,
                json!({"model": "gpt-9", "input": "x", "stream": stream}),
            )
            .await,
            404,
        )
        .await;
        assert_eq!(v["error"]["code"], "model_not_found");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-9"));
    }
    let r = app
        .client
        .post(app.url("/v1/responses"))
        .json(&json!({"model": "gemini-2.5-flash", "input": "x"}))
        .send()
        .await
        .unwrap();
    let v = error_json(r, 401).await;
    assert_eq!(v["error"]["code"], "missing_api_key");
    app.stop().await;
}

#[tokio::test]
async fn an_upstream_rate_limit_is_429_with_retry_after_in_both_modes() {
    for stream in [false, true] {
        let app = spawn_app().await;
        app.sim.add_fault(FaultRule::always(
            Endpoint::StreamAssist,
            Fault::RateLimited {
                retry_after_secs: Some(7),
            },
        ));
        let r = post(
            &app,
            json!({"model": "gemini-2.5-flash", "input": "x", "stream": stream}),
        )
        .await;
        assert_eq!(r.headers()["retry-after"], "7", "stream={stream}");
        let v = error_json(r, 429).await;
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_cut_mid_stream_ends_with_response_failed() {
    let app = spawn_app().await;
    app.sim
        .set_answer(Answer::new().text("one ").text("two ").text("three"));
    app.sim.add_fault(FaultRule::always(
        Endpoint::StreamAssist,
        Fault::CutAfter(2),
    ));
    let r = post(
        &app,
        json!({"model": "gemini-2.5-flash", "input": "x", "stream": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let s = read_stream(r, Wire::Responses).await;
    assert_eq!(s.text, "one two ");
    let last = s.events.last().unwrap();
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["output"][0]["status"], "incomplete");
    let error = s.error.unwrap();
    assert_eq!(error["code"], "server_error");
    assert!(
        error["message"].as_str().unwrap().contains("upstream"),
        "{error}"
    );
    app.stop().await;
}

#[tokio::test]
async fn keep_alive_comments_flow_while_the_upstream_is_silent() {
    let app = business2api_tests::spawn_app_with(
        business2api_tests::TestOptions::default()
            .config(json!({"http": {"stream_keepalive_ms": 100}})),
    )
    .await;
    app.sim
        .set_answer(Answer::new().text("slow ").text("answer"));
    app.sim.set_pacing(Duration::from_millis(450));
    let r = post(
        &app,
        json!({"model": "gemini-2.5-flash", "input": "x", "stream": true}),
    )
    .await;
    let s = read_stream(r, Wire::Responses).await;
    assert!(s.keepalives >= 3, "keep-alives: {}", s.keepalives);
    assert_eq!(s.text, "slow answer");
    app.stop().await;
}
