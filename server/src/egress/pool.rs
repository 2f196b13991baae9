//! [`EgressPool`]: every proxy the operator configured, and which account leaves through which.
//!
//! - **Sources**: `proxy_pool.files` and `proxy_pool.subscribes` (+ the legacy
//!   `proxy_subscribe`); when they yield nothing, `proxy_pool.proxy`, else the top-level
//!   `proxy`, is the one proxy. An account's own `proxy` (its record) overrides the pool for
//!   that account. With no proxy configured at all, every account goes direct.
//! - **Pins**: an account is pinned to one healthy proxy, the one with the fewest accounts,
//!   and stays there (persisted in redb, table `egress_pins`) until that proxy is quarantined.
//! - **Health**: faults on real traffic (connect, TLS, proxy authentication) are counted per
//!   proxy; `proxy_pool.fail_threshold` in a row — or a proxy that no longer accepts
//!   connections — quarantines it for `quarantine_sec`, doubling while it stays bad (at most
//!   10 min). Its accounts are re-pinned at once. When the quarantine ends, an active check
//!   decides whether it comes back. Active checks of every proxy run at start
//!   (`check_on_startup`), every `check_interval_sec` (`health_check`) and on
//!   `POST /admin/proxies/check`.
//! - **No healthy proxy left**: [`EgressPool::route`] fails at once with a 503-class error
//!   naming the cause; the gateway never falls back to going direct.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use business2api_shared::{AccountKey, Secret};
use futures_util::StreamExt as _;
use serde::Serialize;

use super::links::{self, ParsedList, TunnelNode};
use super::node::{ClientRecipe, Node, NodeView, Origin};
use super::singbox::{SingBox, SingBoxConfig};
use super::{Egress, proxy_error};
use crate::config::{ProxyUrl, Settings};
use crate::store::Store;
use crate::upstream::UpstreamError;

/// The endpoint name proxy errors raised by routing carry.
const ROUTE: &str = "egress";
/// A subscription answer larger than this is refused.
const MAX_SUBSCRIPTION_BYTES: usize = 4 * 1024 * 1024;
const SUBSCRIPTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Active checks at once.
const CHECK_CONCURRENCY: usize = 8;

/// The knobs of `proxy_pool` that decide health.
#[derive(Debug, Clone)]
struct Knobs {
    fail_threshold: u32,
    quarantine: Duration,
    check_url: String,
    check_timeout: Duration,
}

#[derive(Default)]
struct State {
    /// Whether the operator configured any proxy source (else: direct).
    configured: bool,
    /// The pool's proxies, in source order.
    nodes: Vec<Arc<Node>>,
    /// Accounts with a proxy of their own.
    overrides: HashMap<String, Arc<Node>>,
    /// Account key → proxy id.
    pins: HashMap<String, String>,
    /// How the last load of each source went.
    sources: Vec<SourceReport>,
    /// The last usable list of each subscription (kept when a later fetch fails).
    last_good: HashMap<usize, ParsedList>,
}

impl State {
    fn node(&self, id: &str) -> Option<&Arc<Node>> {
        self.nodes.iter().find(|n| n.id() == id)
    }

    /// The healthy proxy with the fewest accounts pinned (first in source order on a tie),
    /// other than `except`.
    fn least_loaded(&self, now: Instant, except: Option<&str>) -> Option<Arc<Node>> {
        let mut load: HashMap<&str, usize> = HashMap::new();
        for id in self.pins.values() {
            *load.entry(id.as_str()).or_default() += 1;
        }
        self.nodes
            .iter()
            .filter(|n| Some(n.id()) != except && n.state_at(now) == super::NodeState::Healthy)
            .min_by_key(|n| load.get(n.id()).copied().unwrap_or(0))
            .cloned()
    }

