//! The Anthropic dialect end to end, through the real application and a real simulator. Every
//! stream is read through the Anthropic stream checker (`read_stream(.., Wire::Anthropic)`).

use std::time::Duration;

use business2api_tests::{
    Answer, Endpoint, Fault, FaultRule, StreamSummary, TEST_KEY, TestApp, TestOptions, Wire,
    read_stream, schemas, spawn_app, spawn_app_with,
};
use serde_json::{Value, json};

const MODEL: &str = "gemini-2.5-flash";
const THOUGHT: &str = "Considering the question.";

fn echo(prompt: &str) -> String {
    format!("You asked: «{prompt}»")
}

fn body(prompt: &str, stream: bool) -> Value {
    json!({"model": MODEL, "max_tokens": 1024, "stream": stream,
        "messages": [{"role": "user", "content": prompt}]})
}

/// `POST path` the way the current SDK does it (Bearer, a recent `anthropic-version`).
async fn post(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(TEST_KEY)
        .header("anthropic-version", "2026-10-21")
        .json(body)
        .send()
        .await
        .expect("request reaches the gateway")
}

async fn messages(app: &TestApp, body: &Value) -> reqwest::Response {
    post(app, "/v1/messages", body).await
}

async fn json_of(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("the body ends")
        .expect("a body");
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("a JSON body: {text}"));
    (status, headers, v)
}

async fn stream_of(app: &TestApp, body: &Value) -> StreamSummary {
    let response = messages(app, body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    read_stream(response, Wire::Anthropic).await
}

fn assert_error(v: &Value, kind: &str) {
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

fn upstream_query(app: &TestApp) -> String {
    let sent = app.sim.last_stream_assist_body().expect("an upstream call");
    sent["streamAssistRequest"]["query"]["parts"][0]["text"]
        .as_str()
        .expect("query text")
        .to_owned()
}

#[tokio::test]
async fn a_plain_message_matches_the_sdk_type() {
    let app = spawn_app().await;
    // The older SDKs' way: x-api-key and 2023-06-01.
    let response = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", TEST_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body("hello there", false))
        .send()
        .await
        .unwrap();
    let (status, headers, v) = json_of(response).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    schemas::assert_valid("anthropic.Message", &v);
    assert!(v["id"].as_str().unwrap().starts_with("msg_"), "{v}");
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], MODEL);
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["stop_sequence"].is_null());
    let content = v["content"].as_array().unwrap();
    assert_eq!(content.len(), 2, "{v}");
    assert_eq!(content[0]["type"], "thinking");
    assert_eq!(content[0]["thinking"], THOUGHT);
    assert!(
        content[0]["signature"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(content[1]["type"], "text");
    assert!(
        content[1]["text"]
            .as_str()
            .unwrap()
            .contains(&echo("hello there"))
    );
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);
    app.stop().await;
}

