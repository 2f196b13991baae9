//! [`FakeBrowser`]: a scripted browser that plays THE LOGIN CONTRACT's pages (e-mail form, code
//! form, landing page) in memory, for tests of the login driver here and in other crates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use business2api_shared::Secret;
use futures_util::future::BoxFuture;

use super::{Browser, BrowserCookie, BrowserError, BrowserResult, BrowserSession, SessionOptions};

/// How the scripted login behaves.
#[derive(Debug, Clone)]
pub struct FakeScript {
    /// The login URL shows the e-mail form (false: some other page, as if Google changed it).
    pub email_form: bool,
    /// The e-mail address is known (false: `#login-error`).
    pub known_email: bool,
    /// The code the code form accepts (another: `#code-error`).
    pub code: String,
    /// Where a right code lands.
    pub landing_url: String,
    /// What the landing page's script sends as `authorization` (none: nothing captured).
    pub authorization: Option<String>,
    /// The profile's cookies after the login (name, value, domain).
    pub cookies: Vec<(String, String, String)>,
    /// Opening a session fails with this.
    pub open_error: Option<BrowserError>,
}

impl FakeScript {
    /// A login that succeeds with `code`, landing on `/home/cid/<config_id>?csesidx=<csesidx>`.
    pub fn success(code: &str, config_id: &str, csesidx: &str) -> FakeScript {
        FakeScript {
            email_form: true,
            known_email: true,
            code: code.to_owned(),
            landing_url: format!(
                "https://business.gemini.google/home/cid/{config_id}?csesidx={csesidx}"
            ),
            authorization: Some(
                "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJjc2VzaWR4LzEifQ.c2ln".into(),
            ),
            cookies: vec![
                (
                    "__Secure-C_SES".into(),
                    "CSE.fresh".into(),
                    ".gemini.google".into(),
                ),
                (
                    "__Host-C_OSES".into(),
                    "COS.fresh".into(),
                    "business.gemini.google".into(),
                ),
                ("NID".into(), "nid-1".into(), ".google.com".into()),
            ],
            open_error: None,
        }
    }
}

/// Where a fake session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakePage {
    Blank,
    Other,
    Email,
    EmailError,
    Code,
    CodeError,
    Landing,
}