    fn no_healthy_proxy(&self) -> UpstreamError {
        if self.nodes.is_empty() {
            return proxy_error(
                ROUTE,
                "pool",
                "no egress proxy is available: the configured proxy sources yielded none \
                 (see GET /admin/proxies and the log)",
                true,
            );
        }
        let last = self
            .nodes
            .iter()
            .map(|n| n.view(Vec::new()))
            .find_map(|v| {
                v.last_error
                    .map(|e| format!(" (last error: {}: {e})", v.url))
            })
            .unwrap_or_default();
        proxy_error(
            ROUTE,
            "pool",
            &format!(
                "no healthy egress proxy is left: all {} configured proxies are quarantined{last}",
                self.nodes.len()
            ),
            true,
        )
    }
}

/// Pin changes: (account key, proxy id or `None` to forget).
type PinChanges = Vec<(String, Option<String>)>;

pub(super) struct Inner {
    recipe: ClientRecipe,
    knobs: Knobs,
    state: Mutex<State>,
    /// Pin changes, written in order by the persister thread.
    persist: Option<std::sync::mpsc::Sender<PinChanges>>,
    /// Where timers and checks run.
    runtime: Option<tokio::runtime::Handle>,
    /// A client without proxy, for subscriptions.
    direct: reqwest::Client,
    sources: Sources,
    singbox: tokio::sync::Mutex<Option<SingBox>>,
}

/// Where the pool's proxies come from.
#[derive(Debug, Clone, Default)]
struct Sources {
    files: Vec<PathBuf>,
    subscriptions: Vec<Secret>,
    fallback: Option<(&'static str, ProxyUrl)>,
    singbox: Option<PathBuf>,
    data_dir: PathBuf,
    subscribe_interval: Duration,
    check_interval: Option<Duration>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `list` as subscription `index`'s last usable list (`Some`), or returns the one
    /// recorded (`None`).
    fn last_good(&self, index: usize, list: Option<ParsedList>) -> Option<ParsedList> {
        let mut st = self.lock();
        match list {
            Some(list) => {
                st.last_good.insert(index, list);
                None
            }
            None => st.last_good.get(&index).cloned(),
        }
    }

    fn persist(&self, changes: PinChanges) {
        if changes.is_empty() {
            return;
        }
        if let Some(tx) = &self.persist {
            let _ = tx.send(changes);
        }
    }

    /// A fault on real traffic through `node`.
    pub(super) fn fault(this: &Arc<Inner>, node: &Arc<Node>, reason: &str, dead: bool) {
        let in_a_row = node.fault(reason);
        tracing::warn!(proxy = %node.label(), reason, in_a_row, "egress proxy fault");
        if dead || in_a_row >= this.knobs.fail_threshold {
            Inner::quarantine(this, node, reason);
        }
    }

    /// Quarantines `node`, moves its accounts to healthy proxies and schedules the check that
    /// may end the quarantine.
    fn quarantine(this: &Arc<Inner>, node: &Arc<Node>, reason: &str) {
        let Some(wait) = node.quarantine(this.knobs.quarantine, reason) else {
            return;
        };
        let moved = this.repin_from(node.id());
        tracing::warn!(
            proxy = %node.label(),
            reason,
            quarantine_sec = wait.as_secs(),
            accounts_moved = moved,
            "egress proxy quarantined"
        );
        if let Some(rt) = &this.runtime {
            let weak = Arc::downgrade(this);
            let node = Arc::clone(node);
            rt.spawn(async move {
                tokio::time::sleep(wait).await;
                if let Some(inner) = weak.upgrade() {
                    Inner::check(&inner, &node).await;
                }
            });
        }
    }

    /// Moves every account pinned to `id` to the least loaded healthy proxy; returns how many
    /// moved (none when no other proxy is healthy: the pins stay, routing fails).
    fn repin_from(&self, id: &str) -> usize {
        let now = Instant::now();
        let mut st = self.lock();
        let accounts: Vec<String> = st
            .pins
            .iter()
            .filter(|(_, p)| p.as_str() == id)
            .map(|(a, _)| a.clone())
            .collect();
        let mut changes = Vec::new();
        for account in accounts {
            let Some(target) = st.least_loaded(now, Some(id)) else {
                break;
            };
            st.pins.insert(account.clone(), target.id().to_owned());
            changes.push((account, Some(target.id().to_owned())));
        }
        drop(st);
        let n = changes.len();
        self.persist(changes);
        n
    }

    /// One active check of `node`: any HTTP answer from the check target means the proxy
    /// works (a 407 from an HTTP proxy means it refused our credentials).
    async fn check(this: &Arc<Inner>, node: &Arc<Node>) -> bool {
        let started = Instant::now();
        let result = node
            .http()
            .get(&this.knobs.check_url)
            .timeout(this.knobs.check_timeout)
            .send()
            .await;
        let failure = match result {
            Ok(r) if node.is_http() && super::proxy_refused(r.status().as_u16(), r.headers()) => {
                Some(format!(
                    "the proxy refused its credentials (HTTP {})",
                    r.status().as_u16()
                ))
            }
            Ok(_) => None,
            Err(e) if e.is_timeout() => Some("the check timed out".to_owned()),
            Err(e) if e.is_connect() => Some(super::connect_reason(&e)),
            Err(_) => Some("the check failed".to_owned()),
        };
        match failure {
            None => {
                if node.checked_ok(started.elapsed()) {
                    tracing::info!(proxy = %node.label(), "egress proxy healthy again");
                }
                true
            }
            Some(reason) => {
                node.checked_failed(&reason);
                // Already quarantined: the check at its end decides.
                Inner::quarantine(this, node, &reason);
                false
            }
        }
    }

    fn all_nodes(&self) -> Vec<Arc<Node>> {
        let st = self.lock();
        let mut out = st.nodes.clone();
        out.extend(st.overrides.values().cloned());
        out
    }

    async fn check_all(this: &Arc<Inner>) {
        let nodes = this.all_nodes();
        futures_util::stream::iter(nodes)
            .map(|n| {
                let this = Arc::clone(this);
                async move { Inner::check(&this, &n).await }
            })
            .buffer_unordered(CHECK_CONCURRENCY)
            .for_each(|_| async {})
            .await;
    }
}

/// The proxy pool. Cheap to clone.
#[derive(Clone)]
pub struct EgressPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EgressPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressPool").finish_non_exhaustive()
    }
}