#[tokio::test]
async fn a_streamed_thinking_block_round_trips_and_a_tampered_one_is_refused() {
    let app = spawn_app().await;
    let s = stream_of(&app, &body("why?", true)).await;
    assert_eq!(s.thinking, THOUGHT);
    assert!(s.text.contains(&echo("why?")), "{}", s.text);
    assert_eq!(s.events[0]["message"]["model"], MODEL);
    let last_delta = s
        .events
        .iter()
        .rev()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(last_delta["delta"]["stop_reason"], "end_turn");
    assert!(last_delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let signature = s
        .events
        .iter()
        .find_map(|e| e["delta"]["signature"].as_str())
        .expect("a signature_delta")
        .to_owned();

    // The client sends the answer back, thinking block included, as Claude Code does.
    let follow_up = |thinking: &str, signature: &str| {
        json!({"model": MODEL, "max_tokens": 100, "stream": false, "messages": [
            {"role": "user", "content": "why?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": thinking, "signature": signature},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": s.text}]},
            {"role": "user", "content": "and then?"}]})
    };
    let (status, _, v) = json_of(messages(&app, &follow_up(THOUGHT, &signature)).await).await;
    assert_eq!(status, 200, "{v}");
    let query = upstream_query(&app);
    assert!(
        !query.contains(THOUGHT),
        "thinking is not sent upstream: {query}"
    );
    assert!(query.contains("Human: and then?"), "{query}");

    let calls = app.sim.requests(Endpoint::StreamAssist).len();
    for (thinking, signature) in [
        ("Considering another question.", signature.as_str()),
        (THOUGHT, "EqQBCkgIBRABGAIiQLtampered"),
    ] {
        let (status, _, v) = json_of(messages(&app, &follow_up(thinking, signature)).await).await;
        assert_eq!(status, 400, "{v}");
        assert_error(&v, "invalid_request_error");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("messages.1.content.0") && message.contains("signature"),
            "{message}"
        );
    }
    assert_eq!(
        app.sim.requests(Endpoint::StreamAssist).len(),
        calls,
        "refused requests never reach the upstream"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_signing_key_survives_a_restart() {
    let app = spawn_app().await;
    let (_, _, v) = json_of(messages(&app, &body("q", false)).await).await;
    let block = v["content"][0].clone();
    assert_eq!(block["type"], "thinking");
    let key = app.data_dir.path().join("thinking-signing.key");
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let (data_dir, sim, accounts) = app.shutdown_gracefully().await;
    let config = {
        let mut c = business2api_tests::base_config(data_dir.path(), &sim);
        business2api_tests::merge(&mut c, json!({"api_keys": [TEST_KEY]}));
        c
    };
    let app = business2api_tests::start_app(sim, accounts, data_dir, config).await;
    let again = json!({"model": MODEL, "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [block, {"type": "text", "text": "a"}]},
        {"role": "user", "content": "more"}]});
    let (status, _, v) = json_of(messages(&app, &again).await).await;
    assert_eq!(status, 200, "{v}");
    app.stop().await;
}

#[tokio::test]
async fn system_blocks_and_images_reach_the_upstream() {
    let app = spawn_app().await;
    let request = json!({"model": MODEL, "max_tokens": 50,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "and kind"}],
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg=="},
             "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
            {"type": "text", "text": "compare"}]}]});
    let (status, _, v) = json_of(messages(&app, &request).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        upstream_query(&app),
        "<system>\nbe brief\n\nand kind\n</system>\n\nHuman: compare [attachment 1: image] [attachment 2: image]\n\nAssistant:"
    );
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
    // A plain string system prompt too.
    let request = json!({"model": MODEL, "system": "one line", "messages": [{"role": "user", "content": "x"}]});
    let (status, _, _) = json_of(messages(&app, &request).await).await;
    assert_eq!(status, 200);
    assert!(upstream_query(&app).starts_with("<system>\none line\n</system>"));
    app.stop().await;
}

#[tokio::test]
async fn unknown_betas_versions_fields_and_beta_query_are_accepted() {
    let app = spawn_app().await;
    let request = json!({"model": MODEL, "max_tokens": 20000, "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 10000},
        "metadata": {"user_id": "user_123"},
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "stop_sequences": ["STOP"], "temperature": 1, "top_p": 0.9, "top_k": 40,
        "container": null, "service_tier": "auto", "some_future_field": {"x": [1, 2]},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]});
    let response = app
        .client
        .post(app.url("/v1/messages?beta=true"))
        .header("x-api-key", TEST_KEY)
        .header("anthropic-version", "2099-12-31")
        .header(
            "anthropic-beta",
            "interleaved-thinking-2025-05-14,some-beta-from-the-future-2099-01-01,context-management-2025-06-27",
        )
        .header("x-stainless-helper-method", "stream")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let s = read_stream(response, Wire::Anthropic).await;
    assert!(s.text.contains(&echo("hi")));
    app.stop().await;
}

