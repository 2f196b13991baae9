//! Structural limits (`limits.*`) in every dialect, through the real application and a real
//! simulator: a body over a limit is a 400 in the caller's dialect naming the field and the key,
//! refused before any account is used (the simulator sees no call); a body at a limit is
//! accepted. Also: negative max-token values, Gemini contents without parts, and the
//! attachment limit refusing a request of thousands of images before any upload.

use std::time::{Duration, Instant};

use business2api_tests::{TEST_KEY, TestApp, TestOptions, spawn_app, spawn_app_with};
use serde_json::{Value, json};

const MODEL: &str = "gemini-2.5-flash";
const PNG_1X1: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
const BOUND: Duration = Duration::from_secs(30);

/// The dialect endpoints that parse chat content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    AnthropicMessages,
    AnthropicCount,
    OpenAiChat,
    Responses,
    GeminiGenerate,
    GeminiStream,
    GeminiCount,
}

const ROUTES: [Route; 7] = [
    Route::AnthropicMessages,
    Route::AnthropicCount,
    Route::OpenAiChat,
    Route::Responses,
    Route::GeminiGenerate,
    Route::GeminiStream,
    Route::GeminiCount,
];

impl Route {
    fn path(self) -> String {
        match self {
            Route::AnthropicMessages => "/v1/messages".into(),
            Route::AnthropicCount => "/v1/messages/count_tokens".into(),
            Route::OpenAiChat => "/v1/chat/completions".into(),
            Route::Responses => "/v1/responses".into(),
            Route::GeminiGenerate => format!("/v1beta/models/{MODEL}:generateContent"),
            Route::GeminiStream => format!("/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"),
            Route::GeminiCount => format!("/v1beta/models/{MODEL}:countTokens"),
        }
    }

    fn is_gemini(self) -> bool {
        matches!(
            self,
            Route::GeminiGenerate | Route::GeminiStream | Route::GeminiCount
        )
    }

    /// One message (or content, or input item) of text.
    fn message(self, text: &str) -> Value {
        match self {
            Route::AnthropicMessages | Route::AnthropicCount | Route::OpenAiChat => {
                json!({"role": "user", "content": text})
            }
            Route::Responses => json!({"role": "user", "content": text}),
            _ => json!({"role": "user", "parts": [{"text": text}]}),
        }
    }

    /// One message of `n` text blocks / parts.
    fn message_of_parts(self, n: usize) -> Value {
        let part = match self {
            Route::AnthropicMessages | Route::AnthropicCount | Route::OpenAiChat => {
                json!({"type": "text", "text": "x"})
            }
            Route::Responses => json!({"type": "input_text", "text": "x"}),
            _ => json!({"text": "x"}),
        };
        let parts: Vec<Value> = std::iter::repeat_n(part, n).collect();
        match self {
            Route::AnthropicMessages
            | Route::AnthropicCount
            | Route::OpenAiChat
            | Route::Responses => json!({"role": "user", "content": parts}),
            _ => json!({"role": "user", "parts": parts}),
        }
    }

    /// `n` tool definitions in this dialect's shape.
    fn tools(self, n: usize) -> Value {
        let tools: Vec<Value> = (0..n)
            .map(|i| {
                let name = format!("tool_{i}");
                match self {
                    Route::AnthropicMessages | Route::AnthropicCount => {
                        json!({"name": name, "input_schema": {"type": "object"}})
                    }
                    Route::OpenAiChat => {
                        json!({"type": "function", "function": {"name": name, "parameters": {}}})
                    }
                    Route::Responses => json!({"type": "function", "name": name, "parameters": {}}),
                    _ => json!({"functionDeclarations": [{"name": name}]}),
                }
            })
            .collect();
        Value::Array(tools)
    }

