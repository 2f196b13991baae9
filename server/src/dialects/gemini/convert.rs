//! Gemini API ⇄ domain.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use bytes::Bytes;

use serde_json::value::RawValue;

use super::wire::{
    BlobOut, Candidate, Content, ContentOut, CountTokensRequest, FileDataOut, FunctionCallOut,
    GenerateContentRequest, GenerateContentResponse, GroundingMetadata, Part as WirePart, PartOut,
    ToolConfig, UsageMetadata,
};
use crate::config::LimitsSettings;
use crate::dialects::limits::{self, Names, TextOr, parse_raw};
use crate::dialects::openai::convert::url_media_kind;
use crate::domain::{
    GeneratedMedia, GenerationOptions, Media, MediaKind, Message, Part, Role, StreamEvent,
    ToolCall, ToolChoice, ToolSpec, Usage,
};
use crate::error::GatewayError;

/// What a `generateContent` request asks for, in domain terms.
#[derive(Debug)]
pub struct Parsed {
    pub messages: Vec<Message>,
    /// Declared functions (emulated upstream, docs/TOOLS.md).
    pub tools: Vec<ToolSpec>,
    /// `toolConfig.functionCallingConfig`'s mode.
    pub tool_choice: ToolChoice,
    /// Whether thought parts are sent (default true; `thinkingConfig.includeThoughts: false`
    /// turns them off).
    pub include_thoughts: bool,
    /// `generationConfig`'s sampling and length options.
    pub options: GenerationOptions,
}

/// The `thoughtSignature` put on function-call parts the gateway emits: Google's documented
/// placeholder, so a history replayed against Google itself is not refused either.
pub const THOUGHT_SIGNATURE: &str = "c2tpcF90aG91Z2h0X3NpZ25hdHVyZV92YWxpZGF0b3I=";

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message, None)
}

fn not_json(e: &serde_json::Error) -> GatewayError {
    invalid(format!(
        "Invalid JSON payload: the request body is not valid JSON for this method: {e}"
    ))
}

/// Parses a `generateContent` / `streamGenerateContent` body.
pub fn parse_generate(body: &[u8], limits: &LimitsSettings) -> Result<Parsed, GatewayError> {
    limits::bounded(body, limits, Names::GEMINI, || {
        parse_generate_within_budget(body)
    })
}

fn parse_generate_within_budget(body: &[u8]) -> Result<Parsed, GatewayError> {
    let wire: GenerateContentRequest<'_> =
        serde_json::from_slice(body).map_err(|e| not_json(&e))?;
    if wire.contents.as_ref().is_none_or(|c| c.items.is_empty()) {
        return Err(invalid(
            "contents is not specified: send at least one Content",
        ));
    }
    convert(wire)
}

/// Parses a `countTokens` body into the messages whose tokens are counted.
pub fn parse_count(body: &[u8], limits: &LimitsSettings) -> Result<Parsed, GatewayError> {
    limits::bounded(body, limits, Names::GEMINI, || {
        parse_count_within_budget(body)
    })
}

fn parse_count_within_budget(body: &[u8]) -> Result<Parsed, GatewayError> {
    let wire: CountTokensRequest<'_> = serde_json::from_slice(body).map_err(|e| not_json(&e))?;
    match (wire.contents, wire.generate_content_request) {
        (Some(_), Some(_)) => Err(invalid(
            "send either contents or generateContentRequest, not both",
        )),
        (Some(contents), None) => convert(GenerateContentRequest {
            contents: Some(contents),
            ..GenerateContentRequest::default()
        }),
        (None, Some(request)) => convert(request),
        (None, None) => Err(invalid(
            "countTokens needs contents or generateContentRequest",
        )),
    }
}

/// One raw part, typed.
fn part_of_raw(raw: &RawValue, at: &str) -> Result<WirePart, GatewayError> {
    parse_raw(raw).map_err(|e| invalid(format!("Invalid JSON payload: {at}: {e}")))
}

