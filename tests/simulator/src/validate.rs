//! Strict validation of U2–U5 request bodies (spec §1.6–§1.10).
//!
//! Error messages name the offending field by its JSON path (e.g.
//! `streamAssistRequest.filter`), in the style of Google's `INVALID_ARGUMENT` messages.

use serde_json::{Map, Value};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use crate::model::{Endpoint, FileUris, Upload};
use crate::state::{PROJECT_PREFIX, State};

/// Model ids the simulated workspace accepts in `assistGenerationConfig.modelId`.
pub const KNOWN_MODELS: [&str; 7] = [
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-3-pro-preview",
    "gemini-3-pro",
    "gemini-3-flash-preview",
    "gemini-3-flash",
    "gemini-2.5-flash-preview-latest",
];

/// The exact U5 filter.
pub(crate) const AI_GENERATED_FILTER: &str = "file_origin_type = AI_GENERATED";

/// Why a body was rejected.
#[derive(Debug)]
pub(crate) enum Reject {
    /// 400 `INVALID_ARGUMENT`.
    BadRequest(String),
    /// 404 `NOT_FOUND`.
    NotFound(String),
}

type Result<T> = std::result::Result<T, Reject>;

fn bad(msg: impl Into<String>) -> Reject {
    Reject::BadRequest(msg.into())
}

fn unknown_name(name: &str, at: &str) -> Reject {
    if at.is_empty() {
        bad(format!(
            "Invalid JSON payload received. Unknown name \"{name}\": Cannot find field."
        ))
    } else {
        bad(format!(
            "Invalid JSON payload received. Unknown name \"{name}\" at '{at}': Cannot find field."
        ))
    }
}

/// The request member each POST endpoint requires.
pub(crate) fn member_of(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::CreateSession => "createSessionRequest",
        Endpoint::AddContextFile => "addContextFileRequest",
        Endpoint::StreamAssist => "streamAssistRequest",
        Endpoint::ListFiles => "listSessionFileMetadataRequest",
        Endpoint::GetOxsrf | Endpoint::Download => "",
    }
}

const ALL_MEMBERS: [&str; 4] = [
    "createSessionRequest",
    "addContextFileRequest",
    "streamAssistRequest",
    "listSessionFileMetadataRequest",
];

/// Strips the `projects/<n>/locations/global/` prefix of a full session name.
pub(crate) fn short_session(name: &str) -> &str {
    name.strip_prefix(PROJECT_PREFIX).unwrap_or(name)
}

fn check_keys(obj: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<()> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(unknown_name(k, at)),
        None => Ok(()),
    }
}

fn req_str<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a str> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!(
            "Invalid value at '{at}.{key}': expected a string."
        ))),
        None => Err(bad(format!("'{at}.{key}' is required."))),
    }
}

fn req_obj<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a Map<String, Value>> {
    match obj.get(key) {
        Some(Value::Object(o)) => Ok(o),
        Some(_) => Err(bad(format!(
            "Invalid value at '{at}.{key}': expected an object."
        ))),
        None => Err(bad(format!("'{at}.{key}' is required."))),
    }
}

fn req_eq(obj: &Map<String, Value>, key: &str, at: &str, expected: &str) -> Result<()> {
    let got = req_str(obj, key, at)?;
    if got == expected {
        Ok(())
    } else {
        Err(bad(format!(
            "Invalid value at '{at}.{key}': expected \"{expected}\", got \"{got}\"."
        )))
    }
}

/// Checks the common envelope (§1.6) and returns the endpoint's request member.
pub(crate) fn envelope<'a>(
    body: &'a Value,
    config_id: &str,
    endpoint: Endpoint,
) -> Result<&'a Map<String, Value>> {
    let member = member_of(endpoint);
    let obj = body
        .as_object()
        .ok_or_else(|| bad("Invalid JSON payload received. Expected a JSON object."))?;
    for key in obj.keys() {
        let key = key.as_str();
        if key == "configId" || key == "additionalParams" || key == member {
            continue;
        }
        if ALL_MEMBERS.contains(&key) {
            return Err(bad(format!(
                "Invalid JSON payload received. Unexpected member \"{key}\": this method takes \"{member}\"."
            )));
        }
        return Err(unknown_name(key, ""));
    }
    match obj.get("configId") {
        Some(Value::String(c)) if c == config_id => {}
        Some(Value::String(c)) => {
            return Err(bad(format!(
                "Invalid value at 'configId': config \"{c}\" is not the caller's widget config."
            )));
        }
        Some(_) => return Err(bad("Invalid value at 'configId': expected a string.")),
        None => return Err(bad("'configId' is required.")),
    }
    match obj.get("additionalParams") {
        Some(Value::Object(p)) if p.len() == 1 && p.get("token") == Some(&Value::from("-")) => {}
        Some(_) => {
            return Err(bad(
                "Invalid value at 'additionalParams': expected {\"token\":\"-\"}.",
            ));
        }
        None => return Err(bad("'additionalParams' is required.")),
    }
    match obj.get(member) {
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(bad(format!(
            "Invalid value at '{member}': expected an object."
        ))),
        None => Err(bad(format!("'{member}' is required."))),
    }
}

