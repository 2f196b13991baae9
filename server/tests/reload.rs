//! Live configuration reload through the real binary: `POST /admin/reload-config` and the file
//! watcher swap API keys and pool policy while the gateway serves, an invalid file changes
//! nothing, and environment overrides keep applying.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use serde_json::{Value, json};
use upstream_sim::{Answer, Endpoint, Fault, FaultRule, SimAccount, Simulator};

mod common;

const ADMIN_KEY: &str = "reload-test-admin-key-0123456789";
/// Changes must be visible within this bound.
const WITHIN: Duration = Duration::from_secs(2);

struct Gateway {
    child: Child,
    base: String,
    port: u16,
    config: PathBuf,
    sim: Simulator,
    accounts: Vec<SimAccount>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.sim.stop();
    }
}

impl Gateway {
    /// Starts a simulator with one account and the binary with `config` (merged over a base
    /// configuration pointing at the simulator) and the given environment.
    async fn start(config: Value, env: &[(&str, &str)], watch: bool) -> Gateway {
        business2api::startup::install_crypto_provider();
        let sim = Simulator::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let accounts = common::write_demo_accounts(&sim, &data, 1);
        let port = free_port();
        let config_path = dir.path().join("etc").join("config.json");
        std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
        let mut gw = Gateway {
            child: Command::new("true").spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            port,
            config: config_path,
            sim,
            accounts,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            _dir: dir,
        };
        gw.write(config);
        let mut c = common::gateway_command();
        for (k, v) in env {
            c.env(k, v);
        }
        let _ = gw.child.wait();
        c.args(["serve", "--config"]).arg(&gw.config);
        if !watch {
            // Only the admin API reloads: a test of the route cannot be pre-empted by the
            // watcher seeing the same write.
            c.arg("--no-watch");
        }
        let log = std::fs::File::create(gw.log_path()).unwrap();
        gw.child = c
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        gw.wait_ready().await;
        gw
    }

    fn log_path(&self) -> PathBuf {
        self._dir.path().join("gateway.log")
    }

