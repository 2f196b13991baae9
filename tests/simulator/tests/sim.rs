//! End-to-end tests of the simulator over real HTTP.

// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use upstream_sim::{Answer, Endpoint, Fault, FaultRule, SimAccount, SimOptions, Simulator};

async fn sim_with(n: u32) -> Simulator {
    let sim = Simulator::start().await.unwrap();
    for i in 0..n {
        sim.add_account(SimAccount::demo(i));
    }
    sim
}

// ---------------------------------------------------------------- U1

#[tokio::test]
async fn u1_issues_keys_and_checks_the_cookie() {
    let sim = sim_with(1).await;
    let a = SimAccount::demo(0);
    let c = client();
    assert!(sim.base_url().starts_with("http://127.0.0.1:"));
    assert!(!sim.base_url().ends_with('/'));
    assert_eq!(sim.base_url(), format!("http://127.0.0.1:{}", sim.port()));

    let url = format!("{}/auth/getoxsrf?csesidx={}", sim.base_url(), a.csesidx);
    let resp = c
        .get(&url)
        .header(
            "cookie",
            format!("NID=1; __Secure-C_SES={} ; __Host-C_OSES=x", a.c_ses),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let text = resp.text().await.unwrap();
    assert!(text.starts_with(")]}'\n"), "{text}");
    let v: Value = serde_json::from_str(&text[5..]).unwrap();
    let token = v["xsrfToken"].as_str().unwrap();
    assert!(!token.contains('='));
    assert_eq!(URL_SAFE_NO_PAD.decode(token).unwrap().len(), 32);
    assert!(!v["keyId"].as_str().unwrap().is_empty());

    // A second call issues a different key.
    let k2 = getoxsrf(&c, &sim, &a).await;
    assert_ne!(URL_SAFE_NO_PAD.encode(&k2.key), token);

    // Wrong cookie, missing cookie, unknown account.
    let wrong = c
        .get(&url)
        .header("cookie", "__Secure-C_SES=nope")
        .send()
        .await
        .unwrap();
    assert_google_error(wrong, 401, "UNAUTHENTICATED").await;
    let missing = c.get(&url).send().await.unwrap();
    assert_google_error(missing, 401, "UNAUTHENTICATED").await;
    let unknown = c
        .get(format!("{}/auth/getoxsrf?csesidx=999", sim.base_url()))
        .header("cookie", format!("__Secure-C_SES={}", a.c_ses))
        .send()
        .await
        .unwrap();
    assert_google_error(unknown, 401, "UNAUTHENTICATED").await;

    let recs = sim.requests(Endpoint::GetOxsrf);
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[0].status, 200);
    assert_eq!(recs[0].csesidx.as_deref(), Some(a.csesidx.as_str()));
    assert_eq!(recs[0].header("cookie"), Some("[present]"));
    assert_eq!(recs[2].status, 401);
    assert_eq!(recs[4].csesidx, None);
    // The TCP peer is recorded, failed requests included (the egress proxy tests tell proxies
    // apart by it).
    for rec in &recs {
        let peer = rec.peer.expect("the peer address is recorded");
        assert_eq!(peer.ip(), std::net::Ipv4Addr::LOCALHOST);
        assert_ne!(peer.port(), 0);
    }
    assert_eq!(sim.stats().calls[&Endpoint::GetOxsrf], 5);
    sim.stop();
}

// ---------------------------------------------------------------- happy path

