//! Egress proxies (issue 14) through the real wiring: real SOCKS5 (`microsocks`) and HTTP
//! CONNECT (`tinyproxy`) proxies on loopback, each binding its outgoing connections to its own
//! source address, so the simulator's recorded peer says which proxy a request came through.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use business2api_tests::proxies::ProxyProcess;
use business2api_tests::*;
use serde_json::{Value, json};
use upstream_sim::{Endpoint, SimAccount};

const ADMIN: &str = "admin-key-egress-0123456789";

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// Writes `urls` as a proxy list file in `dir` and returns its path.
fn proxy_file(dir: &std::path::Path, name: &str, urls: &[String]) -> String {
    let path = dir.join(name);
    let mut text = String::from("# egress proxies\n\n");
    for u in urls {
        text.push_str(u);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn options(accounts: u32, proxy_pool: Value) -> TestOptions {
    TestOptions::default().accounts(accounts).config(json!({
        "admin_keys": [ADMIN],
        "pool": {"use_cooldown_sec": 0},
        "proxy_pool": proxy_pool,
    }))
}

async fn proxies(app: &TestApp) -> Value {
    app.get_json_as(ADMIN, "/admin/proxies").await
}

/// Account e-mail → the bind address of the proxy it is pinned to, from `/admin/proxies`.
fn pins_by_ip(view: &Value, by_port: &BTreeMap<String, Ipv4Addr>) -> BTreeMap<String, Ipv4Addr> {
    let mut out = BTreeMap::new();
    for p in view["proxies"].as_array().unwrap() {
        let url = p["url"].as_str().unwrap();
        let ip = by_port
            .iter()
            .find(|(port, _)| url.contains(&format!(":{port}")))
            .map(|(_, ip)| *ip)
            .unwrap_or_else(|| panic!("unknown proxy {url}"));
        for a in p["accounts"].as_array().unwrap() {
            out.insert(a.as_str().unwrap().to_owned(), ip);
        }
    }
    out
}

/// csesidx → e-mail of the app's accounts.
fn emails(accounts: &[SimAccount]) -> BTreeMap<String, String> {
    accounts
        .iter()
        .map(|a| (a.csesidx.clone(), a.email.clone()))
        .collect()
}

/// Every recorded U1 and U4 request of an account, with the peer it arrived from.
fn arrivals(app: &TestApp) -> Vec<(String, Endpoint, IpAddr)> {
    let by_id = emails(&app.accounts);
    let mut out = Vec::new();
    for endpoint in [Endpoint::GetOxsrf, Endpoint::StreamAssist] {
        for r in app.sim.requests(endpoint) {
            let Some(email) = r.csesidx.as_ref().and_then(|c| by_id.get(c)) else {
                continue;
            };
            out.push((email.clone(), endpoint, r.peer.unwrap().ip()));
        }
    }
    out
}

async fn chat_ok(app: &TestApp, text: &str) {
    let r = app.chat(chat_body("gemini-2.5-flash", text, false)).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
}

fn no_account_cooled_or_failed(accounts: &Value) {
    for a in accounts["accounts"].as_array().unwrap() {
        let state = a["state"].as_str().or(a["status"].as_str()).unwrap_or("");
        assert!(
            !state.contains("cool") && !state.contains("relogin") && !state.contains("disabled"),
            "an account was penalised for a proxy fault: {a}"
        );
        assert!(
            a["last_error"].is_null(),
            "a proxy fault was recorded on {a}"
        );
        assert_eq!(a["counters"]["failed"], 0, "{a}");
        assert_eq!(a["counters"]["refresh_failures"], 0, "{a}");
        for (cap, c) in a["cooldowns"].as_object().unwrap() {
            assert!(c.is_null(), "{cap} cooled down: {a}");
        }
    }
}

#[tokio::test]
async fn each_account_mints_and_chats_through_its_own_pinned_proxy() {
    let socks = ProxyProcess::microsocks(Some(("sockuser", "sock-pass-1")), ip(2)).unwrap();
    let http = ProxyProcess::tinyproxy(Some(("httpuser", "http-pass-2")), ip(3)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = proxy_file(dir.path(), "proxies.txt", &[socks.url(), http.url()]);
    let app = spawn_app_with(options(4, json!({"files": [file]}))).await;

    // Pinned at start, evenly: two accounts per proxy; passwords never shown.
    let view = proxies(&app).await;
    let text = view.to_string();
    assert!(
        !text.contains("sock-pass-1") && !text.contains("http-pass-2"),
        "{text}"
    );
    assert!(text.contains("[redacted]"), "{text}");
    assert_eq!(view["total"], 2, "{view}");
    assert_eq!(view["healthy"], 2, "{view}");
    for p in view["proxies"].as_array().unwrap() {
        assert_eq!(p["accounts"].as_array().unwrap().len(), 2, "{view}");
    }
    let by_port = BTreeMap::from([
        (socks.port().to_string(), ip(2)),
        (http.port().to_string(), ip(3)),
    ]);
    let pins = pins_by_ip(&view, &by_port);
    assert_eq!(pins.len(), 4);

    for i in 0..8 {
        chat_ok(&app, &format!("hello {i}")).await;
    }
    // Every mint (U1) and every chat (U4) of each account came from its own proxy.
    let seen = arrivals(&app);
    let used: HashSet<&String> = seen.iter().map(|(e, _, _)| e).collect();
    assert_eq!(used.len(), 4, "every account served: {seen:?}");
    for endpoint in [Endpoint::GetOxsrf, Endpoint::StreamAssist] {
        assert!(seen.iter().any(|(_, e, _)| *e == endpoint));
    }
    for (email, endpoint, peer) in &seen {
        assert_eq!(
            *peer,
            IpAddr::V4(pins[email]),
            "{email}'s {endpoint:?} did not come through its pinned proxy"
        );
    }
    // The admin account view names each account's proxy, redacted.
    let accounts = app.get_json_as(ADMIN, "/admin/accounts").await;
    for a in accounts["accounts"].as_array().unwrap() {
        let url = a["egress"]["url"].as_str().unwrap();
        assert!(
            url.contains("[redacted]") && !a.to_string().contains("-pass-"),
            "{a}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_killed_proxy_is_quarantined_and_its_accounts_move_without_any_account_cooling_down() {
    let mut a = ProxyProcess::microsocks(Some(("u", "pa")), ip(4)).unwrap();
    let b = ProxyProcess::tinyproxy(None, ip(5)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = proxy_file(dir.path(), "list.txt", &[a.url(), b.url()]);
    let app = spawn_app_with(options(4, json!({"files": [file], "quarantine_sec": 60}))).await;
    for i in 0..4 {
        chat_ok(&app, &format!("warm {i}")).await;
    }
    a.kill();
    // Requests keep being answered: an attempt through the dead proxy fails over to an account
    // behind the healthy one, without blaming the account.
    for i in 0..6 {
        chat_ok(&app, &format!("after {i}")).await;
    }
    let view = proxies(&app).await;
    let a_view = view["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["url"]
                .as_str()
                .unwrap()
                .contains(&format!(":{}", a.port()))
        })
        .unwrap()
        .clone();
    assert_eq!(a_view["state"], "quarantined", "{view}");
    assert!(a_view["accounts"].as_array().unwrap().is_empty(), "{view}");
    assert!(
        a_view["last_error"]
            .as_str()
            .unwrap()
            .contains("does not accept connections"),
        "{view}"
    );
    assert_eq!(view["healthy"], 1);
    let accounts = app.get_json_as(ADMIN, "/admin/accounts").await;
    no_account_cooled_or_failed(&accounts);

    // From now on every account's traffic arrives through the surviving proxy.
    let before = app.sim.requests(Endpoint::StreamAssist).len();
    for i in 0..4 {
        chat_ok(&app, &format!("moved {i}")).await;
    }
    for r in app.sim.requests(Endpoint::StreamAssist).iter().skip(before) {
        assert_eq!(r.peer.unwrap().ip(), IpAddr::V4(ip(5)));
    }
    app.stop().await;
}

#[tokio::test]
async fn wrong_proxy_credentials_give_a_503_naming_the_proxy_redacted_and_no_account_pays() {
    for proxy in [
        ProxyProcess::microsocks(Some(("alice", "right-pw")), ip(6)).unwrap(),
        ProxyProcess::tinyproxy(Some(("alice", "right-pw")), ip(7)).unwrap(),
    ] {
        let wrong = proxy.url_with("alice", "wrong-secret-pw");
        let app = spawn_app_with(options(2, json!({})).config(json!({"proxy": wrong}))).await;
        let r = app.chat(chat_body("gemini-2.5-flash", "hi", false)).await;
        assert_eq!(r.status().as_u16(), 503);
        let body: Value = r.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("egress proxy"), "{message}");
        assert!(
            message.contains(&format!("alice:[redacted]@127.0.0.1:{}", proxy.port())),
            "{message}"
        );
        assert!(message.contains("refused its credentials"), "{message}");
        assert!(!body.to_string().contains("wrong-secret-pw"), "{body}");
        // Nothing reached the upstream, and no account was blamed.
        assert!(arrivals(&app).is_empty());
        no_account_cooled_or_failed(&app.get_json_as(ADMIN, "/admin/accounts").await);
        let view = proxies(&app).await;
        assert!(!view.to_string().contains("wrong-secret-pw"));
        app.stop().await;
    }
}

#[tokio::test]
async fn when_no_healthy_proxy_is_left_requests_fail_fast_with_a_503_naming_the_cause() {
    let mut only = ProxyProcess::microsocks(None, ip(8)).unwrap();
    let app = spawn_app_with(options(3, json!({"proxy": only.url()}))).await;
    chat_ok(&app, "works").await;
    only.kill();
    let started = std::time::Instant::now();
    let r = app.chat(chat_body("gemini-2.5-flash", "hi", false)).await;
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("egress proxy"), "{message}");
    // Later requests are refused at once, naming the cause.
    let r = app
        .chat(chat_body("gemini-2.5-flash", "again", false))
        .await;
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("no healthy egress proxy"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));
    no_account_cooled_or_failed(&app.get_json_as(ADMIN, "/admin/accounts").await);
    app.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_every_pin() {
    let p1 = ProxyProcess::microsocks(None, ip(9)).unwrap();
    let p2 = ProxyProcess::microsocks(None, ip(10)).unwrap();
    let p3 = ProxyProcess::tinyproxy(None, ip(11)).unwrap();
    let lists = tempfile::tempdir().unwrap();
    let file = proxy_file(lists.path(), "a.txt", &[p1.url(), p2.url(), p3.url()]);
    let app = spawn_app_with(options(5, json!({"files": [file.clone()]}))).await;
    let by_port = BTreeMap::from([
        (p1.port().to_string(), ip(9)),
        (p2.port().to_string(), ip(10)),
        (p3.port().to_string(), ip(11)),
    ]);
    let before = pins_by_ip(&proxies(&app).await, &by_port);
    assert_eq!(before.len(), 5);
    let (data_dir, sim, accounts) = app.shutdown_gracefully().await;

    // Same proxies listed in the opposite order: a fresh assignment would differ.
    proxy_file(lists.path(), "a.txt", &[p3.url(), p2.url(), p1.url()]);
    let mut config = base_config(data_dir.path(), &sim);
    merge(
        &mut config,
        json!({"api_keys": [TEST_KEY], "admin_keys": [ADMIN], "pool": {"use_cooldown_sec": 0},
               "proxy_pool": {"files": [file]}}),
    );
    let app = start_app(sim, accounts, data_dir, config).await;
    let after = pins_by_ip(&proxies(&app).await, &by_port);
    assert_eq!(before, after);
    for i in 0..5 {
        chat_ok(&app, &format!("after restart {i}")).await;
    }
    for (email, _, peer) in arrivals(&app) {
        assert_eq!(peer, IpAddr::V4(after[&email]), "{email}");
    }
    app.stop().await;
}

/// A one-route HTTP server whose body the test changes.
struct Subscription {
    url: String,
    body: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn subscription_server(body: Vec<u8>) -> Subscription {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/sub?token=sub-secret-token",
        listener.local_addr().unwrap()
    );
    let body = std::sync::Arc::new(std::sync::Mutex::new(body));
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (b, f) = (body.clone(), fetches.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                break;
            };
            let b = b.lock().unwrap().clone();
            f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    b.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&b).await;
            });
        }
    });
    Subscription { url, body, fetches }
}

