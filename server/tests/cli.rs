//! The `business2api` binary's command line: help, configuration errors, client mode.

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_business2api"));
    for var in [
        "LISTEN_ADDR",
        "DATA_DIR",
        "PROXY",
        "CONFIG_ID",
        "API_KEYS",
        "API_KEY",
        "BUSINESS2API_CONFIG",
    ] {
        c.env_remove(var);
    }
    c
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
