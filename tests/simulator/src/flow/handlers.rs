//! The Flow routes (labs host and API host on one server) and the validation of their bodies.
//!
//! Order of checks: route → credentials (ST cookie or Bearer AT; 401) → `Content-Type` and JSON
//! (400) → body fields (400, the message names the field by its JSON path) → ownership of
//! projects / media / operations (403 / 404 / 400) → credits (429) → the queued script.

use std::time::SystemTime;

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::model::{FlowRequest, FlowRoute, FlowUpload, ImageOutcome, VideoOutcome};
use super::state::{AccessToken, FlowState, Job, VIDEO_CREDITS_COST, random_token, random_uuid};
use super::{FLOW_VIDEO_MP4, SESSION_COOKIE};
use crate::error::{JSON_CT, google_error};
use crate::handlers::{RECORD_ELIDE_ABOVE, elide_long_strings, read_body};
use crate::model::rfc3339_millis;
use crate::stream::DEFAULT_IMAGE_PNG;

/// Image models of `batchGenerateImages`.
pub const IMAGE_MODELS: [&str; 3] = ["GEM_PIX", "GEM_PIX_2", "IMAGEN_3_5"];
/// Aspect ratios of `batchGenerateImages`.
pub const IMAGE_ASPECT_RATIOS: [&str; 2] = [
    "IMAGE_ASPECT_RATIO_LANDSCAPE",
    "IMAGE_ASPECT_RATIO_PORTRAIT",
];
/// Aspect ratios of `uploadUserImage` (the generation ones plus square).
pub const UPLOAD_ASPECT_RATIOS: [&str; 3] = [
    "IMAGE_ASPECT_RATIO_LANDSCAPE",
    "IMAGE_ASPECT_RATIO_PORTRAIT",
    "IMAGE_ASPECT_RATIO_SQUARE",
];
/// MIME types `uploadUserImage` accepts.
pub const UPLOAD_MIME_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/webp", "image/gif"];
/// Aspect ratios of the video submits.
pub const VIDEO_ASPECT_RATIOS: [&str; 2] = [
    "VIDEO_ASPECT_RATIO_LANDSCAPE",
    "VIDEO_ASPECT_RATIO_PORTRAIT",
];
/// `videoModelKey`s of `batchAsyncGenerateVideoText`.
pub const T2V_MODEL_KEYS: [&str; 4] = [
    "veo_3_1_t2v_fast_portrait",
    "veo_3_1_t2v_fast",
    "veo_2_1_fast_d_15_t2v",
    "veo_2_0_t2v",
];
/// `videoModelKey`s of `batchAsyncGenerateVideoStartAndEndImage`.
pub const I2V_MODEL_KEYS: [&str; 3] = [
    "veo_3_1_i2v_s_fast_fl",
    "veo_2_1_fast_d_15_i2v",
    "veo_2_0_i2v",
];
/// `videoModelKey`s of `batchAsyncGenerateVideoReferenceImages`.
pub const R2V_MODEL_KEYS: [&str; 1] = ["veo_3_0_r2v_fast"];

const STATUS_PENDING: &str = "MEDIA_GENERATION_STATUS_PENDING";
const STATUS_ACTIVE: &str = "MEDIA_GENERATION_STATUS_ACTIVE";
const STATUS_SUCCESSFUL: &str = "MEDIA_GENERATION_STATUS_SUCCESSFUL";

/// Largest seed accepted (int32).
const MAX_SEED: i64 = i32::MAX as i64;

/// A Google-shaped error answer (`{"error":{"code","message","status"}}`).
struct Fail {
    code: u16,
    status: &'static str,
    message: String,
}

impl Fail {
    fn new(code: u16, status: &'static str, message: impl Into<String>) -> Fail {
        Fail {
            code,
            status,
            message: message.into(),
        }
    }

    fn response(&self) -> HttpResponse {
        google_error(self.code, self.status, &self.message)
    }
}

type V<T> = Result<T, Fail>;

/// Registers the one dispatcher.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.default_service(web::to(dispatch));
}

