//! [`BrowserRunner`]: the [`TaskRunner`] that re-logs accounts in a real browser (`relogin`
//! tasks; a `probe` is not its kind and fails as unsupported), and the bounded directory of
//! screenshots of failed logins.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use business2api_shared::protocol::{
    FailureReason, MAX_TEXT_BYTES, OtpSource, ReloginTask, Task, TaskKindName, TaskOutcome,
    TaskSpec,
};
use futures_util::future::BoxFuture;

use crate::browser::{Browser, WebDriverBrowser, WebDriverOptions};
use crate::otp::{CodeSource, ImapCodes, OperatorCodes};
use crate::relay::Relay;
use crate::relogin::{Login, LoginFailure, relogin};
use crate::runner::{TaskContext, TaskRunner};

/// How the browser runner logs accounts in.
#[derive(Debug, Clone)]
pub struct BrowserConfig {
    /// The login page (`browser.login_url`).
    pub login_url: String,
    /// A running WebDriver server (`browser.webdriver_url`); none: start chromedriver.
    pub webdriver_url: Option<url::Url>,
    /// `browser.chromedriver_path`.
    pub chromedriver_path: PathBuf,
    /// `browser.chromium_path` (none: chromedriver finds Chromium).
    pub chromium_path: Option<PathBuf>,
    /// `pool.browser_refresh_headless`.
    pub headless: bool,
    /// The bound on each step of a login (`browser.step_timeout_sec`).
    pub step_timeout: Duration,
    /// Where screenshots of failed logins go (none: not kept).
    pub screenshots_dir: Option<PathBuf>,
    /// How many screenshots are kept (the oldest are deleted).
    pub screenshots_keep: usize,
}

/// The default `browser.login_url`.
pub const DEFAULT_LOGIN_URL: &str =
    "https://auth.business.gemini.google/login?continueUrl=https://business.gemini.google/";

impl Default for BrowserConfig {
    fn default() -> BrowserConfig {
        BrowserConfig {
            login_url: DEFAULT_LOGIN_URL.to_owned(),
            webdriver_url: None,
            chromedriver_path: PathBuf::from("chromedriver"),
            chromium_path: None,
            headless: true,
            step_timeout: Duration::from_secs(30),
            screenshots_dir: None,
            screenshots_keep: 20,
        }
    }
}

/// The message of a `probe` this runner does not run.
pub const PROBE_UNSUPPORTED: &str = "the browser runner does not probe accounts";

/// Runs `relogin` tasks in a browser (see the module documentation).
#[derive(Clone)]
pub struct BrowserRunner {
    config: Arc<BrowserConfig>,
    browser: Arc<dyn Browser>,
}

impl std::fmt::Debug for BrowserRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserRunner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl BrowserRunner {
    /// A runner with Chromium through chromedriver ([`WebDriverBrowser`]).
    pub fn new(config: BrowserConfig) -> BrowserRunner {
        let browser = WebDriverBrowser::new(WebDriverOptions {
            webdriver_url: config.webdriver_url.clone(),
            chromedriver_path: config.chromedriver_path.clone(),
            chromium_path: config.chromium_path.clone(),
            headless: config.headless,
            start_timeout: config.step_timeout.max(Duration::from_secs(30)),
            ..WebDriverOptions::default()
        });
        BrowserRunner::with_browser(config, Arc::new(browser))
    }

    /// A runner with another [`Browser`] (a [`FakeBrowser`](crate::browser::FakeBrowser) in
    /// tests).
    pub fn with_browser(config: BrowserConfig, browser: Arc<dyn Browser>) -> BrowserRunner {
        BrowserRunner {
            config: Arc::new(config),
            browser,
        }
    }
}

impl TaskRunner for BrowserRunner {
    fn kinds(&self) -> Vec<TaskKindName> {
        vec![TaskKindName::Relogin]
    }

    fn run(&self, task: Task, ctx: TaskContext) -> BoxFuture<'static, TaskOutcome> {
        let config = Arc::clone(&self.config);
        let browser = Arc::clone(&self.browser);
        Box::pin(async move {
            let id = task.id.as_str().to_owned();
            let relogin_task = match task.spec {
                TaskSpec::Relogin(r) => r,
                TaskSpec::Probe(_) => return failed(FailureReason::Unsupported, PROBE_UNSUPPORTED),
                TaskSpec::Unknown => {
                    return failed(FailureReason::Unsupported, "unknown task kind");
                }
            };
            run_relogin(&config, browser.as_ref(), relogin_task, ctx, &id).await
        })
    }
}

