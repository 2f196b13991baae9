//! The `business2api` binary's command line: help, configuration errors, the configuration
//! path, start-up key checks (client mode: `client_mode.rs`).

// The helpers below run only inside tests; a failed unwrap there is a failed test.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::process::Command;

mod common;

fn bin() -> Command {
    common::gateway_command()
}

#[test]
fn help_documents_every_subcommand_and_flag() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in ["serve", "demo", "--config", "config/config.json"] {
        assert!(help.contains(needle), "`--help` lacks {needle}:\n{help}");
    }
    let out = bin().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "LISTEN_ADDR",
        "API_KEYS",
        "API_KEY",
        "ADMIN_KEYS",
        "ADMIN_KEY",
        "RUST_LOG",
        "--config",
    ] {
        assert!(
            help.contains(needle),
            "`serve --help` lacks {needle}:\n{help}"
        );
    }
    let out = bin().args(["demo", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in ["--listen", "--pace-ms"] {
        assert!(
            help.contains(needle),
            "`demo --help` lacks {needle}:\n{help}"
        );
    }
    // Every positional argument says what it is.
    for (args, needle) in [
        (["accounts", "import", "--help"], "Account files"),
        (["accounts", "export", "--help"], "Directory to write"),
        (["admin", "set-password", "--help"], "stdin"),
    ] {
        let out = bin().args(args).output().unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.contains(needle), "{args:?} lacks {needle}:\n{help}");
    }
}

#[test]
fn an_invalid_config_reports_every_error_with_its_path_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"listen_addr": "nowhere", "pool": {"use_cooldown_sec": "fast", "refresh_on_startup": "yes"},
            "gemini_business": {"api_base_url": "ftp://x"}, "pool_server": {"mode": "sideways"}}"#,
    )
    .unwrap();
    let out = bin()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    for path in [
        "listen_addr",
        "pool.use_cooldown_sec",
        "pool.refresh_on_startup",
        "gemini_business.api_base_url",
        "pool_server.mode",
    ] {
        assert!(err.contains(path), "error output lacks {path}:\n{err}");
    }
    assert!(err.contains("5 configuration error"), "{err}");
}

#[test]
fn environment_errors_are_reported_too() {
    // No configuration file (the default path, missing): the environment alone is checked.
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("serve")
        .current_dir(dir.path())
        .env("LISTEN_ADDR", "not an address")
        .env("PROXY", "gopher://proxy")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("env LISTEN_ADDR") && err.contains("env PROXY"),
        "{err}"
    );
    assert!(
        !err.contains("gopher://proxy"),
        "values of secret settings are not echoed: {err}"
    );
}

/// README's first command: `business2api demo` prints a key and a curl line, and that request
/// streams an answer from the in-process simulator.
#[test]
fn the_demo_prints_a_working_curl_line() {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};

    let logs = tempfile::tempdir().unwrap();
    let stderr_path = logs.path().join("stderr");
    let listen = format!("127.0.0.1:{}", common::free_port());
    let mut child = bin()
        .args(["demo", "--listen", &listen, "--pace-ms", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SIGTERM lets the demo remove its temporary data dir; SIGKILL only if it lingers.
            let _ = Command::new("kill").arg(self.0.id().to_string()).status();
            for _ in 0..100 {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _guard = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut addr = None;
    let mut key = None;
    while addr.is_none() || key.is_none() {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("demo output");
        if let Some(rest) = line.strip_prefix("business2api listening on http://") {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(pos) = line.find("Bearer sk-b2a-") {
            key = line[pos + 7..].split('\'').next().map(str::to_owned);
        }
    }
    let (addr, key) = (addr.unwrap(), key.unwrap());
    assert!(!addr.ends_with(":0"), "the real port is shown: {addr}");
    let body = r#"{"model":"gemini-2.5-flash","stream":true,"messages":[{"role":"user","content":"Hello!"}]}"#;
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("text/event-stream"), "{response}");
    assert!(response.contains("You asked: «Hello!»"), "{response}");
    assert!(response.contains("data: [DONE]"), "{response}");
    // The banner is all a newcomer sees: no log lines from actix, the simulator or the worker.
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(stderr.trim().is_empty(), "{stderr}");
}

/// What a run of the binary left: exit code (`None`: still running when stopped), stdout and
/// stderr.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `command` until it exits, or until its stdout shows the gateway listening (then it is
/// killed), or for at most 20 s. A gateway that starts when it should not is stopped, not
/// left hanging the test.
fn run_until_listening(mut command: Command) -> Run {
    use std::time::{Duration, Instant};
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("out"), logs.path().join("err"));
    let mut child = command
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        let listening = std::fs::read_to_string(&out_path)
            .unwrap_or_default()
            .contains("business2api listening on");
        if listening || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        code,
        stdout: std::fs::read_to_string(&out_path).unwrap(),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
    }
}

