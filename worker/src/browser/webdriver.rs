//! [`WebDriverBrowser`]: Chromium driven through chromedriver with thirtyfour.
//!
//! Each session gets a fresh temporary `--user-data-dir` (deleted after) and, unless a WebDriver
//! URL is configured, its own chromedriver on a free 127.0.0.1 port (killed when the session
//! ends or is dropped). Cookies of every domain come from Chrome DevTools
//! (`Network.getAllCookies` through chromedriver's CDP endpoint); the `authorization` header is
//! recorded by a script registered with `Page.addScriptToEvaluateOnNewDocument` that wraps
//! `fetch` and `XMLHttpRequest.setRequestHeader`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use business2api_shared::Secret;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use thirtyfour::cdp::Cdp;
use thirtyfour::prelude::*;

use super::{Browser, BrowserCookie, BrowserError, BrowserResult, BrowserSession, SessionOptions};

/// How [`WebDriverBrowser`] starts its sessions.
#[derive(Debug, Clone)]
pub struct WebDriverOptions {
    /// A running WebDriver server to use instead of starting chromedriver.
    pub webdriver_url: Option<url::Url>,
    /// The chromedriver to start (a path, or a name looked up in `PATH`).
    pub chromedriver_path: PathBuf,
    /// The Chromium binary (none: chromedriver finds one).
    pub chromium_path: Option<PathBuf>,
    /// `--headless=new` when true.
    pub headless: bool,
    /// How long chromedriver and a new session may take to start, and the bound on each
    /// WebDriver request.
    pub start_timeout: Duration,
    /// The browser window size.
    pub window: (u32, u32),
}

impl Default for WebDriverOptions {
    fn default() -> WebDriverOptions {
        WebDriverOptions {
            webdriver_url: None,
            chromedriver_path: PathBuf::from("chromedriver"),
            chromium_path: None,
            headless: true,
            start_timeout: Duration::from_secs(30),
            window: (1280, 900),
        }
    }
}

/// Chromium through chromedriver (see the module documentation).
#[derive(Debug, Clone)]
pub struct WebDriverBrowser {
    options: Arc<WebDriverOptions>,
}

impl WebDriverBrowser {
    pub fn new(options: WebDriverOptions) -> WebDriverBrowser {
        // thirtyfour builds reqwest clients (one more on a session's synchronous teardown);
        // reqwest here has no TLS provider of its own. The binary installs ring at start; this
        // makes a library user (a test) safe too. Already installed: nothing happens.
        let _ = rustls::crypto::ring::default_provider().install_default();
        WebDriverBrowser {
            options: Arc::new(options),
        }
    }
}

/// Whether this process runs as root (the real user id in `/proc/self/status` is 0): Chromium
/// then needs `--no-sandbox`.
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("Uid:")
                    .and_then(|ids| ids.split_whitespace().next().map(|uid| uid == "0"))
            })
        })
        .unwrap_or(false)
}

fn failed(what: &str, e: impl std::fmt::Display) -> BrowserError {
    let text = e.to_string();
    // Chromium names a network failure net::ERR_* (connection refused, proxy, DNS).
    if text.contains("net::ERR_") {
        let code = text
            .split_whitespace()
            .find(|w| w.contains("net::ERR_"))
            .unwrap_or("net::ERR");
        return BrowserError::Network(format!("{what}: {code}"));
    }
    BrowserError::Failed(format!("{what}: {}", truncate(&text, 200)))
}

fn truncate(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.len() <= max {
        return one_line;
    }
    let mut end = max;
    while !one_line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &one_line[..end])
}

/// A chromedriver this worker started, in a process group of its own that the Chromium it
/// launches joins; the whole group is killed when this is dropped, so that a cancelled login
/// (its future dropped mid-step) leaves neither chromedriver nor Chromium behind.
struct Chromedriver {
    child: tokio::process::Child,
    url: String,
}

impl Chromedriver {
    /// SIGKILL to chromedriver's process group (Chromium and its helpers included).
    fn kill_group(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self
            .child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.start_kill();
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        self.kill_group();
    }
}

async fn free_port() -> BrowserResult<u16> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| failed("cannot find a free port for chromedriver", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| failed("cannot find a free port for chromedriver", e))?
        .port();
    Ok(port)
}

