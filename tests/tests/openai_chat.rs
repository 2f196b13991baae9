//! The OpenAI dialect end to end, through the real application and a real simulator.

use std::time::Duration;

use business2api_tests::{
    Answer, Endpoint, SseReader, TEST_KEY, TestOptions, Wire, chat_body, check_openai_stream,
    collect_delta, schemas, spawn_app, spawn_app_with,
};
use serde_json::{Value, json};

#[tokio::test]
async fn first_content_delta_arrives_before_the_upstream_sends_its_last_element() {
    let app = spawn_app().await;
    app.sim.set_answer(
        Answer::new()
            .thought("Let me think.")
            .text("Hello ")
            .text("there ")
            .text("friend."),
    );
    let gate = app.sim.hold_last_element();

    let body = json!({"model": "gemini-2.5-flash", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]});
    let response = app.chat(body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut sse = SseReader::checked(
        response,
        Wire::ChatCompletions {
            include_usage: true,
        },
    );
    let mut payloads = Vec::new();
    // Read until the first visible content delta.
    loop {
        let data = sse.next_data().await.expect("stream continues");
        let v: Value = serde_json::from_str(&data).unwrap();
        payloads.push(data);
        if v["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
        {
            break;
        }
    }
    // The simulator is holding back its last element: the delta came through before it.
    let stats = app.sim.stats();
    assert_eq!(
        stats.streams_completed, 0,
        "the upstream answer is not complete yet"
    );
    assert!(
        stats.elements_sent >= 2,
        "elements were streamed: {stats:?}"
    );
    gate.open();
    payloads.extend(sse.rest().await);
    let chunks = check_openai_stream(&payloads, true);
    assert_eq!(collect_delta(&chunks, "content"), "Hello there friend.");
    assert_eq!(collect_delta(&chunks, "reasoning_content"), "Let me think.");
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    let usage = &chunks[chunks.len() - 1]["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() >= 1);
    assert!(usage["completion_tokens"].as_u64().unwrap() >= 5);
    assert_eq!(app.sim.stats().streams_completed, 1);
    app.stop().await;
}

#[tokio::test]
async fn without_include_usage_chunks_have_no_usage() {
    let app = spawn_app().await;
    let response = app.chat(chat_body("gemini-2.5-pro", "hello", true)).await;
    assert_eq!(response.status(), 200);
    let payloads = SseReader::checked(
        response,
        Wire::ChatCompletions {
            include_usage: false,
        },
    )
    .rest()
    .await;
    let chunks = check_openai_stream(&payloads, false);
    assert!(collect_delta(&chunks, "content").contains("You asked: «hello»"));
    app.stop().await;
}

#[tokio::test]
async fn non_streamed_answer_matches_the_sdk_type_and_reports_usage() {
    let app = spawn_app().await;
    app.sim
        .set_answer(Answer::new().thought("ponder").text("Forty").text("-two."));
    let response = app
        .chat(chat_body("gemini-2.5-flash", "the answer?", false))
        .await;
    assert_eq!(response.status(), 200);
    let v: Value = response.json().await.unwrap();
    schemas::assert_valid("openai.ChatCompletion", &v);
    assert_eq!(v["model"], "gemini-2.5-flash");
    assert_eq!(v["choices"][0]["message"]["content"], "Forty-two.");
    assert_eq!(v["choices"][0]["message"]["reasoning_content"], "ponder");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        v["usage"]["prompt_tokens"].as_u64().unwrap()
            + v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    app.stop().await;
}

#[tokio::test]
async fn keep_alives_flow_while_the_upstream_is_silent() {
    let app = spawn_app_with(
        TestOptions::default().config(json!({"http": {"stream_keepalive_ms": 100}})),
    )
    .await;
    app.sim
        .set_answer(Answer::new().text("slow ").text("answer"));
    app.sim.set_pacing(Duration::from_millis(450));
    let response = app.chat(chat_body("gemini-2.5-flash", "x", true)).await;
    let mut sse = SseReader::checked(
        response,
        Wire::ChatCompletions {
            include_usage: false,
        },
    );
    let mut comments = 0;
    let mut payloads = Vec::new();
    while let Some(item) = sse.next().await {
        match item {
            business2api_tests::Sse::Comment(_) => comments += 1,
            business2api_tests::Sse::Event { data, .. } => payloads.push(data),
        }
    }
    assert!(
        comments >= 3,
        "expected keep-alive comments during silence, got {comments}"
    );
    let chunks = check_openai_stream(&payloads, false);
    assert_eq!(collect_delta(&chunks, "content"), "slow answer");
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_call() {
    let app = spawn_app().await;
    let mut answer = Answer::new();
    for i in 0..40 {
        answer = answer.text(format!("piece {i} "));
    }
    app.sim.set_answer(answer);
    app.sim.set_pacing(Duration::from_millis(100));
    let response = app
        .chat(chat_body("gemini-2.5-flash", "long please", true))
        .await;
    let mut sse = SseReader::checked(
        response,
        Wire::ChatCompletions {
            include_usage: false,
        },
    );
    loop {
        let data = sse.next_data().await.unwrap();
        if data.contains("piece 0") {
            break;
        }
    }
    drop(sse);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.sim.stats().streams_cancelled == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream stream was not cancelled: {:?}",
            app.sim.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.sim.stats().streams_completed, 0);
    app.stop().await;
}

#[tokio::test]
async fn multi_turn_conversations_reach_the_upstream_flattened_with_their_media() {
    let app = spawn_app().await;
    let body = json!({"model": "gemini-2.5-pro-image-search", "stream": false, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": [
            {"type": "text", "text": "And this one?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}]}
    ]});
    let response = app.chat(body).await;
    assert_eq!(response.status(), 200);
    let sent = app.sim.last_stream_assist_body().unwrap();
    let request = &sent["streamAssistRequest"];
    let text = request["query"]["parts"][0]["text"].as_str().unwrap();
    assert_eq!(
        text,
        "<system>\nYou are terse.\n</system>\n\nHuman: What is in this picture? [attachment 1: image]\n\n\
         Assistant: A cat.\n\nHuman: And this one? [attachment 2: image]\n\nAssistant:"
    );
    assert_eq!(
        request["fileIds"].as_array().unwrap().len(),
        2,
        "media of both turns uploaded"
    );
    assert_eq!(app.sim.requests(Endpoint::AddContextFile).len(), 2);
    assert_eq!(
        request["assistGenerationConfig"]["modelId"],
        "gemini-2.5-pro"
    );
    assert_eq!(
        request["toolsSpec"],
        json!({"imageGenerationSpec": {}, "webGroundingSpec": {}})
    );
    app.stop().await;
}

#[tokio::test]
async fn every_listed_model_is_mapped_to_an_upstream_model_id() {
    let app = spawn_app().await;
    let list: Value = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth(TEST_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 28);
    for m in list["data"].as_array().unwrap() {
        assert_eq!(m["object"], "model");
        assert_eq!(m["owned_by"], "google");
        assert!(m["created"].as_u64().unwrap() > 0);
    }
    // The models the reference left unmapped get an explicit upstream id too.
    for model in [
        "gemini-3-flash-preview",
        "gemini-3-flash",
        "gemini-2.5-flash-preview-latest-video",
    ] {
        let r = app.chat(chat_body(model, "x", false)).await;
        assert_eq!(r.status(), 200, "{model}");
        let sent = app.sim.last_stream_assist_body().unwrap();
        let expected = model.trim_end_matches("-video");
        assert_eq!(
            sent["streamAssistRequest"]["assistGenerationConfig"]["modelId"],
            expected
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn generated_images_are_downloaded_and_returned_inline_when_configured() {
    let app =
        spawn_app_with(TestOptions::default().config(json!({"media": {"inline_in_chat": true}})))
            .await;
    let png = vec![0x89, b'P', b'N', b'G', 1, 2, 3];
    app.sim.set_answer(
        Answer::new()
            .text("Here it is: ")
            .image("image/png", png.clone()),
    );
    let v: Value = app
        .chat(chat_body("gemini-2.5-flash-image", "draw", false))
        .await
        .json()
        .await
        .unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    assert_eq!(
        content,
        format!("Here it is: ![image](data:image/png;base64,{b64})")
    );
    assert_eq!(app.sim.requests(Endpoint::ListFiles).len(), 1);
    assert_eq!(app.sim.requests(Endpoint::Download).len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn generated_images_are_linked_and_served_by_the_gateway() {
    let app = spawn_app().await;
    let png = vec![0x89, b'P', b'N', b'G', 9, 8, 7];
    app.sim
        .set_answer(Answer::new().text("Here: ").image("image/png", png.clone()));
    let v: Value = app
        .chat(chat_body("gemini-2.5-flash-image", "draw", false))
        .await
        .json()
        .await
        .unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    let link = content
        .strip_prefix("Here: ![image](")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("a markdown image link: {content}"));
    assert!(
        link.starts_with(&format!("{}/media/", app.address)),
        "{link}"
    );
    // The link needs no key, serves the bytes with their type, and cannot be guessed.
    let got = app.client.get(link).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.bytes().await.unwrap().to_vec(), png);
    let token_len = link
        .rsplit('/')
        .next()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .len();
    assert!(token_len >= 43, "{link}");
    let guessed = app
        .client
        .get(format!("{}/media/{}.png", app.address, "A".repeat(43)))
        .send()
        .await
        .unwrap();
    assert_eq!(guessed.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn tool_calls_stream_with_index_and_finish_reason() {
    let app = spawn_app().await;
    app.sim
        .set_answer(Answer::new().function_call("get_weather", json!({"city": "Paris"})));
    let response = app
        .chat(json!({"model": "gemini-2.5-flash", "stream": true, "messages": [{"role": "user", "content": "weather"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]}))
        .await;
    let payloads = SseReader::checked(
        response,
        Wire::ChatCompletions {
            include_usage: false,
        },
    )
    .rest()
    .await;
    let chunks = check_openai_stream(&payloads, false);
    let call = chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned())
        .unwrap();
    assert_eq!(call["index"], 0);
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
    app.stop().await;
}

#[tokio::test]
async fn http_media_urls_are_handed_to_the_upstream_by_uri() {
    let app = spawn_app().await;
    let body = json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]});
    let r = app.chat(body).await;
    assert_eq!(r.status(), 200);
    let uploads = app.sim.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        uploads[0].file_uri.as_deref(),
        Some("https://example.com/cat.png")
    );
    let sent = app.sim.last_stream_assist_body().unwrap();
    assert_eq!(
        sent["streamAssistRequest"]["fileIds"],
        json!([uploads[0].file_id])
    );
    app.stop().await;
}

#[tokio::test]
async fn inline_uploads_carry_the_bytes_and_a_proper_file_name() {
    let app = spawn_app().await;
    let body = json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}}]}]});
    assert_eq!(app.chat(body).await.status(), 200);
    let uploads = app.sim.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].mime_type.as_deref(), Some("image/jpeg"));
    let name = uploads[0].file_name.clone().unwrap();
    assert!(
        name.starts_with("upload_") && name.ends_with(".jpg"),
        "{name}"
    );
    assert_eq!(
        uploads[0].bytes.as_deref(),
        Some(&[0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46][..])
    );
    app.stop().await;
}

