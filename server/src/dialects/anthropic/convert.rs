//! Anthropic Messages ⇄ domain.
//!
//! Requests: `system` (a string or text blocks) becomes one system message; each message's
//! blocks become parts (`text`, `image` and `document` with base64, URL or text sources),
//! tool calls (`tool_use`) and tool turns (`tool_result`). `thinking` blocks must carry a
//! signature this installation made ([`ThinkingSigner`]); they are then dropped, as are
//! `redacted_thinking` blocks: reasoning is never sent back upstream as answer text.
//!
//! Answers: consecutive thoughts form one `thinking` block (signed), consecutive text one
//! `text` block, each generated image or video a `text` block of its own with a markdown link,
//! each tool call a `tool_use` block. Web sources (citations) split the text into uncited runs
//! and cited runs, each cited run a `text` block whose `citations` name its sources
//! (`web_search_result_location`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use super::signature::ThinkingSigner;
use serde_json::value::RawValue;

use super::wire::{
    BlockOut, CitationOut, Content, Head, InBlock, InMessage, MessageOut, MessagesRequest, Source,
    UsageOut,
};
use crate::config::LimitsSettings;
use crate::dialects::limits::{self, Names, TextOrSeq, parse_raw};
use crate::dialects::openai::convert::{media_markdown, url_media_kind};
use crate::dialects::parse_data_url;
use crate::domain::{
    ChatRequest, Citation, FinishReason, GeneratedMedia, Media, MediaKind, Message, Part, Role,
    StreamEvent, ToolCall, ToolChoice, ToolSpec, Usage,
};
use crate::error::GatewayError;
use crate::upstream::ModelRegistry;

/// An invalid-request error whose message starts with the offending field, in Anthropic's
/// style (`messages.1.content.0: …`).
fn invalid(path: impl Into<String>, message: impl AsRef<str>) -> GatewayError {
    let path = path.into();
    GatewayError::invalid(format!("{path}: {}", message.as_ref()), Some(path))
}

/// A raw block's `type` (`(missing)` when it has none or is no object).
fn block_type(raw: &RawValue) -> String {
    parse_raw::<Head<'_>>(raw)
        .ok()
        .and_then(|h| h.kind)
        .map_or_else(|| "(missing)".to_owned(), |k| k.into_owned())
}

/// Reads `tool_choice` (`auto`, `any`, `tool` with `name`, `none`) and its
/// `disable_parallel_tool_use`; the error is the message for `tool_choice`.
fn read_tool_choice(choice: Option<&serde_json::Value>) -> Result<(ToolChoice, bool), String> {
    use serde_json::Value;
    let Some(choice) = choice.filter(|c| !c.is_null()) else {
        return Ok((ToolChoice::Auto, true));
    };
    let Value::Object(o) = choice else {
        return Err("must be an object with a type".to_owned());
    };
    let parallel = !o
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let choice = match o.get("type").and_then(Value::as_str) {
        Some("auto") => ToolChoice::Auto,
        Some("any") => ToolChoice::Required,
        Some("none") => ToolChoice::None,
        Some("tool") => ToolChoice::Named(
            o.get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or("a choice of type \"tool\" needs a name")?
                .to_owned(),
        ),
        Some(other) => {
            return Err(format!(
                "unknown type \"{other}\"; expected \"auto\", \"any\", \"tool\" or \"none\""
            ));
        }
        None => return Err("missing type".to_owned()),
    };
    Ok((choice, parallel))
}

fn decode_base64(data: &str, path: &str) -> Result<Bytes, GatewayError> {
    let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|_| invalid(path, "source.data is not valid base64"))?;
    if bytes.is_empty() {
        return Err(invalid(path, "source.data is empty"));
    }
    Ok(Bytes::from(bytes))
}

fn url_media(url: &str, kind: MediaKind, path: &str) -> Result<Media, GatewayError> {
    let trimmed = url.trim();
    if trimmed.starts_with("data:") {
        let d = parse_data_url(trimmed).map_err(|e| invalid(path, e))?;
        return Ok(Media::Inline {
            mime: d.mime,
            data: d.data,
        });
    }
    let lower = trimmed.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err(invalid(path, "source.url must be an http(s) URL"));
    }
    let kind = match (kind, url_media_kind(trimmed)) {
        (MediaKind::Image, MediaKind::Video) => MediaKind::Video,
        (k, _) => k,
    };
    Ok(Media::Url {
        url: trimmed.to_owned(),
        kind,
    })
}

const FILES_API: &str = "file sources reference Anthropic's Files API, which this gateway does not host; send the bytes (base64) or a URL instead";

/// The parts of an `image` block.
fn image_parts(source: &RawValue, path: &str) -> Result<Vec<Part>, GatewayError> {
    let media = match Source::parse(source).map_err(|e| invalid(path, e))? {
        Source::Base64 { media_type, data } => Media::Inline {
            mime: media_type.trim().to_ascii_lowercase(),
            data: decode_base64(&data, path)?,
        },
        Source::Url { url } => url_media(&url, MediaKind::Image, path)?,
        Source::File => return Err(invalid(path, FILES_API)),
        Source::Text { .. } | Source::Content { .. } => {
            return Err(invalid(
                path,
                "an image source is base64 or url (text and content sources are for documents)",
            ));
        }
    };
    Ok(vec![Part::Media(media)])
}

