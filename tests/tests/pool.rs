//! The account pool through the real wiring: concurrency under injected failures, exact counters,
//! cooldowns honoured, state that survives a restart, graceful shutdown, and the admin API's
//! separation from the API keys.

use std::time::{Duration, Instant};

use business2api_tests::{
    SseReader, TEST_KEY, TestApp, TestOptions, Wire, base_config, chat_body, merge, spawn_app_with,
    start_app,
};
use futures_util::future::join_all;
use serde_json::{Value, json};
use upstream_sim::{Endpoint, Fault, FaultRule};

const ADMIN_KEY: &str = "admin-key-for-tests-0123456789";

fn admin_config(extra: Value) -> Value {
    let mut c = json!({ "admin_keys": [ADMIN_KEY] });
    merge(&mut c, extra);
    c
}

async fn admin_get(app: &TestApp, path: &str) -> Value {
    let r = app
        .client
        .get(app.url(path))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn admin_post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    app.post_json_as(ADMIN_KEY, path, &body).await
}

fn account<'a>(accounts: &'a Value, email: &str) -> &'a Value {
    business2api_tests::account_in(accounts, email)
}

/// Waits until no request is in flight on any account (outcomes are reported asynchronously).
async fn settled(app: &TestApp) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = admin_get(app, "/admin/status").await;
        if status["states"]["in_flight"] == 0 {
            // A refresh triggered by the last failures may still be minting: wait for it too,
            // so that its outcome is counted.
            let accounts = admin_get(app, "/admin/accounts").await;
            if !accounts.to_string().contains("\"refreshing_token\"") {
                return accounts;
            }
        }
        assert!(
            Instant::now() < deadline,
            "requests stay in flight or refreshes never end: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One chat request, bounded; returns (status, whether the answer was complete).
async fn bounded_chat(app: &TestApp, stream: bool, i: usize) -> (u16, bool) {
    let fut = async {
        let r = app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(TEST_KEY)
            .json(&chat_body(
                "gemini-2.5-flash",
                &format!("request {i}"),
                stream,
            ))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status != 200 {
            let v: Value = r.json().await.unwrap();
            assert!(v["error"]["message"].is_string(), "{v}");
            return (status, false);
        }
        if stream {
            let data = SseReader::checked(
                r,
                Wire::ChatCompletions {
                    include_usage: false,
                },
            )
            .rest()
            .await;
            let done = data.last().is_some_and(|d| d == "[DONE]");
            let errored = data.iter().any(|d| d.contains("\"error\""));
            (status, done && !errored)
        } else {
            let v: Value = r.json().await.unwrap();
            (status, v["choices"][0]["message"]["content"].is_string())
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("request {i} did not end within 20 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_under_injected_failures() {
    let app = spawn_app_with(
        TestOptions::default()
            .accounts(5)
            .config(admin_config(json!({
                "pool": { "use_cooldown_sec": 0 },
                "gemini_business": { "max_attempts": 3 },
            }))),
    )
    .await;
    let acct = |i: usize| app.accounts[i].clone();
    // Faults (the first matching rule fires): 3's cookies are dead; minting is slow, so that
    // many requests wait on one account's mint at once; 0 is rate limited once, for 60 s; 1's
    // quota is exhausted once; 2's token is refused twice; 4 is healthy.
    app.sim.add_fault(
        FaultRule::always(Endpoint::GetOxsrf, Fault::Unauthorized).for_account(&acct(3).csesidx),
    );
    app.sim.add_fault(FaultRule::always(
        Endpoint::GetOxsrf,
        Fault::SlowFirstByte(Duration::from_millis(150)),
    ));
    app.sim.add_fault(
        FaultRule::always(
            Endpoint::StreamAssist,
            Fault::RateLimited {
                retry_after_secs: Some(60),
            },
        )
        .for_account(&acct(0).csesidx)
        .times(1),
    );
    app.sim.add_fault(
        FaultRule::always(
            Endpoint::StreamAssist,
            Fault::QuotaExhausted {
                retry_after_secs: None,
            },
        )
        .for_account(&acct(1).csesidx)
        .times(1),
    );
    app.sim.add_fault(
        FaultRule::always(Endpoint::StreamAssist, Fault::Unauthorized)
            .for_account(&acct(2).csesidx)
            .times(2),
    );

    let started = Instant::now();
    let results = join_all((0..200).map(|i| bounded_chat(&app, i % 2 == 0, i))).await;
    let elapsed = started.elapsed();
    let ok = results.iter().filter(|(s, _)| *s == 200).count() as u64;
    for (i, (status, complete)) in results.iter().enumerate() {
        assert!(
            matches!(status, 200 | 429 | 503),
            "request {i}: unexpected status {status}"
        );
        if *status == 200 {
            assert!(complete, "request {i}: 200 but the answer is incomplete");
        }
    }
    assert!(ok >= 190, "only {ok} of 200 succeeded");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");

    // No account was ever minting twice at once (single flight per account).
    assert_eq!(app.sim.stats().max_concurrent_mints_per_account, 1);

    let accounts = settled(&app).await;
    assert_eq!(accounts["count"], 5, "no account was deleted");
    let get = |i: usize| account(&accounts, &app.accounts[i].email).clone();
    let success: u64 = (0..5)
        .map(|i| get(i)["counters"]["success"].as_u64().unwrap())
        .sum();
    assert_eq!(success, ok, "successes counted exactly once each");
    for i in 0..5 {
        let a = get(i);
        assert_eq!(
            a["counters"]["daily"]["counts"]["text"], a["counters"]["success"],
            "daily text count = successes: {a}"
        );
        assert!(
            a.to_string().find("__Secure").is_none(),
            "no cookie names or values"
        );
    }
    assert_eq!(get(0)["counters"]["failed"], 1, "{}", get(0));
    assert_eq!(get(1)["counters"]["failed"], 1, "{}", get(1));
    assert_eq!(get(2)["counters"]["failed"], 2, "{}", get(2));
    assert_eq!(get(4)["counters"]["failed"], 0, "{}", get(4));
    assert_eq!(get(3)["counters"]["success"], 0);
    assert!(get(3)["counters"]["failed"].as_u64().unwrap() >= 1);
    assert_eq!(get(3)["state"], "needs_relogin", "{}", get(3));
    let until = get(0)["cooldowns"]["text"]["until"].as_u64().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        until > now_ms + 50_000,
        "60 s rate-limit cooldown: {}",
        get(0)
    );
    assert_eq!(get(1)["cooldowns"]["text"]["reason"], "quota_exhausted");
    // The token refusals caused refreshes of account 2 (one mint at start, then at least one).
    assert!(
        get(2)["counters"]["refreshes"].as_u64().unwrap() >= 2,
        "{}",
        get(2)
    );
    for i in 0..5 {
        assert!(
            app.data_dir
                .path()
                .join(format!("{}.json", app.accounts[i].email))
                .exists()
        );
    }

    // While their cooldowns run, accounts 0 and 1 are never chosen again.
    let u4 = |i: usize| {
        app.sim
            .requests(Endpoint::StreamAssist)
            .iter()
            .filter(|r| r.csesidx.as_deref() == Some(app.accounts[i].csesidx.as_str()))
            .count()
    };
    let (before0, before1, before3) = (u4(0), u4(1), u4(3));
    for i in 0..30 {
        let (status, complete) = bounded_chat(&app, i % 2 == 0, i).await;
        assert_eq!(status, 200);
        assert!(complete);
    }
    assert_eq!(
        u4(0),
        before0,
        "the rate-limited account was chosen during its cooldown"
    );
    assert_eq!(u4(1), before1, "the quota-exhausted account was chosen");
    assert_eq!(u4(3), before3, "the dead account was chosen");
    app.stop().await;
}

#[tokio::test]
async fn with_every_account_cooling_the_answer_carries_the_soonest_retry_after() {
    let app = spawn_app_with(
        TestOptions::default()
            .accounts(2)
            .config(admin_config(json!({
                "gemini_business": { "max_attempts": 1 },
            }))),
    )
    .await;
    for (i, secs) in [(0, 40), (1, 25)] {
        app.sim.add_fault(
            FaultRule::always(
                Endpoint::StreamAssist,
                Fault::RateLimited {
                    retry_after_secs: Some(secs),
                },
            )
            .for_account(&app.accounts[i].csesidx)
            .times(1),
        );
    }
    for _ in 0..2 {
        let r = app.chat(chat_body("gemini-2.5-flash", "x", false)).await;
        assert_eq!(r.status(), 429);
    }
    for stream in [false, true] {
        let r = app.chat(chat_body("gemini-2.5-flash", "x", stream)).await;
        assert_eq!(r.status(), 503, "stream={stream}");
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((23..=25).contains(&retry), "retry-after {retry}");
    }
    app.stop().await;
}

#[tokio::test]
async fn pool_state_survives_a_restart() {
    let app = spawn_app_with(
        TestOptions::default()
            .accounts(2)
            .config(admin_config(json!({}))),
    )
    .await;
    app.sim.add_fault(
        FaultRule::always(
            Endpoint::StreamAssist,
            Fault::RateLimited {
                retry_after_secs: Some(120),
            },
        )
        .for_account(&app.accounts[0].csesidx)
        .times(1),
    );
    app.sim.add_fault(
        FaultRule::always(Endpoint::GetOxsrf, Fault::Unauthorized)
            .for_account(&app.accounts[1].csesidx),
    );
    // Account 1's cookies are refused, account 0 is rate limited: the first request fails on
    // both; after that, account 0's cooldown and account 1's re-login state are persisted.
    let _ = app.chat(chat_body("gemini-2.5-flash", "x", false)).await;
    let _ = app.chat(chat_body("gemini-2.5-flash", "x", false)).await;
    let before = settled(&app).await;
    let a0 = account(&before, &app.accounts[0].email).clone();
    assert!(a0["cooldowns"]["text"]["until"].is_u64(), "{a0}");
    let (data_dir, sim, accounts) = app.shutdown_gracefully().await;
    sim.clear_faults();

    let mut config = base_config(data_dir.path(), &sim);
    merge(&mut config, admin_config(json!({ "api_keys": [TEST_KEY] })));
    let again = start_app(sim, accounts, data_dir, config).await;
    let after = admin_get(&again, "/admin/accounts").await;
    let b0 = account(&after, &again.accounts[0].email);
    assert_eq!(b0["cooldowns"], a0["cooldowns"], "cooldown end survives");
    assert_eq!(b0["counters"]["failed"], a0["counters"]["failed"]);
    assert_eq!(b0["last_error"], a0["last_error"]);
    let b1 = account(&after, &again.accounts[1].email);
    assert_eq!(b1["state"], "needs_relogin", "{b1}");
    // Neither can serve: account 0 cools, account 1 waits for a re-login.
    let r = again.chat(chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(r.status(), 503);
    again.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_a_running_stream_finish_and_writes_the_state() {
    let app = spawn_app_with(TestOptions::default().config(admin_config(json!({
        "http": { "shutdown_timeout_sec": 10 },
    }))))
    .await;
    let gate = app.sim.hold_last_element();
    let r = app.chat(chat_body("gemini-2.5-flash", "x", true)).await;
    assert_eq!(r.status(), 200);
    let mut reader = SseReader::checked(
        r,
        Wire::ChatCompletions {
            include_usage: false,
        },
    );
    // The stream has started.
    let first = reader.next_data().await.unwrap();
    assert_ne!(first, "[DONE]");
    let handle = app.server_handle();
    let stopping = tokio::spawn(async move { handle.stop(true).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are refused while draining.
    let refused = reqwest::Client::new()
        .get(app.url("/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a new connection was served while draining"
    );
    gate.open();
    let rest = reader.rest().await;
    assert_eq!(
        rest.last().map(String::as_str),
        Some("[DONE]"),
        "the stream finished"
    );
    stopping.await.unwrap();
    let (data_dir, _sim, _) = app.shutdown_gracefully().await;
    // The success of that stream was written before the process let go of the store.
    let store = business2api::store::Store::open(data_dir.path()).unwrap();
    let states = store.states().unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].1.as_ref().unwrap().counters.success, 1);
}

/// Every admin route, with the method it takes.
const ADMIN_ROUTES: [(&str, &str); 9] = [
    ("GET", "/admin/status"),
    ("GET", "/admin/accounts"),
    ("POST", "/admin/refresh"),
    ("POST", "/admin/force-refresh"),
    ("POST", "/admin/config/cooldown"),
    ("GET", "/admin/pool-files/export"),
    ("POST", "/admin/pool-files/import"),
    ("POST", "/admin/pool-files/delete-invalid/preview"),
    ("POST", "/admin/pool-files/delete-invalid/execute"),
];

async fn call(app: &TestApp, method: &str, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = match method {
        "GET" => app.client.get(app.url(path)),
        _ => app.client.post(app.url(path)).json(&json!({})),
    };
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_api_key_grants_no_admin_route() {
    // Admin keys configured: the API key, a wrong key and no key are all refused.
    let app = spawn_app_with(TestOptions::default().config(admin_config(json!({})))).await;
    for (method, path) in ADMIN_ROUTES {
        for (key, want) in [(Some(TEST_KEY), 401), (Some("wrong"), 401), (None, 401)] {
            let (status, body) = call(&app, method, path, key).await;
            assert_eq!(status, want, "{method} {path} with {key:?}: {body}");
            assert!(body["error"].is_string(), "{body}");
            assert!(!body.to_string().contains(TEST_KEY));
        }
        // With the admin key the route answers (an empty import is a 400, not a refusal).
        let (status, body) = call(&app, method, path, Some(ADMIN_KEY)).await;
        assert!(
            status < 300 || (path.ends_with("/import") && status == 400),
            "{method} {path} with the admin key: {status} {body}"
        );
    }
    // The admin key is not an API key either, and `?key=` is never read for admin.
    let r = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(ADMIN_KEY)
        .json(&chat_body("gemini-2.5-flash", "x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .get(app.url(&format!("/admin/status?key={ADMIN_KEY}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await;

    // No admin key configured: every admin route is 403, whatever is presented.
    let app = spawn_app_with(TestOptions::default()).await;
    for (method, path) in ADMIN_ROUTES {
        for key in [Some(TEST_KEY), None] {
            let (status, body) = call(&app, method, path, key).await;
            assert_eq!(status, 403, "{method} {path}: {body}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn admin_import_export_force_refresh_and_delete_invalid() {
    let app = spawn_app_with(
        TestOptions::default()
            .accounts(2)
            .config(admin_config(json!({}))),
    )
    .await;
    // Export: every account in the reference format; credentials are there (operator export),
    // the listing has none.
    let r = app
        .client
        .get(app.url("/admin/pool-files/export"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let exported: Value = r.json().await.unwrap();
    let exported = exported.as_array().unwrap().clone();
    assert_eq!(exported.len(), 2);
    assert_eq!(exported[0]["cookies"][0]["name"], "__Secure-C_SES");
    let listing = admin_get(&app, "/admin/accounts").await;
    assert!(!listing.to_string().contains(&app.accounts[0].c_ses));
    // Each account carries the label its log lines use.
    let first = business2api_tests::account_in(&listing, &app.accounts[0].email);
    assert_eq!(
        first["label"],
        business2api_shared::AccountKey::new(&app.accounts[0].email).label()
    );

    // Import: a new account (array form) joins the rotation at once, an unusable one is listed
    // as disabled, a malformed element is rejected with its index.
    let newcomer = upstream_sim::SimAccount::demo(7);
    app.sim.add_account(newcomer.clone());
    let mut broken = newcomer.account_file_json();
    broken["email"] = json!("broken@example.com");
    broken["cookies"] = json!([]);
    let (status, body) = admin_post(
        &app,
        "/admin/pool-files/import",
        json!([newcomer.account_file_json(), broken, {"email": 5}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["imported"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(body["rejected"][0]["name"], "body[2]", "{body}");
    let listing = admin_get(&app, "/admin/accounts").await;
    assert_eq!(listing["count"], 4);
    assert_eq!(account(&listing, "broken@example.com")["state"], "disabled");

    // Force refresh mints for every serving account without emptying the pool.
    let mints = app
        .sim
        .stats()
        .calls
        .get(&Endpoint::GetOxsrf)
        .copied()
        .unwrap_or(0);
    let (status, body) = admin_post(&app, "/admin/force-refresh", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 3, "{body}");
    let r = app.chat(chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(
        r.status(),
        200,
        "the pool keeps serving during a forced refresh"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while app
        .sim
        .stats()
        .calls
        .get(&Endpoint::GetOxsrf)
        .copied()
        .unwrap_or(0)
        < mints + 3
    {
        assert!(Instant::now() < deadline, "force refresh did not mint");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Cooldown settings, with the reference's field names.
    let (status, body) = admin_post(
        &app,
        "/admin/config/cooldown",
        json!({"refresh_cooldown_sec": 200, "use_cooldown_sec": 0}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["refresh_cooldown_sec"], 200);
    assert_eq!(body["use_cooldown_sec"], 1, "0 leaves the value unchanged");
    let (status, _) = admin_post(
        &app,
        "/admin/config/cooldown",
        json!({"use_cooldown_sec": "soon"}),
    )
    .await;
    assert_eq!(status, 400);

    // Delete-invalid: the preview lists the unusable account; executing deletes it only.
    let (_, preview) =
        admin_post(&app, "/admin/pool-files/delete-invalid/preview", json!({})).await;
    assert_eq!(preview["count"], 1, "{preview}");
    assert_eq!(preview["accounts"][0]["email"], "broken@example.com");
    let (_, done) = admin_post(
        &app,
        "/admin/pool-files/delete-invalid/execute",
        json!({"emails": ["broken@example.com"]}),
    )
    .await;
    assert_eq!(done["deleted"], json!(["broken@example.com"]));
    let listing = admin_get(&app, "/admin/accounts").await;
    assert_eq!(listing["count"], 3);
    let status = admin_get(&app, "/admin/status").await;
    assert_eq!(status["total"], 3);
    assert_eq!(status["cooldowns"]["refresh_sec"], 200);
    app.stop().await;
}
