//! `hostile`: the release gateway under the shapes of issue 10's probe, measured from outside.
//!
//! Starts `business2api serve` (no accounts needed: every shape is refused or counted before an
//! account is used), then sends, one scenario at a time, bodies built to amplify memory:
//! 1.2 M tiny Anthropic content blocks to `/v1/messages/count_tokens`, 2.5 M Gemini parts to
//! `:countTokens`, 100 k OpenAI chat messages, a large body that is within every limit (it must
//! be counted, not refused), and four of the big ones at once. While each runs, a sampler reads
//! the gateway's `VmRSS` every 5 ms and a poller sends `GET /health` every 20 ms.
//!
//! Each scenario must keep the gateway's peak RSS above its idle RSS under 4 × the bytes that
//! may be in flight (those of the bodies sent at once, at most `http.inflight_body_mb`: the
//! last scenario sends more than that, and the excess waits or gets 503), and every `/health`
//! must answer within 100 ms. The verdicts and the numbers are printed as a Markdown table;
//! the exit status is 1 when any scenario breaks its bound. See bench/hostile.sh.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use clap::Parser;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const KEY: &str = "hostile-bench-key";
/// `/health` must answer within this, under every scenario.
const HEALTH_BOUND: Duration = Duration::from_millis(100);
/// Peak RSS above idle must stay under this many times the bytes that may be in flight (those
/// sent at once, at most `http.inflight_body_mb`).
const RSS_FACTOR: u64 = 4;

#[derive(Debug, Parser)]
#[command(name = "hostile", about = "business2api under hostile request shapes")]
struct Cli {
    /// The gateway binary (a release build).
    #[arg(long)]
    gateway: PathBuf,
    /// `http.inflight_body_mb` for the gateway (its default is 128).
    #[arg(long, default_value_t = 128)]
    inflight_mb: u64,
}

/// One request of a scenario.
struct Shape {
    name: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    /// The statuses that are a correct answer.
    expect: &'static [u16],
}

