//! Shutdown: SIGINT and SIGTERM both drain (in-flight requests get `http.shutdown_timeout_sec`
//! to finish), and the log says so in the same words.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use upstream_sim::{SimOptions, Simulator};

mod common;

const API_KEY: &str = "shutdown-test-api-key-0123456789";

async fn stream_survives(name: &str) {
    business2api::startup::install_crypto_provider();
    let options = SimOptions {
        // About three seconds of answer: long enough to signal in the middle of it.
        pacing: Duration::from_millis(250),
        ..SimOptions::default()
    };
    let sim = Simulator::start_with(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), options)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::write_demo_accounts(&sim, &data, 1);
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({
            "listen_addr": format!("127.0.0.1:{port}"),
            "data_dir": data,
            "api_keys": [API_KEY],
            "gemini_business": { "auth_base_url": sim.base_url(), "api_base_url": sim.base_url() },
            "http": { "shutdown_timeout_sec": 20 },
        })
        .to_string(),
    )
    .unwrap();
    let log = dir.path().join("stderr");
    let mut child = common::gateway_command()
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the gateway did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .json(&json!({"model": "gemini-2.5-flash", "stream": true,
            "messages": [{"role": "user", "content": "drain me"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut got = Vec::new();
    got.extend_from_slice(&body.next().await.unwrap().unwrap());
    // The answer has started: now the signal.
    let sent = std::process::Command::new("kill")
        .arg(format!("-{}", name.trim_start_matches("SIG")))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), body.next())
        .await
        .expect("the stream goes on after the signal")
    {
        got.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(got).unwrap();
    let content: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(content.ends_with("You asked: «drain me»"), "{name}: {text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{name}: {text}");
    // Then the process ends, cleanly.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{name}: still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{name}: {status}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("shutting down gracefully") && log.contains(name),
        "{name}: {log}"
    );
    assert!(!log.contains("forced shutdown"), "{name}: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_a_stream_in_flight_finish() {
    stream_survives("SIGINT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_stream_in_flight_finish() {
    stream_survives("SIGTERM").await;
}