fn route_of(method: &Method, path: &str) -> FlowRoute {
    match (method, path) {
        (&Method::GET, "/fx/api/auth/session") => FlowRoute::Session,
        (&Method::GET, "/v1/credits") => FlowRoute::Credits,
        (&Method::POST, "/fx/api/trpc/project.createProject") => FlowRoute::CreateProject,
        (&Method::POST, "/v1:uploadUserImage") => FlowRoute::UploadImage,
        (&Method::POST, "/v1/video:batchAsyncGenerateVideoText") => FlowRoute::VideoText,
        (&Method::POST, "/v1/video:batchAsyncGenerateVideoStartAndEndImage") => {
            FlowRoute::VideoStartEnd
        }
        (&Method::POST, "/v1/video:batchAsyncGenerateVideoReferenceImages") => {
            FlowRoute::VideoReference
        }
        (&Method::POST, "/v1/video:batchCheckAsyncVideoGenerationStatus") => FlowRoute::CheckStatus,
        (&Method::POST, p) if project_of(p).is_some() => FlowRoute::GenerateImages,
        (&Method::GET, p) if file_of(p).is_some() => FlowRoute::File,
        _ => FlowRoute::Unrouted,
    }
}

/// The project id of `/v1/projects/{id}/flowMedia:batchGenerateImages`.
fn project_of(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/projects/")?
        .strip_suffix("/flowMedia:batchGenerateImages")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// The id of `/files/{id}`.
fn file_of(path: &str) -> Option<&str> {
    path.strip_prefix("/files/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// The token of `authorization: Bearer <token>`.
fn bearer_of(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// The session-token cookie (first occurrence over every `Cookie` header).
fn session_cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all("cookie")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| name.trim() == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<FlowState>,
) -> HttpResponse {
    let route = route_of(req.method(), req.path());
    let path = match req.uri().path_and_query() {
        Some(pq) => pq.as_str().to_string(),
        None => req.path().to_string(),
    };
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut rec = FlowRequest {
        route,
        method: req.method().as_str().to_string(),
        path,
        body: None,
        bearer: bearer_of(&req),
        session_token: session_cookie(&req),
        headers,
        status: 0,
        at: std::time::Instant::now(),
        peer: req.peer_addr(),
    };
    let resp = if req.method() == Method::POST {
        match read_body(payload).await {
            Ok(raw) => {
                let parsed: Option<Value> = serde_json::from_slice(&raw).ok();
                rec.body = if raw.len() > RECORD_ELIDE_ABOVE {
                    parsed.clone().map(elide_long_strings)
                } else {
                    parsed.clone()
                };
                handle(&state, route, &req, &rec, parsed.as_ref())
            }
            Err(resp) => resp,
        }
    } else {
        handle(&state, route, &req, &rec, None)
    };
    rec.status = resp.status().as_u16();
    state.record(rec);
    resp
}

fn handle(
    state: &FlowState,
    route: FlowRoute,
    req: &HttpRequest,
    rec: &FlowRequest,
    body: Option<&Value>,
) -> HttpResponse {
    let st = rec.session_token.as_deref();
    let at = rec.bearer.as_deref();
    let result = match route {
        FlowRoute::Session => session(state, st),
        FlowRoute::Credits => credits(state, at),
        FlowRoute::CreateProject => create_project(state, req, st, body),
        FlowRoute::UploadImage => upload_image(state, req, at, body),
        FlowRoute::GenerateImages => {
            generate_images(state, req, at, project_of(req.path()).unwrap_or(""), body)
        }
        FlowRoute::VideoText => submit_video(state, req, at, VideoKind::Text, body),
        FlowRoute::VideoStartEnd => submit_video(state, req, at, VideoKind::StartEnd, body),
        FlowRoute::VideoReference => submit_video(state, req, at, VideoKind::Reference, body),
        FlowRoute::CheckStatus => check_status(state, req, at, body),
        FlowRoute::File => serve_file(state, file_of(req.path()).unwrap_or("")),
        FlowRoute::Unrouted => Err(not_found(format!(
            "The requested URL {} was not found on this server.",
            req.path()
        ))),
    };
    result.unwrap_or_else(|fail| fail.response())
}

// ------------------------------------------------------------------------- helpers

fn json_ok(v: &Value) -> V<HttpResponse> {
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", JSON_CT))
        .body(v.to_string()))
}

fn unauthenticated(message: &str) -> Fail {
    Fail::new(401, "UNAUTHENTICATED", message)
}

fn not_found(message: impl Into<String>) -> Fail {
    Fail::new(404, "NOT_FOUND", message)
}

/// The canonical status name of an HTTP error code.
pub(crate) fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

/// The session token an access token belongs to (401 when missing, unknown, revoked or
/// expired).
fn authenticate(state: &FlowState, at: Option<&str>) -> V<String> {
    let Some(at) = at else {
        return Err(unauthenticated(
            "Request is missing required authentication credential. Expected OAuth 2 access \
             token, login cookie or other valid authentication credential.",
        ));
    };
    state.lock().session_of_access(at).ok_or_else(|| {
        unauthenticated(
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential.",
        )
    })
}

/// The registered, unexpired session token of the cookie (401 otherwise).
fn session_token(state: &FlowState, st: Option<&str>) -> V<String> {
    let Some(st) = st else {
        return Err(unauthenticated(
            "Missing __Secure-next-auth.session-token cookie.",
        ));
    };
    match state.lock().live_session(st) {
        Some(_) => Ok(st.to_string()),
        None => Err(unauthenticated("The session token is invalid or expired.")),
    }
}

/// The JSON object body of a POST (400 on a wrong `Content-Type`, bad JSON or a non-object).
fn json_object<'a>(req: &HttpRequest, body: Option<&'a Value>) -> V<&'a Map<String, Value>> {
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(bad(format!(
            "Invalid Content-Type {ct:?}: the request body must be application/json."
        )));
    }
    match body {
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(bad(
            "Invalid JSON payload received. The body must be a JSON object.",
        )),
        None => Err(bad(
            "Invalid JSON payload received. The body is not valid JSON.",
        )),
    }
}

