//! One egress proxy: its URL (a secret), its HTTP client (one per proxy, reused, with a bounded
//! connection pool) and its health.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::ProxyUrl;

/// Idle connections kept per upstream host by one proxy's client.
const MAX_IDLE_PER_HOST: usize = 32;
/// The longest quarantine, however many in a row.
pub const MAX_QUARANTINE: Duration = Duration::from_secs(600);

/// How the gateway's upstream HTTP clients are built (the same for the direct client and every
/// proxy's client).
#[derive(Debug, Clone, Copy)]
pub struct ClientRecipe {
    pub connect_timeout: Duration,
    /// Whether the upstream is plain HTTP (a local simulator, tests). Requests to it through an
    /// HTTP proxy are forwarded, not tunnelled, and forwarding proxies (tinyproxy) close the
    /// connection after each request without saying so: such connections are not kept for
    /// reuse. HTTPS upstreams go through CONNECT tunnels, which are kept.
    pub plain_http_upstream: bool,
}

impl ClientRecipe {
    /// A client through `proxy` (direct when `None`; never through a proxy from the
    /// environment). TLS is verified; redirects are not followed (a redirect from Google means
    /// "sign in again", which the adapter classifies).
    pub fn build(&self, proxy: Option<&ProxyUrl>) -> Result<reqwest::Client, reqwest::Error> {
        let forwarded =
            self.plain_http_upstream && proxy.is_some_and(|p| p.expose().starts_with("http"));
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(if forwarded { 0 } else { MAX_IDLE_PER_HOST })
            .tcp_nodelay(true);
        if let Some(proxy) = proxy {
            builder = builder.proxy(reqwest::Proxy::all(proxy.expose())?);
        }
        builder.build()
    }
}

/// Where a proxy came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// A configuration key (`proxy_pool.proxy` or `proxy`).
    Config { key: &'static str },
    /// A line of a `proxy_pool.files` file.
    File { path: String },
    /// A `proxy_pool.subscribes` entry (by position; the URL may hold a token).
    Subscription { index: usize },
    /// An account's own proxy (its record's `proxy`).
    Account { email: String },
    /// A sing-box local inbound for a tunnelled node of a file or subscription.
    SingBox { protocol: String, name: String },
}

/// Whether a proxy takes traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Healthy,
    Quarantined,
}

#[derive(Debug, Default)]
struct Health {
    quarantined_until: Option<Instant>,
    /// Quarantines in a row (the next one lasts `base · 2^streak`).
    streak: u32,
    failures: u64,
    last_error: Option<String>,
    latency: Option<Duration>,
    last_check_unix: Option<u64>,
}

/// One proxy.
pub struct Node {
    id: String,
    url: ProxyUrl,
    label: String,
    origin: Origin,
    http: reqwest::Client,
    /// Proxy faults on real traffic since the last success.
    consecutive: AtomicU32,
    health: Mutex<Health>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("url", &self.label)
            .finish_non_exhaustive()
    }
}

