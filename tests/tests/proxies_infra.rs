//! The egress-proxy test infrastructure itself: real microsocks (SOCKS5) and tinyproxy (HTTP,
//! CONNECT) processes on loopback, each binding its outgoing connections to its own source
//! address, and the simulator recording that address as the request's peer. The gateway's
//! per-account proxy tests rely on every property checked here.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use business2api_tests::proxies::ProxyProcess;
use business2api_tests::{Endpoint, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USER: &str = "proxy-user";
const PASS: &str = "proxy-pass";
const SOCKS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const HTTP_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// `GET url` through `proxy` (a fresh client: no pooled connection outlives a kill).
async fn get_via(proxy: &str, url: &str) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy)?)
        .timeout(Duration::from_secs(10))
        .build()?
        .get(url)
        .send()
        .await
}

/// U1 for an account the simulator does not know: answered 401, recorded all the same. The
/// `csesidx` marker finds the record again.
fn u1_path(marker: u64) -> String {
    format!("/auth/getoxsrf?csesidx={marker}")
}

fn u1_url(sim: &Simulator, marker: u64) -> String {
    format!("{}{}", sim.base_url(), u1_path(marker))
}

/// The peer address the simulator recorded for the U1 request carrying `marker`.
fn recorded_peer(sim: &Simulator, marker: u64) -> Option<IpAddr> {
    let path = u1_path(marker);
    sim.requests(Endpoint::GetOxsrf)
        .into_iter()
        .find(|r| r.path == path)
        .map(|r| r.peer.expect("the simulator records the peer").ip())
}

/// `GET` U1 through `proxy` and return the recorded peer address.
async fn peer_via(sim: &Simulator, proxy: &str, marker: u64) -> IpAddr {
    let response = get_via(proxy, &u1_url(sim, marker))
        .await
        .unwrap_or_else(|e| panic!("GET through {proxy}: {e:?}"));
    assert_eq!(response.status(), 401, "the simulator's own answer to U1");
    recorded_peer(sim, marker).expect("the request reached the simulator")
}

fn start_both() -> (ProxyProcess, ProxyProcess) {
    let socks = ProxyProcess::microsocks(Some((USER, PASS)), SOCKS_IP).expect("microsocks starts");
    let http = ProxyProcess::tinyproxy(Some((USER, PASS)), HTTP_IP).expect("tinyproxy starts");
    (socks, http)
}

#[tokio::test]
async fn each_proxy_reaches_the_simulator_from_its_own_bind_address() {
    business2api_tests::init();
    let sim = Simulator::start().await.unwrap();
    let (socks, http) = start_both();
    assert_eq!(
        socks.url(),
        format!("socks5://{USER}:{PASS}@127.0.0.1:{}", socks.port())
    );
    assert_eq!(
        http.url(),
        format!("http://{USER}:{PASS}@127.0.0.1:{}", http.port())
    );
    assert_ne!(socks.port(), http.port());
    assert_eq!(socks.bind_ip(), SOCKS_IP);
    assert_eq!(http.bind_ip(), HTTP_IP);

    // Direct: the peer is 127.0.0.1.
    let direct = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = direct.get(u1_url(&sim, 1000)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        recorded_peer(&sim, 1000),
        Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    );

    assert_eq!(peer_via(&sim, &socks.url(), 1001).await, SOCKS_IP);
    assert_eq!(peer_via(&sim, &http.url(), 1002).await, HTTP_IP);
    // And again, interleaved: nothing is sticky.
    assert_eq!(peer_via(&sim, &http.url(), 1003).await, HTTP_IP);
    assert_eq!(peer_via(&sim, &socks.url(), 1004).await, SOCKS_IP);
}

