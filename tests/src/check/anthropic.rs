//! Anthropic Messages stream invariants (client-compat.md, "Anthropic Messages — stream
//! checklist"), for the grammar the gateway writes (`server/src/dialects/anthropic/sse.rs`):
//!
//! ```text
//! message_start
//! ( content_block_start(i) content_block_delta(i)* content_block_stop(i) )*   i = 0, 1, 2 …
//! [ error ]
//! message_delta      (stop_reason and usage.output_tokens)
//! message_stop
//! ```
//!
//! with `ping` events allowed anywhere between `message_start` and `message_stop`. Checked:
//! every block has an `event:` line naming its `data.type`; `message_start` comes first with a
//! `msg_` id, empty content, a null stop reason and integer usage; indexes are contiguous from
//! 0; a block starts before its deltas and stops before the next starts; delta types match the
//! block type; a `tool_use` block has a unique id and a name, and its `input_json_delta`
//! fragments concatenate (within the block) to a JSON object; a thinking block ends with a
//! `signature_delta` (its last delta); `error` (shape `{"type":"error","error":{"type",
//! "message"}}`) comes only between blocks and is followed by exactly `message_delta` and
//! `message_stop`; `message_stop` is last; keep-alives are `ping` events, never SSE comments;
//! every event but `ping` and `error` validates against the SDK's `RawMessageStreamEvent`;
//! `message_delta`'s stop reason is `tool_use` exactly when the message has tool_use blocks
//! (after an `error` any stop reason goes: the gateway then always says `end_turn`).
//!
//! Citations: a text block starts without any; a `citations_delta` in it carries a web source
//! ([`check_citation`]: `web_search_result_location` with an http(s) `url`, a `title` string or
//! null, a non-empty `encrypted_index`) whose `cited_text` is non-empty text the block has
//! already sent. [`check_message_citations`] checks the same of a whole (non-streamed) message,
//! and [`content`] rebuilds a stream's blocks as the SDKs' accumulators do.

use serde_json::Value;

use super::chat::markdown_links;
use super::{
    Block, CheckedCall, StreamSummary, call_arguments, check_calls, ensure, json, sse_blocks,
};
use crate::schemas;

const STOP_REASONS: [&str; 7] = [
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
];

#[derive(Debug)]
struct OpenBlock {
    index: u64,
    kind: String,
    /// A tool_use block's id and name.
    id: String,
    name: String,
    json: String,
    signed: bool,
    /// A text block's text so far.
    text: String,
}

#[derive(Debug, PartialEq)]
enum Phase {
    /// Nothing yet.
    Begin,
    /// After `message_start`, between blocks or in one.
    Body,
    /// After `error`.
    Failed,
    /// After `message_delta`.
    Delta,
    /// After `message_stop`.
    Stopped,
}

fn int(v: &Value) -> bool {
    v.as_u64().is_some()
}