struct Outcome {
    scenario: String,
    sent_bytes: u64,
    idle_kb: u64,
    peak_kb: u64,
    after_kb: u64,
    statuses: Vec<u16>,
    health_max: Duration,
    health_count: usize,
    elapsed: Duration,
    bound_kb: u64,
    ok: bool,
    why: Vec<String>,
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A JSON array of `count` copies of `item`, as bytes (built without a JSON tree).
fn repeated(prefix: &str, item: &str, count: usize, suffix: &str) -> Bytes {
    let mut out = String::with_capacity(prefix.len() + (item.len() + 1) * count + suffix.len());
    out.push_str(prefix);
    for i in 0..count {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push_str(suffix);
    Bytes::from(out)
}

fn anthropic_blocks(count: usize) -> Shape {
    Shape {
        name: "anthropic_count_tokens_1_2m_blocks",
        path: "/v1/messages/count_tokens".into(),
        headers: vec![
            ("x-api-key", KEY.into()),
            ("anthropic-version", "2023-06-01".into()),
        ],
        body: repeated(
            r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":["#,
            r#"{"type":"text","text":"a"}"#,
            count,
            "]}]}",
        ),
        expect: &[400, 503],
    }
}

fn gemini_parts(count: usize) -> Shape {
    Shape {
        name: "gemini_count_tokens_2_5m_parts",
        path: "/v1beta/models/gemini-2.5-flash:countTokens".into(),
        headers: vec![("x-goog-api-key", KEY.into())],
        body: repeated(
            r#"{"contents":[{"role":"user","parts":["#,
            r#"{"text":"a"}"#,
            count,
            "]}]}",
        ),
        expect: &[400, 503],
    }
}

fn openai_messages(count: usize) -> Shape {
    Shape {
        name: "openai_chat_100k_messages",
        path: "/v1/chat/completions".into(),
        headers: vec![("authorization", format!("Bearer {KEY}"))],
        body: repeated(
            r#"{"model":"gemini-2.5-flash","messages":["#,
            r#"{"role":"user","content":"a"}"#,
            count,
            "]}",
        ),
        expect: &[400],
    }
}

/// About 30 MB that every limit allows: 8,000 blocks of 3.75 kB. Counted, not refused.
fn anthropic_within_limits() -> Shape {
    let text = "lorem ipsum dolor sit amet ".repeat(140);
    let item = format!(r#"{{"type":"text","text":"{text}"}}"#);
    Shape {
        name: "anthropic_count_tokens_30mb_within_limits",
        path: "/v1/messages/count_tokens".into(),
        headers: vec![
            ("x-api-key", KEY.into()),
            ("anthropic-version", "2023-06-01".into()),
        ],
        body: repeated(
            r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":["#,
            &item,
            8_000,
            "]}]}",
        ),
        expect: &[200],
    }
}

async fn send(client: &reqwest::Client, base: &str, shape: &Shape) -> Result<u16> {
    let mut request = client
        .post(format!("{base}{}", shape.path))
        .header("content-type", "application/json")
        .body(shape.body.clone());
    for (name, value) in &shape.headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.context(shape.name)?;
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    if !shape.expect.contains(&status) {
        eprintln!(
            "hostile: {}: unexpected {status}: {}",
            shape.name,
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    } else if status == 400 {
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        eprintln!("hostile: {}: 400 {}", shape.name, one_line(&v));
    }
    Ok(status)
}

fn one_line(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(200).collect()
}

async fn run(
    scenario: &str,
    shapes: Vec<Shape>,
    client: &reqwest::Client,
    base: &str,
    pid: u32,
    budget: u64,
) -> Result<Outcome> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kb = rss_kb(pid);
    let sent_bytes: u64 = shapes.iter().map(|s| s.body.len() as u64).sum();

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(idle_kb));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // Its own OS thread and a plain blocking socket, so that the load this process generates
    // (building and sending the bodies) cannot delay the probe: what it measures is the gateway.
    let health = {
        let stop = Arc::clone(&stop);
        let addr = base.trim_start_matches("http://").to_owned();
        std::thread::spawn(move || {
            let mut times = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let answered = health_once(&addr);
                let took = started.elapsed();
                times.push(if answered {
                    took
                } else {
                    Duration::from_secs(10)
                });
                std::thread::sleep(Duration::from_millis(20));
            }
            times
        })
    };

    let started = Instant::now();
    let expects: Vec<&'static [u16]> = shapes.iter().map(|s| s.expect).collect();
    let sends = shapes.iter().map(|shape| send(client, base, shape));
    let statuses: Vec<u16> = futures_collect(sends).await?;
    let elapsed = started.elapsed();
    // Let memory settle, then stop measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let health_times = health.join().unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after_kb = rss_kb(pid);
    let peak_kb = peak.load(Ordering::Relaxed);

    let mut why = Vec::new();
    for (status, expect) in statuses.iter().zip(&expects) {
        if !expect.contains(status) {
            why.push(format!("status {status}, expected one of {expect:?}"));
        }
    }
    // The gateway holds at most the budget's worth of bodies at once, however much is sent.
    let in_flight = sent_bytes.min(budget);
    let bound_kb = RSS_FACTOR * in_flight / 1024;
    if peak_kb.saturating_sub(idle_kb) > bound_kb {
        why.push(format!(
            "peak RSS rose {} MiB, over {RSS_FACTOR}× the {} MiB that may be in flight",
            (peak_kb - idle_kb) / 1024,
            in_flight / (1024 * 1024)
        ));
    }
    let health_max = health_times.iter().copied().max().unwrap_or_default();
    if health_max > HEALTH_BOUND {
        why.push(format!("/health took {health_max:?}"));
    }
    if health_times.is_empty() {
        why.push("/health was never polled".into());
    }
    Ok(Outcome {
        scenario: scenario.to_owned(),
        sent_bytes,
        idle_kb,
        peak_kb,
        after_kb,
        statuses,
        health_max,
        health_count: health_times.len(),
        elapsed,
        bound_kb,
        ok: why.is_empty(),
        why,
    })
}

/// One `GET /health` on a new connection; whether a `200` came back within 10 s.
fn health_once(addr: &str) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_nodelay(true);
    let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = Vec::new();
    if stream.read_to_end(&mut response).is_err() {
        return false;
    }
    response.starts_with(b"HTTP/1.1 200")
}

