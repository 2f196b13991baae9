//! Hostile request heads: forwarding headers and `Host` decide the gateway's own links only as
//! far as they can be trusted, and oversized URLs and headers are refused in the caller's
//! dialect.

use business2api_tests::{Answer, TEST_KEY, TestApp, TestOptions, chat_body, spawn_app_with};
use serde_json::{Value, json};

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0test";

async fn app(config: Value) -> TestApp {
    let app = spawn_app_with(TestOptions::default().config(config)).await;
    app.sim.set_answer(
        Answer::new()
            .text("Here: ")
            .image("image/png", PNG.to_vec()),
    );
    app
}

/// The OpenAI chat answer to an image request sent with `headers`: the whole content and the
/// link in its markdown image.
async fn image_answer(app: &TestApp, headers: &[(&str, &str)]) -> (String, String) {
    let mut request = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(TEST_KEY)
        .json(&chat_body("gemini-2.5-flash-image", "draw", false));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the gateway answers");
    assert_eq!(response.status(), 200);
    let v: Value = response.json().await.expect("JSON");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("text content")
        .to_owned();
    let start = content.find("](").expect("a markdown link") + 2;
    let end = start + content[start..].find(')').expect("the link ends");
    let link = content[start..end].to_owned();
    (content, link)
}

/// A link is `<base>/media/<43 base64url chars>.png`.
fn assert_media_link(link: &str, base: &str) {
    let name = link
        .strip_prefix(&format!("{base}/media/"))
        .unwrap_or_else(|| panic!("{link} does not start with {base}/media/"));
    let (token, ext) = name.split_once('.').expect("a file name");
    assert_eq!(ext, "png", "{link}");
    assert_eq!(token.len(), 43, "{link}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{link}"
    );
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_do_not_make_the_links() {
    let app = app(json!({})).await;
    let own = format!("http://127.0.0.1:{}", app.port);
    for spoof in [
        vec![
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
        ],
        vec![("forwarded", "for=1.2.3.4;host=evil.example;proto=https")],
        vec![
            ("x-forwarded-host", "evil.example:443"),
            ("forwarded", "host=evil.example"),
        ],
    ] {
        let (content, link) = image_answer(&app, &spoof).await;
        assert!(!content.contains("evil.example"), "{spoof:?}: {content}");
        assert_media_link(&link, &own);
        // The link works.
        let got = app
            .client
            .get(&link)
            .send()
            .await
            .expect("the link answers");
        assert_eq!(got.status(), 200);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_crafted_host_header_cannot_inject_into_the_answer() {
    let app = app(json!({})).await;
    let own = format!("http://127.0.0.1:{}", app.port);
    for host in [
        "x) ![pwn](http://evil.example/a.png",
        "evil.example/phish",
        "user@evil.example",
        "evil.example:80 x",
        "[evil.example]",
    ] {
        let (content, link) = image_answer(&app, &[("host", host)]).await;
        assert!(!content.contains("evil.example"), "{host}: {content}");
        assert!(!content.contains("pwn"), "{host}: {content}");
        // Without a usable Host: the concrete listening address.
        assert_media_link(&link, &own);
    }
    // A plain host[:port] is how the client reached the gateway: its own links use it.
    let (_, link) = image_answer(&app, &[("host", "gw.example:8080")]).await;
    assert_media_link(&link, "http://gw.example:8080");
    app.stop().await;
}

#[tokio::test]
async fn a_trusted_proxy_decides_scheme_and_host() {
    let app = app(json!({"http": {"trusted_proxies": ["127.0.0.1/32"]}})).await;
    let (_, link) = image_answer(
        &app,
        &[
            ("x-forwarded-host", "pub.example"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_media_link(&link, "https://pub.example");
    let (_, link) = image_answer(
        &app,
        &[
            (
                "forwarded",
                "for=198.51.100.7;host=\"pub.example:8443\";proto=https",
            ),
            ("x-forwarded-host", "other.example"),
        ],
    )
    .await;
    assert_media_link(&link, "https://pub.example:8443");
    // Even a trusted proxy cannot put a path or a script scheme into a link.
    let (content, link) = image_answer(
        &app,
        &[
            ("x-forwarded-host", "evil.example/x"),
            ("x-forwarded-proto", "javascript"),
        ],
    )
    .await;
    assert!(!content.contains("evil.example") && !content.contains("javascript"));
    assert_media_link(&link, &format!("http://127.0.0.1:{}", app.port));
    app.stop().await;
}

#[tokio::test]
async fn without_any_usable_host_the_link_is_relative() {
    // Listening on every interface: no concrete address to fall back to.
    let app = app(json!({"listen_addr": "0.0.0.0:0"})).await;
    let (content, link) = image_answer(&app, &[("host", "x) ![pwn](http://evil.example")]).await;
    assert!(!content.contains("evil.example"), "{content}");
    assert_media_link(&link, "");
    let got = app
        .client
        .get(app.url(&link))
        .send()
        .await
        .expect("answers");
    assert_eq!(got.status(), 200);
    app.stop().await;
}

/// A request to `path` with `headers`, as (status, JSON body).
async fn send_raw(app: &TestApp, path: &str, headers: &[(String, String)]) -> (u16, Value) {
    let mut request = app.client.post(app.url(path)).body("{}");
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("a body");
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("{status}: not JSON: {:?}", String::from_utf8_lossy(&body)));
    (status, v)
}

/// The three dialects: a path, its key header, and how to read the error type and message.
fn dialects() -> [(&'static str, (String, String)); 3] {
    [
        (
            "/v1/chat/completions",
            ("authorization".to_owned(), format!("Bearer {TEST_KEY}")),
        ),
        (
            "/v1/messages",
            ("x-api-key".to_owned(), TEST_KEY.to_owned()),
        ),
        (
            "/v1beta/models/gemini-2.5-flash:generateContent",
            ("x-goog-api-key".to_owned(), TEST_KEY.to_owned()),
        ),
    ]
}

fn assert_dialect_error(path: &str, status: u16, v: &Value, words: &str) {
    if path.starts_with("/v1beta") {
        assert_eq!(v["error"]["code"], status, "{v}");
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(words),
            "{v}"
        );
    } else if path.starts_with("/v1/messages") {
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(words),
            "{v}"
        );
    } else {
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(words),
            "{v}"
        );
    }
}

#[tokio::test]
async fn a_url_over_16_kib_is_414_in_the_callers_dialect() {
    let app = app(json!({})).await;
    let pad = "a".repeat(17 * 1024);
    for (path, key) in dialects() {
        let (status, v) = send_raw(
            &app,
            &format!("{path}?pad={pad}"),
            std::slice::from_ref(&key),
        )
        .await;
        assert_eq!(status, 414, "{path}: {v}");
        assert_dialect_error(path, 414, &v, "URL");
        // Also before the key is checked: no key needed to get the right answer.
        let (status, v) = send_raw(&app, &format!("{path}?pad={pad}"), &[]).await;
        assert_eq!(status, 414, "{path}: {v}");
    }
    // Just under the limit is not refused for its length.
    let (status, _) = send_raw(
        &app,
        &format!("/v1/chat/completions?pad={}", "a".repeat(15 * 1024)),
        &[],
    )
    .await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431_in_the_callers_dialect() {
    let app = app(json!({})).await;
    for (path, key) in dialects() {
        // 70 header lines (actix itself takes up to 96).
        let mut many: Vec<(String, String)> = (0..70)
            .map(|i| (format!("x-pad-{i}"), "v".to_owned()))
            .collect();
        many.push(key.clone());
        let (status, v) = send_raw(&app, path, &many).await;
        assert_eq!(status, 431, "{path}: {v}");
        assert_dialect_error(path, 431, &v, "header");
        // Few headers, 40 KiB of them (actix itself takes a head up to 128 KiB).
        let big = vec![
            ("x-big-1".to_owned(), "b".repeat(20 * 1024)),
            ("x-big-2".to_owned(), "b".repeat(20 * 1024)),
            key.clone(),
        ];
        let (status, v) = send_raw(&app, path, &big).await;
        assert_eq!(status, 431, "{path}: {v}");
        assert_dialect_error(path, 431, &v, "header");
    }
    app.stop().await;
}
