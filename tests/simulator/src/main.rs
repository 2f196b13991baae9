//! `upstream-sim`: runs the Gemini Business upstream simulator as a standalone server.
//!
//! Prints exactly one line, `upstream-sim listening on http://127.0.0.1:PORT`, once bound, then
//! serves until SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use upstream_sim::{SimAccount, SimOptions, Simulator};

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
    /// Number of demo accounts to register (`SimAccount::demo(0..N)`).
    #[arg(long, default_value_t = 1)]
    accounts: u32,
    /// Write each account as `<DIR>/<email>.json` in the reference on-disk format.
    #[arg(long, value_name = "DIR")]
    write_accounts: Option<PathBuf>,
    /// actix worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
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
    for account in accounts {
        sim.add_account(account);
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "upstream-sim listening on {}", sim.base_url())?;
        out.flush()?;
    }
    wait_for_signal().await?;
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
