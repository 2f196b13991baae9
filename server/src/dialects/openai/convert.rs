//! OpenAI Chat Completions ⇄ domain.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use super::citations::{TextMap, chat_annotation, indexes};
use super::wire::{
    AssistantMessage, ChatCompletion, ChatCompletionRequest, ChatMessage, Choice,
    CompletionTokensDetails, ContentPart, FunctionOut, MessageContent, ToolCallOut, UsageOut,
    url_of,
};
use crate::config::LimitsSettings;
use crate::dialects::limits::{self, Bounded, Names, TextOrSeq, parse_raw};
use crate::dialects::parse_data_url;
use crate::domain::{
    ChatRequest, Citation, FinishReason, GeneratedMedia, Media, MediaKind, Message, Part, Role,
    StreamEvent, ToolCall, ToolChoice, ToolSpec, Usage,
};
use crate::error::GatewayError;
use crate::upstream::ModelRegistry;

/// A parsed Chat Completions request.
#[derive(Debug)]
pub struct Parsed {
    pub request: ChatRequest,
    pub include_usage: bool,
}

const VIDEO_EXTENSIONS: [&str; 6] = [".mp4", ".webm", ".mov", ".avi", ".mkv", ".m4v"];

fn invalid(message: impl Into<String>, param: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message, Some(param.into()))
}

/// The kind of media an http(s) URL points at, from its path's extension.
pub fn url_media_kind(url: &str) -> MediaKind {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    if VIDEO_EXTENSIONS.iter().any(|ext| path.ends_with(ext)) {
        MediaKind::Video
    } else {
        MediaKind::Image
    }
}

/// A media reference: a base64 data URL (decoded) or an http(s) URL (the upstream fetches it).
pub(crate) fn media_from_url(
    url: &str,
    default_kind: MediaKind,
    param: &str,
) -> Result<Media, GatewayError> {
    let trimmed = url.trim();
    if trimmed.starts_with("data:") {
        let d = parse_data_url(trimmed).map_err(|e| invalid(e, param))?;
        return Ok(Media::Inline {
            mime: d.mime,
            data: d.data,
        });
    }
    let lower = trimmed.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        let kind = match url_media_kind(trimmed) {
            MediaKind::Video => MediaKind::Video,
            _ => default_kind,
        };
        return Ok(Media::Url {
            url: trimmed.to_owned(),
            kind,
        });
    }
    Err(invalid(
        "media URLs must be data: URLs or http(s) URLs",
        param,
    ))
}