    /// A request of `messages`, plus `extra` fields.
    fn body(self, messages: Vec<Value>, extra: Value) -> Value {
        let mut body = match self {
            Route::AnthropicMessages | Route::AnthropicCount => {
                json!({"model": MODEL, "max_tokens": 100, "messages": messages})
            }
            Route::OpenAiChat => json!({"model": MODEL, "messages": messages}),
            Route::Responses => json!({"model": MODEL, "input": messages}),
            _ => json!({"contents": messages}),
        };
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
            b.extend(extra);
        }
        if self == Route::GeminiCount {
            // Tools and generation options travel inside a whole generateContentRequest.
            body["model"] = json!(format!("models/{MODEL}"));
            body = json!({"generateContentRequest": body});
        }
        body
    }

    fn messages_field(self) -> &'static str {
        match self {
            Route::Responses => "input",
            r if r.is_gemini() => "contents",
            _ => "messages",
        }
    }
}

async fn post(app: &TestApp, route: Route, body: &Value) -> (u16, Value) {
    let request = app.client.post(app.url(&route.path()));
    let request = match route {
        Route::AnthropicMessages | Route::AnthropicCount => request
            .header("x-api-key", TEST_KEY)
            .header("anthropic-version", "2023-06-01"),
        r if r.is_gemini() => request.header("x-goog-api-key", TEST_KEY),
        _ => request.bearer_auth(TEST_KEY),
    };
    let response = tokio::time::timeout(BOUND, request.json(body).send())
        .await
        .expect("the gateway answers in time")
        .expect("request reaches the gateway");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Asserts a 400 in `route`'s dialect whose message contains each of `needles`.
fn assert_refused(route: Route, status: u16, body: &Value, needles: &[&str]) {
    assert_eq!(status, 400, "{route:?}: {body}");
    let message = match route {
        Route::AnthropicMessages | Route::AnthropicCount => {
            assert_eq!(body["type"], "error", "{route:?}: {body}");
            assert_eq!(
                body["error"]["type"], "invalid_request_error",
                "{route:?}: {body}"
            );
            body["error"]["message"].as_str()
        }
        Route::OpenAiChat | Route::Responses => {
            assert_eq!(
                body["error"]["type"], "invalid_request_error",
                "{route:?}: {body}"
            );
            body["error"]["message"].as_str()
        }
        _ => {
            assert_eq!(body["error"]["code"], 400, "{route:?}: {body}");
            assert_eq!(
                body["error"]["status"], "INVALID_ARGUMENT",
                "{route:?}: {body}"
            );
            body["error"]["message"].as_str()
        }
    }
    .unwrap_or_default();
    for needle in needles {
        assert!(
            message.contains(needle),
            "{route:?}: `{message}` lacks `{needle}`"
        );
    }
}

fn assert_accepted(route: Route, status: u16, body: &Value) {
    assert_eq!(status, 200, "{route:?}: {body}");
}

/// No call reached the simulator (no account was leased, nothing uploaded).
fn assert_untouched(app: &TestApp) {
    let calls: u64 = app.sim.stats().calls.values().sum();
    assert_eq!(
        calls,
        0,
        "the simulator saw calls: {:?}",
        app.sim.stats().calls
    );
    assert!(app.sim.uploads().is_empty());
}

async fn small_limits() -> TestApp {
    spawn_app_with(TestOptions::default().config(json!({"limits": {
        "max_messages": 3, "max_parts": 5, "max_tools": 2, "max_attachments": 2, "max_depth": 12
    }})))
    .await
}

#[tokio::test]
async fn too_many_messages_are_refused_in_every_dialect_and_the_limit_itself_is_accepted() {
    let app = small_limits().await;
    for route in ROUTES {
        let over: Vec<Value> = (0..4).map(|i| route.message(&format!("m{i}"))).collect();
        let (status, body) = post(&app, route, &route.body(over, json!({}))).await;
        let field = format!("{}: more than 3", route.messages_field());
        assert_refused(route, status, &body, &[&field, "limits.max_messages"]);
    }
    assert_untouched(&app);
    for route in ROUTES {
        let at: Vec<Value> = (0..3).map(|i| route.message(&format!("m{i}"))).collect();
        let (status, body) = post(&app, route, &route.body(at, json!({}))).await;
        assert_accepted(route, status, &body);
    }
    app.stop().await;
}

#[tokio::test]
async fn too_many_parts_are_refused_in_every_dialect_counting_the_whole_request() {
    let app = small_limits().await;
    for route in ROUTES {
        // Six parts over two messages: each message is under the limit, the request is not.
        let over = vec![route.message_of_parts(3), route.message_of_parts(3)];
        let (status, body) = post(&app, route, &route.body(over, json!({}))).await;
        assert_refused(route, status, &body, &["more than 5", "limits.max_parts"]);
    }
    // Anthropic counts the system blocks and nested tool results too.
    let system: Vec<Value> = std::iter::repeat_n(json!({"type": "text", "text": "s"}), 4).collect();
    let body = Route::AnthropicMessages.body(
        vec![Route::AnthropicMessages.message_of_parts(2)],
        json!({"system": system}),
    );
    let (status, body) = post(&app, Route::AnthropicMessages, &body).await;
    assert_refused(
        Route::AnthropicMessages,
        status,
        &body,
        &["limits.max_parts"],
    );
    let nested: Vec<Value> = std::iter::repeat_n(json!({"type": "text", "text": "r"}), 5).collect();
    let body = Route::AnthropicMessages.body(
        vec![
            json!({"role": "user", "content": "q"}),
            json!({"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]}),
            json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": nested}]}),
        ],
        json!({}),
    );
    let (status, body) = post(&app, Route::AnthropicMessages, &body).await;
    assert_refused(
        Route::AnthropicMessages,
        status,
        &body,
        &["limits.max_parts"],
    );
    assert_untouched(&app);
    for route in ROUTES {
        let at = vec![route.message_of_parts(2), route.message_of_parts(3)];
        let (status, body) = post(&app, route, &route.body(at, json!({}))).await;
        assert_accepted(route, status, &body);
    }
    app.stop().await;
}

#[tokio::test]
async fn too_many_tools_are_refused_in_every_dialect() {
    // The tools' schemas count against max_parts too: leave room for them.
    let app = spawn_app_with(
        TestOptions::default().config(json!({"limits": {"max_tools": 2, "max_parts": 1000}})),
    )
    .await;
    for route in ROUTES {
        let (status, body) = post(
            &app,
            route,
            &route.body(vec![route.message("q")], json!({"tools": route.tools(3)})),
        )
        .await;
        assert_refused(
            route,
            status,
            &body,
            &["tools: more than 2", "limits.max_tools"],
        );
    }
    // Gemini: declarations inside one tool count too.
    let body = Route::GeminiGenerate.body(
        vec![Route::GeminiGenerate.message("q")],
        json!({"tools": [{"functionDeclarations": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}]}),
    );
    let (status, body) = post(&app, Route::GeminiGenerate, &body).await;
    assert_refused(Route::GeminiGenerate, status, &body, &["limits.max_tools"]);
    // OpenAI: legacy `functions` count too.
    let body = Route::OpenAiChat.body(
        vec![Route::OpenAiChat.message("q")],
        json!({"functions": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}),
    );
    let (status, body) = post(&app, Route::OpenAiChat, &body).await;
    assert_refused(Route::OpenAiChat, status, &body, &["limits.max_tools"]);
    assert_untouched(&app);
    for route in ROUTES {
        let (status, body) = post(
            &app,
            route,
            &route.body(vec![route.message("q")], json!({"tools": route.tools(1)})),
        )
        .await;
        assert_accepted(route, status, &body);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_body_nested_too_deep_is_refused_in_every_dialect() {
    let app = small_limits().await;
    let mut deep = json!("bottom");
    for _ in 0..12 {
        deep = json!([deep]);
    }
    for route in ROUTES {
        let (status, body) = post(
            &app,
            route,
            &route.body(vec![route.message("q")], json!({"metadata_x": deep})),
        )
        .await;
        assert_refused(route, status, &body, &["limits.max_depth"]);
    }
    let (status, body) = {
        let response = app
            .client
            .post(app.url("/v1/images/generations"))
            .bearer_auth(TEST_KEY)
            .json(&json!({"prompt": "a cat", "x": deep}))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    assert_refused(Route::OpenAiChat, status, &body, &["limits.max_depth"]);
    assert_untouched(&app);
    // Brackets inside strings do not count.
    for route in ROUTES {
        let text = "[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{";
        let (status, body) = post(
            &app,
            route,
            &route.body(vec![route.message(text)], json!({})),
        )
        .await;
        assert_accepted(route, status, &body);
    }
    app.stop().await;
}

#[tokio::test]
async fn thousands_of_images_are_refused_quickly_without_any_upload() {
    let app = spawn_app().await;
    let images: Vec<Value> = (0..5_000)
        .map(|_| json!({"type": "image_url", "image_url": {"url": PNG_1X1}}))
        .collect();
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": images}]});
    let started = Instant::now();
    let (status, body) = post(&app, Route::OpenAiChat, &body).await;
    assert_refused(
        Route::OpenAiChat,
        status,
        &body,
        &[
            "5000 attachments exceed the limit of 256",
            "limits.max_attachments",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_untouched(&app);
    app.stop().await;
}

#[tokio::test]
async fn the_attachment_limit_applies_in_every_chat_dialect() {
    let app = small_limits().await;
    let (mime, data) = PNG_1X1
        .strip_prefix("data:")
        .and_then(|r| r.split_once(";base64,"))
        .unwrap();
    let anthropic_image =
        json!({"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}});
    let gemini_image = json!({"inlineData": {"mimeType": mime, "data": data}});
    let cases = [
        (
            Route::AnthropicMessages,
            json!({"role": "user", "content": [anthropic_image, anthropic_image, anthropic_image]}),
        ),
        (
            Route::OpenAiChat,
            json!({"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": PNG_1X1}},
                {"type": "image_url", "image_url": PNG_1X1},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}),
        ),
        (
            Route::Responses,
            json!({"role": "user", "content": [
                {"type": "input_image", "image_url": PNG_1X1},
                {"type": "input_image", "image_url": PNG_1X1},
                {"type": "input_image", "image_url": PNG_1X1}]}),
        ),
        (
            Route::GeminiGenerate,
            json!({"role": "user", "parts": [gemini_image, gemini_image, gemini_image]}),
        ),
        (
            Route::GeminiStream,
            json!({"role": "user", "parts": [gemini_image, gemini_image, gemini_image]}),
        ),
    ];
    for (route, message) in cases {
        let (status, body) = post(&app, route, &route.body(vec![message], json!({}))).await;
        assert_refused(
            route,
            status,
            &body,
            &[
                "3 attachments exceed the limit of 2",
                "limits.max_attachments",
            ],
        );
    }
    assert_untouched(&app);
    // Two images are within the limit.
    let message = json!({"role": "user", "parts": [gemini_image, gemini_image, {"text": "what?"}]});
    let (status, body) = post(
        &app,
        Route::GeminiGenerate,
        &Route::GeminiGenerate.body(vec![message], json!({})),
    )
    .await;
    assert_accepted(Route::GeminiGenerate, status, &body);
    assert_eq!(app.sim.uploads().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn negative_max_tokens_are_refused_in_every_dialect() {
    let app = spawn_app().await;
    let cases = [
        // Anthropic already required a positive integer.
        (
            Route::AnthropicMessages,
            json!({"max_tokens": -1}),
            "max_tokens: must be a positive integer",
        ),
        (
            Route::AnthropicCount,
            json!({"max_tokens": -1}),
            "max_tokens: must be a positive integer",
        ),
        (
            Route::OpenAiChat,
            json!({"max_tokens": -1}),
            "max_tokens: must not be negative",
        ),
        (
            Route::OpenAiChat,
            json!({"max_completion_tokens": -5}),
            "max_completion_tokens: must not be negative",
        ),
        (
            Route::Responses,
            json!({"max_output_tokens": -1}),
            "max_output_tokens: must not be negative",
        ),
        (
            Route::GeminiGenerate,
            json!({"generationConfig": {"maxOutputTokens": -1}}),
            "maxOutputTokens: must not be negative",
        ),
        (
            Route::GeminiStream,
            json!({"generation_config": {"max_output_tokens": -1}}),
            "maxOutputTokens: must not be negative",
        ),
        (
            Route::GeminiCount,
            json!({"generationConfig": {"maxOutputTokens": -1}}),
            "maxOutputTokens: must not be negative",
        ),
    ];
    for (route, extra, needle) in cases {
        let (status, body) = post(&app, route, &route.body(vec![route.message("q")], extra)).await;
        assert_refused(route, status, &body, &[needle]);
    }
    assert_untouched(&app);
    app.stop().await;
}

#[tokio::test]
async fn gemini_contents_without_parts_are_refused() {
    let app = spawn_app().await;
    for route in [
        Route::GeminiGenerate,
        Route::GeminiStream,
        Route::GeminiCount,
    ] {
        for second in [
            json!({"role": "model", "parts": []}),
            json!({"role": "model"}),
        ] {
            let body = route.body(vec![route.message("q"), second], json!({}));
            let (status, body) = post(&app, route, &body).await;
            assert_refused(route, status, &body, &["contents[1].parts"]);
        }
    }
    assert_untouched(&app);
    app.stop().await;
}

#[tokio::test]
async fn a_count_of_huge_numbers_of_tiny_blocks_stops_at_the_parts_limit() {
    // The probe's shape (1.2 M tiny blocks in 32 MB) scaled down: 200 000 blocks, twice the
    // default limit, in one message.
    let app = spawn_app().await;
    for route in [Route::AnthropicCount, Route::GeminiCount] {
        let body = route.body(vec![route.message_of_parts(200_000)], json!({}));
        let (status, body) = post(&app, route, &body).await;
        assert_refused(
            route,
            status,
            &body,
            &["more than 100000", "limits.max_parts"],
        );
    }
    // A large body within the limits (parsed off the HTTP worker threads) is counted.
    for route in [Route::AnthropicCount, Route::GeminiCount] {
        let body = route.body(vec![route.message_of_parts(20_000)], json!({}));
        let (status, body) = post(&app, route, &body).await;
        assert_accepted(route, status, &body);
        let tokens = body["input_tokens"]
            .as_u64()
            .or(body["totalTokens"].as_u64())
            .unwrap_or_default();
        assert!(tokens > 0, "{route:?}: {body}");
    }
    assert_untouched(&app);
    app.stop().await;
}

#[tokio::test]
async fn defaults_admit_what_real_clients_send() {
    // A long agent session: 2 000 turns with tool calls and results, 100 tools, a few images.
    let app = spawn_app().await;
    let mut messages = vec![json!({"role": "user", "content": [
        {"type": "text", "text": "start"},
        {"type": "image_url", "image_url": {"url": PNG_1X1}}]})];
    for i in 0..1_000 {
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": format!("c{i}"), "type": "function", "function": {"name": "t0", "arguments": "{}"}}]}));
        messages.push(json!({"role": "tool", "tool_call_id": format!("c{i}"), "content": "ok"}));
    }
    messages.push(json!({"role": "user", "content": "done?"}));
    let body = Route::OpenAiChat.body(messages, json!({"tools": Route::OpenAiChat.tools(100)}));
    let (status, body) = post(&app, Route::OpenAiChat, &body).await;
    assert_accepted(Route::OpenAiChat, status, &body);
    app.stop().await;
}
