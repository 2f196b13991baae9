//! `loadgen`: measures the gateway against the upstream simulator (see bench/run.sh).
//!
//! * `loadgen run …` — the measurements; prints the results as JSON on stdout.
//! * `loadgen render …` — turns those results plus what the script measured (start-up RSS, the
//!   machine) into BENCHMARKS.md on stdout.

mod direct;
mod gateway;
mod procfs;
mod report;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::direct::{AccountFile, Direct, DirectTiming};
use crate::gateway::{Gateway, GatewayTiming};
use crate::report::{
    CpuUse, Latency, Load, ProcMemory, Results, RunConfig, Streaming, ThroughputRow,
};
use crate::stats::{Summary, median_us};

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "business2api benchmark load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the measurements and print the results as JSON.
    Run(Box<RunArgs>),
    /// Render BENCHMARKS.md (Markdown on stdout) from `run` results and the script's facts.
    Render(Box<report::RenderArgs>),
    /// Sequential streamed requests through the gateway only; prints the time to first
    /// content and to the end as JSON (bench/prefetch.sh: with and without session prefetch).
    Ttfc(TtfcArgs),
    /// The direct U2 + U4 turn made straight to the simulator and through `bareproxy`, paired
    /// at concurrency 1, then through the proxy under load; prints JSON (bench/run.sh).
    Proxy(ProxyArgs),
}

#[derive(Debug, Args)]
struct ProxyArgs {
    /// Simulator base URL.
    #[arg(long)]
    sim: String,
    /// bareproxy's base URL (in front of the simulator).
    #[arg(long)]
    proxy: String,
    /// An account file the simulator wrote.
    #[arg(long)]
    account: PathBuf,
    #[arg(long, default_value = "gemini-2.5-flash")]
    model: String,
    #[arg(long, default_value = "hi")]
    prompt: String,
    #[arg(long, default_value_t = 300)]
    warmup: usize,
    /// Sequential measured pairs (direct, through the proxy).
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    concurrency: Vec<usize>,
    #[arg(long, default_value_t = 15)]
    duration_secs: u64,
    #[arg(long, default_value_t = 2)]
    load_warmup_secs: u64,
    /// bareproxy's process id, for its CPU time.
    #[arg(long)]
    proxy_pid: Option<u32>,
    #[arg(long)]
    sim_pid: Option<u32>,
}

