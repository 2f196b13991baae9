//! Proxy lists: a file the operator keeps or a subscription body, parsed into proxies.
//!
//! [`parse_list`] takes the raw bytes. A body that is one base64 blob (standard or URL-safe
//! alphabet, padded or not, possibly wrapped over several lines), as subscription services
//! serve it, is decoded first. Then every line is one link; blank lines and `#` comments are
//! skipped and CRLF line ends are fine.
//!
//! - `http://`, `https://`, `socks5://` and `socks5h://` links become [`ProxyUrl`]s the HTTP
//!   client uses directly ([`ParsedList::direct`]).
//! - `vmess://`, `vless://`, `trojan://`, `ss://` and `hysteria2://` (or `hy2://`) links become
//!   [`TunnelNode`]s ([`ParsedList::tunnelled`]): each carries a sing-box outbound object (the
//!   sing-box 1.x outbound schema, without its `tag`), which [`super::singbox`] runs behind a
//!   local SOCKS port. Nothing here speaks those protocols.
//!
//! A line that is not a usable link is reported in [`ParsedList::skipped`] by its number and a
//! short reason. Links carry passwords and UUIDs, so neither a reason, an error nor the `Debug`
//! of a node ever repeats the line or its secrets; only well-known words (a scheme, a cipher,
//! a transport name) are quoted. A body in which not one line is a usable link (an HTML error
//! page, some JSON) is an `Err`, so the caller keeps the list it had.

use std::collections::HashSet;
use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::ProxyUrl;
use crate::telemetry::is_unsafe_char;

/// How many per-line reasons [`ParsedList::skipped`] holds at most; one last entry counts the
/// lines skipped beyond that.
pub const MAX_SKIPPED: usize = 100;

/// Longest node name kept, in characters.
const MAX_NAME_CHARS: usize = 128;

/// How many reasons the error of a list with no usable line quotes.
const REASONS_IN_ERROR: usize = 3;

/// A parsed proxy list.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ParsedList {
    /// Proxies the HTTP client uses as they are, in list order, without duplicates.
    pub direct: Vec<ProxyUrl>,
    /// Nodes that need sing-box, in list order, without duplicates (same [`TunnelNode::id`]).
    pub tunnelled: Vec<TunnelNode>,
    /// One short reason per line that was not used (`line 3: unsupported scheme "socks4"`),
    /// never quoting the line. At most [`MAX_SKIPPED`] of them plus one entry counting the rest.
    pub skipped: Vec<String>,
}

/// A proxy node that sing-box runs for us (vmess, vless, trojan, shadowsocks, hysteria2).
///
/// Its `Debug` shows the protocol, server, port and name only: never a password or UUID.
#[derive(Clone, PartialEq)]
pub struct TunnelNode {
    /// The node's name from the link (`#fragment`, or `ps` of a vmess link), percent-decoded,
    /// without control characters, at most 128 characters; may be empty.
    pub name: String,
    /// The sing-box outbound type: `"vmess"`, `"vless"`, `"trojan"`, `"shadowsocks"` or
    /// `"hysteria2"`.
    pub protocol: &'static str,
    /// The server's host name or IP address (an IPv6 address without brackets).
    pub server: String,
    /// The server's port.
    pub port: u16,
    /// The sing-box outbound object without `tag`. It holds the node's secrets.
    pub outbound: Value,
}

impl TunnelNode {
    /// A stable identifier: the first 12 hex digits of the SHA-256 of the outbound in canonical
    /// JSON (keys sorted, no spaces). The same link gives the same id on every run; the name
    /// plays no part.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(canonical_json(&self.outbound).as_bytes());
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for TunnelNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelNode")
            .field("protocol", &self.protocol)
            .field("server", &self.server)
            .field("port", &self.port)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Parses a proxy list or subscription body (see the module documentation).
///
/// `Err` when the body has lines but not one of them is a usable link: the caller should keep
/// the list it had. An empty body, or one of comments only, is an empty `Ok` list.
pub fn parse_list(body: &[u8]) -> Result<ParsedList, String> {
    let text = decode_body(body);
    let mut list = ParsedList::default();
    let mut seen_direct = HashSet::new();
    let mut seen_nodes = HashSet::new();
    let mut candidates = 0usize;
    let mut reasons = 0usize;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim().trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        candidates += 1;
        match parse_line(line) {
            Ok(Link::Direct(proxy)) => {
                if seen_direct.insert(proxy.expose().to_owned()) {
                    list.direct.push(proxy);
                }
            }
            Ok(Link::Tunnel(node)) => {
                if seen_nodes.insert(node.id()) {
                    list.tunnelled.push(node);
                }
            }
            Err(reason) => {
                reasons += 1;
                if reasons <= MAX_SKIPPED {
                    list.skipped.push(format!("line {}: {reason}", index + 1));
                }
            }
        }
    }
    if reasons > MAX_SKIPPED {
        list.skipped
            .push(format!("{} more lines skipped", reasons - MAX_SKIPPED));
    }
    if candidates > 0 && list.direct.is_empty() && list.tunnelled.is_empty() {
        let first: Vec<&str> = list
            .skipped
            .iter()
            .take(REASONS_IN_ERROR)
            .map(String::as_str)
            .collect();
        return Err(format!(
            "not a proxy list: none of its {candidates} lines is a usable proxy link ({})",
            first.join("; ")
        ));
    }
    Ok(list)
}

enum Link {
    Direct(ProxyUrl),
    Tunnel(TunnelNode),
}

/// The body as text: decoded first when the whole of it is one base64 blob of UTF-8 text.
fn decode_body(body: &[u8]) -> String {
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if let Some(decoded) = decode_base64(&compact)
        && let Ok(text) = String::from_utf8(decoded)
    {
        return text;
    }
    String::from_utf8_lossy(body).into_owned()
}

/// Standard alphabet, padding optional, lenient about the unused bits of the last character.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes base64 in the standard or URL-safe alphabet, padded or not. `None` when `input` is
/// empty or not base64.
fn decode_base64(input: &[u8]) -> Option<Vec<u8>> {
    let unpadded = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="));
    let unpadded = unpadded.unwrap_or(input);
    if unpadded.is_empty() {
        return None;
    }
    let mut normal = Vec::with_capacity(unpadded.len());
    for &b in unpadded {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' => normal.push(b),
            b'-' => normal.push(b'+'),
            b'_' => normal.push(b'/'),
            _ => return None,
        }
    }
    LENIENT_BASE64.decode(&normal).ok()
}