#[tokio::test]
async fn full_flow_returns_the_default_answer() {
    let sim = sim_with(2).await;
    let caller = Caller::new(&sim, SimAccount::demo(1)).await;
    let session = caller.create_session().await;
    assert!(
        session.starts_with("collections/default_collection/engines/agentspace-engine/sessions/")
    );
    let id = session.rsplit('/').next().unwrap();
    assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));

    let resp = caller
        .post(
            "widgetStreamAssist",
            &caller.stream_request(&session, "What is Rust?"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = resp.text().await.unwrap();
    assert!(body.starts_with('[') && body.ends_with(']'));
    assert!(body.contains(",\n"));
    let els = elements(&body);
    assert_eq!(
        els[0]["streamAssistResponse"]["sessionInfo"]["session"],
        format!("projects/123456789/locations/global/{session}")
    );
    assert_eq!(content(&els[1])["text"], "Considering the question.");
    assert_eq!(content(&els[1])["thought"], true);
    let text: String = els[2..]
        .iter()
        .map(|e| {
            assert!(content(e).get("thought").is_none());
            content(e)["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        text,
        "Hello from the Gemini Business simulator. You asked: «What is Rust?»"
    );
    assert!(els.len() >= 5, "text split into several elements");

    let stats = sim.stats();
    assert_eq!(stats.streams_started, 1);
    assert_eq!(stats.streams_completed, 1);
    assert_eq!(stats.streams_cancelled, 0);
    assert_eq!(stats.elements_sent, els.len() as u64);
    assert_eq!(stats.jwts_rejected, 0);
    let last = sim.last_stream_assist_body().unwrap();
    assert_eq!(
        last["streamAssistRequest"]["query"]["parts"][0]["text"],
        "What is Rust?"
    );
    let recs = sim.requests(Endpoint::StreamAssist);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].status, 200);
    assert_eq!(
        recs[0].csesidx.as_deref(),
        Some(caller.account.csesidx.as_str())
    );
    assert_eq!(recs[0].header("authorization"), Some("[present]"));
}

#[tokio::test]
async fn default_answer_quotes_only_the_last_200_chars() {
    let sim = sim_with(1).await;
    let caller = Caller::new(&sim, SimAccount::demo(0)).await;
    let session = caller.create_session().await;
    let long = format!("{}{}", "x".repeat(50), "é".repeat(200));
    let body = caller
        .post(
            "widgetStreamAssist",
            &caller.stream_request(&session, &long),
        )
        .await
        .text()
        .await
        .unwrap();
    let text: String = elements(&body)[2..]
        .iter()
        .map(|e| content(e)["text"].as_str().unwrap().to_string())
        .collect();
    assert!(text.ends_with(&format!("«{}»", "é".repeat(200))));
}

#[tokio::test]
async fn scripted_answers_are_consumed_fifo_before_the_set_answer() {
    let sim = sim_with(1).await;
    let caller = Caller::new(&sim, SimAccount::demo(0)).await;
    let session = caller.create_session().await;
    sim.set_answer(Answer::new().text("set"));
    sim.push_answer(
        Answer::new()
            .thought("hmm")
            .text("one")
            .inline("image/png", vec![1u8, 2, 3])
            .function_call("lookup", json!({"q": 1})),
    );
    sim.push_answer(Answer::new().text("two"));
    let mut texts = Vec::new();
    for _ in 0..4 {
        let body = caller
            .post("widgetStreamAssist", &caller.stream_request(&session, "q"))
            .await
            .text()
            .await
            .unwrap();
        texts.push(elements(&body));
    }
    let first = &texts[0];
    assert_eq!(first.len(), 5);
    assert_eq!(content(&first[1])["thought"], true);
    assert_eq!(content(&first[2])["text"], "one");
    assert_eq!(content(&first[3])["inlineData"]["mimeType"], "image/png");
    assert_eq!(
        content(&first[3])["inlineData"]["data"],
        STANDARD.encode([1u8, 2, 3])
    );
    assert_eq!(content(&first[4])["functionCall"]["name"], "lookup");
    assert_eq!(content(&first[4])["functionCall"]["args"]["q"], 1);
    assert_eq!(content(&texts[1][1])["text"], "two");
    assert_eq!(content(&texts[2][1])["text"], "set");
    assert_eq!(content(&texts[3][1])["text"], "set");
}

// ---------------------------------------------------------------- JWT

#[tokio::test]
async fn bad_tokens_are_rejected_with_401() {
    let sim = sim_with(2).await;
    let caller = Caller::new(&sim, SimAccount::demo(0)).await;
    let other = SimAccount::demo(1);
    let body = caller.envelope("createSessionRequest", json!({"session": {}}));
    let t = now();
    let k = &caller.key;

    // Tampered signature: flip the first signature character.
    let mut parts: Vec<String> = caller.jwt.split('.').map(str::to_string).collect();
    let first = parts[2].remove(0);
    parts[2].insert(0, if first == 'A' { 'B' } else { 'A' });
    let tampered = parts.join(".");
    // Tampered payload keeping the old signature.
    let forged_payload = URL_SAFE_NO_PAD.encode(claims(&other.csesidx, t, t + 300).to_string());
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        forged_payload,
        caller.jwt.split('.').nth(2).unwrap()
    );

    let bad = vec![
        ("tampered signature", tampered),
        ("forged payload", forged),
        (
            "wrong sub",
            sign(&k.key, &k.kid, &claims(&other.csesidx, t, t + 300)),
        ),
        (
            "expired",
            sign(
                &k.key,
                &k.kid,
                &claims(&caller.account.csesidx, t - 400, t - 100),
            ),
        ),
        (
            "exp == now",
            sign(&k.key, &k.kid, &claims(&caller.account.csesidx, t - 300, t)),
        ),
        (
            "not yet valid",
            sign(
                &k.key,
                &k.kid,
                &claims(&caller.account.csesidx, t + 60, t + 360),
            ),
        ),
        (
            "unknown kid",
            sign(&k.key, "nope", &claims(&caller.account.csesidx, t, t + 300)),
        ),
        (
            "wrong key",
            sign(
                b"0123456789abcdef0123456789abcdef",
                &k.kid,
                &claims(&caller.account.csesidx, t, t + 300),
            ),
        ),
        (
            "wrong aud",
            sign(&k.key, &k.kid, &{
                let mut c = claims(&caller.account.csesidx, t, t + 300);
                c["aud"] = json!("https://example.com");
                c
            }),
        ),
        (
            "wrong iss",
            sign(&k.key, &k.kid, &{
                let mut c = claims(&caller.account.csesidx, t, t + 300);
                c["iss"] = json!("https://example.com");
                c
            }),
        ),
        (
            "float exp",
            sign(&k.key, &k.kid, &{
                let mut c = claims(&caller.account.csesidx, t, t + 300);
                c["exp"] = json!((t + 300) as f64 + 0.5);
                c
            }),
        ),
        ("two segments", "abc.def".to_string()),
        ("padded", format!("{}=", caller.jwt)),
    ];
    for (what, jwt) in &bad {
        let resp = caller.post_raw("widgetCreateSession", jwt, &body).await;
        assert_eq!(resp.status(), 401, "{what}");
        assert_google_error(resp, 401, "UNAUTHENTICATED").await;
    }
    // No authorization header at all.
    let resp = caller
        .c
        .post(format!(
            "{}/v1alpha/locations/global/widgetCreateSession",
            caller.base
        ))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(sim.stats().jwts_rejected, bad.len() as u64 + 1);

    // nbf slightly in the future is tolerated (clock skew); the good token still works.
    let skewed = sign(
        &k.key,
        &k.kid,
        &claims(&caller.account.csesidx, t + 3, t + 300),
    );
    assert_eq!(
        caller
            .post_raw("widgetCreateSession", &skewed, &body)
            .await
            .status(),
        200
    );
    assert_eq!(
        caller.post("widgetCreateSession", &body).await.status(),
        200
    );

    // Faults never mask an authentication failure.
    sim.add_fault(FaultRule::always(
        Endpoint::CreateSession,
        Fault::ServerError(503),
    ));
    let resp = caller.post_raw("widgetCreateSession", "x.y.z", &body).await;
    assert_eq!(resp.status(), 401);
    let recs = sim.requests(Endpoint::CreateSession);
    assert_eq!(recs.last().unwrap().status, 401);
    assert_eq!(recs.last().unwrap().csesidx, None);
}