/// The parts of a `document` block: PDFs (and other files) as media, text documents as text.
fn document_parts(
    source: &RawValue,
    title: Option<String>,
    path: &str,
    signer: &ThinkingSigner,
) -> Result<Vec<Part>, GatewayError> {
    let heading = title.map(|t| format!("[document: {t}]\n"));
    let mut parts = Vec::new();
    match Source::parse(source).map_err(|e| invalid(path, e))? {
        Source::Base64 { media_type, data } => {
            if let Some(h) = heading {
                parts.push(Part::Text(h));
            }
            parts.push(Part::Media(Media::Inline {
                mime: media_type.trim().to_ascii_lowercase(),
                data: decode_base64(&data, path)?,
            }));
        }
        Source::Url { url } => {
            if let Some(h) = heading {
                parts.push(Part::Text(h));
            }
            parts.push(Part::Media(url_media(&url, MediaKind::Document, path)?));
        }
        Source::Text { data } => {
            parts.push(Part::Text(format!("{}{data}", heading.unwrap_or_default())));
        }
        Source::Content { content } => {
            if let Some(h) = heading {
                parts.push(Part::Text(h));
            }
            parts.extend(nested_parts(content, path, signer)?);
        }
        Source::File => return Err(invalid(path, FILES_API)),
    }
    Ok(parts)
}

/// Text and images nested in a `tool_result` or a content document.
fn nested_parts(
    content: Content,
    path: &str,
    signer: &ThinkingSigner,
) -> Result<Vec<Part>, GatewayError> {
    match content {
        TextOrSeq::Text(t) => Ok(vec![Part::Text(t.into_owned())]),
        TextOrSeq::Seq(blocks) => {
            let mut parts = Vec::new();
            for (k, raw) in blocks.items.into_iter().enumerate() {
                let inner = format!("{path}.content.{k}");
                let kind = block_type(raw);
                let block = InBlock::parse(raw, &kind)
                    .map_err(|e| invalid(&inner, format!("malformed `{kind}` block: {e}")))?;
                match block {
                    InBlock::Text(b) => parts.push(Part::Text(b.text)),
                    InBlock::Image(b) => parts.extend(image_parts(b.source, &inner)?),
                    InBlock::Document(b) => {
                        parts.extend(document_parts(b.source, b.title, &inner, signer)?)
                    }
                    _ => {
                        return Err(invalid(
                            &inner,
                            format!("a `{kind}` block cannot be nested here"),
                        ));
                    }
                }
            }
            Ok(parts)
        }
    }
}

/// Appends the domain messages of one Anthropic message. A user message's `tool_result`
/// blocks become tool turns of their own, in order, between its other content.
fn convert_message(
    raw: &RawValue,
    i: usize,
    signer: &ThinkingSigner,
    calls: &mut Vec<ToolCall>,
    out: &mut Vec<Message>,
) -> Result<(), GatewayError> {
    let m: InMessage<'_> =
        parse_raw(raw).map_err(|e| invalid(format!("messages.{i}"), e.to_string()))?;
    let role = match m.role.as_ref() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        // Not in Anthropic's reference, but Claude Code sends one (its environment notes) and
        // the vendor accepts it: system text at its place in the conversation.
        "system" => {
            out.extend(system_message(m.content, &format!("messages.{i}.content"))?);
            return Ok(());
        }
        other => {
            return Err(invalid(
                format!("messages.{i}.role"),
                format!("unknown role `{other}` (expected user, assistant or system)"),
            ));
        }
    };
    let blocks = match m.content {
        TextOrSeq::Text(t) => {
            out.push(Message::new(role, vec![Part::Text(t.into_owned())]));
            return Ok(());
        }
        TextOrSeq::Seq(blocks) => blocks.items,
    };
    let mut current = Message::new(role, Vec::new());
    for (j, raw) in blocks.into_iter().enumerate() {
        let path = format!("messages.{i}.content.{j}");
        let kind = block_type(raw);
        let block = InBlock::parse(raw, &kind).map_err(|e| {
            invalid(
                &path,
                format!("unsupported or malformed content block of type `{kind}`: {e}"),
            )
        })?;
        match block {
            InBlock::Text(b) => current.parts.push(Part::Text(b.text)),
            InBlock::Image(b) => current.parts.extend(image_parts(b.source, &path)?),
            InBlock::Document(b) => current
                .parts
                .extend(document_parts(b.source, b.title, &path, signer)?),
            InBlock::ToolUse(super::wire::ToolUseBlock { id, name, input }) => {
                if role != Role::Assistant {
                    return Err(invalid(
                        &path,
                        "tool_use blocks belong to assistant messages",
                    ));
                }
                let call = ToolCall {
                    id,
                    name,
                    arguments: match input.map(crate::dialects::limits::Bounded::into_inner) {
                        None | Some(serde_json::Value::Null) => "{}".to_owned(),
                        Some(v) => v.to_string(),
                    },
                };
                calls.push(call.clone());
                current.tool_calls.push(call);
            }
            InBlock::ToolResult(super::wire::ToolResultBlock {
                tool_use_id,
                content,
                is_error,
            }) => {
                if role != Role::User {
                    return Err(invalid(&path, "tool_result blocks belong to user messages"));
                }
                if !current.parts.is_empty() {
                    out.push(std::mem::replace(
                        &mut current,
                        Message::new(role, Vec::new()),
                    ));
                }
                let mut parts = match content {
                    None => Vec::new(),
                    Some(c) => nested_parts(c, &path, signer)?,
                };
                if is_error == Some(true) {
                    parts.insert(0, Part::Text("(error) ".to_owned()));
                }
                let mut tool = Message::new(Role::Tool, parts);
                tool.tool_name = Some(
                    calls
                        .iter()
                        .rev()
                        .find(|c| c.id == tool_use_id)
                        .map(|c| c.name.clone())
                        .unwrap_or(tool_use_id),
                );
                out.push(tool);
            }
            InBlock::Thinking(super::wire::ThinkingBlock {
                thinking,
                signature,
            }) => {
                let valid = signature
                    .as_deref()
                    .is_some_and(|s| signer.verify(&thinking, s));
                if !valid {
                    return Err(invalid(
                        format!("{path}.signature"),
                        "invalid signature in thinking block: this gateway signs the thinking blocks it returns; send them back unchanged (or drop them)",
                    ));
                }
            }
            InBlock::RedactedThinking => {}
        }
    }
    if !current.parts.is_empty() || !current.tool_calls.is_empty() {
        out.push(current);
    }
    Ok(())
}

