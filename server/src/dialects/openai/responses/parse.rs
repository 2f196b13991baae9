//! A Responses API request (`POST /v1/responses`) → the domain.
//!
//! `input` is a string or an array of items: messages (roles user, system, developer,
//! assistant; content a string or `input_text` / `input_image` / `input_file` / `output_text`
//! parts), `function_call` and `function_call_output` (and their `custom_tool_call` twins)
//! become tool turns, `reasoning` items are dropped. `instructions` becomes the first system
//! message. `tool_choice` and `parallel_tool_calls` are honoured (tools are emulated,
//! docs/TOOLS.md). Everything the gateway cannot honour is refused with a 400 naming the field:
//! a hosted tool choice, `previous_response_id` / `conversation` (no response is stored),
//! `background`, Files API references (`file_id`), `item_reference`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::config::LimitsSettings;
use crate::dialects::limits::{
    self, Bounded, CountedVec, MessagesKind, Names, PartsKind, TextOrSeq, ToolsKind, parse_raw,
};

use crate::dialects::openai::convert::{media_from_url, mime_from_filename};
use crate::domain::{
    ChatRequest, GenerationOptions, Media, MediaKind, Message, Part, Role, ToolCall, ToolChoice,
    ToolSpec,
};
use crate::error::GatewayError;
use crate::upstream::ModelRegistry;

fn invalid(message: impl Into<String>, param: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message, Some(param.into()))
}

#[derive(Debug, Deserialize)]
struct Request<'a> {
    #[serde(default)]
    model: Option<String>,
    /// A string or raw items, counted as they are read (`dialects::limits`); read after the
    /// body so a wrong type gets an error naming `input`.
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(default)]
    instructions: Option<Bounded>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<CountedVec<Bounded, ToolsKind>>,
    #[serde(default)]
    tool_choice: Option<Bounded>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    conversation: Option<Bounded>,
    #[serde(default)]
    background: Option<bool>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    max_output_tokens: Option<i64>,
    #[serde(default)]
    metadata: Option<Bounded>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    truncation: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

/// The request fields a response object echoes back (the SDK's `Response` type has them).
#[derive(Debug, Clone)]
pub struct Echo {
    pub instructions: Option<String>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_output_tokens: Option<u64>,
    /// An object of strings, or `null`.
    pub metadata: Value,
    pub parallel_tool_calls: bool,
    /// The `tool_choice` the client sent (validated), or `"auto"`.
    pub tool_choice: Value,
    pub truncation: Option<&'static str>,
    pub user: Option<String>,
}

impl Default for Echo {
    fn default() -> Self {
        Self {
            instructions: None,
            temperature: None,
            top_p: None,
            max_output_tokens: None,
            metadata: Value::Null,
            parallel_tool_calls: true,
            tool_choice: Value::String("auto".to_owned()),
            truncation: None,
            user: None,
        }
    }
}

/// A parsed Responses request.
#[derive(Debug)]
pub struct Parsed {
    pub request: ChatRequest,
    pub echo: Echo,
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        other => other.to_string(),
    }
}

/// `input_file`: `file_data` (a data URL or bare base64), `file_url`, or a refused `file_id`.
fn file_part(part: &Map<String, Value>, param: &str) -> Result<Media, GatewayError> {
    let filename = part
        .get("filename")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(data) = part.get("file_data").and_then(Value::as_str) {
        if data.trim_start().starts_with("data:") {
            return media_from_url(data, MediaKind::Document, param);
        }
        let bytes = STANDARD.decode(data.trim().as_bytes()).map_err(|_| {
            invalid(
                "file_data is not valid base64",
                format!("{param}.file_data"),
            )
        })?;
        if bytes.is_empty() {
            return Err(invalid("file_data is empty", format!("{param}.file_data")));
        }
        return Ok(Media::Inline {
            mime: mime_from_filename(filename).to_owned(),
            data: Bytes::from(bytes),
        });
    }
    if let Some(url) = part.get("file_url").and_then(Value::as_str) {
        let kind = MediaKind::from_mime(mime_from_filename(if filename.is_empty() {
            url
        } else {
            filename
        }));
        return media_from_url(url, kind, &format!("{param}.file_url"));
    }
    if part.get("file_id").is_some_and(|v| !v.is_null()) {
        return Err(invalid(
            "file_id references the OpenAI Files API, which this gateway does not host; send file_data or file_url instead",
            format!("{param}.file_id"),
        ));
    }
    Err(invalid("an input_file needs file_data or file_url", param))
}

