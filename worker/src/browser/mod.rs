//! What a login needs from a browser: the [`Browser`] trait (a launcher of fresh sessions) and
//! [`BrowserSession`] (one fresh, temporary profile). Two implementations: [`WebDriverBrowser`]
//! (chromedriver + Chromium through thirtyfour) and the scripted [`FakeBrowser`] for tests.
//!
//! A session is released when it is dropped (the task's future dropped on cancel): the WebDriver
//! session is deleted, the chromedriver this worker started is killed and the temporary profile
//! is removed. [`BrowserSession::close`] does the same gracefully.

use std::fmt;
use std::time::Duration;

use business2api_shared::Secret;
use futures_util::future::BoxFuture;

mod fake;
mod webdriver;

pub use fake::{FakeBrowser, FakePage, FakeScript};
pub use webdriver::{WebDriverBrowser, WebDriverOptions, running_as_root};

/// Why a browser operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrowserError {
    /// The browser, the WebDriver or chromedriver failed (message without secrets).
    Failed(String),
    /// The page could not be reached (DNS, connection, proxy).
    Network(String),
}

impl fmt::Display for BrowserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrowserError::Failed(m) => write!(f, "browser failed: {m}"),
            BrowserError::Network(m) => write!(f, "network failed: {m}"),
        }
    }
}

impl std::error::Error for BrowserError {}

/// One cookie of the browser profile (any domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserCookie {
    pub name: String,
    pub value: Secret,
    pub domain: String,
}

/// How a session is opened.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// `--proxy-server` for the browser (a proxy URL without credentials).
    pub proxy: Option<String>,
}

/// The result of a browser operation.
pub type BrowserResult<T> = Result<T, BrowserError>;

/// Opens fresh browser sessions (each with its own temporary profile).
pub trait Browser: Send + Sync + 'static {
    fn open(
        &self,
        options: SessionOptions,
    ) -> BoxFuture<'_, BrowserResult<Box<dyn BrowserSession>>>;
}

/// One open browser session. Waits are bounded by the `timeout` given; a selector is CSS.
pub trait BrowserSession: Send {
    /// Loads `url` (returns once the page has loaded).
    fn navigate<'a>(&'a mut self, url: &'a str) -> BoxFuture<'a, BrowserResult<()>>;

    /// Waits up to `timeout` for any of `selectors` to match an element; the index of the
    /// first that matches, or `None` when none did in time.
    fn wait_any<'a>(
        &'a mut self,
        selectors: &'a [&'a str],
        timeout: Duration,
    ) -> BoxFuture<'a, BrowserResult<Option<usize>>>;

    /// Types `text` into the element `selector` matches (after clearing it).
    fn type_into<'a>(
        &'a mut self,
        selector: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, BrowserResult<()>>;

    /// Clicks the element `selector` matches.
    fn click<'a>(&'a mut self, selector: &'a str) -> BoxFuture<'a, BrowserResult<()>>;

    /// The current page's URL.
    fn current_url(&mut self) -> BoxFuture<'_, BrowserResult<String>>;

    /// Every cookie of the profile, on every domain.
    fn cookies(&mut self) -> BoxFuture<'_, BrowserResult<Vec<BrowserCookie>>>;

    /// The last `authorization` request header a page script set (through `fetch` or
    /// `XMLHttpRequest`), if any yet.
    fn authorization(&mut self) -> BoxFuture<'_, BrowserResult<Option<Secret>>>;

    /// A PNG screenshot of the page.
    fn screenshot(&mut self) -> BoxFuture<'_, BrowserResult<Vec<u8>>>;

    /// Ends the session and releases everything it holds.
    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}
