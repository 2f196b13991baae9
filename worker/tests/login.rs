//! Re-login end to end: the IMAP code source against a mailbox that follows THE LOGIN CONTRACT,
//! and real Chromium + chromedriver driving the contract's login pages through `BrowserRunner`.
//! Both servers are local stand-ins (tests/common) on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

use std::time::Duration;

use business2api_shared::protocol::{
    FailureReason, ImapMailbox, OtpSource, ReloginTask, Task, TaskId, TaskOutcome, TaskSpec,
};
use business2api_shared::{AccountKey, Secret};
use business2api_worker::otp::{CodeSource, ImapCodes};
use business2api_worker::{BrowserConfig, BrowserRunner, TaskContext, TaskRunner};
use common::{code_mail, imap, pages};

const EMAIL: &str = "alice@example.com";
const USER: &str = "operator@example.com";
const PASSWORD: &str = "imap-pass-secret";

fn mailbox_for(m: &imap::Mailbox, password: &str, timeout_ms: u64) -> ImapMailbox {
    ImapMailbox {
        host: "127.0.0.1".into(),
        port: m.port,
        tls: false,
        username: Secret::new(USER),
        password: Secret::new(password),
        folder: "INBOX".into(),
        timeout_ms,
    }
}

#[tokio::test]
async fn imap_takes_the_newest_code_for_the_account_that_arrived_after_the_start() {
    let m = imap::start(USER, PASSWORD).await;
    // Before the task: an old code for the account (must be ignored).
    m.deliver(code_mail(EMAIL, "OLD111"));
    let mut codes = ImapCodes::new(mailbox_for(&m, PASSWORD, 10_000), EMAIL);
    codes.start().await.unwrap();
    let mailbox = m.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // A catch-all: another account's code first, then ours.
        mailbox.deliver(code_mail("bob@example.com", "BOB222"));
        mailbox.deliver(code_mail(EMAIL, "NEW333"));
    });
    let mut ctx = TaskContext::detached(TaskId::parse("t").unwrap());
    let code = codes.code(&mut ctx).await.unwrap();
    assert_eq!(code.expose(), "NEW333");
    codes.finish().await;
    let commands = m.commands();
    let verbs: Vec<String> = commands
        .iter()
        .map(|c| c.split(' ').skip(1).take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert!(verbs.iter().any(|v| v == "LOGIN ***"), "{commands:?}");
    assert!(
        verbs.iter().any(|v| v.starts_with("SELECT")),
        "{commands:?}"
    );
    assert!(
        commands.iter().any(|c| c.contains("UID SEARCH UID 2:*")),
        "{commands:?}"
    );
    assert!(
        commands.iter().any(|c| c.contains("(UID BODY.PEEK[])")),
        "{commands:?}"
    );
    assert!(verbs.last().unwrap().starts_with("LOGOUT"), "{commands:?}");
    // Only the contract's commands.
    for v in &verbs {
        let known = [
            "LOGIN",
            "SELECT",
            "NOOP",
            "UID SEARCH",
            "UID FETCH",
            "LOGOUT",
        ]
        .iter()
        .any(|k| v.starts_with(k));
        assert!(known, "unexpected IMAP command {v}");
    }
}

#[tokio::test]
async fn imap_without_a_new_code_is_code_never_arrived() {
    let m = imap::start(USER, PASSWORD).await;
    m.deliver(code_mail(EMAIL, "OLD111"));
    let mut codes = ImapCodes::new(mailbox_for(&m, PASSWORD, 2_500), EMAIL);
    codes.start().await.unwrap();
    let mut ctx = TaskContext::detached(TaskId::parse("t").unwrap());
    let started = std::time::Instant::now();
    let e = codes.code(&mut ctx).await.unwrap_err();
    assert_eq!(e.reason, FailureReason::CodeNeverArrived);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the mailbox's timeout"
    );
}

#[tokio::test]
async fn imap_refusing_the_login_is_network_failed_without_the_password() {
    let m = imap::start(USER, PASSWORD).await;
    let mut codes = ImapCodes::new(mailbox_for(&m, "wrong-pass-secret", 5_000), EMAIL);
    let e = codes.start().await.unwrap_err();
    assert_eq!(e.reason, FailureReason::NetworkFailed);
    assert!(e.message.contains("login was refused"), "{}", e.message);
    assert!(!e.message.contains("secret"), "{}", e.message);
}

// ---------------------------------------------------------------------------------------------
// Real Chromium

/// The temporary browser profiles that exist now.
fn profiles() -> Vec<std::path::PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("b2a-chromium-"))
        .map(|e| e.path())
        .collect()
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().into_string().unwrap_or_default();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == std::process::id().to_string() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                found.push(format!("{name}: {text}"));
            }
        }
    }
    found
}

async fn no_browser_left() {
    for _ in 0..100 {
        if processes_with("b2a-chromium-").is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "browser processes left: {:?}",
        processes_with("b2a-chromium-")
    );
}

fn relogin_task(m: &imap::Mailbox, timeout_ms: u64) -> Task {
    Task {
        id: TaskId::parse("real-1").unwrap(),
        attempt: 1,
        lease_ms: 60_000,
        spec: TaskSpec::Relogin(ReloginTask {
            account: AccountKey::new(EMAIL),
            otp: OtpSource::Imap(mailbox_for(m, PASSWORD, timeout_ms)),
            proxy: None,
        }),
    }
}

