//! The simulated browser login (the login contract of issue 11): the e-mail page, the code
//! page, the app page whose script makes one request with an `authorization` header, and the
//! per-account scripts that make it fail.
//!
//! * `GET /login` — `#email-form` (`#email-input`, `#log-in-button`). While any account's script
//!   is [`LoginScript::PageChanged`], a redesigned form without `#email-input` instead.
//! * `POST /login/email` (`email`) — unknown address: the e-mail page again with
//!   `#login-error`; known: a code is generated and mailed (per the script), a random login
//!   cookie names the pending login (server-side, bounded, expires after the login TTL), 303 to
//!   `/verify`.
//! * `GET /verify` — `#code-form` (`#code-input` named `pinInput`, `#verify-button`).
//! * `POST /verify` (`pinInput`) — wrong code: the code page again with `#code-error`; right
//!   code: the account gets new `__Secure-C_SES` / `__Host-C_OSES` values (the old cookie stops
//!   working for U1 at once) and a new JWT-shaped authorization, the cookies are set, 303 to
//!   `/home/cid/<configId>?csesidx=<csesidx>`. Without a live login cookie both `/verify` routes
//!   answer 303 to `/login`.
//! * `GET /home/cid/{cid}` — needs the account's current `__Secure-C_SES` (else 302 to
//!   `/login`); its one inline script POSTs `/_/app/bootstrap` with `authorization: Bearer <jwt>`.
//! * `POST /_/app/bootstrap` — 200 `{}`; records the authorization it saw.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use serde_json::json;

use crate::mail::{self, Mailbox};
use crate::model::SimAccount;
use crate::state::{BoundedMap, State, random_hex};

/// Name of the cookie that names a pending login between the two forms.
pub const LOGIN_COOKIE: &str = "SIM_LOGIN";
/// How long a pending login lives by default.
pub const DEFAULT_LOGIN_TTL: Duration = Duration::from_secs(600);

/// Pending logins kept (oldest evicted).
const MAX_PENDING: usize = 10_000;
/// Codes remembered per account.
const MAX_CODES_PER_ACCOUNT: usize = 100;
/// Held (undelivered) code e-mails kept.
const MAX_HELD: usize = 1_000;
/// Bootstrap authorizations remembered.
const MAX_BOOTSTRAPS: usize = 1_000;
/// Largest form body read.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// How the simulated login behaves for one account (set with
/// [`crate::Simulator::set_login_script`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoginScript {
    /// The code e-mail is delivered at once and its code is accepted.
    #[default]
    Normal,
    /// The e-mail carries a code the page rejects ([`crate::Simulator::sent_codes`] still lists
    /// the code the page accepts).
    WrongCodeMailed,
    /// No e-mail is sent (the accepted code is still listed by `sent_codes`).
    CodeNeverArrives,
    /// `GET /login` serves a redesigned page without `#email-input` (while any account has
    /// this script).
    PageChanged,
    /// The e-mail is held until [`crate::Simulator::release_codes`].
    HoldCode,
}

struct Pending {
    csesidx: String,
    code: String,
    expires: Instant,
}

/// The login side of the simulator's state (inside `state::Inner`).
pub(crate) struct LoginState {
    scripts: HashMap<String, LoginScript>,
    pending: BoundedMap<String, Pending>,
    codes: HashMap<String, VecDeque<String>>,
    held: VecDeque<(String, String)>,
    logins: HashMap<String, u32>,
    /// Where each e-mail's submissions came from (the browser's address, or its proxy's).
    email_peers: HashMap<String, Vec<std::net::SocketAddr>>,
    bootstraps: VecDeque<String>,
    pub(crate) ttl: Duration,
}

impl Default for LoginState {
    fn default() -> Self {
        LoginState {
            scripts: HashMap::new(),
            pending: BoundedMap::new(MAX_PENDING),
            codes: HashMap::new(),
            held: VecDeque::new(),
            logins: HashMap::new(),
            email_peers: HashMap::new(),
            bootstraps: VecDeque::new(),
            ttl: DEFAULT_LOGIN_TTL,
        }
    }
}

