//! The Flow models (Imagen / Veo) in every dialect, through the real wiring: the gateway's Flow
//! token pool against the Flow simulator (a real HTTP server on loopback). Images and videos
//! come back published in the gateway's media store; progress while a video runs is reasoning;
//! each failure answers the right status in the dialect's error shape, or ends a started stream
//! with the dialect's error event (never a clean finish); slow videos keep streams alive; the
//! Flow models are listed only while Flow is enabled with a usable token.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use business2api_tests::check::chat::markdown_links;
use business2api_tests::{
    StreamSummary, TEST_KEY, TestApp, TestOptions, Wire, flow_app, flow_config, read_stream,
    spawn_app_with,
};
use serde_json::{Value, json};
use upstream_sim::flow::{
    FLOW_IMAGE_PNG, FLOW_VIDEO_MP4, FlowRoute, FlowSimulator, ImageOutcome, VideoScript,
};

const ST: &str = "flow-session-token-aaaaaaaaaaaaaaaaaaaa";

const T2V: &str = "veo_3_1_t2v_fast_landscape";
const I2V: &str = "veo_3_1_i2v_s_fast_fl_landscape";
const R2V: &str = "veo_3_0_r2v_fast_landscape";
/// Image models in both orientations, with the aspect ratio Flow must be asked for.
const IMAGES: [(&str, &str); 2] = [
    (
        "imagen-4.0-generate-preview-landscape",
        "IMAGE_ASPECT_RATIO_LANDSCAPE",
    ),
    (
        "gemini-2.5-flash-image-portrait",
        "IMAGE_ASPECT_RATIO_PORTRAIT",
    ),
];

/// An app with Flow enabled against `sim`, configured with `tokens` (whatever `sim` knows).
async fn app_on(sim: &FlowSimulator, tokens: &[&str]) -> TestApp {
    spawn_app_with(TestOptions::default().config(flow_config(sim, tokens))).await
}

/// The dialects a chat turn can come through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum D {
    Chat,
    Responses,
    Anthropic,
    Gemini,
}

const ALL: [D; 4] = [D::Chat, D::Responses, D::Anthropic, D::Gemini];

impl D {
    fn wire(self) -> Wire {
        match self {
            D::Chat => Wire::ChatCompletions {
                include_usage: true,
            },
            D::Responses => Wire::Responses,
            D::Anthropic => Wire::Anthropic,
            D::Gemini => Wire::GeminiSse,
        }
    }