/// The names in `dir`, sorted.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A mistyped `--config` must not start a gateway with every default on every interface: the
/// path given (on the command line or in BUSINESS2API_CONFIG) must exist, for every
/// subcommand, and nothing is created before that is checked.
#[test]
fn an_explicit_config_that_does_not_exist_is_refused_before_anything_is_created() {
    let cwd = tempfile::tempdir().unwrap();
    let port = common::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let cases: [(&[&str], Option<&str>); 5] = [
        (&["serve", "--config", "confg.json"], None),
        (&["--config", "confg.json"], None),
        (&["-c", "confg.json", "accounts", "list"], None),
        (
            &["accounts", "import", "x.json", "--config", "confg.json"],
            None,
        ),
        (&["serve"], Some("confg.json")),
    ];
    for (args, env) in cases {
        let mut command = bin();
        command
            .args(args)
            .current_dir(cwd.path())
            .env("LISTEN_ADDR", &listen);
        if let Some(path) = env {
            command.env("BUSINESS2API_CONFIG", path);
        }
        let run = run_until_listening(command);
        assert_eq!(
            run.code,
            Some(2),
            "{args:?} {env:?}: {}{}",
            run.stdout,
            run.stderr
        );
        assert!(
            run.stderr.contains("confg.json") && run.stderr.contains("does not exist"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            entries(cwd.path()).is_empty(),
            "{args:?} created {:?}",
            entries(cwd.path())
        );
    }

    // A directory is not a configuration file, whether named or at the default path.
    std::fs::create_dir_all(cwd.path().join("config").join("config.json")).unwrap();
    for args in [&["serve", "--config", "config"][..], &["serve"][..]] {
        let mut command = bin();
        command
            .args(args)
            .current_dir(cwd.path())
            .env("LISTEN_ADDR", &listen);
        let run = run_until_listening(command);
        assert_eq!(run.code, Some(2), "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains("is a directory"), "{}", run.stderr);
        assert_eq!(entries(cwd.path()), ["config"]);
    }
}

/// The implicit default `config/config.json` may be missing: every key takes its default (the
/// environment still applies) and the log says so.
#[test]
fn a_missing_default_config_still_starts_with_the_defaults() {
    let cwd = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut command = bin();
    command
        .arg("serve")
        .current_dir(cwd.path())
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"));
    let run = run_until_listening(command);
    assert_eq!(
        run.code, None,
        "it was running: {}{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains(&format!(
            "business2api listening on http://127.0.0.1:{port}"
        )),
        "{}",
        run.stdout
    );
    // No accounts: the operator is told at once, and where they go.
    assert!(
        run.stdout.contains("The pool is empty")
            && run.stdout.contains("account.example.json")
            && run.stdout.contains("accounts import"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("no configuration file; using defaults")
            && run.stderr.contains("config/config.json"),
        "{}",
        run.stderr
    );
    assert_eq!(entries(cwd.path()), ["data"], "the default data dir");
}

/// A config file for a gateway on a free local port with `data` as its data dir.
fn write_config(
    dir: &std::path::Path,
    data: &std::path::Path,
    extra: serde_json::Value,
) -> std::path::PathBuf {
    let mut config = serde_json::json!({
        "listen_addr": format!("127.0.0.1:{}", common::free_port()),
        "data_dir": data,
        "pool": { "refresh_on_startup": false },
    });
    if let (Some(c), serde_json::Value::Object(extra)) = (config.as_object_mut(), extra) {
        c.extend(extra);
    }
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Start-up warnings: a very short admin key (named by position, never printed), and key files
/// that group or others may read (made private, 0600, and said so). The gateway still starts.
#[test]
fn weak_keys_and_exposed_key_files_are_warned_about_without_printing_them() {
    const SHORT_ADMIN: &str = "Zq7";
    const STORED: &str = "sk-b2a-stored-generated-key-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("api_key"), format!("{STORED}\n")).unwrap();
    std::fs::write(data.join("thinking-signing.key"), [9u8; 32]).unwrap();
    #[cfg(unix)]
    for name in ["api_key", "thinking-signing.key"] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(data.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let config = write_config(
        dir.path(),
        &data,
        serde_json::json!({"admin_keys": [SHORT_ADMIN]}),
    );
    let mut command = bin();
    command.args(["serve", "--config"]).arg(&config);
    let run = run_until_listening(command);
    assert_eq!(run.code, None, "it started: {}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("admin key #1 (") && run.stderr.contains("shorter than 16 characters"),
        "{}",
        run.stderr
    );
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(!all.contains(SHORT_ADMIN), "{all}");
    assert!(!all.contains(STORED), "{all}");
    assert!(
        run.stdout.contains("using the generated API key stored in"),
        "{}",
        run.stdout
    );
    #[cfg(unix)]
    for name in ["api_key", "thinking-signing.key"] {
        assert!(
            run.stderr.contains(&format!(
                "{name} was readable by group or others (mode 0644)"
            )),
            "{name}: {}",
            run.stderr
        );
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
}

/// The generated key (`<data_dir>/api_key`) is an API key like a configured one: an admin key
/// equal to it is refused at start, as `admin_keys` equal to `api_keys` is, without printing it.
#[test]
fn an_admin_key_equal_to_the_generated_key_is_refused_at_start() {
    const STORED: &str = "sk-b2a-stored-generated-key-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("api_key"), format!("{STORED}\n")).unwrap();
    let config = write_config(
        dir.path(),
        &data,
        serde_json::json!({"admin_keys": ["another-admin-key-0123456789", STORED]}),
    );
    let mut command = bin();
    command.args(["serve", "--config"]).arg(&config);
    let run = run_until_listening(command);
    assert_eq!(run.code, Some(1), "refused: {}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("an admin key equals the generated API key stored in")
            && run.stderr.contains("api_key"),
        "{}",
        run.stderr
    );
    assert!(!format!("{}{}", run.stdout, run.stderr).contains(STORED));

    // Configured API keys take precedence: the generated key is not in use, nothing to refuse.
    let config = write_config(
        dir.path(),
        &data,
        serde_json::json!({"admin_keys": [STORED], "api_keys": ["configured-api-key-0123456789"]}),
    );
    let mut command = bin();
    command.args(["serve", "--config"]).arg(&config);
    let run = run_until_listening(command);
    assert_eq!(run.code, None, "it started: {}{}", run.stdout, run.stderr);
}

/// A file in the accounts dir whose name carries a newline and an escape sequence cannot forge
/// a line of the start-up output or the log: its name is printed escaped.
#[cfg(unix)]
#[test]
fn start_up_rejections_print_file_names_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("evil\nFAKE LINE \u{1b}[2J.json"), "{").unwrap();
    let config = write_config(
        dir.path(),
        &data,
        serde_json::json!({"api_keys": ["configured-api-key-0123456789"]}),
    );
    let mut command = bin();
    command.args(["serve", "--config"]).arg(&config);
    let run = run_until_listening(command);
    assert_eq!(run.code, None, "it started: {}{}", run.stdout, run.stderr);
    for output in [&run.stdout, &run.stderr] {
        assert!(
            output.contains("evil\\nFAKE LINE \\u{1b}[2J.json"),
            "{output}"
        );
        assert!(
            !output.lines().any(|l| l.starts_with("FAKE LINE")),
            "{output}"
        );
        assert!(!output.contains('\u{1b}'), "{output:?}");
    }
}

#[test]
fn admin_set_password_reads_stdin_and_stores_an_argon2id_hash() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let data = dir.path().join("data");
    std::fs::write(&config, serde_json::json!({ "data_dir": data }).to_string()).unwrap();
    let run = |input: &str| {
        let mut child = bin()
            .args(["admin", "set-password", "--config"])
            .arg(&config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let file = data.join("admin_password");
    let short = run("too short\n");
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 10"));
    assert!(!file.exists());
    let password = "a console password 123";
    let done = run(&format!("{password}\n"));
    assert!(done.status.success(), "{done:?}");
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(stored.starts_with("$argon2id$v=19$"), "{stored}");
    assert!(!stored.contains(password));
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(!output.contains(password), "{output}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