fn image_part(part: &Map<String, Value>, param: &str) -> Result<Media, GatewayError> {
    let url = match part.get("image_url") {
        Some(Value::String(u)) => Some(u.as_str()),
        Some(Value::Object(o)) => o.get("url").and_then(Value::as_str),
        _ => None,
    };
    if let Some(url) = url {
        return media_from_url(url, MediaKind::Image, &format!("{param}.image_url"));
    }
    if part.get("file_id").is_some_and(|v| !v.is_null()) {
        return Err(invalid(
            "file_id references the OpenAI Files API, which this gateway does not host; send image_url as a data: or http(s) URL instead",
            format!("{param}.file_id"),
        ));
    }
    Err(invalid("an input_image needs image_url", param))
}

/// The fields of a content part the gateway reads (everything else is skipped unparsed).
#[derive(Deserialize)]
struct PartIn {
    #[serde(rename = "type", default)]
    kind: Option<Bounded>,
    #[serde(default)]
    text: Option<Bounded>,
    #[serde(default)]
    image_url: Option<Bounded>,
    #[serde(default)]
    file_id: Option<Bounded>,
    #[serde(default)]
    file_data: Option<Bounded>,
    #[serde(default)]
    file_url: Option<Bounded>,
    #[serde(default)]
    filename: Option<Bounded>,
}

impl PartIn {
    /// The part as an object of the fields it has.
    fn into_map(self) -> Map<String, Value> {
        let mut map = Map::new();
        for (key, value) in [
            ("type", self.kind),
            ("text", self.text),
            ("image_url", self.image_url),
            ("file_id", self.file_id),
            ("file_data", self.file_data),
            ("file_url", self.file_url),
            ("filename", self.filename),
        ] {
            if let Some(v) = value {
                map.insert(key.to_owned(), v.into_inner());
            }
        }
        map
    }
}

/// Parts from a raw `content` (or `output`): a string, null, or an array of parts.
fn parts_of(content: Option<&RawValue>, param: &str) -> Result<Vec<Part>, GatewayError> {
    let content: Option<TextOrSeq<'_, PartsKind>> = match content {
        None => None,
        Some(raw) => parse_raw(raw)
            .map_err(|_| invalid("content must be a string or an array of parts", param))?,
    };
    let items = match content {
        Some(TextOrSeq::Text(t)) => return Ok(vec![Part::Text(t.into_owned())]),
        None => return Ok(Vec::new()),
        Some(TextOrSeq::Seq(items)) => items.items,
    };
    let mut parts = Vec::with_capacity(items.len());
    for (j, raw) in items.into_iter().enumerate() {
        let param = format!("{param}[{j}]");
        let Ok(part) = parse_raw::<PartIn>(raw) else {
            return Err(invalid("a content part must be an object", param));
        };
        let part = &part.into_map();
        match part.get("type").and_then(Value::as_str).unwrap_or_default() {
            "input_text" | "output_text" | "text" | "summary_text" | "reasoning_text" => {
                let text = part
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("a text part needs text", format!("{param}.text")))?;
                parts.push(Part::Text(text.to_owned()));
            }
            "refusal" => {}
            "input_image" => parts.push(Part::Media(image_part(part, &param)?)),
            "input_file" => parts.push(Part::Media(file_part(part, &param)?)),
            other => {
                return Err(invalid(
                    format!(
                        "unsupported content part type `{other}` (expected input_text, input_image, input_file or output_text)"
                    ),
                    param,
                ));
            }
        }
    }
    Ok(parts)
}