#[tokio::test]
async fn tools_are_accepted_and_a_forced_choice_is_honoured() {
    let app = spawn_app().await;
    let tools = json!([
        {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
         "cache_control": {"type": "ephemeral"}, "strict": true, "type": "custom"},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    ]);
    // A forced choice is said in the tools section; a tool that is not declared is a 400.
    for (choice, says) in [
        (json!({"type": "any"}), "You must call at least one tool"),
        (
            json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}),
            "You must call the tool \"get_weather\"",
        ),
    ] {
        let request = json!({"model": MODEL, "max_tokens": 10, "tools": tools, "tool_choice": choice,
            "messages": [{"role": "user", "content": "weather? [sim:call get_weather {\"city\": \"Paris\"}]"}]});
        let (status, _, v) = json_of(messages(&app, &request).await).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["stop_reason"], "tool_use", "{v}");
        let call = v["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "tool_use")
            .unwrap();
        assert_eq!(call["input"], json!({"city": "Paris"}), "{v}");
        assert!(call["id"].as_str().unwrap().starts_with("toolu_"), "{v}");
        assert!(
            upstream_query(&app).contains(says),
            "{}",
            upstream_query(&app)
        );
    }
    assert!(upstream_query(&app).contains("Make at most one call per answer."));
    let request = json!({"model": MODEL, "max_tokens": 10, "tools": tools,
        "tool_choice": {"type": "tool", "name": "get_time"},
        "messages": [{"role": "user", "content": "weather?"}]});
    let (status, _, v) = json_of(messages(&app, &request).await).await;
    assert_eq!(status, 400, "{v}");
    assert_error(&v, "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("tool_choice:"),
        "{v}"
    );
    assert_eq!(app.sim.requests(Endpoint::StreamAssist).len(), 2);
    for choice in [
        json!({"type": "auto"}),
        json!({"type": "none"}),
        json!(null),
    ] {
        let request = json!({"model": MODEL, "max_tokens": 10, "tools": tools, "tool_choice": choice, "stream": true,
            "messages": [{"role": "user", "content": "weather?"}]});
        let s = stream_of(&app, &request).await;
        assert!(s.text.ends_with("weather?»"), "{}", s.text);
        // The tools reach the model as the emulation's tools section (docs/TOOLS.md), unless
        // the choice is none.
        let query = upstream_query(&app);
        if choice == json!({"type": "none"}) {
            assert_eq!(query, "weather?");
        } else {
            assert!(query.starts_with("<tools protocol=\"1\">"), "{query}");
            assert!(query.ends_with("</tools>\n\nweather?"), "{query}");
        }
    }
    // A replayed tool round trip reaches the upstream as a transcript.
    let request = json!({"model": MODEL, "tools": tools, "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}]});
    let (status, _, v) = json_of(messages(&app, &request).await).await;
    assert_eq!(status, 200, "{v}");
    let query = upstream_query(&app);
    assert!(
        query.contains("Assistant: <tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call>")
            && query.contains("Tool Result [get_weather]: sunny"),
        "{query}"
    );
    app.stop().await;
}

#[tokio::test]
async fn tool_calls_from_the_upstream_become_tool_use_blocks() {
    let app = spawn_app().await;
    app.sim
        .set_answer(Answer::new().function_call("get_weather", json!({"city": "Paris"})));
    let s = stream_of(&app, &body("weather", true)).await;
    let start = s
        .events
        .iter()
        .find(|e| e["content_block"]["type"] == "tool_use")
        .expect("a tool_use block");
    assert_eq!(start["content_block"]["name"], "get_weather");
    let delta = s
        .events
        .iter()
        .find(|e| e["delta"]["type"] == "input_json_delta")
        .unwrap();
    let input: Value =
        serde_json::from_str(delta["delta"]["partial_json"].as_str().unwrap()).unwrap();
    assert_eq!(input, json!({"city": "Paris"}));
    let end = s
        .events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(end["delta"]["stop_reason"], "tool_use");
    app.stop().await;
}

#[tokio::test]
async fn count_tokens_estimates_without_calling_the_upstream() {
    let app = spawn_app().await;
    let count = |v: Value| {
        let app = &app;
        async move {
            let (status, _, body) = json_of(post(app, "/v1/messages/count_tokens", &v).await).await;
            (status, body)
        }
    };
    let (status, short) =
        count(json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 200, "{short}");
    assert_eq!(short.as_object().unwrap().len(), 1, "{short}");
    let short = short["input_tokens"].as_u64().unwrap();
    assert!(short >= 1);
    let (_, long) = count(json!({"model": MODEL, "system": [{"type": "text", "text": "be brief"}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a much longer question than the first one"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]}))
    .await;
    let long = long["input_tokens"].as_u64().unwrap();
    assert!(
        long >= short + 258,
        "an image counts 258 tokens: {short} vs {long}"
    );
    let (status, v) =
        count(json!({"model": "claude-opus-9", "messages": [{"role": "user", "content": "hi"}]}))
            .await;
    assert_eq!(status, 404);
    assert_error(&v, "not_found_error");
    let (status, v) = count(json!({"model": MODEL, "messages": []})).await;
    assert_eq!(status, 400);
    assert_error(&v, "invalid_request_error");
    assert!(app.sim.requests(Endpoint::StreamAssist).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn models_are_listed_in_anthropic_shape_when_anthropic_version_is_sent() {
    let app = spawn_app().await;
    let get = |path: &'static str, anthropic: bool| {
        let app = &app;
        async move {
            let mut r = app.client.get(app.url(path)).header("x-api-key", TEST_KEY);
            if anthropic {
                r = r.header("anthropic-version", "2023-06-01");
            }
            json_of(r.send().await.unwrap()).await
        }
    };
    let (status, _, page) = get("/v1/models", true).await;
    assert_eq!(status, 200, "{page}");
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 20, "Anthropic's default page size");
    assert_eq!(page["has_more"], true);
    assert_eq!(page["first_id"], data[0]["id"]);
    assert_eq!(page["last_id"], data[19]["id"]);
    for m in data {
        assert_eq!(m["type"], "model");
        assert!(m["display_name"].as_str().is_some_and(|n| !n.is_empty()));
        let created = m["created_at"].as_str().unwrap();
        assert!(
            created.ends_with('Z') && created.contains('T'),
            "RFC 3339: {created}"
        );
    }
    assert!(page.get("object").is_none());
    let (_, _, all) = get("/v1/models?limit=1000", true).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 28);
    assert_eq!(all["has_more"], false);
    let (_, _, rest) = get("/v1/models?after_id=gemini-2.5-flash", true).await;
    assert_eq!(rest["data"][0]["id"], all["data"][1]["id"]);

    let (status, _, one) = get("/v1/models/gemini-2.5-pro", true).await;
    assert_eq!(status, 200);
    assert_eq!(
        one,
        json!({"type": "model", "id": "gemini-2.5-pro", "display_name": "Gemini 2.5 Pro",
            "created_at": one["created_at"], "lifecycle": "active"})
    );
    let (status, _, missing) = get("/v1/models/claude-opus-4-5", true).await;
    assert_eq!(status, 404);
    assert_error(&missing, "not_found_error");

    // Without anthropic-version: OpenAI's shape.
    let (_, _, openai) = get("/v1/models", false).await;
    assert_eq!(openai["object"], "list");
    assert_eq!(openai["data"].as_array().unwrap().len(), 28);
    app.stop().await;
}

#[tokio::test]
async fn errors_are_anthropic_shaped() {
    let app = spawn_app().await;
    let no_key = app
        .client
        .post(app.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&body("x", false))
        .send()
        .await
        .unwrap();
    let (status, _, v) = json_of(no_key).await;
    assert_eq!(status, 401);
    assert_error(&v, "authentication_error");
    let wrong_key = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", "sk-wrong")
        .json(&body("x", false))
        .send()
        .await
        .unwrap();
    let (status, _, v) = json_of(wrong_key).await;
    assert_eq!(status, 401);
    assert_error(&v, "authentication_error");

    let bad_json = app
        .client
        .post(app.url("/v1/messages"))
        .bearer_auth(TEST_KEY)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    let (status, _, v) = json_of(bad_json).await;
    assert_eq!(status, 400);
    assert_error(&v, "invalid_request_error");

    for stream in [false, true] {
        let mut b = body("x", stream);
        b["model"] = json!("claude-sonnet-4-5");
        let (status, _, v) = json_of(messages(&app, &b).await).await;
        assert_eq!(status, 404, "stream={stream}");
        assert_error(&v, "not_found_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("claude-sonnet-4-5")
        );
    }
    let (status, _, v) = json_of(
        messages(
            &app,
            &json!({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "hologram"}]}]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_error(&v, "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("messages.0.content.0:")
    );
    // Even a wrong method on an Anthropic path is answered in Anthropic's shape.
    let wrong_method = app
        .client
        .get(app.url("/v1/messages"))
        .header("x-api-key", TEST_KEY)
        .send()
        .await
        .unwrap();
    let (status, _, v) = json_of(wrong_method).await;
    assert!((400..500).contains(&status), "{status}");
    assert_eq!(v["type"], "error", "{v}");
    assert!(app.sim.requests(Endpoint::StreamAssist).is_empty());
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
        let (status, headers, v) = json_of(messages(&app, &body("x", stream)).await).await;
        assert_eq!(status, 429, "stream={stream}: {v}");
        assert_error(&v, "rate_limit_error");
        assert_eq!(headers["retry-after"], "7");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_mid_stream_cut_ends_with_error_then_a_closed_message() {
    let app = spawn_app().await;
    app.sim
        .set_answer(Answer::new().text("one ").text("two ").text("three"));
    app.sim.add_fault(FaultRule::always(
        Endpoint::StreamAssist,
        Fault::CutAfter(2),
    ));
    let response = tokio::time::timeout(Duration::from_secs(10), messages(&app, &body("x", true)))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let s = tokio::time::timeout(
        Duration::from_secs(10),
        read_stream(response, Wire::Anthropic),
    )
    .await
    .expect("the stream ends: clients never hang");
    assert_eq!(s.text, "one two ");
    let error = s.error.expect("an error event");
    assert_eq!(error["type"], "api_error");
    let types: Vec<&str> = s
        .events
        .iter()
        .rev()
        .take(4)
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "message_stop",
            "message_delta",
            "error",
            "content_block_stop"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn ping_events_flow_while_the_upstream_is_silent() {
    let app = spawn_app_with(
        TestOptions::default().config(json!({"http": {"stream_keepalive_ms": 100}})),
    )
    .await;
    app.sim
        .set_answer(Answer::new().thought("hmm").text("slow ").text("answer"));
    app.sim.set_pacing(Duration::from_millis(450));
    let s = stream_of(&app, &body("x", true)).await;
    assert!(
        s.keepalives >= 3,
        "expected ping events during silence, got {}",
        s.keepalives
    );
    assert_eq!(s.text, "slow answer");
    assert_eq!(s.thinking, "hmm");
    app.stop().await;
}

#[tokio::test]
async fn generated_images_are_text_blocks_with_a_link_that_serves_the_bytes() {
    let app = spawn_app().await;
    let png = vec![0x89, b'P', b'N', b'G', 4, 5, 6];
    for stream in [false, true] {
        app.sim
            .set_answer(Answer::new().text("Here: ").image("image/png", png.clone()));
        let mut b = body("draw", stream);
        b["model"] = json!("gemini-2.5-flash-image");
        let link = if stream {
            let s = stream_of(&app, &b).await;
            assert_eq!(s.media.len(), 1, "{s:?}");
            s.media[0].clone()
        } else {
            let (status, _, v) = json_of(messages(&app, &b).await).await;
            assert_eq!(status, 200, "{v}");
            schemas::assert_valid("anthropic.Message", &v);
            assert_eq!(v["content"][0], json!({"type": "text", "text": "Here: "}));
            let text = v["content"][1]["text"].as_str().unwrap();
            text.strip_prefix("![image](")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("a text block with a markdown image: {v}"))
                .to_owned()
        };
        assert!(
            link.starts_with(&format!("{}/media/", app.address)),
            "{link}"
        );
        let got = app.client.get(&link).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.headers()["content-type"], "image/png");
        assert_eq!(got.bytes().await.unwrap().to_vec(), png);
    }
    app.stop().await;
}

/// The shapes Claude Code 2.x sends (captured from `claude -p`), which Anthropic's reference
/// does not all list: a system-role message inside `messages`, `cache_control` on system,
/// text and tool_result blocks, an empty text block, a tool result holding an image, JSON-string
/// `metadata.user_id`, adaptive thinking shown as "omitted", `context_management`,
/// `output_config`, deferred tools and a stack of beta headers.
#[tokio::test]
async fn claude_code_requests_are_accepted_as_they_are() {
    let app = spawn_app().await;
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg==";
    let body = json!({
        "model": MODEL, "max_tokens": 32000, "stream": true,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332;"},
            {"type": "text", "text": "You are a Claude agent.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be careful.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                {"type": "text", "text": ""},
                {"type": "text", "text": "Look at the picture in shot.png", "cache_control": {"type": "ephemeral"}}
            ]},
            {"role": "system", "content": "# Environment\nPrimary working directory: /w"},
            {"role": "assistant", "content": [
                {"type": "text", "text": ""},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/w/shot.png"},
                 "cache_control": {"type": "ephemeral"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "cache_control": {"type": "ephemeral"},
                 "content": [
                     {"type": "text", "text": "an image:"},
                     {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
                 ]}
            ]}
        ],
        "tools": [
            {"name": "Read", "description": "Reads a file", "input_schema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                "properties": {"file_path": {"type": "string"}}, "required": ["file_path"],
                "additionalProperties": false}},
            {"name": "DeferredToolPlaceholder", "description": "later", "defer_loading": true,
             "input_schema": {"type": "object"}}
        ],
        "metadata": {"user_id": "{\"device_id\":\"d\",\"session_id\":\"s\"}"},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"}
    });
    let response = app
        .client
        .post(app.url("/v1/messages?beta=true"))
        .header("x-api-key", TEST_KEY)
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,\
             mid-conversation-tool-changes-2026-07-01,advanced-tool-use-2025-11-20,effort-2025-11-24",
        )
        .header("anthropic-dangerous-direct-browser-access", "true")
        .header("x-app", "cli")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let s = read_stream(response, Wire::Anthropic).await;
    // "omitted": the answer carries no thinking.
    assert!(s.thinking.is_empty(), "{:?}", s.events);
    assert!(
        !s.events
            .iter()
            .any(|e| e["content_block"]["type"] == "thinking"),
        "{:?}",
        s.events
    );
    assert!(!s.text.is_empty());
    let query = upstream_query(&app);
    let at = |needle: &str| {
        query
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing from {query}"))
    };
    // The system texts first, the mid-conversation system message at its place, then the
    // call and its result.
    assert!(at("You are a Claude agent.") < at("<system-reminder>"));
    assert!(at("<system-reminder>") < at("# Environment"));
    assert!(
        at("# Environment")
            < at("{\"name\":\"Read\",\"arguments\":{\"file_path\":\"/w/shot.png\"}}")
    );
    assert!(at("\"arguments\":{\"file_path\"") < at("Tool Result [Read]: an image:"));
    // The image in the tool result went up as an attachment.
    let sent = app.sim.last_stream_assist_body().unwrap();
    assert_eq!(
        sent["streamAssistRequest"]["fileIds"]
            .as_array()
            .map_or(0, Vec::len),
        1,
        "{sent}"
    );
    // Thinking switched off the same way, non-streamed.
    let mut plain = body.clone();
    plain["stream"] = json!(false);
    plain["thinking"] = json!({"type": "disabled"});
    let (status, _, v) = json_of(messages(&app, &plain).await).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["content"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["type"] != "thinking"),
        "{v}"
    );
    app.stop().await;
}
