//! Black-box test helpers: [`spawn_app`] starts the real [`Application`] on port 0 with its own
//! data dir and its own upstream simulator (a real HTTP server), and returns a [`TestApp`] to
//! talk to it. Also: an incremental SSE reader, the SDK schema validators and real egress
//! proxies ([`proxies::ProxyProcess`]: microsocks, tinyproxy).

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use business2api::config::Settings;
use business2api::startup::{Application, ExtraUpstream, StartupReport};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tempfile::TempDir;
pub mod check;
pub mod proxies;

pub use check::{StreamSummary, Wire};
pub use upstream_sim::{
    Answer, DEFAULT_IMAGE_PNG, Endpoint, Fault, FaultRule, SimAccount, Simulator,
};

/// The API key every test app accepts unless a test configures others.
pub const TEST_KEY: &str = "test-key-0123456789";

/// How a test wants its app.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// Demo accounts registered with the simulator and written as account files.
    pub accounts: u32,
    /// Merged (deeply) over the default test configuration.
    pub config: Value,
    /// Whether to write the default `api_keys` (false: the test decides via `config`).
    pub default_key: bool,
    /// Upstreams registered besides Gemini Business (served from the same account pool).
    pub upstreams: Vec<ExtraUpstream>,
    /// Local mode: how the in-process worker re-logs accounts. Default: it takes no re-login
    /// (tasks wait in the queue, as with no worker), so that no test starts Chromium unless it
    /// asks for it with [`TestOptions::real_browser`] (`None`: the production Chromium runner).
    pub local_runner: Option<LocalRunner>,
}

/// A scripted re-login [`business2api_worker::TaskRunner`] for local mode's in-process worker.
#[derive(Clone)]
pub struct LocalRunner(pub std::sync::Arc<dyn business2api_worker::TaskRunner>);

impl LocalRunner {
    /// Takes no re-login task: they wait in the queue.
    pub fn queue_only() -> LocalRunner {
        LocalRunner(std::sync::Arc::new(NoRelogin))
    }
}

/// Announces no task kind (see [`LocalRunner::queue_only`]).
struct NoRelogin;

impl business2api_worker::TaskRunner for NoRelogin {
    fn kinds(&self) -> Vec<business2api_shared::protocol::TaskKindName> {
        Vec::new()
    }

    fn run(
        &self,
        task: business2api_shared::protocol::Task,
        ctx: business2api_worker::TaskContext,
    ) -> futures_util::future::BoxFuture<'static, business2api_shared::protocol::TaskOutcome> {
        business2api_worker::NoBrowserRunner.run(task, ctx)
    }
}

impl std::fmt::Debug for LocalRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalRunner")
    }
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            accounts: 1,
            config: json!({}),
            default_key: true,
            upstreams: Vec::new(),
            local_runner: Some(LocalRunner::queue_only()),
        }
    }
}

impl TestOptions {
    pub fn accounts(mut self, n: u32) -> Self {
        self.accounts = n;
        self
    }

    /// Local mode's in-process worker runs `runner`.
    pub fn local_runner(
        mut self,
        runner: std::sync::Arc<dyn business2api_worker::TaskRunner>,
    ) -> Self {
        self.local_runner = Some(LocalRunner(runner));
        self
    }

    /// Local mode's in-process worker re-logs accounts in Chromium (the production runner).
    pub fn real_browser(mut self) -> Self {
        self.local_runner = None;
        self
    }

    pub fn config(mut self, config: Value) -> Self {
        merge(&mut self.config, config);
        self
    }

    /// Registers another upstream next to Gemini Business.
    pub fn upstream(mut self, upstream: ExtraUpstream) -> Self {
        self.upstreams.push(upstream);
        self
    }

    pub fn without_default_key(mut self) -> Self {
        self.default_key = false;
        self
    }
}