    /// Waits (bounded) until the gateway's log contains `needle`.
    async fn log_shows(&self, needle: &str) {
        let deadline = Instant::now() + WITHIN;
        loop {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if log.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the log never showed {needle:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.config.parent().unwrap().parent().unwrap().join("data")
    }

    /// The whole configuration file: the base (simulator, port, data dir, admin key) with
    /// `patch` merged over it.
    fn document(&self, patch: Value) -> Value {
        let mut doc = json!({
            "listen_addr": format!("127.0.0.1:{}", self.port),
            "data_dir": self.data_dir(),
            "admin_keys": [ADMIN_KEY],
            "gemini_business": {
                "auth_base_url": self.sim.base_url(),
                "api_base_url": self.sim.base_url(),
            },
            "http": { "workers": 2, "stream_keepalive_ms": 1000 },
            "pool": { "use_cooldown_sec": 0, "refresh_on_startup": false },
        });
        merge(&mut doc, patch);
        doc
    }

    /// Writes the configuration file in place, as an editor that truncates and writes would.
    fn write(&self, patch: Value) {
        std::fs::write(&self.config, self.document(patch).to_string()).unwrap();
    }

    fn write_raw(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = self
                .client
                .get(format!("{}/health", self.base))
                .send()
                .await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not come up");
    }

    async fn reload(&self) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/admin/reload-config", self.base))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// The status of `GET /v1/models` with `key` (no upstream call: only the key check).
    async fn models_status(&self, key: &str) -> u16 {
        self.client
            .get(format!("{}/v1/models", self.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Polls until `key` gets `status` on `/v1/models`, for at most [`WITHIN`].
    async fn key_becomes(&self, key: &str, status: u16) {
        let deadline = Instant::now() + WITHIN;
        loop {
            let got = self.models_status(key).await;
            if got == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{key}: still {got}, expected {status} within {WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn accounts(&self) -> Value {
        let r = self
            .client
            .get(format!("{}/admin/accounts", self.base))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn chat(stream: bool) -> Value {
    json!({"model": "gemini-2.5-flash", "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]})
}

/// A new key works and a removed one is refused right after `POST /admin/reload-config`, while
/// a stream that started with the removed key finishes normally; the reply lists the changed
/// keys and the ones that need a restart, which keep serving with their old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reload_swaps_api_keys_while_a_stream_completes() {
    let gw = Gateway::start(json!({"api_keys": ["key-old"]}), &[], false).await;
    assert_eq!(gw.models_status("key-old").await, 200);
    assert_eq!(gw.models_status("key-new").await, 401);

    // A slow answer: eight pieces 250 ms apart, so the stream spans the reload.
    let pieces: Vec<String> = (0..8).map(|i| format!("piece{i} ")).collect();
    let mut answer = Answer::new();
    for p in &pieces {
        answer = answer.text(p.clone());
    }
    gw.sim.set_answer(answer);
    gw.sim.set_pacing(Duration::from_millis(250));
    let stream = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth("key-old")
        .json(&chat(true))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let reading = tokio::spawn(async move { stream.text().await.unwrap() });

    gw.write(json!({
        "api_keys": ["key-new"],
        // Needs a restart: reported, not applied.
        "http": { "workers": 3 },
        "pool": { "max_fail_count": 7 },
    }));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    let changed: Vec<&str> = body["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(changed.contains(&"api_keys"), "{body}");
    assert!(changed.contains(&"pool.max_fail_count"), "{body}");
    assert!(changed.contains(&"http.workers"), "{body}");
    assert_eq!(body["restart_required"], json!(["http.workers"]), "{body}");
    assert!(
        !body.to_string().contains("key-new"),
        "no secret in the reply: {body}"
    );

    gw.key_becomes("key-new", 200).await;
    gw.key_becomes("key-old", 401).await;

    let text = tokio::time::timeout(Duration::from_secs(20), reading)
        .await
        .expect("the stream ends")
        .unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let mut said = String::new();
    for line in text.lines() {
        if let Some(data) = line.strip_prefix("data: ")
            && data != "[DONE]"
        {
            let v: Value = serde_json::from_str(data).unwrap();
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                said.push_str(t);
            }
        }
    }
    assert_eq!(said, pieces.concat(), "the whole answer arrived");
}

/// Rewriting the file is enough: the watcher reloads, new key in, old key out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_applies_a_rewritten_file() {
    let gw = Gateway::start(json!({"api_keys": ["key-a"]}), &[], true).await;
    assert_eq!(gw.models_status("key-a").await, 200);
    gw.write(json!({"api_keys": ["key-b"]}));
    gw.key_becomes("key-b", 200).await;
    gw.key_becomes("key-a", 401).await;

    // Replaced by a rename (how many editors save): picked up as well.
    let tmp = gw.config.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        gw.document(json!({"api_keys": ["key-c"]})).to_string(),
    )
    .unwrap();
    std::fs::rename(&tmp, &gw.config).unwrap();
    gw.key_becomes("key-c", 200).await;
    gw.key_becomes("key-b", 401).await;
}

/// An invalid file changes nothing, through the admin API (whose error names every bad key)
/// and through the watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_changes_nothing_and_its_error_names_the_key() {
    let gw = Gateway::start(json!({"api_keys": ["key-a"]}), &[], true).await;
    gw.write(json!({
        "api_keys": ["key-b"],
        "pool": { "max_fail_count": "lots", "selection": "random" },
    }));
    // The watcher saw the file and refused it, naming the key.
    gw.log_shows("pool.max_fail_count").await;
    assert_eq!(gw.models_status("key-a").await, 200);
    assert_eq!(gw.models_status("key-b").await, 401);

    let (status, body) = gw.reload().await;
    assert_eq!(status, 400, "{body}");
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["pool.max_fail_count", "pool.selection"], "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("nothing was changed")
    );
    assert_eq!(gw.models_status("key-a").await, 200);
    assert_eq!(gw.models_status("key-b").await, 401);

    // Not JSON at all: the file itself is named.
    gw.write_raw("{ nope");
    let (status, body) = gw.reload().await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("config.json"),
        "{body}"
    );
    assert_eq!(gw.models_status("key-a").await, 200);
}

/// A changed backoff ceiling applies to the next failure: two transient failures in a row reach
/// the ceiling (`max_fail_count: 2`); the file said 3 s at start and 600 s after the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_backoff_applies_to_the_next_failure() {
    let gw = Gateway::start(
        json!({"api_keys": ["key-a"], "pool": {"max_fail_count": 2, "max_backoff_sec": 3}}),
        &[],
        false,
    )
    .await;
    let request = || async {
        gw.client
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth("key-a")
            .json(&chat(false))
            .send()
            .await
            .unwrap()
            .status()
    };
    let cooldown_left = || async {
        let listing = gw.accounts().await;
        let a = &listing["accounts"][0];
        assert_eq!(a["state"], "cooling_down", "{a}");
        a["state_until"].as_u64().unwrap().saturating_sub(now_ms())
    };

    gw.write(json!({"api_keys": ["key-a"], "pool": {"max_fail_count": 2, "max_backoff_sec": 600}}));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], json!(["pool.max_backoff_sec"]), "{body}");
    assert_eq!(body["restart_required"], json!([]), "{body}");

    gw.sim.add_fault(
        FaultRule::always(Endpoint::StreamAssist, Fault::ServerError(503))
            .for_account(&gw.accounts[0].csesidx)
            .times(2),
    );
    // First failure: the first step of the backoff (2 s).
    assert_ne!(request().await, 200);
    let first = cooldown_left().await;
    assert!(first <= 2_000, "first step: {first} ms");
    // Once it has passed, the second failure in a row jumps to the ceiling: the new one.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listing = gw.accounts().await;
        if listing["accounts"][0]["state"] != "cooling_down" {
            break;
        }
        assert!(Instant::now() < deadline, "the account did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(request().await, 200);
    let second = cooldown_left().await;
    assert!(
        second > 500_000,
        "the next failure uses the new 600 s ceiling (3 s before the reload), {second} ms left"
    );
}

/// Environment overrides apply again after a reload: `API_KEY` keeps appending its key, and
/// `API_KEYS`-free files keep their own keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_keep_applying_after_a_reload() {
    let gw = Gateway::start(
        json!({"api_keys": ["file-a"]}),
        &[("API_KEY", "env-key")],
        false,
    )
    .await;
    assert_eq!(gw.models_status("env-key").await, 200);
    assert_eq!(gw.models_status("file-a").await, 200);

    gw.write(json!({"api_keys": ["file-b"]}));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    gw.key_becomes("file-b", 200).await;
    gw.key_becomes("file-a", 401).await;
    assert_eq!(
        gw.models_status("env-key").await,
        200,
        "API_KEY still appended"
    );

    // Without any key in the file, the environment's key alone remains (no generated key).
    gw.write(json!({}));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    gw.key_becomes("file-b", 401).await;
    assert_eq!(gw.models_status("env-key").await, 200);
}

/// Without any configured key the generated key (`<data_dir>/api_key`) guards the API, before
/// and after a reload that removes every configured key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_key_guards_the_api_when_a_reload_removes_every_key() {
    let gw = Gateway::start(json!({"api_keys": ["key-a"]}), &[], false).await;
    gw.write(json!({}));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    gw.key_becomes("key-a", 401).await;
    let generated = std::fs::read_to_string(gw.data_dir().join("api_key")).unwrap();
    assert_eq!(gw.models_status(generated.trim()).await, 200);
    let open = gw
        .client
        .get(format!("{}/v1/models", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 401, "never open without the explicit flag");
}

/// Reload needs the admin key like every admin route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_requires_the_admin_key() {
    let gw = Gateway::start(json!({"api_keys": ["key-a"]}), &[], false).await;
    for key in [None, Some("key-a")] {
        let mut r = gw.client.post(format!("{}/admin/reload-config", gw.base));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        assert_eq!(r.send().await.unwrap().status(), 401);
    }
}

/// `proxy_pool` and `flow` are implemented: changing their keys applies after a restart, is
/// reported so, and no warning calls them unimplemented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_pool_and_flow_changes_apply_after_a_restart_without_unimplemented_warnings() {
    let gw = Gateway::start(
        json!({"api_keys": ["key-a"], "proxy_pool": {"health_check": true}}),
        &[],
        false,
    )
    .await;
    gw.write(json!({"flow": {"enable": true},
        "proxy_pool": {"health_check": false, "fail_threshold": 5}}));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    let warnings = body["warnings"].to_string();
    assert!(!warnings.contains("proxy_pool"), "{body}");
    assert!(!warnings.contains("flow"), "{body}");
    let restart = body["restart_required"].to_string();
    for key in [
        "flow.enable",
        "proxy_pool.health_check",
        "proxy_pool.fail_threshold",
    ] {
        assert!(restart.contains(key), "{key}: {body}");
    }
}

/// `flow.tokens` applies at once: a reload adds and removes the Flow pool's configuration
/// tokens (and says nothing about restarting for them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_flow_tokens_to_the_running_flow_pool() {
    const A: &str = "reload-flow-token-a-0123456789";
    const B: &str = "reload-flow-token-b-0123456789";
    let flow = upstream_sim::flow::FlowSimulator::start().await.unwrap();
    for t in [A, B] {
        flow.add_token(t, "f@example.com", 100, "PAYGATE_TIER_ONE");
    }
    let section = |tokens: &[&str]| {
        json!({"api_keys": ["key-a"], "flow": {"enable": true, "tokens": tokens,
            "labs_base_url": flow.base_url(), "api_base_url": flow.base_url()}})
    };
    let gw = Gateway::start(section(&[A]), &[], false).await;
    let ids = || async {
        let status: Value = gw
            .client
            .get(format!("{}/admin/flow/status", gw.base))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids().await, ["flow_token_0"]);
    gw.write(section(&[A, B]));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !body["restart_required"].to_string().contains("flow.tokens"),
        "{body}"
    );
    assert_eq!(ids().await, ["flow_token_0", "flow_token_1"]);
    gw.write(section(&[]));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    assert!(ids().await.is_empty(), "{body}");
}