async fn start_chromedriver(options: &WebDriverOptions) -> BrowserResult<Chromedriver> {
    let port = free_port().await?;
    let mut command = tokio::process::Command::new(&options.chromedriver_path);
    command
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    // A group of its own: Chromium and its helpers join it, and `kill_group` ends them all.
    #[cfg(unix)]
    command.process_group(0);
    let child = command.spawn().map_err(|e| {
        BrowserError::Failed(format!(
            "cannot start chromedriver ({}): {e}",
            options.chromedriver_path.display()
        ))
    })?;
    let driver = Chromedriver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .map_err(|e| failed("HTTP client", e))?;
    let deadline = Instant::now() + options.start_timeout;
    let status = format!("{}/status", driver.url);
    loop {
        if let Ok(response) = client.get(&status).send().await
            && response.status().is_success()
        {
            return Ok(driver);
        }
        if Instant::now() >= deadline {
            return Err(BrowserError::Failed(format!(
                "chromedriver did not answer within {} s",
                options.start_timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records the `authorization` header any page script sets, in `window.__b2aAuthorization` and
/// the tab's `sessionStorage` (which survives the page's navigations on one origin).
const CAPTURE_SCRIPT: &str = r#"(() => {
  const keep = (name, value) => {
    if (typeof name !== 'string' || name.toLowerCase() !== 'authorization') return;
    const v = String(value);
    window.__b2aAuthorization = v;
    try { sessionStorage.setItem('__b2aAuthorization', v); } catch (e) {}
  };
  const scan = (headers) => {
    if (!headers) return;
    try {
      if (typeof Headers !== 'undefined' && headers instanceof Headers) {
        headers.forEach((v, k) => keep(k, v));
      } else if (Array.isArray(headers)) {
        headers.forEach((pair) => keep(pair[0], pair[1]));
      } else if (typeof headers === 'object') {
        Object.keys(headers).forEach((k) => keep(k, headers[k]));
      }
    } catch (e) {}
  };
  const originalFetch = window.fetch;
  if (originalFetch) {
    window.fetch = function (input, init) {
      try {
        if (input && typeof input === 'object' && input.headers) scan(input.headers);
        if (init && init.headers) scan(init.headers);
      } catch (e) {}
      return originalFetch.apply(this, arguments);
    };
  }
  const originalSet = XMLHttpRequest.prototype.setRequestHeader;
  XMLHttpRequest.prototype.setRequestHeader = function (name, value) {
    try { keep(name, value); } catch (e) {}
    return originalSet.apply(this, arguments);
  };
})();"#;

const READ_CAPTURE: &str = "return window.__b2aAuthorization || (function () { \
    try { return sessionStorage.getItem('__b2aAuthorization'); } catch (e) { return null; } })();";

impl Browser for WebDriverBrowser {
    fn open(
        &self,
        options: SessionOptions,
    ) -> BoxFuture<'_, BrowserResult<Box<dyn BrowserSession>>> {
        let config = Arc::clone(&self.options);
        Box::pin(async move {
            let profile = tempfile::Builder::new()
                .prefix("b2a-chromium-")
                .tempdir()
                .map_err(|e| failed("cannot create a temporary browser profile", e))?;
            // Fields drop in order: the WebDriver session first (it quits Chromium), then the
            // chromedriver process, then the profile directory.
            let mut session = WebDriverSession {
                driver: None,
                chromedriver: None,
                profile: Some(profile),
            };
            let url = match &config.webdriver_url {
                Some(url) => url.to_string(),
                None => {
                    let driver = start_chromedriver(&config).await?;
                    let url = driver.url.clone();
                    session.chromedriver = Some(driver);
                    url
                }
            };
            let mut caps = DesiredCapabilities::chrome();
            let profile_dir = session
                .profile
                .as_ref()
                .map(|p| p.path().display().to_string())
                .unwrap_or_default();
            let mut args = vec![
                format!("--user-data-dir={profile_dir}"),
                format!("--window-size={},{}", config.window.0, config.window.1),
                "--no-first-run".to_owned(),
                "--no-default-browser-check".to_owned(),
                "--disable-dev-shm-usage".to_owned(),
                "--password-store=basic".to_owned(),
            ];
            if config.headless {
                args.push("--headless=new".to_owned());
            }
            if running_as_root() {
                args.push("--no-sandbox".to_owned());
            }
            if let Some(proxy) = &options.proxy {
                args.push(format!("--proxy-server={proxy}"));
                // Everything through the account's proxy, loopback included (Chromium
                // bypasses the proxy for loopback by default).
                args.push("--proxy-bypass-list=<-loopback>".to_owned());
            }
            for arg in &args {
                caps.add_arg(arg).map_err(|e| failed("capabilities", e))?;
            }
            if let Some(binary) = &config.chromium_path {
                caps.set_binary(&binary.display().to_string())
                    .map_err(|e| failed("capabilities", e))?;
            }
            let client = reqwest::Client::builder()
                .timeout(config.start_timeout.max(Duration::from_secs(30)))
                .no_proxy()
                .build()
                .map_err(|e| failed("HTTP client", e))?;
            let driver = tokio::time::timeout(
                config.start_timeout,
                WebDriver::builder(url, caps)
                    .client(client)
                    .request_timeout(config.start_timeout.max(Duration::from_secs(30))),
            )
            .await
            .map_err(|_| {
                BrowserError::Failed(format!(
                    "the browser did not start within {} s",
                    config.start_timeout.as_secs()
                ))
            })?
            .map_err(|e| failed("cannot start the browser", e))?;
            session.driver = Some(driver);
            let devtools = session.devtools()?;
            devtools
                .send_raw(
                    "Page.addScriptToEvaluateOnNewDocument",
                    json!({ "source": CAPTURE_SCRIPT }),
                )
                .await
                .map_err(|e| failed("cannot register the capture script", e))?;
            let session: Box<dyn BrowserSession> = Box::new(session);
            Ok(session)
        })
    }
}

struct WebDriverSession {
    driver: Option<WebDriver>,
    chromedriver: Option<Chromedriver>,
    profile: Option<tempfile::TempDir>,
}

/// A session dropped without `close` (its task was cancelled mid-step): with our own
/// chromedriver, its process group (Chromium included) is killed at once; with a configured
/// WebDriver server, the session is quit in the background. The profile directory goes with
/// the struct's fields.
impl Drop for WebDriverSession {
    fn drop(&mut self) {
        if let Some(mut chromedriver) = self.chromedriver.take() {
            chromedriver.kill_group();
        }
        // Quitting through the API marks the session as quit (thirtyfour would otherwise tear
        // it down synchronously, blocking the executor); against our killed chromedriver it
        // fails at once, against a configured server it ends the browser there.
        if let Some(driver) = self.driver.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move {
                        let _ = driver.quit().await;
                    });
                }
                Err(_) => drop(driver),
            }
        }
    }
}

