//! `GET /metrics` through the real wiring: known requests through every chat dialect (streamed
//! and not, refused, failing upstream), then a scrape parsed by a Prometheus text-format parser
//! (`prometheus-parse`), whose counters must agree exactly with the requests made, whose
//! histograms count the streamed answers, and whose gauges agree with the admin API.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use business2api_tests::{
    Endpoint, Fault, FaultRule, TEST_KEY, TestApp, TestOptions, Wire, chat_body, flow_app,
    read_stream, spawn_app_with,
};
use prometheus_parse::{Sample, Scrape, Value as Parsed};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "admin-key-for-metrics-0123456789";
const MODEL: &str = "gemini-2.5-flash";
const POISON: &str = "POISON-PROMPT-FOR-METRICS";
const TEXT_0_0_4: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn app(extra: Value) -> TestApp {
    let mut config = json!({ "admin_keys": [ADMIN_KEY] });
    business2api_tests::merge(&mut config, extra);
    spawn_app_with(TestOptions::default().accounts(2).config(config)).await
}

/// The raw scrape: status, content type, body.
async fn get_metrics(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
) -> (u16, String, String) {
    let mut request = client.get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.expect("the gateway answers");
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, content_type, r.text().await.unwrap())
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("a valid exposition")
}

async fn scrape(app: &TestApp) -> (Scrape, String) {
    let (status, content_type, text) =
        get_metrics(&app.client, &app.url("/metrics"), Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, TEXT_0_0_4);
    (parse(&text), text)
}

fn samples<'a>(scrape: &'a Scrape, metric: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
    scrape.samples.iter().filter(move |s| s.metric == metric)
}

fn scalar(sample: &Sample) -> f64 {
    match sample.value {
        Parsed::Counter(v) | Parsed::Gauge(v) | Parsed::Untyped(v) => v,
        _ => panic!("not a scalar: {sample:?}"),
    }
}

/// The value of `metric` with exactly these labels (`None` when there is no such series).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(scrape, metric)
        .find(|s| {
            s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .map(scalar)
}

/// Every series of a counter family, by its labels (sorted `k=v` pairs), with value > 0.
fn series(scrape: &Scrape, metric: &str) -> BTreeMap<String, f64> {
    samples(scrape, metric)
        .map(|s| {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            (labels.join(","), scalar(s))
        })
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// A histogram's observation count for `dialect` (its `+Inf` bucket).
fn histogram_count(scrape: &Scrape, metric: &str, dialect: &str) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == metric
                && s.labels.get("dialect") == Some(dialect)
                && matches!(s.value, Parsed::Histogram(_))
        })
        .unwrap_or_else(|| panic!("no histogram {metric}{{dialect={dialect}}}"));
    let Parsed::Histogram(buckets) = &sample.value else {
        unreachable!()
    };
    buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .map(|b| b.count)
        .expect("a +Inf bucket")
}

fn key(dialect: &str, model: &str, status: u16) -> String {
    format!("dialect={dialect},model={model},status={status}")
}

