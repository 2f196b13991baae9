//! Egress proxies (issue 14), continued: active checks and recovery from quarantine, worker
//! tasks that carry their account's proxy, and tunnelled links (sing-box).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use business2api_shared::protocol::{FailureReason, Task, TaskKindName, TaskOutcome, TaskSpec};
use business2api_tests::proxies::ProxyProcess;
use business2api_tests::*;
use business2api_worker::{TaskContext, TaskRunner};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use upstream_sim::Endpoint;

const ADMIN: &str = "admin-key-egress-tasks-0123456789";

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn list_file(dir: &std::path::Path, lines: &[String]) -> String {
    let path = dir.join("proxies.txt");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path.display().to_string()
}

async fn proxies(app: &TestApp) -> Value {
    app.get_json_as(ADMIN, "/admin/proxies").await
}

fn by_port(view: &Value, port: u16) -> &Value {
    view["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["url"].as_str().unwrap().contains(&format!(":{port}")))
        .unwrap_or_else(|| panic!("no proxy on port {port}: {view}"))
}

async fn wait_until(app: &TestApp, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = proxies(app).await;
        if ok(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "{what}: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_active_check_quarantines_a_dead_proxy_and_the_one_after_its_quarantine_brings_it_back()
{
    let mut a = ProxyProcess::microsocks(None, ip(20)).unwrap();
    let b = ProxyProcess::microsocks(None, ip(21)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = list_file(dir.path(), &[a.url(), b.url()]);
    let app = spawn_app_with(TestOptions::default().accounts(4).config(json!({
        "admin_keys": [ADMIN],
        "proxy_pool": {"files": [file], "quarantine_sec": 1, "check_on_startup": true},
    })))
    .await;
    // Checked at start: both healthy, with a latency measured through each.
    let view = proxies(&app).await;
    for p in view["proxies"].as_array().unwrap() {
        assert_eq!(p["state"], "healthy", "{view}");
        assert!(
            p["latency_ms"].is_u64() && p["last_check"].is_u64(),
            "{view}"
        );
    }
    a.kill();
    let (status, view) = app
        .post_json_as(ADMIN, "/admin/proxies/check", &json!({}))
        .await;
    assert_eq!(status, 200, "{view}");
    let dead = by_port(&view, a.port());
    assert_eq!(dead["state"], "quarantined", "{view}");
    assert!(dead["accounts"].as_array().unwrap().is_empty(), "{view}");
    assert_eq!(
        by_port(&view, b.port())["accounts"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // No request was needed, and none failed: every account now leaves through b.
    let r = app.chat(chat_body("gemini-2.5-flash", "hi", false)).await;
    assert_eq!(r.status(), 200);
    for rec in app.sim.requests(Endpoint::StreamAssist) {
        assert_eq!(rec.peer.unwrap().ip(), IpAddr::V4(ip(21)));
    }

    // Back up: the check at the end of the quarantine finds it healthy again; the accounts
    // stay where they are (pins move only away from a bad proxy).
    a.restart().unwrap();
    let view = wait_until(&app, "the proxy came back", |v| {
        by_port(v, a.port())["state"] == "healthy"
    })
    .await;
    assert_eq!(
        by_port(&view, b.port())["accounts"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    app.stop().await;
}

/// A task's kind and the proxy URL it carried.
type Carried = (TaskKindName, Option<String>);

/// Records the proxy each task carried, and fails the task.
#[derive(Clone, Default)]
struct Recording {
    proxies: Arc<Mutex<Vec<Carried>>>,
}

impl TaskRunner for Recording {
    fn kinds(&self) -> Vec<TaskKindName> {
        vec![TaskKindName::Relogin]
    }

    fn run(&self, task: Task, _ctx: TaskContext) -> BoxFuture<'static, TaskOutcome> {
        let proxy = match &task.spec {
            TaskSpec::Relogin(r) => r.proxy.as_ref().map(|p| p.expose().to_owned()),
            _ => None,
        };
        self.proxies.lock().unwrap().push((task.kind(), proxy));
        Box::pin(async {
            TaskOutcome::Failed {
                reason: FailureReason::WrongCode,
                message: "recorded".to_owned(),
            }
        })
    }
}

#[tokio::test]
async fn relogin_and_probe_tasks_leave_through_the_accounts_pinned_proxy() {
    let socks = ProxyProcess::microsocks(Some(("w", "worker-pw")), ip(22)).unwrap();
    let http = ProxyProcess::tinyproxy(None, ip(23)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = list_file(dir.path(), &[socks.url(), http.url()]);
    let recording = Recording::default();
    let app = spawn_app_with(
        TestOptions::default()
            .accounts(2)
            .config(json!({"admin_keys": [ADMIN], "proxy_pool": {"files": [file]}}))
            .local_runner(Arc::new(recording.clone())),
    )
    .await;
    let accounts = app.get_json_as(ADMIN, "/admin/accounts").await;
    for account in app.accounts.clone() {
        let pinned = account_in(&accounts, &account.email)["egress"]["url"]
            .as_str()
            .unwrap()
            .to_owned();
        let (want_url, want_ip) = if pinned.starts_with("socks5") {
            (socks.url(), ip(22))
        } else {
            (http.url(), ip(23))
        };
        // The re-login task carries the proxy itself (with its password, for the browser).
        recording.proxies.lock().unwrap().clear();
        let (status, body) = app
            .post_json_as(
                ADMIN,
                "/admin/browser-refresh",
                &json!({"email": account.email}),
            )
            .await;
        assert!(status == 200 || status == 202, "{body}");
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            if let Some(p) = recording.proxies.lock().unwrap().first().cloned() {
                break p;
            }
            assert!(Instant::now() < deadline, "no task ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(got.0, TaskKindName::Relogin);
        let carried = got.1.expect("the task carries a proxy");
        assert_eq!(
            carried.trim_end_matches('/'),
            want_url.trim_end_matches('/'),
            "{}",
            account.email
        );

        // A probe mints through the same proxy.
        let before = app.sim.requests(Endpoint::GetOxsrf).len();
        let (status, body) = app
            .post_json_as(
                ADMIN,
                &format!("/admin/accounts/{}/probe", account.email),
                &json!({}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let deadline = Instant::now() + Duration::from_secs(5);
        let rec = loop {
            if let Some(r) = app
                .sim
                .requests(Endpoint::GetOxsrf)
                .into_iter()
                .skip(before)
                .find(|r| r.csesidx.as_deref() == Some(account.csesidx.as_str()))
            {
                break r;
            }
            assert!(Instant::now() < deadline, "no probe arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            rec.peer.unwrap().ip(),
            IpAddr::V4(want_ip),
            "{}",
            account.email
        );
    }
    app.stop().await;
}

/// A stand-in for sing-box: reads `run -c FILE`, and for every `socks` inbound serves a
/// SOCKS5 proxy (no auth, CONNECT) whose outgoing connections leave from 127.0.0.24.
const FAKE_SINGBOX: &str = r#"#!/usr/bin/env python3
import asyncio, json, socket, struct, sys
cfg = json.load(open(sys.argv[sys.argv.index("-c") + 1]))
async def pipe(r, w):
    try:
        while True:
            b = await r.read(65536)
            if not b:
                break
            w.write(b)
            await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def handle(r, w):
    try:
        ver, nm = await r.readexactly(2)
        await r.readexactly(nm)
        w.write(b"\x05\x00")
        ver, cmd, _, atyp = await r.readexactly(4)
        if atyp == 1:
            host = socket.inet_ntoa(await r.readexactly(4))
        elif atyp == 3:
            host = (await r.readexactly((await r.readexactly(1))[0])).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, await r.readexactly(16))
        port = struct.unpack(">H", await r.readexactly(2))[0]
        ur, uw = await asyncio.open_connection(host, port, local_addr=("127.0.0.24", 0))
        w.write(b"\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x00")
        await w.drain()
        await asyncio.gather(pipe(r, uw), pipe(ur, w))
    except Exception:
        w.close()
async def main():
    servers = []
    for inbound in cfg["inbounds"]:
        servers.append(await asyncio.start_server(handle, "127.0.0.1", inbound["listen_port"]))
    await asyncio.Event().wait()
asyncio.run(main())
"#;

fn fake_singbox(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("sing-box");
    std::fs::write(&path, FAKE_SINGBOX).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

const TROJAN: &str = "trojan://trojan-secret-pw@trojan.example:443?sni=trojan.example#node-one";

#[tokio::test]
async fn tunnelled_links_go_through_a_supervised_singbox_or_are_reported_and_skipped() {
    // Without sing-box: reported in the source report, and no proxy for it.
    let dir = tempfile::tempdir().unwrap();
    let plain = ProxyProcess::microsocks(None, ip(25)).unwrap();
    let file = list_file(dir.path(), &[plain.url(), TROJAN.to_owned()]);
    let app = spawn_app_with(TestOptions::default().accounts(1).config(json!({
        "admin_keys": [ADMIN], "proxy_pool": {"files": [file.clone()]},
    })))
    .await;
    let view = proxies(&app).await;
    assert_eq!(view["total"], 1, "{view}");
    assert_eq!(view["sources"][0]["tunnelled"], 1, "{view}");
    assert!(!view.to_string().contains("trojan-secret-pw"));
    app.stop().await;

    // With sing-box: it is started with the node, and the account's traffic goes through its
    // local SOCKS inbound.
    let file = list_file(dir.path(), &[TROJAN.to_owned()]);
    let exe = fake_singbox(dir.path());
    let app = spawn_app_with(TestOptions::default().accounts(1).config(json!({
        "admin_keys": [ADMIN], "proxy_pool": {"files": [file], "singbox_path": exe},
    })))
    .await;
    let view = proxies(&app).await;
    assert_eq!(view["total"], 1, "{view}");
    let node = &view["proxies"][0];
    assert_eq!(node["origin"]["kind"], "sing_box", "{view}");
    assert_eq!(node["origin"]["protocol"], "trojan", "{view}");
    assert!(
        node["url"]
            .as_str()
            .unwrap()
            .starts_with("socks5h://127.0.0.1:"),
        "{view}"
    );
    let config =
        std::fs::read_to_string(app.data_dir.path().join("singbox").join("singbox.json")).unwrap();
    assert!(config.contains("trojan.example"));
    let r = app
        .chat(chat_body("gemini-2.5-flash", "via sing-box", false))
        .await;
    assert_eq!(r.status(), 200);
    for rec in app.sim.requests(Endpoint::StreamAssist) {
        assert_eq!(rec.peer.unwrap().ip(), IpAddr::V4(ip(24)));
    }
    app.stop().await;
}
