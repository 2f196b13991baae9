//! The coding-agent CLIs as test clients: Claude Code, Codex CLI and gemini-cli, pinned in
//! `tests/agents/package.json` and installed by `scripts/agent-clis.sh`, each run offline against
//! the real gateway on loopback with the simulator answering like a model that follows the tool
//! protocol (`[sim:agent …]`, `tests/simulator/src/script.rs`).
//!
//! The task needs two tool calls: read `notes.txt`, which holds a random token, then write that
//! token upper-cased to `result.txt`. The simulator's model only learns the token from the read's
//! result, so the file on disk proves the whole loop: the CLI sent its tools, the gateway turned
//! the model's text into native calls, the CLI ran them, and their results came back. Each run
//! makes exactly three upstream calls (read, write, final answer).
//!
//! The CLIs are looked up in `AGENT_CLI_DIR` (default `~/.cache/business2api/agent-clis`, where
//! `scripts/agent-clis.sh` installs them). A missing CLI fails the test with what to run, unless
//! `BUSINESS2API_SKIP_AGENT_CLIS=1` is set (scripts/test.sh sets it, loudly, when npm is missing
//! outside CI): never silently green.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use business2api_tests::{TEST_KEY, TestApp, spawn_app};
use serde_json::Value;
use upstream_sim::{AGENT_DONE, Endpoint};

const MODEL: &str = "gemini-2.5-flash";
/// A CLI run that takes longer than this has hung.
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// The installed CLI `bin`, or `None` when the CLIs are explicitly skipped.
fn cli(bin: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("AGENT_CLI_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("business2api/agent-clis"))
        })
        .expect("HOME or AGENT_CLI_DIR is set");
    let path = dir.join("node_modules/.bin").join(bin);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("BUSINESS2API_SKIP_AGENT_CLIS").as_deref() == Ok("1") {
        eprintln!(
            "SKIPPED: the agent CLI `{bin}` is not installed ({} is missing) and \
             BUSINESS2API_SKIP_AGENT_CLIS=1 says to skip it",
            path.display()
        );
        return None;
    }
    panic!(
        "the agent CLI `{bin}` is not installed ({} is missing): run scripts/agent-clis.sh \
         (needs node, npm and the npm registry), or set BUSINESS2API_SKIP_AGENT_CLIS=1 to skip",
        path.display()
    );
}

/// One CLI run's sandbox: a home, a temp dir and a work dir holding `notes.txt`.
struct Task {
    _root: tempfile::TempDir,
    home: PathBuf,
    tmp: PathBuf,
    work: PathBuf,
    token: String,
}

