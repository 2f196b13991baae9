//! The results of a run (JSON) and their rendering as BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// The aims of this first cut.
const AIM_ADDED_P50_US: f64 = 1000.0;
const AIM_IDLE_RSS_KB: u64 = 30 * 1024;
/// A gap this long between the first streamed content and the end of a stream is reported.
const STALL_US: f64 = 20_000.0;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    pub model: String,
    pub prompt: String,
    pub warmup_pairs: usize,
    pub latency_pairs: usize,
    pub stream_pairs: usize,
    pub concurrency: Vec<usize>,
    pub duration_secs: u64,
    pub load_warmup_secs: u64,
}

/// Concurrency-1 latency of the non-streaming gateway call against the direct U2+U4 turn.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub direct: Summary,
    pub gateway: Summary,
    pub added_p50_us: f64,
    pub added_p90_us: f64,
    pub added_p99_us: f64,
    pub added_mean_us: f64,
    /// Median of (gateway − direct) over the interleaved pairs.
    pub paired_median_added_us: f64,
    /// CPU use of everything but the gateway, the simulator and the load generator during the
    /// measured pairs, in cores (other people's work on a shared machine).
    pub other_cores_busy: Option<f64>,
    /// Gateway CPU time (user + system) during the measured pairs ÷ gateway requests.
    pub gateway_cpu_us_per_request: Option<f64>,
}

impl CpuUse {
    /// Average cores kept busy by other processes over `seconds`.
    pub fn other_cores(&self, seconds: f64) -> Option<f64> {
        let ours = self.gateway_ms? + self.sim_ms? + self.loadgen_ms?;
        let machine = self.machine_ms?;
        (seconds > 0.0)
            .then(|| (((machine - ours) / (seconds * 1000.0)).max(0.0) * 100.0).round() / 100.0)
    }
}

/// CPU time (user + system, ms) each process used during a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuUse {
    pub gateway_ms: Option<f64>,
    pub sim_ms: Option<f64>,
    pub loadgen_ms: Option<f64>,
    /// The whole machine's busy CPU time (all processes, including other people's).
    pub machine_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Streaming {
    pub gateway_first_byte: Summary,
    pub gateway_first_content: Summary,
    pub gateway_total: Summary,
    pub direct_first_chunk: Summary,
    pub direct_total: Summary,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Load {
    /// Successful requests completed in the run.
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rps: f64,
    pub latency: Summary,
    pub first_error: Option<String>,
    pub cpu: CpuUse,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputRow {
    pub concurrency: usize,
    pub direct: Load,
    pub gateway: Load,
}

/// RSS in KiB at the points the load generator sees.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcMemory {
    pub idle_after_warmup_kb: Option<u64>,
    pub peak_during_load_kb: Option<u64>,
    pub after_load_kb: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub config: RunConfig,
    pub latency: Latency,
    pub streaming: Streaming,
    pub throughput: Vec<ThroughputRow>,
    pub gateway_memory: Option<ProcMemory>,
    pub sim_memory: Option<ProcMemory>,
}

/// What `render` needs besides the results: what the script measured and the machine.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The JSON `loadgen run` printed.
    #[arg(long)]
    results: PathBuf,
    /// Gateway VmRSS right after start-up (before any request), KiB.
    #[arg(long)]
    gateway_rss_start_kb: Option<u64>,
    /// Gateway VmHWM at the end of the run, KiB.
    #[arg(long)]
    gateway_hwm_kb: Option<u64>,
    /// Simulator VmRSS right after start-up, KiB.
    #[arg(long)]
    sim_rss_start_kb: Option<u64>,
    /// Simulator VmHWM at the end of the run, KiB.
    #[arg(long)]
    sim_hwm_kb: Option<u64>,
    #[arg(long, default_value = "unknown")]
    cpu: String,
    #[arg(long, default_value = "unknown")]
    cores: String,
    #[arg(long)]
    mem_total_kb: Option<u64>,
    #[arg(long, default_value = "unknown")]
    kernel: String,
    #[arg(long, default_value = "unknown")]
    os: String,
    #[arg(long, default_value = "unknown")]
    virt: String,
    #[arg(long, default_value = "unknown")]
    rustc: String,
    #[arg(long, default_value = "unknown")]
    date: String,
    #[arg(long, default_value = "unknown")]
    loadavg_start: String,
    #[arg(long, default_value = "unknown")]
    loadavg_end: String,
    /// Accounts in the simulator and the gateway's pool.
    #[arg(long, default_value = "unknown")]
    accounts: String,
    /// `http.workers` of the gateway.
    #[arg(long, default_value = "unknown")]
    gateway_workers: String,
    /// `--workers` of the simulator.
    #[arg(long, default_value = "unknown")]
    sim_workers: String,
    /// Size of the release gateway binary, bytes.
    #[arg(long)]
    gateway_binary_bytes: Option<u64>,
    /// A free-form note about the machine or the run (e.g. "shared VM").
    #[arg(long)]
    note: Option<String>,
}

