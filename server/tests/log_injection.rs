//! Log injection: client text with line breaks and NULs must not forge log lines. The real
//! binary runs with its real log writer; its stderr is read whole.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::Duration;

use common::free_port;
use serde_json::json;

mod common;

const API_KEY: &str = "log-test-api-key-0123456789";
/// What a forged line would start with.
const FORGED: &str = "2030-01-01T00:00:00.000000Z  INFO forged:";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_name_with_newlines_and_nul_cannot_forge_a_log_line() {
    business2api::startup::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({
            "listen_addr": format!("127.0.0.1:{port}"),
            "data_dir": dir.path().join("data"),
            "api_keys": [API_KEY],
            "http": {"workers": 1},
            "pool": {"refresh_on_startup": false},
            "gemini_business": {
                "auth_base_url": "http://127.0.0.1:9",
                "api_base_url": "http://127.0.0.1:9",
            },
        })
        .to_string(),
    )
    .unwrap();
    let mut child = common::Kill(
        common::gateway_command()
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    common::wait_healthy(&client, &base).await;

    let model = format!("gpt-x\n{FORGED} admin login ok\r\n{FORGED} nul\0 end\u{2028}{FORGED}");
    // OpenAI chat, Anthropic messages and a Gemini path all quote the model in their refusal.
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", API_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": model, "max_tokens": 5,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client
        .post(format!(
            "{base}/v1beta/models/gpt-y%0A{}%00:generateContent",
            FORGED.replace(' ', "%20")
        ))
        .header("x-goog-api-key", API_KEY)
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Let the log lines reach stderr, then stop the gateway and read all of it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let raw = child.stop_and_read_stderr();
    let log = String::from_utf8_lossy(&raw);

    assert!(!raw.contains(&0), "a raw NUL reached the log:\n{log}");
    assert!(!raw.contains(&b'\r'), "a raw CR reached the log:\n{log}");
    assert!(
        !log.contains('\u{2028}'),
        "a raw U+2028 reached the log:\n{log}"
    );
    for line in log.lines() {
        assert!(
            !line.trim_start().starts_with("2030-01-01"),
            "a forged line:\n{line}\n\nwhole log:\n{log}"
        );
    }
    // The refusals were logged, escaped.
    assert!(
        log.contains("gpt-x\\n2030-01-01T00:00:00.000000Z  INFO forged: admin login ok\\r\\n"),
        "{log}"
    );
    assert!(log.contains("nul\\0 end\\u{2028}"), "{log}");
    assert!(log.contains("gpt-y\\n2030-01-01"), "{log}");
}