/// U2: `createSessionRequest`.
pub(crate) fn create_session(req: &Map<String, Value>) -> Result<()> {
    const AT: &str = "createSessionRequest";
    check_keys(req, &["session"], AT)?;
    let session = req_obj(req, "session", AT)?;
    for key in ["name", "displayName"] {
        if let Some(v) = session.get(key)
            && !v.is_string()
        {
            return Err(bad(format!(
                "Invalid value at '{AT}.session.{key}': expected a string."
            )));
        }
    }
    Ok(())
}

/// Checks that a session name (short or full) names a session of `csesidx`; returns the short
/// name.
fn owned_session(state: &State, csesidx: &str, name: &str, at: &str) -> Result<String> {
    let short = short_session(name);
    if short.is_empty() {
        return Err(bad(format!("Invalid value at '{at}': empty session name.")));
    }
    if state.owns_session(csesidx, short) {
        Ok(short.to_string())
    } else {
        Err(Reject::NotFound(format!(
            "Session {name} not found (at '{at}')."
        )))
    }
}

/// U3: `addContextFileRequest`; on success stores the upload and returns
/// `(fileId, short session)`.
pub(crate) fn add_context_file(
    state: &State,
    csesidx: &str,
    req: &Map<String, Value>,
) -> Result<(String, String)> {
    const AT: &str = "addContextFileRequest";
    check_keys(
        req,
        &["name", "fileName", "mimeType", "fileContents", "fileUri"],
        AT,
    )?;
    let name = req_str(req, "name", AT)?;
    let session = owned_session(state, csesidx, name, "addContextFileRequest.name")?;
    let inline = ["fileName", "mimeType", "fileContents"]
        .iter()
        .any(|k| req.contains_key(*k));
    let mut upload = Upload {
        csesidx: csesidx.to_string(),
        session: session.clone(),
        file_id: String::new(),
        file_name: None,
        mime_type: None,
        byte_len: 0,
        bytes: None,
        file_uri: None,
    };
    match (inline, req.get("fileUri")) {
        (true, Some(_)) => {
            return Err(bad(format!(
                "Invalid value at '{AT}.fileUri': fileUri and fileContents are mutually exclusive."
            )));
        }
        (false, None) => {
            return Err(bad(format!(
                "'{AT}.fileContents' or '{AT}.fileUri' is required."
            )));
        }
        (false, Some(_)) => {
            let uri = req_str(req, "fileUri", AT)?;
            let ok = ["http://", "https://"]
                .iter()
                .any(|p| uri.len() > p.len() && uri.starts_with(p));
            if !ok {
                return Err(bad(format!(
                    "Invalid value at '{AT}.fileUri': expected an http(s) URL."
                )));
            }
            match state.lock().file_uris {
                FileUris::Accept => {}
                FileUris::Refuse => {
                    return Err(bad(format!(
                        "Invalid value at '{AT}.fileUri': the file could not be fetched."
                    )));
                }
                FileUris::EmptyFileId => return Ok((String::new(), session)),
            }
            upload.file_uri = Some(uri.to_string());
        }
        (true, None) => {
            let file_name = req_str(req, "fileName", AT)?;
            if file_name.is_empty() {
                return Err(bad(format!(
                    "Invalid value at '{AT}.fileName': must not be empty."
                )));
            }
            let mime = req_str(req, "mimeType", AT)?;
            let valid_mime = mime
                .split_once('/')
                .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty());
            if !valid_mime {
                return Err(bad(format!(
                    "Invalid value at '{AT}.mimeType': \"{mime}\" is not a MIME type."
                )));
            }
            let contents = req_str(req, "fileContents", AT)?;
            let bytes = STANDARD.decode(contents).map_err(|_| {
                bad(format!(
                    "Invalid value at '{AT}.fileContents': invalid base64 (standard alphabet, padded)."
                ))
            })?;
            if bytes.is_empty() {
                return Err(bad(format!(
                    "Invalid value at '{AT}.fileContents': must not be empty."
                )));
            }
            upload.file_name = Some(file_name.to_string());
            upload.mime_type = Some(mime.to_string());
            upload.byte_len = bytes.len();
            upload.bytes = Some(Bytes::from(bytes));
        }
    }
    let file_id = state.add_upload(upload);
    Ok((file_id, session))
}

