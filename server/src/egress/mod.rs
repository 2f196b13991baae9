//! Egress proxies: each account leaves through its own sticky proxy, and proxy health is its own
//! dimension (a broken proxy is never mistaken for a broken account).
//!
//! # Layout
//! - [`node`]: one proxy — URL (a secret), its own reused HTTP client, health and quarantine.
//! - [`pool`]: [`EgressPool`] — the proxies from every source, the account → proxy pins
//!   (persisted), assignment, passive scoring, quarantine with backoff and re-pinning, active
//!   checks, subscription refresh.
//! - [`links`]: proxy lists (files, subscription bodies, plain or base64) → direct proxies and
//!   tunnelled nodes.
//! - [`singbox`]: runs a `sing-box` process with one local SOCKS inbound per tunnelled node.
//!
//! The seam with the upstream adapter is [`Egress`]: the route one account's calls take (its
//! proxy's client, or the adapter's direct client when no proxy is configured). The adapter
//! asks it which client to use and tells it about proxy faults; the account pool never sees a
//! proxy fault as the account's.

pub mod links;
pub mod node;
pub mod pool;
pub mod singbox;

use std::sync::{Arc, Weak};

pub use node::{ClientRecipe, Node, NodeState, NodeView, Origin};
pub use pool::{EgressPool, PinView, ProxiesView};

use crate::upstream::{ErrorKind, UpstreamError};

/// The route of one account's upstream calls: through a proxy of the pool, or direct.
#[derive(Clone, Default)]
pub struct Egress {
    via: Option<Via>,
}

#[derive(Clone)]
struct Via {
    node: Arc<Node>,
    /// Where faults are reported (gone in a standalone route).
    pool: Weak<pool::Inner>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.via {
            Some(v) => write!(f, "Egress({})", v.node.label()),
            None => f.write_str("Egress(direct)"),
        }
    }
}

impl Egress {
    /// Straight to the upstream.
    pub fn direct() -> Egress {
        Egress::default()
    }

    /// Through `url`, outside any pool (a worker's probe with the proxy its task named).
    pub fn standalone(
        url: crate::config::ProxyUrl,
        recipe: &ClientRecipe,
    ) -> Result<Egress, String> {
        let node = Node::new(url, Origin::Config { key: "task" }, recipe)?;
        Ok(Egress {
            via: Some(Via {
                node: Arc::new(node),
                pool: Weak::new(),
            }),
        })
    }

    fn through(node: Arc<Node>, pool: Weak<pool::Inner>) -> Egress {
        Egress {
            via: Some(Via { node, pool }),
        }
    }

    /// The client to send with: the proxy's, else `direct`.
    pub fn http<'a>(&'a self, direct: &'a reqwest::Client) -> &'a reqwest::Client {
        match &self.via {
            Some(v) => v.node.http(),
            None => direct,
        }
    }

    /// The proxy's id, `None` when direct.
    pub fn node_id(&self) -> Option<&str> {
        self.via.as_ref().map(|v| v.node.id())
    }

    /// The proxy URL (with its password), for a worker's browser; `None` when direct.
    pub fn url(&self) -> Option<&crate::config::ProxyUrl> {
        self.via.as_ref().map(|v| v.node.url())
    }

    /// An answer came back through the proxy.
    pub fn succeeded(&self) {
        if let Some(v) = &self.via {
            v.node.succeeded();
        }
    }

    /// Whether an answer that came through an HTTP proxy is the proxy refusing our
    /// credentials rather than the upstream's (see [`proxy_refused`]); then a proxy fault.
    pub fn refused_credentials(
        &self,
        endpoint: &'static str,
        status: u16,
        headers: &reqwest::header::HeaderMap,
    ) -> Option<UpstreamError> {
        let v = self.via.as_ref().filter(|v| v.node.is_http())?;
        if !proxy_refused(status, headers) {
            return None;
        }
        Some(self.fault(
            v,
            endpoint,
            &format!("the proxy refused its credentials (HTTP {status})"),
            false,
        ))
    }