/// The generated key counts as an API key on reload: a reload that would make it the API key
/// while an admin key equals it is refused (naming `admin_keys`, never the key), and a key file
/// readable by others is made private (0600) with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refuses_an_admin_key_equal_to_the_generated_key_and_tightens_the_key_file() {
    const CONFIGURED: &str = "configured-api-key-0123456789";
    const STORED: &str = "sk-b2a-stored-generated-key-0123456789";
    let gw = Gateway::start(json!({"api_keys": [CONFIGURED]}), &[], false).await;
    // Written while configured keys are in force, so the gateway has not read it yet.
    let key_file = gw.data_dir().join("api_key");
    std::fs::write(&key_file, format!("{STORED}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    gw.write(json!({"api_keys": [], "admin_keys": [ADMIN_KEY, STORED]}));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["path"], "admin_keys", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("generated API key"), "{message}");
    assert!(!body.to_string().contains(STORED), "{body}");
    // Nothing changed: the configured key still serves, the stored one does not.
    assert_eq!(gw.models_status(CONFIGURED).await, 200);
    assert_eq!(gw.models_status(STORED).await, 401);

    gw.write(json!({"api_keys": []}));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    gw.key_becomes(STORED, 200).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let warnings = body["warnings"].to_string();
        assert!(
            warnings.contains("api_key was readable by group or others (mode 0644)"),
            "{warnings}"
        );
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let log = std::fs::read_to_string(gw.log_path()).unwrap();
    assert!(!log.contains(STORED), "{log}");
}

/// `limits.*` reload live: after the reload, a body the new limit refuses is a 400 that names
/// the key, on the very next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_request_limit_applies_to_the_next_request() {
    let gw = Gateway::start(json!({"api_keys": ["key-a"]}), &[], false).await;
    let body = json!({"model": "gemini-2.5-flash", "messages": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"}]});
    let send = || {
        gw.client
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth("key-a")
            .json(&body)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);

    gw.write(json!({"api_keys": ["key-a"], "limits": {"max_messages": 2}}));
    let (status, reply) = gw.reload().await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.to_string().contains("limits.max_messages"), "{reply}");
    let refused = send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let v: Value = refused.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("messages: more than 2"), "{v}");
    assert!(message.contains("limits.max_messages"), "{v}");
}
