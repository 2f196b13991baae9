//! What the gateway believes about where a request came in: which peers may tell it (trusted
//! proxies), and the scheme and host its own links use.
//!
//! Forwarding headers (`Forwarded`, `X-Forwarded-Host`, `X-Forwarded-Proto`,
//! `X-Forwarded-For`) are client input like any other unless the TCP peer is a proxy the
//! operator named in `http.trusted_proxies`; only then are they read. Nothing here uses
//! actix's `ConnectionInfo`, which believes them from anyone.
//!
//! The base of the gateway's own links ([`link_base`]), when `media.public_base_url` is not
//! set: the host of a trusted forwarding header, else the `Host` header when it is a plain
//! `host[:port]`, else the listening address when it is a concrete one, else none (the link is
//! relative). The scheme is a trusted forwarded `proto` (`http`/`https`), else the
//! connection's own.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use actix_web::HttpRequest;
use actix_web::http::header::{self, HeaderMap};

/// One CIDR block (an address is a block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u32,
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl Net {
    fn parse(text: &str) -> Result<Net, String> {
        let (addr_text, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| {
                format!(
                    "{text:?} is not an IP address or CIDR block (write e.g. \"10.0.0.1\", \
                     \"10.0.0.0/8\", \"fd00::/8\")"
                )
            })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u32>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{p:?} is not a prefix length (0..={max})"))?,
        };
        Ok(Net { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (canonical(ip), canonical(self.addr)) {
            (IpAddr::V4(ip), IpAddr::V4(net)) => {
                // A mapped IPv6 block (`::ffff:10.0.0.0/104`) counts in IPv4 bits.
                let prefix = if self.addr.is_ipv6() {
                    self.prefix.saturating_sub(96)
                } else {
                    self.prefix
                };
                let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
                u32::from(ip) & mask == u32::from(net) & mask
            }
            (IpAddr::V6(ip), IpAddr::V6(net)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix).unwrap_or(0);
                u128::from(ip) & mask == u128::from(net) & mask
            }
            _ => false,
        }
    }
}

/// `http.trusted_proxies`: the peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<Net>,
}

impl TrustedProxies {
    /// Parses the entries; the error names the index of the first bad entry and what is wrong.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, Vec<(usize, String)>> {
        let mut nets = Vec::new();
        let mut errors = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match Net::parse(entry.trim()) {
                Ok(net) => nets.push(net),
                Err(why) => errors.push((i, why)),
            }
        }
        if errors.is_empty() {
            Ok(TrustedProxies { nets })
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// Whether the request's TCP peer is a trusted proxy (no peer, as in unit tests: no).
    pub fn trusts(&self, req: &HttpRequest) -> bool {
        req.peer_addr().is_some_and(|p| self.contains(p.ip()))
    }
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy; then the
/// forwarding chain (`Forwarded: for=`, else `X-Forwarded-For`) is walked from the right,
/// skipping trusted proxies, and the first address that is not one is the client. A value that
/// is not an address (`unknown`, an obfuscated name) stops the walk: the hop before it is the
/// client as far as anyone trusted can tell. `None` without a peer (unit tests).
pub fn client_ip(req: &HttpRequest, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = canonical(req.peer_addr()?.ip());
    Some(client_ip_of(req.headers(), peer, trusted))
}

fn client_ip_of(headers: &HeaderMap, peer: IpAddr, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let chain: Vec<String> = match header_str(headers, "forwarded") {
        Some(value) => value
            .split(',')
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                    .map(|(_, v)| v.trim().trim_matches('"').to_owned())
                    .unwrap_or_default()
            })
            .collect(),
        None => header_str(headers, "x-forwarded-for")
            .map(|v| v.split(',').map(|a| a.trim().to_owned()).collect())
            .unwrap_or_default(),
    };
    let mut client = peer;
    for hop in chain.iter().rev() {
        match parse_hop(hop) {
            Some(ip) if trusted.contains(ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// One address of a forwarding chain: `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80`, `::1`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<IpAddr>().ok())
        .map(canonical)
}

/// Whether `text` is a plain `host[:port]`: a DNS name (letters, digits, `-`, `_`, dots), an
/// IPv4 address or a bracketed IPv6 address, with an optional numeric port. Anything else —
/// a path, user info, spaces, quotes, markdown — is not a host.
pub fn valid_host(text: &str) -> bool {
    if text.is_empty() || text.len() > 260 {
        return false;
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        if inside.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return false,
            },
        }
    } else {
        match text.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(text), None),
        }
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    let host_ok =
        host.is_none_or(|h| crate::media::fetch::valid_host_name(h.strip_suffix('.').unwrap_or(h)));
    port_ok && host_ok
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The first element of a `Forwarded` header (RFC 7239), as `(host, proto)`.
fn forwarded_pairs(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let Some(value) = header_str(headers, "forwarded") else {
        return (None, None);
    };
    let first = value.split(',').next().unwrap_or("");
    let (mut host, mut proto) = (None, None);
    for pair in first.split(';') {
        let Some((name, val)) = pair.split_once('=') else {
            continue;
        };
        let val = val.trim().trim_matches('"').to_owned();
        match name.trim().to_ascii_lowercase().as_str() {
            "host" => host = Some(val),
            "proto" => proto = Some(val),
            _ => {}
        }
    }
    (host, proto)
}