fn parts_of(content: &MessageContent<'_>, index: usize) -> Result<Vec<Part>, GatewayError> {
    let items = match content {
        TextOrSeq::Text(t) => return Ok(vec![Part::Text(t.clone().into_owned())]),
        TextOrSeq::Seq(items) => &items.items,
    };
    let mut parts = Vec::with_capacity(items.len());
    for (j, raw) in items.iter().enumerate() {
        let param = format!("messages[{index}].content[{j}]");
        let part = ContentPart::parse(raw).map_err(|e| {
            #[derive(serde::Deserialize)]
            struct Head {
                #[serde(rename = "type", default)]
                kind: Option<serde_json::Value>,
            }
            let kind = parse_raw::<Head>(raw)
                .ok()
                .and_then(|h| h.kind)
                .and_then(|k| k.as_str().map(str::to_owned))
                .unwrap_or_else(|| "(missing)".to_owned());
            invalid(
                format!("unsupported or malformed content part of type `{kind}`: {e}"),
                param.clone(),
            )
        })?;
        match part {
            ContentPart::Text { text } => parts.push(Part::Text(text)),
            ContentPart::Refusal => {}
            ContentPart::ImageUrl { image_url } => parts.push(Part::Media(media_from_url(
                url_of(&image_url),
                MediaKind::Image,
                &param,
            )?)),
            ContentPart::VideoUrl { video_url } => parts.push(Part::Media(media_from_url(
                url_of(&video_url),
                MediaKind::Video,
                &param,
            )?)),
            ContentPart::InputAudio { input_audio } => {
                let data = STANDARD
                    .decode(input_audio.data.trim().as_bytes())
                    .map_err(|_| invalid("input_audio.data is not valid base64", param.clone()))?;
                let mime = match input_audio.format.as_deref().unwrap_or("wav") {
                    "mp3" => "audio/mpeg".to_owned(),
                    other => format!("audio/{other}"),
                };
                parts.push(Part::Media(Media::Inline {
                    mime,
                    data: Bytes::from(data),
                }));
            }
            ContentPart::File { file } => {
                if let Some(data) = file.file_data.as_deref() {
                    let media = if data.trim_start().starts_with("data:") {
                        media_from_url(data, MediaKind::Document, &param)?
                    } else {
                        let bytes = STANDARD.decode(data.trim().as_bytes()).map_err(|_| {
                            invalid("file.file_data is not valid base64", param.clone())
                        })?;
                        let mime = file.mime_type.clone().unwrap_or_else(|| {
                            mime_from_filename(file.filename.as_deref().unwrap_or_default())
                                .to_owned()
                        });
                        Media::Inline {
                            mime,
                            data: Bytes::from(bytes),
                        }
                    };
                    parts.push(Part::Media(media));
                } else if let Some(url) = file.url.as_deref() {
                    let kind = file
                        .mime_type
                        .as_deref()
                        .map(MediaKind::from_mime)
                        .unwrap_or(MediaKind::Image);
                    parts.push(Part::Media(media_from_url(url, kind, &param)?));
                } else if file.file_id.is_some() {
                    return Err(invalid(
                        "file_id references the OpenAI Files API, which this gateway does not host; send file_data instead",
                        param,
                    ));
                } else {
                    return Err(invalid("a file part needs file_data", param));
                }
            }
        }
    }
    Ok(parts)
}

pub(crate) fn mime_from_filename(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    match lower.rsplit('.').next().unwrap_or_default() {
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "txt" => "text/plain",
        "csv" => "text/csv",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        _ => "application/octet-stream",
    }
}

