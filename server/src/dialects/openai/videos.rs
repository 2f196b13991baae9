//! OpenAI's video API over Flow's Veo models: `POST /v1/videos`, `GET /v1/videos`,
//! `GET /v1/videos/{id}`, `GET /v1/videos/{id}/content`, `DELETE /v1/videos/{id}`.
//!
//! A job is answered at once as `queued` and runs in the background ([`crate::videos`]); the
//! client polls `GET /v1/videos/{id}` (the SDK's `create_and_poll`) and downloads the MP4.
//! Jobs belong to the API key that made them: another key gets 404.
//!
//! `POST /v1/videos` takes JSON or `multipart/form-data` (what the SDK sends): `prompt`
//! (required), `model` (a Flow video model; default [`DEFAULT_VIDEO_MODEL`]), `seconds` (4, 8
//! or 12 are accepted; Flow's clips are 8 s, and the job says so), `size` (one of OpenAI's four;
//! its orientation must be the model's, the job reports the model's own size) and
//! `input_reference`: an image file part, or a `data:` URL (a JSON string, an
//! `{"image_url": …}` object, a form field `input_reference` or `input_reference[image_url]`).
//! It becomes the first frame of an image-to-video model (ignored by a text-to-video model, as
//! Flow does). `file_id` references and linked images are refused.
//!
//! `GET …/content` serves `variant=video` (the default) only; while the job is not completed it
//! answers 404 "not ready", as OpenAI does.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::dialects::{Dialect, parse_data_url, read_body, stream};
use crate::domain::{ChatRequest, Media, Message, ModelError, ModelId, Part, Role};
use crate::error::GatewayError;
use crate::media::MediaStore;
use crate::startup::AppState;
use crate::store::VideoJobRecord;
use crate::upstream::flow::models::{FlowModel, Orientation};
use crate::videos::{Content, NewVideo, VideoJobs, owner_of};

/// The model used when the request names none.
pub const DEFAULT_VIDEO_MODEL: &str = "veo_3_1_t2v_fast_landscape";
/// The length of every Flow clip, in seconds (what jobs report).
pub const FLOW_SECONDS: &str = "8";
/// The `seconds` values OpenAI defines (all accepted; Flow makes 8 s).
const SECONDS: [&str; 3] = ["4", "8", "12"];
/// OpenAI's sizes, landscape ones first.
const LANDSCAPE_SIZES: [&str; 2] = ["1280x720", "1792x1024"];
const PORTRAIT_SIZES: [&str; 2] = ["720x1280", "1024x1792"];
/// The longest prompt (OpenAI's `maxLength`, in characters).
const MAX_PROMPT_CHARS: usize = 32_000;
/// The most parts a multipart body may have.
const MAX_PARTS: usize = 16;
/// The longest text field of a multipart body (a data URL is a text field).
const MAX_TEXT_FIELD: usize = 32 * 1024 * 1024;
/// `limit` of `GET /v1/videos`: default and maximum.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

fn invalid(message: impl Into<String>, param: &str) -> GatewayError {
    GatewayError::invalid(message, Some(param.to_owned()))
}

/// An OpenAI-shaped error with its own message (`GatewayError::NotFound` has a fixed one).
fn error(
    status: StatusCode,
    message: &str,
    code: Option<&str>,
    param: Option<&str>,
) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }))
}

fn no_such_video(id: &str) -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        &format!("No video found with id '{id}'."),
        Some("not_found"),
        None,
    )
}

fn unavailable() -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        "the video API is not available: it needs the Flow upstream (flow.enable)",
        Some("not_found"),
        None,
    )
}

/// The video object of a job (OpenAI's `Video`).
pub fn video_object(r: &VideoJobRecord) -> Value {
    json!({
        "id": r.id,
        "object": "video",
        "model": r.model,
        "status": r.status.as_str(),
        "progress": r.progress,
        "created_at": r.created_at,
        "completed_at": r.completed_at,
        "expires_at": r.expires_at,
        "prompt": r.prompt,
        "size": r.size.as_deref().unwrap_or(LANDSCAPE_SIZES[0]),
        "seconds": r.seconds.as_deref().unwrap_or(FLOW_SECONDS),
        "remixed_from_video_id": Value::Null,
        "error": r.error.as_ref().map(|e| json!({"code": e.code, "message": e.message})),
    })
}