impl WebDriverSession {
    fn driver(&self) -> BrowserResult<&WebDriver> {
        self.driver
            .as_ref()
            .ok_or_else(|| BrowserError::Failed("the session is closed".to_owned()))
    }

    fn devtools(&self) -> BrowserResult<Cdp> {
        Ok(self.driver()?.cdp())
    }
}

impl BrowserSession for WebDriverSession {
    fn navigate<'a>(&'a mut self, url: &'a str) -> BoxFuture<'a, BrowserResult<()>> {
        Box::pin(async move {
            self.driver()?
                .goto(url)
                .await
                .map_err(|e| failed("cannot load the page", e))
        })
    }

    fn wait_any<'a>(
        &'a mut self,
        selectors: &'a [&'a str],
        timeout: Duration,
    ) -> BoxFuture<'a, BrowserResult<Option<usize>>> {
        Box::pin(async move {
            let driver = self.driver()?;
            let deadline = Instant::now() + timeout;
            loop {
                for (i, selector) in selectors.iter().enumerate() {
                    match driver.find_all(By::Css(*selector)).await {
                        Ok(found) if !found.is_empty() => return Ok(Some(i)),
                        Ok(_) => {}
                        // A page being replaced answers with transient errors.
                        Err(e) if is_transient(&e) => {}
                        Err(e) => return Err(failed("cannot search the page", e)),
                    }
                }
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    fn type_into<'a>(
        &'a mut self,
        selector: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, BrowserResult<()>> {
        Box::pin(async move {
            let element = self
                .driver()?
                .find(By::Css(selector))
                .await
                .map_err(|e| failed(&format!("cannot find {selector}"), e))?;
            element
                .clear()
                .await
                .map_err(|e| failed(&format!("cannot clear {selector}"), e))?;
            element
                .send_keys(text)
                .await
                .map_err(|e| failed(&format!("cannot type into {selector}"), e))
        })
    }

    fn click<'a>(&'a mut self, selector: &'a str) -> BoxFuture<'a, BrowserResult<()>> {
        Box::pin(async move {
            let element = self
                .driver()?
                .find(By::Css(selector))
                .await
                .map_err(|e| failed(&format!("cannot find {selector}"), e))?;
            element
                .click()
                .await
                .map_err(|e| failed(&format!("cannot click {selector}"), e))
        })
    }

    fn current_url(&mut self) -> BoxFuture<'_, BrowserResult<String>> {
        Box::pin(async move {
            self.driver()?
                .current_url()
                .await
                .map(|u| u.to_string())
                .map_err(|e| failed("cannot read the URL", e))
        })
    }

    fn cookies(&mut self) -> BoxFuture<'_, BrowserResult<Vec<BrowserCookie>>> {
        Box::pin(async move {
            let devtools = self.devtools()?;
            let answer = match devtools.send_raw("Network.getAllCookies", json!({})).await {
                Ok(answer) => answer,
                // Newer Chromium may drop the Network domain's command; Storage has the same.
                Err(_) => devtools
                    .send_raw("Storage.getCookies", json!({}))
                    .await
                    .map_err(|e| failed("cannot read the cookies", e))?,
            };
            Ok(parse_cdp_cookies(&answer))
        })
    }

    fn authorization(&mut self) -> BoxFuture<'_, BrowserResult<Option<Secret>>> {
        Box::pin(async move {
            let answer = self
                .driver()?
                .execute(READ_CAPTURE, Vec::new())
                .await
                .map_err(|e| failed("cannot read the captured authorization", e))?;
            Ok(answer
                .json()
                .as_str()
                .filter(|s| !s.is_empty())
                .map(Secret::new))
        })
    }

    fn screenshot(&mut self) -> BoxFuture<'_, BrowserResult<Vec<u8>>> {
        Box::pin(async move {
            self.driver()?
                .screenshot_as_png()
                .await
                .map_err(|e| failed("cannot take a screenshot", e))
        })
    }

    fn close(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(driver) = self.driver.take()
                && let Err(e) = driver.quit().await
            {
                tracing::warn!(error = %truncate(&e.to_string(), 200), "cannot quit the browser session");
            }
            if let Some(mut chromedriver) = self.chromedriver.take() {
                chromedriver.kill_group();
                let _ = chromedriver.child.wait().await;
            }
            if let Some(profile) = self.profile.take() {
                // Removing a large profile is blocking file system work.
                let _ = tokio::task::spawn_blocking(move || profile.close()).await;
            }
        })
    }
}

