//! The actix-web routes: U1 `/auth/getoxsrf`, U2–U5 `POST /v1alpha/locations/global/<method>`,
//! U6 `GET [/download]/v1alpha/<full session>:downloadFile`.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::error::{
    JSON_CT, cut_response, fault_response, google_error, invalid_argument, not_found,
    unauthenticated,
};
use crate::jwt;
use crate::model::{Endpoint, Fault, RecordedRequest};
use crate::state::{PROJECT_PREFIX, State};
use crate::stream::{self, StreamPlan};
use crate::validate::{self, Reject};

/// Largest request body accepted (uploads are base64 inline).
const MAX_BODY_BYTES: usize = 64 << 20;

/// Recorded bodies larger than this have their long strings elided (keeps records bounded).
pub(crate) const RECORD_ELIDE_ABOVE: usize = 1 << 20;
/// Strings longer than this are elided in large recorded bodies.
const ELIDE_STRING_ABOVE: usize = 64 << 10;

/// Replaces every string longer than [`ELIDE_STRING_ABOVE`] by `[elided N bytes]`.
pub(crate) fn elide_long_strings(v: Value) -> Value {
    match v {
        Value::String(s) if s.len() > ELIDE_STRING_ABOVE => {
            Value::String(format!("[elided {} bytes]", s.len()))
        }
        Value::Array(a) => Value::Array(a.into_iter().map(elide_long_strings).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, elide_long_strings(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Registers every route.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/auth/getoxsrf").to(getoxsrf))
        .service(web::resource("/download/v1alpha/{tail:.*}").to(download_prefixed))
        .service(web::resource("/v1alpha/{tail:.*}").to(v1alpha))
        .default_service(web::to(unrouted));
}

async fn unrouted(req: HttpRequest) -> HttpResponse {
    not_found(&format!(
        "The requested URL {} was not found on this server.",
        req.path()
    ))
}

/// The recording of one request under way.
struct Rec {
    endpoint: Endpoint,
    rec: RecordedRequest,
}

impl Rec {
    fn start(state: &State, endpoint: Endpoint, req: &HttpRequest) -> Rec {
        state.count_call(endpoint);
        let headers = req
            .headers()
            .iter()
            .map(|(name, value)| {
                let name = name.as_str().to_ascii_lowercase();
                let value = if matches!(
                    name.as_str(),
                    "authorization" | "cookie" | "x-original-authorization"
                ) {
                    "[present]".to_string()
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                (name, value)
            })
            .collect();
        let path = match req.uri().path_and_query() {
            Some(pq) => pq.as_str().to_string(),
            None => req.path().to_string(),
        };
        Rec {
            endpoint,
            rec: RecordedRequest {
                csesidx: None,
                status: 0,
                body: None,
                headers,
                method: req.method().as_str().to_string(),
                path,
                at: std::time::Instant::now(),
                peer: req.peer_addr(),
            },
        }
    }

    fn finish(mut self, state: &State, resp: HttpResponse) -> HttpResponse {
        self.rec.status = resp.status().as_u16();
        state.record(self.endpoint, self.rec);
        resp
    }
}

fn query_map(req: &HttpRequest) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

/// `true` when a `Cookie` header carries `__Secure-C_SES=<expected>` (first occurrence wins).
fn cookie_matches(req: &HttpRequest, expected: &str) -> bool {
    let found = req
        .headers()
        .get_all("cookie")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| name.trim() == "__Secure-C_SES")
        .map(|(_, value)| value.trim());
    found == Some(expected)
}

/// What a fault means for a request that passed authentication.
enum FaultOutcome {
    /// Answer normally.
    Proceed,
    /// Answer normally but cut the U4 stream.
    Cut(usize),
    /// Answer this instead.
    Respond(HttpResponse),
}

/// The prompt of a U4 body: the texts of `streamAssistRequest.query.parts`, one per line
/// (read leniently: fault rules are matched before the body is validated).
fn prompt_of(body: Option<&Value>) -> Option<String> {
    let parts = body?
        .pointer("/streamAssistRequest/query/parts")?
        .as_array()?;
    Some(
        parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

async fn apply_fault(
    state: &State,
    endpoint: Endpoint,
    csesidx: &str,
    prompt: Option<&str>,
) -> FaultOutcome {
    let Some(fault) = state.take_fault(endpoint, csesidx, prompt) else {
        return FaultOutcome::Proceed;
    };
    match fault {
        Fault::SlowFirstByte(delay) => {
            tokio::time::sleep(delay).await;
            FaultOutcome::Proceed
        }
        Fault::CutAfter(n) if endpoint == Endpoint::StreamAssist => FaultOutcome::Cut(n),
        Fault::CutAfter(_) => FaultOutcome::Respond(cut_response()),
        other => match fault_response(&other) {
            Some(resp) => FaultOutcome::Respond(resp),
            None => FaultOutcome::Proceed,
        },
    }
}

/// U1.
async fn getoxsrf(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if req.method() != Method::GET {
        return unrouted(req).await;
    }
    let mut rec = Rec::start(&state, Endpoint::GetOxsrf, &req);
    let csesidx = query_map(&req).remove("csesidx").unwrap_or_default();
    let account = if csesidx.is_empty() || !csesidx.bytes().all(|b| b.is_ascii_digit()) {
        None
    } else {
        state.account(&csesidx)
    };
    let Some(account) = account else {
        return rec.finish(&state, unauthenticated());
    };
    rec.rec.csesidx = Some(csesidx.clone());
    if !cookie_matches(&req, &account.c_ses) {
        return rec.finish(&state, unauthenticated());
    }
    state.mint_started(&csesidx);
    struct Done<'a>(&'a State, &'a str);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.mint_finished(self.1);
        }
    }
    let _done = Done(&state, &csesidx);
    match apply_fault(&state, Endpoint::GetOxsrf, &csesidx, None).await {
        FaultOutcome::Respond(resp) => return rec.finish(&state, resp),
        FaultOutcome::Proceed | FaultOutcome::Cut(_) => {}
    }
    let (token, kid) = state.issue_key(&csesidx);
    let body = format!(")]}}'\n{}", json!({"xsrfToken": token, "keyId": kid}));
    rec.finish(
        &state,
        HttpResponse::Ok()
            .insert_header(("content-type", JSON_CT))
            .body(body),
    )
}

/// Reads the whole request body (bounded).
pub(crate) async fn read_body(mut payload: web::Payload) -> Result<bytes::Bytes, HttpResponse> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| invalid_argument("The request body could not be read."))?;
        if buf.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(google_error(
                413,
                "INVALID_ARGUMENT",
                "Request payload size exceeds the limit.",
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn authenticate(state: &State, req: &HttpRequest) -> Option<String> {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    match jwt::verify(state, header) {
        Ok(csesidx) => Some(csesidx),
        Err(_) => {
            state.jwt_rejected();
            None
        }
    }
}

fn reject(r: Reject) -> HttpResponse {
    match r {
        Reject::BadRequest(m) => invalid_argument(&m),
        Reject::NotFound(m) => not_found(&m),
    }
}

/// `/v1alpha/{tail}`: U2–U5 (POST `locations/global/<method>`) and the unprefixed U6 form.
async fn v1alpha(req: HttpRequest, payload: web::Payload, state: web::Data<State>) -> HttpResponse {
    let tail = req.match_info().query("tail").to_string();
    let state = state.into_inner();
    if req.method() == Method::GET && tail.ends_with(":downloadFile") {
        return download(req, &tail, state).await;
    }
    let endpoint = match (req.method(), tail.strip_prefix("locations/global/")) {
        (&Method::POST, Some("widgetCreateSession")) => Endpoint::CreateSession,
        (&Method::POST, Some("widgetAddContextFile")) => Endpoint::AddContextFile,
        (&Method::POST, Some("widgetStreamAssist")) => Endpoint::StreamAssist,
        (&Method::POST, Some("widgetListSessionFileMetadata")) => Endpoint::ListFiles,
        _ => return unrouted(req).await,
    };
    let latency = state.lock().call_latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut rec = Rec::start(&state, endpoint, &req);
    let raw = match read_body(payload).await {
        Ok(raw) => raw,
        Err(resp) => return rec.finish(&state, resp),
    };
    let body: Option<Value> = serde_json::from_slice(&raw).ok();
    rec.rec.body = if raw.len() > RECORD_ELIDE_ABOVE {
        body.clone().map(elide_long_strings)
    } else {
        body.clone()
    };
    if endpoint == Endpoint::StreamAssist
        && let Some(b) = &body
    {
        state.lock().last_stream_assist_body = Some(b.clone());
    }
    let Some(csesidx) = authenticate(&state, &req) else {
        return rec.finish(&state, unauthenticated());
    };
    rec.rec.csesidx = Some(csesidx.clone());
    let prompt = if endpoint == Endpoint::StreamAssist {
        prompt_of(body.as_ref())
    } else {
        None
    };
    let cut = match apply_fault(&state, endpoint, &csesidx, prompt.as_deref()).await {
        FaultOutcome::Respond(resp) => return rec.finish(&state, resp),
        FaultOutcome::Cut(n) => Some(n),
        FaultOutcome::Proceed => None,
    };
    let Some(body) = body else {
        return rec.finish(
            &state,
            invalid_argument("Invalid JSON payload received. The body is not valid JSON."),
        );
    };
    let Some(account) = state.account(&csesidx) else {
        return rec.finish(&state, unauthenticated());
    };
    let member = match validate::envelope(&body, &account.config_id, endpoint) {
        Ok(m) => m,
        Err(r) => return rec.finish(&state, reject(r)),
    };
    let resp = match endpoint {
        Endpoint::CreateSession => match validate::create_session(member) {
            Ok(()) => {
                let name = state.create_session(&csesidx);
                json_ok(&json!({"session": {"name": name, "displayName": ""}}))
            }
            Err(r) => reject(r),
        },
        Endpoint::AddContextFile => match validate::add_context_file(&state, &csesidx, member) {
            Ok((file_id, session)) => json_ok(&json!({"addContextFileResponse": {
                "fileId": file_id,
                "session": session,
                "tokenCount": "258",
            }})),
            Err(r) => reject(r),
        },
        Endpoint::StreamAssist => match validate::stream_assist(&state, &csesidx, member) {
            Ok(sr) => {
                let answer = state
                    .next_answer()
                    .or_else(|| crate::script::scripted_answer(&sr.query_text))
                    .unwrap_or_else(|| stream::default_answer(&sr.query_text, sr.image_only));
                let elements = stream::build_elements(&state, &sr.session, &answer);
                let (pacing, hold) = {
                    let mut inner = state.lock();
                    (inner.pacing, inner.hold.take())
                };
                // A prompt carrying the cut directive breaks its own answer (for clients that
                // drive the simulator binary and cannot script faults).
                let cut = cut.or_else(|| {
                    sr.query_text
                        .contains(stream::CUT_DIRECTIVE)
                        .then_some(stream::CUT_DIRECTIVE_AFTER)
                });
                let plan = StreamPlan {
                    elements,
                    pacing,
                    hold,
                    cut_after: cut,
                };
                HttpResponse::Ok()
                    .insert_header(("content-type", JSON_CT))
                    .streaming(stream::body(state.clone(), plan))
            }
            Err(r) => reject(r),
        },
        Endpoint::ListFiles => match validate::list_files(&state, &csesidx, member) {
            Ok(session) => list_files_response(&state, &csesidx, &session),
            Err(r) => reject(r),
        },
        Endpoint::GetOxsrf | Endpoint::Download => unrouted(req).await,
    };
    rec.finish(&state, resp)
}

fn json_ok(v: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("content-type", JSON_CT))
        .body(v.to_string())
}

fn list_files_response(state: &State, csesidx: &str, session: &str) -> HttpResponse {
    let files = state.generated_files(csesidx, session).unwrap_or_default();
    let full = format!("{PROJECT_PREFIX}{session}");
    let metadata: Vec<Value> = files
        .iter()
        .map(|f| {
            json!({
                "fileId": f.file_id,
                "name": f.name,
                "mimeType": f.mime,
                "byteSize": f.bytes.len().to_string(),
                "fileOriginType": "AI_GENERATED",
                "session": full,
                "downloadUri": format!(
                    "{}/download/v1alpha/{full}:downloadFile?fileId={}&alt=media",
                    state.base_url, f.file_id
                ),
            })
        })
        .collect();
    json_ok(&json!({"listSessionFileMetadataResponse": {"fileMetadata": metadata}}))
}

/// `/download/v1alpha/{tail}`: U6.
async fn download_prefixed(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let tail = req.match_info().query("tail").to_string();
    if req.method() != Method::GET || !tail.ends_with(":downloadFile") {
        return unrouted(req).await;
    }
    download(req, &tail, state.into_inner()).await
}

/// U6, both path forms; `tail` is the path after `v1alpha/`.
async fn download(req: HttpRequest, tail: &str, state: Arc<State>) -> HttpResponse {
    let mut rec = Rec::start(&state, Endpoint::Download, &req);
    let Some(csesidx) = authenticate(&state, &req) else {
        return rec.finish(&state, unauthenticated());
    };
    rec.rec.csesidx = Some(csesidx.clone());
    match apply_fault(&state, Endpoint::Download, &csesidx, None).await {
        FaultOutcome::Respond(resp) => return rec.finish(&state, resp),
        FaultOutcome::Proceed | FaultOutcome::Cut(_) => {}
    }
    let query = query_map(&req);
    if query.get("alt").map(String::as_str) != Some("media") {
        return rec.finish(
            &state,
            invalid_argument("Invalid value at 'alt': only \"media\" is supported here."),
        );
    }
    let Some(file_id) = query.get("fileId").filter(|f| !f.is_empty()) else {
        return rec.finish(&state, invalid_argument("'fileId' is required."));
    };
    let full = tail.strip_suffix(":downloadFile").unwrap_or(tail);
    let file = full
        .strip_prefix(PROJECT_PREFIX)
        .and_then(|short| state.generated_files(&csesidx, short))
        .and_then(|files| files.into_iter().find(|f| &f.file_id == file_id));
    let resp = match file {
        Some(f) => HttpResponse::Ok()
            .insert_header(("content-type", f.mime.as_str()))
            .body(f.bytes),
        None => not_found(&format!("File {file_id} of session {full} not found.")),
    };
    rec.finish(&state, resp)
}
