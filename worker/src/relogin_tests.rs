//! The login driver through [`BrowserRunner`] against [`FakeBrowser`], for every path.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use business2api_shared::protocol::{
    FailureReason, ImapMailbox, OtpSource, ProbeTask, ProgressStage, ReloginTask, Task, TaskId,
    TaskOutcome, TaskSpec,
};
use business2api_shared::{AccountKey, Secret};
use tokio::sync::mpsc;

use crate::browser::{FakeBrowser, FakeScript};
use crate::browser_runner::{BrowserConfig, BrowserRunner, keep_screenshot};
use crate::runner::{TaskContext, TaskEvent, TaskRunner};

const EMAIL: &str = "alice@example.com";
const CODE: &str = "AB12CD";

fn task(otp: OtpSource, proxy: Option<&str>) -> Task {
    Task {
        id: TaskId::parse("task-1").unwrap(),
        attempt: 1,
        lease_ms: 60_000,
        spec: TaskSpec::Relogin(ReloginTask {
            account: AccountKey::new(EMAIL),
            otp,
            proxy: proxy.map(Secret::new),
        }),
    }
}

fn operator(ms: u64) -> OtpSource {
    OtpSource::Operator { timeout_ms: ms }
}

struct Run {
    runner: BrowserRunner,
    browser: FakeBrowser,
    _dir: tempfile::TempDir,
    shots: std::path::PathBuf,
}

fn setup(script: FakeScript) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let shots = dir.path().join("screenshots");
    let browser = FakeBrowser::new(script);
    let config = BrowserConfig {
        login_url: "http://127.0.0.1:9/login?continueUrl=x".into(),
        step_timeout: Duration::from_millis(300),
        screenshots_dir: Some(shots.clone()),
        screenshots_keep: 3,
        ..BrowserConfig::default()
    };
    Run {
        runner: BrowserRunner::with_browser(config, Arc::new(browser.clone())),
        browser,
        _dir: dir,
        shots,
    }
}

/// A context whose progress is recorded and which has `code` typed by the operator (if any).
fn context(
    code: Option<&str>,
) -> (
    TaskContext,
    mpsc::UnboundedReceiver<TaskEvent>,
    mpsc::Sender<Secret>,
) {
    let (events, rx) = mpsc::unbounded_channel();
    let (ctx, codes) = TaskContext::new(TaskId::parse("task-1").unwrap(), events);
    if let Some(code) = code {
        codes.try_send(Secret::new(code)).unwrap();
    }
    (ctx, rx, codes)
}

fn stages(rx: &mut mpsc::UnboundedReceiver<TaskEvent>) -> Vec<ProgressStage> {
    let mut out = Vec::new();
    while let Ok(event) = rx.try_recv() {
        if let TaskEvent::Progress(_, stage) = event {
            out.push(stage);
        }
    }
    out
}

