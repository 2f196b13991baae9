//! Every scripted upstream failure ends with the documented status and body, within a bound.

use std::time::Duration;

use business2api_tests::{
    Answer, Endpoint, Fault, FaultRule, SseReader, TestApp, TestOptions, Wire, chat_body,
    check_openai_stream, collect_delta, spawn_app, spawn_app_with,
};
use serde_json::{Value, json};

/// No request may take longer than this, whatever the upstream does.
const BOUND: Duration = Duration::from_secs(10);

async fn chat_bounded(app: &TestApp, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = tokio::time::timeout(BOUND, app.chat(body))
        .await
        .expect("request ends within its bound");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = tokio::time::timeout(BOUND, response.text())
        .await
        .unwrap()
        .unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is JSON: {text}"));
    (status, headers, v)
}

fn assert_openai_error(v: &Value, kind: &str, code: Option<&str>) {
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert_eq!(e["type"], kind, "{v}");
    assert!(e.get("param").is_some(), "{v}");
    match code {
        Some(c) => assert_eq!(e["code"], c, "{v}"),
        None => assert!(e.get("code").is_some()),
    }
}

/// Runs `fault` on `endpoint` for every call, once with a streamed and once with a
/// non-streamed request, each on a fresh app (a failure changes the account's state).
async fn both_modes(fault: Fault, endpoint: Endpoint, status: u16, kind: &str, code: &str) {
    for stream in [false, true] {
        let app = spawn_app().await;
        app.sim
            .add_fault(FaultRule::always(endpoint, fault.clone()));
        let (s, headers, v) = chat_bounded(&app, chat_body("gemini-2.5-flash", "x", stream)).await;
        assert_eq!(s, status, "stream={stream}: {v}");
        assert_openai_error(&v, kind, Some(code));
        if status == 429 || status == 503 {
            assert!(headers.contains_key("retry-after"), "stream={stream}");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn dead_cookies_on_u1_mean_no_usable_account() {
    both_modes(
        Fault::Unauthorized,
        Endpoint::GetOxsrf,
        503,
        "server_error",
        "upstream_unavailable",
    )
    .await;
    let app = spawn_app().await;
    app.sim
        .add_fault(FaultRule::always(Endpoint::GetOxsrf, Fault::Unauthorized));
    let (s, _, _) = chat_bounded(&app, chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(s, 503);
    // The account is out of rotation (needs a re-login), not deleted.
    let health: Value = app.get_json("/health").await;
    assert_eq!(health["ready"], 0);
    assert_eq!(health["accounts"], 1);
    assert!(
        app.data_dir
            .path()
            .join(format!("{}.json", app.accounts[0].email))
            .exists()
    );
    app.stop().await;
}

#[tokio::test]
async fn an_expired_token_on_u4_moves_the_request_to_another_account() {
    let app = spawn_app_with(TestOptions::default().accounts(2)).await;
    app.sim
        .add_fault(FaultRule::once(Endpoint::StreamAssist, Fault::Unauthorized));
    // Whichever account goes first is refused; the other answers.
    let (s, _, v) = chat_bounded(&app, chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(s, 200, "{v}");
    // The refused account mints a new token next time instead of reusing the refused one.
    let (s, _, _) = chat_bounded(&app, chat_body("gemini-2.5-flash", "y", false)).await;
    assert_eq!(s, 200);
    let (s, _, _) = chat_bounded(&app, chat_body("gemini-2.5-flash", "z", false)).await;
    assert_eq!(s, 200);
    assert_eq!(
        app.sim.requests(Endpoint::GetOxsrf).len(),
        3,
        "two first mints plus one re-mint"
    );
    app.stop().await;
}

#[tokio::test]
async fn expired_token_with_a_single_account_is_503() {
    both_modes(
        Fault::Unauthorized,
        Endpoint::StreamAssist,
        503,
        "server_error",
        "upstream_unavailable",
    )
    .await;
}

#[tokio::test]
async fn rate_limit_passes_the_upstream_retry_after() {
    both_modes(
        Fault::RateLimited {
            retry_after_secs: Some(7),
        },
        Endpoint::StreamAssist,
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
    )
    .await;
    let app = spawn_app().await;
    app.sim.add_fault(FaultRule::always(
        Endpoint::StreamAssist,
        Fault::RateLimited {
            retry_after_secs: Some(7),
        },
    ));
    let (_, headers, _) = chat_bounded(&app, chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(headers["retry-after"], "7");
    // The account now cools down: the next request is refused at once with the remaining time.
    let (s, headers, v) = chat_bounded(&app, chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(s, 503, "{v}");
    assert_openai_error(&v, "server_error", Some("no_account_available"));
    let after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=7).contains(&after), "{after}");
    assert_eq!(
        app.sim.requests(Endpoint::StreamAssist).len(),
        1,
        "the cooling account was not used"
    );
    app.stop().await;
}

#[tokio::test]
async fn rate_limit_on_one_account_fails_over_to_another() {
    let app = spawn_app_with(TestOptions::default().accounts(2)).await;
    let limited = app.accounts[0].csesidx.clone();
    app.sim.add_fault(
        FaultRule::always(
            Endpoint::StreamAssist,
            Fault::RateLimited {
                retry_after_secs: Some(30),
            },
        )
        .for_account(&limited),
    );
    for _ in 0..4 {
        let response =
            tokio::time::timeout(BOUND, app.chat(chat_body("gemini-2.5-flash", "x", true)))
                .await
                .unwrap();
        assert_eq!(response.status(), 200);
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
        assert!(collect_delta(&chunks, "content").contains("You asked"));
    }
    let limited_calls = app
        .sim
        .requests(Endpoint::StreamAssist)
        .iter()
        .filter(|r| r.csesidx.as_deref() == Some(limited.as_str()))
        .count();
    assert!(
        limited_calls <= 1,
        "a 429'd account is not chosen again during its cooldown ({limited_calls})"
    );
    app.stop().await;
}

#[tokio::test]
async fn quota_exhausted_in_the_answer_body_is_429_insufficient_quota() {
    both_modes(
        Fault::QuotaInStream,
        Endpoint::StreamAssist,
        429,
        "insufficient_quota",
        "insufficient_quota",
    )
    .await;
}

#[tokio::test]
async fn quota_exhausted_status_is_429_insufficient_quota() {
    both_modes(
        Fault::QuotaExhausted {
            retry_after_secs: None,
        },
        Endpoint::StreamAssist,
        429,
        "insufficient_quota",
        "insufficient_quota",
    )
    .await;
}

#[tokio::test]
async fn a_challenge_page_is_503() {
    both_modes(
        Fault::ChallengePage,
        Endpoint::StreamAssist,
        503,
        "server_error",
        "upstream_unavailable",
    )
    .await;
    both_modes(
        Fault::UTokenChallenge,
        Endpoint::CreateSession,
        503,
        "server_error",
        "upstream_unavailable",
    )
    .await;
}

#[tokio::test]
async fn upstream_5xx_is_502() {
    both_modes(
        Fault::ServerError(503),
        Endpoint::StreamAssist,
        502,
        "server_error",
        "upstream_error",
    )
    .await;
    both_modes(
        Fault::ServerError(500),
        Endpoint::CreateSession,
        502,
        "server_error",
        "upstream_error",
    )
    .await;
}

#[tokio::test]
async fn an_upstream_bad_request_is_400_and_not_retried_elsewhere() {
    let app = spawn_app_with(TestOptions::default().accounts(3)).await;
    app.sim.add_fault(FaultRule::always(
        Endpoint::StreamAssist,
        Fault::BadRequest("file type not supported".into()),
    ));
    let (s, _, v) = chat_bounded(&app, chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(s, 400);
    assert_openai_error(&v, "invalid_request_error", None);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("file type not supported")
    );
    assert_eq!(app.sim.requests(Endpoint::StreamAssist).len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_slow_first_byte_times_out_with_504() {
    let app = spawn_app_with(TestOptions::default().config(json!({
        "gemini_business": {"stream_first_byte_timeout_sec": 1}, "http": {"stream_keepalive_ms": 5000}
    })))
    .await;
    app.sim.add_fault(FaultRule::always(
        Endpoint::StreamAssist,
        Fault::SlowFirstByte(Duration::from_secs(4)),
    ));
    let started = std::time::Instant::now();
    let (s, _, v) = chat_bounded(&app, chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(s, 504, "{v}");
    assert_openai_error(&v, "server_error", Some("upstream_timeout"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_connection_cut_mid_answer_ends_the_stream_with_an_error_chunk() {
    let app = spawn_app().await;
    app.sim
        .set_answer(Answer::new().text("one ").text("two ").text("three"));
    app.sim.add_fault(FaultRule::always(
        Endpoint::StreamAssist,
        Fault::CutAfter(2),
    ));
    let response = tokio::time::timeout(BOUND, app.chat(chat_body("gemini-2.5-flash", "x", true)))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let payloads = tokio::time::timeout(
        BOUND,
        SseReader::checked(
            response,
            Wire::ChatCompletions {
                include_usage: false,
            },
        )
        .rest(),
    )
    .await
    .unwrap();
    let chunks = check_openai_stream(&payloads, false);
    assert_eq!(collect_delta(&chunks, "content"), "one two ");
    let last = chunks.last().unwrap();
    assert_openai_error(last, "server_error", Some("upstream_error"));

    app.stop().await;

    // Not streamed, nothing reached the client yet: the failure is a plain 502.
    let app = spawn_app().await;
    app.sim.add_fault(FaultRule::always(
        Endpoint::StreamAssist,
        Fault::CutAfter(2),
    ));
    let (s, _, v) = chat_bounded(&app, chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(s, 502, "{v}");
    app.stop().await;
}

#[tokio::test]
async fn a_cut_on_one_account_is_retried_on_another_when_nothing_was_sent() {
    let app = spawn_app_with(TestOptions::default().accounts(2)).await;
    app.sim
        .set_answer(Answer::new().text("whole ").text("answer"));
    app.sim
        .add_fault(FaultRule::once(Endpoint::StreamAssist, Fault::CutAfter(1)));
    let (s, _, v) = chat_bounded(&app, chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "whole answer");
    app.stop().await;
}

#[tokio::test]
async fn no_accounts_means_503_with_retry_after() {
    let app = spawn_app_with(TestOptions::default().accounts(0)).await;
    for stream in [false, true] {
        let (s, headers, v) = chat_bounded(&app, chat_body("gemini-2.5-flash", "x", stream)).await;
        assert_eq!(s, 503);
        assert_openai_error(&v, "server_error", Some("no_account_available"));
        assert!(
            headers["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 0
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_upstream_call() {
    let app = spawn_app().await;
    let cases: Vec<(Value, u16, Option<&str>, Option<&str>)> = vec![
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
            404,
            Some("model_not_found"),
            Some("model"),
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            400,
            None,
            Some("model"),
        ),
        (
            json!({"model": "gemini-2.5-flash", "messages": []}),
            400,
            None,
            Some("messages"),
        ),
        (
            json!({"model": "gemini-2.5-flash"}),
            400,
            None,
            Some("messages"),
        ),
        (
            json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}),
            // No tools to call.
            400,
            None,
            Some("tool_choice"),
        ),
    ];
    for (body, status, code, param) in cases {
        let (s, _, v) = chat_bounded(&app, body.clone()).await;
        assert_eq!(s, status, "{body} -> {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        if let Some(code) = code {
            assert_eq!(v["error"]["code"], code);
        }
        assert_eq!(v["error"]["param"].as_str(), param, "{v}");
    }
    // Malformed JSON.
    let r = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(business2api_tests::TEST_KEY)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_openai_error(&v, "invalid_request_error", None);
    assert_eq!(app.sim.requests(Endpoint::StreamAssist).len(), 0);
    assert_eq!(app.sim.requests(Endpoint::GetOxsrf).len(), 0);
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let app =
        spawn_app_with(TestOptions::default().config(json!({"http": {"max_request_body_mb": 1}})))
            .await;
    let big = "a".repeat(1_100_000);
    let (s, _, v) = chat_bounded(&app, chat_body("gemini-2.5-flash", &big, false)).await;
    assert_eq!(s, 413);
    assert_openai_error(&v, "invalid_request_error", Some("request_too_large"));
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_route_is_an_openai_shaped_404() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/v1/nothing-here"))
        .bearer_auth(business2api_tests::TEST_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_openai_error(&v, "invalid_request_error", Some("not_found"));
    app.stop().await;
}

#[tokio::test]
async fn an_empty_answer_is_retried_and_then_reported() {
    let app = spawn_app().await;
    app.sim.set_answer(Answer::new());
    let (s, _, v) = chat_bounded(&app, chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(s, 502, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("empty answer")
    );
    app.stop().await;
}