#[tokio::test]
async fn a_subscription_that_returns_garbage_is_reported_and_changes_nothing() {
    use base64::Engine as _;
    let p = ProxyProcess::microsocks(Some(("s", "sub-proxy-pw")), ip(12)).unwrap();
    let q = ProxyProcess::tinyproxy(None, ip(13)).unwrap();
    let list = format!("{}\n{}\n", p.url(), q.url());
    let sub = subscription_server(
        base64::engine::general_purpose::STANDARD
            .encode(list)
            .into_bytes(),
    )
    .await;
    let app = spawn_app_with(options(
        4,
        json!({"subscribes": [sub.url], "subscribe_interval_sec": 1}),
    ))
    .await;
    let first = proxies(&app).await;
    assert_eq!(first["total"], 2, "{first}");
    assert_eq!(first["sources"][0]["proxies"], 2, "{first}");
    assert!(first["sources"][0]["error"].is_null());
    let by_port = BTreeMap::from([
        (p.port().to_string(), ip(12)),
        (q.port().to_string(), ip(13)),
    ]);
    let pins = pins_by_ip(&first, &by_port);

    *sub.body.lock().unwrap() = b"<html><body>502 Bad Gateway</body></html>".to_vec();
    let seen = sub.fetches.load(std::sync::atomic::Ordering::SeqCst);
    let mut view = proxies(&app).await;
    for _ in 0..50 {
        if sub.fetches.load(std::sync::atomic::Ordering::SeqCst) > seen
            && !view["sources"][0]["error"].is_null()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        view = proxies(&app).await;
    }
    // Reported…
    let error = view["sources"][0]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{view}"));
    assert!(!error.is_empty());
    assert!(!view.to_string().contains("sub-secret-token"), "{view}");
    // …and nothing changed: the same proxies, the same pins, traffic as before.
    assert_eq!(view["total"], 2, "{view}");
    assert_eq!(pins_by_ip(&view, &by_port), pins);
    chat_ok(&app, "still fine").await;
    for (email, _, peer) in arrivals(&app) {
        assert_eq!(peer, IpAddr::V4(pins[&email]));
    }
    app.stop().await;
}

