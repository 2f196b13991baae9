//! What the tests that run the real binary share: the command with the gateway's environment
//! cleared, a free port, and demo accounts registered with a simulator and written as files.
#![allow(dead_code, reason = "each test binary uses a part of this module")]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::Path;
use std::process::Command;

use upstream_sim::{SimAccount, Simulator};

/// Every environment variable the gateway reads; the tests decide each one themselves.
pub const GATEWAY_ENV: [&str; 9] = [
    "LISTEN_ADDR",
    "DATA_DIR",
    "PROXY",
    "CONFIG_ID",
    "API_KEYS",
    "API_KEY",
    "ADMIN_KEY",
    "ADMIN_KEYS",
    "BUSINESS2API_CONFIG",
];

/// The `business2api` binary, with none of the gateway's environment variables inherited.
pub fn gateway_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_business2api"));
    for var in GATEWAY_ENV {
        c.env_remove(var);
    }
    c
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` demo accounts, registered with `sim` and written to `data` as reference account files.
pub fn write_demo_accounts(sim: &Simulator, data: &Path, n: u32) -> Vec<SimAccount> {
    let accounts: Vec<SimAccount> = (0..n).map(SimAccount::demo).collect();
    for a in &accounts {
        sim.add_account(a.clone());
        std::fs::write(
            data.join(format!("{}.json", a.email)),
            serde_json::to_vec_pretty(&a.account_file_json()).unwrap(),
        )
        .unwrap();
    }
    accounts
}

/// Kills the gateway when the test ends, also on a failed assertion.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Kill {
    /// Stops the process and returns all it wrote to its (piped) stderr.
    pub fn stop_and_read_stderr(&mut self) -> Vec<u8> {
        use std::io::Read as _;
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut raw = Vec::new();
        if let Some(mut stderr) = self.0.stderr.take() {
            stderr.read_to_end(&mut raw).unwrap();
        }
        raw
    }
}

/// Waits (20 s at most) until `GET {base}/health` answers 200.
pub async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{base}/health")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not come up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