impl FakePage {
    fn has(self, selector: &str) -> bool {
        let email = ["#email-form", "#email-input", "#log-in-button"];
        let code = ["#code-form", "#code-input", "#verify-button"];
        match self {
            FakePage::Blank | FakePage::Other | FakePage::Landing => false,
            FakePage::Email => email.contains(&selector),
            FakePage::EmailError => email.contains(&selector) || selector == "#login-error",
            FakePage::Code => code.contains(&selector),
            FakePage::CodeError => code.contains(&selector) || selector == "#code-error",
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    opened: usize,
    live: usize,
    closed: usize,
    typed: Vec<(String, String)>,
    proxies: Vec<Option<String>>,
    last_page: Option<FakePage>,
}

/// A scripted [`Browser`]: every session plays `script`. It records what was typed and how many
/// sessions are open, so tests can check that a cancelled task released its session.
#[derive(Debug, Clone)]
pub struct FakeBrowser {
    script: FakeScript,
    shared: Arc<Mutex<Shared>>,
}

impl FakeBrowser {
    pub fn new(script: FakeScript) -> FakeBrowser {
        FakeBrowser {
            script,
            shared: Arc::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        f(&mut self.shared.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sessions opened so far.
    pub fn opened(&self) -> usize {
        self.with(|s| s.opened)
    }

    /// Sessions open now (not yet closed or dropped).
    pub fn live(&self) -> usize {
        self.with(|s| s.live)
    }

    /// Sessions ended with [`BrowserSession::close`].
    pub fn closed(&self) -> usize {
        self.with(|s| s.closed)
    }

    /// What was typed, as (selector, text), in order.
    pub fn typed(&self) -> Vec<(String, String)> {
        self.with(|s| s.typed.clone())
    }

    /// The proxy each session was opened with.
    pub fn proxies(&self) -> Vec<Option<String>> {
        self.with(|s| s.proxies.clone())
    }

    /// The page the last session was on.
    pub fn last_page(&self) -> Option<FakePage> {
        self.with(|s| s.last_page)
    }
}

impl Browser for FakeBrowser {
    fn open(
        &self,
        options: SessionOptions,
    ) -> BoxFuture<'_, BrowserResult<Box<dyn BrowserSession>>> {
        Box::pin(async move {
            if let Some(e) = &self.script.open_error {
                return Err(e.clone());
            }
            self.with(|s| {
                s.opened += 1;
                s.live += 1;
                s.proxies.push(options.proxy.clone());
            });
            let session: Box<dyn BrowserSession> = Box::new(FakeSession {
                browser: self.clone(),
                page: FakePage::Blank,
                typed: HashMap::new(),
            });
            Ok(session)
        })
    }
}

struct FakeSession {
    browser: FakeBrowser,
    page: FakePage,
    typed: HashMap<String, String>,
}

impl FakeSession {
    fn goto(&mut self, page: FakePage) {
        self.page = page;
        self.browser.with(|s| s.last_page = Some(page));
    }
}

impl Drop for FakeSession {
    fn drop(&mut self) {
        self.browser.with(|s| s.live = s.live.saturating_sub(1));
    }
}

fn missing(selector: &str) -> BrowserError {
    BrowserError::Failed(format!("no element matches {selector}"))
}

impl BrowserSession for FakeSession {
    fn navigate<'a>(&'a mut self, _url: &'a str) -> BoxFuture<'a, BrowserResult<()>> {
        Box::pin(async move {
            let page = if self.browser.script.email_form {
                FakePage::Email
            } else {
                FakePage::Other
            };
            self.goto(page);
            Ok(())
        })
    }

    fn wait_any<'a>(
        &'a mut self,
        selectors: &'a [&'a str],
        timeout: Duration,
    ) -> BoxFuture<'a, BrowserResult<Option<usize>>> {
        Box::pin(async move {
            // A page's error element is checked before its form (as a browser would find both).
            if let Some(i) = selectors.iter().position(|s| self.page.has(s)) {
                return Ok(Some(i));
            }
            tokio::time::sleep(timeout).await;
            Ok(None)
        })
    }

    fn type_into<'a>(
        &'a mut self,
        selector: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, BrowserResult<()>> {
        Box::pin(async move {
            if !self.page.has(selector) {
                return Err(missing(selector));
            }
            self.typed.insert(selector.to_owned(), text.to_owned());
            self.browser
                .with(|s| s.typed.push((selector.to_owned(), text.to_owned())));
            Ok(())
        })
    }

    fn click<'a>(&'a mut self, selector: &'a str) -> BoxFuture<'a, BrowserResult<()>> {
        Box::pin(async move {
            if !self.page.has(selector) {
                return Err(missing(selector));
            }
            match selector {
                "#log-in-button" => {
                    let page = if self.browser.script.known_email {
                        FakePage::Code
                    } else {
                        FakePage::EmailError
                    };
                    self.goto(page);
                }
                "#verify-button" => {
                    let right = self.typed.get("#code-input").map(String::as_str)
                        == Some(self.browser.script.code.as_str());
                    let page = if right {
                        FakePage::Landing
                    } else {
                        FakePage::CodeError
                    };
                    self.goto(page);
                }
                _ => {}
            }
            Ok(())
        })
    }

    fn current_url(&mut self) -> BoxFuture<'_, BrowserResult<String>> {
        Box::pin(async move {
            Ok(match self.page {
                FakePage::Landing => self.browser.script.landing_url.clone(),
                FakePage::Code | FakePage::CodeError => {
                    "https://auth.business.gemini.google/verify".to_owned()
                }
                FakePage::Blank => "about:blank".to_owned(),
                _ => "https://auth.business.gemini.google/login".to_owned(),
            })
        })
    }

    fn cookies(&mut self) -> BoxFuture<'_, BrowserResult<Vec<BrowserCookie>>> {
        Box::pin(async move {
            if self.page != FakePage::Landing {
                return Ok(Vec::new());
            }
            Ok(self
                .browser
                .script
                .cookies
                .iter()
                .map(|(name, value, domain)| BrowserCookie {
                    name: name.clone(),
                    value: Secret::new(value.clone()),
                    domain: domain.clone(),
                })
                .collect())
        })
    }

    fn authorization(&mut self) -> BoxFuture<'_, BrowserResult<Option<Secret>>> {
        Box::pin(async move {
            if self.page != FakePage::Landing {
                return Ok(None);
            }
            Ok(self.browser.script.authorization.clone().map(Secret::new))
        })
    }

    fn screenshot(&mut self) -> BoxFuture<'_, BrowserResult<Vec<u8>>> {
        Box::pin(async move { Ok(b"\x89PNG\r\n\x1a\nfake".to_vec()) })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.browser.with(|s| s.closed += 1);
        Box::pin(async move { drop(self) })
    }
}
