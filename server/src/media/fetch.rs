//! Client media URLs the gateway fetches itself (when the upstream would not take them by
//! URI), with SSRF protection.
//!
//! - Only `http` and `https`.
//! - Every address a request may connect to is checked: loopback, private (RFC 1918,
//!   `fc00::/7`), link-local (`169.254/16`, `fe80::/10`, so also the cloud metadata addresses
//!   `169.254.169.254` and `fd00:ec2::254`), CGNAT (`100.64/10`), unspecified, broadcast,
//!   multicast, documentation, benchmarking and reserved ranges are refused, as are the
//!   IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6 forms of refused IPv4 addresses.
//! - Host names are checked **after** resolution, inside the HTTP client's own resolver
//!   ([`CheckedResolver`]): it resolves with the system resolver, drops refused addresses and
//!   hands the client only the checked ones, so the connection goes to an address that was
//!   checked (no DNS-rebinding window between a check and the connect). IP-literal URLs are
//!   checked before the request.
//! - Redirects are followed by hand, each hop checked again, at most
//!   `media.fetch_max_redirects`.
//! - `media.fetch_allow` lists targets that are allowed although they would be refused: host
//!   names (matched against the URL's host), IP addresses or CIDR blocks (matched against the
//!   resolved address), each optionally with `:port`.
//! - The body is capped (`Content-Length` checked first, then the stream counted), the whole
//!   fetch (all hops and the body) has one timeout, no environment proxy is used, no cookies
//!   are kept, no `Referer` is sent, nothing is decompressed.
//! - The media type is decided by [`super::mime::resolve`]: the `Content-Type` unless the magic
//!   bytes contradict it or it is missing or generic; unsupported types are refused.
//!
//! Errors are [`FetchError`]s whose messages are safe to show the client: URLs are shown
//! without user info, query or fragment.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{self, HeaderValue};
use url::{Host, Url};

use super::mime;
use crate::config::MediaSettings;
use crate::error::InputError;

/// `User-Agent` of media fetches.
const USER_AGENT: &str = "Mozilla/5.0 (compatible; business2api media fetcher)";
/// URLs in messages are cut to this many characters.
const SHOWN_URL_MAX: usize = 200;

/// A media file fetched from a client URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The media type to send upstream (see [`super::mime::resolve`]).
    pub mime: String,
    pub data: Bytes,
}

/// Why a media URL could not be used. Every message is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The URL (or a redirect) points somewhere the gateway does not go.
    #[error("the media URL {url} was refused: {reason}")]
    Refused { url: String, reason: String },
    #[error("the media at {url} is larger than the limit of {limit} bytes (media.fetch_max_mb)")]
    TooLarge { url: String, limit: u64 },
    #[error("fetching the media at {url} took longer than {secs} s (media.fetch_timeout_sec)")]
    Timeout { url: String, secs: u64 },
    #[error("the media URL {url} answered HTTP {code}")]
    Status { url: String, code: u16 },
    #[error("the media at {url} cannot be used: {}", unsupported(mime))]
    Unsupported { url: String, mime: String },
    #[error("the media at {url} is empty")]
    Empty { url: String },
    #[error("could not fetch the media at {url}: {reason}")]
    Transport { url: String, reason: String },
}

fn unsupported(mime: &str) -> mime::Unsupported {
    mime::Unsupported {
        mime: mime.to_owned(),
    }
}

impl FetchError {
    /// The HTTP status the client gets: 413 for too large, else 400 (the URL is the client's
    /// input; another account or a retry would not change the answer).
    pub fn status(&self) -> u16 {
        match self {
            FetchError::TooLarge { .. } => 413,
            _ => 400,
        }
    }
}

impl From<FetchError> for InputError {
    fn from(e: FetchError) -> Self {
        InputError {
            too_large: e.status() == 413,
            message: e.to_string(),
        }
    }
}

/// A URL as shown in messages and logs: scheme, host, port and path; no user info, query or
/// fragment (they may carry credentials or signed tokens).
pub fn display_url(raw: &str) -> String {
    match Url::parse(raw.trim()) {
        Ok(u) => display(&u),
        Err(_) => "(an invalid URL)".to_owned(),
    }
}