/// A running gateway plus its simulator.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    pub port: u16,
    pub sim: Simulator,
    pub accounts: Vec<SimAccount>,
    pub data_dir: TempDir,
    pub client: reqwest::Client,
    pub report: StartupReport,
    /// `http://<addr>` of the `metrics.listen_addr` listener, when configured.
    pub metrics_address: Option<String>,
    handle: ServerHandle,
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Deep-merges `patch` into `base` (objects merge key by key; anything else replaces).
pub fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// Installs the crypto provider and a test log subscriber once per test binary.
pub fn init() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        business2api::startup::install_crypto_provider();
        if std::env::var("TEST_LOG").is_ok() {
            business2api::telemetry::init(true);
        }
    });
}

/// Writes an account file in the reference format.
pub fn write_account_file(dir: &Path, account: &SimAccount) {
    let path = dir.join(format!("{}.json", account.email));
    std::fs::write(
        path,
        serde_json::to_vec_pretty(&account.account_file_json()).unwrap(),
    )
    .unwrap();
}

/// The default test configuration for a data dir and a simulator.
pub fn base_config(data_dir: &Path, sim: &Simulator) -> Value {
    json!({
        "listen_addr": "127.0.0.1:0",
        "data_dir": data_dir,
        "gemini_business": {
            "auth_base_url": sim.base_url(),
            "api_base_url": sim.base_url(),
            "connect_timeout_sec": 2,
            "request_timeout_sec": 5,
            "stream_first_byte_timeout_sec": 5,
            "stream_idle_timeout_sec": 5,
            "download_timeout_sec": 5,
        },
        "http": { "workers": 2, "stream_keepalive_ms": 1000, "shutdown_timeout_sec": 1 },
        // Tokens are minted on first use, so that each test decides when U1 is called; tests
        // of the start-up refresh turn it back on.
        "pool": { "use_cooldown_sec": 1, "refresh_on_startup": false },
        // A re-login's browser (local mode's in-process worker) opens the simulator's login
        // page, never Google's.
        "browser": { "login_url": format!("{}/login", sim.base_url()) },
    })
}

/// A TLS acceptor with a fresh self-signed certificate for `name` (one no authority signed: the
/// gateway, which verifies upstream TLS, refuses it).
pub fn self_signed_tls(name: &str) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

/// The admin key of the Flow test apps.
pub const FLOW_ADMIN_KEY: &str = "admin-key-0123456789abcdef";

/// The configuration that enables Flow against `sim` with `tokens` (plus an admin key): polls
/// every second, at most 20 of them.
pub fn flow_config(sim: &upstream_sim::flow::FlowSimulator, tokens: &[&str]) -> Value {
    json!({
        "admin_keys": [FLOW_ADMIN_KEY],
        "flow": {
            "enable": true,
            "tokens": tokens,
            "labs_base_url": sim.base_url(),
            "api_base_url": sim.base_url(),
            "timeout": 10,
            "poll_interval": 1,
            "max_poll_attempts": 20,
        }
    })
}

/// A Flow simulator that knows `tokens` (1000 credits each), and an app configured with them.
pub async fn flow_app(tokens: &[&str]) -> (TestApp, upstream_sim::flow::FlowSimulator) {
    let sim = upstream_sim::flow::FlowSimulator::start()
        .await
        .expect("the Flow simulator starts");
    for (i, t) in tokens.iter().enumerate() {
        sim.add_token(t, &format!("flow{i}@example.com"), 1000, "PAYGATE_TIER_TWO");
    }
    let app = spawn_app_with(TestOptions::default().config(flow_config(&sim, tokens))).await;
    (app, sim)
}

/// Starts an app with one account and default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

