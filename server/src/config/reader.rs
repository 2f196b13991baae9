//! The machinery that walks the raw JSON document: [`Reader`] collects every error and warning
//! (with its key path), [`Section`] reads one object key by key and reports unknown keys, and the
//! small parsers shared by several sections.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use business2api_shared::Secret;
use serde_json::{Map, Value};

use super::ConfigError;
use super::proxy::ProxyUrl;

/// Collects errors and warnings while the document is walked.
#[derive(Default)]
pub(super) struct Reader {
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<String>,
    /// Every key path the walk looked at (known keys), for the documentation test.
    pub(super) read_keys: Vec<String>,
}

impl Reader {
    pub(super) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }
}

/// One JSON object being read. Remembers the keys read so that the rest can be reported as
/// unknown by [`Section::finish`].
pub(super) struct Section<'a> {
    path: &'static str,
    map: Option<&'a Map<String, Value>>,
    seen: Vec<&'static str>,
}

/// What an integer key accepts.
#[derive(Clone, Copy)]
pub(super) struct Range {
    pub(super) min: u64,
    pub(super) max: u64,
}

pub(super) const ANY: Range = Range {
    min: 0,
    max: u32::MAX as u64,
};
pub(super) const AT_LEAST_1: Range = Range {
    min: 1,
    max: u32::MAX as u64,
};