// ---------------------------------------------------------------- validation

async fn expect_400(caller: &Caller, method: &str, body: &Value, field: &str) {
    let resp = caller.post(method, body).await;
    let v = assert_google_error(resp, 400, "INVALID_ARGUMENT").await;
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(field), "message {msg:?} should name {field:?}");
}

#[tokio::test]
async fn envelope_violations_are_400_naming_the_field() {
    let sim = sim_with(1).await;
    let caller = Caller::new(&sim, SimAccount::demo(0)).await;
    let session = caller.create_session().await;
    let good = caller.stream_request(&session, "hi");

    let mut b = good.clone();
    b["configId"] = json!("other-config");
    expect_400(&caller, "widgetStreamAssist", &b, "configId").await;
    let mut b = good.clone();
    b.as_object_mut().unwrap().remove("configId");
    expect_400(&caller, "widgetStreamAssist", &b, "configId").await;
    let mut b = good.clone();
    b["additionalParams"] = json!({"token": "x"});
    expect_400(&caller, "widgetStreamAssist", &b, "additionalParams").await;
    let mut b = good.clone();
    b["additionalParams"] = json!({"token": "-", "more": 1});
    expect_400(&caller, "widgetStreamAssist", &b, "additionalParams").await;
    let mut b = good.clone();
    b["createSessionRequest"] = json!({"session": {}});
    expect_400(&caller, "widgetStreamAssist", &b, "createSessionRequest").await;
    let mut b = good.clone();
    b["extra"] = json!(1);
    expect_400(&caller, "widgetStreamAssist", &b, "extra").await;
    // The wrong member for the endpoint.
    expect_400(&caller, "widgetCreateSession", &good, "streamAssistRequest").await;
    // Missing member.
    let empty = json!({"configId": caller.account.config_id, "additionalParams": {"token": "-"}});
    expect_400(
        &caller,
        "widgetCreateSession",
        &empty,
        "createSessionRequest",
    )
    .await;
    expect_400(
        &caller,
        "widgetCreateSession",
        &caller.envelope("createSessionRequest", json!({})),
        "createSessionRequest.session",
    )
    .await;
    // Not JSON at all.
    let resp = caller
        .c
        .post(format!(
            "{}/v1alpha/locations/global/widgetCreateSession",
            caller.base
        ))
        .header("authorization", format!("Bearer {}", caller.jwt))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_google_error(resp, 400, "INVALID_ARGUMENT").await;

    // streamAssistRequest fields.
    let cases: Vec<(&str, Value, &str)> = vec![
        ("filter", json!("x"), "streamAssistRequest.filter"),
        (
            "answerGenerationMode",
            json!("FAST"),
            "streamAssistRequest.answerGenerationMode",
        ),
        (
            "assistSkippingMode",
            json!("SKIP"),
            "streamAssistRequest.assistSkippingMode",
        ),
        ("toolsSpec", json!([]), "streamAssistRequest.toolsSpec"),
        (
            "toolsSpec",
            json!({"imageGenerationSpec": null}),
            "imageGenerationSpec",
        ),
        ("toolsSpec", json!({"codeSpec": {}}), "codeSpec"),
        ("languageCode", json!(5), "streamAssistRequest.languageCode"),
        (
            "userMetadata",
            json!({}),
            "streamAssistRequest.userMetadata.timeZone",
        ),
        (
            "query",
            json!({"parts": []}),
            "streamAssistRequest.query.parts",
        ),
        (
            "query",
            json!({"parts": [{"text": 1}]}),
            "streamAssistRequest.query.parts[0].text",
        ),
        ("fileIds", json!("abc"), "streamAssistRequest.fileIds"),
        (
            "assistGenerationConfig",
            json!({"modelId": "gpt-4"}),
            "unknown model",
        ),
        (
            "assistGenerationConfig",
            json!({"modelId": "gemini-2.5-pro", "x": 1}),
            "\"x\"",
        ),
        ("bogus", json!(1), "bogus"),
    ];
    for (field, value, needle) in cases {
        let mut b = good.clone();
        b["streamAssistRequest"][field] = value;
        expect_400(&caller, "widgetStreamAssist", &b, needle).await;
    }
    // Removing required fields.
    for field in [
        "filter",
        "toolsSpec",
        "languageCode",
        "userMetadata",
        "query",
    ] {
        let mut b = good.clone();
        b["streamAssistRequest"]
            .as_object_mut()
            .unwrap()
            .remove(field);
        expect_400(&caller, "widgetStreamAssist", &b, field).await;
    }
    // Every advertised model id is accepted; no config at all is accepted too.
    for model in upstream_sim::KNOWN_MODELS {
        let mut b = good.clone();
        b["streamAssistRequest"]["assistGenerationConfig"] = json!({"modelId": model});
        assert_eq!(
            caller.post("widgetStreamAssist", &b).await.status(),
            200,
            "{model}"
        );
    }
    let mut b = good.clone();
    b["streamAssistRequest"]
        .as_object_mut()
        .unwrap()
        .remove("assistGenerationConfig");
    b["streamAssistRequest"]["toolsSpec"] = json!({"imageGenerationSpec": {}});
    let resp = caller.post("widgetStreamAssist", &b).await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();

    let recs = sim.requests(Endpoint::StreamAssist);
    assert!(recs.iter().any(|r| r.status == 400));
    assert!(recs.iter().all(|r| r.body.is_some()));
}