/// Starts a simulator and an app configured against it.
pub async fn spawn_app_with(options: TestOptions) -> TestApp {
    init();
    let sim = Simulator::start().await.expect("simulator starts");
    let data_dir = tempfile::tempdir().expect("temp dir");
    let accounts: Vec<SimAccount> = (0..options.accounts).map(SimAccount::demo).collect();
    for account in &accounts {
        sim.add_account(account.clone());
        write_account_file(data_dir.path(), account);
    }
    let mut config = base_config(data_dir.path(), &sim);
    if options.default_key {
        merge(&mut config, json!({ "api_keys": [TEST_KEY] }));
    }
    merge(&mut config, options.config);
    start_app_full(
        sim,
        accounts,
        data_dir,
        config,
        options.upstreams,
        options.local_runner,
    )
    .await
}

/// Starts an app over an existing simulator and data dir with an exact configuration.
pub async fn start_app(
    sim: Simulator,
    accounts: Vec<SimAccount>,
    data_dir: TempDir,
    config: Value,
) -> TestApp {
    start_app_with(sim, accounts, data_dir, config, Vec::new()).await
}

/// [`start_app`] with extra upstreams registered in the model registry.
pub async fn start_app_with(
    sim: Simulator,
    accounts: Vec<SimAccount>,
    data_dir: TempDir,
    config: Value,
    upstreams: Vec<ExtraUpstream>,
) -> TestApp {
    start_app_full(
        sim,
        accounts,
        data_dir,
        config,
        upstreams,
        Some(LocalRunner::queue_only()),
    )
    .await
}

/// [`start_app_with`], with local mode's in-process worker re-logging accounts with
/// `local_runner` (`None`: in Chromium).
pub async fn start_app_full(
    sim: Simulator,
    accounts: Vec<SimAccount>,
    data_dir: TempDir,
    config: Value,
    upstreams: Vec<ExtraUpstream>,
    local_runner: Option<LocalRunner>,
) -> TestApp {
    init();
    let settings = Settings::from_json_str(&config.to_string(), &|_| None)
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"))
        .settings;
    let runner = local_runner.map(|r| r.0);
    // A restart in the same process: the previous gateway's background threads (the pools'
    // persisters) may hold the database a moment after it stopped; wait for them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let app = loop {
        match Application::build_custom(settings.clone(), None, upstreams.clone(), runner.clone())
            .await
        {
            Err(e)
                if format!("{e:?}").contains("DatabaseAlreadyOpen")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            built => break built.expect("application builds"),
        }
    };
    let port = app.port();
    let handle = app.handle();
    let report = app.report().clone();
    let metrics_address = app.metrics_address().map(|a| format!("http://{a}"));
    let running = Some(tokio::spawn(app.run_until_stopped()));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        sim,
        accounts,
        data_dir,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        report,
        metrics_address,
        handle,
        running,
    }
}

impl TestApp {
    /// `GET path` with `key` as the bearer token: the JSON body, whatever the status.
    pub async fn get_json_as(&self, key: &str, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET reaches the gateway")
            .json()
            .await
            .expect("a JSON body")
    }

    /// `POST path` with `key` as the bearer token and a JSON body: the status and the JSON
    /// body (`null` when it is not JSON).
    pub async fn post_json_as(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("POST reaches the gateway");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// `POST /v1/chat/completions` with the test key.
    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(TEST_KEY)
            .json(&body)
            .send()
            .await
            .expect("request reaches the gateway")
    }

    /// `GET path` without a key, as JSON (for the public routes).
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request reaches the gateway");
        response.json().await.expect("a JSON body")
    }

    /// `GET path` with the given headers (a key in the dialect's own header), as JSON.
    pub async fn get_json_with(&self, path: &str, headers: &[(&str, &str)]) -> Value {
        let mut request = self.client.get(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request reaches the gateway");
        response.json().await.expect("a JSON body")
    }

    /// The server's handle (to stop it from a test).
    pub fn server_handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Stops the gateway (not gracefully) and the simulator, and waits until the gateway has
    /// written its state and released its data dir.
    pub async fn stop(mut self) {
        self.handle.stop(false).await;
        if let Some(running) = self.running.take() {
            running
                .await
                .expect("the gateway task")
                .expect("the gateway stopped cleanly");
        }
        self.sim.stop();
    }

    /// Stops the gateway gracefully (in-flight requests finish, up to the drain timeout), waits
    /// for it to write its state, and hands back the data dir and simulator for a restart.
    pub async fn shutdown_gracefully(mut self) -> (TempDir, Simulator, Vec<SimAccount>) {
        self.handle.stop(true).await;
        if let Some(running) = self.running.take() {
            running
                .await
                .expect("the gateway task")
                .expect("the gateway stopped cleanly");
        }
        (self.data_dir, self.sim, self.accounts)
    }
}