fn parse_line(line: &str) -> Result<Link, String> {
    let Some((scheme, rest)) = line.split_once("://") else {
        return Err("not a link (expected scheme://…)".to_owned());
    };
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "http" | "https" | "socks5" | "socks5h" => {
            // A subscription may name a plain proxy with a `#fragment`; the name is dropped.
            let url = line.split_once('#').map_or(line, |(url, _)| url);
            ProxyUrl::parse(url).map(Link::Direct)
        }
        "vmess" => vmess(rest).map(Link::Tunnel),
        "vless" => vless(rest).map(Link::Tunnel),
        "trojan" => trojan(rest).map(Link::Tunnel),
        "ss" => shadowsocks(rest).map(Link::Tunnel),
        "hysteria2" | "hy2" => hysteria2(rest).map(Link::Tunnel),
        other if is_word(other) => Err(format!("unsupported scheme \"{other}\"")),
        _ => Err("unsupported scheme".to_owned()),
    }
}

/// Whether `s` is a short plain word that may be quoted in a reason (a scheme, a cipher name):
/// ASCII letters, digits, `+`, `-`, `.`, `_`, at most 32 characters.
fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_'))
}

// --- Pieces of a link ---------------------------------------------------------------------

/// `userinfo@host:port/path?query#fragment`, split without interpreting the userinfo.
struct Parts {
    /// Still percent-encoded.
    userinfo: Option<String>,
    host: String,
    port: Option<String>,
    /// Percent-decoded.
    query: Vec<(String, String)>,
    /// Still percent-encoded.
    fragment: Option<String>,
}

impl Parts {
    /// The link's transport from its query (`type`, `path`, `host`, `serviceName`).
    fn transport(&self) -> Result<Option<Value>, String> {
        transport(
            self.get("type"),
            self.get("path"),
            self.get("host"),
            self.first(&["serviceName", "servicename"]),
        )
    }

    /// The first non-empty value of `key` in the query, or `""`.
    fn get(&self, key: &str) -> &str {
        self.query
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map_or("", |(_, v)| v.as_str())
    }

    /// The first non-empty value among `keys`, or `""`.
    fn first(&self, keys: &[&str]) -> &str {
        keys.iter()
            .map(|k| self.get(k))
            .find(|v| !v.is_empty())
            .unwrap_or("")
    }

    fn flag(&self, keys: &[&str]) -> bool {
        matches!(
            self.first(keys).to_ascii_lowercase().as_str(),
            "1" | "true" | "yes"
        )
    }

    /// The node of this link, of `protocol`, on `port`, with `outbound`'s settings.
    fn node(&self, protocol: &'static str, port: u16, outbound: Map<String, Value>) -> TunnelNode {
        node(self.name(), protocol, self.host.clone(), port, outbound)
    }

    fn name(&self) -> String {
        clean_name(&percent_decode(self.fragment.as_deref().unwrap_or("")))
    }

    fn port(&self, scheme: &str) -> Result<u16, String> {
        match &self.port {
            Some(p) => parse_port(p),
            None => Err(format!("{scheme} link has no port")),
        }
    }
}