/// The fields of a create request, from JSON or a form.
#[derive(Debug, Default)]
struct Fields {
    model: Option<String>,
    prompt: Option<String>,
    seconds: Option<String>,
    size: Option<String>,
    /// The reference image, decoded: its declared type and bytes.
    reference: Option<(String, Bytes)>,
}

#[derive(Debug, Deserialize)]
struct JsonBody<'a> {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    seconds: Option<SecondsValue>,
    #[serde(default)]
    size: Option<String>,
    #[serde(default, borrow)]
    input_reference: Option<&'a RawValue>,
}

/// `seconds` as a string (OpenAI) or, leniently, a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SecondsValue {
    Text(String),
    Number(u64),
}

#[derive(Debug, Deserialize)]
struct ImageRef {
    #[serde(default)]
    image_url: Option<String>,
    #[serde(default)]
    file_id: Option<String>,
}

/// A reference given as a URL string: only `data:` URLs of images.
fn reference_from_url(url: &str) -> Result<(String, Bytes), GatewayError> {
    if !url.trim_start().starts_with("data:") {
        return Err(invalid(
            "input_reference must be an uploaded file or a data: URL; Flow takes images inline, \
             not as links",
            "input_reference",
        ));
    }
    let data = parse_data_url(url.trim())
        .map_err(|e| invalid(format!("input_reference: {e}"), "input_reference"))?;
    Ok((data.mime, data.data))
}

fn file_id_refused() -> GatewayError {
    invalid(
        "input_reference.file_id is not supported; send the image as a file or a data: URL",
        "input_reference.file_id",
    )
}

fn reference_from_ref(r: ImageRef) -> Result<(String, Bytes), GatewayError> {
    match (r.image_url, r.file_id) {
        (Some(url), None) => reference_from_url(&url),
        (None, Some(_)) => Err(file_id_refused()),
        _ => Err(invalid(
            "input_reference needs exactly one of image_url or file_id",
            "input_reference",
        )),
    }
}

fn parse_json(body: &[u8], max_depth: u32) -> Result<Fields, GatewayError> {
    crate::dialects::limits::check_depth(body, max_depth)?;
    let wire: JsonBody<'_> = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid(
            format!("the request body is not valid JSON for this endpoint: {e}"),
            None,
        )
    })?;
    let reference = match wire.input_reference {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => {
            if let Ok(url) = serde_json::from_str::<String>(raw.get()) {
                Some(reference_from_url(&url)?)
            } else {
                let r: ImageRef = serde_json::from_str(raw.get()).map_err(|_| {
                    invalid(
                        "input_reference must be a data: URL or an object with image_url",
                        "input_reference",
                    )
                })?;
                Some(reference_from_ref(r)?)
            }
        }
    };
    Ok(Fields {
        model: wire.model,
        prompt: wire.prompt,
        seconds: wire.seconds.map(|s| match s {
            SecondsValue::Text(t) => t,
            SecondsValue::Number(n) => n.to_string(),
        }),
        size: wire.size,
        reference,
    })
}