fn failure(outcome: &TaskOutcome) -> (FailureReason, String) {
    match outcome {
        TaskOutcome::Failed { reason, message } => (*reason, message.clone()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn screenshots(run: &Run) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&run.shots)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_login_captures_the_new_credentials_and_reports_every_stage() {
    let run = setup(FakeScript::success(CODE, "cfg-1", "1234"));
    let (ctx, mut rx, _codes) = context(Some(CODE));
    let outcome = run.runner.run(task(operator(5_000), None), ctx).await;
    outcome.validate().unwrap();
    let TaskOutcome::ReloggedIn { credentials } = outcome else {
        panic!("expected relogged_in, got {outcome:?}");
    };
    assert_eq!(credentials.config_id, "cfg-1");
    assert_eq!(credentials.csesidx, "1234");
    assert!(credentials.authorization.expose().starts_with("Bearer "));
    let names: Vec<&str> = credentials
        .cookies
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["__Secure-C_SES", "__Host-C_OSES", "NID"]);
    assert_eq!(credentials.cookies[2].domain, ".google.com");
    assert_eq!(
        run.browser.typed(),
        [
            ("#email-input".to_owned(), EMAIL.to_owned()),
            ("#code-input".to_owned(), CODE.to_owned())
        ]
    );
    assert_eq!(
        stages(&mut rx),
        [
            ProgressStage::StartingBrowser,
            ProgressStage::EmailSubmitted,
            ProgressStage::WaitingForCode,
            ProgressStage::CodeSubmitted,
            ProgressStage::CapturingCredentials,
        ]
    );
    assert_eq!((run.browser.live(), run.browser.closed()), (0, 1));
    assert!(screenshots(&run).is_empty(), "no screenshot of a success");
}

#[tokio::test]
async fn a_login_page_without_the_email_field_is_page_changed_with_a_screenshot() {
    let run = setup(FakeScript {
        email_form: false,
        ..FakeScript::success(CODE, "cfg", "1")
    });
    let (ctx, _rx, _codes) = context(Some(CODE));
    let outcome = run.runner.run(task(operator(5_000), None), ctx).await;
    outcome.validate().unwrap();
    let (reason, message) = failure(&outcome);
    assert_eq!(reason, FailureReason::PageChanged);
    assert!(message.contains("#email-input"), "{message}");
    let shots = screenshots(&run);
    assert_eq!(shots.len(), 1);
    assert!(shots[0].ends_with("-task-1-page_changed.png"), "{shots:?}");
    assert!(
        !shots[0].contains("alice"),
        "never the e-mail in a file name"
    );
    assert!(
        message.contains(&shots[0]),
        "the message names the screenshot: {message}"
    );
    assert!(run.browser.typed().is_empty());
    assert_eq!(run.browser.live(), 0);
}

#[tokio::test]
async fn an_address_the_login_page_refuses_fails_without_waiting_for_a_code() {
    let run = setup(FakeScript {
        known_email: false,
        ..FakeScript::success(CODE, "cfg", "1")
    });
    let (ctx, mut rx, _codes) = context(None);
    let outcome = run.runner.run(task(operator(60_000), None), ctx).await;
    let (reason, message) = failure(&outcome);
    assert_eq!(reason, FailureReason::PageChanged);
    assert!(message.contains("#login-error"), "{message}");
    assert!(!message.contains(EMAIL));
    assert!(!stages(&mut rx).contains(&ProgressStage::WaitingForCode));
}

#[tokio::test]
async fn a_wrong_code_is_wrong_code() {
    let run = setup(FakeScript::success(CODE, "cfg", "1"));
    let (ctx, _rx, _codes) = context(Some("ZZ99ZZ"));
    let outcome = run.runner.run(task(operator(5_000), None), ctx).await;
    outcome.validate().unwrap();
    let (reason, message) = failure(&outcome);
    assert_eq!(reason, FailureReason::WrongCode);
    assert!(!message.contains("ZZ99ZZ"), "never the code in a message");
    assert_eq!(screenshots(&run).len(), 1);
}

#[tokio::test]
async fn no_code_in_time_is_code_never_arrived() {
    let run = setup(FakeScript::success(CODE, "cfg", "1"));
    let (ctx, mut rx, _codes) = context(None);
    let outcome = run.runner.run(task(operator(200), None), ctx).await;
    let (reason, _) = failure(&outcome);
    assert_eq!(reason, FailureReason::CodeNeverArrived);
    assert_eq!(stages(&mut rx).last(), Some(&ProgressStage::WaitingForCode));
    assert_eq!(run.browser.live(), 0);
}

#[tokio::test]
async fn an_unreachable_mailbox_is_network_failed_and_names_no_password() {
    let run = setup(FakeScript::success(CODE, "cfg", "1"));
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mailbox = ImapMailbox {
        host: "127.0.0.1".into(),
        port,
        tls: false,
        username: Secret::new(EMAIL),
        password: Secret::new("hunter2-secret"),
        folder: "INBOX".into(),
        timeout_ms: 2_000,
    };
    let (ctx, _rx, _codes) = context(None);
    let outcome = run
        .runner
        .run(task(OtpSource::Imap(mailbox), None), ctx)
        .await;
    let (reason, message) = failure(&outcome);
    assert_eq!(reason, FailureReason::NetworkFailed);
    assert!(message.contains("cannot connect"), "{message}");
    assert!(!message.contains("hunter2"));
}

#[tokio::test]
async fn no_authorization_on_the_landing_page_is_capture_failed() {
    let run = setup(FakeScript {
        authorization: None,
        ..FakeScript::success(CODE, "cfg", "1")
    });
    let (ctx, _rx, _codes) = context(Some(CODE));
    let (reason, message) = failure(&run.runner.run(task(operator(5_000), None), ctx).await);
    assert_eq!(reason, FailureReason::CaptureFailed);
    assert!(message.contains("authorization"), "{message}");
}

#[tokio::test]
async fn credentials_out_of_the_protocol_bounds_are_capture_failed() {
    let too_many = (0..60)
        .map(|i| (format!("c{i}"), "v".to_owned(), ".google.com".to_owned()))
        .collect();
    let run = setup(FakeScript {
        cookies: too_many,
        ..FakeScript::success(CODE, "cfg", "1")
    });
    let (ctx, _rx, _codes) = context(Some(CODE));
    let (reason, _) = failure(&run.runner.run(task(operator(5_000), None), ctx).await);
    assert_eq!(reason, FailureReason::CaptureFailed);

    let bad_value = vec![("NID".to_owned(), "a;b".to_owned(), ".google.com".to_owned())];
    let run = setup(FakeScript {
        cookies: bad_value,
        ..FakeScript::success(CODE, "cfg", "1")
    });
    let (ctx, _rx, _codes) = context(Some(CODE));
    let (reason, message) = failure(&run.runner.run(task(operator(5_000), None), ctx).await);
    assert_eq!(reason, FailureReason::CaptureFailed);
    assert!(message.contains("credentials.cookies.value"), "{message}");
}

#[tokio::test]
async fn a_cancelled_task_releases_its_browser_session() {
    let run = setup(FakeScript::success(CODE, "cfg", "1"));
    let (ctx, mut rx, _codes) = context(None);
    let future = run.runner.run(task(operator(600_000), None), ctx);
    let handle = tokio::spawn(future);
    // Wait until the task waits for its code with a session open.
    let mut waiting = false;
    for _ in 0..100 {
        if stages(&mut rx).contains(&ProgressStage::WaitingForCode) {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(waiting);
    assert_eq!(run.browser.live(), 1);
    handle.abort();
    let _ = handle.await;
    assert_eq!(
        run.browser.live(),
        0,
        "dropping the task's future drops its session"
    );
}

#[tokio::test]
async fn a_proxy_with_a_password_goes_through_a_relay_and_one_without_is_passed_on() {
    let run = setup(FakeScript::success(CODE, "cfg", "1"));
    let (ctx, _rx, _codes) = context(Some(CODE));
    let outcome = run
        .runner
        .run(
            task(operator(5_000), Some("http://user:pw-secret@10.0.0.1:3128")),
            ctx,
        )
        .await;
    assert!(
        matches!(outcome, TaskOutcome::ReloggedIn { .. }),
        "{outcome:?}"
    );
    // The browser got the loopback relay, without credentials.
    let proxies = run.browser.proxies();
    let [Some(relay)] = proxies.as_slice() else {
        panic!("{proxies:?}");
    };
    let addr = relay.strip_prefix("http://").unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "{relay}");
    assert!(
        !relay.contains("pw-secret") && !relay.contains('@'),
        "{relay}"
    );
    // The relay ended with the re-login.
    let mut closed = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "the relay outlived the re-login");

    // A SOCKS proxy with a password gets a SOCKS relay; one with a scheme the relay does not
    // speak is unsupported, without its password in the message.
    let (ctx, _rx, _codes) = context(Some(CODE));
    let outcome = run
        .runner
        .run(
            task(
                operator(5_000),
                Some("socks5h://user:pw-secret@10.0.0.1:1080"),
            ),
            ctx,
        )
        .await;
    assert!(
        matches!(outcome, TaskOutcome::ReloggedIn { .. }),
        "{outcome:?}"
    );
    let proxies = run.browser.proxies();
    assert!(
        proxies[1]
            .as_deref()
            .is_some_and(|p| p.starts_with("socks5://127.0.0.1:")),
        "{proxies:?}"
    );
    let (ctx, _rx, _codes) = context(Some(CODE));
    let outcome = run
        .runner
        .run(
            task(
                operator(5_000),
                Some("socks4://user:pw-secret@10.0.0.1:1080"),
            ),
            ctx,
        )
        .await;
    let (reason, message) = failure(&outcome);
    assert_eq!(reason, FailureReason::Unsupported);
    assert!(message.contains("not supported for re-login"), "{message}");
    assert!(!message.contains("pw-secret"), "{message}");
    assert_eq!(run.browser.opened(), 2);

    let (ctx, _rx, _codes) = context(Some(CODE));
    let outcome = run
        .runner
        .run(task(operator(5_000), Some("socks5://10.0.0.1:1080")), ctx)
        .await;
    assert!(
        matches!(outcome, TaskOutcome::ReloggedIn { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        run.browser.proxies()[2..],
        [Some("socks5://10.0.0.1:1080".to_owned())]
    );
}

#[tokio::test]
async fn a_probe_is_not_this_runners_kind() {
    let run = setup(FakeScript::success(CODE, "cfg", "1"));
    assert_eq!(
        run.runner.kinds(),
        [business2api_shared::protocol::TaskKindName::Relogin]
    );
    let credentials = business2api_shared::protocol::AccountCredentials {
        cookies: vec![],
        authorization: Secret::new("Bearer x"),
        config_id: "c".into(),
        csesidx: "1".into(),
    };
    let probe = Task {
        spec: TaskSpec::Probe(ProbeTask {
            account: AccountKey::new(EMAIL),
            credentials,
            proxy: None,
        }),
        ..task(operator(1), None)
    };
    let (ctx, _rx, _codes) = context(None);
    let (reason, _) = failure(&run.runner.run(probe, ctx).await);
    assert_eq!(reason, FailureReason::Unsupported);
    assert_eq!(run.browser.opened(), 0);
}

#[tokio::test]
async fn screenshots_are_bounded_and_the_oldest_go_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for i in 0..5 {
        let name = keep_screenshot(
            dir.path(),
            3,
            &format!("t{i}"),
            FailureReason::WrongCode,
            vec![1, 2],
        )
        .await
        .unwrap();
        names.push(name);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, names[2..]);
}
