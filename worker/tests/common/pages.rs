//! The login pages of THE LOGIN CONTRACT, served by actix-web on 127.0.0.1 (a stand-in for the
//! simulator's, which another branch builds).

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

use super::code_mail;
use super::imap::Mailbox;

#[derive(Debug, Default)]
pub struct PagesState {
    /// The address the pages know.
    pub email: String,
    pub code: String,
    pub config_id: String,
    pub csesidx: String,
    /// The session cookie the last right code set.
    pub c_ses: Option<String>,
    /// The authorization `/_/app/bootstrap` saw.
    pub authorization: Option<String>,
    /// The JWT the home page sends.
    pub jwt: String,
    /// Deliver the code e-mail to the mailbox (false: the code never arrives).
    pub send_code: bool,
    /// Paths requested, in order.
    pub seen: Vec<String>,
}

#[derive(Clone)]
pub struct Pages {
    pub base: String,
    pub state: Arc<Mutex<PagesState>>,
    pub handle: actix_web::dev::ServerHandle,
}

impl Pages {
    pub fn saw(&self, path: &str) -> bool {
        self.state.lock().unwrap().seen.iter().any(|p| p == path)
    }
}

struct Ctx {
    state: Arc<Mutex<PagesState>>,
    mailbox: Option<Mailbox>,
}

fn html(body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html><head><title>Sign in</title></head><body>{body}</body></html>"
        ))
}

const EMAIL_FORM: &str = r#"<form id="email-form" method="post" action="/login/email">
<input type="email" id="email-input" name="email"><button type="submit" id="log-in-button">Continue</button></form>"#;
const CODE_FORM: &str = r#"<form id="code-form" method="post" action="/verify">
<input id="code-input" name="pinInput" autocomplete="one-time-code" maxlength="6"><button type="submit" id="verify-button">Verify</button></form>"#;

fn field(body: &[u8], name: &str) -> String {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn note(ctx: &Ctx, req: &HttpRequest) {
    ctx.state.lock().unwrap().seen.push(req.path().to_owned());
}

async fn login(ctx: web::Data<Ctx>, req: HttpRequest) -> HttpResponse {
    note(&ctx, &req);
    html(EMAIL_FORM)
}

async fn login_email(ctx: web::Data<Ctx>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    note(&ctx, &req);
    let email = field(&body, "email");
    let (known, send, code) = {
        let s = ctx.state.lock().unwrap();
        (
            s.email.eq_ignore_ascii_case(&email),
            s.send_code,
            s.code.clone(),
        )
    };
    if !known {
        return html(&format!(
            r#"<div role="alert" id="login-error">Couldn't find your account.</div>{EMAIL_FORM}"#
        ));
    }
    if send && let Some(mailbox) = &ctx.mailbox {
        mailbox.deliver(code_mail(&email, &code));
    }
    HttpResponse::SeeOther()
        .insert_header(("location", "/verify"))
        .insert_header(("set-cookie", "LOGIN=pending; Path=/; Max-Age=600"))
        .finish()
}

async fn verify_page(ctx: web::Data<Ctx>, req: HttpRequest) -> HttpResponse {
    note(&ctx, &req);
    html(CODE_FORM)
}

async fn verify(ctx: web::Data<Ctx>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    note(&ctx, &req);
    let pin = field(&body, "pinInput");
    let mut s = ctx.state.lock().unwrap();
    if pin != s.code {
        return html(&format!(
            r#"<div role="alert" id="code-error">Wrong code. Try again.</div>{CODE_FORM}"#
        ));
    }
    let fresh = format!("CSE.fresh-{}", s.seen.len());
    s.c_ses = Some(fresh.clone());
    HttpResponse::SeeOther()
        .insert_header((
            "location",
            format!("/home/cid/{}?csesidx={}", s.config_id, s.csesidx),
        ))
        .append_header((
            "set-cookie",
            format!("__Secure-C_SES={fresh}; Secure; HttpOnly; Path=/; SameSite=None"),
        ))
        .append_header((
            "set-cookie",
            "__Host-C_OSES=COS.fresh; Secure; HttpOnly; Path=/",
        ))
        .append_header(("set-cookie", "NID=nid-7; Path=/"))
        .finish()
}

async fn home(ctx: web::Data<Ctx>, req: HttpRequest) -> HttpResponse {
    note(&ctx, &req);
    let s = ctx.state.lock().unwrap();
    let valid = req
        .headers()
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|header| {
            header
                .split(';')
                .any(|pair| pair.trim().strip_prefix("__Secure-C_SES=") == s.c_ses.as_deref())
        });
    if !valid {
        return HttpResponse::Found()
            .insert_header(("location", "/login"))
            .finish();
    }
    html(&format!(
        r#"<h1>Gemini Business</h1><script>
window.addEventListener('load', () => {{
  fetch('/_/app/bootstrap', {{method: 'POST', headers: {{'authorization': 'Bearer {}'}}}});
}});
</script>"#,
        s.jwt
    ))
}

async fn bootstrap(ctx: web::Data<Ctx>, req: HttpRequest) -> HttpResponse {
    note(&ctx, &req);
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    ctx.state.lock().unwrap().authorization = auth;
    HttpResponse::Ok()
        .content_type("application/json")
        .body("{}")
}

pub fn start(state: PagesState, mailbox: Option<Mailbox>) -> Pages {
    let state = Arc::new(Mutex::new(state));
    let data = web::Data::new(Ctx {
        state: Arc::clone(&state),
        mailbox,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/login", web::get().to(login))
            .route("/login/email", web::post().to(login_email))
            .route("/verify", web::get().to(verify_page))
            .route("/verify", web::post().to(verify))
            .route("/home/cid/{cid}", web::get().to(home))
            .route("/_/app/bootstrap", web::post().to(bootstrap))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(0)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Pages {
        base: format!("http://{addr}"),
        state,
        handle,
    }
}

/// A JWT whose payload says `"sub": "csesidx/<csesidx>"` (unsigned; the pages only echo it).
pub fn jwt(csesidx: &str) -> String {
    use base64_url as b64;
    format!(
        "{}.{}.{}",
        b64(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64(&format!(r#"{{"sub":"csesidx/{csesidx}","iat":1}}"#)),
        b64("signature")
    )
}

fn base64_url(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}