fn system_message(system: Content<'_>, at: &str) -> Result<Option<Message>, GatewayError> {
    #[derive(serde::Deserialize)]
    struct SystemText {
        #[serde(default)]
        text: Option<serde_json::Value>,
    }
    let text = match system {
        TextOrSeq::Text(t) => t.into_owned(),
        TextOrSeq::Seq(blocks) => {
            let mut texts = Vec::with_capacity(blocks.items.len());
            for (k, raw) in blocks.items.into_iter().enumerate() {
                let path = format!("{at}.{k}");
                let kind = block_type(raw);
                if kind != "text" {
                    return Err(invalid(
                        path,
                        format!("system blocks must be text blocks (found `{kind}`)"),
                    ));
                }
                match parse_raw::<SystemText>(raw).ok().and_then(|b| b.text) {
                    Some(serde_json::Value::String(t)) => texts.push(t),
                    _ => return Err(invalid(path, "a text block needs `text`")),
                }
            }
            texts.join("\n\n")
        }
    };
    Ok((!text.trim().is_empty()).then(|| Message::new(Role::System, vec![Part::Text(text)])))
}

/// Parses a `/v1/messages` (or `/v1/messages/count_tokens`) body; model names are read
/// against `models`.
pub fn parse(
    body: &[u8],
    signer: &ThinkingSigner,
    models: &ModelRegistry,
    limits: &LimitsSettings,
) -> Result<ChatRequest, GatewayError> {
    parse_messages(body, signer, models, limits).map(|p| p.request)
}

/// A parsed `/v1/messages` request and how its answer shows reasoning.
pub struct Parsed {
    pub request: ChatRequest,
    /// False when the client turned thinking off (`thinking.type: "disabled"`) or asked for it
    /// not to be shown (`thinking.display: "omitted"`): the answer then has no thinking blocks.
    pub show_thinking: bool,
}

/// [`parse`], keeping the options that shape the answer.
pub fn parse_messages(
    body: &[u8],
    signer: &ThinkingSigner,
    models: &ModelRegistry,
    limits: &LimitsSettings,
) -> Result<Parsed, GatewayError> {
    limits::bounded(body, limits, Names::ANTHROPIC, || {
        parse_within_budget(body, signer, models)
    })
}

/// Whether the answer shows thinking blocks (see [`Parsed::show_thinking`]).
fn shows_thinking(thinking: Option<&serde_json::Value>) -> bool {
    let field = |k: &str| {
        thinking
            .and_then(|t| t.get(k))
            .and_then(serde_json::Value::as_str)
    };
    field("type") != Some("disabled") && field("display") != Some("omitted")
}