fn display(u: &Url) -> String {
    let mut out = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
    if let Some(port) = u.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(u.path());
    if out.chars().count() > SHOWN_URL_MAX {
        out = out.chars().take(SHOWN_URL_MAX).collect();
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Address policy

/// Why an address is not a public internet address, or `None` when it is.
pub fn refused_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([169, 254, 169, 254], 32, "a cloud metadata address"),
        ([0, 0, 0, 0], 8, "an unspecified (\"this network\") address"),
        ([10, 0, 0, 0], 8, "a private address"),
        ([100, 64, 0, 0], 10, "a shared (CGNAT) address"),
        ([127, 0, 0, 0], 8, "a loopback address"),
        ([169, 254, 0, 0], 16, "a link-local address"),
        ([172, 16, 0, 0], 12, "a private address"),
        ([192, 0, 0, 0], 24, "an IETF protocol assignment address"),
        ([192, 0, 2, 0], 24, "a documentation address"),
        ([192, 88, 99, 0], 24, "a reserved relay address"),
        ([192, 168, 0, 0], 16, "a private address"),
        ([198, 18, 0, 0], 15, "a benchmarking address"),
        ([198, 51, 100, 0], 24, "a documentation address"),
        ([203, 0, 113, 0], 24, "a documentation address"),
        ([255, 255, 255, 255], 32, "the broadcast address"),
        ([224, 0, 0, 0], 4, "a multicast address"),
        ([240, 0, 0, 0], 4, "a reserved address"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    (u128::from(ip) & mask) == (u128::from(net) & mask)
}

/// The IPv4 address an IPv6 address stands for (mapped, compatible, NAT64, 6to4), if any.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xFFFF_FFFF) as u32);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // ::a.b.c.d (deprecated IPv4-compatible), but not :: and ::1.
    if bits >> 32 == 0 && bits > 1 {
        return Some(low32);
    }
    // 64:ff9b::/96, NAT64 well-known prefix.
    if in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return Some(low32);
    }
    // 2002::/16, 6to4: the IPv4 address is bits 16..48.
    if ip.segments()[0] == 0x2002 {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xFFFF_FFFF) as u32));
    }
    None
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    if let Some(v4) = embedded_v4(ip) {
        return refused_v4(v4);
    }
    const RANGES: &[(Ipv6Addr, u32, &str)] = &[
        (
            Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
            128,
            "a cloud metadata address",
        ),
        (
            Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
            7,
            "a private (unique local) address",
        ),
        (
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
            10,
            "a link-local address",
        ),
        (
            Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
            10,
            "a site-local address",
        ),
        (
            Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
            8,
            "a multicast address",
        ),
        (
            Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
            48,
            "a local NAT64 address",
        ),
        (
            Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
            64,
            "a discard-only address",
        ),
        (
            Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
            32,
            "a Teredo tunnel address",
        ),
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
            32,
            "a documentation address",
        ),
        (
            Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0),
            48,
            "a benchmarking address",
        ),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is; anything else unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What one `media.fetch_allow` entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowTarget {
    /// A host name, lower case, without a trailing dot; matched against the URL's host.
    Host(String),
    /// An address block (a single address is a /32 or /128); matched against the address
    /// connected to.
    Net { addr: IpAddr, prefix: u32 },
}

/// One `media.fetch_allow` entry: a host name, an IP address or a CIDR block, optionally
/// with `:port` (IPv6 with a port in brackets: `[fd00::1]:8080`, `[fd00::/8]:443`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    target: AllowTarget,
    port: Option<u16>,
}

fn parse_net(text: &str) -> Result<AllowTarget, String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let addr = canonical(addr);
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .parse::<u32>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{p:?} is not a prefix length (0..={max})"))?,
    };
    Ok(AllowTarget::Net { addr, prefix })
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{text:?} is not a port (1..=65535)"))
}

