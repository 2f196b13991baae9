//! Usage statistics (`/admin/stats`, `/admin/ip`) and named API keys with limits
//! (`/admin/keys`), through the real wiring.

use std::net::IpAddr;

use business2api_tests::{TEST_KEY, TestOptions, chat_body, spawn_app_with, start_app};
use futures_util::StreamExt as _;
use serde_json::{Value, json};

const ADMIN: &str = "admin-key-usage-0123456789";
const MODEL: &str = "gemini-2.5-flash";

fn options() -> TestOptions {
    TestOptions::default().config(json!({ "admin_keys": [ADMIN] }))
}

/// The request of `dialect` that chats with `text`, sent with `key`.
fn chat_in(
    app: &business2api_tests::TestApp,
    dialect: &str,
    key: &str,
    model: &str,
) -> reqwest::RequestBuilder {
    let messages = json!([{ "role": "user", "content": "hello there" }]);
    match dialect {
        "openai" => app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({ "model": model, "messages": messages })),
        "responses" => app
            .client
            .post(app.url("/v1/responses"))
            .bearer_auth(key)
            .json(&json!({ "model": model, "input": "hello there" })),
        "anthropic" => app
            .client
            .post(app.url("/v1/messages"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({ "model": model, "max_tokens": 100, "messages": messages })),
        "gemini" => app
            .client
            .post(app.url(&format!("/v1beta/models/{model}:generateContent")))
            .header("x-goog-api-key", key)
            .json(
                &json!({ "contents": [{ "role": "user", "parts": [{ "text": "hello there" }] }] }),
            ),
        other => panic!("no dialect {other}"),
    }
}

/// Checks that `body` is `dialect`'s error shape of `status`.
fn assert_dialect_error(dialect: &str, status: u16, body: &Value) {
    match dialect {
        "openai" | "responses" => {
            let kind = body["error"]["type"].as_str().unwrap_or_default();
            let want = if status == 429 {
                "rate_limit_error"
            } else {
                "permission_error"
            };
            assert_eq!(kind, want, "{body}");
        }
        "anthropic" => {
            assert_eq!(body["type"], "error", "{body}");
            let want = if status == 429 {
                "rate_limit_error"
            } else {
                "permission_error"
            };
            assert_eq!(body["error"]["type"], want, "{body}");
        }
        "gemini" => {
            assert_eq!(body["error"]["code"], status, "{body}");
            let want = if status == 429 {
                "RESOURCE_EXHAUSTED"
            } else {
                "PERMISSION_DENIED"
            };
            assert_eq!(body["error"]["status"], want, "{body}");
        }
        _ => unreachable!(),
    }
    let message = match dialect {
        "gemini" | "openai" | "responses" | "anthropic" => body["error"]["message"].as_str(),
        _ => None,
    };
    assert!(message.is_some_and(|m| !m.is_empty()), "{body}");
}