#[tokio::test]
async fn generated_videos_stream_as_links_after_the_text() {
    let app = spawn_app().await;
    let mp4 = vec![0, 0, 0, 0x18, b'f', b't', b'y', b'p'];
    app.sim.set_answer(
        Answer::new()
            .text("Your clip: ")
            .video("video/mp4", mp4.clone()),
    );
    let response = app
        .chat(chat_body("gemini-2.5-flash-video", "film", true))
        .await;
    let chunks = check_openai_stream(
        &SseReader::checked(
            response,
            Wire::ChatCompletions {
                include_usage: false,
            },
        )
        .rest()
        .await,
        false,
    );
    let content = collect_delta(&chunks, "content");
    let link = content
        .strip_prefix("Your clip: [video](")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("a markdown link: {content}"));
    let got = app.client.get(link).send().await.unwrap();
    assert_eq!(got.headers()["content-type"], "video/mp4");
    assert_eq!(got.bytes().await.unwrap().to_vec(), mp4);
    app.stop().await;
}

#[tokio::test]
async fn the_stored_web_authorization_is_forwarded_as_x_original_authorization() {
    use business2api_tests::{
        SimAccount, Simulator, base_config, merge, start_app, write_account_file,
    };
    let sim = Simulator::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut account = SimAccount::demo(3);
    account.authorization = Some("Bearer web.app.token".to_owned());
    sim.add_account(account.clone());
    write_account_file(dir.path(), &account);
    let mut config = base_config(dir.path(), &sim);
    merge(&mut config, json!({"api_keys": [TEST_KEY]}));
    let app = start_app(sim, vec![account], dir, config).await;
    assert_eq!(
        app.chat(chat_body("gemini-2.5-flash", "x", false))
            .await
            .status(),
        200
    );
    for endpoint in [Endpoint::CreateSession, Endpoint::StreamAssist] {
        let recorded = app.sim.requests(endpoint);
        assert!(
            recorded[0].header("x-original-authorization").is_some(),
            "{endpoint:?}"
        );
    }
    // U1 gets cookies, not the web authorization.
    assert_eq!(
        app.sim.requests(Endpoint::GetOxsrf)[0].header("x-original-authorization"),
        None
    );
    app.stop().await;
}