fn proxy_main(args: &ProxyArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let out = runtime.block_on(proxy_run(args))?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Rounded to 0.1 (µs figures: more digits are noise).
fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

async fn proxy_run(args: &ProxyArgs) -> Result<serde_json::Value> {
    let http = client()?;
    let direct = Direct::new(
        http.clone(),
        &args.sim,
        AccountFile::load(&args.account)?,
        &args.prompt,
        &args.model,
    )?;
    let proxied = Arc::new(Direct::new(
        http,
        &args.proxy,
        AccountFile::load(&args.account)?,
        &args.prompt,
        &args.model,
    )?);
    progress(&format!(
        "bare proxy: {} + {} sequential pairs",
        args.warmup, args.requests
    ));
    let mut d = Vec::with_capacity(args.requests);
    let mut p = Vec::with_capacity(args.requests);
    for i in 0..args.warmup + args.requests {
        let (a, b) = if i % 2 == 0 {
            (direct.turn().await?, proxied.turn().await?)
        } else {
            let b = proxied.turn().await?;
            (direct.turn().await?, b)
        };
        if i >= args.warmup {
            d.push(a);
            p.push(b);
        }
    }
    let direct_total = summary(d.iter().map(|t| t.total));
    let proxy_total = summary(p.iter().map(|t| t.total));
    let direct_first = summary(d.iter().map(|t| t.first_chunk));
    let proxy_first = summary(p.iter().map(|t| t.first_chunk));
    let added = |a: &Summary, b: &Summary| {
        serde_json::json!({
            "p50_us": round(b.p50_us - a.p50_us),
            "p99_us": round(b.p99_us - a.p99_us),
        })
    };
    let pids = Pids {
        gateway: args.proxy_pid,
        sim: args.sim_pid,
    };
    let target = Target::Direct(proxied);
    let mut rows = Vec::new();
    for &c in &args.concurrency {
        progress(&format!("bare proxy: concurrency {c}"));
        load(&target, c, Duration::from_secs(args.load_warmup_secs), pids).await?;
        let run = load(&target, c, Duration::from_secs(args.duration_secs), pids).await?;
        let cpu_us = run
            .cpu
            .gateway_ms
            .filter(|_| run.requests > 0)
            .map(|ms| round(ms * 1000.0 / run.requests as f64));
        rows.push(serde_json::json!({
            "concurrency": c,
            "requests": run.requests,
            "errors": run.errors,
            "rps": run.rps,
            "proxy_cpu_us_per_request": cpu_us,
        }));
    }
    Ok(serde_json::json!({
        "pairs": args.requests,
        "direct_total": direct_total,
        "proxy_total": proxy_total,
        "added_total": added(&direct_total, &proxy_total),
        "direct_first_chunk": direct_first,
        "proxy_first_chunk": proxy_first,
        "added_first_chunk": added(&direct_first, &proxy_first),
        "throughput": rows,
    }))
}

#[derive(Debug, Args)]
struct TtfcArgs {
    /// Gateway base URL (http://127.0.0.1:PORT).
    #[arg(long)]
    gateway: String,
    /// Gateway API key.
    #[arg(long)]
    key: String,
    #[arg(long, default_value = "gemini-2.5-flash")]
    model: String,
    #[arg(long, default_value = "hi")]
    prompt: String,
    /// Unmeasured requests first.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Measured requests, one after another.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Pause between two requests, milliseconds (a user reading the answer).
    #[arg(long, default_value_t = 0)]
    gap_ms: u64,
}

fn ttfc_main(args: &TtfcArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let gateway = Gateway::new(
            client()?,
            &args.gateway,
            &args.key,
            &args.prompt,
            &args.model,
        )?;
        let gap = Duration::from_millis(args.gap_ms);
        let (mut first, mut total) = (Vec::new(), Vec::new());
        for i in 0..args.warmup + args.requests {
            let timing = gateway.chat(true).await?;
            if i >= args.warmup {
                first.push(timing.first_content.context("a stream without content")?);
                total.push(timing.total);
            }
            tokio::time::sleep(gap).await;
        }
        let out = serde_json::json!({
            "requests": args.requests,
            "gap_ms": args.gap_ms,
            "first_content": Summary::of(&mut first),
            "total": Summary::of(&mut total),
        });
        println!("{out}");
        Ok(())
    })
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Gateway base URL (http://127.0.0.1:PORT).
    #[arg(long)]
    gateway: String,
    /// Gateway API key.
    #[arg(long)]
    key: String,
    /// Simulator base URL (http://127.0.0.1:PORT).
    #[arg(long)]
    sim: String,
    /// An account file the simulator wrote (used for the direct baseline).
    #[arg(long)]
    account: PathBuf,
    /// Model requested from the gateway (and its upstream id sent directly).
    #[arg(long, default_value = "gemini-2.5-flash")]
    model: String,
    /// The user message.
    #[arg(long, default_value = "hi")]
    prompt: String,
    /// Sequential warm-up pairs (gateway + direct) before measuring.
    #[arg(long, default_value_t = 300)]
    warmup: usize,
    /// Sequential measured pairs (one gateway non-stream request, one direct U2+U4 turn).
    #[arg(long, default_value_t = 5000)]
    latency_requests: usize,
    /// Sequential measured pairs with the gateway streaming (time to first content).
    #[arg(long, default_value_t = 1000)]
    stream_requests: usize,
    /// Concurrency levels of the throughput runs.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    concurrency: Vec<usize>,
    /// Length of each measured throughput run, seconds.
    #[arg(long, default_value_t = 15)]
    duration_secs: u64,
    /// Unmeasured run before each throughput run, seconds.
    #[arg(long, default_value_t = 2)]
    load_warmup_secs: u64,
    /// Gateway process id, for RSS (optional).
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// Simulator process id, for RSS (optional).
    #[arg(long)]
    sim_pid: Option<u32>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_main(*args),
        Command::Render(args) => report::render_main(&args),
        Command::Ttfc(args) => ttfc_main(&args),
        Command::Proxy(args) => proxy_main(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_main(args: RunArgs) -> Result<()> {
    // reqwest is built without a crypto provider; nothing here uses TLS, but the client
    // builder wants one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let results = runtime.block_on(run(args))?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build the HTTP client")
}

fn progress(message: &str) {
    eprintln!("loadgen: {message}");
}

/// One side of the comparison, for the throughput runs.
#[derive(Clone)]
enum Target {
    Gateway(Arc<Gateway>),
    Direct(Arc<Direct>),
}

impl Target {
    async fn once(&self) -> Result<Duration> {
        match self {
            Target::Gateway(g) => g.chat(false).await.map(|t| t.total),
            Target::Direct(d) => d.turn().await.map(|t| t.total),
        }
    }
}

/// The processes whose CPU time is accounted.
#[derive(Debug, Clone, Copy)]
struct Pids {
    gateway: Option<u32>,
    sim: Option<u32>,
}

/// CPU time used so far (ms) by the gateway, the simulator, this process and the whole machine.
#[derive(Debug, Clone, Copy)]
struct CpuSnapshot([Option<f64>; 4]);

impl Pids {
    fn cpu(&self) -> CpuSnapshot {
        let ms = |pid: Option<u32>| pid.and_then(|p| procfs::cpu_ms(p).ok());
        CpuSnapshot([
            ms(self.gateway),
            ms(self.sim),
            ms(Some(std::process::id())),
            procfs::machine_busy_ms().ok(),
        ])
    }
}

impl CpuSnapshot {
    /// CPU time used between `self` and `later`.
    fn until(&self, later: &CpuSnapshot) -> CpuUse {
        let [g, s, l, m] = [0, 1, 2, 3].map(|i| {
            let a = self.0.get(i).copied().flatten()?;
            let b = later.0.get(i).copied().flatten()?;
            Some(((b - a) * 10.0).round() / 10.0)
        });
        CpuUse {
            gateway_ms: g,
            sim_ms: s,
            loadgen_ms: l,
            machine_ms: m,
        }
    }
}

/// `concurrency` loops calling `target` back to back for `duration`.
async fn load(target: &Target, concurrency: usize, duration: Duration, pids: Pids) -> Result<Load> {
    let cpu_before = pids.cpu();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut errors = 0u64;
            let mut first_error = None;
            while Instant::now() < deadline {
                match target.once().await {
                    Ok(d) => latencies.push(d),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (l, e, f) = task.await.context("a load task failed")?;
        latencies.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_before.until(&pids.cpu());
    let requests = latencies.len() as u64;
    Ok(Load {
        cpu,
        requests,
        errors,
        seconds: (seconds * 1000.0).round() / 1000.0,
        rps: (requests as f64 / seconds * 10.0).round() / 10.0,
        latency: Summary::of(&mut latencies),
        first_error,
    })
}

/// Sequential pairs, alternating which side goes first so drift and order effects hit both.
async fn pairs(
    gateway: &Gateway,
    direct: &Direct,
    count: usize,
    stream: bool,
) -> Result<(Vec<GatewayTiming>, Vec<DirectTiming>)> {
    let mut g = Vec::with_capacity(count);
    let mut d = Vec::with_capacity(count);
    for i in 0..count {
        if i % 2 == 0 {
            g.push(
                gateway
                    .chat(stream)
                    .await
                    .with_context(|| format!("gateway request {i}"))?,
            );
            d.push(
                direct
                    .turn()
                    .await
                    .with_context(|| format!("direct turn {i}"))?,
            );
        } else {
            d.push(
                direct
                    .turn()
                    .await
                    .with_context(|| format!("direct turn {i}"))?,
            );
            g.push(
                gateway
                    .chat(stream)
                    .await
                    .with_context(|| format!("gateway request {i}"))?,
            );
        }
    }
    Ok((g, d))
}

fn summary(values: impl Iterator<Item = Duration>) -> Summary {
    let mut v: Vec<Duration> = values.collect();
    Summary::of(&mut v)
}

fn memory(pid: Option<u32>) -> Option<u64> {
    pid.and_then(|p| procfs::rss_kb(p).ok())
}

async fn run(args: RunArgs) -> Result<Results> {
    let http = client()?;
    let account = AccountFile::load(&args.account)?;
    let direct = Arc::new(Direct::new(
        http.clone(),
        &args.sim,
        account,
        &args.prompt,
        &args.model,
    )?);
    let gateway = Arc::new(Gateway::new(
        http,
        &args.gateway,
        &args.key,
        &args.prompt,
        &args.model,
    )?);
    direct.warm().await.context("minting the direct JWT")?;

    progress(&format!("warm-up: {} sequential pairs", args.warmup));
    pairs(&gateway, &direct, args.warmup, false).await?;
    pairs(&gateway, &direct, args.warmup.div_ceil(4), true).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let gateway_idle = memory(args.gateway_pid);
    let sim_idle = memory(args.sim_pid);

    progress(&format!(
        "latency: {} sequential pairs (gateway non-stream, direct U2+U4)",
        args.latency_requests
    ));
    let pids = Pids {
        gateway: args.gateway_pid,
        sim: args.sim_pid,
    };
    let cpu_before = pids.cpu();
    let phase_started = Instant::now();
    let (g, d) = pairs(&gateway, &direct, args.latency_requests, false).await?;
    let phase_secs = phase_started.elapsed().as_secs_f64();
    let latency_cpu = cpu_before.until(&pids.cpu());
    let mut paired: Vec<f64> = g
        .iter()
        .zip(&d)
        .map(|(g, d)| (g.total.as_secs_f64() - d.total.as_secs_f64()) * 1e6)
        .collect();
    let gateway_summary = summary(g.iter().map(|t| t.total));
    let direct_summary = summary(d.iter().map(|t| t.total));
    let round = |x: f64| (x * 10.0).round() / 10.0;
    let latency = Latency {
        added_p50_us: round(gateway_summary.p50_us - direct_summary.p50_us),
        added_p90_us: round(gateway_summary.p90_us - direct_summary.p90_us),
        added_p99_us: round(gateway_summary.p99_us - direct_summary.p99_us),
        added_mean_us: round(gateway_summary.mean_us - direct_summary.mean_us),
        paired_median_added_us: median_us(&mut paired),
        other_cores_busy: latency_cpu.other_cores(phase_secs),
        gateway_cpu_us_per_request: latency_cpu
            .gateway_ms
            .filter(|_| args.latency_requests > 0)
            .map(|ms| round(ms * 1000.0 / args.latency_requests as f64)),
        gateway: gateway_summary,
        direct: direct_summary,
    };

    progress(&format!(
        "streaming: {} sequential pairs (gateway stream, direct U2+U4)",
        args.stream_requests
    ));
    let (g, d) = pairs(&gateway, &direct, args.stream_requests, true).await?;
    let streaming = Streaming {
        gateway_first_byte: summary(g.iter().map(|t| t.first_byte)),
        gateway_first_content: summary(g.iter().filter_map(|t| t.first_content)),
        gateway_total: summary(g.iter().map(|t| t.total)),
        direct_first_chunk: summary(d.iter().map(|t| t.first_chunk)),
        direct_total: summary(d.iter().map(|t| t.total)),
    };

    let watched: Vec<u32> = [args.gateway_pid, args.sim_pid]
        .into_iter()
        .flatten()
        .collect();
    let sampler = procfs::PeakSampler::start(watched, Duration::from_millis(50));
    let mut throughput = Vec::new();
    let duration = Duration::from_secs(args.duration_secs);
    let warmup = Duration::from_secs(args.load_warmup_secs);
    for &c in &args.concurrency {
        if c == 0 {
            bail!("a concurrency of 0 makes no requests");
        }
        let mut row = ThroughputRow {
            concurrency: c,
            direct: Load::default(),
            gateway: Load::default(),
        };
        for (name, target) in [
            ("direct", Target::Direct(Arc::clone(&direct))),
            ("gateway", Target::Gateway(Arc::clone(&gateway))),
        ] {
            progress(&format!(
                "throughput: {name}, concurrency {c}, {}+{} s",
                args.load_warmup_secs, args.duration_secs
            ));
            load(&target, c, warmup, pids).await?;
            let result = load(&target, c, duration, pids).await?;
            let attempted = result.requests + result.errors;
            if result.errors * 100 > attempted {
                bail!(
                    "{name} at concurrency {c}: {} of {attempted} requests failed (first: {}); \
                     a benchmark of errors measures nothing",
                    result.errors,
                    result.first_error.as_deref().unwrap_or("?")
                );
            }
            if let Some(e) = &result.first_error {
                progress(&format!(
                    "{name} at concurrency {c}: {} errors, first: {e}",
                    result.errors
                ));
            }
            if name == "direct" {
                row.direct = result;
            } else {
                row.gateway = result;
            }
        }
        throughput.push(row);
    }
    let peaks = sampler.finish();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut peak = peaks.into_iter();
    let gateway_memory = args.gateway_pid.map(|_| ProcMemory {
        idle_after_warmup_kb: gateway_idle,
        peak_during_load_kb: peak.next(),
        after_load_kb: memory(args.gateway_pid),
    });
    let sim_memory = args.sim_pid.map(|_| ProcMemory {
        idle_after_warmup_kb: sim_idle,
        peak_during_load_kb: peak.next(),
        after_load_kb: memory(args.sim_pid),
    });

    Ok(Results {
        config: RunConfig {
            model: args.model,
            prompt: args.prompt,
            warmup_pairs: args.warmup,
            latency_pairs: args.latency_requests,
            stream_pairs: args.stream_requests,
            concurrency: args.concurrency,
            duration_secs: args.duration_secs,
            load_warmup_secs: args.load_warmup_secs,
        },
        latency,
        streaming,
        throughput,
        gateway_memory,
        sim_memory,
    })
}