#[tokio::test]
async fn unknown_or_foreign_sessions_are_404() {
    let sim = sim_with(2).await;
    let a = Caller::new(&sim, SimAccount::demo(0)).await;
    let b = Caller::new(&sim, SimAccount::demo(1)).await;
    let session_b = b.create_session().await;

    let unknown = "collections/default_collection/engines/agentspace-engine/sessions/42";
    let resp = a
        .post("widgetStreamAssist", &a.stream_request(unknown, "hi"))
        .await;
    assert_google_error(resp, 404, "NOT_FOUND").await;
    let resp = a
        .post("widgetStreamAssist", &a.stream_request(&session_b, "hi"))
        .await;
    assert_google_error(resp, 404, "NOT_FOUND").await;
    let resp = a.upload_inline(&session_b, "image/png", b"png").await;
    assert_google_error(resp, 404, "NOT_FOUND").await;
    let list = a.envelope(
        "listSessionFileMetadataRequest",
        json!({"name": session_b, "filter": "file_origin_type = AI_GENERATED"}),
    );
    assert_google_error(
        a.post("widgetListSessionFileMetadata", &list).await,
        404,
        "NOT_FOUND",
    )
    .await;

    // The owner can use it, with the short or the full name.
    let full = format!("projects/123456789/locations/global/{session_b}");
    let resp = b
        .post("widgetStreamAssist", &b.stream_request(&full, "hi"))
        .await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
}