/// The first value of a comma-separated `X-Forwarded-*` header.
fn x_forwarded(headers: &HeaderMap, name: &str) -> Option<String> {
    header_str(headers, name)
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_owned())
}

/// Whether `req` came in over TLS: a trusted forwarded `https`, or the connection's own TLS.
pub fn is_https(req: &HttpRequest, trusted: &TrustedProxies) -> bool {
    origin(req, trusted).scheme == "https"
}

/// The scheme and host a request came in on, as far as the gateway can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// A validated `host[:port]`; `None` when nothing trustworthy names one.
    pub host: Option<String>,
}

impl Origin {
    /// `scheme://host`, or `""` (links relative to the gateway) without a host.
    pub fn base(&self) -> String {
        match &self.host {
            Some(host) => format!("{}://{host}", self.scheme),
            None => String::new(),
        }
    }
}

/// The origin of `req`; forwarding headers count only from a peer in `trusted`.
pub fn origin(req: &HttpRequest, trusted: &TrustedProxies) -> Origin {
    let config = req.app_config();
    origin_of(
        req.headers(),
        req.uri().authority().map(|a| a.as_str()),
        trusted.trusts(req),
        config.secure(),
        config.local_addr(),
    )
}

fn origin_of(
    headers: &HeaderMap,
    authority: Option<&str>,
    trusted_peer: bool,
    secure: bool,
    local: SocketAddr,
) -> Origin {
    let (mut fwd_host, mut fwd_proto) = (None, None);
    if trusted_peer {
        let (host, proto) = forwarded_pairs(headers);
        fwd_host = host.or_else(|| x_forwarded(headers, "x-forwarded-host"));
        fwd_proto = proto.or_else(|| x_forwarded(headers, "x-forwarded-proto"));
    }
    let scheme = match fwd_proto.map(|p| p.to_ascii_lowercase()).as_deref() {
        Some("https") => "https",
        Some("http") => "http",
        _ if secure => "https",
        _ => "http",
    };
    let host = fwd_host
        .filter(|h| valid_host(h))
        .or_else(|| {
            header_str(headers, header::HOST.as_str())
                .or(authority)
                .filter(|h| valid_host(h))
                .map(str::to_owned)
        })
        .or_else(|| (!local.ip().is_unspecified()).then(|| local.to_string()));
    Origin { scheme, host }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const LOCAL: &str = "127.0.0.1:8000";
    const ANY: &str = "0.0.0.0:8000";

    fn base(pairs: &[(&str, &str)], trusted: bool, local: &str) -> String {
        origin_of(
            &headers(pairs),
            None,
            trusted,
            false,
            local.parse().unwrap(),
        )
        .base()
    }

    #[test]
    fn hosts() {
        for ok in [
            "gw.example.com",
            "gw.example.com:8443",
            "localhost",
            "10.0.0.1:80",
            "[::1]",
            "[fd00::1]:443",
            "a_b.example.",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example/x",
            "evil.example:80/x",
            "user@evil.example",
            "a b",
            "evil.example)![x](http://e",
            "[evil.example]",
            "[::1]]",
            "[::1]x",
            "::1",
            "host:",
            "host:99999",
            "host:+80",
            "-bad.example",
            "a..b",
            "host\"",
            "ho*st",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_peers() {
        let spoof = [
            ("host", "gw.example"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
        ];
        assert_eq!(base(&spoof, false, LOCAL), "http://gw.example");
        assert_eq!(base(&spoof, true, LOCAL), "https://evil.example");
        let rfc = [
            ("host", "gw.example"),
            (
                "forwarded",
                "for=1.2.3.4;host=\"pub.example:8443\";proto=https, for=5.6.7.8;host=inner",
            ),
            ("x-forwarded-host", "other.example"),
        ];
        assert_eq!(base(&rfc, false, LOCAL), "http://gw.example");
        assert_eq!(base(&rfc, true, LOCAL), "https://pub.example:8443");
        // Even a trusted proxy cannot inject a path or an odd scheme.
        let odd = [
            ("host", "gw.example"),
            ("x-forwarded-host", "evil.example/x"),
            ("x-forwarded-proto", "javascript"),
        ];
        assert_eq!(base(&odd, true, LOCAL), "http://gw.example");
    }

    #[test]
    fn fallbacks_end_in_a_relative_link() {
        let bad_host = [("host", "x) ![a](http://evil.example")];
        assert_eq!(base(&bad_host, false, LOCAL), "http://127.0.0.1:8000");
        assert_eq!(base(&bad_host, false, ANY), "");
        assert_eq!(base(&[], false, "[::]:80"), "");
        assert_eq!(base(&[], false, "[::1]:80"), "http://[::1]:80");
        let h2 = origin_of(
            &headers(&[]),
            Some("gw.example"),
            false,
            true,
            ANY.parse().unwrap(),
        );
        assert_eq!(h2.base(), "https://gw.example");
    }

    #[test]
    fn the_client_address_comes_from_a_trusted_proxy_only() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".to_owned()]).unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.7, 10.0.0.9")]);
        let proxy: IpAddr = "10.9.9.9".parse().unwrap();
        assert_eq!(
            client_ip_of(&h, proxy, &t),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[("forwarded", "for=\"[2001:db8::1]:4711\";proto=https")]);
        assert_eq!(
            client_ip_of(&h, proxy, &t),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip_of(&headers(&[]), proxy, &t), proxy);
        let req = actix_web::test::TestRequest::default()
            .peer_addr("198.51.100.1:5000".parse().unwrap())
            .insert_header(("x-forwarded-for", "1.1.1.1"))
            .to_http_request();
        assert_eq!(client_ip(&req, &t), Some("198.51.100.1".parse().unwrap()));
        let req = actix_web::test::TestRequest::default()
            .peer_addr("10.1.1.1:5000".parse().unwrap())
            .insert_header(("x-forwarded-for", "1.1.1.1"))
            .to_http_request();
        assert_eq!(client_ip(&req, &t), Some("1.1.1.1".parse().unwrap()));
    }

    #[test]
    fn trusted_proxies_parse_and_match() {
        let list = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let t = TrustedProxies::parse(&list(&["127.0.0.1", "10.0.0.0/8", "fd00::/8"])).unwrap();
        assert!(t.contains("127.0.0.1".parse().unwrap()));
        assert!(t.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!t.contains("127.0.0.2".parse().unwrap()));
        assert!(t.contains("10.200.3.4".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert!(t.contains("fd12::1".parse().unwrap()));
        assert!(!t.contains("fe80::1".parse().unwrap()));
        let all = TrustedProxies::parse(&list(&["0.0.0.0/0"])).unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let errors = TrustedProxies::parse(&list(&["10.0.0.0/33", "proxy.internal", "1.2.3.4"]))
            .unwrap_err();
        assert_eq!(errors.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 1]);
        assert!(errors[0].1.contains("prefix length"), "{errors:?}");
        assert!(TrustedProxies::default().is_empty());
    }

    #[test]
    fn the_client_address_comes_from_forwarding_headers_only_through_trusted_peers() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8".to_owned()]).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let h = |pairs: &[(&str, &str)]| headers(pairs);
        // An untrusted peer: its headers are ignored.
        let xff = h(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(client_ip_of(&xff, ip("8.8.8.8"), &trusted), ip("8.8.8.8"));
        // A trusted peer: the rightmost address that is not a trusted proxy.
        let chain = h(&[("x-forwarded-for", "6.6.6.6, 1.1.1.1, 10.0.0.7")]);
        assert_eq!(
            client_ip_of(&chain, ip("10.0.0.1"), &trusted),
            ip("1.1.1.1")
        );
        let fwd = h(&[(
            "forwarded",
            "for=\"[2001:db8::1]:443\";proto=https, for=10.0.0.9",
        )]);
        assert_eq!(
            client_ip_of(&fwd, ip("10.0.0.1"), &trusted),
            ip("2001:db8::1")
        );
        // Garbage stops the walk at the last trusted hop.
        let junk = h(&[("x-forwarded-for", "1.1.1.1, unknown, 10.0.0.7")]);
        assert_eq!(
            client_ip_of(&junk, ip("10.0.0.1"), &trusted),
            ip("10.0.0.7")
        );
        // Nothing forwarded: the peer.
        assert_eq!(
            client_ip_of(&h(&[]), ip("10.0.0.1"), &trusted),
            ip("10.0.0.1")
        );
        let mapped = h(&[("x-forwarded-for", "::ffff:1.2.3.4")]);
        assert_eq!(
            client_ip_of(&mapped, ip("10.0.0.1"), &trusted),
            ip("1.2.3.4")
        );
    }
}
