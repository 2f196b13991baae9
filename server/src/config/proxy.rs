//! [`ProxyUrl`]: a validated proxy URL whose password never shows.

/// A proxy URL (`http`, `https`, `socks5` or `socks5h`). Its password is a secret: `Debug` and
/// [`ProxyUrl::redacted`] hide it.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl(url::Url);

impl ProxyUrl {
    /// Parses a proxy URL: scheme `http`, `https`, `socks5` or `socks5h`, a host, optionally
    /// `user:password@` and a port. Error messages never repeat the input (it may hold a
    /// password).
    pub fn parse(s: &str) -> Result<ProxyUrl, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty proxy URL".to_owned());
        }
        if !s.contains("://") {
            return Err(
                "missing scheme: expected a URL such as http://host:port or socks5://host:port"
                    .to_owned(),
            );
        }
        let url = url::Url::parse(s).map_err(|e| format!("not a valid proxy URL ({e})"))?;
        let scheme = url.scheme();
        if !matches!(scheme, "http" | "https" | "socks5" | "socks5h") {
            return Err(format!(
                "unsupported proxy scheme \"{scheme}\" (expected http, https, socks5 or socks5h)"
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("proxy URL has no host".to_owned());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("a proxy URL takes no query or fragment".to_owned());
        }
        Ok(ProxyUrl(url))
    }

    /// The password, as written (percent-encoded) and decoded: what log redaction looks for.
    pub fn password_forms(&self) -> Vec<String> {
        let Some(raw) = self.0.password() else {
            return Vec::new();
        };
        let mut forms = vec![raw.to_owned()];
        if let Ok(decoded) = percent_decode(raw)
            && decoded != raw
        {
            forms.push(decoded);
        }
        forms
    }

    /// The URL with its password replaced by `[redacted]`, for logs and admin views.
    pub fn redacted(&self) -> String {
        let u = &self.0;
        let Some(password) = u.password() else {
            return u.to_string();
        };
        // `set_password` would percent-encode the brackets; splice the text instead. The
        // serialisation is `scheme://user:password@host…`, and the first `@` after `://` ends the
        // userinfo (`@` inside it is always percent-encoded).
        let s = u.as_str();
        let start = u.scheme().len() + 3 + u.username().len() + 1;
        match s.get(start..start + password.len()) {
            Some(p) if p == password => {
                format!("{}[redacted]{}", &s[..start], &s[start + password.len()..])
            }
            _ => {
                let mut copy = u.clone();
                let _ = copy.set_password(Some("redacted"));
                copy.to_string()
            }
        }
    }

    /// The real URL, for building the HTTP client.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxyUrl({})", self.redacted())
    }
}

/// `%XX` sequences decoded (UTF-8), for [`ProxyUrl::password_forms`].
fn percent_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn proxy_url_parse_and_redaction() {
        for ok in [
            "http://proxy:3128",
            "https://proxy:443",
            "socks5://127.0.0.1:1080",
            "socks5h://user:pw@proxy:1080",
            "  http://[::1]:8080  ",
        ] {
            ProxyUrl::parse(ok).unwrap();
        }
        for bad in [
            "",
            "proxy:3128",
            "user:hunter2@proxy:3128",
            "ftp://proxy:21",
            "socks4://proxy:1080",
            "http://",
            "socks5://:1080",
            "http://proxy:3128/?x=1",
        ] {
            let e = ProxyUrl::parse(bad).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
        }

        let p = ProxyUrl::parse("http://alice:s3cr%21t@proxy.example:3128").unwrap();
        assert_eq!(p.redacted(), "http://alice:[redacted]@proxy.example:3128/");
        assert_eq!(
            format!("{p:?}"),
            "ProxyUrl(http://alice:[redacted]@proxy.example:3128/)"
        );
        assert!(p.expose().contains("s3cr%21t"));
        let p = ProxyUrl::parse("socks5://bob:hunter2@10.0.0.1:1080").unwrap();
        assert_eq!(p.redacted(), "socks5://bob:[redacted]@10.0.0.1:1080");
        assert!(!format!("{p:?}").contains("hunter2"));
        let p = ProxyUrl::parse("http://proxy:3128").unwrap();
        assert_eq!(p.redacted(), "http://proxy:3128/");

        // Through settings: Debug of the whole Settings hides proxy passwords and keys.
        let s = load(
            r#"{"proxy": "http://u:topsecret@p:1", "api_keys": ["sk-hidden"],
                "flow": {"tokens": ["tok-hidden"]}}"#,
        )
        .settings;
        let debug = format!("{s:?}");
        for secret in ["topsecret", "sk-hidden", "tok-hidden"] {
            assert!(!debug.contains(secret), "{secret} leaked");
        }
        // The bad value itself never shows up in a proxy error.
        let e = load_err(r#"{"flow": {"proxy": "gopher://u:topsecret@h"}}"#);
        assert_eq!(paths(&e), ["flow.proxy"]);
        assert!(!e[0].message.contains("topsecret"));
    }
}
