//! Upstream TLS is verified: a server with a certificate no trusted authority signed never sees
//! a completed handshake, let alone a request carrying account cookies.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use business2api_tests::{TestOptions, chat_body, spawn_app_with};
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[tokio::test]
async fn a_self_signed_upstream_certificate_is_refused() {
    business2api_tests::init();
    let acceptor = business2api_tests::self_signed_tls("localhost");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(AtomicUsize::new(0));
    {
        let (connections, handshakes) = (connections.clone(), handshakes.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                if acceptor.accept(stream).await.is_ok() {
                    handshakes.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    let base = format!("https://localhost:{port}");
    let app = spawn_app_with(
        TestOptions::default()
            .config(json!({"gemini_business": {"auth_base_url": base, "api_base_url": base}})),
    )
    .await;
    let response = app.chat(chat_body("gemini-2.5-flash", "x", false)).await;
    assert_eq!(response.status(), 502);
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_error");
    assert!(
        connections.load(Ordering::SeqCst) >= 1,
        "the gateway did try to connect"
    );
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        0,
        "no TLS session was established with an untrusted certificate"
    );
    app.stop().await;
}