fn is_multipart(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

fn bad_form(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::invalid(format!("the multipart body cannot be read: {e}"), None)
}

/// Reads a `multipart/form-data` body: at most `max_bytes` in all, [`MAX_PARTS`] parts.
async fn parse_multipart(
    req: &HttpRequest,
    payload: web::Payload,
    max_bytes: usize,
) -> Result<Fields, GatewayError> {
    let mut form = actix_multipart::Multipart::new(req.headers(), payload);
    let mut fields = Fields::default();
    let mut total = 0usize;
    let mut parts = 0usize;
    while let Some(part) = form.next().await {
        let mut part = part.map_err(bad_form)?;
        parts += 1;
        if parts > MAX_PARTS {
            return Err(GatewayError::invalid(
                format!("the form has more than {MAX_PARTS} parts"),
                None,
            ));
        }
        let name = part.name().unwrap_or_default().to_owned();
        let is_file = part
            .content_disposition()
            .is_some_and(|cd| cd.get_filename().is_some());
        let declared = part.content_type().map(|m| m.essence_str().to_owned());
        let mut data = BytesMut::new();
        while let Some(chunk) = part.next().await {
            let chunk = chunk.map_err(bad_form)?;
            total += chunk.len();
            if total > max_bytes {
                return Err(GatewayError::PayloadTooLarge { limit: max_bytes });
            }
            if !is_file && data.len() + chunk.len() > MAX_TEXT_FIELD {
                return Err(invalid(format!("the field {name} is too long"), &name));
            }
            data.extend_from_slice(&chunk);
        }
        let data = data.freeze();
        let text = || {
            String::from_utf8(data.to_vec())
                .map_err(|_| invalid(format!("the field {name} is not UTF-8 text"), &name))
        };
        match name.as_str() {
            "input_reference" if is_file => {
                if data.is_empty() {
                    return Err(invalid(
                        "input_reference is an empty file",
                        "input_reference",
                    ));
                }
                let mime = declared.unwrap_or_else(|| "application/octet-stream".to_owned());
                fields.reference = Some((mime, data));
            }
            "input_reference" | "input_reference[image_url]" => {
                fields.reference = Some(reference_from_url(&text()?)?);
            }
            "input_reference[file_id]" => return Err(file_id_refused()),
            "model" => fields.model = Some(text()?),
            "prompt" => fields.prompt = Some(text()?),
            "seconds" => fields.seconds = Some(text()?),
            "size" => fields.size = Some(text()?),
            // Unknown fields are ignored, as unknown JSON keys are.
            _ => {}
        }
    }
    Ok(fields)
}

/// A checked create request: the model, its Flow model, the prompt, the size it makes.
#[derive(Debug)]
struct Checked {
    model: ModelId,
    flow: FlowModel,
    prompt: String,
    size: &'static str,
    reference: Option<(String, Bytes)>,
}

/// The Flow video model behind `model`, if it is one.
fn flow_video(model: &ModelId) -> Option<FlowModel> {
    [model.upstream_id(), model.public_name()]
        .into_iter()
        .find_map(crate::upstream::flow::models::model)
        .filter(|m| matches!(m, FlowModel::Video { .. }))
}

fn check(
    fields: Fields,
    parse: &dyn Fn(&str) -> Result<ModelId, ModelError>,
) -> Result<Checked, GatewayError> {
    let prompt = fields
        .prompt
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| invalid("prompt is required", "prompt"))?;
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(invalid(
            format!("prompt is longer than {MAX_PROMPT_CHARS} characters"),
            "prompt",
        ));
    }
    let name = fields
        .model
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .unwrap_or(DEFAULT_VIDEO_MODEL);
    let model = parse(name)?;
    let flow = match flow_video(&model) {
        Some(flow) if model.features().video => flow,
        _ => {
            return Err(invalid(
                format!(
                    "the model `{}` does not generate videos here; use a Flow video model such \
                     as {DEFAULT_VIDEO_MODEL}",
                    model.public_name()
                ),
                "model",
            ));
        }
    };
    let orientation = match flow {
        FlowModel::Video { orientation, .. } | FlowModel::Image { orientation, .. } => orientation,
    };
    if let Some(seconds) = fields.seconds.as_deref()
        && !SECONDS.contains(&seconds.trim())
    {
        return Err(invalid(
            format!("seconds must be one of 4, 8 or 12 (Flow makes {FLOW_SECONDS}-second clips)"),
            "seconds",
        ));
    }
    let (own, other, word, other_word) = match orientation {
        Orientation::Landscape => (LANDSCAPE_SIZES, PORTRAIT_SIZES, "landscape", "portrait"),
        Orientation::Portrait => (PORTRAIT_SIZES, LANDSCAPE_SIZES, "portrait", "landscape"),
    };
    if let Some(size) = fields.size.as_deref().map(str::trim) {
        if other.contains(&size) {
            return Err(invalid(
                format!(
                    "the model `{}` makes {word} videos; for a {other_word} size use its \
                     -{other_word} variant",
                    model.public_name()
                ),
                "size",
            ));
        }
        if !own.contains(&size) {
            return Err(invalid(
                "size must be one of 720x1280, 1280x720, 1024x1792, 1792x1024",
                "size",
            ));
        }
    }
    Ok(Checked {
        model,
        flow,
        prompt,
        size: own[0],
        reference: fields.reference,
    })
}