fn parse_within_budget(
    body: &[u8],
    signer: &ThinkingSigner,
    models: &ModelRegistry,
) -> Result<Parsed, GatewayError> {
    let wire: MessagesRequest<'_> = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid(
            format!("the request body is not valid JSON for this endpoint: {e}"),
            None,
        )
    })?;
    let model = models.parse(wire.model.as_deref().unwrap_or_default())?;
    if let Some(max) = &wire.max_tokens
        && !(max.is_null() || max.as_u64().is_some_and(|n| n >= 1))
    {
        return Err(invalid("max_tokens", "must be a positive integer"));
    }
    let (choice, parallel_tool_calls) =
        read_tool_choice(wire.tool_choice.as_deref()).map_err(|e| invalid("tool_choice", &e))?;
    let raw_messages = wire.messages.unwrap_or_default().items;
    if raw_messages.is_empty() {
        return Err(invalid("messages", "must contain at least one message"));
    }
    let mut messages = Vec::with_capacity(raw_messages.len() + 1);
    if let Some(system) = wire.system
        && let Some(m) = system_message(system, "system")?
    {
        messages.push(m);
    }
    let mut calls = Vec::new();
    for (i, m) in raw_messages.into_iter().enumerate() {
        convert_message(m, i, signer, &mut calls, &mut messages)?;
    }
    let mut tools: Vec<ToolSpec> = wire
        .tools
        .unwrap_or_default()
        .items
        .into_iter()
        .filter_map(|t| {
            Some(ToolSpec {
                name: t.get("name")?.as_str()?.to_owned(),
                description: t
                    .get("description")
                    .and_then(|d| d.as_str())
                    .map(str::to_owned),
                parameters: t.get("input_schema").cloned(),
            })
        })
        .collect();
    let options = crate::dialects::generation_options(
        wire.max_tokens.as_deref(),
        wire.temperature.as_deref(),
        wire.top_p.as_deref(),
        wire.stop_sequences.as_deref(),
    );
    let tool_choice = crate::dialects::settle_tool_choice(&mut tools, choice, None)
        .map_err(|e| invalid("tool_choice", &e))?;
    let show_thinking = shows_thinking(wire.thinking.as_deref());
    Ok(Parsed {
        show_thinking,
        request: ChatRequest {
            model,
            messages,
            stream: wire.stream.unwrap_or(false),
            tools,
            tool_choice,
            parallel_tool_calls,
            options,
        },
    })
}

/// A tool call's arguments as the JSON object `tool_use.input` is.
pub fn tool_input(arguments: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => serde_json::json!({}),
    }
}

/// A tool call's id in Anthropic's form (`toolu_…`): the gateway's own `call_…` ids are
/// re-prefixed, a missing one is made up, an upstream's other ids are kept.
pub fn tool_id(call: &ToolCall) -> String {
    if call.id.is_empty() {
        format!("toolu_{}", uuid::Uuid::new_v4().simple())
    } else if let Some(rest) = call.id.strip_prefix("call_") {
        format!("toolu_{rest}")
    } else {
        call.id.clone()
    }
}

/// The text block of a generated image or video: a markdown link to the gateway's copy, or
/// an inline data URI when it could not be stored.
pub fn media_text(media: &GeneratedMedia) -> String {
    media_markdown(media, false)
}

pub fn stop_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "end_turn",
        FinishReason::ToolCalls => "tool_use",
    }
}

/// The `encrypted_index` of each web source of one answer.
///
/// Anthropic's value points into its own search results; the gateway has none, and the SDKs
/// only require a string. Each distinct URL of an answer gets the base64 of `b2a:web:<n>`,
/// `n` its position among the answer's sources (0-based, by first citation): opaque, stable
/// within the answer, carrying nothing beyond what the citation already says. The gateway
/// ignores it (as every other citation field) when a client sends the block back.
#[derive(Debug, Default)]
pub struct Sources {
    urls: Vec<String>,
}

impl Sources {
    pub fn encrypted_index(&mut self, url: &str) -> String {
        let n = match self.urls.iter().position(|u| u == url) {
            Some(n) => n,
            None => {
                self.urls.push(url.to_owned());
                self.urls.len() - 1
            }
        };
        STANDARD.encode(format!("b2a:web:{n}"))
    }
}

/// The part `[s, e)` of a text holding the visible-text range `[start, start + text.len())`
/// that `citation` covers, as offsets into `text` (`None`: it covers none of it, or its range
/// does not fall on character boundaries).
pub fn cited_part(citation: &Citation, start: usize, text: &str) -> Option<(usize, usize)> {
    let s = citation.start.max(start) - start;
    let e = citation.end.min(start + text.len()).checked_sub(start)?;
    (s < e && text.is_char_boundary(s) && text.is_char_boundary(e)).then_some((s, e))
}

/// The citation of `text[s..e]` by `citation`'s source.
pub fn citation_out(citation: &Citation, cited: &str, sources: &mut Sources) -> CitationOut {
    CitationOut {
        kind: "web_search_result_location",
        url: citation.url.clone(),
        title: citation.title.clone(),
        encrypted_index: sources.encrypted_index(&citation.url),
        cited_text: cited.to_owned(),
    }
}