    /// A transport failure of a call through the proxy: whether it is the proxy's fault. A
    /// failure to connect (to the proxy, or through it: the proxy's network) is; a connection
    /// cut later is when the proxy itself no longer accepts connections. `None`: not the
    /// proxy's (or direct), classify as usual.
    pub async fn transport_failure(
        &self,
        endpoint: &'static str,
        e: &reqwest::Error,
    ) -> Option<UpstreamError> {
        let v = self.via.as_ref()?;
        // A connection that could not be made (refused, timed out, TLS) is the proxy's path;
        // a call that timed out later is the upstream's.
        if e.is_timeout() && !e.is_connect() {
            return None;
        }
        if e.is_connect() {
            // A proxy that no longer accepts connections is quarantined at once; other connect
            // failures (its credentials, its network) count towards `fail_threshold`.
            let dead = !proxy_reachable(v.node.url()).await;
            let reason = if dead {
                "the proxy does not accept connections".to_owned()
            } else {
                connect_reason(e)
            };
            return Some(self.fault(v, endpoint, &reason, dead));
        }
        if !proxy_reachable(v.node.url()).await {
            return Some(self.fault(v, endpoint, "the proxy stopped accepting connections", true));
        }
        None
    }

    fn fault(&self, v: &Via, endpoint: &'static str, reason: &str, dead: bool) -> UpstreamError {
        if let Some(pool) = v.pool.upgrade() {
            pool::Inner::fault(&pool, &v.node, reason, dead);
        }
        proxy_error(endpoint, v.node.label(), reason, false)
    }
}

/// A proxy failure as an upstream error: no account action, another account may succeed
/// (unless `exhausted`: no healthy proxy is left at all).
pub fn proxy_error(
    endpoint: &'static str,
    label: &str,
    reason: &str,
    exhausted: bool,
) -> UpstreamError {
    UpstreamError::new(
        ErrorKind::Proxy { exhausted },
        endpoint,
        format!("egress proxy {label}: {reason}"),
    )
}

/// An HTTP proxy's own refusal of its credentials, on a plain-HTTP request through it: `407`,
/// or a `401` with a `Basic` challenge (tinyproxy answers wrong credentials that way; Google's
/// APIs never challenge with `Basic`). Through a CONNECT tunnel (HTTPS) the refusal is a
/// connect error instead.
pub fn proxy_refused(status: u16, headers: &reqwest::header::HeaderMap) -> bool {
    status == 407
        || (status == 401
            && headers
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .any(|v| {
                    v.to_str()
                        .is_ok_and(|v| v.trim_start().to_ascii_lowercase().starts_with("basic"))
                }))
}

/// Why a connection through a proxy failed, in words that hold no secret (reqwest's own
/// messages, scanned; the proxy URL with its password is never part of them, and the request
/// URL was removed).
fn connect_reason(e: &reqwest::Error) -> String {
    // From the first cause on: reqwest's own line names the request URL (whose path, say
    // `/auth/…`, must not be taken for a proxy's word).
    let mut chain = String::new();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        chain.push_str(&s.to_string().to_ascii_lowercase());
        chain.push(' ');
        cur = s.source();
    }
    tracing::debug!(error = %chain, "connection through an egress proxy failed");
    // The TLS error names certificate authorities: look for it before "auth".
    if chain.contains("timed out") || chain.contains("timeout") {
        "the connection through the proxy timed out".to_owned()
    } else if chain.contains("certificate") || chain.contains("tls") || chain.contains("handshake")
    {
        "TLS handshake failed".to_owned()
    } else if chain.contains("auth") || chain.contains("407") || chain.contains("credential") {
        "the proxy refused its credentials".to_owned()
    } else if chain.contains("tunnel") {
        // A CONNECT answered with an error status (tinyproxy answers wrong credentials 401).
        "the proxy refused the tunnel (its credentials are wrong, or it forbids the destination)"
            .to_owned()
    } else if chain.contains("refused") {
        "connection refused".to_owned()
    } else if chain.contains("dns") || chain.contains("resolve") {
        "the proxy host could not be resolved".to_owned()
    } else {
        "could not connect through the proxy".to_owned()
    }
}

/// Whether the proxy's own port still accepts a TCP connection (1 s).
async fn proxy_reachable(url: &crate::config::ProxyUrl) -> bool {
    let Ok(parsed) = url::Url::parse(url.expose()) else {
        return false;
    };
    let Some(host) = parsed.host_str() else {
        return false;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(1080);
    matches!(
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await,
        Ok(Ok(_))
    )
}