/// The domain request of a job: the reference image (if any), then the prompt.
fn job_request(model: &ModelId, prompt: &str, reference: Option<(String, Bytes)>) -> ChatRequest {
    let mut parts = Vec::new();
    if let Some((mime, data)) = reference {
        parts.push(Part::Media(Media::Inline { mime, data }));
    }
    parts.push(Part::Text(prompt.to_owned()));
    ChatRequest::new(model.clone(), vec![Message::new(Role::User, parts)])
}

/// Checks the reference image (a type the upstream takes, within `media.fetch_max_mb`) and
/// what the job will ask Flow for (an image-to-video model without an image is the client's
/// mistake, told at once). Returns the reference with its type as sniffed.
fn check_reference(
    checked: &Checked,
    max_media_bytes: u64,
) -> Result<Option<(String, Bytes)>, GatewayError> {
    let request = job_request(&checked.model, &checked.prompt, checked.reference.clone());
    let request = crate::service::check_inline_media(request, max_media_bytes, 1)?;
    let job = crate::upstream::flow::request::job_from(&request, checked.flow)
        .map_err(|e| invalid(e.message, "input_reference"))?;
    if job.images.is_empty() {
        // A text-to-video model does not use it.
        return Ok(None);
    }
    Ok(request
        .messages
        .into_iter()
        .flat_map(|m| m.parts)
        .find_map(|p| match p {
            Part::Media(Media::Inline { mime, data }) => Some((mime, data)),
            _ => None,
        }))
}

/// The owner of the caller's jobs.
fn owner(req: &HttpRequest) -> String {
    owner_of(crate::auth::presented_key(req).as_deref())
}

/// `POST /v1/videos`.
#[tracing::instrument(skip_all, fields(model))]
pub async fn create(
    state: web::Data<AppState>,
    jobs: Option<web::Data<VideoJobs>>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let Some(jobs) = jobs else {
        return unavailable();
    };
    stream::or_refused(
        Dialect::OpenAi,
        handle_create(state, jobs, req, payload).await,
    )
}

async fn handle_create(
    state: web::Data<AppState>,
    jobs: web::Data<VideoJobs>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, GatewayError> {
    let max_bytes = state.max_body_bytes();
    let live = state.live.load();
    let fields = if is_multipart(&req) {
        parse_multipart(&req, payload, max_bytes).await?
    } else {
        let body = read_body(payload, max_bytes).await?;
        let (len, max_depth) = (body.len(), live.limits.max_depth);
        // A large body (a data URL) is parsed and decoded off the HTTP worker.
        crate::dialects::limits::parse_body(body, len, move |body| parse_json(body, max_depth))
            .await?
    };
    let models = state.chat.models();
    let checked = check(fields, &|name| models.parse(name))?;
    crate::metrics::note_model(&req, &checked.model);
    tracing::Span::current().record(
        "model",
        tracing::field::display(crate::telemetry::untrusted(checked.model.public_name())),
    );
    crate::usage::UsageNote::of(&req).model(checked.model.public_name());
    crate::keys::check_model(&req, checked.model.public_name())?;
    let reference = check_reference(&checked, live.media.fetch_max_bytes)?;
    let record = jobs
        .create(
            owner(&req),
            NewVideo {
                model: checked.model,
                prompt: checked.prompt,
                seconds: Some(FLOW_SECONDS.to_owned()),
                size: Some(checked.size.to_owned()),
                reference,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(video_object(&record)))
}

/// `GET /v1/videos/{id}`.
pub async fn retrieve(
    jobs: Option<web::Data<VideoJobs>>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let Some(jobs) = jobs else {
        return unavailable();
    };
    match jobs.get(&owner(&req), &id).await {
        Ok(Some(record)) => HttpResponse::Ok().json(video_object(&record)),
        Ok(None) => no_such_video(&id),
        Err(e) => stream::refused(Dialect::OpenAi, &e),
    }
}

/// `DELETE /v1/videos/{id}`.
pub async fn delete(
    jobs: Option<web::Data<VideoJobs>>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let Some(jobs) = jobs else {
        return unavailable();
    };
    match jobs.delete(&owner(&req), &id).await {
        Ok(Some(record)) => HttpResponse::Ok().json(json!({
            "id": record.id,
            "object": "video.deleted",
            "deleted": true,
        })),
        Ok(None) => no_such_video(&id),
        Err(e) => stream::refused(Dialect::OpenAi, &e),
    }
}

/// The query string as `T`, or why it cannot be read.
fn query_of<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, String> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| format!("the query string cannot be read: {e}"))
}