/// How the last load of one proxy source went (`GET /admin/proxies`).
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// `file <path>` or `subscription #<n>` (a subscription URL may hold a token).
    pub source: String,
    /// Direct proxies it listed.
    pub proxies: usize,
    /// Tunnelled links (vmess, vless, …) it listed.
    pub tunnelled: usize,
    /// Lines skipped (each reason is logged).
    pub skipped: usize,
    /// Why it gave nothing this time (a subscription then keeps its previous proxies).
    pub error: Option<String>,
    /// Unix seconds of the load.
    pub at: u64,
}

impl SourceReport {
    fn new(source: String) -> SourceReport {
        SourceReport {
            source,
            proxies: 0,
            tunnelled: 0,
            skipped: 0,
            error: None,
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

/// An account's proxy as `GET /admin/accounts` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PinView {
    pub id: String,
    /// The URL, its password redacted.
    pub url: String,
    /// The account's own proxy (its record's `proxy`), not one of the pool's.
    pub own: bool,
}

/// What `GET /admin/proxies` answers.
#[derive(Debug, Clone, Serialize)]
pub struct ProxiesView {
    /// Whether any proxy is configured (else every account goes direct).
    pub configured: bool,
    pub total: usize,
    pub healthy: usize,
    pub quarantined: usize,
    pub proxies: Vec<NodeView>,
    /// Accounts with a proxy of their own.
    pub account_proxies: Vec<NodeView>,
    /// How each file and subscription loaded last time.
    pub sources: Vec<SourceReport>,
}

fn inner(
    recipe: ClientRecipe,
    knobs: Knobs,
    sources: Sources,
    persist: Option<Arc<Store>>,
) -> Inner {
    let persist = persist.and_then(|store| {
        let (tx, rx) = std::sync::mpsc::channel::<PinChanges>();
        // Weak: the store closes when the gateway stops, even while account actors still hold
        // the pool on their way down (a restart reopens the file).
        let store = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("egress-pins".into())
            .spawn(move || {
                while let Ok(batch) = rx.recv() {
                    let Some(store) = store.upgrade() else { break };
                    if let Err(e) = store.write_pins(&batch) {
                        tracing::warn!(error = %e, "the egress pins could not be written");
                    }
                }
            })
            .ok()
            .map(|_| tx)
    });
    Inner {
        direct: recipe
            .build(None)
            .unwrap_or_else(|_| reqwest::Client::new()),
        recipe,
        knobs,
        state: Mutex::new(State::default()),
        persist,
        runtime: tokio::runtime::Handle::try_current().ok(),
        sources,
        singbox: tokio::sync::Mutex::new(None),
    }
}

impl EgressPool {
    /// No proxy: every account goes direct (account overrides still apply).
    pub fn direct(recipe: ClientRecipe) -> EgressPool {
        let knobs = Knobs {
            fail_threshold: 2,
            quarantine: Duration::from_secs(30),
            check_url: String::new(),
            check_timeout: Duration::from_secs(10),
        };
        EgressPool {
            inner: Arc::new(inner(recipe, knobs, Sources::default(), None)),
        }
    }

    /// Loads every source (files now, subscriptions fetched once, a sing-box started for
    /// tunnelled links), restores the stored pins and starts the checks and refreshes.
    pub async fn start(
        settings: &Settings,
        recipe: ClientRecipe,
        store: Option<Arc<Store>>,
    ) -> EgressPool {
        let pp = &settings.proxy_pool;
        let mut subscriptions = pp.subscribes.clone();
        if let Some(legacy) = &settings.proxy_subscribe {
            subscriptions.push(Secret::new(legacy.clone()));
        }
        let fallback = pp
            .proxy
            .clone()
            .map(|p| ("proxy_pool.proxy", p))
            .or_else(|| settings.proxy.clone().map(|p| ("proxy", p)));
        let sources = Sources {
            files: pp.files.clone(),
            subscriptions,
            fallback,
            singbox: pp.singbox_path.clone(),
            data_dir: settings.data_dir.clone(),
            subscribe_interval: pp.subscribe_interval,
            check_interval: pp.health_check.then_some(pp.check_interval),
        };
        let configured = !sources.files.is_empty()
            || !sources.subscriptions.is_empty()
            || sources.fallback.is_some();
        let knobs = Knobs {
            fail_threshold: pp.fail_threshold,
            quarantine: pp.quarantine,
            check_url: pp
                .check_url
                .clone()
                .unwrap_or_else(|| settings.gemini_business.auth_url("auth/getoxsrf")),
            check_timeout: pp.check_timeout,
        };
        let stored = store
            .as_ref()
            .map(|s| s.pins())
            .transpose()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the stored egress pins could not be read");
                None
            })
            .unwrap_or_default();
        let pool = EgressPool {
            inner: Arc::new(inner(recipe, knobs, sources, store)),
        };
        {
            let mut st = pool.inner.lock();
            st.configured = configured;
            st.pins = stored.into_iter().collect();
        }
        if configured {
            pool.load_sources().await;
            if pp.check_on_startup {
                Inner::check_all(&pool.inner).await;
            }
            pool.spawn_loops();
        }
        pool
    }