/// A proxy's stable id: the first 12 hex digits of the SHA-256 of its URL (a restart with the
/// same list gives the same ids, so pins survive).
pub fn node_id(url: &ProxyUrl) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(url.expose().as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Node {
    pub fn new(url: ProxyUrl, origin: Origin, recipe: &ClientRecipe) -> Result<Node, String> {
        let label = url.redacted();
        let http = recipe
            .build(Some(&url))
            .map_err(|_| format!("no HTTP client can be built for the proxy {label}"))?;
        Ok(Node {
            id: node_id(&url),
            url,
            label,
            origin,
            http,
            consecutive: AtomicU32::new(0),
            health: Mutex::new(Health::default()),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The URL with its password redacted.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn url(&self) -> &ProxyUrl {
        &self.url
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Whether it speaks HTTP to the proxy (a 407 is then the proxy's answer).
    pub fn is_http(&self) -> bool {
        matches!(
            self.url.expose().split("://").next(),
            Some("http" | "https")
        )
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state_at(&self, now: Instant) -> NodeState {
        match self.health().quarantined_until {
            Some(until) if until > now => NodeState::Quarantined,
            _ => NodeState::Healthy,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.state_at(Instant::now()) == NodeState::Healthy
    }

    /// A request through it got an answer: the streak of faults ends.
    pub fn succeeded(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
    }

    /// A fault on real traffic; returns the faults in a row.
    pub fn fault(&self, reason: &str) -> u32 {
        let mut h = self.health();
        h.failures += 1;
        h.last_error = Some(reason.to_owned());
        drop(h);
        self.consecutive.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Quarantines it for `base · 2^streak` (at most [`MAX_QUARANTINE`]); returns how long,
    /// or `None` if it already was.
    pub fn quarantine(&self, base: Duration, reason: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut h = self.health();
        h.last_error = Some(reason.to_owned());
        if h.quarantined_until.is_some_and(|u| u > now) {
            return None;
        }
        let factor = 1u32.checked_shl(h.streak.min(16)).unwrap_or(u32::MAX);
        let wait = base.saturating_mul(factor).min(MAX_QUARANTINE);
        h.streak = h.streak.saturating_add(1);
        h.quarantined_until = Some(now + wait);
        self.consecutive.store(0, Ordering::Relaxed);
        Some(wait)
    }

    /// An active check succeeded: healthy again, with the latency measured.
    pub fn checked_ok(&self, latency: Duration) -> bool {
        let mut h = self.health();
        let was_quarantined = h
            .quarantined_until
            .take()
            .is_some_and(|u| u > Instant::now());
        h.streak = 0;
        h.latency = Some(latency);
        h.last_check_unix = Some(now_unix());
        self.consecutive.store(0, Ordering::Relaxed);
        was_quarantined
    }

    /// An active check failed (the caller quarantines it).
    pub fn checked_failed(&self, reason: &str) {
        let mut h = self.health();
        h.failures += 1;
        h.last_error = Some(reason.to_owned());
        h.last_check_unix = Some(now_unix());
    }

    /// What the admin API shows (no secret).
    pub fn view(&self, accounts: Vec<String>) -> NodeView {
        let now = Instant::now();
        let h = self.health();
        let quarantined_for = h
            .quarantined_until
            .filter(|u| *u > now)
            .map(|u| u.duration_since(now).as_secs().max(1));
        NodeView {
            id: self.id.clone(),
            url: self.label.clone(),
            origin: self.origin.clone(),
            state: if quarantined_for.is_some() {
                NodeState::Quarantined
            } else {
                NodeState::Healthy
            },
            quarantined_for_sec: quarantined_for,
            latency_ms: h
                .latency
                .map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX)),
            failures: h.failures,
            consecutive_failures: self.consecutive.load(Ordering::Relaxed),
            last_error: h.last_error.clone(),
            last_check: h.last_check_unix,
            accounts,
        }
    }
}

/// One proxy as `GET /admin/proxies` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub id: String,
    /// The URL, its password redacted.
    pub url: String,
    pub origin: Origin,
    pub state: NodeState,
    pub quarantined_for_sec: Option<u64>,
    pub latency_ms: Option<u64>,
    pub failures: u64,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// Unix seconds of the last active check.
    pub last_check: Option<u64>,
    /// The accounts pinned to it (e-mail keys).
    pub accounts: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(url: &str) -> Node {
        crate::startup::install_crypto_provider();
        Node::new(
            ProxyUrl::parse(url).unwrap(),
            Origin::Config { key: "proxy" },
            &ClientRecipe {
                connect_timeout: Duration::from_secs(1),
                plain_http_upstream: false,
            },
        )
        .unwrap()
    }

    #[test]
    fn ids_are_stable_and_views_redacted() {
        let a = node("socks5://u:hunter2@127.0.0.1:1080");
        let b = node("socks5://u:hunter2@127.0.0.1:1080");
        assert_eq!(a.id(), b.id());
        assert_eq!(a.id().len(), 12);
        assert_ne!(a.id(), node("socks5://u:other@127.0.0.1:1080").id());
        let view = serde_json::to_string(&a.view(vec!["x@y".into()])).unwrap();
        assert!(!view.contains("hunter2"), "{view}");
        assert!(view.contains("[redacted]"), "{view}");
        assert!(!format!("{a:?}").contains("hunter2"));
        assert!(!a.is_http());
        assert!(node("http://127.0.0.1:3128").is_http());
    }

    #[test]
    fn quarantine_backs_off_and_a_good_check_ends_it() {
        let n = node("http://127.0.0.1:3128");
        let base = Duration::from_secs(10);
        assert_eq!(n.fault("refused"), 1);
        assert_eq!(n.fault("refused"), 2);
        assert_eq!(n.quarantine(base, "refused"), Some(base));
        assert_eq!(n.quarantine(base, "again"), None, "already quarantined");
        assert!(!n.is_healthy());
        assert!(n.checked_ok(Duration::from_millis(5)));
        assert!(n.is_healthy());
        // The streak restarts after a good check; without one it doubles up to the cap.
        assert_eq!(n.quarantine(base, "x"), Some(base));
        assert!(n.checked_ok(Duration::from_millis(5)));
        let mut last = Duration::ZERO;
        for _ in 0..12 {
            n.health().quarantined_until = None;
            last = n.quarantine(base, "x").unwrap();
        }
        assert_eq!(last, MAX_QUARANTINE);
        let v = n.view(vec![]);
        assert_eq!(v.state, NodeState::Quarantined);
        assert_eq!(v.failures, 2);
    }
}
