//! `GET /admin/logs` (the recent lines) and `GET /admin/logs/stream` (new lines as server-sent
//! events) from the process's log hub ([`crate::loghub`]). Each line served is redacted again by
//! the configuration in force: the API and admin keys, the generated API key, proxy passwords
//! and the panel's setup token never leave, even where a pattern missed them.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use business2api_shared::Secret;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::ApiKeyGate;
use crate::config::live::LiveConfig;
use crate::loghub::{self, LogLine};

use super::panel::PanelAuth;

/// A comment line this often keeps idle connections (and proxies) open.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// The secrets to redact, as the configuration stands now.
fn secrets(req: &HttpRequest) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(live) = req.app_data::<web::Data<LiveConfig>>() {
        let s = live.load();
        out.extend(
            s.api_keys
                .iter()
                .chain(&s.admin_keys)
                .map(|k| k.expose().to_owned()),
        );
        for proxy in [&s.proxy, &s.proxy_pool.proxy, &s.flow.proxy]
            .into_iter()
            .flatten()
        {
            out.extend(proxy.password_forms());
        }
        out.extend(s.flow.tokens.iter().map(|t| t.expose().to_owned()));
    }
    if let Some(gate) = req.app_data::<web::Data<ApiKeyGate>>()
        && let Some(key) = gate.generated()
    {
        out.push(key.expose().to_owned());
    }
    if let Some(auth) = req.app_data::<web::Data<PanelAuth>>()
        && let Some(token) = auth.setup_token()
    {
        out.push(token.expose().to_owned());
    }
    out
}

fn served(line: &LogLine, secrets: &[&str]) -> serde_json::Value {
    json!({ "seq": line.seq, "line": loghub::redact(&line.line, secrets) })
}

/// `GET /admin/logs[?after=SEQ]`: `{capturing, lines: [{seq, line}]}`.
pub async fn recent(req: HttpRequest) -> HttpResponse {
    let after = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "after")
        .and_then(|(_, v)| v.parse::<u64>().ok());
    let owned = secrets(&req);
    let secrets: Vec<&str> = owned.iter().map(String::as_str).collect();
    let hub = loghub::hub();
    let lines: Vec<serde_json::Value> = hub
        .recent(after)
        .iter()
        .map(|l| served(l, &secrets))
        .collect();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "capturing": hub.is_installed(), "lines": lines }))
}

/// `GET /admin/logs/stream`: `event: line` with `{seq, line}` for every new line; a `:` comment
/// every [`KEEPALIVE`]; a reader too slow for the broadcast gets `event: lagged` with how many
/// lines it missed, and goes on.
pub async fn stream(req: HttpRequest) -> HttpResponse {
    let owned: Vec<Secret> = secrets(&req).into_iter().map(Secret::new).collect();
    let mut rx = loghub::hub().subscribe();
    let body = async_stream::stream! {
        yield Ok::<_, actix_web::Error>(web::Bytes::from_static(b": connected\n\n"));
        let mut tick = tokio::time::interval(KEEPALIVE);
        tick.reset();
        loop {
            tokio::select! {
                received = rx.recv() => match received {
                    Ok(line) => {
                        let secrets: Vec<&str> = owned.iter().map(Secret::expose).collect();
                        let data = served(&line, &secrets);
                        yield Ok(web::Bytes::from(format!("event: line\nid: {}\ndata: {data}\n\n", line.seq)));
                    }
                    Err(RecvError::Lagged(n)) => {
                        yield Ok(web::Bytes::from(format!("event: lagged\ndata: {{\"missed\":{n}}}\n\n")));
                    }
                    Err(RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    yield Ok(web::Bytes::from_static(b": keep-alive\n\n"));
                }
            }
        }
    };
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}