fn key(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

impl LoginState {
    pub(crate) fn set_script(&mut self, email: &str, script: LoginScript) {
        self.scripts.insert(key(email), script);
    }

    fn script(&self, email: &str) -> LoginScript {
        self.scripts.get(&key(email)).copied().unwrap_or_default()
    }

    pub(crate) fn logins(&self, email: &str) -> u32 {
        self.logins.get(&key(email)).copied().unwrap_or(0)
    }

    pub(crate) fn email_peers(&self, email: &str) -> Vec<std::net::SocketAddr> {
        self.email_peers
            .get(&key(email))
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn sent_codes(&self, email: &str) -> Vec<String> {
        self.codes
            .get(&key(email))
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn take_held(&mut self) -> Vec<(String, String)> {
        self.held.drain(..).collect()
    }

    pub(crate) fn bootstraps(&self) -> Vec<String> {
        self.bootstraps.iter().cloned().collect()
    }

    fn page_changed(&self) -> bool {
        self.scripts
            .values()
            .any(|s| *s == LoginScript::PageChanged)
    }
}

/// Registers the login routes.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/login").route(web::get().to(login_page)))
        .service(web::resource("/login/email").route(web::post().to(submit_email)))
        .service(
            web::resource("/verify")
                .route(web::get().to(verify_page))
                .route(web::post().to(submit_code)),
        )
        .service(web::resource("/home/cid/{cid}").route(web::get().to(app_page)))
        .service(web::resource("/_/app/bootstrap").route(web::post().to(bootstrap)));
}

/// A random code of 6 characters from `[A-Z0-9]`.
fn random_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..6)
        .map(|_| {
            let i = rng.random_range(0..ALPHABET.len());
            char::from(ALPHABET.get(i).copied().unwrap_or(b'A'))
        })
        .collect()
}

/// A random base64url value of `n` bytes (cookie values).
fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill(&mut bytes[..]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT-shaped web-app authorization (`Bearer header.payload.signature`) for `csesidx`.
pub(crate) fn mint_authorization(csesidx: &str) -> String {
    let now = mail::now_secs();
    let header = json!({"alg": "RS256", "kid": format!("sim-app-{}", random_hex(4)), "typ": "JWT"});
    let payload = json!({
        "iss": "https://business.gemini.google",
        "aud": "https://business.gemini.google",
        "sub": format!("csesidx/{csesidx}"),
        "iat": now,
        "exp": now + 3600,
    });
    format!(
        "Bearer {}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        random_token(64)
    )
}

fn html(status: actix_web::http::StatusCode, title: &str, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>{title}</title></head>\n<body>\n{body}\n</body></html>\n"
        ))
}

fn email_page(error: bool, changed: bool) -> HttpResponse {
    let error = if error {
        "<div role=\"alert\" id=\"login-error\">Couldn't find your Gemini Business account. \
         Check the address and try again.</div>\n"
    } else {
        ""
    };
    let form = if changed {
        "<form id=\"identifier-form\" method=\"post\" action=\"/login/email\">\n\
         <label for=\"identifierId\">Work e-mail</label>\n\
         <input type=\"email\" id=\"identifierId\" name=\"identifier\" autocomplete=\"username\">\n\
         <button type=\"submit\" id=\"identifierNext\">Next</button>\n</form>"
    } else {
        "<form id=\"email-form\" method=\"post\" action=\"/login/email\">\n\
         <label for=\"email-input\">Work e-mail</label>\n\
         <input type=\"email\" id=\"email-input\" name=\"email\" autocomplete=\"username\">\n\
         <button type=\"submit\" id=\"log-in-button\">Continue with e-mail</button>\n</form>"
    };
    html(
        actix_web::http::StatusCode::OK,
        "Sign in - Gemini Business",
        &format!("<h1>Sign in to Gemini Business</h1>\n{error}{form}"),
    )
}

fn code_page(error: bool) -> HttpResponse {
    let error = if error {
        "<div role=\"alert\" id=\"code-error\">Wrong code. Try again.</div>\n"
    } else {
        ""
    };
    html(
        actix_web::http::StatusCode::OK,
        "Verify - Gemini Business",
        &format!(
            "<h1>Check your e-mail</h1>\n<p>Enter the code we sent you.</p>\n{error}\
             <form id=\"code-form\" method=\"post\" action=\"/verify\">\n\
             <input type=\"text\" id=\"code-input\" name=\"pinInput\" \
             autocomplete=\"one-time-code\" maxlength=\"6\">\n\
             <button type=\"submit\" id=\"verify-button\">Verify</button>\n</form>"
        ),
    )
}