fn setup(
    send_code: bool,
    mailbox: &imap::Mailbox,
    shots: &std::path::Path,
) -> (pages::Pages, BrowserRunner) {
    let pages = pages::start(
        pages::PagesState {
            email: EMAIL.into(),
            code: "K7Q2ZX".into(),
            config_id: "cfg-42".into(),
            csesidx: "9876543".into(),
            jwt: pages::jwt("9876543"),
            send_code,
            ..pages::PagesState::default()
        },
        Some(mailbox.clone()),
    );
    let runner = BrowserRunner::new(BrowserConfig {
        login_url: format!("{}/login?continueUrl={}/", pages.base, pages.base),
        step_timeout: Duration::from_secs(60),
        screenshots_dir: Some(shots.to_owned()),
        screenshots_keep: 5,
        ..BrowserConfig::default()
    });
    (pages, runner)
}

#[actix_web::test]
async fn real_chromium_relogs_in_through_the_login_pages_with_the_mailbox_code() {
    let _one = upstream_sim::one_browser_at_a_time().unwrap();
    let m = imap::start(USER, PASSWORD).await;
    let shots = tempfile::tempdir().unwrap();
    let (pages, runner) = setup(true, &m, shots.path());
    let ctx = TaskContext::detached(TaskId::parse("real-1").unwrap());
    let outcome = tokio::time::timeout(
        Duration::from_secs(180),
        runner.run(relogin_task(&m, 60_000), ctx),
    )
    .await
    .unwrap();
    outcome.validate().unwrap();
    let TaskOutcome::ReloggedIn { credentials } = outcome else {
        panic!("expected relogged_in, got {outcome:?}");
    };
    let (c_ses, seen, jwt) = {
        let state = pages.state.lock().unwrap();
        (
            state.c_ses.clone(),
            state.authorization.clone(),
            state.jwt.clone(),
        )
    };
    assert_eq!(credentials.config_id, "cfg-42");
    assert_eq!(credentials.csesidx, "9876543");
    let seen = seen.unwrap();
    assert_eq!(
        credentials.authorization.expose(),
        seen,
        "the header the page sent"
    );
    assert_eq!(seen, format!("Bearer {jwt}"));
    let cookie = |name: &str| {
        credentials
            .cookies
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", credentials.cookies))
    };
    assert_eq!(
        Some(cookie("__Secure-C_SES").value.expose()),
        c_ses.as_deref()
    );
    assert_eq!(cookie("__Host-C_OSES").value.expose(), "COS.fresh");
    assert_eq!(cookie("NID").domain, "127.0.0.1");
    pages.handle.stop(false).await;
    no_browser_left().await;
}

#[actix_web::test]
async fn real_chromium_is_gone_when_a_waiting_task_is_cancelled() {
    let _one = upstream_sim::one_browser_at_a_time().unwrap();
    let m = imap::start(USER, PASSWORD).await;
    let shots = tempfile::tempdir().unwrap();
    let (pages, runner) = setup(false, &m, shots.path());
    let before = profiles();
    let ctx = TaskContext::detached(TaskId::parse("real-1").unwrap());
    let task = actix_web::rt::spawn(runner.run(relogin_task(&m, 600_000), ctx));
    // Wait until the browser is on the code page (the task now waits for a code).
    let mut waiting = false;
    for _ in 0..1200 {
        if pages.saw("/verify") {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(waiting, "the browser never reached the code page");
    assert!(
        !processes_with("b2a-chromium-").is_empty(),
        "a browser runs while the task waits"
    );
    task.abort();
    let _ = task.await;
    no_browser_left().await;
    let left: Vec<_> = profiles()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(left.is_empty(), "temporary profiles left: {left:?}");
    pages.handle.stop(false).await;
}

#[actix_web::test]
async fn real_chromium_reports_a_wrong_code_with_a_screenshot() {
    let _one = upstream_sim::one_browser_at_a_time().unwrap();
    let m = imap::start(USER, PASSWORD).await;
    let shots = tempfile::tempdir().unwrap();
    let (pages, runner) = setup(false, &m, shots.path());
    // The mailbox holds a wrong code for the account, delivered once the e-mail is submitted.
    let mailbox = m.clone();
    let watcher = pages.clone();
    actix_web::rt::spawn(async move {
        while !watcher.saw("/login/email") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        mailbox.deliver(code_mail(EMAIL, "WRONG1"));
    });
    let ctx = TaskContext::detached(TaskId::parse("real-1").unwrap());
    let outcome = tokio::time::timeout(
        Duration::from_secs(180),
        runner.run(relogin_task(&m, 60_000), ctx),
    )
    .await
    .unwrap();
    let TaskOutcome::Failed { reason, message } = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert_eq!(reason, FailureReason::WrongCode, "{message}");
    let shot: Vec<_> = std::fs::read_dir(shots.path()).unwrap().flatten().collect();
    assert_eq!(shot.len(), 1);
    let name = shot[0].file_name().into_string().unwrap();
    assert!(message.contains(&name), "{message}");
    let png = std::fs::read(shot[0].path()).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a real PNG");
    pages.handle.stop(false).await;
    no_browser_left().await;
}