impl Task {
    fn new() -> Task {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let tmp = root.path().join("tmp");
        let work = root.path().join("work");
        for d in [&home, &tmp, &work] {
            std::fs::create_dir_all(d).unwrap();
        }
        // Random per run, so nothing but the read can tell the model.
        let n = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::time::SystemTime::now(),
        );
        let token = format!("token-{n:016x}");
        std::fs::write(
            work.join("notes.txt"),
            format!("Notes for the agent test.\nThe secret is {token}.\n"),
        )
        .unwrap();
        Task {
            _root: root,
            home,
            tmp,
            work,
            token,
        }
    }

    fn prompt(&self) -> String {
        format!(
            "Read the file notes.txt, find the token in it and write that token in upper case to \
             result.txt. [sim:agent read={} write={}]",
            self.work.join("notes.txt").display(),
            self.work.join("result.txt").display()
        )
    }

    /// A command with nothing of the caller's environment but `PATH`.
    fn command(&self, program: &Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(program);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("TMPDIR", &self.tmp)
            .env("USER", "tester")
            .env("SHELL", "/bin/sh")
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .env("NO_COLOR", "1")
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs the command; panics with its output if it fails or hangs. Returns stdout.
    async fn run(&self, name: &str, mut command: tokio::process::Command) -> String {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{name} did not finish within {RUN_LIMIT:?}"))
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "{name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
        stdout
    }

    /// The file on disk proves both calls ran: the token could only come from the read.
    fn assert_done(&self, name: &str, app: &TestApp, stdout: &str) {
        let written = std::fs::read_to_string(self.work.join("result.txt"))
            .unwrap_or_else(|e| panic!("{name} wrote no result.txt ({e}); stdout:\n{stdout}"));
        assert_eq!(
            written.trim(),
            self.token.to_uppercase(),
            "{name}: result.txt"
        );
        // Read, write, final answer: the loop is bounded, with no extra upstream traffic.
        let calls = app.sim.requests(Endpoint::StreamAssist).len();
        assert_eq!(calls, 3, "{name}: upstream calls");
        let queries: Vec<String> = app
            .sim
            .requests(Endpoint::StreamAssist)
            .iter()
            .filter_map(|r| {
                r.body.as_ref()?["streamAssistRequest"]["query"]["parts"][0]["text"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        // Every turn carried the CLI's tools, and the last one both results.
        assert!(
            queries
                .iter()
                .all(|q| q.starts_with("<tools protocol=\"1\">")),
            "{name}"
        );
        assert_eq!(
            queries[2]
                .split("</tools>")
                .nth(1)
                .unwrap()
                .matches("Tool Result [")
                .count(),
            2,
            "{name}: {}",
            queries[2]
        );
    }
}

async fn claude_code(auth_variable: &str) {
    let Some(claude) = cli("claude") else {
        return;
    };
    let app = spawn_app().await;
    let task = Task::new();
    std::fs::write(
        task.home.join(".claude.json"),
        r#"{"hasCompletedOnboarding": true, "bypassPermissionsModeAccepted": true}"#,
    )
    .unwrap();
    let mut c = task.command(&claude);
    c.env("ANTHROPIC_BASE_URL", &app.address)
        .env(auth_variable, TEST_KEY)
        .env("ANTHROPIC_MODEL", MODEL)
        .env("ANTHROPIC_SMALL_FAST_MODEL", MODEL)
        .env("ANTHROPIC_DEFAULT_HAIKU_MODEL", MODEL)
        .env("ANTHROPIC_DEFAULT_SONNET_MODEL", MODEL)
        .env("ANTHROPIC_DEFAULT_OPUS_MODEL", MODEL)
        // Root may skip permissions only in a sandbox; this is one.
        .env("IS_SANDBOX", "1")
        // Nothing but the gateway: no telemetry, update checks, error reports or surveys.
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("DISABLE_BUG_COMMAND", "1")
        .env("CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY", "1")
        .env("DISABLE_COST_WARNINGS", "1")
        .env("CLAUDE_CODE_DISABLE_TERMINAL_TITLE", "1")
        .arg("-p")
        .arg(task.prompt())
        .args(["--model", MODEL, "--dangerously-skip-permissions"])
        .args(["--output-format", "json"]);
    let name = format!("claude -p ({auth_variable})");
    let stdout = task.run(&name, c).await;
    let result: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{name}: stdout is not JSON ({e}): {stdout}"));
    assert_eq!(result["is_error"], false, "{name}: {result}");
    assert_eq!(result["subtype"], "success", "{name}: {result}");
    assert!(
        result["result"]
            .as_str()
            .unwrap_or_default()
            .contains(AGENT_DONE),
        "{name}: {result}"
    );
    task.assert_done(&name, &app, &stdout);
    app.stop().await;
}

#[tokio::test]
async fn claude_code_reads_then_writes_with_an_api_key() {
    claude_code("ANTHROPIC_API_KEY").await;
}

#[tokio::test]
async fn claude_code_reads_then_writes_with_an_auth_token() {
    claude_code("ANTHROPIC_AUTH_TOKEN").await;
}

#[tokio::test]
async fn codex_reads_then_writes_through_the_responses_api() {
    let Some(codex) = cli("codex") else {
        return;
    };
    let app = spawn_app().await;
    let task = Task::new();
    let codex_home = task.home.join(".codex");
    std::fs::create_dir_all(&codex_home).unwrap();
    std::fs::write(
        codex_home.join("config.toml"),
        format!(
            r#"model = "{MODEL}"
model_provider = "gateway"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false
web_search = "disabled"

[model_providers.gateway]
name = "business2api"
base_url = "{}/v1"
env_key = "GATEWAY_API_KEY"
wire_api = "responses"

[features]
plugins = false

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"
log_user_prompt = false
"#,
            app.address
        ),
    )
    .unwrap();
    let mut c = task.command(&codex);
    c.env("CODEX_HOME", &codex_home)
        .env("GATEWAY_API_KEY", TEST_KEY)
        .env("RUST_LOG", "warn")
        .args(["exec", "--skip-git-repo-check"])
        .arg("--dangerously-bypass-approvals-and-sandbox")
        .arg("-C")
        .arg(&task.work)
        .arg(task.prompt());
    let stdout = task.run("codex exec", c).await;
    assert!(stdout.contains(AGENT_DONE), "codex exec: {stdout}");
    task.assert_done("codex exec", &app, &stdout);
    app.stop().await;
}

#[tokio::test]
async fn gemini_cli_reads_then_writes_through_stream_generate_content() {
    let Some(gemini) = cli("gemini") else {
        return;
    };
    let app = spawn_app().await;
    let task = Task::new();
    let settings = task.home.join(".gemini");
    std::fs::create_dir_all(&settings).unwrap();
    std::fs::write(
        settings.join("settings.json"),
        r#"{
  "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
  "privacy": {"usageStatisticsEnabled": false},
  "telemetry": {"enabled": false, "logPrompts": false},
  "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": false}},
  "ui": {"hideTips": true},
  "tools": {"sandbox": false}
}"#,
    )
    .unwrap();
    let mut c = task.command(&gemini);
    c.env("GEMINI_API_KEY", TEST_KEY)
        .env("GOOGLE_GEMINI_BASE_URL", &app.address)
        .arg("-p")
        .arg(task.prompt())
        .args(["-m", MODEL, "--yolo"]);
    let stdout = task.run("gemini -p", c).await;
    assert!(stdout.contains(AGENT_DONE), "gemini -p: {stdout}");
    task.assert_done("gemini -p", &app, &stdout);
    app.stop().await;
}