fn convert(wire: GenerateContentRequest<'_>) -> Result<Parsed, GatewayError> {
    let config = wire.generation_config.unwrap_or_default();
    limits::check_max_tokens(
        config.max_output_tokens.as_deref(),
        "generationConfig.maxOutputTokens",
    )?;
    if config.candidate_count.is_some_and(|n| n > 1) {
        return Err(invalid(
            "generationConfig.candidateCount: only one candidate is supported by this gateway",
        ));
    }
    let (choice, allowed) = read_tool_config(wire.tool_config.as_ref())?;
    let mut messages = Vec::new();
    if let Some(system) = wire.system_instruction {
        let text = match system {
            TextOr::Text(t) => t.into_owned(),
            TextOr::Object(c) => {
                let mut texts = Vec::new();
                for (j, raw) in c.parts.unwrap_or_default().items.into_iter().enumerate() {
                    let part = part_of_raw(raw, &format!("systemInstruction.parts[{j}]"))?;
                    texts.extend(part.text);
                }
                texts.join("\n")
            }
        };
        if !text.trim().is_empty() {
            messages.push(Message::new(Role::System, vec![Part::Text(text)]));
        }
    }
    if config
        .response_mime_type
        .as_deref()
        .is_some_and(|m| m.eq_ignore_ascii_case("application/json"))
    {
        let mut text = "Respond with JSON only: a single JSON value, without code fences and without any other text.".to_owned();
        if let Some(schema) = config.response_json_schema.or(config.response_schema) {
            text.push_str("\nThe JSON must conform to this schema: ");
            text.push_str(&schema.to_string());
        }
        messages.push(Message::new(Role::System, vec![Part::Text(text)]));
    }
    for (i, raw) in wire
        .contents
        .unwrap_or_default()
        .items
        .into_iter()
        .enumerate()
    {
        let content: Content<'_> = parse_raw(raw)
            .map_err(|e| invalid(format!("Invalid JSON payload: contents[{i}]: {e}")))?;
        convert_content(content, i, &mut messages)?;
    }
    let options = crate::dialects::generation_options(
        config.max_output_tokens.as_deref(),
        config.temperature.as_deref(),
        config.top_p.as_deref(),
        config.stop_sequences.as_deref(),
    );
    let mut tools = tools_of(wire.tools.unwrap_or_default().items);
    let tool_choice = crate::dialects::settle_tool_choice(&mut tools, choice, allowed.as_deref())
        .map_err(|e| invalid(format!("toolConfig.functionCallingConfig: {e}")))?;
    Ok(Parsed {
        options,
        messages,
        tools,
        tool_choice,
        include_thoughts: config
            .thinking_config
            .and_then(|t| t.include_thoughts)
            .unwrap_or(true),
    })
}

/// `functionCallingConfig`: mode `AUTO` (or unspecified, or `VALIDATED`), `ANY` (a call is
/// required; one allowed name makes it that function), `NONE`; `allowedFunctionNames`
/// narrows the declared functions.
fn read_tool_config(
    config: Option<&ToolConfig>,
) -> Result<(ToolChoice, Option<Vec<String>>), GatewayError> {
    let Some(fc) = config.and_then(|c| c.function_calling_config.as_ref()) else {
        return Ok((ToolChoice::Auto, None));
    };
    let allowed = fc.allowed_function_names.clone().filter(|n| !n.is_empty());
    let mode = fc.mode.as_deref().unwrap_or("AUTO").to_ascii_uppercase();
    let choice = match mode.as_str() {
        "AUTO" | "MODE_UNSPECIFIED" | "VALIDATED" => ToolChoice::Auto,
        "NONE" => ToolChoice::None,
        "ANY" => match allowed.as_deref() {
            Some([only]) => ToolChoice::Named(only.clone()),
            _ => ToolChoice::Required,
        },
        other => {
            return Err(invalid(format!(
                "Invalid value at 'tool_config.function_calling_config.mode' ({other}): expected AUTO, ANY, NONE or VALIDATED"
            )));
        }
    };
    Ok((choice, allowed))
}

fn tools_of(tools: Vec<super::wire::Tool>) -> Vec<ToolSpec> {
    let mut out = Vec::new();
    for tool in tools {
        let declarations = tool.function_declarations.unwrap_or_default().items;
        for d in &declarations {
            let Some(name) = d.get("name").and_then(|n| n.as_str()) else {
                continue;
            };
            out.push(ToolSpec {
                name: name.to_owned(),
                description: d
                    .get("description")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                parameters: d
                    .get("parametersJsonSchema")
                    .or_else(|| d.get("parameters_json_schema"))
                    .or_else(|| d.get("parameters"))
                    .cloned(),
            });
        }
    }
    out
}

fn decode_base64(data: &str) -> Option<Vec<u8>> {
    let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(cleaned.as_bytes()).ok())
}