    /// One user message of `text` and inline PNG `images`, to `model`.
    fn request(
        self,
        app: &TestApp,
        model: &str,
        text: &str,
        images: &[&[u8]],
        stream: bool,
    ) -> reqwest::RequestBuilder {
        let b64: Vec<String> = images.iter().map(|i| STANDARD.encode(i)).collect();
        match self {
            D::Chat => {
                let mut content = vec![json!({"type": "text", "text": text})];
                for b in &b64 {
                    content.push(json!({"type": "image_url",
                        "image_url": {"url": format!("data:image/png;base64,{b}")}}));
                }
                let mut body = json!({"model": model, "stream": stream,
                    "messages": [{"role": "user", "content": content}]});
                if stream {
                    body["stream_options"] = json!({"include_usage": true});
                }
                app.client
                    .post(app.url("/v1/chat/completions"))
                    .bearer_auth(TEST_KEY)
                    .json(&body)
            }
            D::Responses => {
                let mut content = vec![json!({"type": "input_text", "text": text})];
                for b in &b64 {
                    content.push(json!({"type": "input_image",
                        "image_url": format!("data:image/png;base64,{b}")}));
                }
                app.client
                    .post(app.url("/v1/responses"))
                    .bearer_auth(TEST_KEY)
                    .json(&json!({"model": model, "stream": stream,
                        "input": [{"role": "user", "content": content}]}))
            }
            D::Anthropic => {
                let mut content = vec![json!({"type": "text", "text": text})];
                for b in &b64 {
                    content.push(json!({"type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": b}}));
                }
                app.client
                    .post(app.url("/v1/messages"))
                    .header("x-api-key", TEST_KEY)
                    .header("anthropic-version", "2023-06-01")
                    .json(
                        &json!({"model": model, "max_tokens": 1024, "stream": stream,
                        "messages": [{"role": "user", "content": content}]}),
                    )
            }
            D::Gemini => {
                let mut parts = vec![json!({"text": text})];
                for b in &b64 {
                    parts.push(json!({"inlineData": {"mimeType": "image/png", "data": b}}));
                }
                let path = if stream {
                    format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
                } else {
                    format!("/v1beta/models/{model}:generateContent")
                };
                app.client
                    .post(app.url(&path))
                    .header("x-goog-api-key", TEST_KEY)
                    .json(&json!({"contents": [{"role": "user", "parts": parts}]}))
            }
        }
    }

    /// What a non-streamed answer said.
    fn answer(self, v: &Value) -> Got {
        let items = |v: &Value| v.as_array().cloned().unwrap_or_default();
        let mut got = Got::default();
        match self {
            D::Chat => {
                let message = &v["choices"][0]["message"];
                got.text = message["content"].as_str().unwrap_or_default().to_owned();
                got.thinking = message["reasoning_content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                got.stop = v["choices"][0]["finish_reason"].as_str().map(str::to_owned);
            }
            D::Responses => {
                for item in items(&v["output"]) {
                    match item["type"].as_str() {
                        Some("message") => {
                            for c in items(&item["content"]) {
                                if c["type"] == "output_text" {
                                    got.text.push_str(c["text"].as_str().unwrap_or_default());
                                }
                            }
                        }
                        Some("image_generation_call") => {
                            let result = item["result"].as_str().unwrap_or_default();
                            got.media.push(format!("data:image/png;base64,{result}"));
                        }
                        Some("reasoning") => {
                            for s in items(&item["summary"])
                                .iter()
                                .chain(&items(&item["content"]))
                            {
                                got.thinking
                                    .push_str(s["text"].as_str().unwrap_or_default());
                            }
                        }
                        _ => {}
                    }
                }
                got.stop = v["status"].as_str().map(str::to_owned);
            }
            D::Anthropic => {
                for block in items(&v["content"]) {
                    match block["type"].as_str() {
                        Some("text") => got.text.push_str(block["text"].as_str().unwrap()),
                        Some("thinking") => {
                            got.thinking.push_str(block["thinking"].as_str().unwrap());
                        }
                        _ => {}
                    }
                }
                got.stop = v["stop_reason"].as_str().map(str::to_owned);
            }
            D::Gemini => {
                for part in items(&v["candidates"][0]["content"]["parts"]) {
                    if let Some(t) = part["text"].as_str() {
                        if part["thought"] == true {
                            got.thinking.push_str(t);
                        } else {
                            got.text.push_str(t);
                        }
                    } else if let Some(blob) = part.get("inlineData") {
                        got.media.push(format!(
                            "data:{};base64,{}",
                            blob["mimeType"].as_str().unwrap(),
                            blob["data"].as_str().unwrap()
                        ));
                    } else if let Some(file) = part.get("fileData") {
                        got.files.push(file.clone());
                        got.media.push(file["fileUri"].as_str().unwrap().to_owned());
                    }
                }
                got.stop = v["candidates"][0]["finishReason"]
                    .as_str()
                    .map(str::to_owned);
            }
        }
        if self != D::Gemini {
            got.media.extend(markdown_links(&got.text));
        }
        got
    }

    /// Asserts `body` is this dialect's error shape for an error of `status`.
    fn assert_error(self, status: u16, body: &Value) {
        let message = match self {
            D::Chat | D::Responses => {
                assert!(body["error"]["type"].is_string(), "{self:?}: {body}");
                assert_eq!(
                    body["error"]["type"],
                    openai_type(status),
                    "{self:?}: {body}"
                );
                &body["error"]["message"]
            }
            D::Anthropic => {
                assert_eq!(body["type"], "error", "{self:?}: {body}");
                assert_eq!(
                    body["error"]["type"],
                    anthropic_type(status),
                    "{self:?}: {body}"
                );
                &body["error"]["message"]
            }
            D::Gemini => {
                assert_eq!(body["error"]["code"], status, "{self:?}: {body}");
                assert_eq!(
                    body["error"]["status"],
                    google_status(status),
                    "{self:?}: {body}"
                );
                &body["error"]["message"]
            }
        };
        assert!(
            message.as_str().is_some_and(|m| !m.is_empty()),
            "{self:?}: an error message: {body}"
        );
    }

    /// Asserts a streamed body ended with this dialect's error for `status` (and not with a
    /// clean finish).
    fn assert_stream_error(self, status: u16, s: &StreamSummary) {
        let error = s
            .error
            .as_ref()
            .unwrap_or_else(|| panic!("{self:?}: the stream must end with an error: {s:?}"));
        // Anthropic's failure grammar is `error`, then `message_delta` (the gateway always says
        // `end_turn` there) and `message_stop`; Responses end `failed`; the others carry none.
        match self {
            D::Anthropic => {}
            D::Responses => assert_eq!(s.stop_reason.as_deref(), Some("failed"), "{s:?}"),
            D::Chat | D::Gemini => assert_eq!(
                s.stop_reason, None,
                "{self:?}: a failed stream carries no clean finish: {s:?}"
            ),
        }
        assert!(s.media.is_empty(), "{self:?}: no media: {s:?}");
        match self {
            D::Chat => {
                assert_eq!(error["type"], openai_type(status), "{error}");
                // The error chunk is the last chunk (the checker also requires it; only the
                // `[DONE]` marker may follow it).
                assert!(s.events.last().unwrap().get("error").is_some(), "{s:?}");
                assert!(
                    s.events.iter().all(|c| c["choices"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .all(|ch| ch["finish_reason"].is_null())),
                    "no finish_reason in a failed stream: {:?}",
                    s.events
                );
            }
            D::Responses => {
                assert!(
                    s.events.iter().any(|e| e["type"] == "response.failed"),
                    "{s:?}"
                );
                assert!(
                    !s.events.iter().any(|e| e["type"] == "response.completed"),
                    "{s:?}"
                );
            }
            D::Anthropic => {
                assert_eq!(error["type"], anthropic_type(status), "{error}");
                let at = |kind: &str| s.events.iter().position(|e| e["type"] == kind);
                let error_at = at("error").unwrap_or_else(|| panic!("an error event: {s:?}"));
                // The error comes before the message ends, and no text block was opened.
                assert!(at("message_delta").is_none_or(|d| error_at < d), "{s:?}");
                assert!(s.text.is_empty(), "{s:?}");
            }
            D::Gemini => {
                assert_eq!(error["code"], status, "{error}");
                assert_eq!(error["status"], google_status(status), "{error}");
                assert!(
                    !s.events
                        .iter()
                        .any(|e| e["candidates"][0]["finishReason"].is_string()),
                    "no finishReason after an error: {:?}",
                    s.events
                );
            }
        }
    }
}

fn openai_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        _ => "server_error",
    }
}

