//! How a worker connects: [`WorkerConfig`], and the reconnection [`Backoff`].

use std::time::Duration;

use business2api_shared::Secret;
use business2api_shared::protocol::{MAX_CAPACITY, WorkerId};
use rand::Rng as _;

/// Everything the worker needs to dial its server.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The server's base URL (`http`/`https`); the worker dials `<base>/ws` over `ws`/`wss`.
    pub server_addr: url::Url,
    /// `pool_server.secret`, sent as `Authorization: Bearer` on the upgrade request only.
    pub secret: Secret,
    /// This worker's id, the same across reconnections of one process.
    pub worker_id: WorkerId,
    /// Tasks run at once (`pool_server.client_threads`, 1 to [`MAX_CAPACITY`]).
    pub capacity: u16,
    /// The first reconnection delay (doubled after every failed attempt, up to `backoff_max`).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// The delay after the server refused this worker as incompatible (another protocol major
    /// version, no task kind in common): retrying sooner cannot help until someone upgrades.
    pub incompatible_retry: Duration,
    /// How long a drain waits for running tasks before it cancels them.
    pub drain_timeout: Duration,
    /// How long the upgrade and the `welcome` may take.
    pub connect_timeout: Duration,
}

/// The default first reconnection delay.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The default longest reconnection delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The default delay after an incompatible-version refusal.
pub const INCOMPATIBLE_RETRY: Duration = Duration::from_secs(600);
/// The default drain bound (below Docker's and systemd's stop timeouts).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);
/// The default bound on the upgrade plus the `welcome`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

impl WorkerConfig {
    /// A configuration with the default timings, a fresh random worker id and `threads` clamped
    /// to 1..=[`MAX_CAPACITY`] (see [`capacity_of`]). Fails when `server_addr` cannot become a
    /// WebSocket URL.
    pub fn new(
        server_addr: url::Url,
        secret: Secret,
        threads: u32,
    ) -> Result<WorkerConfig, String> {
        ws_url(&server_addr)?;
        Ok(WorkerConfig {
            server_addr,
            secret,
            worker_id: random_worker_id()?,
            capacity: capacity_of(threads),
            backoff_min: BACKOFF_MIN,
            backoff_max: BACKOFF_MAX,
            incompatible_retry: INCOMPATIBLE_RETRY,
            drain_timeout: DRAIN_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
        })
    }

    /// Local mode's in-process worker ([`crate::in_process`]): no server address or secret are
    /// used (the placeholder address is never dialled), default timings, a fresh worker id.
    pub fn in_process(threads: u32) -> Result<WorkerConfig, String> {
        let placeholder =
            url::Url::parse("http://in-process.invalid/").map_err(|e| e.to_string())?;
        let mut config = WorkerConfig::new(placeholder, Secret::from(String::new()), threads)?;
        config.worker_id = WorkerId::parse(&format!("local-{}", config.worker_id.as_str()))
            .map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// Where the worker connects: the base URL with `http`→`ws`, `https`→`wss`, `ws` appended to
    /// its path, and no user info, query or fragment (the secret never travels in the URL).
    pub fn ws_url(&self) -> Result<url::Url, String> {
        ws_url(&self.server_addr)
    }
}

/// `pool_server.client_threads` as a capacity the protocol accepts (1 to [`MAX_CAPACITY`]).
pub fn capacity_of(threads: u32) -> u16 {
    u16::try_from(threads.clamp(1, u32::from(MAX_CAPACITY))).unwrap_or(MAX_CAPACITY)
}

/// `w-` and 16 random hex digits.
fn random_worker_id() -> Result<WorkerId, String> {
    let n: u64 = rand::rng().random();
    WorkerId::parse(&format!("w-{n:016x}")).map_err(|e| e.to_string())
}

/// The WebSocket URL for a server base URL.
pub fn ws_url(base: &url::Url) -> Result<url::Url, String> {
    let scheme = match base.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => return Err(format!("unsupported scheme {other:?} (use http or https)")),
    };
    let mut url = base.clone();
    url.set_scheme(scheme)
        .map_err(|()| "cannot change the URL's scheme".to_owned())?;
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.join("ws").map_err(|e| e.to_string())
}

/// Jittered exponential backoff: the n-th delay is drawn from `[d/2, d]` where
/// `d = min(max, min · 2ⁿ)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        let low = ceiling_ms / 2;
        Duration::from_millis(rand::rng().random_range(low..=ceiling_ms))
    }

    /// Back to the first delay (after a session that was welcomed).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn the_ws_url_swaps_the_scheme_and_appends_ws() {
        let u = |s: &str| ws_url(&url::Url::parse(s).unwrap()).unwrap().to_string();
        assert_eq!(u("http://10.0.0.1:8000/"), "ws://10.0.0.1:8000/ws");
        assert_eq!(
            u("https://gw.example.com/base/"),
            "wss://gw.example.com/base/ws"
        );
        assert_eq!(
            u("https://gw.example.com/base"),
            "wss://gw.example.com/base/ws"
        );
        assert_eq!(
            u("https://user:pw@gw.example.com/?secret=x#f"),
            "wss://gw.example.com/ws"
        );
        assert!(ws_url(&url::Url::parse("ftp://x/").unwrap()).is_err());
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_bounded() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= Duration::from_secs(1));
        assert!(delays[3] >= Duration::from_secs(4) && delays[3] <= Duration::from_secs(8));
        for d in &delays[6..] {
            assert!(*d >= Duration::from_secs(30) && *d <= Duration::from_secs(60));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn capacity_is_clamped_to_the_protocol_range() {
        assert_eq!(capacity_of(0), 1);
        assert_eq!(capacity_of(3), 3);
        assert_eq!(capacity_of(1000), MAX_CAPACITY);
    }
}
