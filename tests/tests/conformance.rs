//! One conformance suite that every dialect passes: the same scenarios (plain, streaming,
//! multimodal in and out, upstream 4xx/5xx, timeout, mid-stream cut, rate limit → failover,
//! forced tool) run against OpenAI Chat Completions, OpenAI Responses, Anthropic Messages and
//! Gemini under `/v1beta` (SSE) and `/v1` (streamed JSON array). Every stream goes through the
//! stream-invariant checker of its wire format, failure cases included.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use business2api_tests::{
    Answer, Endpoint, Fault, FaultRule, StreamSummary, TEST_KEY, TestApp, TestOptions, Wire,
    read_stream, spawn_app_with,
};
use serde_json::{Value, json};

/// No scenario may take longer than this per request.
const BOUND: Duration = Duration::from_secs(20);

const PNG: &[u8] = &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum D {
    Chat,
    Responses,
    Anthropic,
    GeminiV1beta,
    GeminiV1,
}

const ALL: [D; 5] = [
    D::Chat,
    D::Responses,
    D::Anthropic,
    D::GeminiV1beta,
    D::GeminiV1,
];

/// What a request asks for.
struct Ask<'a> {
    model: &'a str,
    text: &'a str,
    stream: bool,
    image: Option<&'a [u8]>,
    force_tool: bool,
}

impl<'a> Ask<'a> {
    fn text(text: &'a str, stream: bool) -> Self {
        Ask {
            model: "gemini-2.5-flash",
            text,
            stream,
            image: None,
            force_tool: false,
        }
    }
}

impl D {
    fn wire(self) -> Wire {
        match self {
            D::Chat => Wire::ChatCompletions {
                include_usage: true,
            },
            D::Responses => Wire::Responses,
            D::Anthropic => Wire::Anthropic,
            D::GeminiV1beta => Wire::GeminiSse,
            D::GeminiV1 => Wire::GeminiArray,
        }
    }