fn bad(message: impl Into<String>) -> Fail {
    Fail::new(400, "INVALID_ARGUMENT", message)
}

/// A member; `null` counts as missing.
fn field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn missing(at: &str) -> Fail {
    bad(format!("Missing required field '{at}'."))
}

fn object<'a>(v: Option<&'a Value>, at: &str) -> V<&'a Map<String, Value>> {
    match v {
        None => Err(missing(at)),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(bad(format!("Invalid value at '{at}': expected an object."))),
    }
}

fn array<'a>(v: Option<&'a Value>, at: &str) -> V<&'a Vec<Value>> {
    match v {
        None => Err(missing(at)),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(bad(format!("Invalid value at '{at}': expected an array."))),
    }
}

fn string<'a>(v: Option<&'a Value>, at: &str) -> V<&'a str> {
    match v {
        None => Err(missing(at)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("Invalid value at '{at}': expected a string."))),
    }
}

/// A string that is not empty (or blank).
fn nonempty<'a>(v: Option<&'a Value>, at: &str) -> V<&'a str> {
    let s = string(v, at)?;
    if s.trim().is_empty() {
        return Err(bad(format!("Invalid value at '{at}': must not be empty.")));
    }
    Ok(s)
}

fn exactly(v: Option<&Value>, at: &str, expected: &str) -> V<()> {
    let s = string(v, at)?;
    if s != expected {
        return Err(bad(format!(
            "Invalid value at '{at}': {s:?} (expected {expected:?})."
        )));
    }
    Ok(())
}

fn one_of<'a>(v: Option<&'a Value>, at: &str, allowed: &[&str]) -> V<&'a str> {
    let s = string(v, at)?;
    if !allowed.contains(&s) {
        return Err(bad(format!(
            "Invalid value at '{at}': {s:?} is not one of {}.",
            allowed.join(", ")
        )));
    }
    Ok(s)
}