/// Checks a whole Anthropic Messages stream body.
pub fn check(raw: &[u8]) -> Result<StreamSummary, String> {
    let mut summary = StreamSummary::default();
    let mut phase = Phase::Begin;
    let mut open: Option<OpenBlock> = None;
    let mut next_index: u64 = 0;
    for (n, block) in sse_blocks(raw)?.into_iter().enumerate() {
        let (name, data) = match block {
            Block::Comment(c) => {
                return Err(format!(
                    "event {n}: an SSE comment ({c:?}); keep-alives must be `event: ping`"
                ));
            }
            Block::Event {
                event: None, data, ..
            } => {
                return Err(format!(
                    "event {n}: a data: line without an event: line: {data}"
                ));
            }
            Block::Event {
                event: Some(name),
                data,
                ..
            } => (name, json(&data)?),
        };
        ensure(data["type"] == name.as_str(), || {
            format!(
                "event {n}: `event: {name}` but data.type is {}",
                data["type"]
            )
        })?;
        ensure(phase != Phase::Stopped, || {
            format!("event {n}: `{name}` after message_stop")
        })?;
        if name != "ping" && name != "error" {
            let violations = schemas::violations("anthropic.RawMessageStreamEvent", &data);
            ensure(violations.is_empty(), || {
                format!("event {n} does not match the SDK type: {violations:?}: {data}")
            })?;
        }
        ensure(phase != Phase::Begin || name == "message_start", || {
            format!("event {n}: the stream must start with message_start, not `{name}`")
        })?;
        match name.as_str() {
            "message_start" => {
                ensure(phase == Phase::Begin, || {
                    format!("event {n}: a second message_start")
                })?;
                let m = &data["message"];
                ensure(
                    m["id"].as_str().is_some_and(|id| id.starts_with("msg_")),
                    || format!("message_start: id is not msg_…: {m}"),
                )?;
                ensure(m["type"] == "message" && m["role"] == "assistant", || {
                    format!("message_start: type/role: {m}")
                })?;
                ensure(m["content"] == serde_json::json!([]), || {
                    format!("message_start: content must be []: {m}")
                })?;
                ensure(m["stop_reason"].is_null(), || {
                    format!("message_start: stop_reason must be null: {m}")
                })?;
                ensure(m["model"].as_str().is_some_and(|s| !s.is_empty()), || {
                    format!("message_start: model: {m}")
                })?;
                ensure(
                    int(&m["usage"]["input_tokens"]) && int(&m["usage"]["output_tokens"]),
                    || format!("message_start: usage with integer input/output tokens: {m}"),
                )?;
                phase = Phase::Body;
            }
            "ping" => summary.keepalives += 1,
            "content_block_start" => {
                ensure(phase == Phase::Body, || {
                    format!("event {n}: content_block_start after the message ended or failed")
                })?;
                if let Some(b) = &open {
                    return Err(format!(
                        "event {n}: block {} starts before block {} stopped",
                        data["index"], b.index
                    ));
                }
                let index = data["index"]
                    .as_u64()
                    .ok_or("content_block_start without index")?;
                ensure(index == next_index, || {
                    format!(
                        "event {n}: block index {index}, expected {next_index} (contiguous from 0)"
                    )
                })?;
                next_index += 1;
                let cb = &data["content_block"];
                let kind = cb["type"].as_str().unwrap_or_default().to_owned();
                match kind.as_str() {
                    "text" => {
                        ensure(cb["text"] == "", || {
                            format!("event {n}: a text block starts empty: {cb}")
                        })?;
                        ensure(
                            cb.get("citations").is_none_or(|c| {
                                c.is_null() || c.as_array().is_some_and(Vec::is_empty)
                            }),
                            || {
                                format!(
                                    "event {n}: a text block starts without citations (they come as citations_delta): {cb}"
                                )
                            },
                        )?;
                    }
                    "thinking" => ensure(cb["thinking"] == "", || {
                        format!("event {n}: a thinking block starts empty: {cb}")
                    })?,
                    "tool_use" => {
                        ensure(cb["input"] == serde_json::json!({}), || {
                            format!("event {n}: tool_use input arrives as input_json_delta: {cb}")
                        })?;
                        ensure(cb["id"].as_str().is_some_and(|id| !id.is_empty()), || {
                            format!("event {n}: a tool_use block without an id: {cb}")
                        })?;
                        ensure(cb["name"].as_str().is_some_and(|id| !id.is_empty()), || {
                            format!("event {n}: a tool_use block has no name: {cb}")
                        })?;
                    }
                    "redacted_thinking" => {}
                    other => return Err(format!("event {n}: unexpected block type `{other}`")),
                }
                open = Some(OpenBlock {
                    index,
                    signed: cb["signature"].as_str().is_some_and(|s| !s.is_empty()),
                    kind,
                    id: cb["id"].as_str().unwrap_or_default().to_owned(),
                    name: cb["name"].as_str().unwrap_or_default().to_owned(),
                    json: String::new(),
                    text: String::new(),
                });
            }
            "content_block_delta" => {
                let b = open
                    .as_mut()
                    .ok_or_else(|| format!("event {n}: a delta outside any block: {data}"))?;
                ensure(data["index"].as_u64() == Some(b.index), || {
                    format!(
                        "event {n}: delta for index {} while block {} is open",
                        data["index"], b.index
                    )
                })?;
                let d = &data["delta"];
                let dtype = d["type"].as_str().unwrap_or_default();
                ensure(!b.signed || b.kind != "thinking", || {
                    format!("event {n}: a thinking block's signature_delta must be its last delta")
                })?;
                match (b.kind.as_str(), dtype) {
                    ("text", "text_delta") => {
                        let t = d["text"].as_str().unwrap_or_default();
                        summary.text.push_str(t);
                        b.text.push_str(t);
                    }
                    ("text", "citations_delta") => check_citation(&d["citation"], &b.text)
                        .map_err(|e| format!("event {n}: block {}: {e}", b.index))?,
                    ("thinking", "thinking_delta") => summary
                        .thinking
                        .push_str(d["thinking"].as_str().unwrap_or_default()),
                    ("thinking", "signature_delta") => {
                        ensure(
                            d["signature"].as_str().is_some_and(|s| !s.is_empty()),
                            || format!("event {n}: an empty signature"),
                        )?;
                        b.signed = true;
                    }
                    ("tool_use", "input_json_delta") => {
                        b.json.push_str(d["partial_json"].as_str().ok_or_else(|| {
                            format!("event {n}: partial_json is not a string: {data}")
                        })?)
                    }
                    (kind, dtype) => {
                        return Err(format!("event {n}: a `{dtype}` delta in a `{kind}` block"));
                    }
                }
            }
            "content_block_stop" => {
                let b = open
                    .take()
                    .ok_or_else(|| format!("event {n}: content_block_stop outside any block"))?;
                ensure(data["index"].as_u64() == Some(b.index), || {
                    format!(
                        "event {n}: stop for index {} while block {} is open",
                        data["index"], b.index
                    )
                })?;
                if b.kind == "tool_use" {
                    // No fragments at all is an empty input (the SDKs' reading).
                    let text = if b.json.is_empty() { "{}" } else { &b.json };
                    let arguments = call_arguments(
                        &format!(
                            "block {} (tool_use {}): input_json_delta fragments",
                            b.index, b.name
                        ),
                        text,
                    )?;
                    summary.tool_calls.push(CheckedCall {
                        id: b.id,
                        name: b.name,
                        arguments,
                    });
                    check_calls(&summary.tool_calls)?;
                }
                ensure(b.kind != "thinking" || b.signed, || {
                    format!(
                        "block {}: a thinking block stopped without a signature",
                        b.index
                    )
                })?;
            }
            "error" => {
                ensure(phase == Phase::Body, || {
                    format!("event {n}: error after the message ended or a second error")
                })?;
                ensure(open.is_none(), || {
                    format!("event {n}: error while a block is open (close it first)")
                })?;
                let e = &data["error"];
                ensure(
                    e["type"].as_str().is_some_and(|t| t.ends_with("_error"))
                        && e["message"].as_str().is_some_and(|m| !m.is_empty()),
                    || format!("event {n}: error shape {{type, error: {{type, message}}}}: {data}"),
                )?;
                summary.error = Some(e.clone());
                phase = Phase::Failed;
            }
            "message_delta" => {
                ensure(phase == Phase::Body || phase == Phase::Failed, || {
                    format!("event {n}: a second message_delta")
                })?;
                ensure(open.is_none(), || {
                    format!("event {n}: message_delta while a block is open")
                })?;
                let reason = data["delta"]["stop_reason"]
                    .as_str()
                    .filter(|r| STOP_REASONS.contains(r))
                    .ok_or_else(|| {
                        format!("event {n}: message_delta needs a stop_reason: {data}")
                    })?;
                // After an error the gateway ends with end_turn whatever came before.
                if phase == Phase::Body {
                    let calls = summary.tool_calls.len();
                    ensure((calls > 0) == (reason == "tool_use"), || {
                        if calls > 0 {
                            format!(
                                "event {n}: stop_reason must be \"tool_use\" after {calls} tool_use block(s), got {reason:?}"
                            )
                        } else {
                            format!("event {n}: stop_reason \"tool_use\" without a tool_use block")
                        }
                    })?;
                }
                summary.stop_reason = Some(reason.to_owned());
                ensure(int(&data["usage"]["output_tokens"]), || {
                    format!("event {n}: message_delta needs usage.output_tokens: {data}")
                })?;
                phase = Phase::Delta;
            }
            "message_stop" => {
                ensure(phase == Phase::Delta, || {
                    format!("event {n}: message_stop without a message_delta before it")
                })?;
                phase = Phase::Stopped;
            }
            other => return Err(format!("event {n}: unknown event `{other}`")),
        }
        summary.events.push(data);
    }
    ensure(phase == Phase::Stopped, || {
        "the stream ended without message_stop".into()
    })?;
    summary.media = markdown_links(&summary.text);
    Ok(summary)
}