/// The account with this e-mail in an `/admin/accounts` answer (the test fails when it is not
/// listed).
pub fn account_in<'a>(accounts: &'a Value, email: &str) -> &'a Value {
    accounts["accounts"]
        .as_array()
        .and_then(|list| list.iter().find(|a| a["email"] == email))
        .unwrap_or_else(|| panic!("{email} not listed: {accounts}"))
}

/// A chat body with one user message.
pub fn chat_body(model: &str, text: &str, stream: bool) -> Value {
    json!({ "model": model, "stream": stream, "messages": [{ "role": "user", "content": text }] })
}

/// Reads a whole streamed body through the checker of `wire` (panicking on a violation, or if
/// the body stalls for 10 s) and returns what the stream said.
pub async fn read_stream(response: reqwest::Response, wire: Wire) -> StreamSummary {
    let mut reader = SseReader::checked(response, wire);
    if wire == Wire::GeminiArray {
        // Not SSE: read bytes, then check.
        let mut body = Vec::new();
        let mut stream = reader.stream;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                Err(_) => panic!("no stream data for 10 s"),
                Ok(None) => break,
                Ok(Some(Err(e))) => panic!("stream body failed: {e}"),
                Ok(Some(Ok(chunk))) => body.extend_from_slice(&chunk),
            }
        }
        return check::check(wire, &body).unwrap_or_else(|e| {
            panic!(
                "{wire:?} stream invariant violated: {e}\nstream: {}",
                String::from_utf8_lossy(&body)
            )
        });
    }
    while reader.next().await.is_some() {}
    reader
        .summary
        .take()
        .expect("the checker ran at the end of the body")
}

/// One server-sent event, or a comment line.
#[derive(Debug, Clone, PartialEq)]
pub enum Sse {
    Event { event: Option<String>, data: String },
    Comment(String),
}

/// Reads SSE from a response as it arrives.
pub struct SseReader {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
    /// Every raw byte read, for assertions on framing.
    pub raw: Vec<u8>,
    /// The wire format to check once the body ends.
    wire: Option<Wire>,
    /// The checker's verdict, once the body ended.
    pub summary: Option<StreamSummary>,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            stream: response.bytes_stream().boxed(),
            buf: Vec::new(),
            raw: Vec::new(),
            wire: None,
            summary: None,
        }
    }

    /// A reader that runs the stream-invariant checker of `wire` over the whole body when it
    /// ends, panicking on a violation (the summary is then in [`SseReader::summary`]).
    pub fn checked(response: reqwest::Response, wire: Wire) -> Self {
        let mut reader = Self::new(response);
        reader.wire = Some(wire);
        reader
    }

    /// The next event or comment; `None` at the end of the body. Panics if nothing arrives
    /// within 10 s (no test may hang).
    pub async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(pos) = find_blank_line(&self.buf) {
                let block: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8(block).expect("SSE is UTF-8");
                if let Some(item) = parse_block(text.trim_end_matches('\n')) {
                    return Some(item);
                }
                continue;
            }
            match tokio::time::timeout(Duration::from_secs(10), self.stream.next()).await {
                Err(_) => panic!("no SSE data for 10 s"),
                Ok(None) => {
                    if let Some(wire) = self.wire.take() {
                        let summary = check::check(wire, &self.raw).unwrap_or_else(|e| {
                            panic!(
                                "{wire:?} stream invariant violated: {e}\nstream: {}",
                                String::from_utf8_lossy(&self.raw)
                            )
                        });
                        self.summary = Some(summary);
                    }
                    return None;
                }
                Ok(Some(Err(e))) => panic!("SSE body failed: {e}"),
                Ok(Some(Ok(chunk))) => {
                    self.raw.extend_from_slice(&chunk);
                    self.buf.extend_from_slice(&chunk);
                }
            }
        }
    }

    /// The next `data:` payload, skipping comments.
    pub async fn next_data(&mut self) -> Option<String> {
        loop {
            match self.next().await? {
                Sse::Event { data, .. } => return Some(data),
                Sse::Comment(_) => continue,
            }
        }
    }

    /// Every remaining data payload.
    pub async fn rest(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(d) = self.next_data().await {
            out.push(d);
        }
        out
    }
}

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}