fn bad_query(message: &str) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, message, None, None)
}

#[derive(Debug, Deserialize)]
pub struct ContentQuery {
    #[serde(default)]
    variant: Option<String>,
}

/// `GET /v1/videos/{id}/content`.
pub async fn content(
    jobs: Option<web::Data<VideoJobs>>,
    media: Option<web::Data<MediaStore>>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let Some(jobs) = jobs else {
        return unavailable();
    };
    let query = match query_of::<ContentQuery>(&req) {
        Ok(q) => q,
        Err(message) => return bad_query(&message),
    };
    match query.variant.as_deref() {
        None | Some("video") => {}
        Some("thumbnail" | "spritesheet") => {
            return error(
                StatusCode::BAD_REQUEST,
                "only variant=video is available for Flow videos",
                None,
                Some("variant"),
            );
        }
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "variant must be video, thumbnail or spritesheet",
                None,
                Some("variant"),
            );
        }
    }
    let stored = match jobs.content(&owner(&req), &id).await {
        Ok(Some(Content::Ready(stored))) => stored,
        Ok(Some(Content::NotReady(status))) if !status.is_final() => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("Video is not ready yet, use GET /v1/videos/{id} to check status."),
                Some("video_not_ready"),
                None,
            );
        }
        Ok(Some(Content::NotReady(_))) => {
            return error(
                StatusCode::NOT_FOUND,
                "the video failed; it has no content",
                Some("not_found"),
                None,
            );
        }
        Ok(None) => return no_such_video(&id),
        Err(e) => return stream::refused(Dialect::OpenAi, &e),
    };
    let media = media.unwrap_or_else(|| web::Data::from(std::sync::Arc::clone(&state.media)));
    let served = crate::media::store::serve(media, web::Path::from(stored.name)).await;
    if served.status() == StatusCode::NOT_FOUND {
        return error(
            StatusCode::NOT_FOUND,
            "the video has expired and is no longer stored",
            Some("video_expired"),
            None,
        );
    }
    served
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    order: Option<String>,
}

/// The page of `jobs` (newest first) a list request asks for, and whether more follow.
fn page(
    mut jobs: Vec<VideoJobRecord>,
    limit: usize,
    after: Option<&str>,
    ascending: bool,
) -> (Vec<VideoJobRecord>, bool) {
    if ascending {
        jobs.reverse();
    }
    let start = match after {
        // After an id the caller does not have (deleted meanwhile, or someone else's): nothing.
        Some(after) => jobs
            .iter()
            .position(|j| j.id == after)
            .map_or(jobs.len(), |i| i + 1),
        None => 0,
    };
    let rest = jobs.split_off(start.min(jobs.len()));
    let has_more = rest.len() > limit;
    (rest.into_iter().take(limit).collect(), has_more)
}

