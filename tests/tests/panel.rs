//! The admin panel through the real wiring: first-run setup with the printed token, the argon2id
//! password file, login and logout, the session cookie's attributes, CSRF on state-changing
//! admin routes, the login rate limit, admin keys working as before, the embedded assets and
//! their headers, and the live log stream (redacted).

use std::time::Duration;

use business2api::admin::panel::password;
use business2api_tests::{SseReader, TEST_KEY, TestApp, TestOptions, spawn_app_with};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "admin-key-for-panel-tests-0123";
const PASSWORD: &str = "correct horse battery staple";

/// The `b2a_session` value and the whole `Set-Cookie` header of a response.
fn session_cookie(headers: &HeaderMap) -> (String, String) {
    let header = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("b2a_session="))
        .unwrap_or_else(|| panic!("no session cookie in {headers:?}"))
        .to_owned();
    let value = header
        .trim_start_matches("b2a_session=")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    (value, header)
}

async fn post(
    app: &TestApp,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = app.client.post(app.url(path)).json(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = app.client.get(app.url(path));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

/// Logs in with [`PASSWORD`] (already stored): `(cookie header value for requests, csrf)`.
async fn login(app: &TestApp) -> (String, String) {
    let r = post(app, "/admin/login", &json!({"password": PASSWORD}), &[]).await;
    assert_eq!(r.status(), 200);
    let (id, _) = session_cookie(r.headers());
    let body: Value = r.json().await.unwrap();
    (
        format!("b2a_session={id}"),
        body["csrf"].as_str().unwrap().to_owned(),
    )
}

async fn app_with_password(config: Value) -> TestApp {
    let app = spawn_app_with(TestOptions::default().config(config)).await;
    password::store(app.data_dir.path(), PASSWORD).unwrap();
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_setup_with_the_printed_token_then_login_and_logout() {
    let app = spawn_app_with(TestOptions::default()).await;
    let token = app
        .report
        .admin_setup_token
        .clone()
        .expect("no password yet: a setup token is made");
    let token = token.expose().to_owned();
    let file = app.data_dir.path().join(password::PASSWORD_FILE);

    let probe: Value = get(&app, "/admin/session", &[]).await.json().await.unwrap();
    assert_eq!(
        probe,
        json!({"setup_required": true, "authenticated": false, "csrf": null})
    );
    // Login before setup: nothing to check against.
    let r = post(&app, "/admin/login", &json!({"password": PASSWORD}), &[]).await;
    assert_eq!(r.status(), 409);

    // A wrong token is refused and stores nothing.
    let r = post(
        &app,
        "/admin/setup",
        &json!({"token": "setup-wrong", "password": PASSWORD}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(!file.exists());
    // The right token with a short password: refused, the token stays valid.
    let r = post(
        &app,
        "/admin/setup",
        &json!({"token": token, "password": "short"}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(!file.exists());

    let r = post(
        &app,
        "/admin/setup",
        &json!({"token": token, "password": PASSWORD}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let (id, cookie) = session_cookie(r.headers());
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let body = r.text().await.unwrap();
    assert!(!body.contains(PASSWORD) && !body.contains(&token), "{body}");

    // The hash file: argon2id PHC, mode 0600, no password in it.
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(stored.starts_with("$argon2id$v=19$"), "{stored}");
    assert!(!stored.contains(PASSWORD));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // The token is void now.
    let r = post(
        &app,
        "/admin/setup",
        &json!({"token": token, "password": "another password 123"}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 409);
    assert!(password::verify(
        PASSWORD,
        &std::fs::read_to_string(&file).unwrap()
    ));

    // The session works without any admin key configured.
    let cookie = format!("b2a_session={id}");
    let r = get(&app, "/admin/status", &[("cookie", &cookie)]).await;
    assert_eq!(r.status(), 200);
    let probe: Value = get(&app, "/admin/session", &[("cookie", &cookie)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(probe["setup_required"], false);
    assert_eq!(probe["authenticated"], true);
    let csrf = probe["csrf"].as_str().unwrap().to_owned();

    // Logout needs the CSRF token too, then the session is gone.
    let r = post(&app, "/admin/logout", &json!({}), &[("cookie", &cookie)]).await;
    assert_eq!(r.status(), 403);
    let r = post(
        &app,
        "/admin/logout",
        &json!({}),
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(r.status(), 200);
    let (_, cleared) = session_cookie(r.headers());
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let r = get(&app, "/admin/status", &[("cookie", &cookie)]).await;
    assert_eq!(r.status(), 401);

    // Wrong password, then the right one.
    let r = post(
        &app,
        "/admin/login",
        &json!({"password": "not the password"}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 401);
    let (cookie, _) = login(&app).await;
    let r = get(&app, "/admin/accounts", &[("cookie", &cookie)]).await;
    assert_eq!(r.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_set_from_the_console_voids_the_setup_token() {
    let app = spawn_app_with(TestOptions::default()).await;
    let token = app.report.admin_setup_token.clone().unwrap();
    // What `business2api admin set-password` does.
    password::store(app.data_dir.path(), PASSWORD).unwrap();
    let probe: Value = get(&app, "/admin/session", &[]).await.json().await.unwrap();
    assert_eq!(probe["setup_required"], false);
    let r = post(
        &app,
        "/admin/setup",
        &json!({"token": token.expose(), "password": "another password 123"}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 409);
    login(&app).await;
    app.stop().await;
    // A restart with a password makes no token.
    let app = spawn_app_with(TestOptions::default()).await;
    password::store(app.data_dir.path(), PASSWORD).unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_is_secure_only_behind_a_trusted_forwarded_https() {
    let https = [("x-forwarded-proto", "https")];
    // Trusted proxy on loopback: its https counts.
    let app = app_with_password(json!({"http": {"trusted_proxies": ["127.0.0.1"]}})).await;
    let r = post(&app, "/admin/login", &json!({"password": PASSWORD}), &https).await;
    let (_, cookie) = session_cookie(r.headers());
    assert!(cookie.contains("; Secure"), "{cookie}");
    let r = post(&app, "/admin/login", &json!({"password": PASSWORD}), &[]).await;
    let (_, cookie) = session_cookie(r.headers());
    assert!(!cookie.contains("Secure"), "{cookie}");
    app.stop().await;
    // No trusted proxy: the header is client input and changes nothing.
    let app = app_with_password(json!({})).await;
    let r = post(&app, "/admin/login", &json!({"password": PASSWORD}), &https).await;
    let (_, cookie) = session_cookie(r.headers());
    assert!(!cookie.contains("Secure"), "{cookie}");
    app.stop().await;
}

async fn use_cooldown(app: &TestApp, cookie: &str) -> Value {
    let status: Value = get(app, "/admin/status", &[("cookie", cookie)])
        .await
        .json()
        .await
        .unwrap();
    status["cooldowns"]["use_sec"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_calls_with_a_session_need_the_csrf_token_and_admin_keys_do_not() {
    let app = app_with_password(json!({"admin_keys": [ADMIN_KEY]})).await;
    let (cookie, csrf) = login(&app).await;
    let before = use_cooldown(&app, &cookie).await;
    let change = json!({"use_cooldown_sec": 77});
    for headers in [
        vec![("cookie", cookie.as_str())],
        vec![("cookie", cookie.as_str()), ("x-csrf-token", "forged")],
        vec![("cookie", cookie.as_str()), ("x-csrf-token", "")],
    ] {
        let r = post(&app, "/admin/config/cooldown", &change, &headers).await;
        assert_eq!(r.status(), 403, "{headers:?}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("CSRF"), "{body}");
        assert_eq!(use_cooldown(&app, &cookie).await, before, "nothing changed");
    }
    // Another session's token is no better.
    let (_, other_csrf) = login(&app).await;
    let r = post(
        &app,
        "/admin/config/cooldown",
        &change,
        &[("cookie", &cookie), ("x-csrf-token", &other_csrf)],
    )
    .await;
    assert_eq!(r.status(), 403);
    assert_eq!(use_cooldown(&app, &cookie).await, before);

    let r = post(
        &app,
        "/admin/config/cooldown",
        &change,
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(use_cooldown(&app, &cookie).await, 77);

    // The admin key: no CSRF token (not a browser), exactly as before the panel.
    let (status, body) = app
        .post_json_as(
            ADMIN_KEY,
            "/admin/config/cooldown",
            &json!({"use_cooldown_sec": 5}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(use_cooldown(&app, &cookie).await, 5);
    // An API key grants nothing here, with or without a CSRF token.
    let r = app
        .client
        .post(app.url("/admin/config/cooldown"))
        .bearer_auth(TEST_KEY)
        .header("x-csrf-token", &csrf)
        .json(&change)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_json_routes_refuse_and_the_panel_routes_answer() {
    let app = app_with_password(json!({"admin_keys": [ADMIN_KEY]})).await;
    for path in [
        "/admin/status",
        "/admin/accounts",
        "/admin/logs",
        "/admin/workers",
    ] {
        let r = get(&app, path, &[]).await;
        assert_eq!(r.status(), 401, "{path}");
        let r = get(&app, path, &[("cookie", "b2a_session=made-up")]).await;
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = post(&app, "/admin/logout", &json!({}), &[]).await;
    assert_eq!(r.status(), 401);
    for path in [
        "/admin/panel",
        "/admin/panel/",
        "/admin/panel/assets/app.js",
        "/admin/session",
    ] {
        let r = get(&app, path, &[]).await;
        assert_eq!(r.status(), 200, "{path}");
    }
    app.stop().await;
    // No admin key configured and no session: 403, as before the panel.
    let app = spawn_app_with(TestOptions::default()).await;
    let r = get(&app, "/admin/status", &[]).await;
    assert_eq!(r.status(), 403);
    let r = get(&app, "/admin/panel", &[]).await;
    assert_eq!(r.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_per_client() {
    let app = app_with_password(json!({})).await;
    for i in 0..5 {
        let r = post(
            &app,
            "/admin/login",
            &json!({"password": format!("wrong {i}")}),
            &[],
        )
        .await;
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    // Even the right password waits now.
    let r = post(&app, "/admin/login", &json!({"password": PASSWORD}), &[]).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // The setup route shares the limit.
    let r = post(
        &app,
        "/admin/setup",
        &json!({"token": "x", "password": "y"}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 429);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panel_assets_are_embedded_with_a_strict_policy() {
    let app = spawn_app_with(TestOptions::default()).await;
    let r = get(&app, "/admin/panel", &[]).await;
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("http"),
        "{csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-cache");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    // No inline script, nothing from elsewhere.
    assert!(!html.contains("<script>") && !html.contains("http://") && !html.contains("https://"));
    assert!(html.contains("src=\"/admin/panel/assets/app.js\""));
    for (name, kind) in [
        ("app.js", "text/javascript"),
        ("i18n.js", "text/javascript"),
        ("app.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let r = get(&app, &format!("/admin/panel/assets/{name}"), &[]).await;
        assert_eq!(r.status(), 200, "{name}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        assert!(r.headers().contains_key("content-security-policy"));
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        let again = get(
            &app,
            &format!("/admin/panel/assets/{name}"),
            &[("if-none-match", &etag)],
        )
        .await;
        assert_eq!(again.status(), 304, "{name}");
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("//cdn") && !body.contains("fonts.googleapis"),
            "{name}"
        );
    }
    let r = get(&app, "/admin/panel/assets/nope.js", &[]).await;
    assert_eq!(r.status(), 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_stream_delivers_new_lines_with_secrets_redacted() {
    business2api::telemetry::init_capture();
    let proxy_password = "proxy-pass-word-42";
    let app = app_with_password(json!({
        "admin_keys": [ADMIN_KEY],
        "proxy": format!("http://user:{proxy_password}@127.0.0.1:9"),
    }))
    .await;
    let (cookie, _) = login(&app).await;
    let r = get(&app, "/admin/logs/stream", &[("cookie", &cookie)]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut stream = SseReader::new(r);

    // A line the gateway writes itself (a failed login), and one quoting secrets.
    let r = post(
        &app,
        "/admin/login",
        &json!({"password": "wrong password!"}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 401);
    tracing::warn!(
        "panel-test marker: key {TEST_KEY} admin {ADMIN_KEY} proxy {proxy_password} \
         header Authorization: Bearer sk-abc123 url /v1beta/models?key=AIzaXYZ"
    );
    let mut seen_login = false;
    let mut marker = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (marker.is_none() || !seen_login) && tokio::time::Instant::now() < deadline {
        let Some(data) = stream.next_data().await else {
            break;
        };
        let line: Value = serde_json::from_str(&data).unwrap();
        let text = line["line"].as_str().unwrap().to_owned();
        seen_login |= text.contains("admin panel: wrong password");
        if text.contains("panel-test marker") {
            marker = Some(text);
        }
    }
    assert!(seen_login, "the failed login's line was streamed");
    let marker = marker.expect("the marker line was streamed");
    for secret in [TEST_KEY, ADMIN_KEY, proxy_password, "sk-abc123", "AIzaXYZ"] {
        assert!(!marker.contains(secret), "{secret} in {marker}");
    }
    assert!(marker.contains("[redacted]"), "{marker}");
    assert!(
        marker.contains(" WARN "),
        "formatted like the stderr line: {marker}"
    );

    // The recent lines hold it too, redacted, for the admin key as for the session.
    let recent: Value = app
        .client
        .get(app.url("/admin/logs"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(recent["capturing"], true);
    let all = recent.to_string();
    assert!(all.contains("panel-test marker"));
    for secret in [
        TEST_KEY,
        ADMIN_KEY,
        proxy_password,
        PASSWORD,
        "wrong password!",
    ] {
        assert!(!all.contains(secret), "{secret} served");
    }
    app.stop().await;
}