/// An integer seed in `0..=i32::MAX`.
fn seed(v: Option<&Value>, at: &str) -> V<i64> {
    match v {
        None => Err(missing(at)),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(s) if (0..=MAX_SEED).contains(&s) => Ok(s),
            _ => Err(bad(format!(
                "Invalid value at '{at}': {n} is not an integer in 0..={MAX_SEED}."
            ))),
        },
        Some(_) => Err(bad(format!(
            "Invalid value at '{at}': expected an integer."
        ))),
    }
}

/// `clientContext.sessionId`: `;` followed by Unix milliseconds.
fn session_id(v: Option<&Value>, at: &str) -> V<()> {
    let s = string(v, at)?;
    match s.strip_prefix(';') {
        Some(ms) if !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(bad(format!(
            "Invalid value at '{at}': {s:?} is not ';' followed by Unix milliseconds."
        ))),
    }
}

/// Answers 404 (unknown) or 403 (another token's) unless `st` owns `project`.
fn check_project(inner: &super::state::FlowInner, st: &str, project: &str) -> V<()> {
    if inner
        .tokens
        .get(st)
        .is_some_and(|t| t.projects.iter().any(|p| p == project))
    {
        return Ok(());
    }
    if inner
        .tokens
        .values()
        .any(|t| t.projects.iter().any(|p| p == project))
    {
        return Err(Fail::new(
            403,
            "PERMISSION_DENIED",
            format!("The caller does not have permission on project {project}."),
        ));
    }
    Err(not_found(format!("Project {project} not found.")))
}