fn arguments_text(value: Option<&serde_json::Value>) -> String {
    match value {
        None | Some(serde_json::Value::Null) => "{}".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn convert_message(
    m: &ChatMessage<'_>,
    index: usize,
    calls_so_far: &[ToolCall],
) -> Result<Message, GatewayError> {
    let role = match m.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" | "function" => Role::Tool,
        other => {
            return Err(invalid(
                format!(
                    "unknown role `{other}` (expected system, developer, user, assistant or tool)"
                ),
                format!("messages[{index}].role"),
            ));
        }
    };
    let parts = match &m.content {
        None => Vec::new(),
        Some(c) => parts_of(c, index)?,
    };
    let mut message = Message::new(role, parts);
    if role == Role::Assistant {
        for (j, call) in m.tool_calls.iter().flat_map(|c| &c.items).enumerate() {
            let function = call.function.as_ref().ok_or_else(|| {
                invalid(
                    "a tool call needs a function",
                    format!("messages[{index}].tool_calls[{j}]"),
                )
            })?;
            message.tool_calls.push(ToolCall {
                id: call.id.clone().unwrap_or_default(),
                name: function.name.clone(),
                arguments: arguments_text(function.arguments.as_deref()),
            });
        }
        if let Some(f) = &m.function_call {
            message.tool_calls.push(ToolCall {
                id: String::new(),
                name: f.name.clone(),
                arguments: arguments_text(f.arguments.as_deref()),
            });
        }
    }
    if role == Role::Tool {
        let by_id = m
            .tool_call_id
            .as_deref()
            .and_then(|id| calls_so_far.iter().rev().find(|c| c.id == id))
            .map(|c| c.name.clone());
        message.tool_name = by_id
            .or_else(|| m.name.clone())
            .or_else(|| m.tool_call_id.clone());
    }
    Ok(message)
}

/// Reads Chat Completions' `tool_choice` (or legacy `function_call`): `"none"`, `"auto"`,
/// `"required"`, a named function (`{"type": "function", "function": {"name"}}`, legacy
/// `{"name"}`, or a custom tool), or `allowed_tools` (a mode and the tools it narrows to).
/// Returns the choice and the allowed names, or the error message for `param`.
pub(crate) fn read_tool_choice(
    choice: &serde_json::Value,
) -> Result<(ToolChoice, Option<Vec<String>>), String> {
    use serde_json::Value;
    let mode = |m: &str| match m {
        "none" => Ok(ToolChoice::None),
        "auto" => Ok(ToolChoice::Auto),
        "required" => Ok(ToolChoice::Required),
        other => Err(format!(
            "unknown value \"{other}\"; expected \"none\", \"auto\", \"required\" or a named function"
        )),
    };
    let name_of = |v: &Value| {
        v.get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
    };
    match choice {
        Value::Null => Ok((ToolChoice::Auto, None)),
        Value::String(s) => Ok((mode(s)?, None)),
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => o
                .get("function")
                .and_then(name_of)
                .or_else(|| name_of(choice))
                .map(|n| (ToolChoice::Named(n), None))
                .ok_or_else(|| "a function choice needs function.name".to_owned()),
            Some("custom") => o
                .get("custom")
                .and_then(name_of)
                .or_else(|| name_of(choice))
                .map(|n| (ToolChoice::Named(n), None))
                .ok_or_else(|| "a custom tool choice needs custom.name".to_owned()),
            Some("allowed_tools") => {
                let inner = o.get("allowed_tools").unwrap_or(choice);
                let choice = mode(inner.get("mode").and_then(Value::as_str).unwrap_or("auto"))?;
                let names = inner
                    .get("tools")
                    .and_then(Value::as_array)
                    .map(|tools| {
                        tools
                            .iter()
                            .filter_map(|t| {
                                t.get("function")
                                    .and_then(name_of)
                                    .or_else(|| t.get("custom").and_then(name_of))
                                    .or_else(|| name_of(t))
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                Ok((choice, Some(names)))
            }
            // Legacy `function_call: {"name": …}`.
            None => name_of(choice)
                .map(|n| (ToolChoice::Named(n), None))
                .ok_or_else(|| "expected a string or a named function".to_owned()),
            Some(other) => Err(format!(
                "tool choice of type \"{other}\" is not supported (this gateway runs no hosted tools); use \"function\", \"custom\" or \"allowed_tools\""
            )),
        },
        _ => Err("expected a string or an object".to_owned()),
    }
}

/// Parses a request body; model names are read against `models`.
pub fn parse(
    body: &[u8],
    models: &ModelRegistry,
    limits: &LimitsSettings,
) -> Result<Parsed, GatewayError> {
    limits::bounded(body, limits, Names::OPENAI_CHAT, || {
        parse_within_budget(body, models)
    })
}

fn parse_within_budget(body: &[u8], models: &ModelRegistry) -> Result<Parsed, GatewayError> {
    let wire: ChatCompletionRequest<'_> = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid(
            format!("the request body is not valid JSON for this endpoint: {e}"),
            None,
        )
    })?;
    let model = models.parse(wire.model.as_deref().unwrap_or_default())?;
    let raw_messages = wire.messages.unwrap_or_default().items;
    if raw_messages.is_empty() {
        return Err(invalid(
            "messages must contain at least one message",
            "messages",
        ));
    }
    limits::check_max_tokens(wire.max_tokens.as_deref(), "max_tokens")?;
    limits::check_max_tokens(
        wire.max_completion_tokens.as_deref(),
        "max_completion_tokens",
    )?;
    if wire.n.is_some_and(|n| n > 1) {
        return Err(invalid("only n = 1 is supported", "n"));
    }
    let mut messages = Vec::with_capacity(raw_messages.len());
    let mut calls: Vec<ToolCall> = Vec::new();
    for (i, raw) in raw_messages.iter().enumerate() {
        let m: ChatMessage<'_> =
            parse_raw(raw).map_err(|e| invalid(e.to_string(), format!("messages[{i}]")))?;
        let message = convert_message(&m, i, &calls)?;
        calls.extend(message.tool_calls.iter().cloned());
        messages.push(message);
    }
    let mut tools: Vec<ToolSpec> = wire
        .tools
        .unwrap_or_default()
        .items
        .into_iter()
        .filter_map(|t| t.function)
        .map(|f| ToolSpec {
            name: f.name,
            description: f.description,
            parameters: f.parameters.map(Bounded::into_inner),
        })
        .collect();
    tools.extend(
        wire.functions
            .unwrap_or_default()
            .items
            .into_iter()
            .map(|f| ToolSpec {
                name: f.name,
                description: f.description,
                parameters: f.parameters.map(Bounded::into_inner),
            }),
    );
    let (choice_param, raw_choice) =
        match (wire.tool_choice.as_deref(), wire.function_call.as_deref()) {
            (Some(c), _) if !c.is_null() => ("tool_choice", Some(c)),
            (_, Some(c)) => ("function_call", Some(c)),
            _ => ("tool_choice", None),
        };
    let (choice, allowed) = match raw_choice {
        Some(c) => read_tool_choice(c).map_err(|e| invalid(e, choice_param))?,
        None => (ToolChoice::Auto, None),
    };
    let tool_choice = crate::dialects::settle_tool_choice(&mut tools, choice, allowed.as_deref())
        .map_err(|e| invalid(e, choice_param))?;
    let parallel_tool_calls = wire
        .parallel_tool_calls
        .as_deref()
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true);
    let stream = wire.stream.unwrap_or(false);
    let options = crate::dialects::generation_options(
        wire.max_completion_tokens
            .as_deref()
            .or(wire.max_tokens.as_deref()),
        wire.temperature.as_deref(),
        wire.top_p.as_deref(),
        wire.stop.as_deref(),
    );
    Ok(Parsed {
        include_usage: stream
            && wire
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        request: ChatRequest {
            model,
            messages,
            stream,
            tools,
            tool_choice,
            parallel_tool_calls,
            options,
        },
    })
}

