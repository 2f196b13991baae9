//! API keys (configured, generated on first start, where they may be carried), the public
//! status routes and the start-up account report.

use business2api_tests::{
    Endpoint, Fault, FaultRule, SimAccount, Simulator, TEST_KEY, TestOptions, base_config,
    chat_body, merge, spawn_app, spawn_app_with, start_app, write_account_file,
};
use serde_json::{Value, json};

#[tokio::test]
async fn the_key_is_accepted_from_every_documented_place_and_refused_otherwise() {
    let app = spawn_app().await;
    let url = app.url("/v1/models");
    let ok = [
        app.client.get(&url).bearer_auth(TEST_KEY),
        app.client.get(&url).header("x-api-key", TEST_KEY),
        app.client.get(&url).header("x-goog-api-key", TEST_KEY),
        app.client.get(format!("{url}?key={TEST_KEY}")),
    ];
    for request in ok {
        assert_eq!(request.send().await.unwrap().status(), 200);
    }
    let missing = app.client.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let v: Value = missing.json().await.unwrap();
    assert_eq!(v["error"]["code"], "missing_api_key");
    let wrong = app
        .client
        .get(&url)
        .bearer_auth("not-the-key")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let v: Value = wrong.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert!(
        !v.to_string().contains("not-the-key"),
        "the presented key is not echoed"
    );
    let chat = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth("nope")
        .json(&chat_body("gemini-2.5-flash", "x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn without_configured_keys_a_key_is_generated_once_and_required() {
    let app = spawn_app_with(TestOptions::default().without_default_key()).await;
    let key_file = app.data_dir.path().join("api_key");
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(key.starts_with("sk-b2a-"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(matches!(
        app.report.keys,
        business2api::auth::KeySource::NewlyGenerated(..)
    ));
    let url = app.url("/v1/models");
    assert_eq!(
        app.client.get(&url).send().await.unwrap().status(),
        401,
        "not an open gateway"
    );
    assert_eq!(
        app.client
            .get(&url)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A restart on the same data dir reuses the key and does not announce a new one.
    let (data_dir, sim, accounts) = app.shutdown_gracefully().await;
    let config = base_config(data_dir.path(), &sim);
    let again = start_app(sim, accounts, data_dir, config).await;
    assert!(matches!(
        again.report.keys,
        business2api::auth::KeySource::StoredGenerated(_)
    ));
    assert_eq!(
        again
            .client
            .get(again.url("/v1/models"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    again.stop().await;
}

#[tokio::test]
async fn allow_unauthenticated_is_the_explicit_opt_out() {
    let app = spawn_app_with(
        TestOptions::default()
            .without_default_key()
            .config(json!({"allow_unauthenticated": true})),
    )
    .await;
    assert_eq!(
        app.client
            .get(app.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(!app.data_dir.path().join("api_key").exists());
    app.stop().await;
}

#[tokio::test]
async fn health_and_root_are_public_and_reveal_no_identities() {
    let app = spawn_app_with(
        TestOptions::default()
            .accounts(2)
            .config(json!({"note": ["hello operators"]})),
    )
    .await;
    let r = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["mode"], "local");
    assert_eq!(v["ready"], 2);
    assert!(v["ready"].is_u64());
    let root: Value = app.get_json("/").await;
    assert_eq!(root["service"], "business2api");
    assert_eq!(root["note"], json!(["hello operators"]));
    // Every dialect's routes are listed, not just OpenAI's.
    let endpoints = root["endpoints"].to_string();
    for route in [
        "POST /v1/chat/completions",
        "POST /v1/responses",
        "POST /v1/messages",
        "POST /v1/messages/count_tokens",
        "POST /v1beta/models/{model}:generateContent",
        "POST /v1beta/models/{model}:streamGenerateContent?alt=sse",
        "GET /health",
    ] {
        assert!(endpoints.contains(route), "{route}: {endpoints}");
    }
    assert!(
        root["endpoints"].get("workers").is_none(),
        "local mode has no /ws"
    );
    for body in [v.to_string(), root.to_string()] {
        for account in &app.accounts {
            assert!(!body.contains(&account.email));
            assert!(!body.contains(&account.csesidx));
            assert!(!body.contains(&account.c_ses));
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn an_empty_pool_says_so_in_health_and_in_every_refusal() {
    let app = spawn_app_with(TestOptions::default().accounts(0)).await;
    let v: Value = app.get_json("/health").await;
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(v["accounts"], 0);
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("no upstream accounts") && reason.contains("account files"),
        "{v}"
    );
    let asks = [
        (
            "/v1/chat/completions",
            json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "gemini-2.5-flash", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
        ),
        (
            "/v1beta/models/gemini-2.5-flash:generateContent",
            json!({"contents": [{"parts": [{"text": "x"}]}]}),
        ),
    ];
    for (path, body) in asks {
        let r = app
            .client
            .post(app.url(path))
            .bearer_auth(TEST_KEY)
            .header("x-goog-api-key", TEST_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{path}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains("no upstream accounts") && text.contains("accounts import"),
            "{path}: {text}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn health_is_degraded_with_the_reason_when_no_account_can_serve() {
    let app = spawn_app_with(TestOptions::default().accounts(1)).await;
    let v: Value = app.get_json("/health").await;
    assert_eq!(v["status"], "ok", "{v}");
    assert!(v.get("reason").is_none(), "{v}");
    // The only account's cookies die: it waits for a re-login (none comes in this test).
    let account = app.accounts[0].clone();
    app.sim.add_fault(
        FaultRule::always(Endpoint::GetOxsrf, Fault::Unauthorized).for_account(&account.csesidx),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let v = loop {
        let _ = app
            .chat(json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}]}))
            .await;
        let v: Value = app.get_json("/health").await;
        if v["ready"] == 0 {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the account never left: {v}"
        );
    };
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(
        v["reason"],
        "no account can take a request now: 0 cooling down, 1 waiting for re-login, 0 disabled",
        "{v}"
    );
    app.stop().await;
}

#[tokio::test]
async fn server_mode_is_reported_as_such() {
    let app = spawn_app_with(TestOptions::default().config(json!({
        "pool_server": {"enable": true, "mode": "server", "secret": "a-long-enough-worker-secret"}
    })))
    .await;
    let v: Value = app.get_json("/health").await;
    assert_eq!(v["mode"], "server");
    let root: Value = app.get_json("/").await;
    assert_eq!(
        root["endpoints"]["workers"],
        "GET /ws (WebSocket, worker secret)"
    );
    app.stop().await;
}

#[tokio::test]
async fn unusable_account_files_are_reported_by_name_with_the_reason() {
    let sim = Simulator::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = SimAccount::demo(0);
    sim.add_account(good.clone());
    write_account_file(dir.path(), &good);
    let mut no_cookie = SimAccount::demo(1).account_file_json();
    no_cookie["cookies"] = json!([]);
    std::fs::write(
        dir.path().join("no-cookie@example.com.json"),
        no_cookie.to_string(),
    )
    .unwrap();
    let mut no_csesidx = SimAccount::demo(2).account_file_json();
    no_csesidx["csesidx"] = json!("");
    no_csesidx["authorization"] = json!("");
    std::fs::write(
        dir.path().join("no-csesidx@example.com.json"),
        no_csesidx.to_string(),
    )
    .unwrap();
    std::fs::write(dir.path().join("garbage.json"), "{{{").unwrap();

    let mut config = base_config(dir.path(), &sim);
    merge(&mut config, json!({"api_keys": [TEST_KEY]}));
    let app = start_app(sim, vec![good], dir, config).await;
    assert_eq!(app.report.accounts, 1);
    let reasons: Vec<(String, String)> = app
        .report
        .import
        .rejected
        .iter()
        .chain(&app.report.unusable)
        .map(|r| (r.name.clone(), r.reason.clone()))
        .collect();
    let find = |name: &str| {
        reasons
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("{name} not reported: {reasons:?}"))
    };
    assert!(find("no-cookie@example.com.json").contains("__Secure-C_SES"));
    assert!(find("no-csesidx@example.com.json").contains("csesidx"));
    assert!(find("garbage.json").contains("not valid JSON"));
    let r = app.chat(chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(r.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn accounts_survive_a_restart_and_import_is_idempotent() {
    let app = spawn_app_with(TestOptions::default().accounts(2)).await;
    let (data_dir, sim, accounts) = app.shutdown_gracefully().await;
    let mut config = base_config(data_dir.path(), &sim);
    merge(&mut config, json!({"api_keys": [TEST_KEY]}));
    let again = start_app(sim, accounts, data_dir, config).await;
    assert_eq!(again.report.accounts, 2, "no duplicates after re-import");
    assert!(
        again
            .report
            .import
            .imported
            .iter()
            .all(|(_, u)| *u == business2api::store::Upsert::Unchanged)
    );
    again.stop().await;
}