impl<'a> Section<'a> {
    pub(super) fn root(map: &'a Map<String, Value>) -> Self {
        Section {
            path: "",
            map: Some(map),
            seen: Vec::new(),
        }
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`; `None` when missing or `null` (both mean "default").
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        self.map?.get(key).filter(|v| !v.is_null())
    }

    /// The raw value of `key` (`None` when missing or `null`), for values whose keys are data
    /// (such as `otp.accounts`, keyed by e-mail address); the caller validates it.
    pub(super) fn raw(&mut self, key: &'static str) -> Option<&'a Value> {
        self.get(key)
    }

    /// `key`'s path inside this section, for error messages.
    pub(super) fn path_of(&self, key: &str) -> String {
        self.key_path(key)
    }

    /// A nested object. Missing, `null` or the wrong type (an error) read as an empty object.
    pub(super) fn section(&mut self, r: &mut Reader, key: &'static str) -> Section<'a> {
        let map = match self.get(key) {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                // Never echoed: a value in place of a section is often a URL or a key
                // (`"proxy_pool": "http://user:password@host"`).
                r.error(self.key_path(key), expected("an object", other, true));
                None
            }
        };
        Section {
            path: key,
            map,
            seen: Vec::new(),
        }
    }

    /// Warns about every key that was not read.
    pub(super) fn finish(self, r: &mut Reader) {
        r.read_keys
            .extend(self.seen.iter().map(|k| self.key_path(k)));
        let Some(map) = self.map else { return };
        for key in map.keys() {
            if !self.seen.contains(&key.as_str()) {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                r.warn(format!("unknown key {path} (ignored)"));
            }
        }
    }

    pub(super) fn bool(&mut self, r: &mut Reader, key: &'static str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                r.error(self.key_path(key), expected("a boolean", other, false));
                default
            }
        }
    }

    pub(super) fn uint(
        &mut self,
        r: &mut Reader,
        key: &'static str,
        default: u64,
        range: Range,
    ) -> u64 {
        let Some(v) = self.get(key) else {
            return default;
        };
        let path = self.key_path(key);
        let n = match v {
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u,
                (None, Some(_)) => {
                    r.error(path, format!("must not be negative, found {n}"));
                    return default;
                }
                (None, None) => {
                    r.error(path, format!("expected an integer, found number {n}"));
                    return default;
                }
            },
            other => {
                r.error(path, expected("an integer", other, false));
                return default;
            }
        };
        if n < range.min {
            r.error(path, format!("must be at least {}, found {n}", range.min));
            default
        } else if n > range.max {
            r.error(path, format!("must be at most {}, found {n}", range.max));
            default
        } else {
            n
        }
    }

    pub(super) fn u32(
        &mut self,
        r: &mut Reader,
        key: &'static str,
        default: u32,
        range: Range,
    ) -> u32 {
        let range = Range {
            min: range.min,
            max: range.max.min(u64::from(u32::MAX)),
        };
        u32::try_from(self.uint(r, key, u64::from(default), range)).unwrap_or(default)
    }

    pub(super) fn secs(
        &mut self,
        r: &mut Reader,
        key: &'static str,
        default: u64,
        range: Range,
    ) -> Duration {
        Duration::from_secs(self.uint(r, key, default, range))
    }

    /// A string; `None` when missing or `null`. `sensitive` keeps the value out of messages.
    pub(super) fn string(
        &mut self,
        r: &mut Reader,
        key: &'static str,
        sensitive: bool,
    ) -> Option<String> {
        match self.get(key) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                r.error(self.key_path(key), expected("a string", other, sensitive));
                None
            }
        }
    }

    /// A trimmed string, `None` when missing, `null`, empty or blank.
    pub(super) fn nonblank(
        &mut self,
        r: &mut Reader,
        key: &'static str,
        sensitive: bool,
    ) -> Option<String> {
        self.string(r, key, sensitive)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// A list of strings, each trimmed; blank entries are dropped.
    pub(super) fn string_list(
        &mut self,
        r: &mut Reader,
        key: &'static str,
        sensitive: bool,
    ) -> Vec<String> {
        let mut out = Vec::new();
        match self.get(key) {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if s.trim().is_empty() => {}
                        Value::String(s) => out.push(s.trim().to_owned()),
                        other => r.error(
                            format!("{}[{i}]", self.key_path(key)),
                            expected("a string", other, sensitive),
                        ),
                    }
                }
            }
            Some(other) => r.error(
                self.key_path(key),
                expected("an array of strings", other, sensitive),
            ),
        }
        out
    }

    pub(super) fn proxy(&mut self, r: &mut Reader, key: &'static str) -> Option<ProxyUrl> {
        let s = self.nonblank(r, key, true)?;
        match ProxyUrl::parse(&s) {
            Ok(p) => Some(p),
            Err(e) => {
                r.error(self.key_path(key), e);
                None
            }
        }
    }

    /// An `http`/`https` base URL, normalised (see [`parse_base_url`]); blank means `default`.
    pub(super) fn base_url(
        &mut self,
        r: &mut Reader,
        key: &'static str,
        default: Option<&str>,
    ) -> Option<url::Url> {
        let s = self.nonblank(r, key, false);
        match parse_base_url(s.as_deref().or(default)?) {
            Ok(u) => Some(u),
            Err(e) => {
                r.error(self.key_path(key), e);
                None
            }
        }
    }
}

fn expected(what: &str, found: &Value, sensitive: bool) -> String {
    format!("expected {what}, found {}", describe(found, sensitive))
}

/// `string "yes"`, `number 5`, `an array`, … ; with `sensitive`, no value is shown.
pub(super) fn describe(v: &Value, sensitive: bool) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(_) if sensitive => "a number".to_owned(),
        Value::Number(n) => format!("number {n}"),
        Value::String(_) if sensitive => "a string".to_owned(),
        Value::String(s) => format!("string {}", quote(s)),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// A JSON-quoted string, shortened to 60 characters.
pub(super) fn quote(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let short: String = s.chars().take(MAX).collect();
        format!("{short:?}…")
    }
}

/// Parses a listen address: `:PORT` (every IPv4 interface, as in Go), `IP:PORT`, `[IPv6]:PORT`
/// or `localhost:PORT` (127.0.0.1).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let forms = "expected \":PORT\", \"IP:PORT\", \"[IPv6]:PORT\" or \"localhost:PORT\"";
    if s.is_empty() {
        return Err(format!("empty address; {forms}"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "missing ':' before the port; did you mean \":{s}\"?"
        ));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{forms}, found {}", quote(s)));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port {} (expected 0..=65535)", quote(port)))?;
    let ip = if host.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else if host.parse::<IpAddr>().is_ok() {
        // An IPv6 literal without brackets: ambiguous with the port separator.
        return Err(format!(
            "write an IPv6 address in brackets, e.g. \"[::1]:{port}\""
        ));
    } else {
        return Err(format!(
            "host {} is neither an IP address nor localhost; {forms}",
            quote(host)
        ));
    };
    Ok(SocketAddr::new(ip, port))
}

/// Parses an `http`/`https` base URL and normalises it: the path ends in `/` (so
/// `Url::join("relative")` appends), no query or fragment.
pub(super) fn parse_base_url(s: &str) -> Result<url::Url, String> {
    let mut url = url::Url::parse(s.trim()).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "expected an http or https URL, found scheme \"{}\"",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a base URL takes no query or fragment".to_owned());
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// API keys or tokens: trimmed, blank ones dropped, duplicates removed (first kept).
/// How many of `values` (trimmed, blanks ignored) repeat an earlier one.
pub(super) fn repeats<S: AsRef<str>>(values: &[S]) -> usize {
    let mut seen: Vec<&str> = Vec::new();
    let mut repeated = 0;
    for v in values {
        let v = v.as_ref().trim();
        if v.is_empty() {
            continue;
        }
        if seen.contains(&v) {
            repeated += 1;
        } else {
            seen.push(v);
        }
    }
    repeated
}

/// The warning for `n` repeated keys in `what`; no value is named.
pub(super) fn repeated_keys_warning(what: &str, n: usize) -> String {
    format!("{what} lists the same key more than once ({n} repeat(s)); each key is used once")
}

pub(super) fn dedup_secrets(values: impl IntoIterator<Item = String>) -> Vec<Secret> {
    let mut out: Vec<Secret> = Vec::new();
    for v in values {
        let v = v.trim();
        if !v.is_empty() && !out.iter().any(|s| s.expose() == v) {
            out.push(Secret::new(v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn listen_addr_forms() {
        let ok = |s: &str| parse_listen_addr(s).unwrap().to_string();
        assert_eq!(ok(":8000"), "0.0.0.0:8000");
        assert_eq!(ok(":0"), "0.0.0.0:0");
        assert_eq!(ok("127.0.0.1:9000"), "127.0.0.1:9000");
        assert_eq!(ok("0.0.0.0:80"), "0.0.0.0:80");
        assert_eq!(ok("[::]:8000"), "[::]:8000");
        assert_eq!(ok("[::1]:8000"), "[::1]:8000");
        assert_eq!(ok("localhost:8080"), "127.0.0.1:8080");
        assert_eq!(ok(" LOCALHOST:8080 "), "127.0.0.1:8080");
        for bad in [
            "8000",
            "",
            "example.com:80",
            ":99999",
            ":",
            "localhost",
            "::1:80",
            "1.2.3.4",
        ] {
            assert!(parse_listen_addr(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_listen_addr("8000").unwrap_err().contains("\":8000\""));

        let s = load(r#"{"listen_addr": "localhost:1234"}"#).settings;
        assert_eq!(s.listen_addr, "127.0.0.1:1234".parse().unwrap());
        let e = load_err(r#"{"listen_addr": "my-host:80"}"#);
        assert_eq!(paths(&e), ["listen_addr"]);
    }
}
