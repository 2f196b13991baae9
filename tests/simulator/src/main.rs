//! `upstream-sim`: runs the Gemini Business upstream simulator as a standalone server.
//!
//! Prints one line, `upstream-sim listening on http://127.0.0.1:PORT`, once bound, then serves
//! until SIGINT/SIGTERM. With `--flow-token` it also runs the Google Labs Flow simulator on
//! `127.0.0.1:0` and prints a second line, `upstream-sim flow listening on
//! http://127.0.0.1:PORT`, after the first.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use upstream_sim::flow::FlowSimulator;
use upstream_sim::{SimAccount, SimOptions, Simulator};

/// Credits of each `--flow-token` (enough for many videos).
const FLOW_CREDITS: i64 = 100_000;
/// Tier of each `--flow-token`.
const FLOW_TIER: &str = "PAYGATE_TIER_TWO";

/// A strict simulator of the Gemini Business upstream (U1–U6).
#[derive(Parser, Debug)]
#[command(name = "upstream-sim", version)]
struct Cli {
    /// Address to listen on (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Delay between streamed answer elements, milliseconds.
    #[arg(long, default_value_t = 0)]
    pace_ms: u64,
    /// Time each U2–U5 call waits before it is answered (U4: before its first byte),
    /// milliseconds: the round trip to Google.
    #[arg(long, default_value_t = 0)]
    call_latency_ms: u64,
    /// Number of demo accounts to register (`SimAccount::demo(0..N)`).
    #[arg(long, default_value_t = 1)]
    accounts: u32,
    /// Write each account as `<DIR>/<email>.json` in the reference on-disk format.
    #[arg(long, value_name = "DIR")]
    write_accounts: Option<PathBuf>,
    /// actix worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// A Flow session token to register with a Flow simulator (repeatable). When given, the
    /// Flow simulator is started on 127.0.0.1:0 as well; each token gets its own e-mail
    /// (`flow<N>@example.com`), 100000 credits and tier PAYGATE_TIER_TWO.
    #[arg(long = "flow-token", value_name = "SESSION_TOKEN")]
    flow_tokens: Vec<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upstream-sim: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::io::Result<()> {
    let accounts: Vec<SimAccount> = (0..cli.accounts).map(SimAccount::demo).collect();
    if let Some(dir) = &cli.write_accounts {
        std::fs::create_dir_all(dir)?;
        for account in &accounts {
            let text = serde_json::to_string_pretty(&account.account_file_json())
                .map_err(std::io::Error::other)?;
            std::fs::write(dir.join(format!("{}.json", account.email)), text + "\n")?;
        }
    }
    let options = SimOptions {
        pacing: Duration::from_millis(cli.pace_ms),
        workers: cli.workers,
    };
    let sim = Simulator::start_with(cli.listen, options).await?;
    sim.set_call_latency(Duration::from_millis(cli.call_latency_ms));
    for account in accounts {
        sim.add_account(account);
    }
    let flow = if cli.flow_tokens.is_empty() {
        None
    } else {
        let flow = FlowSimulator::start().await?;
        for (i, token) in cli.flow_tokens.iter().enumerate() {
            flow.add_token(
                token,
                &format!("flow{i}@example.com"),
                FLOW_CREDITS,
                FLOW_TIER,
            );
        }
        Some(flow)
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "upstream-sim listening on {}", sim.base_url())?;
        if let Some(flow) = &flow {
            writeln!(out, "upstream-sim flow listening on {}", flow.base_url())?;
        }
        out.flush()?;
    }
    wait_for_signal().await?;
    if let Some(flow) = &flow {
        flow.shutdown().await;
    }
    sim.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
