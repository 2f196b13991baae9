//! What a request body may cost before a handler reads it: a `Content-Length` above the limit
//! is refused before any byte is read, a body that stops arriving gets 408, and the bytes of
//! all bodies in flight share one budget (503 with `Retry-After` when it stays full). Raw TCP,
//! because an HTTP client library cannot announce a body and then withhold it.

use std::time::{Duration, Instant};

use business2api_tests::{TEST_KEY, TestApp, TestOptions, spawn_app_with};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends a request head (and `body`, if any) and returns the open connection.
async fn send_head(
    app: &TestApp,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream
}

/// Reads one response (status, headers lower-cased, body) from `stream`.
async fn read_response(stream: &mut TcpStream) -> (u16, String, Value) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .expect("a response within 20 s")
            .unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                let body = serde_json::from_slice(&raw[end + 4..end + 4 + length]).unwrap();
                return (status, head, body);
            }
        }
    }
    panic!(
        "the connection closed before a whole response: {:?}",
        String::from_utf8_lossy(&raw)
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn auth() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TEST_KEY}"))
}

#[tokio::test]
async fn a_content_length_above_the_limit_is_refused_before_the_body_is_read() {
    let app = spawn_app_with(TestOptions::default().config(json!({
        "http": { "max_request_body_mb": 1 }
    })))
    .await;
    // OpenAI: announce 10 GB, send nothing: the answer comes at once, in OpenAI's shape.
    let started = Instant::now();
    let mut conn = send_head(
        &app,
        "/v1/chat/completions",
        &[
            auth(),
            ("Content-Type", "application/json".into()),
            ("Content-Length", "10000000000".into()),
        ],
        b"",
    )
    .await;
    let (status, _, body) = read_response(&mut conn).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "request_too_large", "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Anthropic, one byte over the limit.
    let mut conn = send_head(
        &app,
        "/v1/messages",
        &[
            ("x-api-key", TEST_KEY.into()),
            ("anthropic-version", "2023-06-01".into()),
            ("Content-Length", (1024 * 1024 + 1).to_string()),
        ],
        b"",
    )
    .await;
    let (status, _, body) = read_response(&mut conn).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "request_too_large", "{body}");

    // Gemini.
    let mut conn = send_head(
        &app,
        "/v1beta/models/gemini-2.5-flash:generateContent",
        &[
            ("x-goog-api-key", TEST_KEY.into()),
            ("Content-Length", "99999999999".into()),
        ],
        b"",
    )
    .await;
    let (status, _, body) = read_response(&mut conn).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT", "{body}");

    // Without a key the key check answers first: an unauthenticated caller learns nothing
    // about the limits and takes nothing from the budget.
    let mut conn = send_head(
        &app,
        "/v1/chat/completions",
        &[("Content-Length", "10000000000".into())],
        b"",
    )
    .await;
    let (status, _, _) = read_response(&mut conn).await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_in_the_callers_dialect() {
    let app = spawn_app_with(TestOptions::default().config(json!({
        "http": { "body_read_timeout_sec": 1 }
    })))
    .await;
    let started = Instant::now();
    // Announces 100 kB, sends 10 bytes, then nothing.
    let mut conn = send_head(
        &app,
        "/v1/messages",
        &[
            ("x-api-key", TEST_KEY.into()),
            ("anthropic-version", "2023-06-01".into()),
            ("Content-Length", "100000".into()),
        ],
        b"{\"model\":",
    )
    .await;
    let (status, _, body) = read_response(&mut conn).await;
    let waited = started.elapsed();
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("http.body_read_timeout_sec"),
        "{body}"
    );
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    // The budget it held is back: a normal request goes through.
    let ok = app
        .chat(business2api_tests::chat_body(
            "gemini-2.5-flash",
            "hi",
            false,
        ))
        .await;
    assert_eq!(ok.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn bodies_in_flight_share_one_budget() {
    let app = spawn_app_with(TestOptions::default().config(json!({
        "http": { "inflight_body_mb": 1, "inflight_wait_ms": 300, "body_read_timeout_sec": 30 }
    })))
    .await;
    // A slow client holds 900 KiB of the 1 MiB budget: it announced them and sends slowly.
    let held = 900 * 1024;
    let mut slow = send_head(
        &app,
        "/v1/chat/completions",
        &[auth(), ("Content-Length", held.to_string())],
        b"{\"model\":\"gemini-2.5-flash\",\"messages\":[{\"role\":\"user\",\"content\":\"",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Another 200 KiB body does not fit: after waiting inflight_wait_ms, 503 with Retry-After,
    // in the caller's dialect, before its body is read.
    let big = chat_of_size(200 * 1024);
    let refused = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(TEST_KEY)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "server_busy", "{body}");

    // A chunked body (no Content-Length) takes from the budget as its chunks arrive.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .as_bytes()
        .chunks(64 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let refused = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", TEST_KEY)
        .header("anthropic-version", "2023-06-01")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");

    // A small request still fits beside the held bytes.
    let ok = app
        .chat(business2api_tests::chat_body(
            "gemini-2.5-flash",
            "hi",
            false,
        ))
        .await;
    assert_eq!(ok.status(), 200);

    // The slow client finishes its body (the request itself is valid JSON of that size) and
    // gets its answer; its bytes are then back, and the big request fits.
    let sent =
        "{\"model\":\"gemini-2.5-flash\",\"messages\":[{\"role\":\"user\",\"content\":\"".len();
    let tail = "\"}]}";
    let filler = "a".repeat(held - sent - tail.len());
    slow.write_all(filler.as_bytes()).await.unwrap();
    slow.write_all(tail.as_bytes()).await.unwrap();
    let (status, _, body) = read_response(&mut slow).await;
    assert_eq!(status, 200, "{body}");
    let ok = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(TEST_KEY)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    app.stop().await;
}

/// A valid chat request body of about `size` bytes.
fn chat_of_size(size: usize) -> String {
    let text = "a".repeat(size);
    json!({
        "model": "gemini-2.5-flash",
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
}