fn media_of(part: &WirePart, at: &str) -> Result<Option<Media>, GatewayError> {
    if let Some(blob) = &part.inline_data {
        let data = decode_base64(&blob.data)
            .ok_or_else(|| invalid(format!("{at}.inlineData.data is not valid base64")))?;
        if data.is_empty() {
            return Err(invalid(format!("{at}.inlineData.data is empty")));
        }
        let mime = blob
            .mime_type
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .unwrap_or("application/octet-stream")
            .to_ascii_lowercase();
        return Ok(Some(Media::Inline {
            mime,
            data: Bytes::from(data),
        }));
    }
    if let Some(file) = &part.file_data {
        let uri = file.file_uri.trim();
        let lower = uri.to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://")) {
            return Err(invalid(format!(
                "{at}.fileData.fileUri must be an http(s) URL (this gateway does not host the Files API; send the bytes as inlineData instead)"
            )));
        }
        let kind = match file.mime_type.as_deref().filter(|m| !m.trim().is_empty()) {
            Some(mime) => MediaKind::from_mime(mime),
            None => url_media_kind(uri),
        };
        return Ok(Some(Media::Url {
            url: uri.to_owned(),
            kind,
        }));
    }
    Ok(None)
}

fn role_of(role: Option<&str>, at: &str) -> Result<Role, GatewayError> {
    match role.map(str::trim).unwrap_or("") {
        "" | "user" => Ok(Role::User),
        "model" => Ok(Role::Assistant),
        "function" | "tool" => Ok(Role::Tool),
        other => Err(invalid(format!(
            "{at}.role: please use a valid role: user, model (got `{other}`)"
        ))),
    }
}

/// Appends the messages of one `Content`: its text, media and function calls as one turn,
/// each `functionResponse` as a tool turn of its own (in part order).
fn convert_content(
    content: Content<'_>,
    index: usize,
    out: &mut Vec<Message>,
) -> Result<(), GatewayError> {
    let at = format!("contents[{index}]");
    let role = match role_of(content.role.as_deref(), &at)? {
        // Text in a legacy `function` turn is still the user's side of the conversation.
        Role::Tool => Role::User,
        r => r,
    };
    let raw_parts = content.parts.map(|p| p.items).unwrap_or_default();
    if raw_parts.is_empty() {
        return Err(invalid(format!(
            "{at}.parts: must contain at least one part"
        )));
    }
    let mut current = Message::new(role, Vec::new());
    for (j, raw) in raw_parts.into_iter().enumerate() {
        let at = format!("{at}.parts[{j}]");
        let part = part_of_raw(raw, &at)?;
        if part.thought == Some(true) {
            // The model's earlier reasoning is not part of the prompt.
            continue;
        }
        if let Some(text) = part.text.as_ref() {
            current.parts.push(Part::Text(text.clone()));
        } else if let Some(media) = media_of(&part, &at)? {
            current.parts.push(Part::Media(media));
        } else if let Some(call) = part.function_call {
            current.tool_calls.push(ToolCall {
                id: call.id.unwrap_or_default(),
                name: call.name,
                arguments: call
                    .args
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "{}".to_owned()),
            });
        } else if let Some(response) = part.function_response {
            if !current.parts.is_empty() || !current.tool_calls.is_empty() {
                out.push(std::mem::replace(
                    &mut current,
                    Message::new(role, Vec::new()),
                ));
            }
            let text = match response
                .response
                .map(crate::dialects::limits::Bounded::into_inner)
            {
                None | Some(serde_json::Value::Null) => "{}".to_owned(),
                Some(v) => v.to_string(),
            };
            let mut message = Message::new(Role::Tool, vec![Part::Text(text)]);
            message.tool_name = Some(response.name);
            out.push(message);
        } else if let Some(code) = part.executable_code {
            let language = code.language.unwrap_or_default().to_ascii_lowercase();
            current
                .parts
                .push(Part::Text(format!("```{language}\n{}\n```", code.code)));
        } else if let Some(result) = part.code_execution_result {
            current.parts.push(Part::Text(format!(
                "[code execution {}]: {}",
                result.outcome.unwrap_or_default(),
                result.output.unwrap_or_default()
            )));
        }
        // A part with none of the data fields (only metadata) carries nothing to send.
    }
    if !current.parts.is_empty() || !current.tool_calls.is_empty() {
        out.push(current);
    }
    Ok(())
}

// ---- answers ----------------------------------------------------------------------------

