//! The simulated browser login over real HTTP (the login contract of issue 11).

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use upstream_sim::{LoginScript, SimAccount, Simulator};

const EMAIL: &str = "demo0@example.com";

async fn sim() -> Simulator {
    let sim = Simulator::start().await.unwrap();
    sim.add_account(SimAccount::demo(0));
    sim.add_account(SimAccount::demo(1));
    sim.mailbox().add_user(EMAIL, "pw");
    sim
}

/// A client that does not follow redirects; cookies are handled by [`Jar`] so their
/// attributes can be checked.
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[derive(Default)]
struct Jar(HashMap<String, String>);

impl Jar {
    /// Stores the response's cookies (Max-Age=0 removes); returns the raw Set-Cookie lines.
    fn absorb(&mut self, resp: &reqwest::Response) -> Vec<String> {
        let lines: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        for line in &lines {
            let (pair, attrs) = line.split_once(';').unwrap_or((line, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_string(), value.to_string());
            }
        }
        lines
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"].to_str().unwrap().to_string()
}

async fn get(
    c: &reqwest::Client,
    sim: &Simulator,
    jar: &mut Jar,
    path: &str,
) -> (u16, String, Option<String>) {
    let resp = c
        .get(format!("{}{path}", sim.base_url()))
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap();
    jar.absorb(&resp);
    let status = resp.status().as_u16();
    let loc = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    (status, resp.text().await.unwrap(), loc)
}

async fn post_form(
    c: &reqwest::Client,
    sim: &Simulator,
    jar: &mut Jar,
    path: &str,
    form: &[(&str, &str)],
) -> (reqwest::Response, Vec<String>) {
    let body: String = form
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('@', "%40")))
        .collect::<Vec<_>>()
        .join("&");
    let resp = c
        .post(format!("{}{path}", sim.base_url()))
        .header("cookie", jar.header())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let lines = jar.absorb(&resp);
    (resp, lines)
}

async fn u1_status(c: &reqwest::Client, sim: &Simulator, csesidx: &str, c_ses: &str) -> u16 {
    c.get(format!(
        "{}/auth/getoxsrf?csesidx={csesidx}",
        sim.base_url()
    ))
    .header("cookie", format!("__Secure-C_SES={c_ses}"))
    .send()
    .await
    .unwrap()
    .status()
    .as_u16()
}

/// The code from the newest message in `user`'s INBOX.
fn mailed_code(sim: &Simulator, user: &str) -> Option<String> {
    let raw = sim.mailbox().messages(user).last()?.raw.clone();
    let line = raw
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Your one-time verification code is: "))?;
    Some(line.to_string())
}