/// 400 unless `st` uploaded or generated every media id (`(json path, id)` pairs).
fn check_media(inner: &super::state::FlowInner, st: &str, media: &[(String, String)]) -> V<()> {
    let owned = inner.tokens.get(st).map(|t| &t.media);
    for (at, id) in media {
        if !owned.is_some_and(|m| m.contains(id)) {
            return Err(bad(format!(
                "Invalid value at '{at}': media {id:?} not found."
            )));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------- labs host

fn session(state: &FlowState, st: Option<&str>) -> V<HttpResponse> {
    let st = session_token(state, st)?;
    let mut inner = state.lock();
    let ttl = inner.access_ttl;
    let email = inner
        .tokens
        .get(&st)
        .map(|t| t.email.clone())
        .unwrap_or_default();
    let at = format!("ya29.a0{}", random_token(150));
    let expires_at = SystemTime::now() + ttl;
    inner.access.insert(
        at.clone(),
        AccessToken {
            session_token: st,
            expires_at,
        },
    );
    drop(inner);
    let name = email.split('@').next().unwrap_or("").to_string();
    json_ok(&json!({
        "user": {"name": name, "email": email, "image": ""},
        "expires": rfc3339_millis(expires_at),
        "access_token": at,
    }))
}

fn create_project(
    state: &FlowState,
    req: &HttpRequest,
    st: Option<&str>,
    body: Option<&Value>,
) -> V<HttpResponse> {
    let st = session_token(state, st)?;
    let body = json_object(req, body)?;
    let j = object(field(body, "json"), "json")?;
    let title = nonempty(field(j, "projectTitle"), "json.projectTitle")?;
    exactly(field(j, "toolName"), "json.toolName", "PINHOLE")?;
    let project = random_uuid();
    if let Some(t) = state.lock().tokens.get_mut(&st) {
        t.projects.push(project.clone());
    }
    json_ok(&json!({"result": {"data": {"json": {"result": {
        "projectId": project,
        "projectInfo": {"projectTitle": title},
    }}}}}))
}

// ------------------------------------------------------------------------- API host

fn credits(state: &FlowState, at: Option<&str>) -> V<HttpResponse> {
    let st = authenticate(state, at)?;
    let inner = state.lock();
    let (credits, tier) = inner
        .tokens
        .get(&st)
        .map(|t| (t.credits, t.tier.clone()))
        .unwrap_or_default();
    drop(inner);
    json_ok(&json!({"credits": credits, "userPaygateTier": tier}))
}

fn upload_image(
    state: &FlowState,
    req: &HttpRequest,
    at: Option<&str>,
    body: Option<&Value>,
) -> V<HttpResponse> {
    let st = authenticate(state, at)?;
    let body = json_object(req, body)?;
    let input = object(field(body, "imageInput"), "imageInput")?;
    let raw = nonempty(field(input, "rawImageBytes"), "imageInput.rawImageBytes")?;
    let bytes = STANDARD.decode(raw).map_err(|e| {
        bad(format!(
            "Invalid value at 'imageInput.rawImageBytes': not base64 ({e})."
        ))
    })?;
    if bytes.is_empty() {
        return Err(bad(
            "Invalid value at 'imageInput.rawImageBytes': the image is empty.".to_string(),
        ));
    }
    let mime = one_of(
        field(input, "mimeType"),
        "imageInput.mimeType",
        &UPLOAD_MIME_TYPES,
    )?;
    match field(input, "isUserUploaded") {
        Some(Value::Bool(true)) => {}
        None => return Err(missing("imageInput.isUserUploaded")),
        Some(_) => {
            return Err(bad(
                "Invalid value at 'imageInput.isUserUploaded': expected true.".to_string(),
            ));
        }
    }
    let aspect = one_of(
        field(input, "aspectRatio"),
        "imageInput.aspectRatio",
        &UPLOAD_ASPECT_RATIOS,
    )?;
    let ctx = object(field(body, "clientContext"), "clientContext")?;
    session_id(field(ctx, "sessionId"), "clientContext.sessionId")?;
    exactly(field(ctx, "tool"), "clientContext.tool", "ASSET_MANAGER")?;

    let media_id = format!("CAMa{}", random_token(40));
    let mut inner = state.lock();
    if let Some(t) = inner.tokens.get_mut(&st) {
        t.media.insert(media_id.clone());
    }
    inner.push_upload(FlowUpload {
        media_id: media_id.clone(),
        session_token: st,
        mime_type: mime.to_string(),
        aspect_ratio: aspect.to_string(),
        bytes: Bytes::from(bytes),
    });
    drop(inner);
    json_ok(&json!({"mediaGenerationId": {"mediaGenerationId": media_id}}))
}

/// One validated image request.
struct ImageRequest {
    seed: i64,
    model: String,
    aspect: String,
    prompt: String,
}

fn generate_images(
    state: &FlowState,
    req: &HttpRequest,
    at: Option<&str>,
    project: &str,
    body: Option<&Value>,
) -> V<HttpResponse> {
    let st = authenticate(state, at)?;
    let body = json_object(req, body)?;
    let requests = array(field(body, "requests"), "requests")?;
    if requests.is_empty() {
        return Err(bad(
            "Invalid value at 'requests': must not be empty.".to_string()
        ));
    }
    let mut items = Vec::new();
    let mut media = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let p = format!("requests[{i}]");
        let r = object(Some(r), &p)?;
        let ctx = object(field(r, "clientContext"), &format!("{p}.clientContext"))?;
        session_id(
            field(ctx, "sessionId"),
            &format!("{p}.clientContext.sessionId"),
        )?;
        let seed = seed(field(r, "seed"), &format!("{p}.seed"))?;
        let model = one_of(
            field(r, "imageModelName"),
            &format!("{p}.imageModelName"),
            &IMAGE_MODELS,
        )?;
        let aspect = one_of(
            field(r, "imageAspectRatio"),
            &format!("{p}.imageAspectRatio"),
            &IMAGE_ASPECT_RATIOS,
        )?;
        let prompt = nonempty(field(r, "prompt"), &format!("{p}.prompt"))?;
        if let Some(inputs) = field(r, "imageInputs") {
            let inputs = array(Some(inputs), &format!("{p}.imageInputs"))?;
            for (j, input) in inputs.iter().enumerate() {
                let q = format!("{p}.imageInputs[{j}]");
                let input = object(Some(input), &q)?;
                let name = nonempty(field(input, "name"), &format!("{q}.name"))?;
                exactly(
                    field(input, "imageInputType"),
                    &format!("{q}.imageInputType"),
                    "IMAGE_INPUT_TYPE_REFERENCE",
                )?;
                media.push((format!("{q}.name"), name.to_string()));
            }
        }
        items.push(ImageRequest {
            seed,
            model: model.to_string(),
            aspect: aspect.to_string(),
            prompt: prompt.to_string(),
        });
    }

    let mut inner = state.lock();
    check_project(&inner, &st, project)?;
    check_media(&inner, &st, &media)?;
    match inner.image_scripts.pop_front() {
        Some(ImageOutcome::HttpError(code, message)) => {
            return Err(Fail::new(code, status_name(code), message));
        }
        Some(ImageOutcome::Success) | None => {}
    }
    let mut out = Vec::new();
    for item in items {
        let id = inner.add_media(&st, "image/png", Bytes::from_static(DEFAULT_IMAGE_PNG));
        out.push(json!({
            "name": id,
            "image": {"generatedImage": {
                "seed": item.seed,
                "mediaGenerationId": id,
                "prompt": item.prompt,
                "modelNameType": item.model,
                "aspectRatio": item.aspect,
                "fifeUrl": state.fife_url(&id),
            }},
        }));
    }
    drop(inner);
    json_ok(&json!({"media": out}))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum VideoKind {
    Text,
    StartEnd,
    Reference,
}

impl VideoKind {
    fn keys(self) -> &'static [&'static str] {
        match self {
            VideoKind::Text => &T2V_MODEL_KEYS,
            VideoKind::StartEnd => &I2V_MODEL_KEYS,
            VideoKind::Reference => &R2V_MODEL_KEYS,
        }
    }

    fn method(self) -> &'static str {
        match self {
            VideoKind::Text => "batchAsyncGenerateVideoText",
            VideoKind::StartEnd => "batchAsyncGenerateVideoStartAndEndImage",
            VideoKind::Reference => "batchAsyncGenerateVideoReferenceImages",
        }
    }
}

/// One validated video request.
struct VideoRequest {
    scene_id: String,
    model_key: String,
    prompt: String,
    aspect: String,
    seed: i64,
}

fn submit_video(
    state: &FlowState,
    req: &HttpRequest,
    at: Option<&str>,
    kind: VideoKind,
    body: Option<&Value>,
) -> V<HttpResponse> {
    let st = authenticate(state, at)?;
    let body = json_object(req, body)?;
    let ctx = object(field(body, "clientContext"), "clientContext")?;
    session_id(field(ctx, "sessionId"), "clientContext.sessionId")?;
    let project = nonempty(field(ctx, "projectId"), "clientContext.projectId")?;
    exactly(field(ctx, "tool"), "clientContext.tool", "PINHOLE")?;
    let tier = nonempty(
        field(ctx, "userPaygateTier"),
        "clientContext.userPaygateTier",
    )?;
    if !tier.starts_with("PAYGATE_TIER_") {
        return Err(bad(format!(
            "Invalid value at 'clientContext.userPaygateTier': {tier:?}."
        )));
    }
    let requests = array(field(body, "requests"), "requests")?;
    if requests.is_empty() {
        return Err(bad(
            "Invalid value at 'requests': must not be empty.".to_string()
        ));
    }
    let mut items = Vec::new();
    let mut media = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let p = format!("requests[{i}]");
        let r = object(Some(r), &p)?;
        let aspect = one_of(
            field(r, "aspectRatio"),
            &format!("{p}.aspectRatio"),
            &VIDEO_ASPECT_RATIOS,
        )?;
        let seed = seed(field(r, "seed"), &format!("{p}.seed"))?;
        let text = object(field(r, "textInput"), &format!("{p}.textInput"))?;
        let prompt = nonempty(field(text, "prompt"), &format!("{p}.textInput.prompt"))?;
        let key = string(field(r, "videoModelKey"), &format!("{p}.videoModelKey"))?;
        if !kind.keys().contains(&key) {
            return Err(bad(format!(
                "Invalid value at '{p}.videoModelKey': {key:?} is not a model of {} (one of {}).",
                kind.method(),
                kind.keys().join(", ")
            )));
        }
        let meta = object(field(r, "metadata"), &format!("{p}.metadata"))?;
        let scene = nonempty(field(meta, "sceneId"), &format!("{p}.metadata.sceneId"))?;
        match kind {
            VideoKind::Text => {}
            VideoKind::StartEnd => {
                let start = object(field(r, "startImage"), &format!("{p}.startImage"))?;
                let id = nonempty(field(start, "mediaId"), &format!("{p}.startImage.mediaId"))?;
                media.push((format!("{p}.startImage.mediaId"), id.to_string()));
                if let Some(end) = field(r, "endImage") {
                    let end = object(Some(end), &format!("{p}.endImage"))?;
                    let id = nonempty(field(end, "mediaId"), &format!("{p}.endImage.mediaId"))?;
                    media.push((format!("{p}.endImage.mediaId"), id.to_string()));
                }
            }
            VideoKind::Reference => {
                let refs = array(field(r, "referenceImages"), &format!("{p}.referenceImages"))?;
                for (j, reference) in refs.iter().enumerate() {
                    let q = format!("{p}.referenceImages[{j}]");
                    let reference = object(Some(reference), &q)?;
                    exactly(
                        field(reference, "imageUsageType"),
                        &format!("{q}.imageUsageType"),
                        "IMAGE_USAGE_TYPE_ASSET",
                    )?;
                    let id = nonempty(field(reference, "mediaId"), &format!("{q}.mediaId"))?;
                    media.push((format!("{q}.mediaId"), id.to_string()));
                }
            }
        }
        items.push(VideoRequest {
            scene_id: scene.to_string(),
            model_key: key.to_string(),
            prompt: prompt.to_string(),
            aspect: aspect.to_string(),
            seed,
        });
    }

    let mut inner = state.lock();
    check_project(&inner, &st, project)?;
    check_media(&inner, &st, &media)?;
    let credits = inner.tokens.get(&st).map(|t| t.credits).unwrap_or(0);
    let cost = VIDEO_CREDITS_COST * items.len() as i64;
    if credits < cost {
        return Err(Fail::new(
            429,
            "RESOURCE_EXHAUSTED",
            format!("Not enough credits: {credits} left, {cost} needed."),
        ));
    }
    let script = inner.video_scripts.pop_front().unwrap_or_default();
    match script.outcome {
        VideoOutcome::SubmitHttpError(code) => {
            return Err(Fail::new(
                code,
                status_name(code),
                "Simulated video submit failure.",
            ));
        }
        VideoOutcome::EmptyTaskId => {
            let ops: Vec<Value> = items
                .iter()
                .map(|it| {
                    json!({
                        "operation": {"name": ""},
                        "sceneId": it.scene_id,
                        "status": STATUS_PENDING,
                    })
                })
                .collect();
            return json_ok(&json!({"operations": ops, "remainingCredits": credits}));
        }
        VideoOutcome::Success | VideoOutcome::Failed(_) => {}
    }
    let mut ops = Vec::new();
    for it in items {
        let task = random_token(32).to_ascii_lowercase();
        ops.push(json!({
            "operation": {"name": task},
            "sceneId": it.scene_id,
            "status": STATUS_PENDING,
        }));
        inner.jobs.insert(
            task,
            Job {
                session_token: st.clone(),
                scene_id: it.scene_id,
                model_key: it.model_key,
                prompt: it.prompt,
                aspect_ratio: it.aspect,
                seed: it.seed,
                outcome: script.outcome.clone(),
                polls_before_done: script.polls_before_done,
                http_errors_left: script.poll_http_errors,
                polls: 0,
                media_id: None,
            },
        );
    }
    let remaining = credits - cost;
    if let Some(t) = inner.tokens.get_mut(&st) {
        t.credits = remaining;
    }
    drop(inner);
    json_ok(&json!({"operations": ops, "remainingCredits": remaining}))
}

