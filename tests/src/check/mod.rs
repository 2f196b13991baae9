//! Stream-invariant checkers, one per wire format. Every streamed body a test reads goes
//! through [`check`] (via [`crate::SseReader::checked`] or [`crate::TestApp::stream`]), and each
//! checker is shown to reject deliberately broken streams (`tests/tests/checkers.rs`).
//!
//! A checker takes the raw body bytes and returns what the stream said (text, reasoning,
//! media links, tool calls, the stop reason, a terminal error) or a description of the first
//! violation.

pub mod anthropic;
pub mod chat;
pub mod gemini;
pub mod responses;

use serde_json::Value;

/// Which wire format a stream is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI Chat Completions SSE (`data: {...}` … `data: [DONE]`).
    ChatCompletions { include_usage: bool },
    /// OpenAI Responses API SSE (`event:` + `data:` per event).
    Responses,
    /// Anthropic Messages SSE.
    Anthropic,
    /// Gemini `:streamGenerateContent?alt=sse`.
    GeminiSse,
    /// Gemini `:streamGenerateContent` without `alt=sse`: one JSON array, streamed.
    GeminiArray,
}

/// What a valid stream said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamSummary {
    /// The visible answer text, concatenated.
    pub text: String,
    /// The reasoning, concatenated.
    pub thinking: String,
    /// Links (or data URIs) of generated media, in order.
    pub media: Vec<String>,
    /// The terminal error object, if the stream ended with one.
    pub error: Option<Value>,
    /// Every parsed JSON payload, in order.
    pub events: Vec<Value>,
    /// Keep-alives seen (comments, pings, whitespace).
    pub keepalives: usize,
    /// The tool calls, in order, each whole (arguments parsed; always a JSON object).
    pub tool_calls: Vec<CheckedCall>,
    /// The dialect's finish/stop reason as sent: Chat `finish_reason`, Responses the final
    /// `response.status`, Anthropic `stop_reason`, Gemini `finishReason`. `None` when the
    /// stream carried none (it ended with an error instead).
    pub stop_reason: Option<String>,
}

/// One tool call a stream made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckedCall {
    /// The id clients answer with: Chat `tool_calls[].id`, Responses `call_id`, Anthropic
    /// `tool_use.id`, Gemini `functionCall.id` (empty when Gemini sent none).
    pub id: String,
    pub name: String,
    /// The arguments, parsed (a JSON object).
    pub arguments: Value,
}

/// Checks one complete stream body.
pub fn check(wire: Wire, raw: &[u8]) -> Result<StreamSummary, String> {
    match wire {
        Wire::ChatCompletions { include_usage } => chat::check(raw, include_usage),
        Wire::Responses => responses::check(raw),
        Wire::Anthropic => anthropic::check(raw),
        Wire::GeminiSse => gemini::check_sse(raw),
        Wire::GeminiArray => gemini::check_array(raw),
    }
}

/// One SSE block: its `event:` name (if any), its `data:` payload, or a comment.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Event {
        event: Option<String>,
        data: String,
        /// Whether every `data:` line had a space after the colon.
        data_space: bool,
    },
    Comment(String),
}

/// Splits an SSE body into blocks. Fails on non-UTF-8, a body that does not end with a blank
/// line, or a block with lines of an unknown field.
pub fn sse_blocks(raw: &[u8]) -> Result<Vec<Block>, String> {
    let text = std::str::from_utf8(raw).map_err(|e| format!("SSE body is not UTF-8: {e}"))?;
    if text.is_empty() {
        return Err("empty stream".into());
    }
    if !text.ends_with("\n\n") {
        return Err("the stream does not end with a blank line (cut off?)".into());
    }
    let mut blocks = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let mut event = None;
        let mut data: Vec<&str> = Vec::new();
        let mut comment = None;
        let mut data_space = true;
        for line in block.lines() {
            if let Some(c) = line.strip_prefix(':') {
                comment = Some(c.trim().to_owned());
            } else if let Some(d) = line.strip_prefix("data:") {
                data_space &= d.starts_with(' ');
                data.push(d.strip_prefix(' ').unwrap_or(d));
            } else if let Some(e) = line.strip_prefix("event:") {
                if event.is_some() {
                    return Err(format!("two event: lines in one block: {block:?}"));
                }
                event = Some(e.trim().to_owned());
            } else if line.starts_with("id:") || line.starts_with("retry:") {
            } else {
                return Err(format!("unexpected SSE line {line:?}"));
            }
        }
        if data.is_empty() {
            match (comment, event) {
                (Some(c), None) => blocks.push(Block::Comment(c)),
                _ => return Err(format!("an SSE block without data: {block:?}")),
            }
        } else {
            blocks.push(Block::Event {
                event,
                data: data.join("\n"),
                data_space,
            });
        }
    }
    Ok(blocks)
}

/// Parses a JSON payload or says which one was not JSON.
pub fn json(data: &str) -> Result<Value, String> {
    serde_json::from_str(data).map_err(|e| format!("payload is not JSON ({e}): {data}"))
}

/// Parses a call's concatenated argument text; it must be a JSON object. `what` names the
/// call in the message.
pub fn call_arguments(what: &str, text: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| format!("{what}: the arguments are not JSON ({e}): {text:?}"))?;
    ensure(v.is_object(), || {
        format!("{what}: the arguments are not a JSON object: {text}")
    })?;
    Ok(v)
}

/// The rules over all the calls of one stream: every call has a name, and the ids that were
/// sent (non-empty) are unique.
pub fn check_calls(calls: &[CheckedCall]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (i, c) in calls.iter().enumerate() {
        ensure(!c.name.is_empty(), || {
            format!("tool call {i} (id {:?}) has no name", c.id)
        })?;
        ensure(c.arguments.is_object(), || {
            format!(
                "tool call {i} ({}): the arguments are not a JSON object",
                c.name
            )
        })?;
        ensure(c.id.is_empty() || seen.insert(c.id.as_str()), || {
            format!("duplicate tool call id {:?} (call {i})", c.id)
        })?;
    }
    Ok(())
}

/// Fails with `message` unless `cond`.
pub fn ensure(cond: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(message()) }
}

/// The two calls the checkers' tool-call test streams make: `get_weather({"city": "Paris"})`
/// with id `first`, then `get_time({})` with id `second`.
#[cfg(test)]
pub(crate) fn weather_then_time(first: &str, second: &str) -> Vec<CheckedCall> {
    vec![
        CheckedCall {
            id: first.into(),
            name: "get_weather".into(),
            arguments: serde_json::json!({"city": "Paris"}),
        },
        CheckedCall {
            id: second.into(),
            name: "get_time".into(),
            arguments: serde_json::json!({}),
        },
    ]
}