/// Splits a text block holding the visible-text range `[start, start + text.len())` at the
/// boundaries of the citations that fall in it: uncited runs become blocks without
/// citations, each cited run a block of its own carrying its sources. Ranges that overlap
/// are one run (each citation's `cited_text` is then the part of the run it covers); a range
/// that crosses into another block is cut to the part in this one.
fn cited_blocks(
    start: usize,
    text: &str,
    citations: &[&Citation],
    sources: &mut Sources,
) -> Vec<BlockOut> {
    let mut parts: Vec<(usize, usize, &Citation)> = citations
        .iter()
        .filter_map(|c| cited_part(c, start, text).map(|(s, e)| (s, e, *c)))
        .collect();
    parts.sort_by_key(|&(s, e, _)| (s, e));
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while i < parts.len() {
        let (run_start, mut run_end, _) = parts[i];
        let mut j = i;
        while j < parts.len() && parts[j].0 < run_end.max(parts[i].1) {
            run_end = run_end.max(parts[j].1);
            j += 1;
        }
        if run_start > at {
            out.push(BlockOut::Text {
                text: text[at..run_start].to_owned(),
                citations: Vec::new(),
            });
        }
        out.push(BlockOut::Text {
            text: text[run_start..run_end].to_owned(),
            citations: parts[i..j]
                .iter()
                .map(|&(s, e, c)| citation_out(c, &text[s..e], sources))
                .collect(),
        });
        at = run_end;
        i = j;
    }
    if at < text.len() || out.is_empty() {
        out.push(BlockOut::Text {
            text: text[at..].to_owned(),
            citations: Vec::new(),
        });
    }
    out
}

/// A block of the answer before its text blocks are split at their citations.
enum Draft {
    Done(BlockOut),
    /// Visible text: the answer's text `[start, start + text.len())`.
    Text {
        start: usize,
        text: String,
    },
}

/// The content blocks of a whole answer. Text blocks are split at the ranges the answer's
/// citations cover, so that each cited run is a block carrying its sources (Anthropic's
/// shape: a block's `citations` support that block's text).
pub fn blocks(events: &[StreamEvent], signer: &ThinkingSigner) -> Vec<BlockOut> {
    let mut drafts: Vec<Draft> = Vec::new();
    let mut open_thinking: Option<String> = None;
    let mut citations: Vec<&Citation> = Vec::new();
    // The visible text so far, in bytes.
    let mut sent = 0;
    let close_thinking = |open: &mut Option<String>, out: &mut Vec<Draft>| {
        if let Some(thinking) = open.take() {
            let signature = signer.sign(&thinking);
            out.push(Draft::Done(BlockOut::Thinking {
                thinking,
                signature,
            }));
        }
    };
    for event in events {
        match event {
            StreamEvent::Thought(t) => open_thinking.get_or_insert_with(String::new).push_str(t),
            StreamEvent::Text(t) => {
                close_thinking(&mut open_thinking, &mut drafts);
                match drafts.last_mut() {
                    Some(Draft::Text { text, .. }) => text.push_str(t),
                    _ => drafts.push(Draft::Text {
                        start: sent,
                        text: t.clone(),
                    }),
                }
                sent += t.len();
            }
            StreamEvent::Media(m) => {
                close_thinking(&mut open_thinking, &mut drafts);
                drafts.push(Draft::Done(BlockOut::Text {
                    text: media_text(m),
                    citations: Vec::new(),
                }));
            }
            StreamEvent::Citation(c) => citations.push(c),
            StreamEvent::ToolCall(c) => {
                close_thinking(&mut open_thinking, &mut drafts);
                drafts.push(Draft::Done(BlockOut::ToolUse {
                    id: tool_id(c),
                    name: c.name.clone(),
                    input: tool_input(&c.arguments),
                }));
            }
        }
    }
    close_thinking(&mut open_thinking, &mut drafts);
    // A citation past the answer's text is broken (the domain promises otherwise): left out.
    citations.retain(|c| c.end <= sent);
    let mut sources = Sources::default();
    let mut out = Vec::with_capacity(drafts.len());
    for draft in drafts {
        match draft {
            Draft::Done(b) => out.push(b),
            Draft::Text { start, text } => {
                out.extend(cited_blocks(start, &text, &citations, &mut sources));
            }
        }
    }
    out.retain(|b| !matches!(b, BlockOut::Text { text, .. } if text.is_empty()));
    out
}