/// `GET /v1/videos`.
pub async fn list(jobs: Option<web::Data<VideoJobs>>, req: HttpRequest) -> HttpResponse {
    let Some(jobs) = jobs else {
        return unavailable();
    };
    let query = match query_of::<ListQuery>(&req) {
        Ok(q) => q,
        Err(message) => return bad_query(&message),
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("limit must be between 1 and {MAX_LIMIT}"),
            None,
            Some("limit"),
        );
    }
    let ascending = match query.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "order must be asc or desc",
                None,
                Some("order"),
            );
        }
    };
    let all = match jobs.list(&owner(&req)).await {
        Ok(all) => all,
        Err(e) => return stream::refused(Dialect::OpenAi, &e),
    };
    let (data, has_more) = page(all, limit, query.after.as_deref(), ascending);
    HttpResponse::Ok().json(json!({
        "object": "list",
        "first_id": data.first().map(|r| r.id.clone()),
        "last_id": data.last().map(|r| r.id.clone()),
        "has_more": has_more,
        "data": data.iter().map(video_object).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::domain::ModelSpec;
    use crate::store::{VideoJobError, VideoJobStatus};

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    fn parse_model(name: &str) -> Result<ModelId, ModelError> {
        let specs: Vec<Arc<ModelSpec>> = crate::upstream::flow::models::specs()
            .into_iter()
            .chain(crate::upstream::gemini_business::models::specs())
            .map(Arc::new)
            .collect();
        ModelId::parse_in(&specs, name)
    }

    fn checked(body: Value) -> Result<Checked, GatewayError> {
        let fields = parse_json(&serde_json::to_vec(&body).unwrap(), 64)?;
        let checked = check(fields, &parse_model)?;
        Ok(checked)
    }

    fn param_of(e: GatewayError) -> Option<String> {
        match e {
            GatewayError::InvalidRequest { param, .. } => param,
            other => panic!("not an invalid request: {other:?}"),
        }
    }

    fn data_url() -> String {
        format!("data:image/png;base64,{}", STANDARD.encode(PNG))
    }

    #[test]
    fn a_prompt_alone_takes_the_default_model_and_its_size() {
        let c = checked(json!({"prompt": "a cat"})).unwrap();
        assert_eq!(c.model.public_name(), DEFAULT_VIDEO_MODEL);
        assert_eq!(c.size, "1280x720");
        assert!(c.reference.is_none());
        let c = checked(json!({
            "prompt": "a cat", "model": "veo_3_1_t2v_fast_portrait",
            "seconds": "4", "size": "1024x1792"
        }))
        .unwrap();
        assert_eq!(c.size, "720x1280");
    }

    #[test]
    fn bad_requests_name_their_field() {
        let cases = [
            (json!({}), "prompt"),
            (json!({"prompt": "  "}), "prompt"),
            (
                json!({"prompt": "x".repeat(MAX_PROMPT_CHARS + 1)}),
                "prompt",
            ),
            (json!({"prompt": "p", "model": "gemini-2.5-flash"}), "model"),
            (
                json!({"prompt": "p", "model": "gemini-2.5-flash-image-landscape"}),
                "model",
            ),
            (json!({"prompt": "p", "seconds": "5"}), "seconds"),
            (json!({"prompt": "p", "size": "720x1280"}), "size"),
            (json!({"prompt": "p", "size": "640x480"}), "size"),
            (
                json!({"prompt": "p", "input_reference": "https://x.test/a.png"}),
                "input_reference",
            ),
            (
                json!({"prompt": "p", "input_reference": {"file_id": "file-1"}}),
                "input_reference.file_id",
            ),
            (
                json!({"prompt": "p", "input_reference": 7}),
                "input_reference",
            ),
        ];
        for (body, param) in cases {
            let e = checked(body.clone())
                .err()
                .unwrap_or_else(|| panic!("accepted: {body}"));
            assert_eq!(param_of(e).as_deref(), Some(param), "{body}");
        }
        assert!(matches!(
            checked(json!({"prompt": "p", "model": "sora-2"})),
            Err(GatewayError::Model(ModelError::Unknown(_)))
        ));
        assert!(parse_json(b"{", 64).is_err());
    }

    #[test]
    fn a_reference_image_is_read_from_a_string_or_an_object_and_checked_per_model() {
        for reference in [json!(data_url()), json!({"image_url": data_url()})] {
            let c = checked(json!({
                "prompt": "p", "model": "veo_3_1_i2v_s_fast_fl_landscape",
                "input_reference": reference, "seconds": 8
            }))
            .unwrap();
            let (mime, data) = check_reference(&c, 1 << 20).unwrap().unwrap();
            assert_eq!((mime.as_str(), data.as_ref()), ("image/png", PNG));
        }
        // Image-to-video without an image: refused before any job exists.
        let c =
            checked(json!({"prompt": "p", "model": "veo_3_1_i2v_s_fast_fl_landscape"})).unwrap();
        let e = check_reference(&c, 1 << 20).unwrap_err();
        assert_eq!(param_of(e).as_deref(), Some("input_reference"));
        // Text-to-video does not use it.
        let c = checked(json!({"prompt": "p", "input_reference": data_url()})).unwrap();
        assert!(check_reference(&c, 1 << 20).unwrap().is_none());
        // Too large: 413.
        let c = checked(json!({
            "prompt": "p", "model": "veo_3_1_i2v_s_fast_fl_landscape", "input_reference": data_url()
        }))
        .unwrap();
        let e = check_reference(&c, 4).unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    fn record(id: &str, created_at: u64) -> VideoJobRecord {
        VideoJobRecord {
            seconds: Some("8".into()),
            size: Some("1280x720".into()),
            ..VideoJobRecord::queued(id, "", DEFAULT_VIDEO_MODEL, "a cat", created_at)
        }
    }

    #[test]
    fn the_video_object_has_every_field_openai_requires() {
        let mut r = record("video_1", 100);
        let v = video_object(&r);
        for key in [
            "id",
            "object",
            "model",
            "status",
            "progress",
            "created_at",
            "completed_at",
            "expires_at",
            "prompt",
            "size",
            "seconds",
            "remixed_from_video_id",
            "error",
        ] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert_eq!(v["object"], "video");
        assert_eq!(v["status"], "queued");
        assert!(v["error"].is_null() && v["completed_at"].is_null());
        r.status = VideoJobStatus::Failed;
        r.error = Some(VideoJobError {
            code: "timeout".into(),
            message: "m".into(),
        });
        r.size = None;
        r.seconds = None;
        let v = video_object(&r);
        assert_eq!(v["error"], json!({"code": "timeout", "message": "m"}));
        assert_eq!(
            (v["size"].as_str(), v["seconds"].as_str()),
            (Some("1280x720"), Some("8"))
        );
    }

    #[test]
    fn pages_follow_order_limit_and_after() {
        let jobs: Vec<VideoJobRecord> = (0..5)
            .rev()
            .map(|i| record(&format!("video_{i}"), i))
            .collect();
        let ids = |p: &[VideoJobRecord]| p.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        let (p, more) = page(jobs.clone(), 2, None, false);
        assert_eq!(
            (ids(&p), more),
            (vec!["video_4".into(), "video_3".into()], true)
        );
        let (p, more) = page(jobs.clone(), 2, Some("video_3"), false);
        assert_eq!(
            (ids(&p), more),
            (vec!["video_2".into(), "video_1".into()], true)
        );
        let (p, more) = page(jobs.clone(), 2, Some("video_1"), false);
        assert_eq!((ids(&p), more), (vec!["video_0".into()], false));
        let (p, more) = page(jobs.clone(), 3, None, true);
        assert_eq!(
            (ids(&p), more),
            (
                vec!["video_0".into(), "video_1".into(), "video_2".into()],
                true
            )
        );
        let (p, more) = page(jobs, 3, Some("video_x"), false);
        assert!(p.is_empty() && !more);
    }
}