fn see_other(location: &str) -> actix_web::HttpResponseBuilder {
    let mut b = HttpResponse::SeeOther();
    b.insert_header((header::LOCATION, location.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    b
}

fn cookie_value<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| n.trim() == name)
        .map(|(_, v)| v.trim())
}

/// Reads a bounded `application/x-www-form-urlencoded` body.
async fn read_form(body: web::Bytes) -> HashMap<String, String> {
    if body.len() > MAX_FORM_BYTES {
        return HashMap::new();
    }
    web::Query::<HashMap<String, String>>::from_query(&String::from_utf8_lossy(&body))
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

async fn login_page(state: web::Data<State>) -> HttpResponse {
    let changed = state.lock().login.page_changed();
    email_page(false, changed)
}

async fn submit_email(req: HttpRequest, state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    let form = read_form(body).await;
    let email = form.get("email").map(|e| e.trim()).unwrap_or("");
    let changed;
    let delivery = {
        let mut inner = state.lock();
        if let Some(peer) = req.peer_addr() {
            let peers = inner.login.email_peers.entry(key(email)).or_default();
            if peers.len() < 100 {
                peers.push(peer);
            }
        }
        changed = inner.login.page_changed();
        let account = inner
            .accounts
            .values()
            .find(|a| !email.is_empty() && a.email.eq_ignore_ascii_case(email))
            .cloned();
        let Some(account) = account else {
            drop(inner);
            return email_page(true, changed);
        };
        let code = random_code();
        let script = inner.login.script(&account.email);
        let mailed = if script == LoginScript::WrongCodeMailed {
            loop {
                let other = random_code();
                if other != code {
                    break other;
                }
            }
        } else {
            code.clone()
        };
        let login = &mut inner.login;
        let codes = login.codes.entry(key(&account.email)).or_default();
        codes.push_back(code.clone());
        while codes.len() > MAX_CODES_PER_ACCOUNT {
            codes.pop_front();
        }
        let token = random_token(24);
        let expires = Instant::now() + login.ttl;
        login.pending.insert(
            token.clone(),
            Pending {
                csesidx: account.csesidx.clone(),
                code,
                expires,
            },
        );
        let message = (
            account.email.clone(),
            mail::code_message(&account.email, &mailed),
        );
        let delivery = match script {
            LoginScript::CodeNeverArrives => None,
            LoginScript::HoldCode => {
                login.held.push_back(message);
                while login.held.len() > MAX_HELD {
                    login.held.pop_front();
                }
                None
            }
            LoginScript::Normal | LoginScript::WrongCodeMailed | LoginScript::PageChanged => {
                Some(message)
            }
        };
        (delivery, token, login.ttl)
    };
    let (message, token, ttl) = delivery;
    if let Some((to, raw)) = message {
        state.mailbox.deliver(&to, raw);
    }
    see_other("/verify")
        .insert_header((
            header::SET_COOKIE,
            format!(
                "{LOGIN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
                ttl.as_secs().max(1)
            ),
        ))
        .finish()
}

/// The pending login named by the request's login cookie, if it is live (expired ones are
/// removed).
fn live_pending(state: &State, req: &HttpRequest) -> Option<(String, String, String)> {
    let token = cookie_value(req, LOGIN_COOKIE)?.to_string();
    let mut inner = state.lock();
    let pending = inner.login.pending.get(&token)?;
    if pending.expires <= Instant::now() {
        inner.login.pending.remove(&token);
        return None;
    }
    Some((token, pending.csesidx.clone(), pending.code.clone()))
}

fn back_to_login() -> HttpResponse {
    see_other("/login")
        .insert_header((
            header::SET_COOKIE,
            format!("{LOGIN_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
        ))
        .finish()
}

async fn verify_page(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if live_pending(&state, &req).is_none() {
        return back_to_login();
    }
    code_page(false)
}

async fn submit_code(req: HttpRequest, state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    let Some((token, csesidx, code)) = live_pending(&state, &req) else {
        return back_to_login();
    };
    let form = read_form(body).await;
    let typed = form.get("pinInput").map(|c| c.trim()).unwrap_or("");
    if !typed.eq_ignore_ascii_case(&code) {
        return code_page(true);
    }
    let (c_ses, c_oses, config_id) = {
        let mut inner = state.lock();
        inner.login.pending.remove(&token);
        let Some(account) = inner.accounts.get_mut(&csesidx) else {
            drop(inner);
            return back_to_login();
        };
        let (c_ses, c_oses) = rotate(account);
        account.authorization = Some(mint_authorization(&csesidx));
        let (email, config_id) = (account.email.clone(), account.config_id.clone());
        *inner.login.logins.entry(key(&email)).or_insert(0) += 1;
        (c_ses, c_oses, config_id)
    };
    let mut resp = see_other(&format!("/home/cid/{config_id}?csesidx={csesidx}"));
    resp.append_header((
        header::SET_COOKIE,
        format!("__Secure-C_SES={c_ses}; Secure; HttpOnly; Path=/; SameSite=None"),
    ))
    .append_header((
        header::SET_COOKIE,
        format!("__Host-C_OSES={c_oses}; Secure; HttpOnly; Path=/"),
    ))
    .append_header((
        header::SET_COOKIE,
        format!("NID={}; Path=/", random_token(16)),
    ))
    .append_header((
        header::SET_COOKIE,
        format!("{LOGIN_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    ));
    resp.finish()
}

/// Gives `account` new `c_ses` / `c_oses` values; returns them.
pub(crate) fn rotate(account: &mut SimAccount) -> (String, String) {
    let c_ses = format!("sim-c-ses-{}", random_token(32));
    let c_oses = format!("sim-c-oses-{}", random_token(24));
    account.c_ses = c_ses.clone();
    account.c_oses = Some(c_oses.clone());
    (c_ses, c_oses)
}

async fn app_page(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let cid = req.match_info().query("cid").to_string();
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let cookie = cookie_value(&req, "__Secure-C_SES").map(str::to_string);
    let authorization = {
        let mut inner = state.lock();
        let account = inner.accounts.values_mut().find(|a| {
            a.config_id == cid
                && cookie.as_deref() == Some(a.c_ses.as_str())
                && query.get("csesidx").is_none_or(|c| *c == a.csesidx)
        });
        match account {
            None => None,
            Some(a) => {
                let jwt_shaped = a
                    .authorization
                    .as_deref()
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .is_some_and(|t| {
                        t.split('.').count() == 3
                            && t.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    });
                if !jwt_shaped {
                    a.authorization = Some(mint_authorization(&a.csesidx));
                }
                a.authorization.clone()
            }
        }
    };
    let Some(authorization) = authorization else {
        let continue_url = format!("{}/home/cid/{}", state.base_url, cid);
        let location = format!("/login?continueUrl={}", url_encode(&continue_url));
        return HttpResponse::Found()
            .insert_header((header::LOCATION, location))
            .finish();
    };
    // The value only holds base64url characters, dots and one space (checked above).
    html(
        actix_web::http::StatusCode::OK,
        "Gemini Business",
        &format!(
            "<div id=\"app\">Gemini Business</div>\n<script>\n\
             window.addEventListener('load', function () {{\n  \
             fetch('/_/app/bootstrap', {{method: 'POST', headers: {{'authorization': '{authorization}'}}}});\n\
             }});\n</script>"
        ),
    )
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn bootstrap(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if let Some(v) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut inner = state.lock();
        let list = &mut inner.login.bootstraps;
        list.push_back(v.to_string());
        while list.len() > MAX_BOOTSTRAPS {
            list.pop_front();
        }
    }
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body("{}")
}

/// Delivers every held code e-mail into `mailbox`.
pub(crate) fn deliver_all(mailbox: &Mailbox, messages: Vec<(String, String)>) {
    for (to, raw) in messages {
        mailbox.deliver(&to, raw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_authorizations_have_the_contract_shape() {
        for _ in 0..50 {
            let c = random_code();
            assert_eq!(c.len(), 6);
            assert!(
                c.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            );
        }
        let auth = mint_authorization("1234567890");
        let token = auth.strip_prefix("Bearer ").unwrap_or_default();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let payload: serde_json::Value = URL_SAFE_NO_PAD
            .decode(parts[1])
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        assert_eq!(payload["sub"], "csesidx/1234567890");
    }
}
