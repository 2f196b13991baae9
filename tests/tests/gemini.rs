//! The Gemini dialect end to end (`/v1beta/...` and `/v1/...`), through the real application and
//! a real simulator. Every stream is read through the Gemini checker of its framing.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use business2api_tests::{
    Answer, Endpoint, Fault, FaultRule, TEST_KEY, TestApp, TestOptions, Wire, read_stream,
    spawn_app, spawn_app_with,
};
use serde_json::{Value, json};

const MODEL: &str = "gemini-2.5-flash";
const THOUGHT: &str = "Considering the question.";
const BOUND: Duration = Duration::from_secs(20);

/// How the key travels.
#[derive(Clone, Copy, Debug)]
enum Key {
    Header,
    Query,
}

fn user(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

fn echo(text: &str) -> String {
    format!("You asked: «{text}»")
}

async fn post_with(app: &TestApp, path: &str, key: Key, body: &Value) -> reqwest::Response {
    let request = match key {
        Key::Header => app
            .client
            .post(app.url(path))
            .header("x-goog-api-key", TEST_KEY),
        Key::Query => {
            let sep = if path.contains('?') { '&' } else { '?' };
            app.client
                .post(app.url(&format!("{path}{sep}key={TEST_KEY}")))
        }
    };
    tokio::time::timeout(BOUND, request.json(body).send())
        .await
        .expect("the gateway answers in time")
        .expect("request reaches the gateway")
}

async fn post(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    post_with(app, path, Key::Header, body).await
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .client
        .get(app.url(path))
        .header("x-goog-api-key", TEST_KEY)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn json_of(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = tokio::time::timeout(BOUND, response.text())
        .await
        .unwrap()
        .unwrap();
    let v = serde_json::from_str(text.trim_start())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, headers, v)
}

/// A Google error: `{"error":{"code","message","status"}}` and nothing else.
fn assert_google_error(v: &Value, code: u16, status: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert_eq!(v["error"]["status"], status, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
}

/// The parts of the first candidate of a whole answer.
fn parts(v: &Value) -> &Vec<Value> {
    v["candidates"][0]["content"]["parts"].as_array().unwrap()
}

fn text_of(v: &Value, thought: bool) -> String {
    parts(v)
        .iter()
        .filter(|p| (p["thought"] == true) == thought)
        .filter_map(|p| p["text"].as_str())
        .collect()
}

fn assert_usage(u: &Value) {
    let n = |k: &str| u[k].as_u64().unwrap_or_else(|| panic!("{k} in {u}"));
    assert!(n("promptTokenCount") >= 1, "{u}");
    assert!(n("candidatesTokenCount") >= 1, "{u}");
    assert_eq!(
        n("totalTokenCount"),
        n("promptTokenCount")
            + n("candidatesTokenCount")
            + u["thoughtsTokenCount"].as_u64().unwrap_or(0),
        "{u}"
    );
}

/// The upstream query text of the last U4 call.
fn upstream_query(app: &TestApp) -> String {
    app.sim
        .last_stream_assist_body()
        .expect("the upstream was called")
        .to_string()
}

#[tokio::test]
async fn generate_content_under_both_versions_with_either_key_place() {
    let app = spawn_app().await;
    for version in ["v1beta", "v1"] {
        for key in [Key::Header, Key::Query] {
            let prompt = format!("hello {version} {key:?}");
            let r = post_with(
                &app,
                &format!("/{version}/models/{MODEL}:generateContent"),
                key,
                &user(&prompt),
            )
            .await;
            assert_eq!(r.headers()["content-type"], "application/json");
            let (s, _, v) = json_of(r).await;
            assert_eq!(s, 200, "{version} {key:?}: {v}");
            assert!(text_of(&v, false).contains(&echo(&prompt)), "{v}");
            assert_eq!(
                text_of(&v, true),
                THOUGHT,
                "thought parts carry thought: true"
            );
            let candidate = &v["candidates"][0];
            assert_eq!(candidate["finishReason"], "STOP");
            assert_eq!(candidate["index"], 0);
            assert_eq!(candidate["content"]["role"], "model");
            assert_usage(&v["usageMetadata"]);
            assert!(v["usageMetadata"]["thoughtsTokenCount"].as_u64().unwrap() >= 1);
            assert_eq!(v["modelVersion"], MODEL);
            assert!(v["responseId"].as_str().is_some_and(|id| !id.is_empty()));
        }
    }
    // A `models/`-prefixed name in the path works too.
    let (s, _, v) = json_of(
        post(
            &app,
            &format!("/v1beta/models/models/{MODEL}:generateContent"),
            &user("x"),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    app.stop().await;
}

#[tokio::test]
async fn streams_as_sse_with_alt_sse_and_as_a_json_array_otherwise() {
    let app = spawn_app().await;
    let answer = || {
        Answer::new()
            .thought("Let me ")
            .thought("think.")
            .text("Hello ")
            .text("there ")
            .text("friend.")
    };
    for version in ["v1beta", "v1"] {
        app.sim.set_answer(answer());
        let r = post(
            &app,
            &format!("/{version}/models/{MODEL}:streamGenerateContent?alt=sse"),
            &user("hi"),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let s = read_stream(r, Wire::GeminiSse).await;
        assert_eq!(s.text, "Hello there friend.");
        assert_eq!(s.thinking, "Let me think.");
        assert!(s.error.is_none());
        // One chunk per event, then the finishing chunk with usage.
        let last = s.events.last().unwrap();
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_usage(&last["usageMetadata"]);
        assert!(s.events.len() >= 6, "{:?}", s.events);

        app.sim.set_answer(answer());
        let r = post_with(
            &app,
            &format!("/{version}/models/{MODEL}:streamGenerateContent"),
            Key::Query,
            &user("hi"),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        let s = read_stream(r, Wire::GeminiArray).await;
        assert_eq!(s.text, "Hello there friend.");
        assert_eq!(s.thinking, "Let me think.");
        assert_eq!(
            s.events.last().unwrap()["candidates"][0]["finishReason"],
            "STOP"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn include_thoughts_false_leaves_thought_parts_out() {
    let app = spawn_app().await;
    let mut body = user("quiet");
    body["generationConfig"] =
        json!({"thinkingConfig": {"includeThoughts": false, "thinkingBudget": 1024}});
    let (s, _, v) = json_of(
        post(
            &app,
            &format!("/v1beta/models/{MODEL}:generateContent"),
            &body,
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(parts(&v).iter().all(|p| p.get("thought").is_none()), "{v}");
    assert!(text_of(&v, false).contains(&echo("quiet")));
    // The model still thought: the usage says so.
    assert!(v["usageMetadata"]["thoughtsTokenCount"].as_u64().unwrap() >= 1);

    let r = post(
        &app,
        &format!("/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"),
        &body,
    )
    .await;
    let s = read_stream(r, Wire::GeminiSse).await;
    assert_eq!(s.thinking, "");
    assert!(s.text.contains(&echo("quiet")));

    // Without thinkingConfig, thoughts are included (the gateway's documented default).
    let r = post(
        &app,
        &format!("/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"),
        &user("loud"),
    )
    .await;
    assert_eq!(read_stream(r, Wire::GeminiSse).await.thinking, THOUGHT);
    app.stop().await;
}

#[tokio::test]
async fn system_instruction_and_a_multi_turn_conversation_reach_the_upstream() {
    let app = spawn_app().await;
    for system in [
        json!({"parts": [{"text": "Be terse."}]}),
        json!({"role": "system", "parts": [{"text": "Be terse."}]}),
    ] {
        let body = json!({
            "systemInstruction": system,
            "contents": [
                {"role": "user", "parts": [{"text": "first question"}]},
                {"role": "model", "parts": [{"text": "secret reasoning", "thought": true}, {"text": "first answer"}]},
                {"role": "user", "parts": [{"text": "second question"}]}
            ]
        });
        let (s, _, v) =
            json_of(post(&app, &format!("/v1/models/{MODEL}:generateContent"), &body).await).await;
        assert_eq!(s, 200, "{v}");
        let q = upstream_query(&app);
        assert!(q.contains("<system>\\nBe terse.\\n</system>"), "{q}");
        assert!(q.contains("Human: first question"), "{q}");
        assert!(q.contains("Assistant: first answer"), "{q}");
        assert!(q.contains("Human: second question"), "{q}");
        assert!(
            !q.contains("secret reasoning"),
            "thoughts are not replayed: {q}"
        );
    }
    // snake_case spelling is accepted too.
    let body = json!({"system_instruction": {"parts": [{"text": "Snake rules."}]},
        "contents": [{"role": "user", "parts": [{"text": "x"}]}]});
    let (s, _, _) = json_of(
        post(
            &app,
            &format!("/v1beta/models/{MODEL}:generateContent"),
            &body,
        )
        .await,
    )
    .await;
    assert_eq!(s, 200);
    assert!(upstream_query(&app).contains("Snake rules."));
    app.stop().await;
}

#[tokio::test]
async fn inline_data_and_file_data_in_reach_the_upstream() {
    let app = spawn_app().await;
    let png: Vec<u8> = b"\x89PNG\r\n\x1a\nfake image bytes".to_vec();
    let body = json!({"contents": [{"role": "user", "parts": [
        {"text": "what is this?"},
        {"inlineData": {"mimeType": "image/png", "data": STANDARD.encode(&png)}},
        {"fileData": {"mimeType": "video/mp4", "fileUri": "https://example.com/clip.mp4"}}
    ]}]});
    let (s, _, v) = json_of(
        post(
            &app,
            &format!("/v1beta/models/{MODEL}:generateContent"),
            &body,
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let uploads = app.sim.uploads();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert_eq!(uploads[0].bytes.as_deref(), Some(&png[..]));
    assert_eq!(uploads[0].mime_type.as_deref(), Some("image/png"));
    assert_eq!(
        uploads[1].file_uri.as_deref(),
        Some("https://example.com/clip.mp4")
    );

    // Only http(s) URIs: a Files API or gs:// reference is a clear 400 before any upstream call.
    let calls = app.sim.requests(Endpoint::StreamAssist).len();
    let body = json!({"contents": [{"parts": [{"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/cat.png"}}]}]});
    let (s, _, v) = json_of(
        post(
            &app,
            &format!("/v1beta/models/{MODEL}:generateContent"),
            &body,
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_google_error(&v, 400, "INVALID_ARGUMENT");
    assert!(v["error"]["message"].as_str().unwrap().contains("http(s)"));
    let body = json!({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "%%%"}}]}]});
    let (s, _, v) = json_of(
        post(
            &app,
            &format!("/v1beta/models/{MODEL}:generateContent"),
            &body,
        )
        .await,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("base64"));
    assert_eq!(app.sim.requests(Endpoint::StreamAssist).len(), calls);
    app.stop().await;
}

#[tokio::test]
async fn generated_images_come_back_as_inline_data_with_the_same_bytes() {
    let app = spawn_app().await;
    let image: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let model = "gemini-2.5-flash-image";
    app.sim.set_answer(
        Answer::new()
            .text("Here you go.")
            .image("image/png", image.clone()),
    );
    let (s, _, v) = json_of(
        post(
            &app,
            &format!("/v1beta/models/{model}:generateContent"),
            &user("a cat"),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let blob = parts(&v)
        .iter()
        .find_map(|p| p.get("inlineData"))
        .unwrap_or_else(|| panic!("no inlineData part: {v}"));
    assert_eq!(blob["mimeType"], "image/png");
    assert_eq!(
        STANDARD.decode(blob["data"].as_str().unwrap()).unwrap(),
        image
    );
    assert_eq!(text_of(&v, false), "Here you go.");

    app.sim.set_answer(
        Answer::new()
            .text("Here you go.")
            .image("image/png", image.clone()),
    );
    let r = post(
        &app,
        &format!("/v1/models/{model}:streamGenerateContent?alt=sse"),
        &user("a cat"),
    )
    .await;
    let s = read_stream(r, Wire::GeminiSse).await;
    assert_eq!(
        s.media,
        vec![format!("data:image/png;base64,{}", STANDARD.encode(&image))]
    );
    app.stop().await;
}

#[tokio::test]
async fn generation_config_safety_settings_and_tools_are_accepted() {
    let app = spawn_app().await;
    let body = json!({
        "contents": [
            {"role": "user", "parts": [{"text": "weather in Paris?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnbmF0dXJl"}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]}
        ],
        "generationConfig": {
            "temperature": 0.3, "topP": 0.9, "topK": 40, "maxOutputTokens": 512, "candidateCount": 1,
            "stopSequences": ["END"], "seed": 7, "presencePenalty": 0.1, "frequencyPenalty": 0.1,
            "responseMimeType": "text/plain", "responseModalities": ["TEXT"],
            "thinkingConfig": {"thinkingBudget": -1, "includeThoughts": true},
            "someFutureField": {"x": 1}
        },
        "tools": [
            {"functionDeclarations": [
                {"name": "get_weather", "description": "Weather", "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "get_time", "parameters": {"type": "OBJECT", "properties": {"tz": {"type": "STRING"}}}}
            ]},
            {"googleSearch": {}},
            {"codeExecution": {}}
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "cachedContent": "cachedContents/abc",
        "labels": {"team": "x"}
    });
    let (s, _, v) = json_of(
        post(
            &app,
            &format!("/v1beta/models/{MODEL}:generateContent"),
            &body,
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let q = upstream_query(&app);
    assert!(
        q.contains(r#"Assistant: <tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call>"#),
        "{q}"
    );
    assert!(
        q.contains(r#"Tool Result [get_weather]: {\"temp\":21}"#),
        "{q}"
    );
    // Declarations reach the model only as the emulation's tools section (docs/TOOLS.md),
    // never as native function declarations.
    assert!(
        q.contains(r#"{\"name\":\"get_time\",\"parameters\":"#)
            && !q.contains("functionDeclarations"),
        "{q}"
    );

    // JSON mode is applied as an instruction to the model.
    let mut body = user("numbers please");
    body["generationConfig"] = json!({"responseMimeType": "application/json",
        "responseSchema": {"type": "ARRAY", "items": {"type": "INTEGER"}}});
    let (s, _, _) =
        json_of(post(&app, &format!("/v1/models/{MODEL}:generateContent"), &body).await).await;
    assert_eq!(s, 200);
    let q = upstream_query(&app);
    assert!(q.contains("Respond with JSON only"), "{q}");
    assert!(q.contains("INTEGER"), "{q}");
    app.stop().await;
}

#[tokio::test]
async fn what_the_gateway_cannot_do_is_a_clear_400_before_any_upstream_call() {
    let app = spawn_app().await;
    let path = format!("/v1beta/models/{MODEL}:generateContent");
    let with = |key: &str, value: Value| {
        let mut b = user("x");
        b[key] = value;
        b
    };
    let cases = [
        (
            with("generationConfig", json!({"candidateCount": 2})),
            "candidateCount",
        ),
        (
            with(
                "toolConfig",
                json!({"functionCallingConfig": {"mode": "ANY"}}),
            ),
            "no tools are declared",
        ),
        (
            with(
                "toolConfig",
                json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}),
            ),
            "not among the declared tools",
        ),
        (json!({"contents": []}), "contents"),
        (
            json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}),
            "valid role",
        ),
    ];
    for (body, says) in cases {
        for suffix in [
            ":generateContent",
            ":streamGenerateContent?alt=sse",
            ":streamGenerateContent",
        ] {
            let path = format!("/v1beta/models/{MODEL}{suffix}");
            let (s, _, v) = json_of(post(&app, &path, &body).await).await;
            assert_eq!(s, 400, "{path} {body}: {v}");
            assert_google_error(&v, 400, "INVALID_ARGUMENT");
            assert!(
                v["error"]["message"].as_str().unwrap().contains(says),
                "{v}"
            );
        }
    }
    // Bad JSON.
    let r = app
        .client
        .post(app.url(&path))
        .header("x-goog-api-key", TEST_KEY)
        .header("content-type", "application/json")
        .body("{\"contents\": [")
        .send()
        .await
        .unwrap();
    let (s, _, v) = json_of(r).await;
    assert_eq!(s, 400);
    assert_google_error(&v, 400, "INVALID_ARGUMENT");
    assert!(app.sim.requests(Endpoint::StreamAssist).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn count_tokens_accepts_contents_and_generate_content_request() {
    let app = spawn_app().await;
    for version in ["v1beta", "v1"] {
        let path = format!("/{version}/models/{MODEL}:countTokens");
        let (s, _, short) = json_of(post(&app, &path, &user("hi")).await).await;
        assert_eq!(s, 200, "{short}");
        assert_eq!(short.as_object().unwrap().len(), 1, "{short}");
        let short = short["totalTokens"].as_u64().unwrap();
        assert!(short >= 1);
        let long_text = "many words here ".repeat(50);
        let (_, _, long) = json_of(post(&app, &path, &user(&long_text)).await).await;
        let long = long["totalTokens"].as_u64().unwrap();
        assert!(long > short + 100, "{long} vs {short}");
        let wrapped = json!({"generateContentRequest": {"model": format!("models/{MODEL}"),
            "contents": [{"role": "user", "parts": [{"text": long_text}]}]}});
        let (s, _, v) = json_of(post(&app, &path, &wrapped).await).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["totalTokens"].as_u64().unwrap(), long);
        // An image costs its fixed share.
        let with_image = json!({"contents": [{"parts": [{"text": "hi"},
            {"inlineData": {"mimeType": "image/png", "data": STANDARD.encode(b"png")}}]}]});
        let (_, _, v) = json_of(post(&app, &path, &with_image).await).await;
        assert!(v["totalTokens"].as_u64().unwrap() >= short + 258, "{v}");
    }
    let (s, _, v) =
        json_of(post(&app, "/v1beta/models/gpt-4o:countTokens", &user("x")).await).await;
    assert_eq!(s, 404);
    assert_google_error(&v, 404, "NOT_FOUND");
    assert!(
        app.sim.requests(Endpoint::StreamAssist).is_empty(),
        "counting tokens never calls the upstream"
    );
    app.stop().await;
}

#[tokio::test]
async fn models_are_listed_and_fetched_in_google_shape_under_both_versions() {
    let app = spawn_app().await;
    for version in ["v1beta", "v1"] {
        for query in ["", "?pageSize=5&pageToken=abc"] {
            let (s, v) = get(&app, &format!("/{version}/models{query}")).await;
            assert_eq!(s, 200, "{v}");
            let models = v["models"].as_array().unwrap();
            assert_eq!(models.len(), 28, "{v}");
            assert!(v.get("nextPageToken").is_none());
            for m in models {
                assert!(
                    m["name"].as_str().unwrap().starts_with("models/gemini-"),
                    "{m}"
                );
                assert_eq!(
                    m["supportedGenerationMethods"],
                    json!(["generateContent", "streamGenerateContent", "countTokens"])
                );
                assert!(m["inputTokenLimit"].as_u64().unwrap() > 0);
                assert!(m["outputTokenLimit"].as_u64().unwrap() > 0);
                assert!(m["displayName"].is_string() && m["description"].is_string());
                assert!(m["version"].is_string());
            }
            assert!(
                models
                    .iter()
                    .any(|m| m["name"] == "models/gemini-2.5-flash-image")
            );
        }
        let (s, v) = get(&app, &format!("/{version}/models/{MODEL}")).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["name"], format!("models/{MODEL}"));
        assert_eq!(v["displayName"], "Gemini 2.5 Flash");
        assert_eq!(v["supportedGenerationMethods"][2], "countTokens");
        let (s, v) = get(&app, &format!("/{version}/models/gpt-4o")).await;
        assert_eq!(s, 404);
        assert_google_error(&v, 404, "NOT_FOUND");
    }
    app.stop().await;
}

#[tokio::test]
async fn get_v1_models_answers_in_the_dialect_the_key_indicates() {
    let app = spawn_app().await;
    let url = app.url("/v1/models");
    let google = app
        .client
        .get(&url)
        .header("x-goog-api-key", TEST_KEY)
        .send()
        .await
        .unwrap();
    let v: Value = google.json().await.unwrap();
    assert_eq!(v["models"].as_array().unwrap().len(), 28, "{v}");
    let query: Value = app
        .client
        .get(format!("{url}?key={TEST_KEY}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(query["models"].is_array(), "{query}");
    let openai: Value = app
        .client
        .get(&url)
        .bearer_auth(TEST_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(openai["object"], "list", "{openai}");
    assert!(openai.get("models").is_none());

    let one: Value = app
        .client
        .get(app.url(&format!("/v1/models/{MODEL}?key={TEST_KEY}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["name"], format!("models/{MODEL}"));
    let one: Value = app
        .client
        .get(app.url(&format!("/v1/models/{MODEL}")))
        .bearer_auth(TEST_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], MODEL, "{one}");
    app.stop().await;
}

#[tokio::test]
async fn errors_are_google_shaped() {
    let app = spawn_app().await;
    // Authentication, on both versions.
    for version in ["v1beta", "v1"] {
        let path = format!("/{version}/models/{MODEL}:generateContent");
        let r = app
            .client
            .post(app.url(&path))
            .json(&user("x"))
            .send()
            .await
            .unwrap();
        let (s, _, v) = json_of(r).await;
        assert_eq!(s, 401, "{v}");
        assert_google_error(&v, 401, "UNAUTHENTICATED");
        let r = app
            .client
            .post(app.url(&format!("{path}?key=wrong-key")))
            .json(&user("x"))
            .send()
            .await
            .unwrap();
        let (s, _, v) = json_of(r).await;
        assert_eq!(s, 401);
        assert_google_error(&v, 401, "UNAUTHENTICATED");
        assert!(!v.to_string().contains("wrong-key"));
    }
    let r = app
        .client
        .get(app.url("/v1beta/models"))
        .send()
        .await
        .unwrap();
    let (s, _, v) = json_of(r).await;
    assert_eq!(s, 401);
    assert_google_error(&v, 401, "UNAUTHENTICATED");

    // Unknown model and unknown method.
    let (s, _, v) =
        json_of(post(&app, "/v1beta/models/gpt-4o:generateContent", &user("x")).await).await;
    assert_eq!(s, 404);
    assert_google_error(&v, 404, "NOT_FOUND");
    assert!(v["error"]["message"].as_str().unwrap().contains("gpt-4o"));
    let (s, _, v) = json_of(
        post(
            &app,
            &format!("/v1/models/{MODEL}:embedContent"),
            &user("x"),
        )
        .await,
    )
    .await;
    assert_eq!(s, 404);
    assert_google_error(&v, 404, "NOT_FOUND");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("embedContent")
    );
    let (s, _, v) = json_of(post(&app, &format!("/v1beta/models/{MODEL}"), &user("x")).await).await;
    assert_eq!(s, 404);
    assert_google_error(&v, 404, "NOT_FOUND");
    assert!(app.sim.requests(Endpoint::StreamAssist).is_empty());
    app.stop().await;

    // Upstream rate limit: 429 RESOURCE_EXHAUSTED with retry-after, streamed or not (a failure
    // before the first event still gets its real status).
    for suffix in [
        ":generateContent",
        ":streamGenerateContent?alt=sse",
        ":streamGenerateContent",
    ] {
        let app = spawn_app().await;
        app.sim.add_fault(FaultRule::always(
            Endpoint::StreamAssist,
            Fault::RateLimited {
                retry_after_secs: Some(7),
            },
        ));
        let (s, headers, v) =
            json_of(post(&app, &format!("/v1beta/models/{MODEL}{suffix}"), &user("x")).await).await;
        assert_eq!(s, 429, "{suffix}: {v}");
        assert_eq!(headers["retry-after"], "7");
        assert_google_error(&v, 429, "RESOURCE_EXHAUSTED");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_cut_mid_answer_ends_the_stream_with_an_error_chunk() {
    for (suffix, wire) in [
        (":streamGenerateContent?alt=sse", Wire::GeminiSse),
        (":streamGenerateContent", Wire::GeminiArray),
    ] {
        let app = spawn_app().await;
        app.sim
            .set_answer(Answer::new().text("one ").text("two ").text("three"));
        app.sim.add_fault(FaultRule::always(
            Endpoint::StreamAssist,
            Fault::CutAfter(2),
        ));
        let r = post(&app, &format!("/v1beta/models/{MODEL}{suffix}"), &user("x")).await;
        assert_eq!(r.status(), 200);
        let s = tokio::time::timeout(BOUND, read_stream(r, wire))
            .await
            .unwrap();
        assert_eq!(s.text, "one two ", "{wire:?}");
        let error = s
            .error
            .unwrap_or_else(|| panic!("{wire:?}: no error chunk"));
        assert_eq!(error["code"], 502, "{error}");
        assert_eq!(error["status"], "UNAVAILABLE", "{error}");
        app.stop().await;
    }
    // Not streamed: nothing reached the client yet, so it is a plain 502.
    let app = spawn_app().await;
    app.sim.add_fault(FaultRule::always(
        Endpoint::StreamAssist,
        Fault::CutAfter(2),
    ));
    let (s, _, v) = json_of(
        post(
            &app,
            &format!("/v1/models/{MODEL}:generateContent"),
            &user("x"),
        )
        .await,
    )
    .await;
    assert_eq!(s, 502, "{v}");
    assert_google_error(&v, 502, "UNAVAILABLE");
    app.stop().await;
}

#[tokio::test]
async fn keep_alives_during_silence_are_chunks_every_client_tolerates() {
    let app = spawn_app_with(
        TestOptions::default().config(json!({"http": {"stream_keepalive_ms": 100}})),
    )
    .await;
    for (suffix, wire) in [
        (":streamGenerateContent?alt=sse", Wire::GeminiSse),
        (":streamGenerateContent", Wire::GeminiArray),
    ] {
        app.sim
            .set_answer(Answer::new().text("slow ").text("answer"));
        app.sim.set_pacing(Duration::from_millis(450));
        let r = post(&app, &format!("/v1beta/models/{MODEL}{suffix}"), &user("x")).await;
        let s = read_stream(r, wire).await;
        assert_eq!(s.text, "slow answer");
        assert!(s.keepalives >= 3, "{wire:?}: {} keep-alives", s.keepalives);
    }
    app.stop().await;
}