fn split_link(rest: &str, scheme: &str) -> Result<Parts, String> {
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, q),
        None => (rest, ""),
    };
    let (userinfo, rest) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    let (host, port) = split_host_port(authority)
        .ok_or_else(|| format!("{scheme} link has no valid host and port"))?;
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(Parts {
        userinfo: userinfo.map(str::to_owned),
        host,
        port: port.map(str::to_owned),
        query,
        fragment: fragment.map(str::to_owned),
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`. `None` when the host is not a valid server name.
fn split_host_port(authority: &str) -> Option<(String, Option<&str>)> {
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) = inner.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    valid_server(host).then(|| (host.to_owned(), port))
}

/// A host name or IP address sing-box can dial: not empty, no spaces, controls or URL syntax.
fn valid_server(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && !host.chars().any(|c| {
            c.is_whitespace()
                || is_unsafe_char(c)
                || matches!(
                    c,
                    '/' | '@' | '?' | '#' | '[' | ']' | '"' | '\'' | '\\' | '<' | '>'
                )
        })
}

/// The server field of a vmess JSON link: an IPv6 address may come with or without brackets.
fn json_server(raw: &str) -> Option<String> {
    let host = raw
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(raw);
    valid_server(host).then(|| host.to_owned())
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.trim().parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err("invalid port".to_owned()),
    }
}

/// `%XX` decoded (an invalid escape stays as it is); `+` is left alone.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A node name fit for logs and listings: no control or bidi characters, trimmed, capped.
fn clean_name(raw: &str) -> String {
    raw.chars()
        .filter(|&c| !is_unsafe_char(c))
        .collect::<String>()
        .trim()
        .chars()
        .take(MAX_NAME_CHARS)
        .collect()
}

fn node(
    name: String,
    protocol: &'static str,
    server: String,
    port: u16,
    mut outbound: Map<String, Value>,
) -> TunnelNode {
    outbound.insert("type".to_owned(), json!(protocol));
    outbound.insert("server".to_owned(), json!(server));
    outbound.insert("server_port".to_owned(), json!(port));
    TunnelNode {
        name,
        protocol,
        server,
        port,
        outbound: Value::Object(outbound),
    }
}

// --- TLS and transports (vmess, vless, trojan) --------------------------------------------

/// Puts a node's TLS and transport settings, when it has them, into its outbound.
fn add_tls_and_transport(
    outbound: &mut Map<String, Value>,
    tls: Option<&Tls>,
    transport: Option<Value>,
) {
    if let Some(tls) = tls {
        outbound.insert("tls".to_owned(), tls.to_json());
    }
    if let Some(transport) = transport {
        outbound.insert("transport".to_owned(), transport);
    }
}

/// uTLS fingerprints sing-box knows.
const FINGERPRINTS: &[&str] = &[
    "chrome",
    "firefox",
    "edge",
    "safari",
    "360",
    "qq",
    "ios",
    "android",
    "random",
    "randomized",
];

#[derive(Default)]
struct Tls {
    server_name: String,
    insecure: bool,
    alpn: String,
    fingerprint: String,
    /// REALITY public key and short id.
    reality: Option<(String, String)>,
}

impl Tls {
    fn to_json(&self) -> Value {
        let mut tls = Map::new();
        tls.insert("enabled".to_owned(), json!(true));
        if !self.server_name.is_empty() {
            tls.insert("server_name".to_owned(), json!(self.server_name));
        }
        if self.insecure {
            tls.insert("insecure".to_owned(), json!(true));
        }
        let alpn: Vec<&str> = self
            .alpn
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        if !alpn.is_empty() {
            tls.insert("alpn".to_owned(), json!(alpn));
        }
        let fingerprint = self.fingerprint.to_ascii_lowercase();
        let fingerprint = if FINGERPRINTS.contains(&fingerprint.as_str()) {
            Some(fingerprint)
        } else if self.reality.is_some() {
            // sing-box's REALITY client needs uTLS.
            Some("chrome".to_owned())
        } else {
            None
        };
        if let Some(fingerprint) = fingerprint {
            tls.insert(
                "utls".to_owned(),
                json!({"enabled": true, "fingerprint": fingerprint}),
            );
        }
        if let Some((public_key, short_id)) = &self.reality {
            let mut reality = Map::new();
            reality.insert("enabled".to_owned(), json!(true));
            reality.insert("public_key".to_owned(), json!(public_key));
            if !short_id.is_empty() {
                reality.insert("short_id".to_owned(), json!(short_id));
            }
            tls.insert("reality".to_owned(), Value::Object(reality));
        }
        Value::Object(tls)
    }
}

/// The TLS settings of a vless or trojan link from its query (`security`, `sni`, `fp`, `alpn`,
/// `pbk`, `sid`, `allowInsecure`). `None` when the link has no TLS.
fn query_tls(parts: &Parts, tls_by_default: bool) -> Result<Option<Tls>, String> {
    let security = parts.get("security").to_ascii_lowercase();
    let reality = match security.as_str() {
        "" if tls_by_default => false,
        "" | "none" => return Ok(None),
        "tls" | "xtls" => false,
        "reality" => true,
        _ => return Err("unknown security setting".to_owned()),
    };
    let mut tls = Tls {
        server_name: parts.first(&["sni", "peer", "host"]).to_owned(),
        insecure: parts.flag(&["allowInsecure", "insecure"]),
        alpn: parts.get("alpn").to_owned(),
        fingerprint: parts.get("fp").to_owned(),
        reality: None,
    };
    if reality {
        let public_key = parts.get("pbk");
        if public_key.is_empty() {
            return Err("REALITY link has no public key (pbk)".to_owned());
        }
        tls.reality = Some((public_key.to_owned(), parts.get("sid").to_owned()));
    }
    Ok(Some(tls))
}

/// The sing-box transport for a v2ray `net`/`type`; `None` for plain TCP.
fn transport(
    net: &str,
    path: &str,
    host: &str,
    service_name: &str,
) -> Result<Option<Value>, String> {
    let net = net.to_ascii_lowercase();
    let value = match net.as_str() {
        "" | "tcp" | "raw" | "none" => return Ok(None),
        "ws" | "websocket" => {
            let mut ws = Map::new();
            ws.insert("type".to_owned(), json!("ws"));
            let (path, early_data) = split_early_data(path);
            if !path.is_empty() {
                ws.insert("path".to_owned(), json!(path));
            }
            if !host.is_empty() {
                ws.insert("headers".to_owned(), json!({ "Host": host }));
            }
            if let Some(max) = early_data {
                ws.insert("max_early_data".to_owned(), json!(max));
                ws.insert(
                    "early_data_header_name".to_owned(),
                    json!("Sec-WebSocket-Protocol"),
                );
            }
            Value::Object(ws)
        }
        "grpc" | "gun" => {
            let mut grpc = Map::new();
            grpc.insert("type".to_owned(), json!("grpc"));
            if !service_name.is_empty() {
                grpc.insert("service_name".to_owned(), json!(service_name));
            }
            Value::Object(grpc)
        }
        "h2" | "http" => {
            let mut http = Map::new();
            http.insert("type".to_owned(), json!("http"));
            let hosts: Vec<&str> = host
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect();
            if !hosts.is_empty() {
                http.insert("host".to_owned(), json!(hosts));
            }
            if !path.is_empty() {
                http.insert("path".to_owned(), json!(path));
            }
            Value::Object(http)
        }
        "httpupgrade" => {
            let mut upgrade = Map::new();
            upgrade.insert("type".to_owned(), json!("httpupgrade"));
            if !host.is_empty() {
                upgrade.insert("host".to_owned(), json!(host));
            }
            if !path.is_empty() {
                upgrade.insert("path".to_owned(), json!(path));
            }
            Value::Object(upgrade)
        }
        "quic" => json!({"type": "quic"}),
        "kcp" | "mkcp" | "xhttp" | "splithttp" | "domainsocket" | "ds" => {
            return Err(format!("transport \"{net}\" is not supported by sing-box"));
        }
        _ => return Err("unknown transport".to_owned()),
    };
    Ok(Some(value))
}

/// A WebSocket path with Xray's `?ed=N` early-data parameter taken out.
fn split_early_data(path: &str) -> (String, Option<u32>) {
    let Some((base, query)) = path.split_once('?') else {
        return (path.to_owned(), None);
    };
    let mut early_data = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("ed=").map(str::parse::<u32>) {
            Some(Ok(n)) => early_data = Some(n),
            _ => kept.push(pair),
        }
    }
    if kept.is_empty() {
        (base.to_owned(), early_data)
    } else {
        (format!("{base}?{}", kept.join("&")), early_data)
    }
}

// --- The protocols -------------------------------------------------------------------------

/// VMess securities sing-box accepts.
const VMESS_SECURITIES: &[&str] = &[
    "auto",
    "none",
    "zero",
    "aes-128-gcm",
    "chacha20-poly1305",
    "aes-128-ctr",
];

/// `vmess://` + base64 of v2rayN's JSON (`ps`, `add`, `port`, `id`, `aid`, `scy`, `net`, `host`,
/// `path`, `tls`, `sni`, `alpn`, `fp`).
fn vmess(rest: &str) -> Result<TunnelNode, String> {
    const NOT_JSON: &str = "vmess link is not valid base64 JSON";
    let (encoded, fragment) = match rest.split_once('#') {
        Some((e, f)) => (e, Some(f)),
        None => (rest, None),
    };
    let decoded = decode_base64(encoded.trim().as_bytes()).ok_or(NOT_JSON)?;
    let value: Value = serde_json::from_slice(&decoded).map_err(|_| NOT_JSON)?;
    let fields = value.as_object().ok_or(NOT_JSON)?;
    let field = |key: &str| -> String {
        match fields.get(key) {
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            _ => String::new(),
        }
    };

    let server = json_server(&field("add")).ok_or("vmess link has no valid server address")?;
    let port = parse_port(&field("port"))?;
    let uuid = field("id");
    if uuid.is_empty() {
        return Err("vmess link has no id".to_owned());
    }
    let alter_id = match field("aid").as_str() {
        "" => 0,
        aid => aid
            .parse::<u32>()
            .map_err(|_| "vmess alter id is not a number".to_owned())?,
    };
    let security = match field("scy").to_ascii_lowercase().as_str() {
        "" => "auto".to_owned(),
        s if VMESS_SECURITIES.contains(&s) => s.to_owned(),
        _ => return Err("vmess security is not supported by sing-box".to_owned()),
    };
    let host = field("host");
    let path = field("path");
    let net = field("net");
    let transport = transport(&net, &path, &host, &path)?;
    let tls_enabled = !matches!(
        field("tls").to_ascii_lowercase().as_str(),
        "" | "none" | "0" | "false"
    );

    let mut outbound = Map::new();
    outbound.insert("uuid".to_owned(), json!(uuid));
    outbound.insert("security".to_owned(), json!(security));
    outbound.insert("alter_id".to_owned(), json!(alter_id));
    if tls_enabled {
        let sni = field("sni");
        let tls = Tls {
            server_name: if sni.is_empty() { host.clone() } else { sni },
            alpn: field("alpn"),
            fingerprint: field("fp"),
            insecure: matches!(field("allowInsecure").as_str(), "1" | "true"),
            reality: None,
        };
        outbound.insert("tls".to_owned(), tls.to_json());
    }
    if let Some(transport) = transport {
        outbound.insert("transport".to_owned(), transport);
    }
    let ps = field("ps");
    let name = if ps.is_empty() {
        clean_name(&percent_decode(fragment.unwrap_or("")))
    } else {
        clean_name(&ps)
    };
    Ok(node(name, "vmess", server, port, outbound))
}

/// `vless://uuid@host:port?type&security&flow&path&host&sni&fp&pbk&sid&serviceName#name`.
fn vless(rest: &str) -> Result<TunnelNode, String> {
    let parts = split_link(rest, "vless")?;
    let uuid = percent_decode(parts.userinfo.as_deref().unwrap_or(""));
    if uuid.is_empty() {
        return Err("vless link has no UUID".to_owned());
    }
    let port = parts.port("vless")?;
    match parts.get("encryption").to_ascii_lowercase().as_str() {
        "" | "none" => {}
        _ => return Err("vless encryption is not supported by sing-box".to_owned()),
    }
    let flow = parts.get("flow").to_ascii_lowercase();
    match flow.as_str() {
        "" | "xtls-rprx-vision" => {}
        f if f.starts_with("xtls-rprx-") && is_word(f) => {
            return Err(format!("vless flow \"{f}\" is not supported by sing-box"));
        }
        _ => return Err("unknown vless flow".to_owned()),
    }
    let tls = query_tls(&parts, false)?;
    let transport = parts.transport()?;

    let mut outbound = Map::new();
    outbound.insert("uuid".to_owned(), json!(uuid));
    if !flow.is_empty() {
        outbound.insert("flow".to_owned(), json!(flow));
    }
    add_tls_and_transport(&mut outbound, tls.as_ref(), transport);
    Ok(parts.node("vless", port, outbound))
}

/// `trojan://password@host:port?sni&type&path&host#name` (TLS unless `security=none`).
fn trojan(rest: &str) -> Result<TunnelNode, String> {
    let parts = split_link(rest, "trojan")?;
    let password = percent_decode(parts.userinfo.as_deref().unwrap_or(""));
    if password.is_empty() {
        return Err("trojan link has no password".to_owned());
    }
    let port = parts.port("trojan")?;
    let tls = query_tls(&parts, true)?;
    let transport = parts.transport()?;

    let mut outbound = Map::new();
    outbound.insert("password".to_owned(), json!(password));
    add_tls_and_transport(&mut outbound, tls.as_ref(), transport);
    Ok(parts.node("trojan", port, outbound))
}

/// AEAD (and 2022) ciphers sing-box supports; `none`/`plain` map to sing-box's `none`.
const SS_CIPHERS: &[&str] = &[
    "aes-128-gcm",
    "aes-256-gcm",
    "chacha20-poly1305",
    "chacha20-ietf-poly1305",
    "xchacha20-poly1305",
    "xchacha20-ietf-poly1305",
    "2022-blake3-aes-128-gcm",
    "2022-blake3-aes-256-gcm",
    "2022-blake3-chacha20-poly1305",
    "none",
];

/// Stream ciphers of old links, named in the reason when rejected.
const SS_OLD_CIPHERS: &[&str] = &[
    "rc4",
    "rc4-md5",
    "aes-128-cfb",
    "aes-192-cfb",
    "aes-256-cfb",
    "aes-128-ctr",
    "aes-192-ctr",
    "aes-256-ctr",
    "aes-192-gcm",
    "bf-cfb",
    "camellia-128-cfb",
    "camellia-192-cfb",
    "camellia-256-cfb",
    "cast5-cfb",
    "des-cfb",
    "idea-cfb",
    "rc2-cfb",
    "seed-cfb",
    "salsa20",
    "chacha20",
    "table",
];

/// `ss://` in its three shapes: SIP002 `base64(method:password)@host:port`, plain
/// `method:password@host:port` (percent-encoded), and the legacy
/// `base64(method:password@host:port)`; each with an optional `?plugin=` and `#name`.
fn shadowsocks(rest: &str) -> Result<TunnelNode, String> {
    let before_fragment = rest.split_once('#').map_or(rest, |(r, _)| r);
    let before_query = before_fragment
        .split_once('?')
        .map_or(before_fragment, |(r, _)| r);
    let (credentials, parts) = if before_query.contains('@') {
        let parts = split_link(rest, "shadowsocks")?;
        let userinfo = parts.userinfo.as_deref().unwrap_or("");
        let credentials = if userinfo.contains(':') || userinfo.to_ascii_lowercase().contains("%3a")
        {
            percent_decode(userinfo)
        } else {
            decode_base64(percent_decode(userinfo).as_bytes())
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or("shadowsocks credentials are not valid base64")?
        };
        (credentials, parts)
    } else {
        // Legacy: `method:password@host:port` all in base64, then the query and fragment.
        let encoded = percent_decode(before_query.trim_end_matches('/'));
        let decoded = decode_base64(encoded.as_bytes())
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or("shadowsocks link is neither SIP002 nor base64")?;
        let (credentials, host_port) = decoded
            .rsplit_once('@')
            .ok_or("shadowsocks link has no method:password")?;
        let tail = rest.get(before_query.len()..).unwrap_or("");
        let parts = split_link(&format!("{host_port}{tail}"), "shadowsocks")?;
        (credentials.to_owned(), parts)
    };
    let (method, password) = credentials
        .split_once(':')
        .ok_or("shadowsocks link has no method:password")?;
    let method = match method.trim().to_ascii_lowercase().as_str() {
        "chacha20-ietf" => "chacha20-ietf-poly1305".to_owned(),
        "plain" => "none".to_owned(),
        m if SS_CIPHERS.contains(&m) => m.to_owned(),
        m if SS_OLD_CIPHERS.contains(&m) => {
            return Err(format!(
                "shadowsocks cipher \"{m}\" is not supported (not AEAD)"
            ));
        }
        _ => return Err("unknown shadowsocks cipher".to_owned()),
    };
    let port = parts.port("shadowsocks")?;

    let mut outbound = Map::new();
    outbound.insert("method".to_owned(), json!(method));
    outbound.insert("password".to_owned(), json!(password));
    let plugin = parts.get("plugin");
    if !plugin.is_empty() {
        let (name, options) = plugin.split_once(';').unwrap_or((plugin, ""));
        let name = match name.trim() {
            "obfs-local" | "simple-obfs" => "obfs-local",
            "v2ray-plugin" => "v2ray-plugin",
            n if is_word(n) => {
                return Err(format!(
                    "shadowsocks plugin \"{n}\" is not supported by sing-box"
                ));
            }
            _ => return Err("unknown shadowsocks plugin".to_owned()),
        };
        outbound.insert("plugin".to_owned(), json!(name));
        if !options.is_empty() {
            outbound.insert("plugin_opts".to_owned(), json!(options));
        }
    }
    Ok(parts.node("shadowsocks", port, outbound))
}

/// `hysteria2://auth@host[:port]?sni&obfs&obfs-password&insecure#name` (also `hy2://`); the
/// port defaults to 443.
fn hysteria2(rest: &str) -> Result<TunnelNode, String> {
    let parts = split_link(rest, "hysteria2")?;
    let port = match parts.port.as_deref() {
        None | Some("") => 443,
        Some(p) if p.contains([',', '-']) => {
            return Err("hysteria2 port hopping is not supported".to_owned());
        }
        Some(p) => parse_port(p)?,
    };
    let password = percent_decode(parts.userinfo.as_deref().unwrap_or(""));

    let mut outbound = Map::new();
    if !password.is_empty() {
        outbound.insert("password".to_owned(), json!(password));
    }
    match parts.get("obfs").to_ascii_lowercase().as_str() {
        "" | "none" => {}
        "salamander" => {
            let obfs_password = parts.get("obfs-password");
            if obfs_password.is_empty() {
                return Err("hysteria2 salamander obfuscation has no password".to_owned());
            }
            outbound.insert(
                "obfs".to_owned(),
                json!({"type": "salamander", "password": obfs_password}),
            );
        }
        _ => return Err("unknown hysteria2 obfuscation".to_owned()),
    }
    let tls = Tls {
        server_name: parts.get("sni").to_owned(),
        insecure: parts.flag(&["insecure", "allowInsecure"]),
        alpn: parts.get("alpn").to_owned(),
        fingerprint: String::new(),
        reality: None,
    };
    outbound.insert("tls".to_owned(), tls.to_json());
    Ok(parts.node("hysteria2", port, outbound))
}

/// JSON with object keys sorted and no whitespace, whatever order the map keeps.
fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    const UUID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";

    fn one(line: &str) -> TunnelNode {
        let list = parse_list(line.as_bytes()).unwrap();
        assert_eq!(list.skipped, Vec::<String>::new(), "{line}");
        assert_eq!(list.tunnelled.len(), 1, "{line}");
        list.tunnelled.into_iter().next().unwrap()
    }

    fn reason(line: &str) -> String {
        // A good line beside it, so the list is not rejected as garbage.
        let body = format!("http://proxy:3128\n{line}\n");
        let list = parse_list(body.as_bytes()).unwrap();
        assert!(list.tunnelled.is_empty(), "{line}");
        assert_eq!(list.skipped.len(), 1, "{line}");
        list.skipped.into_iter().next().unwrap()
    }

    fn vmess_link(json: &Value) -> String {
        format!("vmess://{}", STANDARD.encode(json.to_string()))
    }

    #[test]
    fn vmess_ws_tls() {
        let node = one(&vmess_link(&json!({
            "v": "2", "ps": "HK %F0%9F 01", "add": "hk.example.com", "port": "443",
            "id": UUID, "aid": "0", "net": "ws", "type": "none", "host": "cdn.example.com",
            "path": "/ray?ed=2048", "tls": "tls", "sni": ""
        })));
        assert_eq!(node.protocol, "vmess");
        assert_eq!(node.server, "hk.example.com");
        assert_eq!(node.port, 443);
        assert_eq!(node.name, "HK %F0%9F 01", "ps is taken as it is");
        assert_eq!(
            node.outbound,
            json!({
                "type": "vmess", "server": "hk.example.com", "server_port": 443,
                "uuid": UUID, "security": "auto", "alter_id": 0,
                "tls": {"enabled": true, "server_name": "cdn.example.com"},
                "transport": {"type": "ws", "path": "/ray", "headers": {"Host": "cdn.example.com"},
                              "max_early_data": 2048,
                              "early_data_header_name": "Sec-WebSocket-Protocol"}
            })
        );
    }

    #[test]
    fn vmess_variants() {
        // Port and aid as numbers, no TLS ("none"), plain TCP, unpadded URL-safe base64, the
        // name from the fragment when ps is empty.
        let json = json!({"add": "1.2.3.4", "port": 8080, "id": UUID, "aid": 64,
                          "scy": "aes-128-gcm", "tls": "none", "ps": ""});
        let link = format!(
            "vmess://{}#N%C3%BC",
            URL_SAFE_NO_PAD.encode(json.to_string())
        );
        let node = one(&link);
        assert_eq!(node.name, "Nü");
        assert_eq!(
            node.outbound,
            json!({"type": "vmess", "server": "1.2.3.4", "server_port": 8080, "uuid": UUID,
                   "security": "aes-128-gcm", "alter_id": 64})
        );
        // grpc: the service name is in `path`; TLS true without sni nor host: no server_name.
        let node = one(&vmess_link(
            &json!({"add": "[2001:db8::1]", "port": "443", "id": UUID,
            "net": "grpc", "path": "svc", "tls": true, "fp": "firefox", "alpn": "h2,http/1.1"}),
        ));
        assert_eq!(node.server, "2001:db8::1");
        assert_eq!(
            node.outbound["transport"],
            json!({"type": "grpc", "service_name": "svc"})
        );
        assert_eq!(
            node.outbound["tls"],
            json!({"enabled": true, "alpn": ["h2", "http/1.1"],
                   "utls": {"enabled": true, "fingerprint": "firefox"}})
        );
        // Falsy tls values.
        for tls in ["", "0", "false", "NONE"] {
            let node = one(&vmess_link(
                &json!({"add": "h", "port": "1", "id": UUID, "tls": tls}),
            ));
            assert!(node.outbound.get("tls").is_none(), "{tls}");
        }
        // h2 and httpupgrade.
        let node = one(&vmess_link(
            &json!({"add": "h", "port": "1", "id": UUID, "net": "h2",
            "host": "a.example, b.example", "path": "/p"}),
        ));
        assert_eq!(
            node.outbound["transport"],
            json!({"type": "http", "host": ["a.example", "b.example"], "path": "/p"})
        );
        let node = one(&vmess_link(&json!({"add": "h", "port": "1", "id": UUID,
            "net": "httpupgrade", "host": "u.example", "path": "/up"})));
        assert_eq!(
            node.outbound["transport"],
            json!({"type": "httpupgrade", "host": "u.example", "path": "/up"})
        );
    }

    #[test]
    fn vmess_rejections() {
        assert_eq!(
            reason("vmess://not-base64-hunter2!"),
            "line 2: vmess link is not valid base64 JSON"
        );
        assert_eq!(
            reason(&format!("vmess://{}", STANDARD.encode("[\"hunter2\"]"))),
            "line 2: vmess link is not valid base64 JSON"
        );
        let bad = |fields: Value| reason(&vmess_link(&fields));
        assert_eq!(
            bad(json!({"add": "h", "port": "1", "id": "hunter2", "net": "kcp"})),
            "line 2: transport \"kcp\" is not supported by sing-box"
        );
        assert_eq!(
            bad(json!({"add": "h", "port": "1", "id": "hunter2", "net": "hunter2-net"})),
            "line 2: unknown transport"
        );
        assert_eq!(
            bad(json!({"add": "h", "port": "1", "id": "hunter2", "scy": "hunter2"})),
            "line 2: vmess security is not supported by sing-box"
        );
        assert_eq!(
            bad(json!({"add": "h", "port": "70000", "id": UUID})),
            "line 2: invalid port"
        );
        assert_eq!(
            bad(json!({"add": "", "port": "1", "id": UUID})),
            "line 2: vmess link has no valid server address"
        );
        assert_eq!(
            bad(json!({"add": "h", "port": "1"})),
            "line 2: vmess link has no id"
        );
    }

    #[test]
    fn vless_reality_and_transports() {
        let node = one(&format!(
            "vless://{UUID}@1.2.3.4:443?encryption=none&flow=xtls-rprx-vision&security=reality\
             &sni=www.microsoft.com&fp=chrome&pbk=SbVKOEMjK0sIlbwg4akyBg5mL5KZwwB-ed4eEE7YnRc\
             &sid=6ba85179e30d4fc2&type=tcp&headerType=none#JP%20Tokyo"
        ));
        assert_eq!(node.protocol, "vless");
        assert_eq!(node.name, "JP Tokyo");
        assert_eq!(
            node.outbound,
            json!({
                "type": "vless", "server": "1.2.3.4", "server_port": 443, "uuid": UUID,
                "flow": "xtls-rprx-vision",
                "tls": {"enabled": true, "server_name": "www.microsoft.com",
                        "utls": {"enabled": true, "fingerprint": "chrome"},
                        "reality": {"enabled": true,
                                    "public_key": "SbVKOEMjK0sIlbwg4akyBg5mL5KZwwB-ed4eEE7YnRc",
                                    "short_id": "6ba85179e30d4fc2"}}
            })
        );
        // grpc over TLS; sni falls back to the host parameter; IPv6 in brackets; a path after
        // the port.
        let node = one(&format!(
            "vless://{UUID}@[2001:db8::2]:8443/?type=grpc&serviceName=my%20svc&security=tls\
             &host=front.example&allowInsecure=1"
        ));
        assert_eq!(node.server, "2001:db8::2");
        assert_eq!(node.port, 8443);
        assert_eq!(node.name, "");
        assert_eq!(
            node.outbound,
            json!({
                "type": "vless", "server": "2001:db8::2", "server_port": 8443, "uuid": UUID,
                "tls": {"enabled": true, "server_name": "front.example", "insecure": true},
                "transport": {"type": "grpc", "service_name": "my svc"}
            })
        );
        // ws without TLS.
        let node = one(&format!(
            "vless://{UUID}@v.example:80?type=ws&path=%2Fws%3Fed%3D2560&host=v.example"
        ));
        assert_eq!(node.outbound.get("tls"), None);
        assert_eq!(
            node.outbound["transport"],
            json!({"type": "ws", "path": "/ws", "headers": {"Host": "v.example"},
                   "max_early_data": 2560, "early_data_header_name": "Sec-WebSocket-Protocol"})
        );
        // Rejections.
        assert_eq!(
            reason("vless://hunter2@h:1?flow=xtls-rprx-direct"),
            "line 2: vless flow \"xtls-rprx-direct\" is not supported by sing-box"
        );
        assert_eq!(
            reason("vless://hunter2@h:1?security=reality"),
            "line 2: REALITY link has no public key (pbk)"
        );
        assert_eq!(
            reason("vless://hunter2@h:1?type=xhttp"),
            "line 2: transport \"xhttp\" is not supported by sing-box"
        );
        assert_eq!(reason("vless://@h:1"), "line 2: vless link has no UUID");
        assert_eq!(
            reason("vless://hunter2@h"),
            "line 2: vless link has no port"
        );
        assert_eq!(
            reason("vless://hunter2@h:1?encryption=mlkem768x25519plus"),
            "line 2: vless encryption is not supported by sing-box"
        );
        assert_eq!(
            reason("vless://hunter2@:1"),
            "line 2: vless link has no valid host and port"
        );
    }

    #[test]
    fn trojan_links() {
        let node = one(
            "trojan://p%40ss%3Aw0rd@t.example.com:443?sni=sni.example.com&type=ws&path=%2Fws\
             &host=t.example.com#US%20West",
        );
        assert_eq!(node.protocol, "trojan");
        assert_eq!(node.name, "US West");
        assert_eq!(
            node.outbound,
            json!({
                "type": "trojan", "server": "t.example.com", "server_port": 443,
                "password": "p@ss:w0rd",
                "tls": {"enabled": true, "server_name": "sni.example.com"},
                "transport": {"type": "ws", "path": "/ws", "headers": {"Host": "t.example.com"}}
            })
        );
        // TLS by default (server name left to sing-box), off with security=none.
        let node = one("trojan://pw@t.example.com:443");
        assert_eq!(node.outbound["tls"], json!({"enabled": true}));
        let node = one("trojan://pw@t.example.com:443?security=none");
        assert_eq!(node.outbound.get("tls"), None);
        assert_eq!(
            reason("trojan://@t.example.com:443"),
            "line 2: trojan link has no password"
        );
    }

    #[test]
    fn shadowsocks_links() {
        // SIP002 with URL-safe base64 credentials.
        let userinfo = URL_SAFE_NO_PAD.encode("aes-256-gcm:s3cret/pass");
        let node = one(&format!("ss://{userinfo}@ss.example.com:8388#SS%201"));
        assert_eq!(node.protocol, "shadowsocks");
        assert_eq!(node.name, "SS 1");
        assert_eq!(
            node.outbound,
            json!({"type": "shadowsocks", "server": "ss.example.com", "server_port": 8388,
                   "method": "aes-256-gcm", "password": "s3cret/pass"})
        );
        // Plain 2022 credentials, percent-encoded, with a path slash and a plugin.
        let node = one(
            "ss://2022-blake3-aes-128-gcm:YctPZ6U7xPPcU%2Bgp3u%2B0tx%3D%3D@[::1]:443/\
             ?plugin=obfs-local%3Bobfs%3Dhttp%3Bobfs-host%3Dbing.com#p",
        );
        assert_eq!(
            node.outbound,
            json!({"type": "shadowsocks", "server": "::1", "server_port": 443,
                   "method": "2022-blake3-aes-128-gcm", "password": "YctPZ6U7xPPcU+gp3u+0tx==",
                   "plugin": "obfs-local", "plugin_opts": "obfs=http;obfs-host=bing.com"})
        );
        // Legacy: everything base64; chacha20-ietf is upgraded.
        let legacy = STANDARD.encode("chacha20-ietf:pw@1.2.3.4:8388");
        let node = one(&format!("ss://{legacy}#Old"));
        assert_eq!(node.name, "Old");
        assert_eq!(node.server, "1.2.3.4");
        assert_eq!(node.outbound["method"], "chacha20-ietf-poly1305");
        assert_eq!(node.outbound["password"], "pw");
        // plain → none.
        let node = one(&format!("ss://{}@h:1", STANDARD.encode("plain:x")));
        assert_eq!(node.outbound["method"], "none");
        // Rejections, with the password never quoted.
        assert_eq!(
            reason(&format!("ss://{}@h:1", STANDARD.encode("rc4-md5:hunter2"))),
            "line 2: shadowsocks cipher \"rc4-md5\" is not supported (not AEAD)"
        );
        assert_eq!(
            reason(&format!("ss://{}@h:1", STANDARD.encode("hunter2:x"))),
            "line 2: unknown shadowsocks cipher"
        );
        assert_eq!(
            reason(&format!("ss://{}@h:1", STANDARD.encode("hunter2"))),
            "line 2: shadowsocks link has no method:password"
        );
        assert_eq!(
            reason(&format!(
                "ss://{}@h:1?plugin=kcptun",
                STANDARD.encode("none:x")
            )),
            "line 2: shadowsocks plugin \"kcptun\" is not supported by sing-box"
        );
        assert_eq!(
            reason("ss://hunter2!!"),
            "line 2: shadowsocks link is neither SIP002 nor base64"
        );
    }

    #[test]
    fn hysteria2_links() {
        let node = one(
            "hysteria2://pa%24%24@hy.example.com:8443?sni=real.example.com&obfs=salamander\
             &obfs-password=ob%20pw&insecure=1#HY",
        );
        assert_eq!(node.protocol, "hysteria2");
        assert_eq!(node.name, "HY");
        assert_eq!(
            node.outbound,
            json!({"type": "hysteria2", "server": "hy.example.com", "server_port": 8443,
                   "password": "pa$$", "obfs": {"type": "salamander", "password": "ob pw"},
                   "tls": {"enabled": true, "server_name": "real.example.com", "insecure": true}})
        );
        // hy2://, default port, user:pass auth kept whole.
        let node = one("hy2://user:pw@[2001:db8::3]/?sni=x.example#v6");
        assert_eq!((node.server.as_str(), node.port), ("2001:db8::3", 443));
        assert_eq!(node.outbound["password"], "user:pw");
        assert_eq!(
            reason("hy2://hunter2@h:1000-2000"),
            "line 2: hysteria2 port hopping is not supported"
        );
        assert_eq!(
            reason("hy2://hunter2@h:443?obfs=salamander"),
            "line 2: hysteria2 salamander obfuscation has no password"
        );
    }

    #[test]
    fn mixed_list_in_base64_with_comments_and_duplicates() {
        let plain = format!(
            "# my proxies\r\n\
             http://alice:hunter2@proxy.example:3128\r\n\
             \r\n\
             socks5h://10.0.0.1:1080#named\r\n\
             http://alice:hunter2@proxy.example:3128\r\n\
             socks4://bob:hunter2@h:1080\r\n\
             trojan://hunter2@t.example:443#A\r\n\
             trojan://hunter2@t.example:443#B (same node)\r\n\
             vmess://hunter2\r\n\
             just some words hunter2\r\n\
             ftp+weird://x\r\n\
             hunter2-and-more-than-thirty-two-characters://x\r\n\
             {}\r\n",
            vmess_link(&json!({"add": "v.example", "port": 443, "id": UUID}))
        );
        for body in [
            plain.clone(),
            STANDARD.encode(&plain),
            URL_SAFE_NO_PAD.encode(&plain),
            // Wrapped over lines, as some services serve it.
            STANDARD
                .encode(&plain)
                .as_bytes()
                .chunks(76)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("\n"),
        ] {
            let list = parse_list(body.as_bytes()).unwrap();
            let direct: Vec<String> = list.direct.iter().map(ProxyUrl::redacted).collect();
            assert_eq!(
                direct,
                [
                    "http://alice:[redacted]@proxy.example:3128/",
                    "socks5h://10.0.0.1:1080"
                ]
            );
            let names: Vec<&str> = list.tunnelled.iter().map(|n| n.name.as_str()).collect();
            assert_eq!(names, ["A", ""]);
            assert_eq!(
                list.skipped,
                [
                    "line 6: unsupported scheme \"socks4\"",
                    "line 9: vmess link is not valid base64 JSON",
                    "line 10: not a link (expected scheme://…)",
                    "line 11: unsupported scheme \"ftp+weird\"",
                    "line 12: unsupported scheme",
                ]
            );
            let everything = format!("{list:?}");
            assert!(!everything.contains("hunter2"), "{everything}");
            assert!(!everything.contains(UUID), "{everything}");
        }
    }

    #[test]
    fn garbage_is_an_error_and_empty_is_not() {
        for garbage in [
            "<!DOCTYPE html>\n<html><body>Subscription expired</body></html>\n",
            r#"{"error": "token hunter2 invalid"}"#,
            "socks4://u:hunter2@h:1\nvmess://hunter2\n",
            "\u{0}\u{1}binary",
        ] {
            let e = parse_list(garbage.as_bytes()).unwrap_err();
            assert!(e.starts_with("not a proxy list"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e =
            parse_list(b"socks4://h:1\nsocks4://h:2\nsocks4://h:3\nsocks4://h:4\n").unwrap_err();
        assert_eq!(
            e,
            "not a proxy list: none of its 4 lines is a usable proxy link \
             (line 1: unsupported scheme \"socks4\"; line 2: unsupported scheme \"socks4\"; \
             line 3: unsupported scheme \"socks4\")"
        );
        assert!(parse_list(&[0xff, 0xfe, 0x00]).is_err());
        for empty in ["", "  \n\r\n", "# nothing yet\n#http://old:1\n"] {
            assert_eq!(parse_list(empty.as_bytes()).unwrap(), ParsedList::default());
        }
    }

    #[test]
    fn skipped_reasons_are_capped() {
        let mut body = String::from("http://proxy:3128\n");
        for _ in 0..(MAX_SKIPPED + 5) {
            body.push_str("socks4://h:1\n");
        }
        let list = parse_list(body.as_bytes()).unwrap();
        assert_eq!(list.skipped.len(), MAX_SKIPPED + 1);
        assert_eq!(list.skipped[MAX_SKIPPED], "5 more lines skipped");
    }

    #[test]
    fn id_is_stable_and_debug_hides_secrets() {
        assert_eq!(
            canonical_json(&json!({"b": 1, "a": [{"d": 2, "c": "x\"y"}], "é": null})),
            r#"{"a":[{"c":"x\"y","d":2}],"b":1,"é":null}"#
        );
        // The same node from links whose JSON keys come in another order, under other names.
        let a = one(&vmess_link(
            &json!({"ps": "one", "add": "h.example", "port": "443",
                                         "id": UUID, "tls": "tls"}),
        ));
        let b = one(&format!(
            "vmess://{}",
            STANDARD.encode(format!(
                r#"{{"tls":"tls","id":"{UUID}","port":443,"add":"h.example","ps":"two"}}"#
            ))
        ));
        assert_eq!(a.id(), b.id());
        assert_eq!(a.id().len(), 12);
        assert!(a.id().bytes().all(|c| c.is_ascii_hexdigit()));
        let expected: String = Sha256::digest(canonical_json(&a.outbound))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(a.id(), expected[..12]);
        // Pinned: the id must not change between releases for the same outbound.
        assert_eq!(a.id(), "baad385e4d00");
        let other = one(&vmess_link(
            &json!({"add": "h.example", "port": "444", "id": UUID}),
        ));
        assert_ne!(a.id(), other.id());

        let node = one("trojan://hunter2@t.example:443#Name");
        assert_eq!(
            format!("{node:?}"),
            r#"TunnelNode { protocol: "trojan", server: "t.example", port: 443, name: "Name", .. }"#
        );
        assert!(!format!("{a:?}").contains(UUID));
    }

    #[test]
    fn names_are_cleaned() {
        let node = one("trojan://pw@t.example:443#%20a%0Ab%E2%80%AEc%20");
        assert_eq!(node.name, "abc");
        let long = "x".repeat(300);
        let node = one(&format!("trojan://pw@t.example:443#{long}"));
        assert_eq!(node.name.chars().count(), MAX_NAME_CHARS);
    }
}