fn role_of(role: &str, param: &str) -> Result<Role, GatewayError> {
    match role {
        "user" => Ok(Role::User),
        "system" | "developer" => Ok(Role::System),
        "assistant" => Ok(Role::Assistant),
        other => Err(invalid(
            format!("unknown role `{other}` (expected user, system, developer or assistant)"),
            format!("{param}.role"),
        )),
    }
}

/// Appends a tool call to the last assistant turn, or starts one.
fn push_call(messages: &mut Vec<Message>, call: ToolCall) {
    match messages.last_mut() {
        Some(last) if last.role == Role::Assistant => last.tool_calls.push(call),
        _ => {
            let mut m = Message::new(Role::Assistant, Vec::new());
            m.tool_calls.push(call);
            messages.push(m);
        }
    }
}

fn arguments_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The fields of an input item the gateway reads (everything else is skipped unparsed);
/// `content` and `output` stay raw until their parts are read.
#[derive(Deserialize)]
struct ItemIn<'a> {
    #[serde(rename = "type", default)]
    kind: Option<Bounded>,
    #[serde(default)]
    role: Option<Bounded>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(default)]
    name: Option<Bounded>,
    #[serde(default)]
    call_id: Option<Bounded>,
    #[serde(default)]
    arguments: Option<Bounded>,
    #[serde(default)]
    input: Option<Bounded>,
    #[serde(borrow, default)]
    output: Option<&'a RawValue>,
}

/// A raw value that is JSON `null` counts as absent.
fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get().trim() != "null")
}

fn convert_items(items: &[&RawValue]) -> Result<Vec<Message>, GatewayError> {
    let mut messages: Vec<Message> = Vec::with_capacity(items.len());
    let mut calls: Vec<ToolCall> = Vec::new();
    for (i, raw) in items.iter().enumerate() {
        let param = format!("input[{i}]");
        let Ok(parsed) = parse_raw::<ItemIn<'_>>(raw) else {
            return Err(invalid("an input item must be an object", param));
        };
        let (content, output) = (present(parsed.content), present(parsed.output));
        let mut item = Map::new();
        for (key, value) in [
            ("type", parsed.kind),
            ("role", parsed.role),
            ("name", parsed.name),
            ("call_id", parsed.call_id),
            ("arguments", parsed.arguments),
            ("input", parsed.input),
        ] {
            if let Some(v) = value {
                item.insert(key.to_owned(), v.into_inner());
            }
        }
        let item = &item;
        let kind = item.get("type").and_then(Value::as_str);
        match kind {
            None | Some("message") => {
                let role = item
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("a message needs a role", format!("{param}.role")))?;
                let role = role_of(role, &param)?;
                let parts = parts_of(content, &format!("{param}.content"))?;
                messages.push(Message::new(role, parts));
            }
            Some("function_call" | "custom_tool_call") => {
                let name = item
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let id = item
                    .get("call_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let arguments = if kind == Some("custom_tool_call") {
                    text_of(item.get("input").unwrap_or(&Value::Null))
                } else {
                    arguments_text(item.get("arguments"))
                };
                let call = ToolCall {
                    id,
                    name,
                    arguments,
                };
                calls.push(call.clone());
                push_call(&mut messages, call);
            }
            Some("function_call_output" | "custom_tool_call_output") => {
                let call_id = item.get("call_id").and_then(Value::as_str);
                let parts = match output {
                    Some(raw) if raw.get().trim_start().starts_with('[') => {
                        parts_of(Some(raw), &format!("{param}.output"))?
                    }
                    Some(raw) => {
                        let value: Value = parse_raw(raw).unwrap_or(Value::Null);
                        vec![Part::Text(text_of(&value))]
                    }
                    None => vec![Part::Text(String::new())],
                };
                let mut m = Message::new(Role::Tool, parts);
                m.tool_name = call_id
                    .and_then(|id| calls.iter().rev().find(|c| c.id == id))
                    .map(|c| c.name.clone())
                    .or_else(|| call_id.map(str::to_owned));
                messages.push(m);
            }
            Some("reasoning") => {}
            Some("item_reference") => {
                return Err(invalid(
                    "item_reference points at a stored item; this gateway stores no responses, so send the item itself",
                    param,
                ));
            }
            // Other output items replayed from history (web_search_call, image_generation_call,
            // ...) carry nothing the upstream can use.
            Some(_) => {}
        }
    }
    Ok(messages)
}