/// A DNS host name: dot-separated labels of letters, digits, `-` and `_` (1..=63 bytes, not
/// starting or ending with `-`), 253 bytes at most.
pub(crate) fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl AllowRule {
    /// Parses one entry; the error says what is wrong with it.
    pub fn parse(entry: &str) -> Result<AllowRule, String> {
        let text = entry.trim();
        if text.is_empty() {
            return Err("an empty entry".to_owned());
        }
        if text.contains("://") || text.contains('@') || text.contains('?') || text.contains('#') {
            return Err(format!(
                "{text:?} is not a host, IP or CIDR block (write e.g. \"10.1.2.3\", \
                 \"10.0.0.0/8\", \"media.internal:8080\", \"[fd00::1]:443\")"
            ));
        }
        if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?} has an unclosed '['"))?;
            let port = match after {
                "" => None,
                p => Some(parse_port(p.strip_prefix(':').ok_or_else(|| {
                    format!("{text:?}: expected ':<port>' after ']'")
                })?)?),
            };
            let target = parse_net(inside)?;
            if !matches!(
                target,
                AllowTarget::Net {
                    addr: IpAddr::V6(_),
                    ..
                }
            ) {
                return Err(format!("{text:?}: brackets are for IPv6 addresses"));
            }
            return Ok(AllowRule { target, port });
        }
        // More than one ':' without brackets: an IPv6 address or block, no port.
        if text.matches(':').count() > 1 {
            return Ok(AllowRule {
                target: parse_net(text)?,
                port: None,
            });
        }
        let (head, port) = match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(parse_port(p)?)),
            None => (text, None),
        };
        let looks_numeric = head
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'/');
        let target = if head.contains('/') || (looks_numeric && head.parse::<IpAddr>().is_ok()) {
            parse_net(head)?
        } else if looks_numeric {
            return Err(format!("{head:?} is not a valid IPv4 address"));
        } else {
            let name = head.trim_end_matches('.').to_ascii_lowercase();
            if !valid_host_name(&name) {
                return Err(format!("{head:?} is not a valid host name"));
            }
            AllowTarget::Host(name)
        };
        Ok(AllowRule { target, port })
    }

    fn matches(&self, host: Option<&str>, ip: IpAddr, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match &self.target {
            AllowTarget::Host(name) => host.is_some_and(|h| h == name),
            AllowTarget::Net { addr, prefix } => match (canonical(ip), addr) {
                (IpAddr::V4(ip), IpAddr::V4(net)) => in_v4(ip, net.octets(), *prefix),
                (IpAddr::V6(ip), IpAddr::V6(net)) => in_v6(ip, *net, *prefix),
                _ => false,
            },
        }
    }
}

/// The address policy: refuse non-public addresses unless an allow rule matches.
#[derive(Debug, Clone, Default)]
pub struct FetchPolicy {
    allow: Vec<AllowRule>,
}

/// A normalised host name for matching (lower case, no trailing dot, no brackets).
fn host_key(host: &str) -> String {
    host.trim_end_matches('.')
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

impl FetchPolicy {
    /// A policy from `media.fetch_allow` entries.
    pub fn new(entries: &[String]) -> Result<FetchPolicy, String> {
        let allow = entries
            .iter()
            .map(|e| AllowRule::parse(e).map_err(|why| format!("media.fetch_allow: {why}")))
            .collect::<Result<_, _>>()?;
        Ok(FetchPolicy { allow })
    }

    /// Whether connecting to `ip:port` for the URL host `host` is allowed; the error says why
    /// not (`"127.0.0.1, a loopback address"`).
    pub fn check(&self, host: Option<&str>, ip: IpAddr, port: u16) -> Result<(), String> {
        let ip = canonical(ip);
        let Some(reason) = refused_reason(ip) else {
            return Ok(());
        };
        let host = host.map(host_key);
        if self
            .allow
            .iter()
            .any(|rule| rule.matches(host.as_deref(), ip, port))
        {
            return Ok(());
        }
        Err(format!("{ip}, {reason}"))
    }
}

/// The end of every refusal by address.
const ALLOW_HINT: &str = "not allowed unless listed in media.fetch_allow";

// ---------------------------------------------------------------------------------------------
// Resolution

/// Host name resolution (the system resolver in production; a table in tests).
pub trait Lookup: Send + Sync + 'static {
    fn lookup(
        &self,
        host: String,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;
}

/// `tokio::net::lookup_host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(
        &self,
        host: String,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

/// Every resolved address of a name was refused (carried through reqwest's error chain).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct RefusedTarget {
    pub reason: String,
}

/// The HTTP client's resolver for one hop: resolves with [`Lookup`], keeps only addresses the
/// policy allows for this host and port, and fails when none is left, so the client connects
/// only to checked addresses.
pub struct CheckedResolver {
    policy: Arc<FetchPolicy>,
    lookup: Arc<dyn Lookup>,
    port: u16,
}

impl CheckedResolver {
    pub fn new(policy: Arc<FetchPolicy>, lookup: Arc<dyn Lookup>, port: u16) -> Self {
        CheckedResolver {
            policy,
            lookup,
            port,
        }
    }