/// Submits the e-mail form; asserts the redirect to the code page and the login cookie.
async fn submit_email(c: &reqwest::Client, sim: &Simulator, jar: &mut Jar, email: &str) {
    let (resp, lines) = post_form(c, sim, jar, "/login/email", &[("email", email)]).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/verify");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("SIM_LOGIN=") && l.contains("HttpOnly")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn the_happy_path_rotates_the_cookie_and_hands_out_a_jwt() {
    let sim = sim().await;
    let c = client();
    let mut jar = Jar::default();
    let account = SimAccount::demo(0);
    assert_eq!(
        u1_status(&c, &sim, &account.csesidx, &account.c_ses).await,
        200
    );

    let (status, page, _) = get(
        &c,
        &sim,
        &mut jar,
        "/login?continueUrl=https%3A%2F%2Fbusiness.gemini.google%2F",
    )
    .await;
    assert_eq!(status, 200);
    for needle in [
        r#"<form id="email-form" method="post" action="/login/email">"#,
        r#"<input type="email" id="email-input" name="email""#,
        r#"<button type="submit" id="log-in-button">"#,
    ] {
        assert!(page.contains(needle), "{needle} missing from {page}");
    }
    assert!(!page.contains("<script"));

    submit_email(&c, &sim, &mut jar, EMAIL).await;
    let (status, page, _) = get(&c, &sim, &mut jar, "/verify").await;
    assert_eq!(status, 200);
    for needle in [
        r#"<form id="code-form" method="post" action="/verify">"#,
        r#"id="code-input" name="pinInput" autocomplete="one-time-code" maxlength="6""#,
        r#"<button type="submit" id="verify-button">"#,
    ] {
        assert!(page.contains(needle), "{needle} missing from {page}");
    }
    assert!(!page.contains("code-error"));

    // The e-mail: contract headers, the code the page expects.
    let messages = sim.mailbox().messages(EMAIL);
    assert_eq!(messages.len(), 1);
    let raw = &messages[0].raw;
    assert!(raw.contains("From: Gemini Business <noreply-googlecloud@google.com>\r\n"));
    assert!(raw.contains("To: demo0@example.com\r\n"));
    assert!(raw.contains("Subject: Your Gemini Business verification code\r\n"));
    assert!(raw.contains("\r\nDate: "));
    let code = mailed_code(&sim, EMAIL).unwrap();
    assert_eq!(code.len(), 6);
    assert!(
        code.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    );
    assert_eq!(sim.sent_codes(EMAIL), vec![code.clone()]);

    // A wrong code: the code page again with the error; nothing rotated.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (resp, _) = post_form(&c, &sim, &mut jar, "/verify", &[("pinInput", wrong)]).await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains(r#"<div role="alert" id="code-error">Wrong code. Try again.</div>"#));
    assert!(page.contains(r#"id="code-input""#));
    assert_eq!(sim.current_c_ses(EMAIL).unwrap(), account.c_ses);

    // The right code.
    let (resp, lines) = post_form(&c, &sim, &mut jar, "/verify", &[("pinInput", &code)]).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(
        location(&resp),
        format!(
            "/home/cid/{}?csesidx={}",
            account.config_id, account.csesidx
        )
    );
    let new_ses = sim.current_c_ses(EMAIL).unwrap();
    assert_ne!(new_ses, account.c_ses);
    let updated = sim.account_by_email(EMAIL).unwrap();
    let oses = updated.c_oses.clone().unwrap();
    assert!(
        lines.contains(&format!(
            "__Secure-C_SES={new_ses}; Secure; HttpOnly; Path=/; SameSite=None"
        )),
        "{lines:?}"
    );
    assert!(
        lines.contains(&format!("__Host-C_OSES={oses}; Secure; HttpOnly; Path=/")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("NID=") && l.ends_with("; Path=/")),
        "{lines:?}"
    );
    assert!(
        !jar.0.contains_key("SIM_LOGIN"),
        "the login cookie is cleared"
    );
    assert_eq!(sim.logins(EMAIL), 1);
    assert_eq!(sim.logins("demo1@example.com"), 0);

    // The gateway's stored cookie died; the new one works.
    assert_eq!(
        u1_status(&c, &sim, &account.csesidx, &account.c_ses).await,
        401
    );
    assert_eq!(u1_status(&c, &sim, &account.csesidx, &new_ses).await, 200);

    // The app page carries the authorization in its one fetch.
    let home = format!(
        "/home/cid/{}?csesidx={}",
        account.config_id, account.csesidx
    );
    let (status, page, _) = get(&c, &sim, &mut jar, &home).await;
    assert_eq!(status, 200);
    let authorization = updated.authorization.clone().unwrap();
    assert!(page.contains(&format!(
        "fetch('/_/app/bootstrap', {{method: 'POST', headers: {{'authorization': '{authorization}'}}}})"
    )), "{page}");
    assert_eq!(page.matches("<script").count(), 1);
    let jwt = authorization.strip_prefix("Bearer ").unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(payload["sub"], format!("csesidx/{}", account.csesidx));
    assert!(URL_SAFE_NO_PAD.decode(parts[0]).is_ok() && !parts[2].is_empty());

    // What the script does, by hand.
    let resp = c
        .post(format!("{}/_/app/bootstrap", sim.base_url()))
        .header("authorization", &authorization)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{}");
    assert_eq!(sim.bootstrap_authorizations(), vec![authorization]);

    // The pending login was used up.
    let (resp, _) = post_form(&c, &sim, &mut jar, "/verify", &[("pinInput", &code)]).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/login");
    assert_eq!(sim.logins(EMAIL), 1);
}

#[tokio::test]
async fn the_app_page_needs_the_current_cookie() {
    let sim = sim().await;
    let c = client();
    let account = SimAccount::demo(0);
    let home = format!(
        "/home/cid/{}?csesidx={}",
        account.config_id, account.csesidx
    );

    let mut jar = Jar::default();
    jar.0.insert("__Secure-C_SES".into(), account.c_ses.clone());
    let (status, page, _) = get(&c, &sim, &mut jar, &home).await;
    assert_eq!(status, 200);
    assert!(page.contains("csesidx/") || page.contains("Bearer "));

    // Another account's csesidx, no cookie, a dead cookie: back to the login page.
    let other = format!(
        "/home/cid/{}?csesidx={}",
        account.config_id,
        SimAccount::demo(1).csesidx
    );
    let (status, _, loc) = get(&c, &sim, &mut jar, &other).await;
    assert_eq!(status, 302);
    assert!(loc.unwrap().starts_with("/login?continueUrl="));
    let (status, _, loc) = get(&c, &sim, &mut Jar::default(), &home).await;
    assert_eq!(status, 302);
    assert!(loc.unwrap().starts_with("/login"));
    assert!(sim.expire_cookies(EMAIL));
    assert!(!sim.expire_cookies("nobody@example.com"));
    let (status, _, _) = get(&c, &sim, &mut jar, &home).await;
    assert_eq!(status, 302);
}

#[tokio::test]
async fn expire_cookies_kills_the_gateways_cookie_without_a_login() {
    let sim = sim().await;
    let c = client();
    let account = SimAccount::demo(0);
    assert!(sim.expire_cookies(EMAIL));
    assert_eq!(
        u1_status(&c, &sim, &account.csesidx, &account.c_ses).await,
        401
    );
    let current = sim.current_c_ses(EMAIL).unwrap();
    assert_ne!(current, account.c_ses);
    assert_eq!(u1_status(&c, &sim, &account.csesidx, &current).await, 200);
    assert_eq!(sim.logins(EMAIL), 0);
    // The other account is untouched.
    let other = SimAccount::demo(1);
    assert_eq!(u1_status(&c, &sim, &other.csesidx, &other.c_ses).await, 200);
}

#[tokio::test]
async fn an_unknown_address_gets_the_email_page_again_with_an_error() {
    let sim = sim().await;
    let c = client();
    for email in ["nobody@example.com", ""] {
        let mut jar = Jar::default();
        let (resp, lines) =
            post_form(&c, &sim, &mut jar, "/login/email", &[("email", email)]).await;
        assert_eq!(resp.status(), 200);
        assert!(lines.is_empty(), "{lines:?}");
        let page = resp.text().await.unwrap();
        assert!(
            page.contains(r#"<div role="alert" id="login-error">"#),
            "{page}"
        );
        assert!(page.contains(r#"id="email-input""#));
    }
    assert!(sim.mailbox().messages(EMAIL).is_empty());
    assert_eq!(sim.mailbox().dropped(), 0);
}

#[tokio::test]
async fn a_missing_unknown_or_expired_login_cookie_goes_back_to_the_login_page() {
    let sim = sim().await;
    let c = client();
    let account = SimAccount::demo(0);

    // None, and one the server never issued.
    for cookie in [None, Some("SIM_LOGIN=forged")] {
        let mut jar = Jar::default();
        if let Some((k, v)) = cookie.and_then(|c| c.split_once('=')) {
            jar.0.insert(k.into(), v.into());
        }
        let (status, _, loc) = get(&c, &sim, &mut jar, "/verify").await;
        assert_eq!((status, loc.as_deref()), (303, Some("/login")));
        let (resp, _) = post_form(&c, &sim, &mut jar, "/verify", &[("pinInput", "ABC123")]).await;
        assert_eq!(resp.status(), 303);
        assert_eq!(location(&resp), "/login");
    }

    // Expired: the right code no longer logs in.
    sim.set_login_ttl(Duration::from_millis(100));
    let mut jar = Jar::default();
    submit_email(&c, &sim, &mut jar, EMAIL).await;
    let code = mailed_code(&sim, EMAIL).unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (resp, _) = post_form(&c, &sim, &mut jar, "/verify", &[("pinInput", &code)]).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/login");
    assert_eq!(sim.logins(EMAIL), 0);
    assert_eq!(sim.current_c_ses(EMAIL).unwrap(), account.c_ses);
    let (status, _, loc) = get(&c, &sim, &mut jar, "/verify").await;
    assert_eq!((status, loc.as_deref()), (303, Some("/login")));
}

#[tokio::test]
async fn wrong_code_mailed_sends_a_code_the_page_rejects() {
    let sim = sim().await;
    let c = client();
    sim.set_login_script(EMAIL, LoginScript::WrongCodeMailed);
    let mut jar = Jar::default();
    submit_email(&c, &sim, &mut jar, EMAIL).await;
    let mailed = mailed_code(&sim, EMAIL).unwrap();
    let accepted = sim.sent_codes(EMAIL).pop().unwrap();
    assert_ne!(mailed, accepted);
    let (resp, _) = post_form(&c, &sim, &mut jar, "/verify", &[("pinInput", &mailed)]).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains(r#"id="code-error""#));
    assert_eq!(sim.logins(EMAIL), 0);
    // The accepted code (as an operator would type it) still works.
    let (resp, _) = post_form(&c, &sim, &mut jar, "/verify", &[("pinInput", &accepted)]).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(sim.logins(EMAIL), 1);
}

#[tokio::test]
async fn code_never_arrives_sends_no_mail_but_the_code_is_known() {
    let sim = sim().await;
    let c = client();
    sim.set_login_script(EMAIL, LoginScript::CodeNeverArrives);
    let mut jar = Jar::default();
    submit_email(&c, &sim, &mut jar, EMAIL).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sim.mailbox().messages(EMAIL).is_empty());
    let codes = sim.sent_codes(EMAIL);
    assert_eq!(codes.len(), 1);
    sim.release_codes();
    assert!(sim.mailbox().messages(EMAIL).is_empty(), "nothing was held");
    let (resp, _) = post_form(&c, &sim, &mut jar, "/verify", &[("pinInput", &codes[0])]).await;
    assert_eq!(resp.status(), 303);
}

#[tokio::test]
async fn hold_code_delivers_only_when_released() {
    let sim = sim().await;
    let c = client();
    sim.set_login_script(EMAIL, LoginScript::HoldCode);
    let mut jar = Jar::default();
    submit_email(&c, &sim, &mut jar, EMAIL).await;
    assert!(sim.mailbox().messages(EMAIL).is_empty());
    sim.release_codes();
    let code = mailed_code(&sim, EMAIL).unwrap();
    assert_eq!(sim.sent_codes(EMAIL), vec![code.clone()]);
    sim.release_codes();
    assert_eq!(sim.mailbox().messages(EMAIL).len(), 1, "released once");
    let (resp, _) = post_form(&c, &sim, &mut jar, "/verify", &[("pinInput", &code)]).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(sim.logins(EMAIL), 1);
}

#[tokio::test]
async fn page_changed_serves_a_login_page_without_the_email_input() {
    let sim = sim().await;
    let c = client();
    let (_, before, _) = get(&c, &sim, &mut Jar::default(), "/login").await;
    assert!(before.contains(r#"id="email-input""#));
    sim.set_login_script(EMAIL, LoginScript::PageChanged);
    let (status, page, _) = get(&c, &sim, &mut Jar::default(), "/login").await;
    assert_eq!(status, 200);
    assert!(!page.contains("email-input"), "{page}");
    assert!(!page.contains("log-in-button"), "{page}");
    assert!(page.contains("<form"), "still a login form: {page}");
    sim.set_login_script(EMAIL, LoginScript::Normal);
    let (_, after, _) = get(&c, &sim, &mut Jar::default(), "/login").await;
    assert!(after.contains(r#"id="email-input""#));
}

#[tokio::test]
async fn a_catch_all_mailbox_receives_every_accounts_code() {
    let sim = Simulator::start().await.unwrap();
    sim.add_account(SimAccount::demo(0));
    sim.add_account(SimAccount::demo(1));
    sim.mailbox().add_user("ops@example.com", "pw");
    sim.mailbox().set_catch_all("ops@example.com");
    let c = client();
    for email in [EMAIL, "demo1@example.com"] {
        submit_email(&c, &sim, &mut Jar::default(), email).await;
    }
    let messages = sim.mailbox().messages("ops@example.com");
    assert_eq!(messages.len(), 2);
    assert!(messages[0].raw.contains("To: demo0@example.com\r\n"));
    assert!(messages[1].raw.contains("To: demo1@example.com\r\n"));
    assert_eq!((messages[0].uid, messages[1].uid), (1, 2));
}