pub fn render_main(args: &RenderArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.results)
        .with_context(|| format!("cannot read {}", args.results.display()))?;
    let results: Results = serde_json::from_str(&text)
        .with_context(|| format!("{} is not loadgen results", args.results.display()))?;
    print!("{}", render(&results, args)?);
    Ok(())
}

fn ms(us: f64) -> String {
    format!("{:.3} ms", us / 1000.0)
}

fn signed_ms(us: f64) -> String {
    format!("{:+.3} ms", us / 1000.0)
}

fn mib(kb: Option<u64>) -> String {
    kb.map_or_else(
        || "–".to_owned(),
        |kb| format!("{:.1} MiB", kb as f64 / 1024.0),
    )
}

fn yes_no(ok: bool) -> &'static str {
    if ok { "**yes**" } else { "**no**" }
}

fn latency_row(out: &mut String, name: &str, s: &Summary) -> std::fmt::Result {
    writeln!(
        out,
        "| {name} | {} | {} | {} | {} | {} | {} | {} |",
        s.samples,
        ms(s.p50_us),
        ms(s.p90_us),
        ms(s.p99_us),
        ms(s.p999_us),
        ms(s.mean_us),
        ms(s.max_us)
    )
}

fn render(r: &Results, a: &RenderArgs) -> Result<String> {
    let mut o = String::new();
    write_all(&mut o, r, a).context("formatting failed")?;
    Ok(o)
}