    /// The allowed addresses of `host`, or why there is none.
    pub async fn resolve_checked(&self, host: &str) -> Result<Vec<SocketAddr>, RefusedTarget> {
        let addrs = self
            .lookup
            .lookup(host.to_owned(), self.port)
            .await
            .map_err(|e| {
                tracing::debug!(error = %e, "media host lookup failed");
                RefusedTarget {
                    reason: format!("the host name {host} could not be resolved"),
                }
            })?;
        let mut allowed = Vec::new();
        let mut refusal = None;
        for addr in addrs {
            match self.policy.check(Some(host), addr.ip(), self.port) {
                Ok(()) => allowed.push(SocketAddr::new(canonical(addr.ip()), self.port)),
                Err(why) => {
                    refusal.get_or_insert(why);
                }
            }
        }
        if allowed.is_empty() {
            return Err(RefusedTarget {
                reason: match refusal {
                    Some(why) => format!("{host} resolves to {why}; {ALLOW_HINT}"),
                    None => format!("the host name {host} has no address"),
                },
            });
        }
        Ok(allowed)
    }
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = CheckedResolver {
            policy: Arc::clone(&self.policy),
            lookup: Arc::clone(&self.lookup),
            port: self.port,
        };
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = this.resolve_checked(&host).await?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The fetcher

/// Fetches client media URLs (see the module docs). Built once at start-up; cheap to share.
pub struct MediaFetcher {
    policy: Arc<FetchPolicy>,
    lookup: Arc<dyn Lookup>,
    max_bytes: u64,
    timeout: Duration,
    max_redirects: u32,
}

impl std::fmt::Debug for MediaFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaFetcher")
            .field("policy", &self.policy)
            .field("max_bytes", &self.max_bytes)
            .field("timeout", &self.timeout)
            .field("max_redirects", &self.max_redirects)
            .finish_non_exhaustive()
    }
}

impl MediaFetcher {
    /// A fetcher for `media.*` settings, resolving with the system resolver.
    pub fn new(settings: &MediaSettings) -> Result<MediaFetcher, String> {
        MediaFetcher::with_lookup(settings, Arc::new(SystemLookup))
    }

    /// A fetcher with its own name resolution (tests).
    pub fn with_lookup(
        settings: &MediaSettings,
        lookup: Arc<dyn Lookup>,
    ) -> Result<MediaFetcher, String> {
        Ok(MediaFetcher {
            policy: Arc::new(FetchPolicy::new(&settings.fetch_allow)?),
            lookup,
            max_bytes: settings.fetch_max_bytes,
            timeout: settings.fetch_timeout,
            max_redirects: settings.fetch_max_redirects,
        })
    }