fn check_status(
    state: &FlowState,
    req: &HttpRequest,
    at: Option<&str>,
    body: Option<&Value>,
) -> V<HttpResponse> {
    let st = authenticate(state, at)?;
    let body = json_object(req, body)?;
    let ops = array(field(body, "operations"), "operations")?;
    if ops.is_empty() {
        return Err(bad(
            "Invalid value at 'operations': must not be empty.".to_string()
        ));
    }
    let mut wanted = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let p = format!("operations[{i}]");
        let op = object(Some(op), &p)?;
        let operation = object(field(op, "operation"), &format!("{p}.operation"))?;
        let name = nonempty(field(operation, "name"), &format!("{p}.operation.name"))?;
        let scene = string(field(op, "sceneId"), &format!("{p}.sceneId"))?;
        wanted.push((p, name.to_string(), scene.to_string()));
    }

    let mut inner = state.lock();
    for (p, name, scene) in &wanted {
        let job = inner
            .jobs
            .get(name)
            .filter(|j| j.session_token == st)
            .ok_or_else(|| not_found(format!("Operation {name} not found.")))?;
        if &job.scene_id != scene {
            return Err(bad(format!(
                "Invalid value at '{p}.sceneId': {scene:?} is not the scene of operation {name}."
            )));
        }
    }
    let mut failing = false;
    for (_, name, _) in &wanted {
        if let Some(job) = inner.jobs.get_mut(name)
            && job.http_errors_left > 0
        {
            job.http_errors_left -= 1;
            failing = true;
        }
    }
    if failing {
        return Err(Fail::new(500, "INTERNAL", "Internal error encountered."));
    }
    let mut out = Vec::new();
    for (_, name, _) in &wanted {
        let Some(job) = inner.jobs.get_mut(name) else {
            continue;
        };
        let running = job.polls < job.polls_before_done;
        job.polls = job.polls.saturating_add(1);
        if running {
            let status = if job.polls % 2 == 1 {
                STATUS_PENDING
            } else {
                STATUS_ACTIVE
            };
            out.push(json!({
                "operation": {"name": name},
                "sceneId": job.scene_id,
                "status": status,
            }));
            continue;
        }
        match job.outcome.clone() {
            VideoOutcome::Failed(status) => out.push(json!({
                "operation": {"name": name},
                "sceneId": job.scene_id,
                "status": status,
            })),
            _ => {
                let (scene, model, prompt, aspect, seed) = (
                    job.scene_id.clone(),
                    job.model_key.clone(),
                    job.prompt.clone(),
                    job.aspect_ratio.clone(),
                    job.seed,
                );
                let existing = job.media_id.clone();
                let media_id = match existing {
                    Some(id) => id,
                    None => {
                        let owner = st.clone();
                        let id = inner.add_media(
                            &owner,
                            "video/mp4",
                            Bytes::from_static(FLOW_VIDEO_MP4),
                        );
                        if let Some(job) = inner.jobs.get_mut(name) {
                            job.media_id = Some(id.clone());
                        }
                        id
                    }
                };
                out.push(json!({
                    "operation": {
                        "name": name,
                        "metadata": {
                            "@type": "type.googleapis.com/google.internal.labs.aisandbox.v1.Media",
                            "name": media_id,
                            "video": {
                                "seed": seed,
                                "mediaGenerationId": media_id,
                                "prompt": prompt,
                                "fifeUrl": state.fife_url(&media_id),
                                "mimeType": "video/mp4",
                                "model": model,
                                "aspectRatio": aspect,
                            },
                        },
                    },
                    "sceneId": scene,
                    "mediaGenerationId": media_id,
                    "status": STATUS_SUCCESSFUL,
                }));
            }
        }
    }
    let remaining = inner.tokens.get(&st).map(|t| t.credits).unwrap_or(0);
    drop(inner);
    json_ok(&json!({"operations": out, "remainingCredits": remaining}))
}

// ------------------------------------------------------------------------- files

fn serve_file(state: &FlowState, id: &str) -> V<HttpResponse> {
    match state.file(id) {
        Some(f) => Ok(HttpResponse::Ok()
            .insert_header(("content-type", f.mime))
            .body(f.bytes)),
        None => Err(not_found(format!("File {id} not found."))),
    }
}