/// Checks one citation of a text block whose text (so far) is `text`: a web source in the
/// SDKs' `web_search_result_location` shape that cites non-empty text of this block.
pub fn check_citation(c: &Value, text: &str) -> Result<(), String> {
    ensure(c["type"] == "web_search_result_location", || {
        format!(
            "a citation of type {} (the gateway cites web sources only): {c}",
            c["type"]
        )
    })?;
    ensure(
        c["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://") || u.starts_with("http://")),
        || format!("a citation without an http(s) url: {c}"),
    )?;
    ensure(
        c.get("title").is_some_and(|t| t.is_null() || t.is_string()),
        || format!("a citation's title must be a string or null: {c}"),
    )?;
    ensure(
        c["encrypted_index"].as_str().is_some_and(|i| !i.is_empty()),
        || format!("a citation without an encrypted_index: {c}"),
    )?;
    let cited = c["cited_text"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("a citation without cited_text: {c}"))?;
    ensure(text.contains(cited), || {
        format!("a citation of text that is not in its block ({cited:?} not in {text:?}): {c}")
    })
}

/// Checks the citations of a whole message's text blocks ([`check_citation`] for each).
pub fn check_message_citations(message: &Value) -> Result<(), String> {
    let blocks = message["content"]
        .as_array()
        .ok_or_else(|| format!("a message without content: {message}"))?;
    for (i, b) in blocks.iter().enumerate() {
        let Some(citations) = b.get("citations").filter(|c| !c.is_null()) else {
            continue;
        };
        ensure(b["type"] == "text", || {
            format!("block {i}: citations on a {} block", b["type"])
        })?;
        let citations = citations
            .as_array()
            .ok_or_else(|| format!("block {i}: citations is not a list: {b}"))?;
        let text = b["text"].as_str().unwrap_or_default();
        for c in citations {
            check_citation(c, text).map_err(|e| format!("block {i}: {e}"))?;
        }
    }
    Ok(())
}