fn failed(reason: FailureReason, message: &str) -> TaskOutcome {
    TaskOutcome::Failed {
        reason,
        message: bounded(message),
    }
}

/// `message` on one line, at most [`MAX_TEXT_BYTES`] (what the protocol accepts).
fn bounded(message: &str) -> String {
    let mut text: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// How the browser reaches a task's proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrowserProxy {
    /// A proxy without a password: its URL without credentials, given to the browser as is.
    Direct(String),
    /// A proxy with a password, which the browser's `--proxy-server` cannot send: the browser
    /// goes through a loopback [`Relay`] that authenticates to the proxy.
    Relay,
}

/// How the browser uses a task's proxy URL: directly (the URL without credentials) when it has
/// no password, through a [`Relay`] when it has one; or why it cannot be used (not a URL, no
/// host). The error never contains the URL.
pub fn browser_proxy(proxy: &str) -> Result<BrowserProxy, String> {
    let url =
        url::Url::parse(proxy).map_err(|_| "the account's proxy is not a valid URL".to_owned())?;
    let host = url
        .host_str()
        .ok_or_else(|| "the account's proxy URL has no host".to_owned())?;
    if url.password().is_some() {
        return Ok(BrowserProxy::Relay);
    }
    Ok(BrowserProxy::Direct(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }))
}

async fn run_relogin(
    config: &BrowserConfig,
    browser: &dyn Browser,
    task: ReloginTask,
    mut ctx: TaskContext,
    task_id: &str,
) -> TaskOutcome {
    // A relay lives until the re-login ends (dropped with this future, also on cancellation).
    let mut _relay = None;
    let proxy = match &task.proxy {
        None => None,
        Some(proxy) => match browser_proxy(proxy.expose()) {
            Ok(BrowserProxy::Direct(direct)) => Some(direct),
            Ok(BrowserProxy::Relay) => match Relay::start(proxy.expose()).await {
                Ok(relay) => {
                    let local = relay.browser_proxy();
                    _relay = Some(relay);
                    Some(local)
                }
                Err(e) => {
                    let reason = if e.kind() == std::io::ErrorKind::InvalidInput {
                        FailureReason::Unsupported
                    } else {
                        FailureReason::NetworkFailed
                    };
                    return failed(
                        reason,
                        &format!("cannot relay the account's proxy for the browser: {e}"),
                    );
                }
            },
            Err(message) => return failed(FailureReason::Unsupported, &message),
        },
    };
    let email = task.account.as_str().to_owned();
    let mut codes: Box<dyn CodeSource> = match task.otp {
        OtpSource::Imap(mailbox) => Box::new(ImapCodes::new(mailbox, &email)),
        OtpSource::Operator { timeout_ms } => Box::new(OperatorCodes {
            timeout: Duration::from_millis(timeout_ms),
        }),
    };
    let login = Login {
        email: &email,
        login_url: &config.login_url,
        step_timeout: config.step_timeout,
        proxy,
    };
    match relogin(browser, codes.as_mut(), &mut ctx, &login).await {
        Ok(credentials) => {
            tracing::info!(
                task = task_id,
                cookies = credentials.cookies.len(),
                "re-login succeeded"
            );
            TaskOutcome::ReloggedIn { credentials }
        }
        Err(failure) => {
            let LoginFailure {
                reason,
                mut message,
                screenshot,
            } = failure;
            if let (Some(png), Some(dir)) = (screenshot, &config.screenshots_dir) {
                match keep_screenshot(dir, config.screenshots_keep, task_id, reason, png).await {
                    Ok(name) => message.push_str(&format!(" (screenshot {name})")),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot keep the screenshot of a failed login")
                    }
                }
            }
            tracing::warn!(task = task_id, reason = ?reason, message = %message, "re-login failed");
            failed(reason, &message)
        }
    }
}

/// Writes `png` into `dir` as `<UTC time>-<task id>-<reason>.png` and deletes the oldest
/// screenshots beyond `keep`. Returns the file name.
pub async fn keep_screenshot(
    dir: &Path,
    keep: usize,
    task_id: &str,
    reason: FailureReason,
    png: Vec<u8>,
) -> std::io::Result<String> {
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    );
    let safe_id: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let reason = serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "failed".to_owned());
    let name = format!("{stamp}-{safe_id}-{reason}.png");
    let dir = dir.to_owned();
    let file = name.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(&file), png)?;
        prune(&dir, keep)
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(name)
}

/// Deletes the oldest `.png` files in `dir` beyond `keep` (names start with the time, so the
/// name order is the age order).
fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for old in names.into_iter().take(excess) {
        std::fs::remove_file(old)?;
    }
    Ok(())
}