fn parse_block(block: &str) -> Option<Sse> {
    let mut event = None;
    let mut data: Vec<&str> = Vec::new();
    let mut comment = None;
    for line in block.lines() {
        if let Some(c) = line.strip_prefix(':') {
            comment = Some(c.trim().to_owned());
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push(d.strip_prefix(' ').unwrap_or(d));
        } else if let Some(e) = line.strip_prefix("event:") {
            event = Some(e.trim().to_owned());
        }
    }
    if data.is_empty() {
        return comment.map(Sse::Comment);
    }
    Some(Sse::Event {
        event,
        data: data.join("\n"),
    })
}

/// Validators built from the official SDKs' response types (`tests/schemas`).
pub mod schemas {
    use std::sync::OnceLock;

    use serde_json::Value;

    fn all() -> &'static Value {
        static ALL: OnceLock<Value> = OnceLock::new();
        ALL.get_or_init(|| {
            serde_json::from_str(include_str!("../schemas/sdk-type-schemas.json"))
                .expect("schemas parse")
        })
    }

    fn validator(name: &str) -> jsonschema::Validator {
        let schema = all()
            .get(name)
            .unwrap_or_else(|| panic!("no schema {name}"));
        jsonschema::validator_for(schema).unwrap_or_else(|e| panic!("schema {name} compiles: {e}"))
    }

    /// Panics with every violation if `instance` does not validate against the SDK type `name`
    /// (e.g. `openai.ChatCompletion`).
    pub fn assert_valid(name: &str, instance: &Value) {
        let errors = violations(name, instance);
        assert!(
            errors.is_empty(),
            "{name} schema violations: {errors:#?}\ninstance: {instance}"
        );
    }

    /// Every way `instance` fails to validate against the SDK type `name`.
    pub fn violations(name: &str, instance: &Value) -> Vec<String> {
        static CACHE: OnceLock<
            std::sync::Mutex<
                std::collections::HashMap<String, std::sync::Arc<jsonschema::Validator>>,
            >,
        > = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let v = {
            let mut guard = cache.lock().unwrap();
            guard
                .entry(name.to_owned())
                .or_insert_with(|| std::sync::Arc::new(validator(name)))
                .clone()
        };
        v.iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }
}

/// Checks the OpenAI Chat Completions stream invariants over the `data:` payloads of one
/// stream (see [`check::chat`]); panics on a violation. Returns the parsed chunks (without
/// `[DONE]`).
pub fn check_openai_stream(payloads: &[String], include_usage: bool) -> Vec<Value> {
    check::chat::check_payloads(payloads, include_usage)
        .unwrap_or_else(|e| panic!("chat stream invariant violated: {e}"))
}

/// Concatenates `delta.<field>` over chunks.
pub fn collect_delta(chunks: &[Value], field: &str) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)
                .and_then(|ch| ch["delta"][field].as_str())
        })
        .collect()
}