async fn futures_collect<F: std::future::Future<Output = Result<u16>>>(
    futures: impl Iterator<Item = F>,
) -> Result<Vec<u16>> {
    let all = futures_util::future::join_all(futures).await;
    all.into_iter().collect()
}

struct Gateway {
    child: tokio::process::Child,
    base: String,
    pid: u32,
    _dir: tempfile::TempDir,
}

async fn start_gateway(binary: &PathBuf, inflight_mb: u64) -> Result<Gateway> {
    let dir = tempfile::tempdir()?;
    let config = serde_json::json!({
        "listen_addr": "127.0.0.1:0",
        "data_dir": dir.path().join("data"),
        "api_keys": [KEY],
        "http": { "inflight_body_mb": inflight_mb },
    });
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string())?;
    let mut child = tokio::process::Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .arg("--no-watch")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let pid = child.id().context("the gateway has no pid")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let base = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let url = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                return Ok::<String, anyhow::Error>(url);
            }
        }
        bail!("the gateway exited before listening")
    })
    .await
    .context("the gateway did not start within 30 s")??;
    // Keep reading stdout so the gateway never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Gateway {
        child,
        base,
        pid,
        _dir: dir,
    })
}

fn mib(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match main_inner(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("hostile: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn main_inner(cli: Cli) -> Result<bool> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let scenarios: Vec<(&str, Vec<Shape>)> = vec![
        ("1.2 M Anthropic blocks", vec![anthropic_blocks(1_200_000)]),
        ("2.5 M Gemini parts", vec![gemini_parts(2_500_000)]),
        ("100 k OpenAI messages", vec![openai_messages(100_000)]),
        (
            "30 MB within the limits (counted)",
            vec![anthropic_within_limits()],
        ),
        (
            "four at once (2 × blocks, 2 × parts)",
            vec![
                anthropic_blocks(1_200_000),
                gemini_parts(2_500_000),
                anthropic_blocks(1_200_000),
                gemini_parts(2_500_000),
            ],
        ),
        (
            "six at once, more than the budget (3 × blocks, 3 × parts)",
            vec![
                anthropic_blocks(1_200_000),
                gemini_parts(2_500_000),
                anthropic_blocks(1_200_000),
                gemini_parts(2_500_000),
                anthropic_blocks(1_200_000),
                gemini_parts(2_500_000),
            ],
        ),
    ];
    // Each scenario gets a fresh gateway, so that one scenario's freed-but-kept heap does not
    // hide the next one's peak.
    let mut outcomes = Vec::new();
    let mut alive = true;
    for (name, shapes) in scenarios {
        let mut gateway = start_gateway(&cli.gateway, cli.inflight_mb).await?;
        eprintln!(
            "hostile: {name}: gateway at {} (pid {})",
            gateway.base, gateway.pid
        );
        let budget = cli.inflight_mb * 1024 * 1024;
        outcomes.push(run(name, shapes, &client, &gateway.base, gateway.pid, budget).await?);
        if gateway.child.try_wait()?.is_some() {
            eprintln!("hostile: the gateway died during {name}");
            alive = false;
        }
        let _ = gateway.child.start_kill();
        let _ = gateway.child.wait().await;
    }

    println!(
        "| scenario | sent at once (MiB) | idle RSS (MiB) | peak RSS (MiB) | peak − idle (MiB) | bound (MiB) | RSS after (MiB) | statuses | slowest /health (ms, of n) | time (s) | verdict |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut all_ok = alive;
    for o in &outcomes {
        all_ok &= o.ok;
        println!(
            "| {} | {:.1} | {} | {} | {} | {} | {} | {} | {} of {} | {:.1} | {} |",
            o.scenario,
            o.sent_bytes as f64 / (1024.0 * 1024.0),
            mib(o.idle_kb),
            mib(o.peak_kb),
            mib(o.peak_kb.saturating_sub(o.idle_kb)),
            mib(o.bound_kb),
            mib(o.after_kb),
            o.statuses
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            o.health_max.as_millis(),
            o.health_count,
            o.elapsed.as_secs_f64(),
            if o.ok {
                "ok".to_owned()
            } else {
                format!("**fail**: {}", o.why.join("; "))
            }
        );
    }
    Ok(all_ok)
}