fn anthropic_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        503 => "overloaded_error",
        _ => "api_error",
    }
}

fn google_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNAVAILABLE",
    }
}

/// What an answer (streamed or not) said.
#[derive(Debug, Default)]
struct Got {
    text: String,
    thinking: String,
    /// Links, data URIs.
    media: Vec<String>,
    /// Gemini `fileData` parts.
    files: Vec<Value>,
    stop: Option<String>,
    /// The stream's summary, when streamed.
    summary: Option<StreamSummary>,
}

impl From<StreamSummary> for Got {
    fn from(s: StreamSummary) -> Got {
        Got {
            text: s.text.clone(),
            thinking: s.thinking.clone(),
            media: s.media.clone(),
            files: s
                .events
                .iter()
                .flat_map(|e| {
                    e["candidates"][0]["content"]["parts"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|p| p.get("fileData").cloned())
                .collect(),
            stop: s.stop_reason.clone(),
            summary: Some(s),
        }
    }
}

/// Sends one turn and reads its answer: `Ok` for a 200 (streams read through the dialect's
/// checker), `Err((status, body))` otherwise.
async fn turn(
    app: &TestApp,
    d: D,
    model: &str,
    text: &str,
    images: &[&[u8]],
    stream: bool,
) -> Result<Got, (u16, Value)> {
    let response = d
        .request(app, model, text, images, stream)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status != 200 {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        return Err((status, body));
    }
    if stream {
        Ok(read_stream(response, d.wire()).await.into())
    } else {
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(text.trim_start())
            .unwrap_or_else(|e| panic!("{d:?}: not JSON ({e}): {text}"));
        assert!(
            !body["error"].is_object() && body["type"] != "error",
            "{d:?}: a 200 with an error body: {body}"
        );
        Ok(d.answer(&body))
    }
}

/// [`turn`] that must succeed.
async fn ok(app: &TestApp, d: D, model: &str, text: &str, images: &[&[u8]], stream: bool) -> Got {
    turn(app, d, model, text, images, stream)
        .await
        .unwrap_or_else(|(status, body)| panic!("{d:?} stream={stream} {model}: {status} {body}"))
}

/// A generated file by its link (fetched from the gateway) or data URI: its type and bytes.
async fn fetch_media(app: &TestApp, link: &str) -> (String, Vec<u8>) {
    if let Some(rest) = link.strip_prefix("data:") {
        let (mime, data) = rest.split_once(";base64,").unwrap();
        return (mime.to_owned(), STANDARD.decode(data).unwrap());
    }
    assert!(link.contains("/media/"), "a gateway media link: {link}");
    let url = if link.starts_with('/') {
        app.url(link)
    } else {
        link.to_owned()
    };
    assert!(
        url.starts_with(&app.address),
        "the link points at the gateway ({}): {url}",
        app.address
    );
    // No key: the link is the capability.
    let response = app.client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    let mime = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (mime, response.bytes().await.unwrap().to_vec())
}

/// Asserts the answer carries exactly one generated file, of this type and these bytes.
async fn assert_one_file(app: &TestApp, got: &Got, mime: &str, bytes: &[u8], what: &str) {
    assert_eq!(got.media.len(), 1, "{what}: one file: {got:?}");
    let (m, b) = fetch_media(app, &got.media[0]).await;
    assert!(m.starts_with(mime), "{what}: {m} is not {mime}");
    assert_eq!(b, bytes, "{what}: the bytes Flow served");
}

/// The `imageAspectRatio` of the last image generation the simulator received.
fn last_image_aspect(sim: &FlowSimulator) -> Value {
    let generated = sim.requests_to(FlowRoute::GenerateImages);
    let last = generated.last().expect("an image generation reached Flow");
    last.body.as_ref().unwrap()["requests"][0]["imageAspectRatio"].clone()
}

// ---------------------------------------------------------------------------------------------
// 1. Text to image.
// ---------------------------------------------------------------------------------------------

/// One image turn in `d` per orientation, streamed or not: the image and the aspect ratio.
async fn image_in_both_orientations(d: D, stream: bool) {
    let (app, sim) = flow_app(&[ST]).await;
    for (model, aspect) in IMAGES {
        let what = format!("{d:?} stream={stream} {model}");
        let got = ok(&app, d, model, "a lighthouse at dusk", &[], stream).await;
        assert_one_file(&app, &got, "image/png", FLOW_IMAGE_PNG, &what).await;
        if d != D::Gemini && d != D::Responses {
            assert!(got.media[0].contains("/media/"), "{what}: a link: {got:?}");
        }
        assert_eq!(last_image_aspect(&sim), aspect, "{what}");
        let sent = sim.requests_to(FlowRoute::GenerateImages);
        let body = sent.last().unwrap().body.clone().unwrap();
        assert_eq!(
            body["requests"][0]["prompt"], "a lighthouse at dusk",
            "{what}"
        );
        if let Some(s) = &got.summary {
            assert!(s.error.is_none(), "{what}: {s:?}");
            assert!(s.stop_reason.is_some(), "{what}: a clean finish: {s:?}");
        }
    }
    assert_eq!(sim.count(FlowRoute::GenerateImages), IMAGES.len());
}

#[tokio::test]
async fn openai_chat_images_in_both_orientations() {
    image_in_both_orientations(D::Chat, false).await;
}

#[tokio::test]
async fn openai_chat_streamed_images_in_both_orientations() {
    image_in_both_orientations(D::Chat, true).await;
}

#[tokio::test]
async fn responses_images_in_both_orientations() {
    image_in_both_orientations(D::Responses, false).await;
}

#[tokio::test]
async fn responses_streamed_images_in_both_orientations() {
    image_in_both_orientations(D::Responses, true).await;
}

#[tokio::test]
async fn anthropic_images_are_text_with_a_link_in_both_orientations() {
    image_in_both_orientations(D::Anthropic, false).await;
    image_in_both_orientations(D::Anthropic, true).await;
}

#[tokio::test]
async fn gemini_images_are_inline_data_in_both_orientations() {
    let (app, sim) = flow_app(&[ST]).await;
    let (model, aspect) = IMAGES[0];
    let response = D::Gemini
        .request(&app, model, "a red kite", &[], false)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let v: Value = response.json().await.unwrap();
    let parts = v["candidates"][0]["content"]["parts"].as_array().unwrap();
    let blob = parts
        .iter()
        .find_map(|p| p.get("inlineData"))
        .unwrap_or_else(|| panic!("an inlineData part: {v}"));
    assert_eq!(blob["mimeType"], "image/png", "{v}");
    assert_eq!(
        STANDARD.decode(blob["data"].as_str().unwrap()).unwrap(),
        FLOW_IMAGE_PNG
    );
    assert_eq!(v["candidates"][0]["finishReason"], "STOP", "{v}");
    assert_eq!(last_image_aspect(&sim), aspect);
    drop(app);
    image_in_both_orientations(D::Gemini, false).await;
    image_in_both_orientations(D::Gemini, true).await;
}

#[tokio::test]
async fn the_images_api_answers_flow_images_as_b64_json_and_as_links() {
    let (app, sim) = flow_app(&[ST]).await;
    for (model, aspect) in IMAGES {
        let (status, body) = app
            .post_json_as(
                TEST_KEY,
                "/v1/images/generations",
                &json!({"model": model, "prompt": "a paper boat", "response_format": "b64_json"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), 1, "{body}");
        let png = STANDARD
            .decode(data[0]["b64_json"].as_str().unwrap())
            .unwrap();
        assert_eq!(png, FLOW_IMAGE_PNG, "{model}");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(last_image_aspect(&sim), aspect, "{model}");

        let (status, body) = app
            .post_json_as(
                TEST_KEY,
                "/v1/images/generations",
                &json!({"model": model, "prompt": "a paper boat", "response_format": "url"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let url = body["data"][0]["url"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"));
        assert!(body["data"][0].get("b64_json").is_none(), "{body}");
        let (mime, bytes) = fetch_media(&app, url).await;
        assert_eq!(mime, "image/png");
        assert_eq!(bytes, FLOW_IMAGE_PNG);
        assert_eq!(last_image_aspect(&sim), aspect, "{model}");
    }
    assert_eq!(sim.count(FlowRoute::GenerateImages), 4);
}

// ---------------------------------------------------------------------------------------------
// 2. Text to video.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_openai_chat_stream_shows_video_progress_as_reasoning_then_the_link() {
    let (app, sim) = flow_app(&[ST]).await;
    sim.script_video(VideoScript::success_after(1));
    let got = ok(&app, D::Chat, T2V, "a whale breaching", &[], true).await;
    let s = got.summary.as_ref().unwrap();
    assert!(s.error.is_none(), "{s:?}");
    assert_eq!(s.stop_reason.as_deref(), Some("stop"), "{s:?}");
    assert!(s.thinking.contains("submitted"), "{s:?}");
    assert!(
        s.thinking.contains("(check 1)"),
        "progress of the poll: {s:?}"
    );
    let first_reasoning = s
        .events
        .iter()
        .position(|c| {
            c["choices"][0]["delta"]["reasoning_content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .expect("reasoning deltas");
    let first_content = s
        .events
        .iter()
        .position(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .expect("content deltas");
    assert!(first_reasoning < first_content, "{:?}", s.events);
    assert!(
        s.media.len() == 1 && s.media[0].contains("/media/"),
        "{s:?}"
    );
    assert_one_file(&app, &got, "video/mp4", FLOW_VIDEO_MP4, "chat").await;
    let submits = sim.requests_to(FlowRoute::VideoText);
    assert_eq!(submits.len(), 1);
    let body = submits[0].body.as_ref().unwrap();
    assert_eq!(
        body["requests"][0]["textInput"]["prompt"],
        "a whale breaching"
    );
    assert_eq!(body["requests"][0]["videoModelKey"], "veo_3_1_t2v_fast");
    assert_eq!(
        body["requests"][0]["aspectRatio"],
        "VIDEO_ASPECT_RATIO_LANDSCAPE"
    );
}

#[tokio::test]
async fn a_non_streamed_openai_chat_gets_the_video_link() {
    let (app, sim) = flow_app(&[ST]).await;
    sim.script_video(VideoScript::success_after(0));
    let got = ok(&app, D::Chat, T2V, "a whale breaching", &[], false).await;
    assert_eq!(got.stop.as_deref(), Some("stop"));
    assert_one_file(&app, &got, "video/mp4", FLOW_VIDEO_MP4, "chat").await;
}

#[tokio::test]
async fn an_anthropic_stream_has_thinking_with_progress_then_text_with_the_link() {
    let (app, sim) = flow_app(&[ST]).await;
    sim.script_video(VideoScript::success_after(1));
    let got = ok(&app, D::Anthropic, T2V, "a whale breaching", &[], true).await;
    let s = got.summary.as_ref().unwrap();
    assert!(s.error.is_none(), "{s:?}");
    assert_eq!(s.stop_reason.as_deref(), Some("end_turn"), "{s:?}");
    assert!(s.thinking.contains("submitted"), "{s:?}");
    assert!(s.thinking.contains("(check 1)"), "{s:?}");
    let block = |kind: &str| {
        s.events
            .iter()
            .position(|e| e["type"] == "content_block_start" && e["content_block"]["type"] == kind)
    };
    let thinking = block("thinking").expect("a thinking block");
    let text = block("text").expect("a text block");
    assert!(thinking < text, "{:?}", s.events);
    assert!(s.text.contains("/media/"), "{s:?}");
    assert_one_file(&app, &got, "video/mp4", FLOW_VIDEO_MP4, "anthropic").await;
}

#[tokio::test]
async fn gemini_answers_a_video_as_file_data_with_the_gateways_link() {
    let (app, sim) = flow_app(&[ST]).await;
    for stream in [false, true] {
        sim.script_video(VideoScript::success_after(0));
        let got = ok(&app, D::Gemini, T2V, "a whale breaching", &[], stream).await;
        assert_eq!(got.files.len(), 1, "stream={stream}: {got:?}");
        let file = &got.files[0];
        assert_eq!(file["mimeType"], "video/mp4", "{file}");
        let uri = file["fileUri"].as_str().unwrap();
        assert!(uri.contains("/media/"), "{uri}");
        assert_eq!(
            got.stop.as_deref(),
            Some("STOP"),
            "stream={stream}: {got:?}"
        );
        assert_one_file(&app, &got, "video/mp4", FLOW_VIDEO_MP4, "gemini").await;
        if stream {
            let s = got.summary.as_ref().unwrap();
            assert!(
                s.thinking.contains("submitted") || s.events.len() > 1,
                "{s:?}"
            );
        }
    }
    assert_eq!(sim.count(FlowRoute::VideoText), 2);
}

#[tokio::test]
async fn responses_answer_a_video_as_a_link() {
    let (app, sim) = flow_app(&[ST]).await;
    for stream in [false, true] {
        sim.script_video(VideoScript::success_after(0));
        let got = ok(&app, D::Responses, T2V, "a whale breaching", &[], stream).await;
        assert_one_file(&app, &got, "video/mp4", FLOW_VIDEO_MP4, "responses").await;
        assert_eq!(got.stop.as_deref(), Some("completed"), "{got:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Image to video, reference to video.
// ---------------------------------------------------------------------------------------------

/// Two distinct images (the simulator keeps the bytes of each upload).
fn frames() -> (Vec<u8>, Vec<u8>) {
    let first = FLOW_IMAGE_PNG.to_vec();
    let mut second = FLOW_IMAGE_PNG.to_vec();
    second.extend_from_slice(b"second");
    (first, second)
}

#[tokio::test]
async fn image_to_video_with_one_frame_uploads_it_as_the_start_frame() {
    let (app, sim) = flow_app(&[ST]).await;
    sim.script_video(VideoScript::success_after(0));
    let (first, _) = frames();
    let got = ok(&app, D::Chat, I2V, "the kite takes off", &[&first], false).await;
    assert_one_file(&app, &got, "video/mp4", FLOW_VIDEO_MP4, "i2v").await;
    let uploads = sim.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].bytes.as_ref(), first.as_slice());
    let submits = sim.requests_to(FlowRoute::VideoStartEnd);
    assert_eq!(submits.len(), 1);
    let r = &submits[0].body.as_ref().unwrap()["requests"][0];
    assert_eq!(
        r["startImage"]["mediaId"],
        uploads[0].media_id.as_str(),
        "{r}"
    );
    assert!(r.get("endImage").is_none(), "{r}");
    assert_eq!(r["videoModelKey"], "veo_3_1_i2v_s_fast_fl", "{r}");
    assert_eq!(r["textInput"]["prompt"], "the kite takes off", "{r}");
    assert_eq!(sim.count(FlowRoute::VideoText), 0);
}

#[tokio::test]
async fn image_to_video_with_two_frames_uploads_start_and_end_in_order() {
    let (app, sim) = flow_app(&[ST]).await;
    sim.script_video(VideoScript::success_after(0));
    let (first, second) = frames();
    let got = ok(
        &app,
        D::Chat,
        I2V,
        "from dawn to dusk",
        &[&first, &second],
        true,
    )
    .await;
    assert_one_file(&app, &got, "video/mp4", FLOW_VIDEO_MP4, "i2v").await;
    let uploads = sim.uploads();
    assert_eq!(uploads.len(), 2);
    assert_eq!(uploads[0].bytes.as_ref(), first.as_slice());
    assert_eq!(uploads[1].bytes.as_ref(), second.as_slice());
    let submits = sim.requests_to(FlowRoute::VideoStartEnd);
    assert_eq!(submits.len(), 1);
    let r = &submits[0].body.as_ref().unwrap()["requests"][0];
    assert_eq!(
        r["startImage"]["mediaId"],
        uploads[0].media_id.as_str(),
        "{r}"
    );
    assert_eq!(
        r["endImage"]["mediaId"],
        uploads[1].media_id.as_str(),
        "{r}"
    );
}

#[tokio::test]
async fn reference_to_video_with_no_image_and_with_several() {
    let (app, sim) = flow_app(&[ST]).await;
    sim.script_video(VideoScript::success_after(0));
    let got = ok(&app, D::Chat, R2V, "a dancing robot", &[], false).await;
    assert_one_file(&app, &got, "video/mp4", FLOW_VIDEO_MP4, "r2v, none").await;
    assert_eq!(sim.count(FlowRoute::UploadImage), 0);
    let submits = sim.requests_to(FlowRoute::VideoReference);
    assert_eq!(submits.len(), 1);
    let r = &submits[0].body.as_ref().unwrap()["requests"][0];
    assert_eq!(r["referenceImages"], json!([]), "{r}");
    assert_eq!(r["videoModelKey"], "veo_3_0_r2v_fast", "{r}");

    sim.script_video(VideoScript::success_after(0));
    let (a, b) = frames();
    let mut c = FLOW_IMAGE_PNG.to_vec();
    c.extend_from_slice(b"third");
    let got = ok(&app, D::Chat, R2V, "a dancing robot", &[&a, &b, &c], false).await;
    assert_one_file(&app, &got, "video/mp4", FLOW_VIDEO_MP4, "r2v, three").await;
    let uploads = sim.uploads();
    assert_eq!(uploads.len(), 3);
    for (upload, sent) in uploads.iter().zip([&a, &b, &c]) {
        assert_eq!(upload.bytes.as_ref(), sent.as_slice());
    }
    let submits = sim.requests_to(FlowRoute::VideoReference);
    assert_eq!(submits.len(), 2);
    let r = &submits[1].body.as_ref().unwrap()["requests"][0];
    let ids: Vec<&str> = r["referenceImages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["imageUsageType"], "IMAGE_USAGE_TYPE_ASSET", "{i}");
            i["mediaId"].as_str().unwrap()
        })
        .collect();
    let uploaded: Vec<&str> = uploads.iter().map(|u| u.media_id.as_str()).collect();
    assert_eq!(ids, uploaded);
}

#[tokio::test]
async fn image_to_video_without_an_image_is_a_400_in_every_dialect() {
    let (app, sim) = flow_app(&[ST]).await;
    for d in ALL {
        for stream in [false, true] {
            let (status, body) = turn(&app, d, I2V, "no frame here", &[], stream)
                .await
                .map(|g| panic!("{d:?} stream={stream}: answered {g:?}"))
                .unwrap_err();
            assert_eq!(status, 400, "{d:?} stream={stream}: {body}");
            d.assert_error(400, &body);
        }
    }
    // Refused before any token was used.
    assert_eq!(sim.count(FlowRoute::UploadImage), 0);
    assert_eq!(sim.count(FlowRoute::VideoStartEnd), 0);
    // Three frames are too many, too.
    let (a, b) = frames();
    let (status, body) = turn(&app, D::Chat, I2V, "three frames", &[&a, &b, &a], false)
        .await
        .unwrap_err();
    assert_eq!(status, 400, "{body}");
    D::Chat.assert_error(400, &body);
    assert_eq!(sim.count(FlowRoute::UploadImage), 0);
}

// ---------------------------------------------------------------------------------------------
// 4. Failures.
// ---------------------------------------------------------------------------------------------

/// When a failure happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Before any event: a streamed request fails with the status (or, if the upstream took
    /// longer than a keep-alive interval, with the in-stream error).
    Before,
    /// After progress was streamed: the stream ends with the in-stream error.
    AfterProgress,
}

/// One failure scenario, run on a fresh app (some failures count against the only token)
/// per dialect, streamed and not, all at once.
async fn failure(model: &'static str, script: Script, status: u16, when: When) {
    let mut runs = Vec::new();
    for d in ALL {
        for stream in [false, true] {
            let script = script.clone();
            runs.push(async move {
                let (app, sim) = flow_app(&[ST]).await;
                match &script {
                    Script::Video(v) => sim.script_video(v.clone()),
                    Script::Image(i) => sim.script_image(i.clone()),
                }
                let what = format!("{d:?} stream={stream} {script:?}");
                match turn(&app, d, model, "a storm at sea", &[], stream).await {
                    Err((got, body)) => {
                        assert_eq!(got, status, "{what}: {body}");
                        assert!(
                            !stream || when == When::Before,
                            "{what}: a failure after progress cannot change the status"
                        );
                        d.assert_error(status, &body);
                    }
                    Ok(g) => {
                        assert!(stream, "{what}: a non-streamed failure answered 200: {g:?}");
                        d.assert_stream_error(status, g.summary.as_ref().unwrap());
                        if when == When::AfterProgress {
                            assert!(
                                !g.thinking.is_empty() || d == D::Responses,
                                "{what}: progress before the error: {g:?}"
                            );
                        }
                    }
                }
                app.stop().await;
            });
        }
    }
    futures_util::future::join_all(runs).await;
}

#[derive(Debug, Clone)]
enum Script {
    Video(VideoScript),
    Image(ImageOutcome),
}

#[tokio::test]
async fn a_video_refused_for_nsfw_is_a_400() {
    let s = VideoScript::failed_after("MEDIA_GENERATION_STATUS_ERROR_NSFW", 0);
    failure(T2V, Script::Video(s), 400, When::AfterProgress).await;
}

#[tokio::test]
async fn a_video_refused_for_a_person_or_safety_is_a_400() {
    for status in [
        "MEDIA_GENERATION_STATUS_ERROR_PERSON",
        "MEDIA_GENERATION_STATUS_ERROR_SAFETY",
    ] {
        let s = VideoScript::failed_after(status, 0);
        failure(T2V, Script::Video(s), 400, When::AfterProgress).await;
    }
}

#[tokio::test]
async fn a_video_that_failed_upstream_is_a_502() {
    for status in [
        "MEDIA_GENERATION_STATUS_ERROR_UNKNOWN",
        "MEDIA_GENERATION_STATUS_ERROR_INTERNAL",
    ] {
        let s = VideoScript::failed_after(status, 1);
        failure(T2V, Script::Video(s), 502, When::AfterProgress).await;
    }
}

#[tokio::test]
async fn a_video_submit_without_a_task_id_is_a_502() {
    failure(
        T2V,
        Script::Video(VideoScript::empty_task_id()),
        502,
        When::Before,
    )
    .await;
}

#[tokio::test]
async fn a_video_submit_refused_with_400_is_a_400() {
    failure(
        T2V,
        Script::Video(VideoScript::submit_error(400)),
        400,
        When::Before,
    )
    .await;
}

#[tokio::test]
async fn a_video_submit_failing_with_500_is_a_502() {
    failure(
        T2V,
        Script::Video(VideoScript::submit_error(500)),
        502,
        When::Before,
    )
    .await;
}

#[tokio::test]
async fn an_image_refused_with_400_is_a_400() {
    let outcome = ImageOutcome::HttpError(400, "the prompt is not allowed".into());
    let (model, _) = IMAGES[0];
    failure(model, Script::Image(outcome), 400, When::Before).await;
}

#[tokio::test]
async fn an_image_failing_with_500_is_a_502() {
    let outcome = ImageOutcome::HttpError(500, "backend error".into());
    let (model, _) = IMAGES[1];
    failure(model, Script::Image(outcome), 502, When::Before).await;
}

#[tokio::test]
async fn the_images_api_answers_flow_failures_in_openais_shape() {
    for (code, status) in [(400, 400), (500, 502)] {
        let (app, sim) = flow_app(&[ST]).await;
        sim.script_image(ImageOutcome::HttpError(code, "no".into()));
        let (got, body) = app
            .post_json_as(
                TEST_KEY,
                "/v1/images/generations",
                &json!({"model": IMAGES[0].0, "prompt": "a paper boat"}),
            )
            .await;
        assert_eq!(got, status, "{body}");
        D::Chat.assert_error(status, &body);
        app.stop().await;
    }
}

#[tokio::test]
async fn poll_errors_are_waited_out_and_the_video_still_arrives() {
    let (app, sim) = flow_app(&[ST]).await;
    sim.script_video(VideoScript::success_after(0).with_poll_http_errors(1));
    let got = ok(&app, D::Anthropic, T2V, "a whale breaching", &[], true).await;
    let s = got.summary.as_ref().unwrap();
    assert!(s.error.is_none(), "{s:?}");
    assert_one_file(&app, &got, "video/mp4", FLOW_VIDEO_MP4, "anthropic").await;
    assert_eq!(sim.count(FlowRoute::CheckStatus), 2);
}

// ---------------------------------------------------------------------------------------------
// 5. Keep-alives while a slow video runs.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_slow_video_keeps_every_stream_alive() {
    let (app, sim) = flow_app(&[ST]).await;
    let dialects = [D::Chat, D::Anthropic, D::Gemini, D::Responses];
    for _ in dialects {
        sim.script_video(VideoScript::success_after(3));
    }
    let runs = dialects.map(|d| {
        let app = &app;
        async move {
            let got = ok(app, d, T2V, "a slow sunrise", &[], true).await;
            let s = got.summary.as_ref().unwrap();
            assert!(s.error.is_none(), "{d:?}: {s:?}");
            assert!(s.keepalives >= 1, "{d:?}: keep-alives while polling: {s:?}");
            assert_one_file(app, &got, "video/mp4", FLOW_VIDEO_MP4, &format!("{d:?}")).await;
            (d, s.keepalives)
        }
    });
    let counted = futures_util::future::join_all(runs).await;
    assert!(counted.iter().all(|(_, n)| *n >= 1), "{counted:?}");
}

// ---------------------------------------------------------------------------------------------
// 6. Listing: Flow models only while Flow is enabled with a usable token.
// ---------------------------------------------------------------------------------------------

/// The model ids each dialect's listing shows: OpenAI, Anthropic, Gemini.
async fn listings(app: &TestApp) -> [Vec<String>; 3] {
    let ids = |v: &Value, list: &str, key: &str| -> Vec<String> {
        v[list]
            .as_array()
            .unwrap_or_else(|| panic!("a model list: {v}"))
            .iter()
            .map(|m| {
                m[key]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("models/")
                    .to_owned()
            })
            .collect()
    };
    let openai = app.get_json_as(TEST_KEY, "/v1/models").await;
    let anthropic = app
        .get_json_with(
            "/v1/models?limit=1000",
            &[("x-api-key", TEST_KEY), ("anthropic-version", "2023-06-01")],
        )
        .await;
    assert_eq!(anthropic["has_more"], false, "{anthropic}");
    let gemini = app
        .get_json_with("/v1beta/models", &[("x-goog-api-key", TEST_KEY)])
        .await;
    [
        ids(&openai, "data", "id"),
        ids(&anthropic, "data", "id"),
        ids(&gemini, "models", "name"),
    ]
}

fn flow_ids() -> Vec<&'static str> {
    vec![
        "gemini-2.5-flash-image-landscape",
        "imagen-4.0-generate-preview-portrait",
        T2V,
        I2V,
        R2V,
    ]
}

#[tokio::test]
async fn every_listing_shows_the_flow_models_when_flow_has_a_usable_token() {
    let (app, _sim) = flow_app(&[ST]).await;
    for (list, name) in listings(&app)
        .await
        .iter()
        .zip(["openai", "anthropic", "gemini"])
    {
        for id in flow_ids() {
            assert!(
                list.iter().any(|m| m == id),
                "{name}: {id} listed: {list:?}"
            );
        }
        assert!(
            list.iter().any(|m| m == "gemini-2.5-flash"),
            "{name}: {list:?}"
        );
    }
}

#[tokio::test]
async fn without_flow_its_models_are_not_listed_and_answer_a_400_naming_flow_enable() {
    let app = spawn_app_with(TestOptions::default()).await;
    for (list, name) in listings(&app)
        .await
        .iter()
        .zip(["openai", "anthropic", "gemini"])
    {
        assert!(!list.is_empty(), "{name}");
        for id in flow_ids() {
            assert!(
                !list.iter().any(|m| m == id),
                "{name}: {id} listed: {list:?}"
            );
        }
    }
    for d in ALL {
        for model in [T2V, IMAGES[0].0] {
            let (status, body) = turn(&app, d, model, "anything", &[], false)
                .await
                .map(|g| panic!("{d:?}: answered {g:?}"))
                .unwrap_err();
            assert_eq!(status, 400, "{d:?} {model}: {body}");
            d.assert_error(400, &body);
            assert!(body.to_string().contains("flow.enable"), "{d:?}: {body}");
        }
    }
    let (status, body) = app
        .post_json_as(
            TEST_KEY,
            "/v1/images/generations",
            &json!({"model": IMAGES[0].0, "prompt": "a paper boat"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("flow.enable"), "{body}");
}

/// Waits (up to 5 s) until no listing shows a Flow model.
async fn until_flow_unlisted(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lists = listings(app).await;
        let listed: Vec<(usize, &str)> = lists
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                flow_ids()
                    .into_iter()
                    .filter(move |id| l.iter().any(|m| m == id))
                    .map(move |id| (i, id))
            })
            .collect();
        if listed.is_empty() {
            for list in &lists {
                assert!(list.iter().any(|m| m == "gemini-2.5-flash"), "{list:?}");
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Flow models still listed after 5 s: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Flow is enabled but its only token is dead: once the pool found out, no listing shows
/// Flow and every dialect answers a Flow model with a 503.
async fn assert_flow_unusable(app: &TestApp) {
    until_flow_unlisted(app).await;
    for d in ALL {
        for stream in [false, true] {
            let (status, body) = turn(app, d, T2V, "anything", &[], stream)
                .await
                .map(|g| panic!("{d:?} stream={stream}: answered {g:?}"))
                .unwrap_err();
            assert_eq!(status, 503, "{d:?} stream={stream}: {body}");
            d.assert_error(503, &body);
        }
    }
}

#[tokio::test]
async fn a_token_whose_session_expired_unlists_flow_and_answers_503() {
    let sim = FlowSimulator::start().await.unwrap();
    sim.add_token(ST, "flow0@example.com", 1000, "PAYGATE_TIER_TWO");
    sim.expire_session(ST);
    let app = app_on(&sim, &[ST]).await;
    assert_flow_unusable(&app).await;
    assert!(sim.count(FlowRoute::Session) >= 1, "the pool asked Flow");
    assert_eq!(sim.count(FlowRoute::VideoText), 0);
}

#[tokio::test]
async fn a_token_flow_does_not_know_unlists_flow_and_answers_503() {
    let sim = FlowSimulator::start().await.unwrap();
    let app = app_on(&sim, &["flow-session-token-unknown-to-flow-zzzz"]).await;
    assert_flow_unusable(&app).await;
    assert_eq!(sim.count(FlowRoute::VideoText), 0);
}
