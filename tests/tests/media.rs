//! Client media in: URLs go to the upstream by URI; when it refuses them the gateway fetches
//! them itself — with SSRF protection (loopback, private, link-local and metadata addresses
//! refused, checked after DNS resolution and on every redirect, an allowlist in config), a
//! size limit, a timeout and content-type sniffing. Inline media is checked before any account
//! is used. Generated media links answer `HEAD`.
//!
//! Every origin server here is a tiny HTTP server on 127.0.0.1 that counts its connections, so
//! a test can show that a refused target was never contacted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use business2api_tests::{
    Answer, Endpoint, TestApp, TestOptions, Wire, chat_body, read_stream, spawn_app, spawn_app_with,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use upstream_sim::FileUris;

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0test";
const BOUND: Duration = Duration::from_secs(15);

/// What the origin answers to one request.
#[derive(Clone)]
enum Reply {
    Raw(Vec<u8>),
    /// Accepts and never answers.
    Hang,
}

/// A local HTTP origin: one response per connection, chosen by the request path.
#[derive(Clone)]
struct Origin {
    port: u16,
    connections: Arc<AtomicUsize>,
    paths: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Origin {
    async fn start(respond: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = Origin {
            port: listener.local_addr().unwrap().port(),
            connections: Arc::new(AtomicUsize::new(0)),
            paths: Arc::new(std::sync::Mutex::new(Vec::new())),
        };
        let respond = Arc::new(respond);
        let o = origin.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                o.connections.fetch_add(1, Ordering::SeqCst);
                let respond = Arc::clone(&respond);
                let paths = Arc::clone(&o.paths);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                    paths.lock().unwrap().push(path.clone());
                    match respond(&path) {
                        Reply::Raw(bytes) => {
                            let _ = socket.write_all(&bytes).await;
                            let _ = socket.shutdown().await;
                        }
                        Reply::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                });
            }
        });
        origin
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

/// An HTTP/1.1 response; `length: false` leaves out `content-length` (body ends at close).
fn http(status: &str, headers: &[(&str, &str)], body: &[u8], length: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if length {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn png(content_type: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = content_type
        .map(|c| ("content-type", c))
        .into_iter()
        .collect();
    Reply::Raw(http("200 OK", &headers, PNG, true))
}

fn redirect(to: &str) -> Reply {
    Reply::Raw(http("302 Found", &[("location", to)], b"", true))
}

fn image_request(url: &str, stream: bool) -> Value {
    json!({
        "model": "gemini-2.5-flash",
        "stream": stream,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is in this picture?"},
            {"type": "image_url", "image_url": {"url": url}}
        ]}]
    })
}

async fn send(app: &TestApp, body: Value) -> (u16, Value) {
    let response = tokio::time::timeout(BOUND, app.chat(body))
        .await
        .expect("the request ends within its bound");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body: {text}"));
    (status, v)
}

fn message(v: &Value) -> &str {
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("an OpenAI error: {v}"))
}

fn inline_uploads(app: &TestApp) -> Vec<upstream_sim::Upload> {
    app.sim
        .uploads()
        .into_iter()
        .filter(|u| u.file_uri.is_none())
        .collect()
}

async fn app_with(accounts: u32, media: Value) -> TestApp {
    spawn_app_with(
        TestOptions::default()
            .accounts(accounts)
            .config(json!({ "media": media })),
    )
    .await
}

#[tokio::test]
async fn a_url_the_upstream_takes_is_not_fetched_by_the_gateway() {
    let origin = Origin::start(|_| png(Some("image/png"))).await;
    let app = app_with(
        1,
        json!({ "fetch_allow": [format!("127.0.0.1:{}", origin.port)] }),
    )
    .await;
    let url = origin.url("/cat.png");
    let (status, v) = send(&app, image_request(&url, false)).await;
    assert_eq!(status, 200, "{v}");
    let uploads = app.sim.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].file_uri.as_deref(), Some(url.as_str()));
    assert_eq!(
        origin.connections(),
        0,
        "the gateway fetched a URL the upstream took"
    );
    app.stop().await;
}

