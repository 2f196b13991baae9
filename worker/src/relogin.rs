//! The login driver: walks THE LOGIN CONTRACT in a [`Browser`] session (e-mail form, one-time
//! code, landing page) and captures the account's new credentials.
//!
//! Every wait is bounded by the step timeout; each step reports a [`ProgressStage`] (which
//! renews the task's lease). Nothing secret is logged: not a cookie, the authorization, the code
//! or a mailbox password. A failed login keeps a PNG screenshot for the runner to store.

use std::time::Duration;

use business2api_shared::Secret;
use business2api_shared::protocol::{
    AccountCredentials, FailureReason, MAX_COOKIES, ProgressStage, WireCookie,
};
use tokio::time::Instant;

use crate::browser::{Browser, BrowserError, BrowserSession, SessionOptions};
use crate::otp::CodeSource;
use crate::runner::TaskContext;

/// The e-mail form's address field.
pub const EMAIL_INPUT: &str = "#email-input";
/// The e-mail form's submit button.
pub const LOGIN_BUTTON: &str = "#log-in-button";
/// The e-mail page's error (an address Google does not know).
pub const LOGIN_ERROR: &str = "#login-error";
/// The code form's field.
pub const CODE_INPUT: &str = "#code-input";
/// The code form's submit button.
pub const VERIFY_BUTTON: &str = "#verify-button";
/// The code page's error (a wrong code).
pub const CODE_ERROR: &str = "#code-error";

/// How often the driver looks at the page while it waits for the landing URL and the
/// authorization.
const POLL: Duration = Duration::from_millis(250);
/// The bound on taking a screenshot of a failed login.
const SCREENSHOT_TIMEOUT: Duration = Duration::from_secs(10);

/// What one login needs.
#[derive(Debug, Clone)]
pub struct Login<'a> {
    /// The account's e-mail address.
    pub email: &'a str,
    /// The login page (`…/login?continueUrl=…`).
    pub login_url: &'a str,
    /// The bound on each wait.
    pub step_timeout: Duration,
    /// The browser's proxy (no credentials).
    pub proxy: Option<String>,
}

/// Why a login failed, with the screenshot of the page it failed on (when one could be taken).
#[derive(Debug, Clone)]
pub struct LoginFailure {
    pub reason: FailureReason,
    /// For the operator: never a credential, a code or the e-mail address.
    pub message: String,
    pub screenshot: Option<Vec<u8>>,
}

impl LoginFailure {
    fn new(reason: FailureReason, message: impl Into<String>) -> LoginFailure {
        LoginFailure {
            reason,
            message: message.into(),
            screenshot: None,
        }
    }
}

impl From<BrowserError> for LoginFailure {
    fn from(e: BrowserError) -> LoginFailure {
        match e {
            BrowserError::Network(m) => LoginFailure::new(FailureReason::NetworkFailed, m),
            BrowserError::Failed(m) => LoginFailure::new(FailureReason::BrowserFailed, m),
        }
    }
}

/// Logs `login.email` in through a fresh session of `browser`, with the code from `codes`.
/// The session is closed at the end; if this future is dropped (the task cancelled), dropping
/// the session releases the browser.
pub async fn relogin(
    browser: &dyn Browser,
    codes: &mut dyn CodeSource,
    ctx: &mut TaskContext,
    login: &Login<'_>,
) -> Result<AccountCredentials, LoginFailure> {
    ctx.progress(ProgressStage::StartingBrowser);
    let mut session = browser
        .open(SessionOptions {
            proxy: login.proxy.clone(),
        })
        .await?;
    let result = steps(session.as_mut(), codes, ctx, login).await;
    codes.finish().await;
    let result = match result {
        Ok(credentials) => Ok(credentials),
        Err(mut failure) => {
            if let Ok(Ok(png)) =
                tokio::time::timeout(SCREENSHOT_TIMEOUT, session.screenshot()).await
            {
                failure.screenshot = Some(png);
            }
            Err(failure)
        }
    };
    session.close().await;
    result
}

async fn steps(
    session: &mut dyn BrowserSession,
    codes: &mut dyn CodeSource,
    ctx: &mut TaskContext,
    login: &Login<'_>,
) -> Result<AccountCredentials, LoginFailure> {
    let step = login.step_timeout;
    session.navigate(login.login_url).await?;
    if session.wait_any(&[EMAIL_INPUT], step).await?.is_none() {
        return Err(LoginFailure::new(
            FailureReason::PageChanged,
            format!(
                "the login page has no e-mail field ({EMAIL_INPUT}) after {} s",
                step.as_secs()
            ),
        ));
    }
    // A mailbox notes where new mail starts before the code can be sent.
    codes
        .start()
        .await
        .map_err(|e| LoginFailure::new(e.reason, e.message))?;
    session.type_into(EMAIL_INPUT, login.email).await?;
    session.click(LOGIN_BUTTON).await?;
    ctx.progress(ProgressStage::EmailSubmitted);
    match session.wait_any(&[LOGIN_ERROR, CODE_INPUT], step).await? {
        // Google does not know the address: no existing reason names that; the page did not go
        // where a login goes, and the operator must look at the account (not retry a code).
        Some(0) => {
            return Err(LoginFailure::new(
                FailureReason::PageChanged,
                "the login page refused the account's e-mail address (#login-error): \
                 the account may not exist any more",
            ));
        }
        Some(_) => {}
        None => {
            return Err(LoginFailure::new(
                FailureReason::PageChanged,
                format!(
                    "no code form ({CODE_INPUT}) within {} s of submitting the e-mail address",
                    step.as_secs()
                ),
            ));
        }
    }
    ctx.progress(ProgressStage::WaitingForCode);
    let code = codes
        .code(ctx)
        .await
        .map_err(|e| LoginFailure::new(e.reason, e.message))?;
    session.type_into(CODE_INPUT, code.expose()).await?;
    drop(code);
    session.click(VERIFY_BUTTON).await?;
    ctx.progress(ProgressStage::CodeSubmitted);
    let (config_id, csesidx) = wait_for_landing(session, step).await?;
    ctx.progress(ProgressStage::CapturingCredentials);
    let authorization = wait_for_authorization(session, step).await?;
    let cookies = session
        .cookies()
        .await
        .map_err(|e| LoginFailure::new(FailureReason::CaptureFailed, format!("cookies: {e}")))?;
    let credentials = AccountCredentials {
        cookies: wire_cookies(cookies)?,
        authorization,
        config_id,
        csesidx,
    };
    credentials.validate().map_err(|e| {
        LoginFailure::new(
            FailureReason::CaptureFailed,
            format!("the captured credentials are unusable: {e}"),
        )
    })?;
    Ok(credentials)
}