/// A validated U4 request.
pub(crate) struct StreamRequest {
    /// Short session name.
    pub(crate) session: String,
    /// `query.parts[0].text`.
    pub(crate) query_text: String,
    /// `toolsSpec` asks for image generation only (an `-image` model): the default answer
    /// then includes a generated image.
    pub(crate) image_only: bool,
}

/// U4: `streamAssistRequest`.
pub(crate) fn stream_assist(
    state: &State,
    csesidx: &str,
    req: &Map<String, Value>,
) -> Result<StreamRequest> {
    const AT: &str = "streamAssistRequest";
    check_keys(
        req,
        &[
            "session",
            "query",
            "filter",
            "fileIds",
            "answerGenerationMode",
            "toolsSpec",
            "languageCode",
            "userMetadata",
            "assistSkippingMode",
            "assistGenerationConfig",
        ],
        AT,
    )?;
    let name = req_str(req, "session", AT)?;
    let session = owned_session(state, csesidx, name, "streamAssistRequest.session")?;

    let query = req_obj(req, "query", AT)?;
    check_keys(query, &["parts"], "streamAssistRequest.query")?;
    let parts = match query.get("parts") {
        Some(Value::Array(p)) if !p.is_empty() => p,
        _ => {
            return Err(bad(
                "Invalid value at 'streamAssistRequest.query.parts': expected a non-empty array.",
            ));
        }
    };
    let query_text = match parts.first().and_then(|p| p.get("text")) {
        Some(Value::String(t)) => t.clone(),
        _ => {
            return Err(bad(
                "Invalid value at 'streamAssistRequest.query.parts[0].text': expected a string.",
            ));
        }
    };

    req_eq(req, "filter", AT, "")?;

    match req.get("fileIds") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ids)) => {
            let uploaded = state.uploaded_ids(&session);
            for id in ids {
                match id.as_str() {
                    Some(id) if uploaded.iter().any(|u| u == id) => {}
                    Some(id) => {
                        return Err(bad(format!(
                            "Invalid value at 'streamAssistRequest.fileIds': file \"{id}\" was not added to this session."
                        )));
                    }
                    None => {
                        return Err(bad(
                            "Invalid value at 'streamAssistRequest.fileIds': expected strings.",
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err(bad(
                "Invalid value at 'streamAssistRequest.fileIds': expected an array or null.",
            ));
        }
    }

    req_eq(req, "answerGenerationMode", AT, "NORMAL")?;

    let tools = req_obj(req, "toolsSpec", AT)?;
    const TOOLS_AT: &str = "streamAssistRequest.toolsSpec";
    check_keys(
        tools,
        &[
            "webGroundingSpec",
            "toolRegistry",
            "imageGenerationSpec",
            "videoGenerationSpec",
        ],
        TOOLS_AT,
    )?;
    for key in [
        "webGroundingSpec",
        "imageGenerationSpec",
        "videoGenerationSpec",
    ] {
        if let Some(v) = tools.get(key)
            && !v.is_object()
        {
            return Err(bad(format!(
                "Invalid value at '{TOOLS_AT}.{key}': expected an object."
            )));
        }
    }
    if tools.contains_key("toolRegistry") {
        req_str(tools, "toolRegistry", TOOLS_AT)?;
    }

    req_str(req, "languageCode", AT)?;
    let meta = req_obj(req, "userMetadata", AT)?;
    req_str(meta, "timeZone", "streamAssistRequest.userMetadata")?;
    req_eq(req, "assistSkippingMode", AT, "REQUEST_ASSIST")?;

    match req.get("assistGenerationConfig") {
        None | Some(Value::Null) => {}
        Some(Value::Object(cfg)) => {
            const CFG_AT: &str = "streamAssistRequest.assistGenerationConfig";
            check_keys(cfg, &["modelId"], CFG_AT)?;
            let model = req_str(cfg, "modelId", CFG_AT)?;
            if !KNOWN_MODELS.contains(&model) {
                return Err(bad(format!(
                    "Invalid value at '{CFG_AT}.modelId': unknown model \"{model}\"."
                )));
            }
        }
        Some(_) => {
            return Err(bad(
                "Invalid value at 'streamAssistRequest.assistGenerationConfig': expected an object.",
            ));
        }
    }

    let image_only = tools.contains_key("imageGenerationSpec") && tools.len() == 1;
    Ok(StreamRequest {
        session,
        query_text,
        image_only,
    })
}

/// U5: `listSessionFileMetadataRequest`; returns the short session name.
pub(crate) fn list_files(state: &State, csesidx: &str, req: &Map<String, Value>) -> Result<String> {
    const AT: &str = "listSessionFileMetadataRequest";
    check_keys(req, &["name", "filter", "pageSize", "pageToken"], AT)?;
    let name = req_str(req, "name", AT)?;
    req_eq(req, "filter", AT, AI_GENERATED_FILTER)?;
    owned_session(state, csesidx, name, "listSessionFileMetadataRequest.name")
}
