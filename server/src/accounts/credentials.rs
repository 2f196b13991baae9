//! What an account *is* (Gemini Business spec §1.2): its cookies, `csesidx`,
//! `configId` and the web app's own `authorization` header value.

use business2api_shared::Secret;

/// The cookie that makes an account usable; without it the account is invalid.
pub const SESSION_COOKIE: &str = "__Secure-C_SES";
/// Sent with U1 when present.
pub const OTHER_SESSION_COOKIE: &str = "__Host-C_OSES";

/// One browser cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: Secret,
    pub domain: String,
}

/// Everything the adapter needs to act as one account.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub cookies: Vec<Cookie>,
    pub csesidx: String,
    pub config_id: String,
    /// The `authorization` header value the web app sent (`Bearer <JWT>`), forwarded as
    /// `x-original-authorization`. Empty when unknown.
    pub authorization: Secret,
}

impl Credentials {
    /// The `Cookie` header for U1 (spec §1.3): `__Secure-C_SES` first, then `__Host-C_OSES` if
    /// present, then every other `__Secure-*` / `__Host-*` cookie in stored order. The first
    /// occurrence of each name wins. `None` when `__Secure-C_SES` is missing or empty.
    pub fn cookie_header(&self) -> Option<Secret> {
        let first = |name: &str| self.cookies.iter().find(|c| c.name == name);
        let ses = first(SESSION_COOKIE).filter(|c| !c.value.is_empty())?;
        let mut header = format!("{}={}", SESSION_COOKIE, ses.value.expose());
        if let Some(oses) = first(OTHER_SESSION_COOKIE) {
            header.push_str(&format!(
                "; {}={}",
                OTHER_SESSION_COOKIE,
                oses.value.expose()
            ));
        }
        let mut seen: Vec<&str> = vec![SESSION_COOKIE, OTHER_SESSION_COOKIE];
        for c in &self.cookies {
            let secure = c.name.starts_with("__Secure-") || c.name.starts_with("__Host-");
            if secure && !seen.contains(&c.name.as_str()) {
                seen.push(&c.name);
                header.push_str(&format!("; {}={}", c.name, c.value.expose()));
            }
        }
        Some(Secret::new(header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(name: &str, value: &str) -> Cookie {
        Cookie {
            name: name.into(),
            value: Secret::new(value),
            domain: ".gemini.google".into(),
        }
    }

    #[test]
    fn cookie_header_order_and_filtering() {
        let creds = Credentials {
            cookies: vec![
                cookie("NID", "not-sent"),
                cookie("__Secure-ENID", "e"),
                cookie("__Host-C_OSES", "o"),
                cookie("__Secure-C_SES", "s"),
                cookie("__Secure-C_SES", "second-ignored"),
                cookie("__Host-GAPS", "g"),
            ],
            csesidx: "1".into(),
            config_id: "c".into(),
            authorization: Secret::default(),
        };
        assert_eq!(
            creds.cookie_header().unwrap().expose(),
            "__Secure-C_SES=s; __Host-C_OSES=o; __Secure-ENID=e; __Host-GAPS=g"
        );
    }

    #[test]
    fn missing_session_cookie_means_no_header() {
        let creds = Credentials {
            cookies: vec![cookie("__Host-C_OSES", "o"), cookie("__Secure-C_SES", "")],
            csesidx: "1".into(),
            config_id: "c".into(),
            authorization: Secret::default(),
        };
        assert!(creds.cookie_header().is_none());
    }
}