/// Gemini's usage block. `candidatesTokenCount` excludes the thoughts, which Gemini counts
/// apart in `thoughtsTokenCount`; `totalTokenCount` is their sum with the prompt.
pub fn usage_metadata(usage: Usage) -> UsageMetadata {
    UsageMetadata {
        prompt_token_count: usage.input_tokens,
        candidates_token_count: usage.output_tokens.saturating_sub(usage.reasoning_tokens),
        total_token_count: usage.total_tokens(),
        thoughts_token_count: (usage.reasoning_tokens > 0).then_some(usage.reasoning_tokens),
    }
}

/// The part carrying one event (`None` for thoughts the client did not ask for).
pub fn part_of(event: &StreamEvent, include_thoughts: bool) -> Option<PartOut<'_>> {
    match event {
        StreamEvent::Text(t) => Some(PartOut::Text {
            text: Cow::Borrowed(t),
            thought: None,
        }),
        StreamEvent::Thought(t) => include_thoughts.then(|| PartOut::Text {
            text: Cow::Borrowed(t),
            thought: Some(true),
        }),
        StreamEvent::Media(GeneratedMedia {
            mime,
            url: Some(url),
            ..
        }) if MediaKind::from_mime(mime) == MediaKind::Video => Some(PartOut::FileData {
            file_data: FileDataOut {
                mime_type: mime,
                file_uri: url,
            },
        }),
        StreamEvent::Media(m) => Some(PartOut::InlineData {
            inline_data: BlobOut {
                mime_type: &m.mime,
                data: STANDARD.encode(&m.data),
            },
        }),
        // Citations are the candidate's `groundingMetadata` (`grounding`), not parts.
        StreamEvent::Citation(_) => None,
        StreamEvent::ToolCall(c) => Some(PartOut::FunctionCall {
            function_call: FunctionCallOut {
                id: (!c.id.is_empty()).then_some(c.id.as_str()),
                name: &c.name,
                args: args_object(&c.arguments),
            },
            thought_signature: THOUGHT_SIGNATURE,
        }),
    }
}

/// Function-call arguments as the JSON object Gemini's `args` is.
fn args_object(arguments: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(serde_json::Value::Null) => serde_json::json!({}),
        Ok(other) => serde_json::json!({ "value": other }),
        Err(_) => serde_json::json!({ "arguments": arguments }),
    }
}

/// Every event as parts, consecutive texts (and consecutive thoughts) merged into one part.
pub fn parts_of(events: &[StreamEvent], include_thoughts: bool) -> Vec<PartOut<'_>> {
    let mut parts: Vec<PartOut<'_>> = Vec::new();
    for event in events {
        let Some(part) = part_of(event, include_thoughts) else {
            continue;
        };
        if let (
            Some(PartOut::Text {
                text: last,
                thought: last_thought,
            }),
            PartOut::Text { text, thought },
        ) = (parts.last_mut(), &part)
            && last_thought == thought
        {
            last.to_mut().push_str(text);
            continue;
        }
        parts.push(part);
    }
    if parts.is_empty() {
        parts.push(PartOut::Text {
            text: Cow::Borrowed(""),
            thought: None,
        });
    }
    parts
}

