//! Emulated tool calling (docs/TOOLS.md) through the real wiring: the simulator answers like a
//! model that follows the tool protocol, in small chunks that split the grammar, and every
//! dialect re-encodes the call in its own shape, streamed and not. A call quoted in a code
//! block, or one whose arguments break the tool's schema, arrives as text.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

use business2api_tests::{TEST_KEY, TestApp, Wire, read_stream, spawn_app};
use serde_json::{Value, json};
use upstream_sim::Answer;

const MODEL: &str = "gemini-2.5-flash";

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": { "path": { "type": "string" } },
        "required": ["path"],
    })
}

/// "Let me read it." and a call of `read_file`, cut into chunks that split the tags.
fn calling_answer() -> Answer {
    Answer::new()
        .text("Let me read it.\n<tool_")
        .text("call>\n{\"name\": \"read_file\", ")
        .text("\"arguments\": {\"path\": \"notes.txt\"}}\n</tool_ca")
        .text("ll>\n")
}

async fn post(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(TEST_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn json_post(app: &TestApp, path: &str, body: &Value) -> Value {
    let r = post(app, path, body).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn openai_body(stream: bool) -> Value {
    json!({
        "model": MODEL, "stream": stream,
        "messages": [{"role": "user", "content": "what is in notes.txt?"}],
        "tools": [{"type": "function", "function": {"name": "read_file", "parameters": schema()}}],
    })
}

#[tokio::test]
async fn openai_chat_gets_tool_calls_streamed_and_not() {
    let app = spawn_app().await;
    app.sim.set_answer(calling_answer());
    let v = json_post(&app, "/v1/chat/completions", &openai_body(false)).await;
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "read_file");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"path": "notes.txt"}));
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(choice["message"]["content"], "Let me read it.\n");
    // The model was told about the tool.
    let sent = app.sim.last_stream_assist_body().unwrap();
    let query = sent["streamAssistRequest"]["query"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    assert!(query.starts_with("<tools protocol=\"1\">\n"), "{query}");
    assert!(
        query.contains(r#"{"name":"read_file","parameters":"#),
        "{query}"
    );

    let r = post(&app, "/v1/chat/completions", &openai_body(true)).await;
    let s = read_stream(
        r,
        Wire::ChatCompletions {
            include_usage: false,
        },
    )
    .await;
    assert_eq!(s.text, "Let me read it.\n");
    let deltas: Vec<&Value> = s
        .events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert!(!deltas.is_empty(), "{:?}", s.events);
    assert_eq!(deltas[0]["function"]["name"], "read_file");
    let streamed: String = deltas
        .iter()
        .filter_map(|d| d["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&streamed).unwrap(),
        json!({"path": "notes.txt"})
    );
    assert!(
        s.events
            .iter()
            .any(|e| e["choices"][0]["finish_reason"] == "tool_calls"),
        "{:?}",
        s.events
    );
    app.stop().await;
}

#[tokio::test]
async fn anthropic_gets_a_tool_use_block() {
    let app = spawn_app().await;
    app.sim.set_answer(calling_answer());
    let body = json!({
        "model": MODEL, "max_tokens": 1024, "stream": true,
        "messages": [{"role": "user", "content": "what is in notes.txt?"}],
        "tools": [{"name": "read_file", "input_schema": schema()}],
    });
    let s = read_stream(post(&app, "/v1/messages", &body).await, Wire::Anthropic).await;
    let start = s
        .events
        .iter()
        .find(|e| e["content_block"]["type"] == "tool_use")
        .expect("a tool_use block");
    assert_eq!(start["content_block"]["name"], "read_file");
    let input: String = s
        .events
        .iter()
        .filter(|e| e["delta"]["type"] == "input_json_delta")
        .filter_map(|e| e["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap(),
        json!({"path": "notes.txt"})
    );
    let end = s
        .events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(end["delta"]["stop_reason"], "tool_use");
    app.stop().await;
}

#[tokio::test]
async fn gemini_and_responses_get_their_call_shapes() {
    let app = spawn_app().await;
    app.sim.set_answer(calling_answer());
    let body = json!({
        "contents": [{"role": "user", "parts": [{"text": "what is in notes.txt?"}]}],
        "tools": [{"functionDeclarations": [{"name": "read_file", "parameters": schema()}]}],
    });
    let v = json_post(
        &app,
        &format!("/v1beta/models/{MODEL}:generateContent"),
        &body,
    )
    .await;
    let parts = v["candidates"][0]["content"]["parts"].as_array().unwrap();
    let call = parts
        .iter()
        .find_map(|p| p.get("functionCall"))
        .unwrap_or_else(|| panic!("no functionCall in {v}"));
    assert_eq!(call["name"], "read_file");
    assert_eq!(call["args"], json!({"path": "notes.txt"}));

    app.sim.set_answer(calling_answer());
    let body = json!({
        "model": MODEL, "input": "what is in notes.txt?",
        "tools": [{"type": "function", "name": "read_file", "parameters": schema()}],
    });
    let v = json_post(&app, "/v1/responses", &body).await;
    let item = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap_or_else(|| panic!("no function_call in {v}"));
    assert_eq!(item["name"], "read_file");
    assert_eq!(
        serde_json::from_str::<Value>(item["arguments"].as_str().unwrap()).unwrap(),
        json!({"path": "notes.txt"})
    );
    app.stop().await;
}

#[tokio::test]
async fn quoted_or_invalid_calls_arrive_as_text() {
    let app = spawn_app().await;
    let quoted = "The grammar:\n```\n<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"a\"}}\n</tool_call>\n```\n";
    let invalid =
        "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"file\": 1}}\n</tool_call>";
    let halfway = "Reading.\n<tool_call>\n{\"name\": \"read_file\", \"argu";
    for answer in [quoted, invalid, halfway] {
        for stream in [false, true] {
            app.sim.set_answer(Answer::new().text(answer));
            let r = post(&app, "/v1/chat/completions", &openai_body(stream)).await;
            if stream {
                let s = read_stream(
                    r,
                    Wire::ChatCompletions {
                        include_usage: false,
                    },
                )
                .await;
                assert_eq!(s.text, answer);
                assert!(
                    s.events
                        .iter()
                        .any(|e| e["choices"][0]["finish_reason"] == "stop"),
                    "{:?}",
                    s.events
                );
            } else {
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["choices"][0]["message"]["content"], answer, "{v}");
                assert!(v["choices"][0]["message"].get("tool_calls").is_none());
                assert_eq!(v["choices"][0]["finish_reason"], "stop");
            }
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn with_one_call_allowed_the_answer_ends_at_the_first_call_in_every_dialect() {
    let app = spawn_app().await;
    let directives =
        r#"both? [sim:call read_file {"path": "a"}] [sim:call read_file {"path": "b"}]"#;
    let tool = json!({"name": "read_file", "parameters": schema()});
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": MODEL, "parallel_tool_calls": false,
                "messages": [{"role": "user", "content": directives}],
                "tools": [{"type": "function", "function": tool}]}),
        ),
        (
            "/v1/responses",
            json!({"model": MODEL, "parallel_tool_calls": false, "input": directives,
                "tools": [{"type": "function", "name": "read_file", "parameters": schema()}]}),
        ),
        (
            "/v1/messages",
            json!({"model": MODEL, "max_tokens": 100,
                "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
                "messages": [{"role": "user", "content": directives}],
                "tools": [{"name": "read_file", "input_schema": schema()}]}),
        ),
    ];
    for (path, body) in cases {
        let text = json_post(&app, path, &body).await.to_string();
        assert_eq!(text.matches("read_file").count(), 1, "{path}: {text}");
        assert!(!text.contains("tool_call>"), "{path}: {text}");
        let query =
            app.sim.last_stream_assist_body().unwrap()["streamAssistRequest"]["query"]["parts"][0]
                ["text"]
                .as_str()
                .unwrap()
                .to_owned();
        assert!(
            query.contains("Make at most one call per answer."),
            "{path}"
        );
        // Allowed by default: both calls arrive.
        let mut body = body;
        body.as_object_mut().unwrap().remove("parallel_tool_calls");
        body.as_object_mut().unwrap().remove("tool_choice");
        let text = json_post(&app, path, &body).await.to_string();
        assert_eq!(text.matches("read_file").count(), 2, "{path}: {text}");
    }
}

#[tokio::test]
async fn tools_work_with_thinking_models_and_web_search() {
    let app = spawn_app().await;
    for model in [
        "gemini-3-pro-preview",
        "gemini-2.5-flash-search",
        "gemini-2.5-pro-search",
    ] {
        let body = json!({"model": model, "stream": true,
            "messages": [{"role": "user", "content": r#"notes? [sim:call read_file {"path": "notes.txt"}]"#}],
            "tools": [{"type": "function", "function": {"name": "read_file", "parameters": schema()}}]});
        let s = read_stream(
            post(&app, "/v1/chat/completions", &body).await,
            Wire::ChatCompletions {
                include_usage: false,
            },
        )
        .await;
        assert_eq!(s.stop_reason.as_deref(), Some("tool_calls"), "{model}");
        assert_eq!(s.tool_calls.len(), 1, "{model}");
        assert_eq!(s.tool_calls[0].name, "read_file");
        assert_eq!(s.tool_calls[0].arguments, json!({"path": "notes.txt"}));
        // The thinking the model did before its call is kept as reasoning.
        assert_eq!(s.thinking, "Deciding which tool to call.", "{model}");
        let sent = app.sim.last_stream_assist_body().unwrap();
        let query = sent["streamAssistRequest"]["query"]["parts"][0]["text"]
            .as_str()
            .unwrap();
        assert!(query.starts_with("<tools protocol=\"1\">"), "{model}");
        assert!(
            sent["streamAssistRequest"]["toolsSpec"]["webGroundingSpec"].is_object(),
            "{model}: web search stays on with tools declared: {sent}"
        );
    }
}