async fn create_key(app: &business2api_tests::TestApp, spec: Value) -> (String, String) {
    let (status, body) = app.post_json_as(ADMIN, "/admin/keys", &spec).await;
    assert_eq!(status, 201, "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();
    (body["key"]["id"].as_str().unwrap().to_owned(), secret)
}

#[tokio::test]
async fn stats_count_every_request_with_its_tokens_model_key_and_client() {
    let app = spawn_app_with(options()).await;
    let mut input = 0;
    let mut output = 0;
    for _ in 0..2 {
        let r = app.chat(chat_body(MODEL, "hello there", false)).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        input += body["usage"]["prompt_tokens"].as_u64().unwrap();
        output += body["usage"]["completion_tokens"].as_u64().unwrap();
    }
    // A streamed answer, read to its end.
    let r = app.chat(chat_body(MODEL, "hello there", true)).await;
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
    // Another dialect, and a refused request (unknown model).
    let r = chat_in(&app, "anthropic", TEST_KEY, MODEL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
    let r = chat_in(&app, "openai", TEST_KEY, "no-such-model")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // GETs are not requests the statistics count.
    let _ = app.get_json_as(TEST_KEY, "/v1/models").await;

    let stats = app.get_json_as(ADMIN, "/admin/stats").await;
    assert_eq!(stats["total_requests"], 5, "{stats}");
    assert_eq!(stats["success_requests"], 4);
    assert_eq!(stats["failed_requests"], 1);
    assert_eq!(stats["success_rate"], "80.00%");
    let model = &stats["models"][MODEL];
    assert_eq!(model["requests"], 4, "{stats}");
    assert_eq!(model["success"], 4);
    assert!(stats["models"].get("no-such-model").is_none(), "{stats}");
    // The two non-streamed answers' usage is counted exactly; the others add to it.
    let total_in = stats["input_tokens"].as_u64().unwrap();
    let total_out = stats["output_tokens"].as_u64().unwrap();
    assert!(total_in > input && total_out > output, "{stats}");
    assert_eq!(
        stats["total_tokens"].as_u64().unwrap(),
        total_in + total_out
    );
    // The configured key is counted under a label that does not reveal it.
    let keys = stats["keys"].as_object().unwrap();
    assert_eq!(keys.len(), 1, "{stats}");
    let (label, counts) = keys.iter().next().unwrap();
    assert!(
        label.starts_with("config-") && !label.contains(TEST_KEY),
        "{label}"
    );
    assert_eq!(counts["requests"], 5);
    let hourly = stats["hourly"].as_array().unwrap();
    assert_eq!(hourly.len(), 1, "{stats}");
    assert_eq!(hourly[0]["requests"], 5);
    assert_eq!(hourly[0]["failed"], 1);
    assert_eq!(hourly[0]["models"][MODEL], 4);
    assert!(stats["pool"]["total"].as_u64().is_some(), "{stats}");
    assert!(stats["uptime"].as_str().unwrap().ends_with('s'));

    let ips = app.get_json_as(ADMIN, "/admin/ip").await;
    assert_eq!(ips["unique_ips"], 1, "{ips}");
    let me = &ips["ips"][0];
    assert_eq!(me["ip"], "127.0.0.1");
    assert_eq!(me["total_count"], 5);
    assert_eq!(me["failed_count"], 1);
    assert_eq!(me["models"][MODEL], 4);
    assert!(me["rpm"].as_u64().unwrap() >= 5);
    assert!(me["first_seen"].as_str().unwrap().contains('T'));
    // The statistics are admin-only.
    let r = app
        .client
        .get(app.url("/admin/stats"))
        .bearer_auth(TEST_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn the_hourly_history_and_a_keys_daily_tokens_survive_a_restart() {
    let app = spawn_app_with(options()).await;
    let (_, secret) = create_key(&app, json!({ "name": "daily", "tokens_per_day": 1 })).await;
    for _ in 0..3 {
        assert_eq!(app.chat(chat_body(MODEL, "hi", false)).await.status(), 200);
    }
    // The first request of the key is admitted (nothing used yet) and uses up its day.
    let r = chat_in(&app, "openai", &secret, MODEL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
    let config = {
        let mut c = business2api_tests::base_config(app.data_dir.path(), &app.sim);
        business2api_tests::merge(
            &mut c,
            json!({ "api_keys": [TEST_KEY], "admin_keys": [ADMIN] }),
        );
        c
    };
    let (dir, sim, accounts) = app.shutdown_gracefully().await;
    let app = start_app(sim, accounts, dir, config).await;
    let stats = app.get_json_as(ADMIN, "/admin/stats").await;
    // Totals are since start; the history is kept.
    assert_eq!(stats["total_requests"], 0, "{stats}");
    let hourly = stats["hourly"].as_array().unwrap();
    assert_eq!(hourly.len(), 1, "{stats}");
    assert_eq!(hourly[0]["requests"], 4);
    assert_eq!(hourly[0]["keys"]["daily"], 1, "{stats}");
    // The key still works across the restart, and its day is still used up.
    let r = chat_in(&app, "openai", &secret, MODEL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&after), "{after}");
    let listed = app.get_json_as(ADMIN, "/admin/keys").await;
    assert!(
        listed["keys"][0]["tokens_today"].as_u64().unwrap() >= 1,
        "{listed}"
    );
    app.stop().await;
}

/// A client that connects from `local` (any 127.0.0.0/8 address reaches the gateway).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(local.parse::<IpAddr>().unwrap())
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_forwarded_addresses_keep_the_statistics_bounded() {
    // 100,000 distinct forwarded addresses from each peer.
    const PER_PEER: u32 = 100_000;
    let app = spawn_app_with(options().config(json!({
        "http": { "trusted_proxies": ["127.0.0.1"] }
    })))
    .await;
    let url = app.url("/v1/messages/count_tokens");
    let body = json!({
        "model": MODEL,
        "messages": [{ "role": "user", "content": "hi" }]
    })
    .to_string();
    // The trusted peer forwards 10.x.y.z addresses; the untrusted one forwards 172.16.x.y ones,
    // which must never be believed.
    let peers = [("127.0.0.1", [10u8, 0]), ("127.0.0.2", [172u8, 16])];
    for (peer, prefix) in peers {
        let client = client_from(peer);
        let sent = futures_util::stream::iter(0..PER_PEER)
            .map(|i| {
                let forwarded = format!(
                    "{}.{}.{}.{}",
                    prefix[0],
                    prefix[1].wrapping_add((i >> 16) as u8),
                    (i >> 8) as u8,
                    i as u8
                );
                client
                    .post(&url)
                    .header("x-api-key", TEST_KEY)
                    .header("anthropic-version", "2023-06-01")
                    .header("content-type", "application/json")
                    .header("x-forwarded-for", forwarded)
                    .body(body.clone())
                    .send()
            })
            .buffer_unordered(32)
            .fold(0u32, |ok, r| async move {
                ok + u32::from(r.is_ok_and(|r| r.status() == 200))
            })
            .await;
        assert_eq!(sent, PER_PEER, "every request from {peer} answered");
    }
    // The last request is recorded when its body is done: wait until all are.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let ips = loop {
        let ips = app
            .get_json_as(ADMIN, &format!("/admin/ip?limit={}", 2 * PER_PEER))
            .await;
        if ips["total_requests"] == 2 * PER_PEER || std::time::Instant::now() > deadline {
            break ips;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(ips["total_requests"], 2 * PER_PEER);
    let limit = ips["tracked_limit"].as_u64().unwrap();
    assert!((100..=10_000).contains(&limit), "{limit}");
    assert_eq!(ips["unique_ips"], limit, "bounded at the limit");
    let listed = ips["ips"].as_array().unwrap();
    assert_eq!(listed.len() as u64, limit);
    // Every forwarded address beyond the bound was evicted, none was kept twice.
    assert_eq!(
        ips["evicted_ips"].as_u64().unwrap(),
        u64::from(PER_PEER) + 1 - limit
    );
    // The untrusted peer is one client, counted under its own address, and at the top.
    assert_eq!(listed[0]["ip"], "127.0.0.2", "{}", listed[0]);
    assert_eq!(listed[0]["total_count"], PER_PEER);
    for client in &listed[1..] {
        let ip = client["ip"].as_str().unwrap();
        assert!(
            ip.starts_with("10."),
            "only the trusted peer's forwards: {ip}"
        );
        assert_eq!(client["total_count"], 1);
    }
    assert!(
        !listed
            .iter()
            .any(|c| c["ip"].as_str().unwrap().starts_with("172.16.")),
        "an untrusted peer's forwarded address was believed"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_key_limited_to_five_requests_a_minute_gets_429_on_the_sixth_in_every_dialect() {
    let app = spawn_app_with(options()).await;
    for dialect in ["openai", "responses", "anthropic", "gemini"] {
        let (_, secret) =
            create_key(&app, json!({ "name": format!("rpm-{dialect}"), "rpm": 5 })).await;
        for i in 0..5 {
            let r = chat_in(&app, dialect, &secret, MODEL).send().await.unwrap();
            assert_eq!(r.status(), 200, "{dialect} request {i}");
            let _ = r.bytes().await.unwrap();
        }
        let r = chat_in(&app, dialect, &secret, MODEL).send().await.unwrap();
        assert_eq!(r.status(), 429, "{dialect}");
        let after: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&after), "{dialect}: retry-after {after}");
        let body: Value = r.json().await.unwrap();
        assert_dialect_error(dialect, 429, &body);
        assert!(
            body.to_string().contains("5 requests per minute"),
            "{dialect}: {body}"
        );
        // Listing models does not count, and is still allowed.
        let r = app
            .client
            .get(app.url("/v1/models"))
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{dialect}");
    }
    // The configured key has no limit.
    for _ in 0..7 {
        let r = chat_in(&app, "openai", TEST_KEY, MODEL)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
    }
    let stats = app.get_json_as(ADMIN, "/admin/stats").await;
    assert_eq!(stats["keys"]["rpm-gemini"]["requests"], 6, "{stats}");
    assert_eq!(stats["keys"]["rpm-gemini"]["failed"], 1, "{stats}");
    app.stop().await;
}

#[tokio::test]
async fn a_key_may_use_only_its_models_and_stops_working_when_deleted() {
    let app = spawn_app_with(options()).await;
    let models = app.get_json_as(TEST_KEY, "/v1/models").await;
    let other = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .find(|id| *id != MODEL)
        .unwrap()
        .to_owned();
    let (id, secret) = create_key(&app, json!({ "name": "flash only", "models": [MODEL] })).await;
    for dialect in ["openai", "responses", "anthropic", "gemini"] {
        let r = chat_in(&app, dialect, &secret, MODEL).send().await.unwrap();
        assert_eq!(r.status(), 200, "{dialect}");
        let _ = r.bytes().await.unwrap();
        let r = chat_in(&app, dialect, &secret, &other)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{dialect} with {other}");
        let body: Value = r.json().await.unwrap();
        assert_dialect_error(dialect, 403, &body);
        assert!(body.to_string().contains("flash only"), "{body}");
    }
    // The key's model listing shows only its models, in every dialect's listing.
    let listed = app.get_json_as(&secret, "/v1/models").await;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [MODEL], "{listed}");
    let listed = app
        .get_json_with("/v1beta/models", &[("x-goog-api-key", &secret)])
        .await;
    assert_eq!(listed["models"].as_array().unwrap().len(), 1, "{listed}");
    let listed = app
        .get_json_with(
            "/v1/models",
            &[("x-api-key", &secret), ("anthropic-version", "2023-06-01")],
        )
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    // One model looked up, and tokens counted, answer the same as a chat would.
    let lookup = |dialect: &str, model: &str| match dialect {
        "openai" => app
            .client
            .get(app.url(&format!("/v1/models/{model}")))
            .bearer_auth(&secret),
        "anthropic" => app
            .client
            .get(app.url(&format!("/v1/models/{model}")))
            .header("x-api-key", &secret)
            .header("anthropic-version", "2023-06-01"),
        _ => app
            .client
            .get(app.url(&format!("/v1beta/models/{model}")))
            .header("x-goog-api-key", &secret),
    };
    for dialect in ["openai", "anthropic", "gemini"] {
        for (model, want) in [(MODEL, 200), (other.as_str(), 403)] {
            let r = lookup(dialect, model).send().await.unwrap();
            assert_eq!(r.status(), want, "{dialect} lookup of {model}");
            if want == 403 {
                assert_dialect_error(dialect, 403, &r.json().await.unwrap());
            }
        }
    }
    for model in [MODEL, other.as_str()] {
        let want = if model == MODEL { 200 } else { 403 };
        let r = app
            .client
            .post(app.url("/v1/messages/count_tokens"))
            .header("x-api-key", &secret)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "anthropic count_tokens {model}");
        let r = app
            .client
            .post(app.url(&format!("/v1beta/models/{model}:countTokens")))
            .header("x-goog-api-key", &secret)
            .json(&json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "gemini countTokens {model}");
    }
    // The secret is never listed; the prefix is.
    let listed = app.get_json_as(ADMIN, "/admin/keys").await;
    let text = listed.to_string();
    assert!(!text.contains(&secret[12..]), "{text}");
    assert_eq!(listed["keys"][0]["name"], "flash only");
    assert!(
        listed["keys"][0]["prefix"]
            .as_str()
            .unwrap()
            .starts_with(&secret[..8])
    );
    // Bad specs are refused with a reason.
    for bad in [
        json!({ "name": "x", "models": ["nope"] }),
        json!({ "name": "x", "rpm": 0 }),
        json!({ "name": "x", "rpn": 5 }),
        json!({ "name": "flash only" }),
        json!({ "rpm": 5 }),
    ] {
        let (status, body) = app.post_json_as(ADMIN, "/admin/keys", &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(!body["error"].as_str().unwrap().is_empty());
    }
    // A change applies to the next request.
    let r = app
        .client
        .patch(app.url(&format!("/admin/keys/{id}")))
        .bearer_auth(ADMIN)
        .json(&json!({ "models": null }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = chat_in(&app, "openai", &secret, &other)
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 403);
    let _ = r.bytes().await.unwrap();
    // Deleted: the key stops working at once.
    let r = app
        .client
        .delete(app.url(&format!("/admin/keys/{id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = chat_in(&app, "openai", &secret, MODEL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Managing keys needs the admin key, not an API key.
    let (status, _) = app
        .post_json_as(TEST_KEY, "/admin/keys", &json!({ "name": "sneaky" }))
        .await;
    assert_eq!(status, 401);
    app.stop().await;
}