    fn spawn_loops(&self) {
        let Some(rt) = &self.inner.runtime else {
            return;
        };
        if !self.inner.sources.subscriptions.is_empty() {
            let weak = Arc::downgrade(&self.inner);
            let every = self.inner.sources.subscribe_interval;
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(inner) = weak.upgrade() else { break };
                    EgressPool { inner }.load_sources().await;
                }
            });
        }
        if let Some(every) = self.inner.sources.check_interval {
            let weak = Arc::downgrade(&self.inner);
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(inner) = weak.upgrade() else { break };
                    Inner::check_all(&inner).await;
                }
            });
        }
    }

    /// Reads the files and fetches the subscriptions; replaces the node list with what they
    /// yield. A subscription that fails or returns garbage keeps the proxies it gave before.
    async fn load_sources(&self) {
        let inner = &self.inner;
        let src = &inner.sources;
        let mut direct: Vec<(ProxyUrl, Origin)> = Vec::new();
        let mut tunnelled: Vec<TunnelNode> = Vec::new();
        let mut reports: Vec<SourceReport> = Vec::new();
        let mut take = |list: ParsedList, origin: Origin, report: &mut SourceReport| {
            for reason in &list.skipped {
                tracing::warn!(source = %report.source, reason = %reason, "proxy list line skipped");
            }
            report.proxies = list.direct.len();
            report.tunnelled = list.tunnelled.len();
            report.skipped = list.skipped.len();
            direct.extend(list.direct.into_iter().map(|u| (u, origin.clone())));
            tunnelled.extend(list.tunnelled);
        };
        for path in &src.files {
            let shown = path.display().to_string();
            let mut report = SourceReport::new(format!("file {shown}"));
            let parsed = match tokio::fs::read(path).await {
                Ok(body) => links::parse_list(&body),
                Err(e) => Err(format!("it cannot be read ({e})")),
            };
            match parsed {
                Ok(list) => take(list, Origin::File { path: shown }, &mut report),
                Err(e) => {
                    tracing::warn!(source = %report.source, error = %e, "proxy_pool.files: no usable proxy list");
                    report.error = Some(e);
                }
            }
            reports.push(report);
        }
        let fetched = futures_util::future::join_all(
            src.subscriptions
                .iter()
                .map(|url| fetch_subscription(&inner.direct, url)),
        )
        .await;
        let previous: Vec<Arc<Node>> = inner.lock().nodes.clone();
        for (index, result) in fetched.into_iter().enumerate() {
            let mut report = SourceReport::new(format!("subscription #{}", index + 1));
            let parsed = result
                .and_then(|body| links::parse_list(&body))
                .and_then(|list| {
                    if list.direct.is_empty() && list.tunnelled.is_empty() {
                        Err("it lists no proxy".to_owned())
                    } else {
                        Ok(list)
                    }
                });
            let list = match parsed {
                Ok(list) => {
                    inner.last_good(index, Some(list.clone()));
                    Some(list)
                }
                Err(e) => {
                    tracing::warn!(
                        source = %report.source,
                        error = %e,
                        "proxy_pool.subscribes: no usable proxy list; the proxies it gave before are kept"
                    );
                    report.error = Some(e);
                    inner.last_good(index, None)
                }
            };
            if let Some(list) = list {
                take(list, Origin::Subscription { index }, &mut report);
            }
            reports.push(report);
        }
        inner.lock().sources = reports;
        let mut nodes = self.start_tunnels(tunnelled, &previous).await;
        // Direct proxies first, then tunnels; a proxy listed twice counts once.
        let mut seen: BTreeMap<String, ()> = BTreeMap::new();
        let mut list: Vec<Arc<Node>> = Vec::new();
        let reuse = |url: &ProxyUrl, origin: Origin| -> Option<Arc<Node>> {
            let id = super::node::node_id(url);
            if let Some(n) = previous.iter().find(|n| n.id() == id) {
                return Some(Arc::clone(n));
            }
            match Node::new(url.clone(), origin, &inner.recipe) {
                Ok(n) => Some(Arc::new(n)),
                Err(e) => {
                    tracing::warn!(error = %e, "proxy skipped");
                    None
                }
            }
        };
        for (url, origin) in direct {
            if let Some(n) = reuse(&url, origin)
                && seen.insert(n.id().to_owned(), ()).is_none()
            {
                list.push(n);
            }
        }
        for n in nodes.drain(..) {
            if seen.insert(n.id().to_owned(), ()).is_none() {
                list.push(n);
            }
        }
        if list.is_empty()
            && let Some((key, url)) = &src.fallback
            && let Some(n) = reuse(url, Origin::Config { key })
        {
            list.push(n);
        }
        let count = list.len();
        inner.lock().nodes = list;
        tracing::info!(proxies = count, "egress proxies loaded");
    }

    /// Nodes for tunnelled links: through a (re)started sing-box when one is configured, else
    /// none (reported).
    async fn start_tunnels(
        &self,
        tunnelled: Vec<TunnelNode>,
        previous: &[Arc<Node>],
    ) -> Vec<Arc<Node>> {
        let inner = &self.inner;
        if tunnelled.is_empty() {
            if let Some(old) = inner.singbox.lock().await.take() {
                old.stop().await;
            }
            return Vec::new();
        }
        let Some(exe) = &inner.sources.singbox else {
            tracing::warn!(
                links = tunnelled.len(),
                "proxy lists hold vmess / vless / trojan / shadowsocks / hysteria2 links; they are \
                 skipped: set proxy_pool.singbox_path to a sing-box executable to use them"
            );
            return Vec::new();
        };
        let mut guard = inner.singbox.lock().await;
        if let Some(old) = guard.take() {
            old.stop().await;
        }
        let config = SingBoxConfig {
            executable: exe.clone(),
            work_dir: inner.sources.data_dir.join("singbox"),
            first_port: 0,
        };
        if let Err(e) = crate::startup::create_private_dir(&config.work_dir) {
            tracing::warn!(error = %e, "the sing-box directory cannot be created; tunnelled links skipped");
            return Vec::new();
        }
        match SingBox::start(config, &tunnelled).await {
            Ok((running, urls)) => {
                *guard = Some(running);
                urls.into_iter()
                    .filter_map(|(id, url)| {
                        let t = tunnelled.iter().find(|t| t.id() == id)?;
                        let origin = Origin::SingBox {
                            protocol: t.protocol.to_owned(),
                            name: t.name.clone(),
                        };
                        let nid = super::node::node_id(&url);
                        if let Some(n) = previous.iter().find(|n| n.id() == nid) {
                            return Some(Arc::clone(n));
                        }
                        Node::new(url, origin, &inner.recipe).ok().map(Arc::new)
                    })
                    .collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, "sing-box could not be started; tunnelled links skipped");
                Vec::new()
            }
        }
    }

    /// The route of `account`'s calls: its own proxy, else its pinned proxy (pinning it to the
    /// least loaded healthy one if it has none or its proxy is quarantined), else direct when
    /// no proxy is configured. Fails when the proxy it must use is unavailable.
    pub fn route(&self, account: &AccountKey) -> Result<Egress, UpstreamError> {
        let now = Instant::now();
        let weak = Arc::downgrade(&self.inner);
        let mut st = self.inner.lock();
        if let Some(node) = st.overrides.get(account.as_str()) {
            return if node.state_at(now) == super::NodeState::Healthy {
                Ok(Egress::through(Arc::clone(node), weak))
            } else {
                Err(proxy_error(
                    ROUTE,
                    node.label(),
                    "the account's own proxy is quarantined",
                    false,
                ))
            };
        }
        if !st.configured {
            return Ok(Egress::direct());
        }
        if let Some(id) = st.pins.get(account.as_str())
            && let Some(node) = st.node(id)
            && node.state_at(now) == super::NodeState::Healthy
        {
            return Ok(Egress::through(Arc::clone(node), weak));
        }
        let Some(node) = st.least_loaded(now, None) else {
            return Err(st.no_healthy_proxy());
        };
        st.pins
            .insert(account.as_str().to_owned(), node.id().to_owned());
        drop(st);
        self.inner.persist(vec![(
            account.as_str().to_owned(),
            Some(node.id().to_owned()),
        )]);
        Ok(Egress::through(node, weak))
    }

    /// The proxy `account` leaves through, for a worker task: its route's proxy, or — when no
    /// healthy proxy is left — the one it is pinned to (a task never falls back to direct
    /// while proxies are configured). `None`: direct.
    pub fn proxy_of(&self, account: &AccountKey) -> Option<ProxyUrl> {
        match self.route(account) {
            Ok(egress) => egress.url().cloned(),
            Err(_) => {
                let st = self.inner.lock();
                st.overrides
                    .get(account.as_str())
                    .or_else(|| st.pins.get(account.as_str()).and_then(|id| st.node(id)))
                    .map(|n| n.url().clone())
            }
        }
    }

    /// Which proxy `account` is pinned to (without assigning one), for the admin API.
    pub fn pin_of(&self, account: &AccountKey) -> Option<PinView> {
        let st = self.inner.lock();
        if let Some(n) = st.overrides.get(account.as_str()) {
            return Some(PinView {
                id: n.id().to_owned(),
                url: n.label().to_owned(),
                own: true,
            });
        }
        let n = st.node(st.pins.get(account.as_str())?)?;
        Some(PinView {
            id: n.id().to_owned(),
            url: n.label().to_owned(),
            own: false,
        })
    }

    /// Pins every account in `accounts` that has no usable pin yet (at start and on import, so
    /// the spread is even and visible before the first request).
    pub fn ensure_pins<'a>(&self, accounts: impl IntoIterator<Item = &'a AccountKey>) {
        for a in accounts {
            let _ = self.route(a);
        }
    }

    /// Sets or clears `account`'s own proxy.
    pub fn set_override(&self, account: &AccountKey, proxy: Option<ProxyUrl>) {
        let mut st = self.inner.lock();
        match proxy {
            None => {
                st.overrides.remove(account.as_str());
            }
            Some(url) => {
                if st
                    .overrides
                    .get(account.as_str())
                    .is_some_and(|n| n.url() == &url)
                {
                    return;
                }
                match Node::new(
                    url,
                    Origin::Account {
                        email: account.as_str().to_owned(),
                    },
                    &self.inner.recipe,
                ) {
                    Ok(n) => {
                        st.overrides
                            .insert(account.as_str().to_owned(), Arc::new(n));
                    }
                    Err(e) => tracing::warn!(error = %e, "the account's proxy is not usable"),
                }
            }
        }
    }

    /// Forgets a removed account's pin and override.
    pub fn forget(&self, account: &AccountKey) {
        let mut st = self.inner.lock();
        st.overrides.remove(account.as_str());
        let had = st.pins.remove(account.as_str()).is_some();
        drop(st);
        if had {
            self.inner
                .persist(vec![(account.as_str().to_owned(), None)]);
        }
    }

    /// Runs every active check now and answers the view after them.
    pub async fn check_now(&self) -> ProxiesView {
        Inner::check_all(&self.inner).await;
        self.view()
    }

    /// Every proxy with its state and the accounts pinned to it.
    pub fn view(&self) -> ProxiesView {
        let st = self.inner.lock();
        let mut by_node: HashMap<&str, Vec<String>> = HashMap::new();
        for (account, id) in &st.pins {
            by_node
                .entry(id.as_str())
                .or_default()
                .push(account.clone());
        }
        let proxies: Vec<NodeView> = st
            .nodes
            .iter()
            .map(|n| {
                let mut accounts = by_node.remove(n.id()).unwrap_or_default();
                accounts.sort();
                n.view(accounts)
            })
            .collect();
        let mut account_proxies: Vec<NodeView> = st
            .overrides
            .iter()
            .map(|(a, n)| n.view(vec![a.clone()]))
            .collect();
        account_proxies.sort_by(|a, b| a.accounts.cmp(&b.accounts));
        let healthy = proxies
            .iter()
            .filter(|p| p.state == super::NodeState::Healthy)
            .count();
        ProxiesView {
            configured: st.configured,
            total: proxies.len(),
            healthy,
            quarantined: proxies.len() - healthy,
            proxies,
            account_proxies,
            sources: st.sources.clone(),
        }
    }
}

/// GETs a subscription (its URL may hold a token: never logged), at most 4 MiB in 30 s.
async fn fetch_subscription(client: &reqwest::Client, url: &Secret) -> Result<Vec<u8>, String> {
    let mut response = client
        .get(url.expose())
        .timeout(SUBSCRIPTION_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "it did not answer in time".to_owned()
            } else {
                "it could not be fetched".to_owned()
            }
        })?;
    if !response.status().is_success() {
        return Err(format!("it answered HTTP {}", response.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| "its answer was cut off".to_owned())?
    {
        if body.len() + chunk.len() > MAX_SUBSCRIPTION_BYTES {
            return Err("its answer is larger than 4 MiB".to_owned());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