/// Waits for the landing URL (`/cid/<configId>` and `csesidx=<digits>`), failing early on a
/// wrong code.
async fn wait_for_landing(
    session: &mut dyn BrowserSession,
    step: Duration,
) -> Result<(String, String), LoginFailure> {
    let deadline = Instant::now() + step;
    loop {
        let url = session.current_url().await?;
        if let Some(found) = landing(&url) {
            return Ok(found);
        }
        if session
            .wait_any(&[CODE_ERROR], Duration::ZERO)
            .await?
            .is_some()
        {
            return Err(LoginFailure::new(
                FailureReason::WrongCode,
                "the login page refused the one-time code (#code-error)",
            ));
        }
        if Instant::now() >= deadline {
            return Err(LoginFailure::new(
                FailureReason::PageChanged,
                format!(
                    "the browser did not reach a page with /cid/<configId> and csesidx within {} s \
                     of submitting the code",
                    step.as_secs()
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_for_authorization(
    session: &mut dyn BrowserSession,
    step: Duration,
) -> Result<Secret, LoginFailure> {
    let deadline = Instant::now() + step;
    loop {
        match session.authorization().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => {
                return Err(LoginFailure::new(
                    FailureReason::CaptureFailed,
                    format!("authorization: {e}"),
                ));
            }
        }
        if Instant::now() >= deadline {
            return Err(LoginFailure::new(
                FailureReason::CaptureFailed,
                format!(
                    "the landing page sent no request with an authorization header within {} s",
                    step.as_secs()
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `(configId, csesidx)` when `url`'s path has `/cid/<configId>` and its query `csesidx=<digits>`.
///
/// The same two values an operator copies by hand from the address bar of a signed-in
/// Gemini Business tab:
///
/// ```
/// use business2api_worker::relogin::landing;
///
/// let url = "https://business.gemini.google/home/cid/0f1e2d3c-aaaa-bbbb-cccc-123456789abc?csesidx=1234567890";
/// assert_eq!(
///     landing(url),
///     Some((
///         "0f1e2d3c-aaaa-bbbb-cccc-123456789abc".to_owned(),
///         "1234567890".to_owned()
///     ))
/// );
/// // Not a landing page yet: no configId, or a csesidx that is not all digits.
/// assert_eq!(landing("https://business.gemini.google/home?csesidx=1"), None);
/// assert_eq!(landing("https://business.gemini.google/home/cid/abc?csesidx=1a"), None);
/// ```
pub fn landing(url: &str) -> Option<(String, String)> {
    let url = url::Url::parse(url).ok()?;
    let mut segments = url.path_segments()?;
    segments.find(|s| *s == "cid")?;
    let config_id = segments.next().filter(|s| !s.is_empty())?.to_owned();
    let csesidx = url
        .query_pairs()
        .find(|(k, _)| k == "csesidx")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))?;
    Some((config_id, csesidx))
}

fn wire_cookies(
    cookies: Vec<crate::browser::BrowserCookie>,
) -> Result<Vec<WireCookie>, LoginFailure> {
    if cookies.is_empty() {
        return Err(LoginFailure::new(
            FailureReason::CaptureFailed,
            "the browser profile has no cookies after the login",
        ));
    }
    if cookies.len() > MAX_COOKIES {
        return Err(LoginFailure::new(
            FailureReason::CaptureFailed,
            format!(
                "the browser profile has {} cookies, more than the {MAX_COOKIES} a credential may carry",
                cookies.len()
            ),
        ));
    }
    Ok(cookies
        .into_iter()
        .map(|c| WireCookie {
            name: c.name,
            value: c.value,
            domain: c.domain,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_landing_url_gives_the_config_id_and_csesidx() {
        assert_eq!(
            landing("https://business.gemini.google/home/cid/abc-123?csesidx=42&x=1"),
            Some(("abc-123".to_owned(), "42".to_owned()))
        );
        assert_eq!(landing("https://x/home/cid/abc?csesidx=4a"), None);
        assert_eq!(landing("https://x/home/cid/?csesidx=4"), None);
        assert_eq!(landing("https://x/home/abc?csesidx=4"), None);
        assert_eq!(landing("https://x/home/cid/abc"), None);
        assert_eq!(landing("not a url"), None);
    }
}

#[cfg(test)]
#[path = "relogin_tests.rs"]
mod driver_tests;
