//! The `business2api` binary's command line: help, configuration errors, client mode.

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
    for needle in ["LISTEN_ADDR", "API_KEYS", "API_KEY", "--config"] {
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
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.json"))
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

#[test]
fn client_mode_is_refused_clearly_rather_than_pretending() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        serde_json::json!({
            "listen_addr": "127.0.0.1:0",
            "data_dir": data,
            "pool_server": {"enable": true, "mode": "client", "server_addr": "http://127.0.0.1:9", "secret": "0123456789abcdef0123"}
        })
        .to_string(),
    )
    .unwrap();
    let out = bin()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("client"), "{err}");
}

/// README's first command: `business2api demo` prints a key and a curl line, and that request
/// streams an answer from the in-process simulator.
#[test]
fn the_demo_prints_a_working_curl_line() {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};

    let mut child = bin()
        .args(["demo", "--listen", "127.0.0.1:0", "--pace-ms", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
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
}