/// THE SSRF test: each refused target, end to end, with the upstream refusing the URI so the
/// gateway falls back to fetching: a 400 saying why, no connection to the target, nothing
/// uploaded inline, one account tried, and the account unharmed.
#[tokio::test]
async fn loopback_private_and_metadata_targets_are_refused() {
    // A live local server that must never be contacted.
    let target = Origin::start(|_| png(Some("image/png"))).await;
    let app = app_with(2, json!({})).await;
    app.sim.set_file_uris(FileUris::Refuse);
    let p = target.port;
    let cases = [
        (
            format!("http://127.0.0.1:{p}/x.png"),
            "127.0.0.1, a loopback address",
        ),
        // The same address spelled as WHATWG URL parsers read it.
        (
            format!("http://0x7f.0.0.1:{p}/x.png"),
            "127.0.0.1, a loopback address",
        ),
        (
            "http://10.0.0.1/x.png".to_owned(),
            "10.0.0.1, a private address",
        ),
        (
            "http://192.168.1.1/x.png".to_owned(),
            "192.168.1.1, a private address",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "169.254.169.254, a cloud metadata address",
        ),
        (format!("http://[::1]:{p}/x.png"), "::1, a loopback address"),
        (
            format!("http://[::ffff:127.0.0.1]:{p}/x.png"),
            "127.0.0.1, a loopback address",
        ),
        (
            "http://[fd00:ec2::254]/latest/meta-data/".to_owned(),
            "fd00:ec2::254, a cloud metadata address",
        ),
        // A DNS name that resolves to loopback: refused after resolution.
        (
            format!("http://localhost:{p}/x.png"),
            "localhost resolves to",
        ),
        // Credentials in the URL are never echoed.
        (
            format!("http://user:hunter2@127.0.0.1:{p}/x.png?sig=topsecret"),
            "127.0.0.1, a loopback address",
        ),
    ];
    for (i, (url, why)) in cases.iter().enumerate() {
        let stream = i % 2 == 1;
        let started = Instant::now();
        let (status, v) = send(&app, image_request(url, stream)).await;
        assert_eq!(status, 400, "{url}: {v}");
        let msg = message(&v);
        assert!(
            msg.contains("was refused") && msg.contains(why),
            "{url}: {msg}"
        );
        assert!(msg.contains("media.fetch_allow"), "{msg}");
        assert!(
            !msg.contains("hunter2") && !msg.contains("topsecret"),
            "{msg}"
        );
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(started.elapsed() < Duration::from_secs(5), "{url}");
    }
    assert_eq!(target.connections(), 0, "a refused target was contacted");
    assert!(
        inline_uploads(&app).is_empty(),
        "something was uploaded inline"
    );
    // Each request asked the upstream by URI first (then fell back), on one account only.
    let uri_attempts = app
        .sim
        .requests(Endpoint::AddContextFile)
        .iter()
        .filter(|r| r.status == 400)
        .count();
    assert_eq!(uri_attempts, cases.len());
    assert_eq!(app.sim.requests(Endpoint::CreateSession).len(), cases.len());
    // Not the account's fault: both still serve at once.
    for _ in 0..2 {
        let (status, v) = send(&app, chat_body("gemini-2.5-flash", "hello", false)).await;
        assert_eq!(status, 200, "{v}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_redirect_from_an_allowed_origin_to_a_refused_address_is_refused_on_the_hop() {
    let inner = Origin::start(|_| png(Some("image/png"))).await;
    let inner_url = inner.url("/secret.png");
    let front = Origin::start(move |path| match path {
        "/to-loopback" => redirect(&inner_url),
        "/to-metadata" => redirect("http://169.254.169.254/latest/meta-data/"),
        _ => Reply::Raw(http("404 Not Found", &[], b"", true)),
    })
    .await;
    let app = app_with(
        1,
        json!({ "fetch_allow": [format!("127.0.0.1:{}", front.port)] }),
    )
    .await;
    app.sim.set_file_uris(FileUris::Refuse);
    for (path, refused) in [
        (
            "/to-loopback",
            format!("http://127.0.0.1:{}/secret.png", inner.port),
        ),
        (
            "/to-metadata",
            "http://169.254.169.254/latest/meta-data/".to_owned(),
        ),
    ] {
        let (status, v) = send(&app, image_request(&front.url(path), false)).await;
        assert_eq!(status, 400, "{v}");
        let msg = message(&v);
        assert!(
            msg.contains(&format!("the media URL {refused} was refused"))
                && msg.contains("reached by a redirect from"),
            "{msg}"
        );
    }
    assert_eq!(front.paths(), ["/to-loopback", "/to-metadata"]);
    assert_eq!(inner.connections(), 0, "the redirect target was contacted");
    assert!(inline_uploads(&app).is_empty());
    app.stop().await;
}

/// The allowlisted origin serves a PNG with a lying, a generic or no content type; a
/// redirect between allowed URLs is followed. The upstream gets the bytes inline, labelled
/// `image/png`, and the answer goes on.
#[tokio::test]
async fn an_allowed_origin_is_fetched_and_its_type_sniffed() {
    let origin = Origin::start(|path| match path {
        "/lying" => png(Some("text/html")),
        "/generic" => png(Some("application/octet-stream")),
        "/none" => png(None),
        "/hop" => redirect("/none"),
        _ => Reply::Raw(http("404 Not Found", &[], b"", true)),
    })
    .await;
    let app = app_with(
        1,
        json!({ "fetch_allow": [format!("127.0.0.1:{}", origin.port)] }),
    )
    .await;
    app.sim.set_file_uris(FileUris::Refuse);
    for (i, path) in ["/lying", "/generic", "/none", "/hop"].iter().enumerate() {
        let (status, v) = send(&app, image_request(&origin.url(path), false)).await;
        assert_eq!(status, 200, "{path}: {v}");
        let uploads = inline_uploads(&app);
        assert_eq!(uploads.len(), i + 1, "{path}");
        let up = &uploads[i];
        assert_eq!(up.mime_type.as_deref(), Some("image/png"), "{path}");
        assert_eq!(up.bytes.as_deref(), Some(PNG), "{path}");
        assert!(up.file_name.as_deref().is_some_and(|n| n.ends_with(".png")));
    }
    assert_eq!(
        origin.paths(),
        ["/lying", "/generic", "/none", "/hop", "/none"]
    );
    // Streamed too (the stream goes through the chat checker).
    let response = app.chat(image_request(&origin.url("/generic"), true)).await;
    assert_eq!(response.status(), 200);
    let summary = read_stream(
        response,
        Wire::ChatCompletions {
            include_usage: false,
        },
    )
    .await;
    assert!(summary.error.is_none(), "{:?}", summary.error);
    assert!(summary.text.contains("You asked"), "{}", summary.text);
    assert_eq!(inline_uploads(&app).len(), 5);
    app.stop().await;
}

#[tokio::test]
async fn an_empty_file_id_for_a_uri_also_falls_back_to_a_fetch() {
    let origin = Origin::start(|_| png(Some("image/png"))).await;
    let app = app_with(
        1,
        json!({ "fetch_allow": [format!("127.0.0.1:{}", origin.port)] }),
    )
    .await;
    app.sim.set_file_uris(FileUris::EmptyFileId);
    let (status, v) = send(&app, image_request(&origin.url("/a.png"), false)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(inline_uploads(&app).len(), 1);
    assert_eq!(origin.connections(), 1);
    app.stop().await;
}

#[tokio::test]
async fn oversized_slow_missing_and_unsupported_media_get_clear_errors() {
    let big = vec![0x42u8; 1024 * 1024 + 10];
    let mut big_png = PNG.to_vec();
    big_png.extend_from_slice(&big);
    let origin = Origin::start(move |path| match path {
        "/big-declared" => Reply::Raw(http(
            "200 OK",
            &[("content-type", "image/png")],
            &big_png,
            true,
        )),
        "/big-streamed" => Reply::Raw(http(
            "200 OK",
            &[("content-type", "image/png")],
            &big_png,
            false,
        )),
        "/slow" => Reply::Hang,
        "/exe" => Reply::Raw(http(
            "200 OK",
            &[("content-type", "image/png")],
            b"MZ\x90\0\x03\0\0\0\x04\0",
            true,
        )),
        "/page" => Reply::Raw(http(
            "200 OK",
            &[("content-type", "text/html; charset=utf-8")],
            b"<!doctype html><html><body>login</body></html>",
            true,
        )),
        "/empty" => Reply::Raw(http("200 OK", &[("content-type", "image/png")], b"", true)),
        _ => Reply::Raw(http(
            "404 Not Found",
            &[("content-type", "text/html")],
            b"<h1>no</h1>",
            true,
        )),
    })
    .await;
    let app = app_with(
        2,
        json!({
            "fetch_allow": [format!("127.0.0.1:{}", origin.port)],
            "fetch_max_mb": 1,
            "fetch_timeout_sec": 1,
        }),
    )
    .await;
    app.sim.set_file_uris(FileUris::Refuse);
    let cases = [
        (
            "/big-declared",
            413,
            "larger than the limit of 1048576 bytes",
        ),
        (
            "/big-streamed",
            413,
            "larger than the limit of 1048576 bytes",
        ),
        ("/slow", 400, "took longer than 1 s"),
        ("/missing.png", 400, "answered HTTP 404"),
        ("/exe", 400, "application/x-msdownload is not supported"),
        ("/page", 400, "text/html is not supported"),
        ("/empty", 400, "is empty"),
    ];
    for (path, want_status, want) in cases {
        let started = Instant::now();
        let (status, v) = send(&app, image_request(&origin.url(path), false)).await;
        assert_eq!(status, want_status, "{path}: {v}");
        let msg = message(&v);
        assert!(msg.contains(want), "{path}: {msg}");
        assert!(msg.contains(&origin.url(path)), "{path}: {msg}");
        assert!(started.elapsed() < Duration::from_secs(5), "{path}");
    }
    assert!(inline_uploads(&app).is_empty());
    // No failover: one session per request.
    assert_eq!(app.sim.requests(Endpoint::CreateSession).len(), cases.len());
    let (status, v) = send(&app, chat_body("gemini-2.5-flash", "still fine?", false)).await;
    assert_eq!(status, 200, "{v}");
    app.stop().await;
}

fn data_url(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", STANDARD.encode(bytes))
}

#[tokio::test]
async fn inline_media_is_checked_before_any_account_is_used() {
    let app = app_with(1, json!({ "fetch_max_mb": 1 })).await;
    // Refused types and sizes never reach the upstream.
    for (url, status, want) in [
        (
            data_url("application/x-msdownload", b"MZ\x90\0\x03"),
            400,
            "application/x-msdownload is not supported",
        ),
        (
            data_url("image/png", b"MZ\x90\0\x03"),
            400,
            "application/x-msdownload is not supported",
        ),
        (
            data_url("application/octet-stream", b"\x00\x01\x02\x03"),
            400,
            "could not be determined",
        ),
        (
            data_url("image/png", &vec![0u8; 1024 * 1024 + 1]),
            413,
            "limit for one media file is 1048576 bytes",
        ),
    ] {
        let (s, v) = send(&app, image_request(&url, false)).await;
        assert_eq!(s, status, "{v}");
        assert!(message(&v).contains(want), "{v}");
    }
    assert!(
        app.sim.requests(Endpoint::GetOxsrf).is_empty(),
        "an account was used"
    );
    assert!(app.sim.requests(Endpoint::CreateSession).is_empty());
    // A generic or wrong label is corrected from the bytes.
    for label in ["application/octet-stream", "image/jpeg"] {
        let (s, v) = send(&app, image_request(&data_url(label, PNG), false)).await;
        assert_eq!(s, 200, "{v}");
    }
    let uploads = inline_uploads(&app);
    assert_eq!(uploads.len(), 2);
    for up in uploads {
        assert_eq!(up.mime_type.as_deref(), Some("image/png"));
        assert_eq!(up.bytes.as_deref(), Some(PNG));
    }
    app.stop().await;
}

#[tokio::test]
async fn generated_media_links_answer_head() {
    let app = spawn_app().await;
    app.sim.set_answer(
        Answer::new()
            .text("Here: ")
            .image("image/png", PNG.to_vec()),
    );
    let (status, v) = send(&app, chat_body("gemini-2.5-flash-image", "draw", false)).await;
    assert_eq!(status, 200, "{v}");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = content.find("](").expect("a markdown link") + 2;
    let end = start + content[start..].find(')').unwrap();
    let link = &content[start..end];
    let head = app.client.head(link).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "image/png");
    assert_eq!(
        head.headers()["content-length"],
        PNG.len().to_string().as_str()
    );
    assert!(head.bytes().await.unwrap().is_empty());
    let missing = app
        .client
        .head(format!("{}/media/{}.png", app.address, "B".repeat(43)))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    app.stop().await;
}