/// Errors a page in the middle of a navigation gives.
fn is_transient(e: &WebDriverError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("stale")
        || text.contains("no such execution context")
        || text.contains("detached")
}

/// The cookies of a CDP `Network.getAllCookies` / `Storage.getCookies` answer.
pub(crate) fn parse_cdp_cookies(answer: &Value) -> Vec<BrowserCookie> {
    answer
        .get("cookies")
        .and_then(Value::as_array)
        .map(|cookies| {
            cookies
                .iter()
                .filter_map(|c| {
                    Some(BrowserCookie {
                        name: c.get("name")?.as_str()?.to_owned(),
                        value: Secret::new(c.get("value")?.as_str()?),
                        domain: c.get("domain")?.as_str()?.to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdp_cookies_are_read_with_their_domains() {
        let answer = json!({"cookies": [
            {"name": "__Secure-C_SES", "value": "v1", "domain": ".gemini.google", "path": "/"},
            {"name": "NID", "value": "v2", "domain": "127.0.0.1"},
            {"name": "broken"}
        ]});
        let cookies = parse_cdp_cookies(&answer);
        assert_eq!(cookies.len(), 2);
        assert_eq!(cookies[0].domain, ".gemini.google");
        assert_eq!(cookies[1].value.expose(), "v2");
    }

    #[test]
    fn network_errors_are_told_apart() {
        let e = failed(
            "cannot load the page",
            "unknown error: net::ERR_CONNECTION_REFUSED\n  (Session info)",
        );
        assert_eq!(
            e,
            BrowserError::Network("cannot load the page: net::ERR_CONNECTION_REFUSED".into())
        );
        assert!(matches!(
            failed("x", "session not created"),
            BrowserError::Failed(_)
        ));
    }
}