#[tokio::test]
async fn an_account_file_may_name_its_own_proxy() {
    let own = ProxyProcess::microsocks(Some(("own", "own-pw")), ip(14)).unwrap();
    let pool = ProxyProcess::microsocks(None, ip(15)).unwrap();
    let app = spawn_app_with(options(2, json!({"proxy": pool.url()}))).await;
    // Re-import account 0 with a proxy of its own.
    let mut file = app.accounts[0].account_file_json();
    file["proxy"] = json!(own.url());
    let (status, body) = app
        .post_json_as(ADMIN, "/admin/pool-files/import", &file)
        .await;
    assert_eq!(status, 200, "{body}");
    let view = proxies(&app).await;
    let own_view = &view["account_proxies"][0];
    assert_eq!(own_view["accounts"][0], app.accounts[0].email, "{view}");
    assert!(!view.to_string().contains("own-pw"));
    for i in 0..4 {
        chat_ok(&app, &format!("own {i}")).await;
    }
    for (email, _, peer) in arrivals(&app) {
        let want = if email == app.accounts[0].email {
            ip(14)
        } else {
            ip(15)
        };
        assert_eq!(peer, IpAddr::V4(want), "{email}");
    }
    // A proxy URL that is not one is refused at import, naming the field.
    let mut bad = app.accounts[1].account_file_json();
    bad["proxy"] = json!("gopher://x:secret-gopher@h:1");
    let (_, body) = app
        .post_json_as(ADMIN, "/admin/pool-files/import", &bad)
        .await;
    assert!(body.to_string().contains("`proxy`"), "{body}");
    assert!(!body.to_string().contains("secret-gopher"), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_proxy_that_never_answers_is_the_proxys_fault_not_the_accounts() {
    // Accepts connections and says nothing: the SOCKS handshake times out (connect timeout).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = silent.accept().await {
            keep.lock().unwrap().push(stream);
        }
    });
    let app = spawn_app_with(options(
        2,
        json!({"proxy": format!("socks5://127.0.0.1:{port}")}),
    ))
    .await;
    let r = app.chat(chat_body("gemini-2.5-flash", "hi", false)).await;
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("egress proxy socks5://127.0.0.1:{port}")),
        "{message}"
    );
    assert!(message.contains("timed out"), "{message}");
    assert!(!held.lock().unwrap().is_empty());
    no_account_cooled_or_failed(&app.get_json_as(ADMIN, "/admin/accounts").await);
    assert_eq!(proxies(&app).await["proxies"][0]["state"], "quarantined");
    app.stop().await;
}