    /// The size limit (also applied to inline media, see `service.rs`).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Fetches `url`, following checked redirects, within the timeout and the size limit.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        let shown = display_url(url);
        let result = match tokio::time::timeout(self.timeout, self.fetch_within(url)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout {
                url: shown.clone(),
                secs: self.timeout.as_secs().max(1),
            }),
        };
        match &result {
            Ok(f) => {
                tracing::info!(url = %crate::telemetry::untrusted(&shown), mime = %crate::telemetry::untrusted(&f.mime), bytes = f.data.len(), "fetched client media")
            }
            Err(e) => {
                tracing::info!(error = %crate::telemetry::untrusted(&e.to_string()), "client media not fetched")
            }
        }
        result
    }

    async fn fetch_within(&self, url: &str) -> Result<Fetched, FetchError> {
        let mut current = Url::parse(url.trim()).map_err(|_| FetchError::Refused {
            url: display_url(url),
            reason: "it is not a valid URL".to_owned(),
        })?;
        let mut redirects = 0u32;
        loop {
            let response = match self.hop(&current).await {
                Ok(r) => r,
                Err(FetchError::Refused { url: hop, reason }) if redirects > 0 => {
                    return Err(FetchError::Refused {
                        url: hop,
                        reason: format!(
                            "{reason} (reached by a redirect from {})",
                            display_url(url)
                        ),
                    });
                }
                Err(e) => return Err(e),
            };
            let status = response.status();
            if status.is_redirection() {
                let shown = display(&current);
                if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                    return Err(FetchError::Status {
                        url: shown,
                        code: status.as_u16(),
                    });
                }
                let next = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|loc| current.join(loc).ok())
                    .ok_or_else(|| FetchError::Refused {
                        url: shown.clone(),
                        reason: "it redirects without a valid Location".to_owned(),
                    })?;
                redirects += 1;
                if redirects > self.max_redirects {
                    return Err(FetchError::Refused {
                        url: display_url(url),
                        reason: format!(
                            "more than {} redirects (media.fetch_max_redirects)",
                            self.max_redirects
                        ),
                    });
                }
                current = next;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    url: display(&current),
                    code: status.as_u16(),
                });
            }
            return self.body(response, &current).await;
        }
    }

    /// One request, to a checked target.
    async fn hop(&self, url: &Url) -> Result<reqwest::Response, FetchError> {
        let refused = |reason: String| FetchError::Refused {
            url: display(url),
            reason,
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused(format!(
                "the scheme {:?} is not allowed (only http and https)",
                url.scheme()
            )));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| refused("it has no port".to_owned()))?;
        match url.host() {
            None => return Err(refused("it has no host".to_owned())),
            Some(Host::Ipv4(ip)) => self
                .policy
                .check(None, IpAddr::V4(ip), port)
                .map_err(|why| refused(format!("it points to {why}; {ALLOW_HINT}")))?,
            Some(Host::Ipv6(ip)) => self
                .policy
                .check(None, IpAddr::V6(ip), port)
                .map_err(|why| refused(format!("it points to {why}; {ALLOW_HINT}")))?,
            // Checked after resolution, by the client's resolver.
            Some(Host::Domain(_)) => {}
        }
        let resolver =
            CheckedResolver::new(Arc::clone(&self.policy), Arc::clone(&self.lookup), port);
        // One client per hop: its resolver knows the port the allow rules are matched with.
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .dns_resolver(resolver)
            .connect_timeout(self.timeout)
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate()
            .pool_max_idle_per_host(0)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot build the media fetch client");
                FetchError::Transport {
                    url: display(url),
                    reason: "the gateway could not prepare the request".to_owned(),
                }
            })?;
        client
            .get(url.clone())
            .header(
                header::ACCEPT,
                HeaderValue::from_static(
                    "image/*, video/*, audio/*, application/pdf, text/*;q=0.8, */*;q=0.5",
                ),
            )
            .send()
            .await
            .map_err(|e| request_error(url, &e))
    }

    async fn body(
        &self,
        mut response: reqwest::Response,
        url: &Url,
    ) -> Result<Fetched, FetchError> {
        let too_large = || FetchError::TooLarge {
            url: display(url),
            limit: self.max_bytes,
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes)
        {
            return Err(too_large());
        }
        let label = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut buf = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| request_error(url, &e))? {
            if (buf.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        if buf.is_empty() {
            return Err(FetchError::Empty { url: display(url) });
        }
        let mime = mime::resolve(label.as_deref(), &buf).map_err(|u| FetchError::Unsupported {
            url: display(url),
            mime: u.mime,
        })?;
        Ok(Fetched {
            mime,
            data: buf.freeze(),
        })
    }
}

/// A reqwest failure as a client-safe [`FetchError`]: a refusal by the resolver stays a
/// refusal; everything else is a transport failure without internals.
fn request_error(url: &Url, e: &reqwest::Error) -> FetchError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(refused) = err.downcast_ref::<RefusedTarget>() {
            return FetchError::Refused {
                url: display(url),
                reason: refused.reason.clone(),
            };
        }
        cur = err.source();
    }
    tracing::debug!(error = %causes(e), "media fetch transport error");
    let reason = if e.is_timeout() {
        "the connection timed out"
    } else if e.is_connect() {
        "the connection failed"
    } else if e.is_body() || e.is_decode() {
        "the connection broke while reading the body"
    } else {
        "the request failed"
    };
    FetchError::Transport {
        url: display(url),
        reason: reason.to_owned(),
    }
}