/// A whole (non-streamed) `GenerateContentResponse`; its citations become the candidate's
/// `groundingMetadata` (`grounding`).
pub fn response_body(
    events: &[StreamEvent],
    usage: Usage,
    model: &str,
    response_id: &str,
    include_thoughts: bool,
) -> Vec<u8> {
    let grounding = GroundingMetadata::of_events(events);
    let response = GenerateContentResponse {
        candidates: vec![Candidate {
            content: ContentOut {
                role: "model",
                parts: parts_of(events, include_thoughts),
            },
            finish_reason: Some("STOP"),
            index: 0,
            grounding_metadata: (!grounding.is_empty()).then_some(&grounding),
        }],
        usage_metadata: Some(usage_metadata(usage)),
        model_version: model,
        response_id,
    };
    serde_json::to_vec(&response).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::{Value, json};

    fn parse(v: Value) -> Result<Parsed, GatewayError> {
        parse_generate(v.to_string().as_bytes(), &LimitsSettings::default())
    }

    fn message(e: GatewayError) -> String {
        e.client_message()
    }

    #[test]
    fn contents_roles_and_parts() {
        let p = parse(json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Be kind."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/PNG", "data": "AAEC"}}]},
                {"role": "model", "parts": [
                    {"text": "thinking…", "thought": true},
                    {"text": "calling"},
                    {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "sig"}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "f", "response": {"result": 2}}},
                    {"text": "and?"},
                    {"file_data": {"file_uri": "https://example.com/v.mp4"}}
                ]},
                {"parts": [{"text": "no role"}]}
            ],
            "unknownField": {"x": 1}
        }))
        .unwrap();
        let m = &p.messages;
        assert_eq!(m.len(), 6, "{m:?}");
        assert_eq!(m[0].role, Role::System);
        assert_eq!(m[0].text(), "Be brief.\nBe kind.");
        assert_eq!(m[1].role, Role::User);
        assert_eq!(m[1].text(), "hi");
        assert_eq!(
            m[1].media().next(),
            Some(&Media::Inline {
                mime: "image/png".into(),
                data: Bytes::from_static(&[0, 1, 2])
            })
        );
        assert_eq!(m[2].role, Role::Assistant);
        assert_eq!(m[2].text(), "calling", "thoughts are not replayed");
        assert_eq!(m[2].tool_calls[0].name, "f");
        assert_eq!(m[2].tool_calls[0].arguments, r#"{"a":1}"#);
        assert_eq!(m[3].role, Role::Tool);
        assert_eq!(m[3].tool_name.as_deref(), Some("f"));
        assert_eq!(m[3].text(), r#"{"result":2}"#);
        assert_eq!(m[4].role, Role::User);
        assert_eq!(m[4].text(), "and?");
        assert_eq!(
            m[4].media().next(),
            Some(&Media::Url {
                url: "https://example.com/v.mp4".into(),
                kind: MediaKind::Video
            })
        );
        assert_eq!(m[5].text(), "no role");
        assert!(p.include_thoughts);
    }

    #[test]
    fn generation_config_and_tools() {
        let p = parse(json!({
            "contents": [{"role": "user", "parts": [{"text": "x"}]}],
            "generationConfig": {"temperature": 0.2, "topP": 0.9, "topK": 3, "maxOutputTokens": 10,
                "stopSequences": ["x"], "seed": 1, "responseModalities": ["TEXT"], "candidateCount": 1,
                "thinkingConfig": {"includeThoughts": false, "thinkingBudget": 100}},
            "tools": [
                {"functionDeclarations": [
                    {"name": "a", "parameters": {"type": "OBJECT"}},
                    {"name": "b", "description": "d", "parametersJsonSchema": {"type": "object"}}
                ]},
                {"googleSearch": {}}, {"codeExecution": {}}
            ],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
            "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
            "cachedContent": "cachedContents/x"
        }))
        .unwrap();
        assert!(!p.include_thoughts);
        assert_eq!(p.tools.len(), 2);
        assert_eq!(p.tools[1].parameters, Some(json!({"type": "object"})));
    }

    #[test]
    fn refusals() {
        let base = |extra: Value| {
            let mut v = json!({"contents": [{"parts": [{"text": "x"}]}]});
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            parse(v).map(|_| ()).map_err(message)
        };
        assert!(
            base(json!({"generationConfig": {"candidateCount": 2}}))
                .unwrap_err()
                .contains("candidateCount")
        );
        assert!(
            base(json!({"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}))
                .unwrap_err()
                .contains("no tools are declared")
        );
        assert!(
            base(json!({"toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}}))
                .unwrap_err()
                .contains("mode")
        );
        assert!(
            base(json!({"tools": [{"functionDeclarations": [{"name": "f"}]}],
                "tool_config": {"function_calling_config": {"mode": "ANY", "allowed_function_names": ["h"]}}}))
                .unwrap_err()
                .contains("\"h\"")
        );
        assert!(base(json!({"toolConfig": {"functionCallingConfig": {"mode": "NONE"}}})).is_ok());
        assert!(
            parse(json!({"contents": [{"parts": [{"fileData": {"fileUri": "gs://b/o"}}]}]}))
                .map_err(message)
                .unwrap_err()
                .contains("http(s)")
        );
        assert!(
            parse(json!({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "!!"}}]}]}))
                .map_err(message)
                .unwrap_err()
                .contains("contents[0].parts[0].inlineData.data")
        );
        assert!(
            parse(json!({"contents": [{"role": "system", "parts": [{"text": "x"}]}]})).is_err()
        );
        assert!(parse(json!({"contents": []})).is_err());
        assert!(parse_generate(b"{not json", &LimitsSettings::default()).is_err());
    }

    #[test]
    fn function_calling_config_is_read() {
        let read = |config: Value| {
            parse(json!({"contents": [{"parts": [{"text": "x"}]}],
                "tools": [{"functionDeclarations": [{"name": "f"}, {"name": "g"}]}],
                "toolConfig": {"functionCallingConfig": config}}))
            .map_err(message)
            .unwrap()
        };
        let p = read(json!({"mode": "ANY"}));
        assert_eq!((p.tool_choice, p.tools.len()), (ToolChoice::Required, 2));
        let p = read(json!({"mode": "ANY", "allowedFunctionNames": ["g"]}));
        assert_eq!(p.tool_choice, ToolChoice::Named("g".into()));
        let p = read(json!({"mode": "ANY", "allowedFunctionNames": ["f", "g"]}));
        assert_eq!((p.tool_choice, p.tools.len()), (ToolChoice::Required, 2));
        let p = read(json!({"mode": "AUTO", "allowedFunctionNames": ["f"]}));
        assert_eq!((p.tool_choice, p.tools.len()), (ToolChoice::Auto, 1));
        let p = read(json!({"mode": "none"}));
        assert_eq!((p.tool_choice, p.tools.len()), (ToolChoice::None, 0));
        let p = read(json!({"mode": "VALIDATED"}));
        assert_eq!(p.tool_choice, ToolChoice::Auto);
    }

    #[test]
    fn json_mode_becomes_an_instruction() {
        let p = parse(json!({
            "contents": [{"parts": [{"text": "x"}]}],
            "generationConfig": {"responseMimeType": "application/json",
                "responseSchema": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}}}
        }))
        .unwrap();
        assert_eq!(p.messages[0].role, Role::System);
        assert!(p.messages[0].text().contains("JSON only"));
        assert!(p.messages[0].text().contains("\"INTEGER\""));
    }

    #[test]
    fn count_tokens_accepts_both_forms() {
        let a = parse_count(
            br#"{"contents":[{"parts":[{"text":"hello"}]}]}"#,
            &LimitsSettings::default(),
        )
        .unwrap();
        let b = parse_count(
            br#"{"generateContentRequest":{"model":"models/x","contents":[{"parts":[{"text":"hello"}]}]}}"#,
            &LimitsSettings::default(),
        )
        .unwrap();
        assert_eq!(a.messages[0].text(), "hello");
        assert_eq!(b.messages[0].text(), "hello");
        assert!(parse_count(b"{}", &LimitsSettings::default()).is_err());
    }

    #[test]
    fn answers_merge_texts_and_carry_usage() {
        let events = vec![
            StreamEvent::Thought("a".into()),
            StreamEvent::Thought("b".into()),
            StreamEvent::Text("c".into()),
            StreamEvent::Text("d".into()),
            StreamEvent::Media(GeneratedMedia::new("image/png", Bytes::from_static(b"PNG"))),
            StreamEvent::ToolCall(ToolCall {
                id: String::new(),
                name: "f".into(),
                arguments: "[1]".into(),
            }),
        ];
        let usage = Usage {
            input_tokens: 3,
            output_tokens: 10,
            reasoning_tokens: 4,
        };
        let v: Value =
            serde_json::from_slice(&response_body(&events, usage, "m", "r", true)).unwrap();
        let parts = &v["candidates"][0]["content"]["parts"];
        assert_eq!(parts[0], json!({"text": "ab", "thought": true}));
        assert_eq!(parts[1], json!({"text": "cd"}));
        assert_eq!(
            parts[2],
            json!({"inlineData": {"mimeType": "image/png", "data": "UE5H"}})
        );
        assert_eq!(parts[3]["functionCall"]["args"], json!({"value": [1]}));
        assert!(parts[3]["thoughtSignature"].is_string());
        assert_eq!(v["candidates"][0]["finishReason"], "STOP");
        assert_eq!(v["candidates"][0]["content"]["role"], "model");
        assert_eq!(
            v["usageMetadata"],
            json!({"promptTokenCount": 3, "candidatesTokenCount": 6, "totalTokenCount": 13, "thoughtsTokenCount": 4})
        );
        assert_eq!(v["modelVersion"], "m");
        let v: Value =
            serde_json::from_slice(&response_body(&events[..2], usage, "m", "r", false)).unwrap();
        assert_eq!(
            v["candidates"][0]["content"]["parts"],
            json!([{"text": ""}])
        );
    }
}
