//! Egress proxies (issue 14) in front of an HTTPS upstream: traffic is tunnelled (HTTP CONNECT,
//! SOCKS5), with the proxy's credentials. The upstream here has a certificate no authority
//! signed, so no TLS session is ever established (upstream TLS stays verified); what it records
//! is where each tunnelled connection came from — the proxy's own outgoing address — which
//! proves the tunnel was opened with the right credentials.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use business2api_tests::proxies::ProxyProcess;
use business2api_tests::{TestOptions, chat_body, spawn_app_with};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A TLS server on 127.0.0.1 with a self-signed certificate; returns its base URL and the
/// peers of the connections it accepted.
async fn tls_upstream() -> (String, Arc<Mutex<Vec<SocketAddr>>>) {
    let acceptor = business2api_tests::self_signed_tls("127.0.0.1");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            seen.lock().unwrap().push(peer);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    (format!("https://127.0.0.1:{port}"), peers)
}

async fn chat_error(proxy: &str, base: &str) -> (u16, Value) {
    let app = spawn_app_with(TestOptions::default().config(json!({
        "proxy": proxy,
        "gemini_business": {"auth_base_url": base, "api_base_url": base},
    })))
    .await;
    let r = app.chat(chat_body("gemini-2.5-flash", "x", false)).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    app.stop().await;
    (status, body)
}

#[tokio::test]
async fn https_traffic_is_tunnelled_through_http_connect_and_socks5_with_credentials() {
    business2api_tests::init();
    let http =
        ProxyProcess::tinyproxy(Some(("tun", "connect-pw")), Ipv4Addr::new(127, 0, 0, 40)).unwrap();
    let socks =
        ProxyProcess::microsocks(Some(("tun", "socks-pw")), Ipv4Addr::new(127, 0, 0, 41)).unwrap();
    for (proxy, exit) in [(&http, 40), (&socks, 41)] {
        let (base, peers) = tls_upstream().await;
        let (status, body) = chat_error(&proxy.url(), &base).await;
        // The tunnel reached the upstream from the proxy's address…
        let peers = peers.lock().unwrap().clone();
        assert!(!peers.is_empty(), "nothing came through {}", proxy.url());
        for p in &peers {
            assert_eq!(p.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, exit)));
        }
        // …and the untrusted certificate was refused (TLS through a proxy is its fault: 503).
        assert_eq!(status, 503, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("TLS handshake failed"), "{message}");
        assert!(!body.to_string().contains("-pw"), "{body}");
    }
}

#[tokio::test]
async fn a_tunnel_refused_for_wrong_credentials_names_the_proxy_and_reaches_nothing() {
    business2api_tests::init();
    let http =
        ProxyProcess::tinyproxy(Some(("tun", "right-pw")), Ipv4Addr::new(127, 0, 0, 42)).unwrap();
    let socks =
        ProxyProcess::microsocks(Some(("tun", "right-pw")), Ipv4Addr::new(127, 0, 0, 43)).unwrap();
    for proxy in [&http, &socks] {
        let (base, peers) = tls_upstream().await;
        let wrong = proxy.url_with("tun", "wrong-tunnel-pw");
        let (status, body) = chat_error(&wrong, &base).await;
        assert!(peers.lock().unwrap().is_empty(), "the upstream was reached");
        assert_eq!(status, 503, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("refused its credentials")
                || message.contains("refused the tunnel (its credentials are wrong"),
            "{message}"
        );
        assert!(
            message.contains(&format!("tun:[redacted]@127.0.0.1:{}", proxy.port())),
            "{message}"
        );
        assert!(!body.to_string().contains("wrong-tunnel-pw"), "{body}");
    }
}