#[tokio::test]
async fn proxies_without_credentials_need_none() {
    business2api_tests::init();
    let sim = Simulator::start().await.unwrap();
    let socks_ip = Ipv4Addr::new(127, 0, 0, 4);
    let http_ip = Ipv4Addr::new(127, 0, 0, 5);
    let socks = ProxyProcess::microsocks(None, socks_ip).unwrap();
    let http = ProxyProcess::tinyproxy(None, http_ip).unwrap();
    assert_eq!(socks.url(), format!("socks5://127.0.0.1:{}", socks.port()));
    assert_eq!(http.url(), format!("http://127.0.0.1:{}", http.port()));
    assert_eq!(peer_via(&sim, &socks.url(), 2001).await, socks_ip);
    assert_eq!(peer_via(&sim, &http.url(), 2002).await, http_ip);
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_refused_before_the_upstream() {
    business2api_tests::init();
    let sim = Simulator::start().await.unwrap();
    let (socks, http) = start_both();
    assert_eq!(
        socks.url_with("who", "p@ss:word"),
        format!("socks5://who:p%40ss%3Aword@127.0.0.1:{}", socks.port())
    );

    // SOCKS5: the handshake fails, the client sees a connection error.
    let wrong = get_via(&socks.url_with(USER, "wrong"), &u1_url(&sim, 3001)).await;
    let error = wrong.expect_err("wrong SOCKS5 credentials are refused");
    assert!(error.is_connect(), "{error:?}");
    let missing = get_via(
        &format!("socks5://127.0.0.1:{}", socks.port()),
        &u1_url(&sim, 3002),
    )
    .await;
    let error = missing.expect_err("missing SOCKS5 credentials are refused");
    assert!(error.is_connect(), "{error:?}");

    // tinyproxy: 407 without credentials; with wrong ones tinyproxy 1.11 answers 401 (not 407).
    let missing = get_via(
        &format!("http://127.0.0.1:{}", http.port()),
        &u1_url(&sim, 3003),
    )
    .await
    .unwrap();
    assert_eq!(missing.status(), 407);
    assert!(missing.headers().contains_key("proxy-authenticate"));
    let wrong = get_via(&http.url_with(USER, "wrong"), &u1_url(&sim, 3004))
        .await
        .unwrap();
    assert!(
        matches!(wrong.status().as_u16(), 401 | 407),
        "{}",
        wrong.status()
    );
    let server = wrong.headers().get("server").map(|v| v.to_str().unwrap());
    assert!(
        server.is_some_and(|s| s.starts_with("tinyproxy")),
        "{server:?}"
    );

    // None of them reached the simulator.
    for marker in 3001..=3004 {
        assert_eq!(recorded_peer(&sim, marker), None, "marker {marker}");
    }
    // The right credentials still work.
    assert_eq!(peer_via(&sim, &socks.url(), 3005).await, SOCKS_IP);
    assert_eq!(peer_via(&sim, &http.url(), 3006).await, HTTP_IP);
}

/// Sends `CONNECT 127.0.0.1:port` to tinyproxy (with `Proxy-Authorization` when `auth` is
/// given) and returns the status line and the stream.
async fn connect_tunnel(
    proxy_port: u16,
    target_port: u16,
    auth: Option<(&str, &str)>,
) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(("127.0.0.1", proxy_port)).await.unwrap();
    let mut request =
        format!("CONNECT 127.0.0.1:{target_port} HTTP/1.1\r\nHost: 127.0.0.1:{target_port}\r\n");
    if let Some((user, pass)) = auth {
        let token = STANDARD.encode(format!("{user}:{pass}"));
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // Read the response head byte by byte: nothing after it may be consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, stream)
}

#[tokio::test]
async fn tinyproxy_tunnels_connect_to_any_port_from_its_bind_address() {
    business2api_tests::init();
    let sim = Simulator::start().await.unwrap();
    let (_socks, http) = start_both();

    // CONNECT (what the gateway's HTTPS upstream traffic uses) to the simulator's port, which
    // is no "usual" HTTPS port: no ConnectPort restriction.
    let (status, mut tunnel) = connect_tunnel(http.port(), sim.port(), Some((USER, PASS))).await;
    assert!(status.contains(" 200 "), "{status}");
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        u1_path(4001),
        sim.port()
    );
    tunnel.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tunnel.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert_eq!(
        recorded_peer(&sim, 4001),
        Some(IpAddr::V4(HTTP_IP)),
        "a tunnelled request comes from the bind address too"
    );

    // Refused without or with wrong credentials.
    let (status, _) = connect_tunnel(http.port(), sim.port(), None).await;
    assert!(status.contains(" 407 "), "{status}");
    let (status, _) = connect_tunnel(http.port(), sim.port(), Some((USER, "wrong"))).await;
    assert!(
        status.contains(" 401 ") || status.contains(" 407 "),
        "{status}"
    );
}

#[tokio::test]
async fn a_killed_proxy_refuses_connections_and_a_restarted_one_serves_again() {
    business2api_tests::init();
    let sim = Simulator::start().await.unwrap();
    let (mut socks, mut http) = start_both();
    let (socks_port, http_port) = (socks.port(), http.port());
    assert_eq!(peer_via(&sim, &socks.url(), 5001).await, SOCKS_IP);
    assert_eq!(peer_via(&sim, &http.url(), 5002).await, HTTP_IP);

    socks.kill();
    http.kill();
    assert!(!socks.is_running() && !http.is_running());
    // Killing twice is harmless.
    socks.kill();
    for (proxy, marker) in [(&socks, 5003), (&http, 5004)] {
        let refused = std::net::TcpStream::connect(("127.0.0.1", proxy.port()));
        assert_eq!(
            refused.map(drop).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionRefused)
        );
        let error = get_via(&proxy.url(), &u1_url(&sim, marker))
            .await
            .expect_err("a killed proxy does not answer");
        assert!(error.is_connect(), "{error:?}");
        assert_eq!(recorded_peer(&sim, marker), None);
    }

    socks.restart().unwrap();
    http.restart().unwrap();
    assert!(socks.is_running() && http.is_running());
    assert_eq!((socks.port(), http.port()), (socks_port, http_port));
    assert_eq!(peer_via(&sim, &socks.url(), 5005).await, SOCKS_IP);
    assert_eq!(peer_via(&sim, &http.url(), 5006).await, HTTP_IP);
    // Credentials survive the restart.
    assert!(
        get_via(&socks.url_with(USER, "wrong"), &u1_url(&sim, 5007))
            .await
            .is_err()
    );
    let status = get_via(&http.url_with(USER, "wrong"), &u1_url(&sim, 5008))
        .await
        .unwrap()
        .status();
    assert!(matches!(status.as_u16(), 401 | 407), "{status}");

    // A restart of a running proxy keeps the port as well.
    socks.restart().unwrap();
    assert_eq!(socks.port(), socks_port);
    assert_eq!(peer_via(&sim, &socks.url(), 5009).await, SOCKS_IP);
}

#[test]
fn dropping_a_proxy_stops_it() {
    let proxy = ProxyProcess::microsocks(None, Ipv4Addr::new(127, 0, 0, 6)).unwrap();
    let port = proxy.port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(proxy);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