fn metadata(value: Option<Value>) -> Result<Value, GatewayError> {
    match value {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(Value::Object(o)) if o.values().all(Value::is_string) => Ok(Value::Object(o)),
        Some(_) => Err(invalid(
            "metadata must be an object of string values",
            "metadata",
        )),
    }
}

/// Parses a request body.
pub fn parse(
    body: &[u8],
    models: &ModelRegistry,
    limits: &LimitsSettings,
) -> Result<Parsed, GatewayError> {
    limits::bounded(body, limits, Names::RESPONSES, || {
        parse_within_budget(body, models)
    })
}

fn parse_within_budget(body: &[u8], models: &ModelRegistry) -> Result<Parsed, GatewayError> {
    let wire: Request<'_> = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid(
            format!("the request body is not valid JSON for this endpoint: {e}"),
            None,
        )
    })?;
    let model = models.parse(wire.model.as_deref().unwrap_or_default())?;
    if wire.previous_response_id.is_some() {
        return Err(invalid(
            "previous_response_id is not supported: this gateway stores no responses; send the whole conversation in input",
            "previous_response_id",
        ));
    }
    if wire.conversation.as_ref().is_some_and(|c| !c.is_null()) {
        return Err(invalid(
            "conversation is not supported: this gateway stores no conversations; send the whole conversation in input",
            "conversation",
        ));
    }
    if wire.background == Some(true) {
        return Err(invalid(
            "background responses are not supported: this gateway stores no responses to poll",
            "background",
        ));
    }
    let raw_choice = wire
        .tool_choice
        .map(Bounded::into_inner)
        .filter(|c| !c.is_null());
    let (choice, allowed) = match &raw_choice {
        Some(c) => crate::dialects::openai::convert::read_tool_choice(c)
            .map_err(|e| invalid(format!("tool_choice: {e}"), "tool_choice"))?,
        None => (ToolChoice::Auto, None),
    };
    let instructions = match wire.instructions.as_deref() {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("instructions must be a string", "instructions")),
    };
    let mut messages = Vec::new();
    if let Some(text) = instructions.as_ref().filter(|t| !t.is_empty()) {
        messages.push(Message::new(Role::System, vec![Part::Text(text.clone())]));
    }
    let input: Option<TextOrSeq<'_, MessagesKind>> = match present(wire.input) {
        None => None,
        Some(raw) => Some(
            parse_raw(raw)
                .map_err(|_| invalid("input must be a string or an array of items", "input"))?,
        ),
    };
    match input {
        Some(TextOrSeq::Text(s)) => {
            messages.push(Message::new(Role::User, vec![Part::Text(s.into_owned())]))
        }
        Some(TextOrSeq::Seq(items)) => messages.extend(convert_items(&items.items)?),
        None => {}
    }
    if !messages.iter().any(|m| m.role != Role::System) {
        return Err(invalid(
            "input must contain at least one message or item",
            "input",
        ));
    }
    let mut tools: Vec<ToolSpec> = wire
        .tools
        .unwrap_or_default()
        .items
        .into_iter()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .filter_map(|t| {
            Some(ToolSpec {
                name: t.get("name")?.as_str()?.to_owned(),
                description: t
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                parameters: t.get("parameters").cloned(),
            })
        })
        .collect();
    let tool_choice = crate::dialects::settle_tool_choice(&mut tools, choice, allowed.as_deref())
        .map_err(|e| invalid(format!("tool_choice: {e}"), "tool_choice"))?;
    let parallel_tool_calls = wire.parallel_tool_calls.unwrap_or(true);
    if wire.max_output_tokens.is_some_and(|n| n < 0) {
        return Err(invalid(
            "max_output_tokens: must not be negative",
            "max_output_tokens",
        ));
    }
    let echo = Echo {
        instructions,
        temperature: wire.temperature,
        top_p: wire.top_p,
        max_output_tokens: wire.max_output_tokens.and_then(|n| u64::try_from(n).ok()),
        metadata: metadata(wire.metadata.map(Bounded::into_inner))?,
        parallel_tool_calls,
        tool_choice: raw_choice.unwrap_or_else(|| Value::String("auto".to_owned())),
        truncation: match wire.truncation.as_deref() {
            Some("auto") => Some("auto"),
            Some("disabled") => Some("disabled"),
            _ => None,
        },
        user: wire.user,
    };
    Ok(Parsed {
        request: ChatRequest {
            model,
            messages,
            stream: wire.stream.unwrap_or(false),
            tools,
            tool_choice,
            parallel_tool_calls,
            options: GenerationOptions {
                max_output_tokens: echo
                    .max_output_tokens
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
                temperature: echo.temperature,
                top_p: echo.top_p,
                stop: Vec::new(),
            },
        },
        echo,
    })
}