/// The content blocks of a checked stream (`StreamSummary::events`), accumulated as the SDKs'
/// stream helpers do: text and citations for text blocks, thinking and signature for thinking
/// blocks, the parsed input of tool_use blocks.
pub fn content(events: &[Value]) -> Vec<Value> {
    let mut blocks: Vec<Value> = Vec::new();
    let mut json: Vec<String> = Vec::new();
    for e in events {
        let at = e["index"].as_u64().and_then(|i| usize::try_from(i).ok());
        match e["type"].as_str() {
            Some("content_block_start") => {
                blocks.push(e["content_block"].clone());
                json.push(String::new());
            }
            Some("content_block_delta") => {
                let Some(i) = at.filter(|i| *i < blocks.len()) else {
                    continue;
                };
                let (b, d) = (&mut blocks[i], &e["delta"]);
                let append = |b: &mut Value, k: &str, v: &Value| {
                    let s = format!(
                        "{}{}",
                        b[k].as_str().unwrap_or_default(),
                        v.as_str().unwrap_or_default()
                    );
                    b[k] = Value::String(s);
                };
                match d["type"].as_str() {
                    Some("text_delta") => append(b, "text", &d["text"]),
                    Some("thinking_delta") => append(b, "thinking", &d["thinking"]),
                    Some("signature_delta") => b["signature"] = d["signature"].clone(),
                    Some("input_json_delta") => {
                        json[i].push_str(d["partial_json"].as_str().unwrap_or_default());
                    }
                    Some("citations_delta") => {
                        if !b["citations"].is_array() {
                            b["citations"] = Value::Array(Vec::new());
                        }
                        if let Some(list) = b["citations"].as_array_mut() {
                            list.push(d["citation"].clone());
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_stop") => {
                if let Some(i) = at.filter(|i| *i < blocks.len())
                    && blocks[i]["type"] == "tool_use"
                    && !json[i].is_empty()
                {
                    blocks[i]["input"] = serde_json::from_str(&json[i]).unwrap_or(Value::Null);
                }
            }
            _ => {}
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(name: &str, data: Value) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn start() -> String {
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                "model": "gemini-2.5-flash", "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        )
    }

    fn block_start(i: u64, block: Value) -> String {
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": i, "content_block": block}),
        )
    }

    fn delta(i: u64, d: Value) -> String {
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": i, "delta": d}),
        )
    }

    fn stop(i: u64) -> String {
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        )
    }

    fn ping() -> String {
        ev("ping", json!({"type": "ping"}))
    }

    fn end() -> String {
        ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": 5}}),
        ) + &*ev("message_stop", json!({"type": "message_stop"}))
    }

    fn thinking(i: u64) -> String {
        block_start(
            i,
            json!({"type": "thinking", "thinking": "", "signature": ""}),
        ) + &*delta(i, json!({"type": "thinking_delta", "thinking": "hm"}))
            + &*delta(i, json!({"type": "signature_delta", "signature": "b2a1.x"}))
            + &*stop(i)
    }

    fn text(i: u64, t: &str) -> String {
        block_start(i, json!({"type": "text", "text": ""}))
            + &*delta(i, json!({"type": "text_delta", "text": t}))
            + &*stop(i)
    }

    fn error() -> String {
        ev(
            "error",
            json!({"type": "error", "error": {"type": "api_error", "message": "cut"}}),
        )
    }

    fn valid() -> String {
        start()
            + &*ping()
            + &*thinking(0)
            + &*ping()
            + &*text(1, "Hello ![image](http://x/m.png)")
            + &*end()
    }

    #[test]
    fn a_valid_stream_passes() {
        let s = check(valid().as_bytes()).unwrap();
        assert_eq!(s.text, "Hello ![image](http://x/m.png)");
        assert_eq!(s.thinking, "hm");
        assert_eq!(s.keepalives, 2);
        assert_eq!(s.media, ["http://x/m.png"]);
        assert!(s.error.is_none());
        let tool = start()
            + &*block_start(
                0,
                json!({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
            )
            + &*delta(
                0,
                json!({"type": "input_json_delta", "partial_json": "{\"a\":"}),
            )
            + &*delta(0, json!({"type": "input_json_delta", "partial_json": "1}"}))
            + &*stop(0)
            + &*end().replace("end_turn", "tool_use");
        check(tool.as_bytes()).unwrap();
        // The failure grammar: blocks closed, error, message_delta, message_stop.
        let failed = start() + &*text(0, "part") + &*error() + &*end();
        let s = check(failed.as_bytes()).unwrap();
        assert_eq!(s.error.unwrap()["type"], "api_error");
        assert_eq!(s.text, "part");
        check((start() + &*ping() + &*error() + &*end()).as_bytes()).unwrap();
    }

    /// Why each broken stream must be refused (a part of the checker's message).
    fn expected_reason(what: &str) -> &'static str {
        match what {
            "missing event: line" => "without an event: line",
            "event name differs from data.type" => "data.type is",
            "missing message_start" => "must start with message_start",
            "message_start without usage" => "does not match the SDK type",
            "ping before message_start" => "must start with message_start",
            "gap in indexes" => "contiguous from 0",
            "not starting at 0" => "contiguous from 0",
            "delta before start" => "outside any block",
            "start before previous stop" => "starts before block 0 stopped",
            "delta type mismatch" => "delta in a `text` block",
            "thinking without signature" => "without a signature",
            "tool json not JSON" => "not JSON",
            "missing message_stop" => "without message_stop",
            "missing message_delta" => "without a message_delta",
            "block left open" => "while a block is open",
            "message_delta without usage" => "does not match the SDK type",
            "message_delta without stop_reason" => "needs a stop_reason",
            "event after message_stop" => "after message_stop",
            "comment keep-alive" => "must be `event: ping`",
            "error with a block open" => "error while a block is open",
            "error without message_stop" => "without message_stop",
            "error shape" => "error shape",
            "cut off mid-event" => "cut off",
            "unknown event" => "does not match the SDK type",
            "id not msg_" => "id is not msg_",
            "content_block_start first" => "must start with message_start",
            other => panic!("no expected reason for {other}"),
        }
    }

    #[test]
    fn broken_streams_fail() {
        let usage_less = start().replace(r#","usage":{"input_tokens":3,"output_tokens":1}"#, "");
        assert_ne!(usage_less, start(), "the replacement applied");
        let cases: Vec<(&str, String)> = vec![
            ("content_block_start first", text(0, "x") + &*end()),
            (
                "missing event: line",
                valid().replacen("event: ping\n", "", 1),
            ),
            (
                "event name differs from data.type",
                valid().replacen("event: ping", "event: pong", 1),
            ),
            ("missing message_start", valid().replacen(&start(), "", 1)),
            (
                "message_start without usage",
                valid().replacen(&start(), &usage_less, 1),
            ),
            ("ping before message_start", ping() + &*valid()),
            (
                "gap in indexes",
                start() + &*thinking(0) + &*text(2, "x") + &*end(),
            ),
            ("not starting at 0", start() + &*text(1, "x") + &*end()),
            (
                "delta before start",
                start()
                    + &*delta(0, json!({"type": "text_delta", "text": "x"}))
                    + &*text(0, "y")
                    + &*end(),
            ),
            (
                "start before previous stop",
                start()
                    + &*block_start(0, json!({"type": "text", "text": ""}))
                    + &*text(1, "x")
                    + &*stop(0)
                    + &*end(),
            ),
            (
                "delta type mismatch",
                start()
                    + &*block_start(0, json!({"type": "text", "text": ""}))
                    + &*delta(0, json!({"type": "thinking_delta", "thinking": "x"}))
                    + &*stop(0)
                    + &*end(),
            ),
            (
                "thinking without signature",
                start()
                    + &*block_start(
                        0,
                        json!({"type": "thinking", "thinking": "", "signature": ""}),
                    )
                    + &*delta(0, json!({"type": "thinking_delta", "thinking": "x"}))
                    + &*stop(0)
                    + &*end(),
            ),
            (
                "tool json not JSON",
                start()
                    + &*block_start(
                        0,
                        json!({"type": "tool_use", "id": "t", "name": "f", "input": {}}),
                    )
                    + &*delta(
                        0,
                        json!({"type": "input_json_delta", "partial_json": "{\"a\":"}),
                    )
                    + &*stop(0)
                    + &*end(),
            ),
            (
                "missing message_stop",
                start() + &*text(0, "x") + end().split("event: message_stop").next().unwrap(),
            ),
            (
                "missing message_delta",
                start() + &*text(0, "x") + &*ev("message_stop", json!({"type": "message_stop"})),
            ),
            (
                "block left open",
                start() + &*block_start(0, json!({"type": "text", "text": ""})) + &*end(),
            ),
            (
                "message_delta without usage",
                valid().replace(r#","usage":{"output_tokens":5}"#, ""),
            ),
            (
                "message_delta without stop_reason",
                valid().replace("\"end_turn\"", "null"),
            ),
            ("event after message_stop", valid() + &*ping()),
            (
                "comment keep-alive",
                start() + ": keep-alive\n\n" + &*text(0, "x") + &*end(),
            ),
            (
                "error with a block open",
                start()
                    + &*block_start(0, json!({"type": "text", "text": ""}))
                    + &*error()
                    + &*stop(0)
                    + &*end(),
            ),
            (
                "error without message_stop",
                start() + &*text(0, "x") + &*error(),
            ),
            (
                "error shape",
                start() + &*ev("error", json!({"type": "error", "message": "x"})) + &*end(),
            ),
            ("cut off mid-event", valid()[..valid().len() - 1].to_owned()),
            (
                "unknown event",
                start() + &*ev("message_pause", json!({"type": "message_pause"})) + &*end(),
            ),
            ("id not msg_", valid().replacen("msg_1", "chatcmpl-1", 1)),
        ];
        for (what, body) in cases {
            let expected = expected_reason(what);
            match check(body.as_bytes()) {
                Ok(_) => panic!("the checker accepted a stream with: {what}\n{body}"),
                Err(e) => assert!(
                    e.contains(expected),
                    "{what}: rejected for another reason than {expected:?}: {e}"
                ),
            }
        }
    }

    fn tool(i: u64, id: &str, name: &str, fragments: &[&str]) -> String {
        let mut out = block_start(
            i,
            json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
        );
        for f in fragments {
            out += &delta(i, json!({"type": "input_json_delta", "partial_json": f}));
        }
        out + &*stop(i)
    }

    fn end_with(reason: &str) -> String {
        end().replace("\"end_turn\"", &format!("\"{reason}\""))
    }

    /// Text, then two calls (the first in fragments, the second without any).
    fn valid_tools() -> String {
        start()
            + &*text(0, "Let me look.")
            + &*tool(1, "toolu_a", "get_weather", &["{\"city\":", " \"Paris\"}"])
            + &*ping()
            + &*tool(2, "toolu_b", "get_time", &[])
            + &*end_with("tool_use")
    }

    #[test]
    fn a_valid_tool_call_stream_passes_and_reports_its_calls() {
        let s = check(valid_tools().as_bytes()).unwrap();
        assert_eq!(s.text, "Let me look.");
        assert_eq!(s.stop_reason.as_deref(), Some("tool_use"));
        assert_eq!(
            s.tool_calls,
            crate::check::weather_then_time("toolu_a", "toolu_b")
        );
        let s = check(valid().as_bytes()).unwrap();
        assert_eq!(s.stop_reason.as_deref(), Some("end_turn"));
        assert!(s.tool_calls.is_empty());
        // After an error the stop reason is end_turn, calls or not.
        let failed = start() + &*tool(0, "toolu_a", "f", &["{}"]) + &*error() + &*end();
        let s = check(failed.as_bytes()).unwrap();
        assert_eq!(s.tool_calls.len(), 1);
        assert!(s.error.is_some());
    }

    #[test]
    fn broken_tool_call_streams_fail() {
        let cases: Vec<(&str, &str, String)> = vec![
            (
                "a call split across two tool_use blocks",
                "are not JSON",
                start()
                    + &*tool(0, "toolu_a", "get_weather", &["{\"city\":"])
                    + &*tool(1, "toolu_b", "get_weather", &["\"Paris\"}"])
                    + &*end_with("tool_use"),
            ),
            (
                "a call continued in a text block",
                "a `input_json_delta` delta in a `text` block",
                start()
                    + &*tool(0, "toolu_a", "get_weather", &["{}"])
                    + &*block_start(1, json!({"type": "text", "text": ""}))
                    + &*delta(
                        1,
                        json!({"type": "input_json_delta", "partial_json": "{\"city\":1}"}),
                    )
                    + &*stop(1)
                    + &*end_with("tool_use"),
            ),
            (
                "a fragment for a closed block",
                "delta for index 0 while block 1 is open",
                start()
                    + &*block_start(
                        0,
                        json!({"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}}),
                    )
                    + &*delta(0, json!({"type": "input_json_delta", "partial_json": "{}"}))
                    + &*stop(0)
                    + &*block_start(
                        1,
                        json!({"type": "tool_use", "id": "toolu_b", "name": "f", "input": {}}),
                    )
                    + &*delta(
                        0,
                        json!({"type": "input_json_delta", "partial_json": "{\"a\":1}"}),
                    )
                    + &*stop(1)
                    + &*end_with("tool_use"),
            ),
            (
                "arguments not JSON",
                "are not JSON",
                start() + &*tool(0, "toolu_a", "f", &["{city}"]) + &*end_with("tool_use"),
            ),
            (
                "arguments not an object",
                "not a JSON object",
                start() + &*tool(0, "toolu_a", "f", &["[1, ", "2]"]) + &*end_with("tool_use"),
            ),
            (
                "end_turn with tool_use blocks",
                "stop_reason must be \"tool_use\"",
                valid_tools().replace(
                    "\"tool_use\",\"stop_sequence\"",
                    "\"end_turn\",\"stop_sequence\"",
                ),
            ),
            (
                "max_tokens with tool_use blocks",
                "stop_reason must be \"tool_use\"",
                start() + &*tool(0, "toolu_a", "f", &["{}"]) + &*end_with("max_tokens"),
            ),
            (
                "tool_use without tool_use blocks",
                "without a tool_use block",
                start() + &*text(0, "x") + &*end_with("tool_use"),
            ),
            (
                "missing stop reason",
                "needs a stop_reason",
                start()
                    + &*tool(0, "toolu_a", "f", &["{}"])
                    + &*end().replace("\"end_turn\"", "null"),
            ),
            (
                "a call without a name",
                "has no name",
                start() + &*tool(0, "toolu_a", "", &["{}"]) + &*end_with("tool_use"),
            ),
            (
                "a call without an id",
                "without an id",
                start() + &*tool(0, "", "f", &["{}"]) + &*end_with("tool_use"),
            ),
            (
                "duplicate ids",
                "duplicate tool call id \"toolu_a\"",
                start()
                    + &*tool(0, "toolu_a", "f", &["{}"])
                    + &*tool(1, "toolu_a", "g", &["{}"])
                    + &*end_with("tool_use"),
            ),
            (
                "input not empty at the start",
                "tool_use input arrives as input_json_delta",
                start()
                    + &*block_start(
                        0,
                        json!({"type": "tool_use", "id": "toolu_a", "name": "f", "input": {"a": 1}}),
                    )
                    + &*stop(0)
                    + &*end_with("tool_use"),
            ),
        ];
        for (what, expected, body) in cases {
            assert!(
                body.contains("message_stop"),
                "{what}: the case is complete"
            );
            match check(body.as_bytes()) {
                Ok(_) => panic!("the checker accepted a stream with: {what}\n{body}"),
                Err(e) => assert!(
                    e.contains(expected),
                    "{what}: rejected for another reason than {expected:?}: {e}"
                ),
            }
        }
    }

    fn web(url: &str, cited: &str) -> Value {
        json!({"type": "web_search_result_location", "url": url, "title": "T",
               "encrypted_index": "YjJhOndlYjow", "cited_text": cited})
    }

    fn cited(i: u64, c: Value) -> String {
        delta(i, json!({"type": "citations_delta", "citation": c}))
    }

    /// A thinking block, then a text block with non-ASCII before its cited ranges and three
    /// citations after its text.
    fn valid_citations() -> String {
        start()
            + &*thinking(0)
            + &*block_start(1, json!({"type": "text", "text": ""}))
            + &*delta(
                1,
                json!({"type": "text_delta", "text": "Café 𝄞 au lait ☕ is "}),
            )
            + &*delta(
                1,
                json!({"type": "text_delta", "text": "coffee with hot milk."}),
            )
            + &*cited(1, web("https://a.example/1", "coffee with hot milk"))
            + &*cited(1, web("https://a.example/2", "𝄞 au lait ☕"))
            + &*cited(
                1,
                json!({"type": "web_search_result_location", "url": "http://a.example/3",
                       "title": null, "encrypted_index": "YjJhOndlYjoy", "cited_text": "hot"}),
            )
            + &*stop(1)
            + &*end()
    }

    #[test]
    fn citations_pass_and_accumulate() {
        let s = check(valid_citations().as_bytes()).unwrap();
        assert_eq!(s.text, "Café 𝄞 au lait ☕ is coffee with hot milk.");
        let blocks = content(&s.events);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0]["thinking"], "hm");
        assert_eq!(blocks[1]["text"], s.text);
        let urls: Vec<&str> = blocks[1]["citations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["url"].as_str().unwrap())
            .collect();
        assert_eq!(
            urls,
            [
                "https://a.example/1",
                "https://a.example/2",
                "http://a.example/3"
            ]
        );
        // The non-streamed shape: the same blocks as one message.
        let message = json!({"content": blocks});
        check_message_citations(&message).unwrap();
        let tool = content(&check(valid_tools().as_bytes()).unwrap().events);
        assert_eq!(tool[1]["input"], json!({"city": "Paris"}));
    }

    #[test]
    fn broken_citations_fail() {
        let text_then = |c: String| {
            start()
                + &*block_start(0, json!({"type": "text", "text": ""}))
                + &*delta(0, json!({"type": "text_delta", "text": "Café ☕ is hot."}))
                + &*c
                + &*stop(0)
                + &*end()
        };
        let mut no_index = web("https://a.example", "hot");
        no_index.as_object_mut().unwrap().remove("encrypted_index");
        let mut no_title = web("https://a.example", "hot");
        no_title.as_object_mut().unwrap().remove("title");
        let cases: Vec<(&str, &str, String)> = vec![
            (
                "cited text not in the block",
                "not in its block",
                text_then(cited(0, web("https://a.example", "cold"))),
            ),
            (
                "cited text in another block",
                "not in its block",
                start()
                    + &*text(0, "Café ☕ is hot.")
                    + &*block_start(1, json!({"type": "text", "text": ""}))
                    + &*delta(1, json!({"type": "text_delta", "text": "Tea is too."}))
                    + &*cited(1, web("https://a.example", "hot"))
                    + &*stop(1)
                    + &*end(),
            ),
            (
                "a citation before its text",
                "not in its block",
                start()
                    + &*block_start(0, json!({"type": "text", "text": ""}))
                    + &*cited(0, web("https://a.example", "hot"))
                    + &*delta(0, json!({"type": "text_delta", "text": "Café ☕ is hot."}))
                    + &*stop(0)
                    + &*end(),
            ),
            (
                "empty cited text",
                "without cited_text",
                text_then(cited(0, web("https://a.example", ""))),
            ),
            (
                "no encrypted_index",
                "does not match the SDK type",
                text_then(cited(0, no_index)),
            ),
            (
                "empty encrypted_index",
                "without an encrypted_index",
                text_then(cited(0, web("https://a.example", "hot")).replace("YjJhOndlYjow", "")),
            ),
            (
                "no title",
                "title must be a string or null",
                text_then(cited(0, no_title)),
            ),
            (
                "not a web source",
                "the gateway cites web sources only",
                text_then(cited(
                    0,
                    json!({"type": "char_location", "cited_text": "hot", "document_index": 0,
                           "document_title": null, "start_char_index": 0, "end_char_index": 3}),
                )),
            ),
            (
                "a url that is no URL",
                "without an http(s) url",
                text_then(cited(0, web("example.com/a", "hot"))),
            ),
            (
                "no citation object",
                "does not match the SDK type",
                text_then(delta(0, json!({"type": "citations_delta"}))),
            ),
            (
                "a citation in a thinking block",
                "a `citations_delta` delta in a `thinking` block",
                start()
                    + &*block_start(
                        0,
                        json!({"type": "thinking", "thinking": "", "signature": ""}),
                    )
                    + &*delta(0, json!({"type": "thinking_delta", "thinking": "hot"}))
                    + &*cited(0, web("https://a.example", "hot"))
                    + &*delta(0, json!({"type": "signature_delta", "signature": "b2a1.x"}))
                    + &*stop(0)
                    + &*end(),
            ),
            (
                "citations at the block's start",
                "starts without citations",
                start()
                    + &*block_start(
                        0,
                        json!({"type": "text", "text": "", "citations": [web("https://a.example", "hot")]}),
                    )
                    + &*delta(0, json!({"type": "text_delta", "text": "hot"}))
                    + &*stop(0)
                    + &*end(),
            ),
        ];
        for (what, expected, body) in cases {
            match check(body.as_bytes()) {
                Ok(_) => panic!("the checker accepted a stream with: {what}\n{body}"),
                Err(e) => assert!(
                    e.contains(expected),
                    "{what}: rejected for another reason than {expected:?}: {e}"
                ),
            }
        }
        // A whole message: a citation of text not in its block, or on a tool_use block.
        let bad = json!({"content": [{"type": "text", "text": "Café ☕ is hot.",
                                       "citations": [web("https://a.example", "cold")]}]});
        assert!(
            check_message_citations(&bad)
                .unwrap_err()
                .contains("not in its block")
        );
        let bad = json!({"content": [{"type": "tool_use", "id": "t", "name": "f", "input": {},
                                       "citations": [web("https://a.example", "f")]}]});
        assert!(
            check_message_citations(&bad)
                .unwrap_err()
                .contains("citations on a")
        );
    }
}