fn write_all(o: &mut String, r: &Results, a: &RenderArgs) -> std::fmt::Result {
    let c = &r.config;
    let lat = &r.latency;
    let idle_kb = r
        .gateway_memory
        .as_ref()
        .and_then(|m| m.idle_after_warmup_kb);

    writeln!(o, "# Benchmarks")?;
    writeln!(o)?;
    writeln!(
        o,
        "<!-- Generated by bench/run.sh; every run rewrites this file. Do not edit by hand. -->"
    )?;
    writeln!(o)?;
    writeln!(
        o,
        "The gateway's own cost: the same chat turn made through `business2api` and made \
         directly against the upstream simulator (`upstream-sim`, zero pacing), on one machine, \
         over 127.0.0.1 only. Run on {}.",
        a.date
    )?;
    writeln!(o)?;
    if let Some(note) = &a.note {
        writeln!(o, "> **Note:** {note}")?;
        writeln!(o)?;
    }

    writeln!(o, "## Aims of this first cut")?;
    writeln!(o)?;
    writeln!(o, "| aim | target | measured | met |")?;
    writeln!(o, "|---|---|---|---|")?;
    writeln!(
        o,
        "| added latency, p50, concurrency 1 (non-streaming) | ≤ 1 ms | {} | {} |",
        signed_ms(lat.added_p50_us),
        yes_no(lat.added_p50_us <= AIM_ADDED_P50_US)
    )?;
    writeln!(
        o,
        "| gateway RSS when idle (after start-up and warm-up) | ≤ 30 MiB | {} | {} |",
        mib(idle_kb),
        idle_kb.map_or("–", |kb| yes_no(kb <= AIM_IDLE_RSS_KB))
    )?;
    writeln!(o)?;

    writeln!(o, "## Method")?;
    writeln!(o)?;
    writeln!(
        o,
        "* `bench/run.sh` builds the release binaries, starts `upstream-sim --pace-ms 0 \
         --accounts {} --workers {}` and `business2api serve` (`http.workers` = {}, \
         `pool.daily_limit_text` = 0 so the default 3000-a-day cap does not end the runs, \
         `RUST_LOG=warn`) in a temporary directory, then runs `loadgen` (crate `bench/`).",
        a.accounts, a.sim_workers, a.gateway_workers
    )?;
    writeln!(
        o,
        "* **Gateway path**: `POST /v1/chat/completions` (model `{}`, one user message `{}`), \
         response read to the last byte and checked (HTTP 200, non-empty answer). On a warm \
         account the gateway makes U2 `widgetCreateSession` + U4 `widgetStreamAssist` (the U1 \
         JWT is cached).",
        c.model, c.prompt
    )?;
    writeln!(
        o,
        "* **Direct path** (baseline): the load generator makes the same U2 + U4 itself with \
         the same bodies and headers, using a JWT it mints from U1 and self-signs as the \
         gateway does, and reads the whole U4 JSON array (checked: HTTP 200, answer text). \
         Both paths use one keep-alive HTTP/1.1 client (reqwest, `TCP_NODELAY`)."
    )?;
    writeln!(
        o,
        "* **Added latency** = gateway distribution − direct distribution at concurrency 1: \
         {} warm-up pairs, then {} measured pairs, gateway and direct calls interleaved \
         (alternating which goes first) so that background noise hits both alike. Percentiles \
         are nearest-rank over all samples.",
        c.warmup_pairs, c.latency_pairs
    )?;
    writeln!(
        o,
        "* **Streaming**: {} more interleaved pairs with `stream: true`; time to the first SSE \
         chunk that carries text (the role chunk does not count).",
        c.stream_pairs
    )?;
    writeln!(
        o,
        "* **Throughput**: for each concurrency, N tasks loop back-to-back requests for {} s \
         (after {} s unmeasured), direct first, then gateway. Requests/second = successful \
         requests ÷ wall time. The load generator, the gateway and the simulator share the \
         machine's cores, so the gateway path also pays for the gateway's CPU: this is the \
         throughput of the whole box, not of the gateway alone. On the direct path the load \
         generator itself does the U2 + U4 work the gateway otherwise does. The CPU time each \
         process used during a run (`/proc/<pid>/stat`), divided by the requests completed, \
         is the less noisy measure of the gateway's cost.",
        c.duration_secs, c.load_warmup_secs
    )?;
    writeln!(
        o,
        "* **Memory**: `VmRSS` from `/proc/<pid>/status` right after start-up, when idle after \
         the warm-up, sampled every 50 ms during the throughput runs (peak), 2 s after the \
         load; `VmHWM` (kernel-recorded peak) at the end. MiB = 1024² bytes."
    )?;
    writeln!(o)?;

    writeln!(o, "## Results")?;
    writeln!(o)?;
    writeln!(o, "### Latency at concurrency 1")?;
    writeln!(o)?;
    writeln!(o, "| path | n | p50 | p90 | p99 | p99.9 | mean | max |")?;
    writeln!(o, "|---|---|---|---|---|---|---|---|")?;
    latency_row(o, "direct U2 + U4 (simulator)", &lat.direct)?;
    latency_row(o, "gateway, non-streaming", &lat.gateway)?;
    writeln!(
        o,
        "| **added by the gateway** | | **{}** | {} | **{}** | | {} | |",
        signed_ms(lat.added_p50_us),
        signed_ms(lat.added_p90_us),
        signed_ms(lat.added_p99_us),
        signed_ms(lat.added_mean_us)
    )?;
    writeln!(o)?;
    writeln!(
        o,
        "Median of the per-pair differences (gateway − direct, same iteration): {}.",
        signed_ms(lat.paired_median_added_us)
    )?;
    if let Some(us) = lat.gateway_cpu_us_per_request {
        writeln!(
            o,
            "Gateway CPU time (user + system, all threads) per request in this phase: {us:.0} µs."
        )?;
    }
    if let Some(cores) = lat.other_cores_busy {
        writeln!(
            o,
            "Other processes on the machine kept {cores:.2} cores busy on average meanwhile."
        )?;
    }
    writeln!(o)?;

    let s = &r.streaming;
    writeln!(o, "### Streaming at concurrency 1")?;
    writeln!(o)?;
    writeln!(o, "| measure | n | p50 | p90 | p99 | p99.9 | mean | max |")?;
    writeln!(o, "|---|---|---|---|---|---|---|---|")?;
    latency_row(o, "gateway: first body byte", &s.gateway_first_byte)?;
    latency_row(o, "gateway: first content chunk", &s.gateway_first_content)?;
    latency_row(o, "gateway: whole stream", &s.gateway_total)?;
    latency_row(
        o,
        "direct: first U4 body byte (U2 included)",
        &s.direct_first_chunk,
    )?;
    latency_row(o, "direct: whole U2 + U4", &s.direct_total)?;
    writeln!(o)?;
    writeln!(
        o,
        "Added time to first content, p50: {}.",
        signed_ms(s.gateway_first_content.p50_us - s.direct_first_chunk.p50_us)
    )?;
    let tail_us = s.gateway_total.p50_us - s.gateway_first_content.p50_us;
    if tail_us > STALL_US {
        writeln!(
            o,
            "The streamed answer needs {} (p50) after its first content chunk, while the whole \
             upstream answer arrives within {} and the non-streaming call finishes in {}: a \
             stall of about 40 ms, the signature of Nagle's algorithm on the gateway's side of \
             the client connection meeting the client's delayed ACK (accepted sockets without \
             `TCP_NODELAY`).",
            ms(tail_us),
            ms(s.direct_total.p50_us),
            ms(r.latency.gateway.p50_us)
        )?;
    }
    writeln!(o)?;

    writeln!(o, "### Throughput")?;
    writeln!(o)?;
    writeln!(
        o,
        "| concurrency | direct req/s | gateway req/s | gateway ÷ direct | direct p50 / p99 | \
         gateway p50 / p99 | errors direct / gateway |"
    )?;
    writeln!(o, "|---|---|---|---|---|---|---|")?;
    for row in &r.throughput {
        let ratio = if row.direct.rps > 0.0 {
            format!("{:.2}", row.gateway.rps / row.direct.rps)
        } else {
            "–".to_owned()
        };
        writeln!(
            o,
            "| {} | {:.0} | {:.0} | {} | {} / {} | {} / {} | {} / {} |",
            row.concurrency,
            row.direct.rps,
            row.gateway.rps,
            ratio,
            ms(row.direct.latency.p50_us),
            ms(row.direct.latency.p99_us),
            ms(row.gateway.latency.p50_us),
            ms(row.gateway.latency.p99_us),
            row.direct.errors,
            row.gateway.errors
        )?;
    }
    writeln!(o)?;
    let mut listed_errors = false;
    for row in &r.throughput {
        for (name, l) in [("direct", &row.direct), ("gateway", &row.gateway)] {
            if let Some(e) = &l.first_error {
                listed_errors = true;
                writeln!(
                    o,
                    "* {name} at concurrency {}: {} errors; first: `{}`",
                    row.concurrency,
                    l.errors,
                    e.replace('`', "'")
                )?;
            }
        }
    }

    if listed_errors {
        writeln!(o)?;
    }
    writeln!(
        o,
        "CPU time per request (user + system, all threads, from `/proc/<pid>/stat`):"
    )?;
    writeln!(o)?;
    writeln!(
        o,
        "| concurrency | path | gateway | simulator | load generator | total | other \
         processes on the machine (cores busy) |"
    )?;
    writeln!(o, "|---|---|---|---|---|---|---|")?;
    for row in &r.throughput {
        for (name, l) in [("direct", &row.direct), ("gateway", &row.gateway)] {
            let per = |ms: Option<f64>| match ms {
                Some(ms) if l.requests > 0 => format!("{:.0} µs", ms * 1000.0 / l.requests as f64),
                _ => "–".to_owned(),
            };
            let total = match (l.cpu.gateway_ms, l.cpu.sim_ms, l.cpu.loadgen_ms) {
                (Some(g), Some(s), Some(lg)) => Some(g + s + lg),
                _ => None,
            };
            let gateway = if name == "direct" {
                "(idle)".to_owned()
            } else {
                per(l.cpu.gateway_ms)
            };
            let other = l
                .cpu
                .other_cores(l.seconds)
                .map_or_else(|| "–".to_owned(), |c| format!("{c:.2}"));
            writeln!(
                o,
                "| {} | {name} | {gateway} | {} | {} | {} | {other} |",
                row.concurrency,
                per(l.cpu.sim_ms),
                per(l.cpu.loadgen_ms),
                per(total)
            )?;
        }
    }
    writeln!(o)?;

    writeln!(o, "### Memory (RSS)")?;
    writeln!(o)?;
    writeln!(
        o,
        "| process | after start-up | idle after warm-up | peak during load (sampled) | 2 s after \
         load | VmHWM at end |"
    )?;
    writeln!(o, "|---|---|---|---|---|---|")?;
    for (name, m, start, hwm) in [
        (
            "business2api (gateway)",
            &r.gateway_memory,
            a.gateway_rss_start_kb,
            a.gateway_hwm_kb,
        ),
        (
            "upstream-sim (for context)",
            &r.sim_memory,
            a.sim_rss_start_kb,
            a.sim_hwm_kb,
        ),
    ] {
        let m = m.as_ref();
        writeln!(
            o,
            "| {name} | {} | {} | {} | {} | {} |",
            mib(start),
            mib(m.and_then(|m| m.idle_after_warmup_kb)),
            mib(m.and_then(|m| m.peak_during_load_kb)),
            mib(m.and_then(|m| m.after_load_kb)),
            mib(hwm)
        )?;
    }
    writeln!(o)?;
    writeln!(
        o,
        "The simulator keeps bounded records of every request (up to 10 000 per endpoint) and \
         the sessions it created, so its memory grows with the number of requests until those \
         bounds are reached."
    )?;
    writeln!(o)?;

    writeln!(o, "## Machine")?;
    writeln!(o)?;
    writeln!(o, "| | |")?;
    writeln!(o, "|---|---|")?;
    writeln!(o, "| CPU | {} |", a.cpu)?;
    writeln!(o, "| cores (online) | {} |", a.cores)?;
    writeln!(
        o,
        "| RAM | {} |",
        mib(a.mem_total_kb).replace(" MiB", " MiB total")
    )?;
    writeln!(o, "| OS / kernel | {} / {} |", a.os, a.kernel)?;
    writeln!(o, "| virtualisation | {} |", a.virt)?;
    writeln!(o, "| rustc | {} |", a.rustc)?;
    writeln!(
        o,
        "| build | `--release` (workspace profile: thin LTO, codegen-units 4){} |",
        a.gateway_binary_bytes.map_or_else(String::new, |b| format!(
            "; gateway binary {:.1} MiB",
            b as f64 / 1048576.0
        ))
    )?;
    writeln!(
        o,
        "| load average before / after | {} / {} |",
        a.loadavg_start, a.loadavg_end
    )?;
    writeln!(o, "| date (UTC) | {} |", a.date)?;
    writeln!(o)?;

    writeln!(o, "## Rerunning")?;
    writeln!(o)?;
    writeln!(o, "```sh")?;
    writeln!(
        o,
        "bench/run.sh            # builds, measures, rewrites BENCHMARKS.md"
    )?;
    writeln!(
        o,
        "BENCH_LATENCY_REQUESTS=2000 BENCH_DURATION_SECS=5 bench/run.sh   # a quicker run"
    )?;
    writeln!(o, "```")?;
    writeln!(o)?;
    writeln!(
        o,
        "Knobs (environment): `BENCH_LATENCY_REQUESTS`, `BENCH_STREAM_REQUESTS`, `BENCH_WARMUP`, \
         `BENCH_CONCURRENCY` (comma-separated), `BENCH_DURATION_SECS`, `BENCH_ACCOUNTS`, \
         `BENCH_GATEWAY_WORKERS`, `BENCH_SIM_WORKERS`, `BENCH_NOTE` (a sentence about the \
         machine, shown at the top), `BENCH_OUT` (output file). The raw results of the last run \
         are printed by the script as JSON. Numbers from a shared or busy machine are noisy; \
         compare runs made on the same machine."
    )?;
    Ok(())
}