/// `{"format":{"type":"text"}}`: the gateway answers in plain text.
pub fn text_config() -> Value {
    json!({"format": {"type": "text"}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_json(v: Value) -> Result<Parsed, GatewayError> {
        parse(
            &serde_json::to_vec(&v).unwrap(),
            &ModelRegistry::gemini_business_names(),
            &LimitsSettings::default(),
        )
    }

    fn param_of(e: &GatewayError) -> Option<&str> {
        match e {
            GatewayError::InvalidRequest { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    #[test]
    fn a_string_input_with_instructions() {
        let p = parse_json(json!({"model": "gemini-2.5-flash", "input": "hi", "instructions": "be brief",
            "stream": true, "store": false, "metadata": {"a": "b"}, "temperature": 0.3,
            "reasoning": {"effort": "low"}, "text": {"format": {"type": "text"}}, "include": ["x"],
            "tools": [{"type": "web_search"}, {"type": "function", "name": "f", "parameters": {}}]}))
        .unwrap();
        assert!(p.request.stream);
        assert_eq!(p.request.messages.len(), 2);
        assert_eq!(p.request.messages[0].role, Role::System);
        assert_eq!(p.request.messages[0].text(), "be brief");
        assert_eq!(p.request.messages[1].text(), "hi");
        assert_eq!(p.request.tools.len(), 1);
        assert_eq!(p.echo.metadata, json!({"a": "b"}));
        assert_eq!(p.echo.temperature, Some(0.3));
    }

    #[test]
    fn items_become_turns() {
        let p = parse_json(json!({"model": "gemini-2.5-pro", "input": [
            {"role": "developer", "content": "rules"},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "look "},
                {"type": "input_image", "image_url": "data:image/png;base64,AAEC", "detail": "auto"},
                {"type": "input_image", "image_url": "https://example.com/cat.png"},
                {"type": "input_file", "filename": "a.pdf", "file_data": "JVBERg=="}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Calling.", "annotations": []}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"}
        ]}))
        .unwrap();
        let m = &p.request.messages;
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[0].role, Role::System);
        assert_eq!(m[1].text(), "look ");
        let media: Vec<_> = m[1].media().collect();
        assert_eq!(media.len(), 3);
        assert!(matches!(media[0], Media::Inline { mime, .. } if mime == "image/png"));
        assert!(matches!(media[1], Media::Url { url, .. } if url == "https://example.com/cat.png"));
        assert!(matches!(media[2], Media::Inline { mime, .. } if mime == "application/pdf"));
        assert_eq!(m[2].role, Role::Assistant);
        assert_eq!(m[2].text(), "Calling.");
        assert_eq!(m[2].tool_calls[0].name, "get_weather");
        assert_eq!(m[3].role, Role::Tool);
        assert_eq!(m[3].tool_name.as_deref(), Some("get_weather"));
        assert_eq!(m[3].text(), "sunny");
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (
                json!({"model": "gemini-2.5-flash", "input": "x", "tool_choice": "required"}),
                "tool_choice",
            ),
            (
                json!({"model": "gemini-2.5-flash", "input": "x", "tool_choice": {"type": "function", "name": "f"}}),
                "tool_choice",
            ),
            (
                json!({"model": "gemini-2.5-flash", "input": "x", "tool_choice": {"type": "web_search_preview"},
                       "tools": [{"type": "function", "name": "f"}]}),
                "tool_choice",
            ),
            (
                json!({"model": "gemini-2.5-flash", "input": "x", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"model": "gemini-2.5-flash", "input": "x", "background": true}),
                "background",
            ),
            (
                json!({"model": "gemini-2.5-flash", "input": [{"role": "user", "content": [
                    {"type": "input_image", "file_id": "file-1"}]}]}),
                "input[0].content[0].file_id",
            ),
            (
                json!({"model": "gemini-2.5-flash", "input": [{"role": "user", "content": [
                    {"type": "input_file", "file_id": "file-1"}]}]}),
                "input[0].content[0].file_id",
            ),
            (
                json!({"model": "gemini-2.5-flash", "input": [{"role": "wizard", "content": "x"}]}),
                "input[0].role",
            ),
            (
                json!({"model": "gemini-2.5-flash", "input": [{"role": "user", "content": [{"type": "hologram"}]}]}),
                "input[0].content[0]",
            ),
            (json!({"model": "gemini-2.5-flash"}), "input"),
            (json!({"model": "gemini-2.5-flash", "input": 5}), "input"),
            (
                json!({"model": "gemini-2.5-flash", "input": [{"type": "item_reference", "id": "msg_1"}]}),
                "input[0]",
            ),
        ];
        for (body, param) in cases {
            let e = parse_json(body.clone()).unwrap_err();
            assert_eq!(e.status(), 400, "{body}");
            assert_eq!(param_of(&e), Some(param), "{body}: {e}");
        }
        let e = parse_json(json!({"model": "gpt-x", "input": "x"})).unwrap_err();
        assert_eq!(e.status(), 404);
        for choice in [
            json!("auto"),
            json!("none"),
            json!({"type": "allowed_tools", "mode": "auto", "tools": []}),
        ] {
            assert!(
                parse_json(
                    json!({"model": "gemini-2.5-flash", "input": "x", "tool_choice": choice})
                )
                .is_ok()
            );
        }
    }

    #[test]
    fn tool_choice_is_honoured_and_echoed() {
        let tools = json!([{"type": "function", "name": "f"}, {"type": "function", "name": "g"},
                           {"type": "web_search_preview"}]);
        let read = |choice: Value, parallel: bool| {
            parse_json(
                json!({"model": "gemini-2.5-flash", "input": "x", "tools": tools,
                "tool_choice": choice, "parallel_tool_calls": parallel}),
            )
            .unwrap()
        };
        let p = read(json!("required"), false);
        assert_eq!(p.request.tool_choice, ToolChoice::Required);
        assert!(!p.request.parallel_tool_calls && !p.echo.parallel_tool_calls);
        assert_eq!(p.echo.tool_choice, json!("required"));
        let p = read(json!({"type": "function", "name": "g"}), true);
        assert_eq!(p.request.tool_choice, ToolChoice::Named("g".into()));
        assert_eq!(p.echo.tool_choice, json!({"type": "function", "name": "g"}));
        let p = read(
            json!({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "f"}]}),
            true,
        );
        assert_eq!(p.request.tool_choice, ToolChoice::Required);
        assert_eq!(
            p.request
                .tools
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["f"]
        );
        let p = read(json!("none"), true);
        assert!(p.request.tools.is_empty());
    }
}