/// How generated media appears in chat text: a markdown image (or link, for other media)
/// pointing at the gateway's stored copy, or with an inline data URI when `inline` is set (or
/// the media could not be stored).
pub fn media_markdown(media: &GeneratedMedia, inline: bool) -> String {
    let target = match (&media.url, inline) {
        (Some(url), false) => url.clone(),
        _ => format!(
            "data:{};base64,{}",
            media.mime,
            STANDARD.encode(&media.data)
        ),
    };
    let label = match MediaKind::from_mime(&media.mime) {
        MediaKind::Image => "!image",
        MediaKind::Video => "video",
        MediaKind::Audio => "audio",
        MediaKind::Document => "file",
    };
    let label = label
        .strip_prefix('!')
        .map_or_else(|| label.to_owned(), |l| format!("!{l}"));
    format!("[{label}]({target})").replacen("[!", "![", 1)
}

pub fn usage_out(u: Usage) -> UsageOut {
    UsageOut {
        prompt_tokens: u.input_tokens,
        completion_tokens: u.output_tokens,
        total_tokens: u.total_tokens(),
        completion_tokens_details: CompletionTokensDetails {
            reasoning_tokens: u.reasoning_tokens,
        },
    }
}

pub fn finish_reason_str(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::ToolCalls => "tool_calls",
    }
}

/// A citation as a Chat annotation on `content` (code points; see `citations`), or `None`
/// when its range is not within the text sent.
pub(crate) fn chat_annotation_of(
    map: &TextMap,
    content: &str,
    citation: &Citation,
) -> Option<serde_json::Value> {
    let span = map.locate(citation).into_iter().next()?;
    let (start, end) = indexes(content, span)?;
    Some(chat_annotation(citation, start, end))
}