    fn request(self, app: &TestApp, ask: &Ask<'_>) -> reqwest::RequestBuilder {
        let b64 = ask.image.map(|i| STANDARD.encode(i));
        let tool = json!({"name": "get_weather", "description": "weather", "parameters": {"type": "object", "properties": {}}});
        match self {
            D::Chat => {
                let mut content = vec![json!({"type": "text", "text": ask.text})];
                if let Some(b) = &b64 {
                    content.push(json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{b}")}}));
                }
                let mut body = json!({"model": ask.model, "stream": ask.stream,
                    "messages": [{"role": "user", "content": content}]});
                if ask.stream {
                    body["stream_options"] = json!({"include_usage": true});
                }
                if ask.force_tool {
                    body["tools"] = json!([{"type": "function", "function": tool}]);
                    body["tool_choice"] = json!("required");
                }
                app.client
                    .post(app.url("/v1/chat/completions"))
                    .bearer_auth(TEST_KEY)
                    .json(&body)
            }
            D::Responses => {
                let mut content = vec![json!({"type": "input_text", "text": ask.text})];
                if let Some(b) = &b64 {
                    content.push(json!({"type": "input_image", "image_url": format!("data:image/png;base64,{b}")}));
                }
                let mut body = json!({"model": ask.model, "stream": ask.stream,
                    "input": [{"role": "user", "content": content}]});
                if ask.force_tool {
                    let mut t = tool.clone();
                    t["type"] = json!("function");
                    body["tools"] = json!([t]);
                    body["tool_choice"] = json!("required");
                }
                app.client
                    .post(app.url("/v1/responses"))
                    .bearer_auth(TEST_KEY)
                    .json(&body)
            }
            D::Anthropic => {
                let mut content = vec![json!({"type": "text", "text": ask.text})];
                if let Some(b) = &b64 {
                    content.push(json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b}}));
                }
                let mut body = json!({"model": ask.model, "max_tokens": 1024, "stream": ask.stream,
                    "messages": [{"role": "user", "content": content}]});
                if ask.force_tool {
                    let mut t = tool.clone();
                    t["input_schema"] = t["parameters"].take();
                    body["tools"] = json!([t]);
                    body["tool_choice"] = json!({"type": "any"});
                }
                app.client
                    .post(app.url("/v1/messages"))
                    .header("x-api-key", TEST_KEY)
                    .header("anthropic-version", "2023-06-01")
                    .json(&body)
            }
            D::GeminiV1beta | D::GeminiV1 => {
                let mut parts = vec![json!({"text": ask.text})];
                if let Some(b) = &b64 {
                    parts.push(json!({"inlineData": {"mimeType": "image/png", "data": b}}));
                }
                let mut body = json!({"contents": [{"role": "user", "parts": parts}]});
                if ask.force_tool {
                    body["tools"] = json!([{"functionDeclarations": [tool]}]);
                    body["toolConfig"] = json!({"functionCallingConfig": {"mode": "ANY"}});
                }
                let action = if ask.stream {
                    "streamGenerateContent"
                } else {
                    "generateContent"
                };
                let (version, query) = match (self, ask.stream) {
                    (D::GeminiV1beta, true) => ("v1beta", "?alt=sse"),
                    (D::GeminiV1beta, false) => ("v1beta", ""),
                    _ => ("v1", ""),
                };
                let url = app.url(&format!("/{version}/models/{}:{action}{query}", ask.model));
                let builder = app.client.post(url).json(&body);
                // Both ways Google clients send the key.
                if self == D::GeminiV1beta {
                    builder.header("x-goog-api-key", TEST_KEY)
                } else {
                    builder.query(&[("key", TEST_KEY)])
                }
            }
        }
    }

    /// The visible text of a non-streamed answer.
    fn answer_text(self, v: &Value) -> String {
        let texts: Vec<String> = match self {
            D::Chat => vec![
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ],
            D::Responses => v["output"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| i["type"] == "message")
                .flat_map(|i| i["content"].as_array().cloned().unwrap_or_default())
                .filter(|c| c["type"] == "output_text")
                .filter_map(|c| c["text"].as_str().map(str::to_owned))
                .collect(),
            D::Anthropic => v["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["type"] == "text")
                .filter_map(|c| c["text"].as_str().map(str::to_owned))
                .collect(),
            D::GeminiV1beta | D::GeminiV1 => v["candidates"][0]["content"]["parts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["thought"] != true)
                .filter_map(|p| p["text"].as_str().map(str::to_owned))
                .collect(),
        };
        texts.concat()
    }

    /// The names of the tool calls of a non-streamed answer, in order.
    fn answer_calls(self, v: &Value) -> Vec<String> {
        let items = |v: &Value| v.as_array().cloned().unwrap_or_default();
        let names: Vec<Value> = match self {
            D::Chat => items(&v["choices"][0]["message"]["tool_calls"])
                .iter()
                .map(|c| c["function"]["name"].clone())
                .collect(),
            D::Responses => items(&v["output"])
                .iter()
                .filter(|i| i["type"] == "function_call")
                .map(|i| i["name"].clone())
                .collect(),
            D::Anthropic => items(&v["content"])
                .iter()
                .filter(|c| c["type"] == "tool_use")
                .map(|c| c["name"].clone())
                .collect(),
            D::GeminiV1beta | D::GeminiV1 => items(&v["candidates"][0]["content"]["parts"])
                .iter()
                .filter(|p| p.get("functionCall").is_some())
                .map(|p| p["functionCall"]["name"].clone())
                .collect(),
        };
        names
            .iter()
            .map(|n| n.as_str().unwrap_or("(no name)").to_owned())
            .collect()
    }

    /// A non-streamed answer's stop reason.
    fn stop_reason(self, v: &Value) -> Value {
        match self {
            D::Chat => v["choices"][0]["finish_reason"].clone(),
            D::Responses => v["status"].clone(),
            D::Anthropic => v["stop_reason"].clone(),
            D::GeminiV1beta | D::GeminiV1 => v["candidates"][0]["finishReason"].clone(),
        }
    }

    /// The stop reason of an answer that ends with tool calls.
    fn tool_stop_reason(self) -> Value {
        match self {
            D::Chat => json!("tool_calls"),
            D::Responses => json!("completed"),
            D::Anthropic => json!("tool_use"),
            D::GeminiV1beta | D::GeminiV1 => json!("STOP"),
        }
    }

    /// The media of a non-streamed answer: links, data URIs or base64 payloads.
    fn answer_media(self, v: &Value) -> Vec<String> {
        match self {
            D::Chat => business2api_tests::check::chat::markdown_links(&self.answer_text(v)),
            D::Anthropic => business2api_tests::check::chat::markdown_links(&self.answer_text(v)),
            D::Responses => {
                let mut out: Vec<String> = v["output"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|i| i["type"] == "image_generation_call")
                    .filter_map(|i| i["result"].as_str().map(|r| format!("b64:{r}")))
                    .collect();
                out.extend(business2api_tests::check::chat::markdown_links(
                    &self.answer_text(v),
                ));
                out
            }
            D::GeminiV1beta | D::GeminiV1 => v["candidates"][0]["content"]["parts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let d = &p["inlineData"];
                    Some(format!(
                        "data:{};base64,{}",
                        d["mimeType"].as_str()?,
                        d["data"].as_str()?
                    ))
                })
                .collect(),
        }
    }

    /// Asserts `body` is this dialect's error shape for `status`.
    fn assert_error(self, status: u16, body: &Value) {
        match self {
            D::Chat | D::Responses => {
                assert!(
                    body["error"]["message"].is_string() && body["error"]["type"].is_string(),
                    "{self:?}: OpenAI error shape: {body}"
                );
            }
            D::Anthropic => {
                assert_eq!(body["type"], "error", "{self:?}: {body}");
                assert!(
                    body["error"]["type"].is_string() && body["error"]["message"].is_string(),
                    "{self:?}: Anthropic error shape: {body}"
                );
            }
            D::GeminiV1beta | D::GeminiV1 => {
                assert_eq!(body["error"]["code"], status, "{self:?}: {body}");
                assert!(
                    body["error"]["status"].is_string() && body["error"]["message"].is_string(),
                    "{self:?}: Google error shape: {body}"
                );
            }
        }
    }
}