/// One API request; returns its status (streamed bodies are read to their end through the
/// dialect's checker).
async fn call(app: &TestApp, dialect: &str, stream: bool, text: &str, model: &str) -> u16 {
    let (path, body, wire) = match dialect {
        "chat" => (
            "/v1/chat/completions".to_owned(),
            chat_body(model, text, stream),
            Wire::ChatCompletions {
                include_usage: false,
            },
        ),
        "responses" => (
            "/v1/responses".to_owned(),
            json!({"model": model, "input": text, "stream": stream}),
            Wire::Responses,
        ),
        "messages" => (
            "/v1/messages".to_owned(),
            json!({"model": model, "max_tokens": 64, "stream": stream,
                   "messages": [{"role": "user", "content": text}]}),
            Wire::Anthropic,
        ),
        _ => (
            if stream {
                format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
            } else {
                format!("/v1beta/models/{model}:generateContent")
            },
            json!({"contents": [{"role": "user", "parts": [{"text": text}]}]}),
            Wire::GeminiSse,
        ),
    };
    let r = app
        .client
        .post(app.url(&path))
        .bearer_auth(TEST_KEY)
        .header("x-goog-api-key", TEST_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .expect("the gateway answers");
    let status = r.status().as_u16();
    if stream && status == 200 {
        read_stream(r, wire).await;
    } else {
        let _ = r.bytes().await;
    }
    status
}

/// Scrapes until `done` holds (the last frame of a stream is counted as the body ends, which
/// may be a moment after the client read it), at most 10 s.
async fn scrape_until(app: &TestApp, done: impl Fn(&Scrape) -> bool) -> (Scrape, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (scrape, text) = scrape(app).await;
        if done(&scrape) || Instant::now() > deadline {
            return (scrape, text);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_histograms_agree_with_the_requests_made() {
    let app = app(json!({})).await;
    // Every request through every dialect, streamed and not.
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    let mut streamed: BTreeMap<&str, f64> = BTreeMap::new();
    let mut answered: BTreeMap<&str, f64> = BTreeMap::new();
    for dialect in ["chat", "responses", "messages", "generate_content"] {
        for stream in [false, true] {
            let status = call(&app, dialect, stream, "hello", MODEL).await;
            assert_eq!(status, 200, "{dialect} stream={stream}");
            *expected.entry(key(dialect, MODEL, 200)).or_default() += 1.0;
            *answered.entry(dialect).or_default() += 1.0;
            if stream {
                *streamed.entry(dialect).or_default() += 1.0;
            }
        }
    }
    // The upstream refuses a request (no failover, no account touched): 400.
    app.sim.add_fault(
        FaultRule::always(
            Endpoint::StreamAssist,
            Fault::BadRequest("the prompt is refused".into()),
        )
        .when_prompt_contains(POISON),
    );
    let status = call(&app, "chat", false, POISON, MODEL).await;
    assert_eq!(status, 400);
    *expected.entry(key("chat", MODEL, 400)).or_default() += 1.0;
    // One account rate limited once: the other answers; the first cools for its text capability.
    app.sim.add_fault(
        FaultRule::once(
            Endpoint::StreamAssist,
            Fault::RateLimited {
                retry_after_secs: Some(600),
            },
        )
        .for_account(&app.accounts[0].csesidx),
    );
    for _ in 0..2 {
        let status = call(&app, "messages", true, "again", MODEL).await;
        assert_eq!(status, 200);
        *expected.entry(key("messages", MODEL, 200)).or_default() += 1.0;
        *answered.entry("messages").or_default() += 1.0;
        *streamed.entry("messages").or_default() += 1.0;
    }
    // A model the registry does not know, and no key at all: `other`.
    let status = call(&app, "chat", false, "x", "no-such-model-user@example.com").await;
    assert_eq!(status, 404);
    *expected.entry(key("chat", "other", 404)).or_default() += 1.0;
    let r = app
        .client
        .post(app.url("/v1/responses"))
        .json(&json!({"model": MODEL, "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    *expected.entry(key("responses", "other", 401)).or_default() += 1.0;
    // Routes that are not API calls are not counted.
    let r = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth(TEST_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let total_answers: f64 = answered.values().sum();
    let (scrape, text) = scrape_until(&app, |s| {
        answered
            .iter()
            .all(|(d, n)| histogram_count(s, "business2api_gateway_overhead_seconds", d) == *n)
    })
    .await;

    // Requests: exactly the requests made, per dialect, model and status.
    assert_eq!(
        series(&scrape, "business2api_requests_total"),
        expected,
        "{text}"
    );

    // Histograms: time to first token counts the streamed answers; overhead every answer.
    for dialect in ["chat", "responses", "messages", "generate_content"] {
        assert_eq!(
            histogram_count(&scrape, "business2api_time_to_first_token_seconds", dialect),
            streamed.get(dialect).copied().unwrap_or(0.0),
            "ttft {dialect}: {text}"
        );
        assert_eq!(
            histogram_count(&scrape, "business2api_gateway_overhead_seconds", dialect),
            answered.get(dialect).copied().unwrap_or(0.0),
            "overhead {dialect}: {text}"
        );
    }
    assert!(total_answers >= 10.0);
    // Images and videos have handlers of their own: counted, not timed.
    assert!(
        !scrape
            .samples
            .iter()
            .any(|s| s.metric.starts_with("business2api_time_to_first_token")
                && s.labels.get("dialect") == Some("images")),
        "{text}"
    );

    // Upstream calls: exactly what the simulator received, per call.
    let stats = app.sim.stats();
    for (endpoint, code) in [
        (Endpoint::GetOxsrf, "U1"),
        (Endpoint::CreateSession, "U2"),
        (Endpoint::StreamAssist, "U4"),
    ] {
        let sent = stats.calls.get(&endpoint).copied().unwrap_or(0) as f64;
        assert!(sent > 0.0, "{endpoint:?}");
        assert_eq!(
            value(
                &scrape,
                "business2api_upstream_requests_total",
                &[("upstream", "gemini_business"), ("call", code)]
            ),
            Some(sent),
            "{code}: {text}"
        );
    }
    // Upstream errors: the refusal and the rate limit, nothing else.
    assert_eq!(
        series(&scrape, "business2api_upstream_errors_total"),
        BTreeMap::from([
            ("kind=bad_request,upstream=gemini_business".to_owned(), 1.0),
            ("kind=rate_limited,upstream=gemini_business".to_owned(), 1.0),
        ]),
        "{text}"
    );
    // Token mints: one per account, all successful.
    assert_eq!(
        series(&scrape, "business2api_token_refreshes_total"),
        BTreeMap::from([(
            "outcome=success,upstream=gemini_business".to_owned(),
            stats.calls.get(&Endpoint::GetOxsrf).copied().unwrap_or(0) as f64
        )]),
        "{text}"
    );

    // Accounts: every state present and agreeing with /admin/accounts.
    let accounts = app.get_json_as(ADMIN_KEY, "/admin/accounts").await;
    let accounts = accounts["accounts"].as_array().unwrap().clone();
    for state in [
        "ready",
        "cooling_down",
        "refreshing_token",
        "needs_relogin",
        "disabled",
    ] {
        let n = accounts.iter().filter(|a| a["state"] == state).count() as f64;
        assert_eq!(
            value(&scrape, "business2api_accounts", &[("state", state)]),
            Some(n),
            "{state}: {text}"
        );
    }
    let cooling_text: Vec<&Value> = accounts
        .iter()
        .filter(|a| !a["cooldowns"]["text"].is_null())
        .collect();
    assert_eq!(cooling_text.len(), 1, "{accounts:?}");
    assert_eq!(
        value(
            &scrape,
            "business2api_accounts_cooling_down",
            &[("capability", "text")]
        ),
        Some(1.0),
        "{text}"
    );
    for capability in ["image", "video"] {
        assert_eq!(
            value(
                &scrape,
                "business2api_accounts_cooling_down",
                &[("capability", capability)]
            ),
            Some(0.0),
            "{text}"
        );
    }
    let until_ms = cooling_text[0]["cooldowns"]["text"]["until"]
        .as_f64()
        .unwrap();
    assert_eq!(
        value(
            &scrape,
            "business2api_account_cooldown_end_max_timestamp_seconds",
            &[("capability", "text")]
        ),
        Some((until_ms / 1000.0).ceil()),
        "{text}"
    );

    // Workers, tasks, Flow tokens, proxies, process: present.
    assert_eq!(
        value(&scrape, "business2api_workers_connected", &[]),
        Some(1.0),
        "{text}"
    );
    for state in ["queued", "leased"] {
        assert!(value(&scrape, "business2api_worker_tasks", &[("state", state)]).is_some());
    }
    for state in ["active", "cooling", "failing", "disabled"] {
        assert_eq!(
            value(&scrape, "business2api_flow_tokens", &[("state", state)]),
            Some(0.0)
        );
    }
    for state in ["healthy", "quarantined"] {
        assert_eq!(
            value(&scrape, "business2api_egress_proxies", &[("state", state)]),
            Some(0.0)
        );
    }
    assert!(value(&scrape, "process_start_time_seconds", &[]).unwrap() > 1.7e9);
    assert!(samples(&scrape, "business2api_build_info").any(|s| s.labels.get("version").is_some()));

    // Nothing secret or personal in the exposition (the numeric `csesidx` is not checked: a
    // run of digits can occur inside any sample value).
    for account in &app.accounts {
        assert!(!text.contains(&account.email), "{text}");
        assert!(!text.contains(&account.c_ses), "{text}");
    }
    for secret in [TEST_KEY, ADMIN_KEY, "example.com", "@"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(!text.contains("# EOF"), "0.0.4 has no EOF marker");
    app.stop().await;
}

#[tokio::test]
async fn the_main_port_requires_the_admin_key() {
    let app = app(json!({})).await;
    let url = app.url("/metrics");
    let (status, _, _) = get_metrics(&app.client, &url, None).await;
    assert_eq!(status, 401);
    let (status, _, _) = get_metrics(&app.client, &url, Some(TEST_KEY)).await;
    assert_eq!(status, 401, "an API key is not an admin key");
    let (status, content_type, text) = get_metrics(&app.client, &url, Some(ADMIN_KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, TEXT_0_0_4);
    parse(&text);
    // OpenMetrics when the scraper asks for it, from the crate's own encoder.
    let r = app
        .client
        .get(&url)
        .header("x-admin-key", ADMIN_KEY)
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));
    assert_eq!(app.metrics_address, None);
    app.stop().await;

    // No admin key configured: the admin routes and /metrics are off (403).
    let open = spawn_app_with(TestOptions::default()).await;
    let (status, _, _) = get_metrics(&open.client, &open.url("/metrics"), Some(TEST_KEY)).await;
    assert_eq!(status, 403);
    open.stop().await;
}

#[tokio::test]
async fn a_separate_listener_serves_without_a_key() {
    let app = app(json!({ "metrics": { "listen_addr": "127.0.0.1:0" } })).await;
    let base = app.metrics_address.clone().expect("a metrics listener");
    assert_ne!(base, app.address);
    let (status, content_type, text) =
        get_metrics(&app.client, &format!("{base}/metrics"), None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, TEXT_0_0_4);
    let scrape = parse(&text);
    assert_eq!(
        value(&scrape, "business2api_accounts", &[("state", "ready")]),
        Some(2.0)
    );
    // Only /metrics there.
    for path in ["/admin/accounts", "/v1/models", "/health"] {
        let (status, _, _) =
            get_metrics(&app.client, &format!("{base}{path}"), Some(ADMIN_KEY)).await;
        assert_eq!(status, 404, "{path}");
    }
    // The main port still requires the admin key.
    let (status, _, _) = get_metrics(&app.client, &app.url("/metrics"), None).await;
    assert_eq!(status, 401);
    let (status, _, _) = get_metrics(&app.client, &app.url("/metrics"), Some(ADMIN_KEY)).await;
    assert_eq!(status, 200);
    app.stop().await;
    // The listener stops with the gateway.
    assert!(app_gone(&format!("{base}/metrics")).await);
}

async fn app_gone(url: &str) -> bool {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..100 {
        if client.get(url).send().await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn flow_tokens_and_calls_are_counted() {
    let (app, _sim) = flow_app(&["session-token-metrics-1", "session-token-metrics-2"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (scrape, text) = loop {
        let (status, _, text) = get_metrics(
            &app.client,
            &app.url("/metrics"),
            Some(business2api_tests::FLOW_ADMIN_KEY),
        )
        .await;
        assert_eq!(status, 200);
        let scrape = parse(&text);
        if value(&scrape, "business2api_flow_tokens", &[("state", "active")]) == Some(2.0)
            || Instant::now() > deadline
        {
            break (scrape, text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        value(&scrape, "business2api_flow_tokens", &[("state", "active")]),
        Some(2.0),
        "{text}"
    );
    let refreshed = value(
        &scrape,
        "business2api_token_refreshes_total",
        &[("upstream", "flow"), ("outcome", "success")],
    )
    .unwrap_or(0.0);
    assert!(refreshed >= 2.0, "{text}");
    assert_eq!(
        value(
            &scrape,
            "business2api_upstream_requests_total",
            &[("upstream", "flow"), ("call", "session")]
        ),
        Some(refreshed),
        "{text}"
    );
    assert!(!text.contains("session-token-metrics"), "{text}");
    app.stop().await;
}