#[tokio::test]
async fn uploads_and_file_ids_are_validated() {
    let sim = sim_with(1).await;
    let caller = Caller::new(&sim, SimAccount::demo(0)).await;
    let session = caller.create_session().await;
    let other_session = caller.create_session().await;

    let resp = caller
        .upload_inline(&session, "image/png", b"\x89PNG....")
        .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let file_id = v["addContextFileResponse"]["fileId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!file_id.is_empty());
    assert_eq!(v["addContextFileResponse"]["session"], session);
    assert!(v["addContextFileResponse"]["tokenCount"].is_string());

    let by_uri = caller.envelope(
        "addContextFileRequest",
        json!({"name": session, "fileUri": "https://example.com/cat.png"}),
    );
    let resp = caller.post("widgetAddContextFile", &by_uri).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let uri_id = v["addContextFileResponse"]["fileId"]
        .as_str()
        .unwrap()
        .to_string();

    let uploads = sim.uploads();
    assert_eq!(uploads.len(), 2);
    assert_eq!(uploads[0].mime_type.as_deref(), Some("image/png"));
    assert_eq!(uploads[0].byte_len, 8);
    assert_eq!(uploads[0].bytes.as_deref(), Some(&b"\x89PNG...."[..]));
    assert_eq!(
        uploads[1].file_uri.as_deref(),
        Some("https://example.com/cat.png")
    );

    // Bad uploads.
    let bad = [
        (
            json!({"name": session, "fileName": "a.png", "mimeType": "image/png", "fileContents": "!!!"}),
            "fileContents",
        ),
        (
            json!({"name": session, "fileName": "a.png", "mimeType": "image/png", "fileContents": "YWJj"}),
            "",
        ),
        (
            json!({"name": session, "fileName": "a.png", "mimeType": "image/png", "fileContents": "YQ"}),
            "fileContents",
        ),
        (
            json!({"name": session, "fileName": "a.png", "mimeType": "png", "fileContents": "YQ=="}),
            "mimeType",
        ),
        (
            json!({"name": session, "mimeType": "image/png", "fileContents": "YQ=="}),
            "fileName",
        ),
        (
            json!({"name": session, "fileUri": "ftp://example.com/x"}),
            "fileUri",
        ),
        (
            json!({"name": session, "fileUri": "https://e.com/x", "fileContents": "YQ=="}),
            "fileUri",
        ),
        (json!({"name": session}), "fileContents"),
        (
            json!({"fileUri": "https://e.com/x"}),
            "addContextFileRequest.name",
        ),
    ];
    for (req, field) in bad {
        let body = caller.envelope("addContextFileRequest", req);
        if field.is_empty() {
            assert_eq!(
                caller.post("widgetAddContextFile", &body).await.status(),
                200
            );
        } else {
            expect_400(&caller, "widgetAddContextFile", &body, field).await;
        }
    }

    // A large upload: recorded with its bytes elided, counted in uploads() without bytes.
    let big = vec![7u8; 2 << 20];
    let resp = caller.upload_inline(&session, "video/mp4", &big).await;
    assert_eq!(resp.status(), 200);
    let last = sim.requests(Endpoint::AddContextFile).pop().unwrap();
    let recorded = last.body.unwrap()["addContextFileRequest"]["fileContents"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(recorded.starts_with("[elided "), "{}", &recorded[..40]);
    let up = sim.uploads().pop().unwrap();
    assert_eq!(up.byte_len, 2 << 20);
    assert!(up.bytes.is_none());

    // Headers are recorded with credentials redacted.
    let resp = caller
        .c
        .post(format!(
            "{}/v1alpha/locations/global/widgetAddContextFile",
            caller.base
        ))
        .header("authorization", format!("Bearer {}", caller.jwt))
        .header("x-original-authorization", "Bearer captured")
        .header("x-server-timeout", "1800")
        .body(by_uri.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let last = sim.requests(Endpoint::AddContextFile).pop().unwrap();
    assert_eq!(last.header("x-original-authorization"), Some("[present]"));
    assert_eq!(last.header("authorization"), Some("[present]"));
    assert_eq!(last.header("x-server-timeout"), Some("1800"));
    assert_eq!(last.method, "POST");
    assert_eq!(last.path, "/v1alpha/locations/global/widgetAddContextFile");

    // fileIds in U4.
    let mut b = caller.stream_request(&session, "look");
    b["streamAssistRequest"]["fileIds"] = json!([file_id, uri_id]);
    let resp = caller.post("widgetStreamAssist", &b).await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    b["streamAssistRequest"]["fileIds"] = json!([]);
    assert_eq!(caller.post("widgetStreamAssist", &b).await.status(), 200);
    b["streamAssistRequest"]["fileIds"] = json!(["file-unknown"]);
    expect_400(&caller, "widgetStreamAssist", &b, "fileIds").await;
    b["streamAssistRequest"]["fileIds"] = json!([1]);
    expect_400(&caller, "widgetStreamAssist", &b, "fileIds").await;
    // A file of another session is not usable.
    let mut b = caller.stream_request(&other_session, "look");
    b["streamAssistRequest"]["fileIds"] = json!([file_id]);
    expect_400(&caller, "widgetStreamAssist", &b, "fileIds").await;
}

// ---------------------------------------------------------------- streaming

/// Reads chunks until `pred(buffer)` holds.
async fn read_until<S>(stream: &mut S, buf: &mut String, pred: impl Fn(&str) -> bool)
where
    S: futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    while !pred(buf) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("chunk in time")
            .expect("stream not ended")
            .expect("chunk ok");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn pacing_and_hold_last_element() {
    let sim = Simulator::start_with(
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            pacing: Duration::from_millis(30),
            workers: 2,
        },
    )
    .await
    .unwrap();
    sim.add_account(SimAccount::demo(0));
    let caller = Caller::new(&sim, SimAccount::demo(0)).await;
    let session = caller.create_session().await;
    sim.set_answer(Answer::new().text("a").text("b").text("c"));

    // Pacing: 4 elements → at least 3 pauses.
    let started = Instant::now();
    let body = caller
        .post("widgetStreamAssist", &caller.stream_request(&session, "q"))
        .await
        .text()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(90));
    assert_eq!(elements(&body).len(), 4);

    sim.set_pacing(Duration::from_millis(5));
    let gate = sim.hold_last_element();
    let before = sim.stats().elements_sent;
    let resp = caller
        .post("widgetStreamAssist", &caller.stream_request(&session, "q"))
        .await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    read_until(&mut stream, &mut buf, |b| {
        b.matches("streamAssistResponse").count() == 3
    })
    .await;
    // The last element is held.
    let next = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(next.is_err(), "last element must wait for the gate");
    assert_eq!(sim.stats().elements_sent - before, 3);
    assert!(!buf.ends_with(']'));
    gate.open();
    read_until(&mut stream, &mut buf, |b| b.ends_with(']')).await;
    assert!(stream.next().await.is_none());
    let els = elements(&buf);
    assert_eq!(els.len(), 4);
    assert_eq!(content(&els[3])["text"], "c");
    assert_eq!(sim.stats().elements_sent - before, 4);
    assert_eq!(sim.stats().streams_completed, 2);

    // The hold applied only to that one stream.
    let started = Instant::now();
    let body = caller
        .post("widgetStreamAssist", &caller.stream_request(&session, "q"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(elements(&body).len(), 4);
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn wait_for(mut pred: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if pred() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_dropped_client_counts_as_cancelled() {
    let sim = sim_with(1).await;
    let caller = Caller::new(&sim, SimAccount::demo(0)).await;
    let session = caller.create_session().await;
    let _gate = sim.hold_last_element();
    let resp = caller
        .post(
            "widgetStreamAssist",
            &caller.stream_request(&session, "one two three four"),
        )
        .await;
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    read_until(&mut stream, &mut buf, |b| b.contains("sessionInfo")).await;
    drop(stream);
    assert!(
        wait_for(|| sim.stats().streams_cancelled == 1).await,
        "{:?}",
        sim.stats()
    );
    let stats = sim.stats();
    assert_eq!(stats.streams_started, 1);
    assert_eq!(stats.streams_completed, 0);
}

#[tokio::test]
async fn cut_after_breaks_the_body() {
    let sim = sim_with(1).await;
    let caller = Caller::new(&sim, SimAccount::demo(0)).await;
    let session = caller.create_session().await;
    sim.set_answer(Answer::new().text("a").text("b").text("c"));
    sim.add_fault(FaultRule::once(Endpoint::StreamAssist, Fault::CutAfter(2)));
    let resp = caller
        .post("widgetStreamAssist", &caller.stream_request(&session, "q"))
        .await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut error = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => buf.push_str(std::str::from_utf8(&chunk).unwrap()),
            Err(_) => {
                error = true;
                break;
            }
        }
    }
    assert!(error, "the body must end with an error, got {buf:?}");
    assert_eq!(buf.matches("streamAssistResponse").count(), 3, "{buf}");
    assert!(buf.contains("\"b\"") && !buf.contains("\"c\""));
    let stats = sim.stats();
    assert_eq!(stats.streams_cut, 1);
    assert_eq!(stats.streams_cancelled, 0);
    assert_eq!(stats.streams_completed, 0);

    // text() of a cut body is an error too; the rule was one-shot.
    sim.add_fault(FaultRule::once(Endpoint::StreamAssist, Fault::CutAfter(0)));
    let resp = caller
        .post("widgetStreamAssist", &caller.stream_request(&session, "q"))
        .await;
    assert!(resp.text().await.is_err());
    let resp = caller
        .post("widgetStreamAssist", &caller.stream_request(&session, "q"))
        .await;
    assert_eq!(elements(&resp.text().await.unwrap()).len(), 4);

    // Outside U4 the body breaks before any byte.
    sim.add_fault(FaultRule::once(Endpoint::CreateSession, Fault::CutAfter(0)));
    let body = caller.envelope("createSessionRequest", json!({"session": {}}));
    let resp = caller.post("widgetCreateSession", &body).await;
    assert!(resp.bytes().await.is_err());
}

#[tokio::test]
async fn a_prompt_with_the_cut_directive_breaks_its_own_answer() {
    let sim = sim_with(1).await;
    let caller = Caller::new(&sim, SimAccount::demo(0)).await;
    let session = caller.create_session().await;
    let prompt = format!("tell me {}", upstream_sim::CUT_DIRECTIVE);
    let resp = caller
        .post(
            "widgetStreamAssist",
            &caller.stream_request(&session, &prompt),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut error = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => buf.push_str(std::str::from_utf8(&chunk).unwrap()),
            Err(_) => {
                error = true;
                break;
            }
        }
    }
    assert!(error, "the body must end with an error, got {buf:?}");
    // sessionInfo + the thought + the first text element.
    assert_eq!(
        buf.matches("streamAssistResponse").count(),
        1 + upstream_sim::CUT_DIRECTIVE_AFTER,
        "{buf}"
    );
    assert_eq!(sim.stats().streams_cut, 1);
    // Without the directive the answer is whole.
    let resp = caller
        .post(
            "widgetStreamAssist",
            &caller.stream_request(&session, "tell me"),
        )
        .await;
    assert!(resp.text().await.is_ok());
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn faults_have_the_documented_shapes() {
    let sim = sim_with(2).await;
    let caller = Caller::new(&sim, SimAccount::demo(0)).await;
    let body = caller.envelope("createSessionRequest", json!({"session": {}}));
    let m = "widgetCreateSession";
    let once = |f| FaultRule::once(Endpoint::CreateSession, f);

    sim.add_fault(once(Fault::Unauthorized));
    let v = assert_google_error(caller.post(m, &body).await, 401, "UNAUTHENTICATED").await;
    assert_eq!(
        v["error"]["message"],
        "Request had invalid authentication credentials."
    );
    assert_eq!(sim.stats().jwts_rejected, 0);

    sim.add_fault(once(Fault::RateLimited {
        retry_after_secs: Some(7),
    }));
    let resp = caller.post(m, &body).await;
    assert_eq!(resp.headers()["retry-after"], "7");
    let v = assert_google_error(resp, 429, "RESOURCE_EXHAUSTED").await;
    let details = v["error"]["details"].as_array().unwrap();
    assert_eq!(details[0]["reason"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(details[0]["domain"], "discoveryengine.googleapis.com");
    assert_eq!(
        details[1]["@type"],
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    assert_eq!(details[1]["retryDelay"], "7s");

    sim.add_fault(once(Fault::RateLimited {
        retry_after_secs: None,
    }));
    let resp = caller.post(m, &body).await;
    assert!(resp.headers().get("retry-after").is_none());
    let v = assert_google_error(resp, 429, "RESOURCE_EXHAUSTED").await;
    assert_eq!(v["error"]["details"].as_array().unwrap().len(), 1);

    sim.add_fault(once(Fault::QuotaExhausted {
        retry_after_secs: Some(60),
    }));
    let resp = caller.post(m, &body).await;
    assert_eq!(resp.headers()["retry-after"], "60");
    let v = assert_google_error(resp, 429, "RESOURCE_EXHAUSTED").await;
    let d = &v["error"]["details"];
    assert_eq!(d[0]["@type"], "type.googleapis.com/google.rpc.QuotaFailure");
    assert_eq!(d[0]["violations"][0]["description"], "Daily quota exceeded");
    assert_eq!(d[1]["retryDelay"], "60s");

    sim.add_fault(once(Fault::ServerError(503)));
    let v = assert_google_error(caller.post(m, &body).await, 503, "UNAVAILABLE").await;
    assert_eq!(
        v["error"]["message"],
        "The service is currently unavailable."
    );
    sim.add_fault(once(Fault::ServerError(500)));
    assert_google_error(caller.post(m, &body).await, 500, "INTERNAL").await;

    sim.add_fault(once(Fault::BadRequest("nope".into())));
    let v = assert_google_error(caller.post(m, &body).await, 400, "INVALID_ARGUMENT").await;
    assert_eq!(v["error"]["message"], "nope");

    sim.add_fault(once(Fault::ChallengePage));
    let resp = caller.post(m, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    assert!(resp.text().await.unwrap().contains("<html"));

    sim.add_fault(once(Fault::UTokenChallenge));
    let resp = caller.post(m, &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(v["uToken"].as_str().unwrap().starts_with("AHxSimulated"));
    assert_eq!(v["redirectUrl"], "https://accounts.google.com/ServiceLogin");

    sim.add_fault(once(Fault::Raw {
        status: 418,
        content_type: "text/plain".into(),
        body: "teapot".into(),
        retry_after: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
    }));
    let resp = caller.post(m, &body).await;
    assert_eq!(resp.status(), 418);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(
        resp.headers()["retry-after"],
        "Wed, 21 Oct 2015 07:28:00 GMT"
    );
    assert_eq!(resp.text().await.unwrap(), "teapot");

    sim.add_fault(once(Fault::SlowFirstByte(Duration::from_millis(300))));
    let started = Instant::now();
    assert_eq!(caller.post(m, &body).await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // All one-shot rules are used up.
    assert_eq!(caller.post(m, &body).await.status(), 200);

    // QuotaInStream on U4.
    let session = caller.create_session().await;
    sim.add_fault(FaultRule::once(
        Endpoint::StreamAssist,
        Fault::QuotaInStream,
    ));
    let resp = caller
        .post("widgetStreamAssist", &caller.stream_request(&session, "q"))
        .await;
    assert_eq!(resp.status(), 200);
    let els = elements(&resp.text().await.unwrap());
    assert_eq!(els.len(), 1);
    assert_eq!(els[0]["error"]["code"], 429);
    assert_eq!(els[0]["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(els[0]["error"]["message"], "Quota exceeded for the day.");
    assert_eq!(
        els[0]["error"]["details"][0]["@type"],
        "type.googleapis.com/google.rpc.QuotaFailure"
    );

    // Faults on U1.
    sim.add_fault(FaultRule::once(Endpoint::GetOxsrf, Fault::ServerError(502)));
    let resp = caller
        .c
        .get(format!(
            "{}/auth/getoxsrf?csesidx={}",
            caller.base, caller.account.csesidx
        ))
        .header("cookie", format!("__Secure-C_SES={}", caller.account.c_ses))
        .send()
        .await
        .unwrap();
    assert_google_error(resp, 502, "UNAVAILABLE").await;
}

#[tokio::test]
async fn fault_rules_match_accounts_and_count_down() {
    let sim = sim_with(2).await;
    let a = Caller::new(&sim, SimAccount::demo(0)).await;
    let b = Caller::new(&sim, SimAccount::demo(1)).await;
    let body_a = a.envelope("createSessionRequest", json!({"session": {}}));
    let body_b = b.envelope("createSessionRequest", json!({"session": {}}));
    let m = "widgetCreateSession";

    sim.add_fault(
        FaultRule::always(Endpoint::CreateSession, Fault::ServerError(503))
            .for_account(&b.account.csesidx)
            .times(2),
    );
    sim.add_fault(FaultRule::once(
        Endpoint::CreateSession,
        Fault::ServerError(500),
    ));
    // a skips b's rule and hits the generic one.
    assert_eq!(a.post(m, &body_a).await.status(), 500);
    assert_eq!(a.post(m, &body_a).await.status(), 200);
    assert_eq!(b.post(m, &body_b).await.status(), 503);
    assert_eq!(b.post(m, &body_b).await.status(), 503);
    assert_eq!(b.post(m, &body_b).await.status(), 200);

    sim.add_fault(FaultRule::always(
        Endpoint::CreateSession,
        Fault::ServerError(504),
    ));
    for _ in 0..3 {
        assert_eq!(a.post(m, &body_a).await.status(), 504);
    }
    sim.clear_faults();
    assert_eq!(a.post(m, &body_a).await.status(), 200);
    let stats = sim.stats();
    assert_eq!(stats.calls[&Endpoint::CreateSession], 9);
}

// ---------------------------------------------------------------- U5 / U6

#[tokio::test]
async fn generated_files_round_trip_through_u5_and_u6() {
    let sim = sim_with(2).await;
    let caller = Caller::new(&sim, SimAccount::demo(0)).await;
    let stranger = Caller::new(&sim, SimAccount::demo(1)).await;
    let session = caller.create_session().await;
    let png: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let mp4 = b"....ftypmp42".to_vec();
    sim.set_answer(
        Answer::new()
            .text("Here is your fox.")
            .image("image/png", png.clone())
            .video("video/mp4", mp4.clone()),
    );
    let body = caller
        .post(
            "widgetStreamAssist",
            &caller.stream_request(&session, "draw"),
        )
        .await
        .text()
        .await
        .unwrap();
    let els = elements(&body);
    let full = els[0]["streamAssistResponse"]["sessionInfo"]["session"]
        .as_str()
        .unwrap()
        .to_string();
    let file = &content(&els[2])["file"];
    assert_eq!(file["mimeType"], "image/png");
    let file_id = file["fileId"].as_str().unwrap().to_string();
    let video_id = content(&els[3])["file"]["fileId"]
        .as_str()
        .unwrap()
        .to_string();

    for name in [session.clone(), full.clone()] {
        let list = caller.envelope(
            "listSessionFileMetadataRequest",
            json!({"name": name, "filter": "file_origin_type = AI_GENERATED"}),
        );
        let resp = caller.post("widgetListSessionFileMetadata", &list).await;
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        let meta = v["listSessionFileMetadataResponse"]["fileMetadata"]
            .as_array()
            .unwrap();
        assert_eq!(meta.len(), 2);
        let m = meta
            .iter()
            .find(|m| m["fileId"] == file_id.as_str())
            .unwrap();
        assert_eq!(m["session"], full.as_str());
        assert_eq!(m["mimeType"], "image/png");
        assert_eq!(m["fileOriginType"], "AI_GENERATED");
        assert_eq!(m["byteSize"], "3000");
        assert!(m["downloadUri"].as_str().unwrap().contains(&file_id));
    }
    let bad_filter = caller.envelope(
        "listSessionFileMetadataRequest",
        json!({"name": session, "filter": ""}),
    );
    expect_400(
        &caller,
        "widgetListSessionFileMetadata",
        &bad_filter,
        "filter",
    )
    .await;

    for prefix in ["/download/v1alpha/", "/v1alpha/"] {
        let url = format!(
            "{}{prefix}{full}:downloadFile?fileId={file_id}&alt=media",
            caller.base
        );
        let resp = caller
            .c
            .get(&url)
            .header("authorization", format!("Bearer {}", caller.jwt))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(resp.headers()["content-type"], "image/png");
        assert_eq!(resp.bytes().await.unwrap().to_vec(), png);

        // Another account, an unknown file, or no JWT.
        let resp = stranger
            .c
            .get(&url)
            .header("authorization", format!("Bearer {}", stranger.jwt))
            .send()
            .await
            .unwrap();
        assert_google_error(resp, 404, "NOT_FOUND").await;
        let resp = caller.c.get(&url).send().await.unwrap();
        assert_google_error(resp, 401, "UNAUTHENTICATED").await;
        let missing = url.replace(&file_id, "gen-nope");
        let resp = caller
            .c
            .get(&missing)
            .header("authorization", format!("Bearer {}", caller.jwt))
            .send()
            .await
            .unwrap();
        assert_google_error(resp, 404, "NOT_FOUND").await;
    }
    let video_url = format!(
        "{}/download/v1alpha/{full}:downloadFile?fileId={video_id}&alt=media",
        caller.base
    );
    let resp = caller
        .c
        .get(&video_url)
        .header("authorization", format!("Bearer {}", caller.jwt))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "video/mp4");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), mp4);
    assert_eq!(sim.requests(Endpoint::Download).len(), 9);
}

// ---------------------------------------------------------------- misc

#[tokio::test]
async fn unknown_routes_get_google_errors() {
    let sim = sim_with(1).await;
    let c = client();
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/v1alpha/locations/global/widgetStreamAssist"),
        ("POST", "/v1alpha/locations/global/widgetDeleteSession"),
        ("POST", "/auth/getoxsrf"),
    ] {
        let resp = c
            .request(method.parse().unwrap(), format!("{}{path}", sim.base_url()))
            .send()
            .await
            .unwrap();
        assert_google_error(resp, 404, "NOT_FOUND").await;
    }
    assert!(sim.stats().calls.is_empty());
}

#[test]
fn demo_accounts_are_deterministic() {
    let a = SimAccount::demo(3);
    let b = SimAccount::demo(3);
    assert_eq!(a.csesidx, b.csesidx);
    assert_eq!(a.c_ses, b.c_ses);
    assert_eq!(a.config_id, b.config_id);
    assert_eq!(a.email, "demo3@example.com");
    assert!(a.c_ses.starts_with("demo-c-ses-3-"));
    assert!(a.csesidx.bytes().all(|c| c.is_ascii_digit()));
    assert_ne!(a.csesidx, SimAccount::demo(4).csesidx);
    assert_eq!(a.config_id.len(), 36);
    assert!(
        a.config_id
            .bytes()
            .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    );
    assert!(a.authorization.is_none());

    let mut with_oses = a.clone();
    with_oses.c_oses = Some("oses".into());
    let j = with_oses.account_file_json();
    assert_eq!(j["email"], "demo3@example.com");
    assert_eq!(j["authorization"], "");
    assert_eq!(j["configId"], a.config_id.as_str());
    assert_eq!(j["csesidx"], a.csesidx.as_str());
    assert_eq!(j["cookies"][0]["name"], "__Secure-C_SES");
    assert_eq!(j["cookies"][0]["value"], a.c_ses.as_str());
    assert_eq!(j["cookies"][0]["domain"], ".gemini.google");
    assert_eq!(j["cookies"][1]["name"], "__Host-C_OSES");
    assert_eq!(
        j["cookie_string"],
        format!("__Secure-C_SES={}; __Host-C_OSES=oses", a.c_ses)
    );
    let ts = j["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 20);
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T');
    assert!(j["fullName"].is_string());
}

#[test]
fn starts_inside_an_actix_system() {
    actix_web::rt::System::new().block_on(async {
        let sim = sim_with(1).await;
        let caller = Caller::new(&sim, SimAccount::demo(0)).await;
        let session = caller.create_session().await;
        let resp = caller
            .post("widgetStreamAssist", &caller.stream_request(&session, "hi"))
            .await;
        assert_eq!(resp.status(), 200);
        assert!(resp.text().await.unwrap().ends_with(']'));
        sim.shutdown().await;
    });
}