/// The causes of a reqwest error, for logs: its own message (which names the URL, with any
/// credentials in it) is left out.
fn causes(e: &reqwest::Error) -> String {
    let mut out = String::from(if e.is_connect() { "connect" } else { "request" });
    let mut cur = std::error::Error::source(e);
    while let Some(err) = cur {
        out.push_str(": ");
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDRtest-bytes";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_refused() {
        for (addr, why) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.5.4", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "metadata"),
            ("169.254.1.1", "link-local"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.254", "CGNAT"),
            ("0.0.0.0", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fd00:ec2::254", "metadata"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "metadata"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a00:1", "private"),
            ("2002:7f00:1::", "loopback"),
            ("2001:db8::1", "documentation"),
        ] {
            let reason = refused_reason(ip(addr)).unwrap_or_else(|| panic!("{addr} allowed"));
            assert!(reason.contains(why), "{addr}: {reason}");
        }
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(refused_reason(ip(addr)), None, "{addr}");
        }
    }

    fn policy(entries: &[&str]) -> FetchPolicy {
        FetchPolicy::new(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn allow_rules_match_host_address_block_and_port() {
        let p = policy(&[
            "127.0.0.1:8080",
            "10.0.0.0/8",
            "Internal.Example.",
            "[::1]:443",
        ]);
        assert!(p.check(None, ip("127.0.0.1"), 8080).is_ok());
        assert!(p.check(None, ip("::ffff:127.0.0.1"), 8080).is_ok());
        assert!(p.check(None, ip("127.0.0.1"), 8081).is_err());
        assert!(p.check(None, ip("127.0.0.2"), 8080).is_err());
        assert!(p.check(None, ip("10.200.3.4"), 1).is_ok());
        assert!(p.check(None, ip("192.168.0.1"), 80).is_err());
        assert!(
            p.check(Some("internal.example"), ip("192.168.0.1"), 80)
                .is_ok()
        );
        assert!(
            p.check(Some("INTERNAL.example."), ip("192.168.0.1"), 80)
                .is_ok()
        );
        assert!(
            p.check(Some("other.example"), ip("192.168.0.1"), 80)
                .is_err()
        );
        assert!(p.check(None, ip("::1"), 443).is_ok());
        assert!(p.check(None, ip("::1"), 80).is_err());
        // Public addresses need no rule.
        assert!(policy(&[]).check(None, ip("8.8.8.8"), 22).is_ok());
        let why = policy(&[])
            .check(None, ip("169.254.169.254"), 80)
            .unwrap_err();
        assert_eq!(why, "169.254.169.254, a cloud metadata address");
    }

    #[test]
    fn allow_rule_syntax() {
        for ok in [
            "localhost",
            "localhost:80",
            "1.2.3.4",
            "1.2.3.0/24:8443",
            "::1",
            "fd00::/8",
            "[fd00::/8]:443",
            "[::1]",
            "a-b.c_d.example",
        ] {
            assert!(AllowRule::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            " ",
            "http://x",
            "user@host",
            "1.2.3.4/33",
            "::1/129",
            "host:0",
            "host:99999",
            "host:",
            "1.2.3",
            "999.1.1.1",
            "[1.2.3.4]",
            "[::1",
            "[::1]x",
            "-bad.example",
            "bad!.example",
            "a..b",
        ] {
            assert!(AllowRule::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn urls_are_shown_without_credentials_query_or_fragment() {
        assert_eq!(
            display_url("https://user:secret@example.com:8443/a/b.png?sig=abc#f"),
            "https://example.com:8443/a/b.png"
        );
        assert_eq!(display_url("http://[::1]/x"), "http://[::1]/x");
        assert_eq!(display_url("not a url"), "(an invalid URL)");
        let long = format!("https://example.com/{}", "a".repeat(500));
        assert!(display_url(&long).chars().count() <= SHOWN_URL_MAX + 1);
    }

    /// Name resolution from a table.
    struct Table(HashMap<&'static str, Vec<IpAddr>>);

    impl Lookup for Table {
        fn lookup(
            &self,
            host: String,
            port: u16,
        ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> {
            let found = self.0.get(host.as_str()).map(|ips| {
                ips.iter()
                    .map(|ip| SocketAddr::new(*ip, port))
                    .collect::<Vec<_>>()
            });
            Box::pin(async move {
                found.ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")
                })
            })
        }
    }

    fn table() -> Arc<dyn Lookup> {
        Arc::new(Table(HashMap::from([
            ("evil.example", vec![ip("127.0.0.1")]),
            ("evil6.example", vec![ip("::1"), ip("fd00:ec2::254")]),
            ("mixed.example", vec![ip("10.0.0.7"), ip("93.184.216.34")]),
            ("public.example", vec![ip("93.184.216.34")]),
        ])))
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        let open = Arc::new(policy(&[]));
        let r = CheckedResolver::new(Arc::clone(&open), table(), 443);
        let e = r.resolve_checked("evil.example").await.unwrap_err();
        assert_eq!(
            e.reason,
            "evil.example resolves to 127.0.0.1, a loopback address; not allowed unless listed in media.fetch_allow"
        );
        assert!(r.resolve_checked("evil6.example").await.is_err());
        assert_eq!(
            r.resolve_checked("mixed.example").await.unwrap(),
            vec!["93.184.216.34:443".parse::<SocketAddr>().unwrap()]
        );
        assert!(r.resolve_checked("public.example").await.is_ok());
        let e = r.resolve_checked("nowhere.example").await.unwrap_err();
        assert!(e.reason.contains("could not be resolved"), "{}", e.reason);

        // Through reqwest's `Resolve` trait, as the client calls it.
        let name: Name = "evil.example".parse().unwrap();
        let err = Resolve::resolve(&r, name).await.err().unwrap();
        assert!(err.downcast_ref::<RefusedTarget>().is_some());

        let allowed = Arc::new(policy(&["evil.example:443"]));
        let r = CheckedResolver::new(Arc::clone(&allowed), table(), 443);
        assert_eq!(
            r.resolve_checked("evil.example").await.unwrap(),
            vec!["127.0.0.1:443".parse::<SocketAddr>().unwrap()]
        );
        // The rule names port 443 only.
        let r = CheckedResolver::new(allowed, table(), 80);
        assert!(r.resolve_checked("evil.example").await.is_err());
    }

    /// A one-response HTTP server on 127.0.0.1 counting its connections.
    async fn serve_once(response: Vec<u8>) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            }
        });
        (port, hits)
    }

    fn png_response(content_type: &str) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            PNG.len()
        )
        .into_bytes();
        r.extend_from_slice(PNG);
        r
    }

    fn settings(allow: &[&str]) -> MediaSettings {
        let mut s = crate::config::Settings::defaults().media;
        s.fetch_allow = allow.iter().map(|a| (*a).to_owned()).collect();
        s.fetch_timeout = Duration::from_secs(5);
        s
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_before_any_connection() {
        crate::startup::install_crypto_provider();
        let (port, hits) = serve_once(png_response("image/png")).await;
        let fetcher = MediaFetcher::with_lookup(&settings(&[]), table()).unwrap();
        let err = fetcher
            .fetch(&format!(
                "http://user:pw@evil.example:{port}/x.png?token=secret"
            ))
            .await
            .unwrap_err();
        match &err {
            FetchError::Refused { url, reason } => {
                assert_eq!(url, &format!("http://evil.example:{port}/x.png"));
                assert!(reason.contains("127.0.0.1, a loopback address"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!err.to_string().contains("secret") && !err.to_string().contains("pw"));
        assert_eq!(err.status(), 400);
        assert_eq!(hits.load(Ordering::SeqCst), 0, "no connection was made");
    }

    #[tokio::test]
    async fn the_connection_goes_to_the_checked_address() {
        crate::startup::install_crypto_provider();
        let (port, hits) = serve_once(png_response("application/octet-stream")).await;
        // Allowed by name: the client must connect where the resolver said (127.0.0.1), since
        // `evil.example` resolves nowhere else.
        let fetcher = MediaFetcher::with_lookup(&settings(&["evil.example"]), table()).unwrap();
        let fetched = fetcher
            .fetch(&format!("http://evil.example:{port}/x.png"))
            .await
            .unwrap();
        assert_eq!(fetched.mime, "image/png");
        assert_eq!(&fetched.data[..], PNG);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn literal_addresses_and_other_schemes_are_refused_up_front() {
        crate::startup::install_crypto_provider();
        let fetcher = MediaFetcher::new(&settings(&[])).unwrap();
        for url in [
            "http://10.0.0.1/a.png",
            "http://192.168.1.1/a.png",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/a.png",
            "http://[::ffff:127.0.0.1]/a.png",
            "http://[fd00:ec2::254]/latest/meta-data/",
            "http://2130706433/a.png",
            "http://0x7f.1/a.png",
            "http://0/a.png",
            "ftp://example.com/a.png",
            "file:///etc/passwd",
        ] {
            let started = std::time::Instant::now();
            let err = fetcher.fetch(url).await.unwrap_err();
            assert!(matches!(err, FetchError::Refused { .. }), "{url}: {err:?}");
            assert!(started.elapsed() < Duration::from_secs(1), "{url}");
        }
    }
}