async fn app(accounts: u32, config: Value) -> TestApp {
    spawn_app_with(TestOptions::default().accounts(accounts).config(config)).await
}

async fn send(d: D, app: &TestApp, ask: &Ask<'_>) -> reqwest::Response {
    tokio::time::timeout(BOUND, d.request(app, ask).send())
        .await
        .unwrap_or_else(|_| panic!("{d:?}: no answer within {BOUND:?}"))
        .expect("request reaches the gateway")
}

/// A non-streamed request: status and JSON body.
async fn call(d: D, app: &TestApp, ask: &Ask<'_>) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = send(d, app, ask).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = tokio::time::timeout(BOUND, response.text())
        .await
        .unwrap_or_else(|_| panic!("{d:?}: body stalled"))
        .unwrap();
    let v = serde_json::from_str(text.trim_start())
        .unwrap_or_else(|e| panic!("{d:?}: body is not JSON ({e}): {text}"));
    (status, headers, v)
}

/// A streamed request that must start (200): read through the checker.
async fn stream(d: D, app: &TestApp, ask: &Ask<'_>) -> StreamSummary {
    let response = send(d, app, ask).await;
    assert_eq!(response.status(), 200, "{d:?}: stream status");
    let ct = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let expected = if d == D::GeminiV1 {
        "application/json"
    } else {
        "text/event-stream"
    };
    assert!(ct.starts_with(expected), "{d:?}: content-type {ct}");
    tokio::time::timeout(BOUND, read_stream(response, d.wire()))
        .await
        .unwrap_or_else(|_| panic!("{d:?}: stream stalled"))
}