/// A non-streamed answer.
pub fn completion(
    id: &str,
    created: u64,
    model: &str,
    events: &[StreamEvent],
    usage: Usage,
    inline_media: bool,
) -> Vec<u8> {
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    let mut map = TextMap::default();
    let mut citations = Vec::new();
    for event in events {
        match event {
            StreamEvent::Text(t) => {
                map.push(t.len(), 0, content.len());
                content.push_str(t);
            }
            StreamEvent::Thought(t) => reasoning.push_str(t),
            StreamEvent::Media(m) => content.push_str(&media_markdown(m, inline_media)),
            StreamEvent::Citation(c) => citations.push(c),
            StreamEvent::ToolCall(c) => tool_calls.push(ToolCallOut {
                id: c.id.clone(),
                kind: "function",
                function: FunctionOut {
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                },
            }),
        }
    }
    let annotations = citations
        .into_iter()
        .filter_map(|c| chat_annotation_of(&map, &content, c))
        .collect();
    let finish = if tool_calls.is_empty() {
        FinishReason::Stop
    } else {
        FinishReason::ToolCalls
    };
    let body = ChatCompletion {
        id,
        object: "chat.completion",
        created,
        model,
        choices: [Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: if content.is_empty() && !tool_calls.is_empty() {
                    None
                } else {
                    Some(content)
                },
                refusal: None,
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                tool_calls,
                annotations,
            },
            logprobs: None,
            finish_reason: finish_reason_str(finish),
        }],
        usage: usage_out(usage),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(v: serde_json::Value) -> Result<Parsed, GatewayError> {
        parse(
            &serde_json::to_vec(&v).unwrap(),
            &ModelRegistry::gemini_business_names(),
            &LimitsSettings::default(),
        )
    }

    #[test]
    fn a_typical_request() {
        let p = parse_json(json!({
            "model": "gemini-2.5-flash", "stream": true, "stream_options": {"include_usage": true},
            "temperature": 0.2, "max_tokens": 10, "unknown_field": {"x": 1},
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is "},
                    {"type": "text", "text": "this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAEC", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/clip.MP4?x=1"}}
                ]}
            ]
        }))
        .unwrap();
        assert!(p.include_usage && p.request.stream);
        assert_eq!(p.request.messages.len(), 2);
        assert_eq!(p.request.messages[0].role, Role::System);
        let user = &p.request.messages[1];
        assert_eq!(user.text(), "what is this?");
        let media: Vec<_> = user.media().collect();
        assert_eq!(
            media[0],
            &Media::Inline {
                mime: "image/png".into(),
                data: Bytes::from_static(&[0, 1, 2])
            }
        );
        assert_eq!(media[1].kind(), MediaKind::Video);
    }

    #[test]
    fn tool_turns_keep_names() {
        let p = parse_json(json!({"model": "gemini-2.5-pro", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ], "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
           "tool_choice": "auto"}))
        .unwrap();
        assert_eq!(p.request.messages[1].tool_calls[0].name, "get_weather");
        assert_eq!(
            p.request.messages[2].tool_name.as_deref(),
            Some("get_weather")
        );
        assert_eq!(p.request.tools.len(), 1);
        assert!(!p.include_usage);
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(
            b"{not json",
            &ModelRegistry::gemini_business_names(),
            &LimitsSettings::default(),
        )
        .unwrap_err();
        assert_eq!(e.status(), 400);
        let e = parse_json(json!({"model": "gemini-2.5-flash", "messages": []})).unwrap_err();
        assert!(
            matches!(e, GatewayError::InvalidRequest { param: Some(ref p), .. } if p == "messages")
        );
        let e =
            parse_json(json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}))
                .unwrap_err();
        assert_eq!(e.status(), 404);
        let e = parse_json(json!({"messages": [{"role": "user", "content": "x"}]})).unwrap_err();
        assert_eq!(e.status(), 400);
        let e = parse_json(
            json!({"model": "gemini-2.5-flash", "messages": [{"role": "wizard", "content": "x"}]}),
        )
        .unwrap_err();
        assert!(
            matches!(e, GatewayError::InvalidRequest { param: Some(ref p), .. } if p == "messages[0].role")
        );
        let e = parse_json(
            json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
            {"type": "hologram", "x": 1}]}]}),
        )
        .unwrap_err();
        assert!(
            matches!(e, GatewayError::InvalidRequest { param: Some(ref p), .. } if p == "messages[0].content[0]")
        );
        let e = parse_json(
            json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
        )
        .unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn tool_choice_is_read() {
        let tools = json!([{"type": "function", "function": {"name": "f"}},
                           {"type": "function", "function": {"name": "g"}}]);
        let read = |extra: serde_json::Value| {
            let mut body = json!({"model": "gemini-2.5-flash", "tools": tools,
                "messages": [{"role": "user", "content": "x"}]});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            parse_json(body).map(|p| p.request)
        };
        let r = read(json!({"tool_choice": "required", "parallel_tool_calls": false})).unwrap();
        assert_eq!(
            (r.tool_choice, r.parallel_tool_calls, r.tools.len()),
            (ToolChoice::Required, false, 2)
        );
        let r =
            read(json!({"tool_choice": {"type": "function", "function": {"name": "g"}}})).unwrap();
        assert_eq!(
            (r.tool_choice, r.parallel_tool_calls),
            (ToolChoice::Named("g".into()), true)
        );
        let r = read(json!({"function_call": {"name": "f"}})).unwrap();
        assert_eq!(r.tool_choice, ToolChoice::Named("f".into()));
        let r = read(
            json!({"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "required",
            "tools": [{"type": "function", "function": {"name": "g"}}]}}}),
        )
        .unwrap();
        assert_eq!(r.tool_choice, ToolChoice::Required);
        assert_eq!(
            r.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["g"]
        );
        for none in [
            json!({"tool_choice": "none"}),
            json!({"function_call": "none"}),
        ] {
            let r = read(none).unwrap();
            assert!(r.tools.is_empty());
            assert_eq!(r.tool_choice, ToolChoice::None);
        }
        for (bad, param) in [
            (
                json!({"tool_choice": {"type": "function", "function": {"name": "h"}}}),
                "tool_choice",
            ),
            (json!({"tool_choice": "sometimes"}), "tool_choice"),
            (
                json!({"tool_choice": {"type": "file_search"}}),
                "tool_choice",
            ),
            (json!({"function_call": {"name": "h"}}), "function_call"),
        ] {
            let e = read(bad.clone()).unwrap_err();
            assert!(
                matches!(e, GatewayError::InvalidRequest { param: Some(ref p), .. } if p == param),
                "{bad}: {e}"
            );
        }
        let e = parse_json(
            json!({"model": "gemini-2.5-flash", "tool_choice": "required",
            "messages": [{"role": "user", "content": "x"}]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no tools are declared"), "{e}");
    }

    #[test]
    fn completion_shape() {
        let events = vec![
            StreamEvent::Thought("hmm".into()),
            StreamEvent::Text("Hello".into()),
            StreamEvent::Media(GeneratedMedia {
                mime: "image/png".into(),
                data: Bytes::from_static(&[1, 2]),
                url: None,
            }),
        ];
        let usage = Usage {
            input_tokens: 3,
            output_tokens: 5,
            reasoning_tokens: 1,
        };
        let v: serde_json::Value = serde_json::from_slice(&completion(
            "chatcmpl-1",
            7,
            "gemini-2.5-flash",
            &events,
            usage,
            false,
        ))
        .unwrap();
        assert_eq!(v["object"], "chat.completion");
        let msg = &v["choices"][0]["message"];
        assert_eq!(msg["content"], "Hello![image](data:image/png;base64,AQI=)");
        assert_eq!(msg["reasoning_content"], "hmm");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["total_tokens"], 8);
        assert_eq!(
            v["usage"]["completion_tokens_details"]["reasoning_tokens"],
            1
        );
    }

    /// A citation of `cited` (its first occurrence in `text`, the answer's text).
    pub(crate) fn citation_of(text: &str, cited: &str, url: &str, title: &str) -> Citation {
        let start = text.find(cited).unwrap();
        Citation {
            url: url.into(),
            title: Some(title.into()),
            domain: Some("example.com".into()),
            start,
            end: start + cited.len(),
            cited_text: cited.into(),
        }
    }

    /// `text[start..end]` in code points.
    pub(crate) fn slice_chars(
        text: &str,
        start: &serde_json::Value,
        end: &serde_json::Value,
    ) -> String {
        let (s, e) = (
            start.as_u64().unwrap() as usize,
            end.as_u64().unwrap() as usize,
        );
        text.chars().skip(s).take(e - s).collect()
    }

    #[test]
    fn citations_become_annotations_on_the_content_sent() {
        let pieces = [
            "Café 𝄞 au lait ☕ is ",
            "coffee with hot milk. ",
            "Rust 1.0 shipped.",
        ];
        let text: String = pieces.concat();
        let mut events: Vec<StreamEvent> = pieces
            .iter()
            .map(|p| StreamEvent::Text((*p).into()))
            .collect();
        // An image between two text pieces: its markdown is in `content`, not in the domain's
        // text, so the second range moves by its length.
        events.insert(
            2,
            StreamEvent::Media(GeneratedMedia::new("image/png", Bytes::from_static(&[1]))),
        );
        events.push(StreamEvent::Citation(citation_of(
            &text,
            "coffee with hot milk",
            "https://a.example/café",
            "Café au lait",
        )));
        let mut untitled = citation_of(&text, "Rust 1.0", "https://b.example", "");
        untitled.title = None;
        events.push(StreamEvent::Citation(untitled));
        // Broken ranges are dropped, never sent.
        let mut beyond = citation_of(&text, "Rust 1.0", "https://c.example", "c");
        beyond.end = text.len() + 1;
        events.push(StreamEvent::Citation(beyond));
        let v: serde_json::Value = serde_json::from_slice(&completion(
            "chatcmpl-1",
            7,
            "gemini-2.5-flash-search",
            &events,
            Usage::default(),
            false,
        ))
        .unwrap();
        let msg = &v["choices"][0]["message"];
        let content = msg["content"].as_str().unwrap();
        assert!(content.contains("![image](data:image/png;base64,AQ==)"));
        let a = msg["annotations"].as_array().unwrap();
        assert_eq!(a.len(), 2, "{msg}");
        assert_eq!(a[0]["type"], "url_citation");
        let c = &a[0]["url_citation"];
        assert_eq!(c["url"], "https://a.example/café");
        assert_eq!(c["title"], "Café au lait");
        assert_eq!(
            (c["start_index"].as_u64(), c["end_index"].as_u64()),
            (Some(20), Some(40))
        );
        assert_eq!(
            slice_chars(content, &c["start_index"], &c["end_index"]),
            "coffee with hot milk"
        );
        let c = &a[1]["url_citation"];
        assert_eq!(c["title"], "example.com");
        assert_eq!(
            slice_chars(content, &c["start_index"], &c["end_index"]),
            "Rust 1.0"
        );
        // Without citations there is no annotations key.
        let v: serde_json::Value = serde_json::from_slice(&completion(
            "chatcmpl-1",
            7,
            "m",
            &[StreamEvent::Text("x".into())],
            Usage::default(),
            false,
        ))
        .unwrap();
        assert!(v["choices"][0]["message"].get("annotations").is_none());
    }

    #[test]
    fn media_markdown_forms() {
        let mut png = GeneratedMedia::new("image/png", Bytes::from_static(&[1]));
        assert_eq!(
            media_markdown(&png, false),
            "![image](data:image/png;base64,AQ==)"
        );
        png.url = Some("http://gw/media/t.png".into());
        assert_eq!(
            media_markdown(&png, false),
            "![image](http://gw/media/t.png)"
        );
        assert_eq!(
            media_markdown(&png, true),
            "![image](data:image/png;base64,AQ==)"
        );
        let mp4 = GeneratedMedia::new("video/mp4", Bytes::from_static(&[1]));
        assert_eq!(
            media_markdown(&mp4, false),
            "[video](data:video/mp4;base64,AQ==)"
        );
    }
}