/// A non-streamed answer.
pub fn message(
    id: &str,
    model: &str,
    events: &[StreamEvent],
    usage: Usage,
    finish: FinishReason,
    signer: &ThinkingSigner,
) -> Vec<u8> {
    let body = MessageOut {
        id,
        kind: "message",
        role: "assistant",
        model,
        content: blocks(events, signer),
        stop_reason: Some(stop_reason(finish)),
        stop_sequence: None,
        usage: UsageOut::new(usage.input_tokens, usage.output_tokens),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::gemini_business::prompt::flatten;
    use serde_json::json;

    fn signer() -> ThinkingSigner {
        ThinkingSigner::from_key([3; 32])
    }

    fn parse_json(v: serde_json::Value) -> Result<ChatRequest, GatewayError> {
        parse(
            &serde_json::to_vec(&v).unwrap(),
            &signer(),
            &ModelRegistry::gemini_business_names(),
            &LimitsSettings::default(),
        )
    }

    fn message_of(e: &GatewayError) -> String {
        e.client_message()
    }

    #[test]
    fn a_typical_request() {
        let sig = signer().sign("hmm");
        let r = parse_json(json!({
            "model": "gemini-2.5-flash", "max_tokens": 1024, "stream": true,
            "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}},
                       {"type": "text", "text": "and kind"}],
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "metadata": {"user_id": "u"}, "context_management": {"edits": []},
            "stop_sequences": ["X"], "temperature": 0.5, "top_p": 0.9, "top_k": 3,
            "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object"},
                       "cache_control": {"type": "ephemeral"}, "strict": true}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAEC"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": sig},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "A cat."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "text", "text": "thanks"}]}
            ]
        }))
        .unwrap();
        assert!(r.stream);
        assert_eq!(r.tools.len(), 1);
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::User
            ]
        );
        assert_eq!(r.messages[0].text(), "be brief\n\nand kind");
        let media: Vec<_> = r.messages[1].media().collect();
        assert_eq!(
            media[0],
            &Media::Inline {
                mime: "image/png".into(),
                data: Bytes::from_static(&[0, 1, 2])
            }
        );
        assert_eq!(
            media[1],
            &Media::Url {
                url: "https://example.com/cat.png".into(),
                kind: MediaKind::Image
            }
        );
        // The thinking is not part of the assistant turn.
        assert_eq!(r.messages[2].text(), "A cat.");
        assert_eq!(r.messages[2].tool_calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(r.messages[3].tool_name.as_deref(), Some("get_weather"));
        assert_eq!(r.messages[3].text(), "sunny");
        let q = flatten(&r.messages);
        assert!(!q.text.contains("hmm"), "{}", q.text);
    }

    #[test]
    fn documents_and_lenient_fields() {
        let r = parse_json(json!({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERg=="}},
            {"type": "document", "title": "notes", "source": {"type": "text", "media_type": "text/plain", "data": "line one"}},
            {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
            {"type": "text", "text": "summarise"}]}]}))
        .unwrap();
        assert!(!r.stream);
        let m = &r.messages[0];
        assert_eq!(m.media().count(), 2);
        assert_eq!(m.media().next().unwrap().kind(), MediaKind::Document);
        assert!(m.text().contains("[document: notes]\nline one"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(
            b"{nope",
            &signer(),
            &ModelRegistry::gemini_business_names(),
            &LimitsSettings::default(),
        )
        .unwrap_err();
        assert_eq!(e.status(), 400);
        let e = parse_json(
            json!({"model": "claude-9", "messages": [{"role": "user", "content": "x"}]}),
        )
        .unwrap_err();
        assert_eq!(e.status(), 404);
        let e = parse_json(json!({"model": "gemini-2.5-flash", "messages": []})).unwrap_err();
        assert!(message_of(&e).starts_with("messages:"));
        let e = parse_json(json!({"model": "gemini-2.5-flash", "messages": [
            {"role": "user", "content": "x"}, {"role": "wizard", "content": "y"}]}))
        .unwrap_err();
        assert!(message_of(&e).starts_with("messages.1.role:"), "{e}");
        let e = parse_json(json!({"model": "gemini-2.5-flash", "messages": [
            {"role": "user", "content": "x"},
            {"role": "system", "content": [{"type": "image", "source": {}}]}]}))
        .unwrap_err();
        assert!(message_of(&e).starts_with("messages.1.content.0:"), "{e}");
        let e = parse_json(json!({"model": "gemini-2.5-flash", "messages": [
            {"role": "user", "content": [{"type": "hologram"}]}]}))
        .unwrap_err();
        assert!(message_of(&e).starts_with("messages.0.content.0:"), "{e}");
        let e = parse_json(
            json!({"model": "gemini-2.5-flash", "system": [{"type": "image"}],
            "messages": [{"role": "user", "content": "x"}]}),
        )
        .unwrap_err();
        assert!(message_of(&e).starts_with("system.0:"), "{e}");
        let e = parse_json(
            json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}),
        )
        .unwrap_err();
        assert!(message_of(&e).contains("Files API"), "{e}");
        let e = parse_json(
            json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "ftp://x/y.png"}}]}]}),
        )
        .unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn thinking_signatures_are_checked() {
        let good = signer().sign("deep thought");
        let turn = |thinking: &str, sig: serde_json::Value| {
            json!({"model": "gemini-2.5-flash", "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": thinking, "signature": sig}, {"type": "text", "text": "a"}]},
                {"role": "user", "content": "q2"}]})
        };
        assert!(parse_json(turn("deep thought", json!(good))).is_ok());
        for (thinking, sig) in [
            ("deep thought!", json!(good)),
            ("deep thought", json!("EqQBCkgIARABGAIiQL")),
            ("deep thought", json!(null)),
        ] {
            let e = parse_json(turn(thinking, sig)).unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(
                message_of(&e).starts_with("messages.1.content.0.signature:"),
                "{e}"
            );
        }
    }

    #[test]
    fn tool_choice_is_read() {
        let tools = json!([{"name": "f", "input_schema": {"type": "object"}},
                           {"name": "g", "input_schema": {"type": "object"}}]);
        let read = |choice: serde_json::Value| {
            parse_json(
                json!({"model": "gemini-2.5-flash", "tool_choice": choice, "tools": tools,
                "messages": [{"role": "user", "content": "x"}]}),
            )
        };
        let r = read(json!({"type": "any"})).unwrap();
        assert_eq!(
            (r.tool_choice, r.parallel_tool_calls, r.tools.len()),
            (ToolChoice::Required, true, 2)
        );
        let r =
            read(json!({"type": "tool", "name": "g", "disable_parallel_tool_use": true})).unwrap();
        assert_eq!(
            (r.tool_choice, r.parallel_tool_calls),
            (ToolChoice::Named("g".into()), false)
        );
        let r = read(json!({"type": "auto", "disable_parallel_tool_use": false})).unwrap();
        assert_eq!(
            (r.tool_choice, r.parallel_tool_calls),
            (ToolChoice::Auto, true)
        );
        let r = read(json!({"type": "none"})).unwrap();
        assert!(r.tools.is_empty());
        for bad in [
            json!({"type": "tool", "name": "h"}),
            json!({"type": "tool"}),
            json!({"type": "sometimes"}),
            json!("any"),
        ] {
            let e = read(bad.clone()).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}");
            assert!(message_of(&e).starts_with("tool_choice:"), "{e}");
        }
        let e = parse_json(
            json!({"model": "gemini-2.5-flash", "tool_choice": {"type": "any"},
            "messages": [{"role": "user", "content": "x"}]}),
        )
        .unwrap_err();
        assert!(message_of(&e).contains("no tools are declared"), "{e}");
    }

    #[test]
    fn a_system_message_inside_messages_is_system_text_at_its_place() {
        let r = parse_json(
            json!({"model": "gemini-2.5-flash", "system": "top", "messages": [
            {"role": "user", "content": "x"},
            {"role": "system", "content": [{"type": "text", "text": "env",
                                            "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "y"},
            {"role": "system", "content": "later"}]}),
        )
        .unwrap();
        let roles: Vec<(Role, String)> = r.messages.iter().map(|m| (m.role, m.text())).collect();
        assert_eq!(
            roles,
            [
                (Role::System, "top".to_owned()),
                (Role::User, "x".to_owned()),
                (Role::System, "env".to_owned()),
                (Role::User, "y".to_owned()),
                (Role::System, "later".to_owned()),
            ]
        );
    }

    #[test]
    fn answers_become_blocks() {
        let s = signer();
        let events = vec![
            StreamEvent::Thought("a ".into()),
            StreamEvent::Thought("b".into()),
            StreamEvent::Text("Hello ".into()),
            StreamEvent::Text("world".into()),
            StreamEvent::Media(GeneratedMedia {
                mime: "image/png".into(),
                data: Bytes::from_static(&[1]),
                url: Some("http://gw/media/x.png".into()),
            }),
            StreamEvent::Text("after".into()),
            StreamEvent::ToolCall(ToolCall {
                id: String::new(),
                name: "f".into(),
                arguments: r#"{"x":1}"#.into(),
            }),
        ];
        let b = blocks(&events, &s);
        assert_eq!(b.len(), 5, "{b:?}");
        match &b[0] {
            BlockOut::Thinking {
                thinking,
                signature,
            } => {
                assert_eq!(thinking, "a b");
                assert!(s.verify("a b", signature));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            b[1],
            BlockOut::Text {
                text: "Hello world".into(),
                citations: Vec::new()
            }
        );
        assert_eq!(
            b[2],
            BlockOut::Text {
                text: "![image](http://gw/media/x.png)".into(),
                citations: Vec::new()
            }
        );
        assert_eq!(
            b[3],
            BlockOut::Text {
                text: "after".into(),
                citations: Vec::new()
            }
        );
        match &b[4] {
            BlockOut::ToolUse { id, input, .. } => {
                assert!(id.starts_with("toolu_"));
                assert_eq!(input, &json!({"x": 1}));
            }
            other => panic!("{other:?}"),
        }
        let v: serde_json::Value = serde_json::from_slice(&message(
            "msg_1",
            "gemini-2.5-flash",
            &events,
            Usage {
                input_tokens: 2,
                output_tokens: 3,
                reasoning_tokens: 1,
            },
            FinishReason::ToolCalls,
            &s,
        ))
        .unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["stop_reason"], "tool_use");
        assert!(v["stop_sequence"].is_null());
        assert_eq!(v["usage"]["input_tokens"], 2);
        assert_eq!(v["usage"]["output_tokens"], 3);
    }

    /// The citation of the first `cited` in `answer` by `url`.
    fn cite(answer: &str, cited: &str, url: &str, title: Option<&str>) -> StreamEvent {
        StreamEvent::Citation(Citation {
            title: title.map(str::to_owned),
            ..Citation::of(answer, cited, url)
        })
    }

    fn text_and_urls(b: &BlockOut) -> (String, Vec<(String, String)>) {
        match b {
            BlockOut::Text { text, citations } => (
                text.clone(),
                citations
                    .iter()
                    .map(|c| (c.url.clone(), c.cited_text.clone()))
                    .collect(),
            ),
            other => panic!("{other:?}"),
        }
    }

    const CAFE: [&str; 3] = [
        "Café 𝄞 au lait ☕ is ",
        "coffee with hot milk. ",
        "Rust 1.0 shipped in 2015.",
    ];

    #[test]
    fn citations_split_the_text_into_cited_blocks() {
        let s = signer();
        let all = CAFE.concat();
        let mut events = vec![StreamEvent::Thought("Searching.".into())];
        events.extend(CAFE.iter().map(|t| StreamEvent::Text((*t).into())));
        events.push(cite(
            &all,
            "coffee with hot milk",
            "https://a.example/cafe",
            Some("Café — A"),
        ));
        events.push(cite(
            &all,
            "coffee with hot milk",
            "https://b.example/lait",
            None,
        ));
        events.push(cite(
            &all,
            "Rust 1.0 shipped in 2015",
            "https://a.example/cafe",
            Some("Café — A"),
        ));
        let b = blocks(&events, &s);
        assert!(matches!(b[0], BlockOut::Thinking { .. }), "{b:?}");
        let texts: Vec<_> = b[1..].iter().map(text_and_urls).collect();
        let a = "https://a.example/cafe".to_owned();
        let milk = "coffee with hot milk".to_owned();
        assert_eq!(
            texts,
            [
                ("Café 𝄞 au lait ☕ is ".to_owned(), vec![]),
                (
                    milk.clone(),
                    vec![
                        (a.clone(), milk.clone()),
                        ("https://b.example/lait".to_owned(), milk)
                    ]
                ),
                (". ".to_owned(), vec![]),
                (
                    "Rust 1.0 shipped in 2015".to_owned(),
                    vec![(a, "Rust 1.0 shipped in 2015".to_owned())]
                ),
                (".".to_owned(), vec![]),
            ]
        );
        // The text is whole and in order.
        let joined: String = texts.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(joined, all);
        // The JSON shape: every field the SDKs require, a null title when there is none, the
        // same encrypted_index for the same source.
        let v: serde_json::Value = serde_json::from_slice(&message(
            "msg_1",
            "gemini-2.5-flash-search",
            &events,
            Usage::default(),
            FinishReason::Stop,
            &s,
        ))
        .unwrap();
        let content = v["content"].as_array().unwrap();
        assert!(content[1].get("citations").is_none(), "{v}");
        let milk = &content[2]["citations"];
        assert_eq!(
            milk[0],
            json!({"type": "web_search_result_location", "url": "https://a.example/cafe",
                   "title": "Café — A", "encrypted_index": milk[0]["encrypted_index"],
                   "cited_text": "coffee with hot milk"})
        );
        assert!(
            milk[1]["title"].is_null() && milk[1].get("title").is_some(),
            "{v}"
        );
        let index = |c: &serde_json::Value| c["encrypted_index"].as_str().unwrap().to_owned();
        assert!(!index(&milk[0]).is_empty());
        assert_ne!(index(&milk[0]), index(&milk[1]));
        assert_eq!(index(&milk[0]), index(&content[4]["citations"][0]));
    }

    #[test]
    fn overlapping_crossing_and_broken_citations() {
        let s = signer();
        let at = |start: usize, end: usize, url: &str| {
            StreamEvent::Citation(Citation {
                url: url.into(),
                title: None,
                domain: Some("example.com".into()),
                start,
                end,
                cited_text: String::new(),
            })
        };
        // "é" is 2 bytes: "aé bc" = a(0) é(1..3) ' '(3) b(4) c(5); then an image; then "de".
        let events = vec![
            StreamEvent::Text("aé bc".into()),
            StreamEvent::Media(GeneratedMedia {
                mime: "image/png".into(),
                data: Bytes::from_static(&[1]),
                url: Some("http://gw/media/x.png".into()),
            }),
            StreamEvent::Text("de".into()),
            // Overlapping: é␠ and ␠b are one run.
            at(1, 4, "https://x.example/1"),
            at(3, 5, "https://x.example/2"),
            // Crossing the image: c|de → "c" here, "d" there.
            at(5, 7, "https://x.example/3"),
            // Inside "é": not on a character boundary; past the end; empty.
            at(2, 4, "https://x.example/bad"),
            at(6, 99, "https://x.example/bad"),
            at(4, 4, "https://x.example/bad"),
        ];
        let b = blocks(&events, &s);
        let texts: Vec<_> = b.iter().map(text_and_urls).collect();
        let u = |n: &str, cited: &str| (format!("https://x.example/{n}"), cited.to_owned());
        assert_eq!(
            texts,
            [
                ("a".to_owned(), vec![]),
                ("é b".to_owned(), vec![u("1", "é "), u("2", " b")]),
                ("c".to_owned(), vec![u("3", "c")]),
                ("![image](http://gw/media/x.png)".to_owned(), vec![]),
                ("d".to_owned(), vec![u("3", "d")]),
                ("e".to_owned(), vec![]),
            ]
        );
    }
}