/// Bytes behind a media reference: a gateway link, a data URI or `b64:` + base64.
async fn media_bytes(app: &TestApp, reference: &str) -> (Option<String>, Vec<u8>) {
    if let Some(b) = reference.strip_prefix("b64:") {
        return (None, STANDARD.decode(b).unwrap());
    }
    if let Some(rest) = reference.strip_prefix("data:") {
        let (mime, b) = rest.split_once(";base64,").unwrap();
        return (Some(mime.to_owned()), STANDARD.decode(b).unwrap());
    }
    let got = app.client.get(reference).send().await.unwrap();
    assert_eq!(got.status(), 200, "{reference}");
    let mime = got.headers()["content-type"].to_str().unwrap().to_owned();
    (Some(mime), got.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn plain_answers() {
    for d in ALL {
        let app = app(1, json!({})).await;
        let (status, _, v) = call(d, &app, &Ask::text("hello conformance", false)).await;
        assert_eq!(status, 200, "{d:?}: {v}");
        assert!(
            d.answer_text(&v).contains("You asked: «hello conformance»"),
            "{d:?}: {v}"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn streamed_answers_with_reasoning() {
    for d in ALL {
        let app = app(1, json!({})).await;
        app.sim.set_answer(
            Answer::new()
                .thought("Weighing it.")
                .text("Stream")
                .text("ed ")
                .text("answer."),
        );
        let s = stream(d, &app, &Ask::text("x", true)).await;
        assert_eq!(s.text, "Streamed answer.", "{d:?}");
        assert_eq!(s.thinking, "Weighing it.", "{d:?}");
        assert!(s.error.is_none(), "{d:?}: {:?}", s.error);
        app.stop().await;
    }
}

#[tokio::test]
async fn images_in_reach_the_upstream() {
    for d in ALL {
        for streamed in [false, true] {
            let app = app(1, json!({})).await;
            let ask = Ask {
                image: Some(PNG),
                ..Ask::text("what is this", streamed)
            };
            if streamed {
                stream(d, &app, &ask).await;
            } else {
                let (status, _, v) = call(d, &app, &ask).await;
                assert_eq!(status, 200, "{d:?}: {v}");
            }
            let uploads = app.sim.uploads();
            assert_eq!(uploads.len(), 1, "{d:?} stream={streamed}");
            assert_eq!(uploads[0].mime_type.as_deref(), Some("image/png"), "{d:?}");
            assert_eq!(uploads[0].bytes.as_deref(), Some(PNG), "{d:?}");
            app.stop().await;
        }
    }
}

#[tokio::test]
async fn generated_images_come_back_in_each_dialects_form() {
    for d in ALL {
        for streamed in [false, true] {
            let app = app(1, json!({})).await;
            app.sim.set_answer(
                Answer::new()
                    .text("Here: ")
                    .image("image/png", PNG.to_vec()),
            );
            let ask = Ask {
                model: "gemini-2.5-flash-image",
                ..Ask::text("draw", streamed)
            };
            let media = if streamed {
                stream(d, &app, &ask).await.media
            } else {
                let (status, _, v) = call(d, &app, &ask).await;
                assert_eq!(status, 200, "{d:?}: {v}");
                d.answer_media(&v)
            };
            assert_eq!(media.len(), 1, "{d:?} stream={streamed}: {media:?}");
            let (mime, bytes) = media_bytes(&app, &media[0]).await;
            assert_eq!(bytes, PNG, "{d:?} stream={streamed}");
            if let Some(mime) = mime {
                assert_eq!(mime, "image/png", "{d:?}");
            }
            app.stop().await;
        }
    }
}

/// A failure before anything reached the client: the real status, in the dialect's shape,
/// streamed or not.
async fn failure_before_the_answer(fault: Fault, config: Value, status: u16) {
    for d in ALL {
        for streamed in [false, true] {
            let app = app(1, config.clone()).await;
            app.sim
                .add_fault(FaultRule::always(Endpoint::StreamAssist, fault.clone()));
            let (got, _, v) = call(d, &app, &Ask::text("x", streamed)).await;
            assert_eq!(got, status, "{d:?} stream={streamed}: {v}");
            d.assert_error(status, &v);
            app.stop().await;
        }
    }
}

#[tokio::test]
async fn an_upstream_4xx_is_a_400_in_every_dialect() {
    failure_before_the_answer(
        Fault::BadRequest("the request is malformed".into()),
        json!({}),
        400,
    )
    .await;
}

#[tokio::test]
async fn an_upstream_5xx_is_a_502_in_every_dialect() {
    failure_before_the_answer(Fault::ServerError(500), json!({}), 502).await;
}

#[tokio::test]
async fn an_upstream_timeout_is_a_504_in_every_dialect() {
    failure_before_the_answer(
        Fault::SlowFirstByte(Duration::from_secs(3)),
        json!({"gemini_business": {"stream_first_byte_timeout_sec": 1, "max_attempts": 1},
               "http": {"stream_keepalive_ms": 5000}}),
        504,
    )
    .await;
}

#[tokio::test]
async fn a_cut_mid_stream_ends_with_the_dialects_error_grammar() {
    for d in ALL {
        let app = app(1, json!({})).await;
        app.sim
            .set_answer(Answer::new().text("one ").text("two ").text("three"));
        app.sim.add_fault(FaultRule::always(
            Endpoint::StreamAssist,
            Fault::CutAfter(2),
        ));
        let s = stream(d, &app, &Ask::text("x", true)).await;
        assert_eq!(s.text, "one two ", "{d:?}");
        assert!(
            s.error.is_some(),
            "{d:?}: the stream must end with an error"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_rate_limited_account_fails_over_in_every_dialect() {
    for d in ALL {
        for streamed in [false, true] {
            let app = app(2, json!({})).await;
            app.sim.add_fault(FaultRule::once(
                Endpoint::StreamAssist,
                Fault::RateLimited {
                    retry_after_secs: Some(30),
                },
            ));
            let ask = Ask::text("fail over", streamed);
            let text = if streamed {
                stream(d, &app, &ask).await.text
            } else {
                let (status, _, v) = call(d, &app, &ask).await;
                assert_eq!(status, 200, "{d:?}: {v}");
                d.answer_text(&v)
            };
            assert!(text.contains("You asked: «fail over»"), "{d:?}: {text}");
            let calls = app.sim.requests(Endpoint::StreamAssist);
            assert_eq!(calls.len(), 2, "{d:?}: one 429, then another account");
            assert_ne!(calls[0].csesidx, calls[1].csesidx, "{d:?}");
            app.stop().await;
        }
    }
}

#[tokio::test]
async fn with_every_account_rate_limited_the_answer_is_429_with_retry_after() {
    for d in ALL {
        let app = app(1, json!({})).await;
        app.sim.add_fault(FaultRule::always(
            Endpoint::StreamAssist,
            Fault::RateLimited {
                retry_after_secs: Some(30),
            },
        ));
        let (status, headers, v) = call(d, &app, &Ask::text("x", false)).await;
        assert_eq!(status, 429, "{d:?}: {v}");
        d.assert_error(429, &v);
        assert!(headers.contains_key("retry-after"), "{d:?}");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_forced_tool_call_is_asked_for_again_when_the_model_answers_without_one() {
    let call_text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>";
    for d in ALL {
        let app = app(1, json!({})).await;
        let ask = Ask {
            force_tool: true,
            ..Ask::text("weather?", false)
        };
        // The model first answers in prose; the gateway holds that back and asks again.
        app.sim
            .push_answer(Answer::new().text("It is probably sunny."));
        app.sim
            .push_answer(Answer::new().text("Let me check.\n").text(call_text));
        let (status, _, v) = call(d, &app, &ask).await;
        assert_eq!(status, 200, "{d:?}: {v}");
        assert_eq!(d.answer_calls(&v), ["get_weather"], "{d:?}: {v}");
        assert!(!d.answer_text(&v).contains("sunny"), "{d:?}: {v}");
        assert_eq!(d.stop_reason(&v), d.tool_stop_reason(), "{d:?}: {v}");
        let queries: Vec<String> = app
            .sim
            .requests(Endpoint::StreamAssist)
            .iter()
            .map(|r| {
                r.body.as_ref().unwrap()["streamAssistRequest"]["query"]["parts"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(queries.len(), 2, "{d:?}");
        assert!(
            queries[0].contains("You must call"),
            "{d:?}: {}",
            queries[0]
        );
        assert!(!queries[0].contains("previous answer"), "{d:?}");
        assert!(
            queries[1].contains("Your previous answer to this conversation made no call"),
            "{d:?}"
        );

        // A model that never calls: its second answer arrives as plain text, nothing invented.
        app.sim.push_answer(Answer::new().text("No."));
        app.sim.push_answer(Answer::new().text("Still no."));
        let (status, _, v) = call(d, &app, &ask).await;
        assert_eq!(status, 200, "{d:?}: {v}");
        assert!(d.answer_calls(&v).is_empty(), "{d:?}: {v}");
        assert_eq!(d.answer_text(&v), "Still no.", "{d:?}: {v}");
        assert_eq!(app.sim.requests(Endpoint::StreamAssist).len(), 4, "{d:?}");
        app.stop().await;
    }
}

#[tokio::test]
async fn keep_alives_flow_while_the_upstream_is_silent() {
    for d in ALL {
        let app = app(1, json!({"http": {"stream_keepalive_ms": 100}})).await;
        app.sim
            .set_answer(Answer::new().text("slow ").text("answer"));
        app.sim.set_pacing(Duration::from_millis(450));
        let s = stream(d, &app, &Ask::text("x", true)).await;
        assert_eq!(s.text, "slow answer", "{d:?}");
        assert!(s.keepalives >= 2, "{d:?}: {} keep-alives", s.keepalives);
        app.stop().await;
    }
}

/// A test-only upstream: echoes the last user text after one thought, word by word, and
/// records what it was called with. It proves the seam: registered through the model registry
/// alone, it serves all three dialects without any dialect code knowing it exists.
mod echo {
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use business2api::domain::{ChatRequest, Features, ModelSpec, StreamEvent};
    use business2api::startup::ExtraUpstream;
    use business2api::upstream::{CallAuth, EventStream, Upstream};

    pub const NAME: &str = "echo-test";
    pub const MODEL: &str = "echo-1";
    /// What `input_tokens` reports, so a test can tell it was asked.
    pub const INPUT_TOKENS: u32 = 77;

    #[derive(Debug, Default)]
    pub struct Echo {
        pub calls: AtomicUsize,
        /// `(token was given, upstream model id, max_output_tokens)` of each call.
        pub seen: Mutex<Vec<(bool, String, Option<u32>)>>,
    }

    impl Upstream for Echo {
        fn name(&self) -> &'static str {
            NAME
        }

        fn input_tokens(&self, _request: &ChatRequest) -> u32 {
            INPUT_TOKENS
        }

        fn converse(&self, auth: CallAuth, request: Arc<ChatRequest>) -> EventStream {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.seen.lock().unwrap().push((
                !auth.token.is_empty(),
                request.model.upstream_id().to_owned(),
                request.options.max_output_tokens,
            ));
            let said = request
                .messages
                .last()
                .map(|m| m.text())
                .unwrap_or_default();
            let mut events = vec![
                Ok(StreamEvent::Thought("pondering".to_owned())),
                Ok(StreamEvent::Text("echo:".to_owned())),
            ];
            for word in said.split_whitespace() {
                events.push(Ok(StreamEvent::Text(format!(" {word}"))));
            }
            Box::pin(futures_util::stream::iter(events))
        }
    }

    pub fn registration(echo: &Arc<Echo>) -> ExtraUpstream {
        ExtraUpstream {
            upstream: Arc::clone(echo) as Arc<dyn Upstream>,
            models: vec![ModelSpec {
                name: MODEL.to_owned(),
                upstream: NAME,
                upstream_id: "echo-upstream-v1".to_owned(),
                suffixes: false,
                features: Features::default(),
                visible: true,
            }],
        }
    }
}

#[tokio::test]
async fn a_second_upstream_registered_in_the_registry_serves_every_dialect() {
    let echo = std::sync::Arc::new(echo::Echo::default());
    let app = spawn_app_with(TestOptions::default().upstream(echo::registration(&echo))).await;
    let said = "hello from the second upstream";
    for d in ALL {
        for stream in [false, true] {
            let ask = Ask {
                model: echo::MODEL,
                ..Ask::text(said, stream)
            };
            let response = tokio::time::timeout(BOUND, d.request(&app, &ask).send())
                .await
                .expect("answered in time")
                .unwrap();
            assert_eq!(response.status(), 200, "{d:?} stream={stream}");
            let expected = format!("echo: {said}");
            if stream {
                let summary = read_stream(response, d.wire()).await;
                assert_eq!(summary.text, expected, "{d:?} streamed");
                assert!(summary.error.is_none(), "{d:?}: {:?}", summary.error);
                assert_eq!(summary.thinking, "pondering", "{d:?} streamed thinking");
            } else {
                let body: Value = response.json().await.unwrap();
                assert_eq!(d.answer_text(&body), expected, "{d:?}: {body}");
                // The input estimate is the upstream's, not Gemini Business's flattening.
                let input = match d {
                    D::Chat => body["usage"]["prompt_tokens"].clone(),
                    D::Responses => body["usage"]["input_tokens"].clone(),
                    D::Anthropic => body["usage"]["input_tokens"].clone(),
                    D::GeminiV1beta | D::GeminiV1 => {
                        body["usageMetadata"]["promptTokenCount"].clone()
                    }
                };
                assert_eq!(input, json!(echo::INPUT_TOKENS), "{d:?}: {body}");
            }
        }
    }
    assert_eq!(
        echo.calls.load(std::sync::atomic::Ordering::SeqCst),
        ALL.len() * 2
    );
    for (had_token, upstream_id, _) in echo.seen.lock().unwrap().iter() {
        assert!(had_token, "every call carries the leased account's token");
        assert_eq!(upstream_id, "echo-upstream-v1");
    }
    // Gemini Business was never asked to answer.
    assert!(app.sim.requests(Endpoint::StreamAssist).is_empty());
    assert!(app.sim.requests(Endpoint::CreateSession).is_empty());

    // The registry lists it in every dialect's model listing, and it can be retrieved.
    let bearer = format!("Bearer {TEST_KEY}");
    let openai = app
        .get_json_with("/v1/models", &[("authorization", &bearer)])
        .await;
    assert!(
        openai["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == echo::MODEL),
        "{openai}"
    );
    let google = app
        .get_json_with("/v1beta/models", &[("x-goog-api-key", TEST_KEY)])
        .await;
    assert!(
        google["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == format!("models/{}", echo::MODEL)),
        "{google}"
    );
    let anthropic = app
        .get_json_with(
            &format!("/v1/models/{}", echo::MODEL),
            &[("x-api-key", TEST_KEY), ("anthropic-version", "2023-06-01")],
        )
        .await;
    assert_eq!(anthropic["id"], echo::MODEL, "{anthropic}");
    // A suffix is not a name of a model that takes none.
    let unknown = d_request_status(&app, &format!("{}-image", echo::MODEL)).await;
    assert_eq!(unknown, 404);
    app.stop().await;
}

/// The status of a plain chat request for `model`.
async fn d_request_status(app: &TestApp, model: &str) -> u16 {
    D::Chat
        .request(
            app,
            &Ask {
                model,
                ..Ask::text("hi", false)
            },
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn generation_options_reach_the_upstream_from_each_dialect() {
    let echo = std::sync::Arc::new(echo::Echo::default());
    let app = spawn_app_with(TestOptions::default().upstream(echo::registration(&echo))).await;
    let bodies = [
        (
            "/v1/chat/completions",
            json!({"model": echo::MODEL, "max_completion_tokens": 11,
            "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/responses",
            json!({"model": echo::MODEL, "max_output_tokens": 12, "input": "hi"}),
        ),
        (
            "/v1/messages",
            json!({"model": echo::MODEL, "max_tokens": 13,
            "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1beta/models/echo-1:generateContent",
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "generationConfig": {"maxOutputTokens": 14}}),
        ),
    ];
    for (path, body) in bodies {
        let response = app
            .client
            .post(app.url(path))
            .bearer_auth(TEST_KEY)
            .header("x-goog-api-key", TEST_KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let seen: Vec<Option<u32>> = echo.seen.lock().unwrap().iter().map(|s| s.2).collect();
    assert_eq!(seen, vec![Some(11), Some(12), Some(13), Some(14)]);
    app.stop().await;
}
