//! OpenAI Chat Completions stream invariants (client-compat.md): `text/event-stream` frames of
//! `data: <json>`, first delta with the role, `delta` never `message`, `finish_reason` in a
//! chunk of its own, the usage chunk when asked (and `usage: null` before it), one id, an
//! error chunk only last, `data: [DONE]` at the end, every chunk valid for the SDK's type.
//!
//! Tool calls: `delta.tool_calls[]` entries with an `index` (0, 1, … in order of first
//! appearance); a call's first entry carries a unique `id`, `type: "function"` and a non-empty
//! `function.name`, its later entries neither (clients concatenate `name`); its
//! `function.arguments` fragments come before the next call starts and concatenate to a JSON
//! object; the `finish_reason` (required unless the stream ends with an error chunk) is
//! `"tool_calls"` exactly when the stream made calls.
//!
//! Citations: `delta.annotations` (web-search `url_citation`s) in at most one chunk (the
//! SDK's stream helper cannot merge two: its entries have no `index`), each with a URL, a
//! title and `start_index` ≤ `end_index` within the `content` already streamed, counted in
//! Unicode code points (the gateway's unit: see `openai::citations`), so an annotation
//! never comes before its text. [`citations`] reads them (streamed or from a message).

use serde_json::{Value, json};

use super::{
    Block, CheckedCall, StreamSummary, call_arguments, check_calls, ensure, json, sse_blocks,
};
use crate::schemas;

/// Checks a whole Chat Completions stream body.
pub fn check(raw: &[u8], include_usage: bool) -> Result<StreamSummary, String> {
    let mut payloads = Vec::new();
    let mut keepalives = 0;
    for block in sse_blocks(raw)? {
        match block {
            Block::Comment(_) => keepalives += 1,
            Block::Event { event: Some(e), .. } => {
                return Err(format!("chat chunks carry no event: line (found {e:?})"));
            }
            Block::Event { data, .. } => payloads.push(data),
        }
    }
    let (chunks, tool_calls, stop_reason) = check_chunks(&payloads, include_usage)?;
    let mut summary = StreamSummary {
        keepalives,
        tool_calls,
        stop_reason,
        ..StreamSummary::default()
    };
    for c in &chunks {
        if let Some(e) = c.get("error") {
            summary.error = Some(e.clone());
            continue;
        }
        if let Some(delta) = c["choices"].get(0).map(|ch| &ch["delta"]) {
            if let Some(t) = delta["content"].as_str() {
                summary.text.push_str(t);
            }
            if let Some(t) = delta["reasoning_content"].as_str() {
                summary.thinking.push_str(t);
            }
        }
    }
    summary.media = markdown_links(&summary.text);
    summary.events = chunks;
    Ok(summary)
}

/// The targets of markdown links and images in `text`.
pub fn markdown_links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find("](") {
        let after = &rest[pos + 2..];
        match after.find(')') {
            Some(end) => {
                out.push(after[..end].to_owned());
                rest = &after[end..];
            }
            None => break,
        }
    }
    out
}

/// The invariants over the `data:` payloads of one stream; returns the parsed chunks (without
/// `[DONE]`).
pub fn check_payloads(payloads: &[String], include_usage: bool) -> Result<Vec<Value>, String> {
    check_chunks(payloads, include_usage).map(|(chunks, _, _)| chunks)
}

/// The finish reasons the SDK's `ChatCompletionChunk` allows.
const FINISH_REASONS: [&str; 5] = [
    "stop",
    "length",
    "tool_calls",
    "content_filter",
    "function_call",
];

/// A checked stream: its chunks, its tool calls and its finish reason (`None` when it ended
/// with an error chunk).
type Checked = (Vec<Value>, Vec<CheckedCall>, Option<String>);

fn check_chunks(payloads: &[String], include_usage: bool) -> Result<Checked, String> {
    ensure(
        payloads.last().map(String::as_str) == Some("[DONE]"),
        || "the stream must end with data: [DONE]".into(),
    )?;
    let mut chunks = Vec::with_capacity(payloads.len());
    for p in &payloads[..payloads.len() - 1] {
        ensure(p != "[DONE]", || "[DONE] before the end".into())?;
        chunks.push(json(p)?);
    }
    ensure(!chunks.is_empty(), || "no chunks before [DONE]".into())?;
    let errored = chunks.iter().any(|c| c.get("error").is_some());
    for (i, c) in chunks.iter().enumerate() {
        if c.get("error").is_some() {
            ensure(i == chunks.len() - 1, || {
                "an error chunk must be the last chunk".into()
            })?;
            continue;
        }
        let violations = schemas::violations("openai.ChatCompletionChunk", c);
        ensure(violations.is_empty(), || {
            format!("chunk {i} does not match the SDK type: {violations:?}: {c}")
        })?;
        ensure(c["object"] == "chat.completion.chunk", || {
            format!("chunk {i} object: {c}")
        })?;
        ensure(c.get("usage").is_some() == include_usage, || {
            format!("usage key presence in chunk {i}: {c}")
        })?;
        ensure(
            c["choices"]
                .as_array()
                .is_some_and(|a| a.iter().all(|ch| ch.get("message").is_none())),
            || format!("chunk {i} uses message instead of delta: {c}"),
        )?;
    }
    ensure(
        chunks[0].get("error").is_some() || chunks[0]["choices"][0]["delta"]["role"] == "assistant",
        || format!("the first delta carries the role: {}", chunks[0]),
    )?;
    let ids: std::collections::HashSet<&str> = chunks
        .iter()
        .filter_map(|c| c.get("id").and_then(|v| v.as_str()))
        .collect();
    ensure(ids.len() <= 1, || "one id per stream".into())?;
    let calls = tool_calls(&chunks)?;
    streamed_citations(&chunks)?;
    if errored {
        return Ok((chunks, calls, None));
    }
    let body_end = if include_usage {
        chunks.len() - 1
    } else {
        chunks.len()
    };
    ensure(body_end >= 2, || "no finish chunk".into())?;
    if include_usage {
        let last = &chunks[chunks.len() - 1];
        ensure(last["choices"] == json!([]), || {
            format!("the usage chunk has empty choices: {last}")
        })?;
        ensure(
            last["usage"]["total_tokens"]
                .as_u64()
                .is_some_and(|t| t > 0),
            || format!("usage is never zero: {last}"),
        )?;
        ensure(
            chunks[..body_end].iter().all(|c| c["usage"].is_null()),
            || "usage: null on every chunk but the last".into(),
        )?;
    }
    let finish = &chunks[body_end - 1];
    let reason = finish["choices"][0]["finish_reason"]
        .as_str()
        .ok_or_else(|| format!("the finish chunk has no finish_reason: {finish}"))?
        .to_owned();
    ensure(FINISH_REASONS.contains(&reason.as_str()), || {
        format!("an unknown finish_reason {reason:?}")
    })?;
    if calls.is_empty() {
        ensure(reason != "tool_calls", || {
            "finish_reason \"tool_calls\" but the stream made no tool call".into()
        })?;
    } else {
        ensure(reason == "tool_calls", || {
            format!(
                "finish_reason must be \"tool_calls\" after {} tool call(s), got {reason:?}",
                calls.len()
            )
        })?;
    }
    ensure(finish["choices"][0]["delta"] == json!({}), || {
        format!("finish_reason in a chunk of its own: {finish}")
    })?;
    for c in &chunks[..body_end - 1] {
        ensure(c["choices"][0]["finish_reason"].is_null(), || {
            format!("finish_reason before the end: {c}")
        })?;
    }
    Ok((chunks, calls, Some(reason)))
}

/// One `url_citation`, checked against the text it annotates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cited {
    pub url: String,
    pub title: String,
    /// `start_index` and `end_index`, in code points.
    pub start: usize,
    pub end: usize,
    /// The annotated text: `text[start..end]` in code points.
    pub text: String,
}

/// Checks one `url_citation` body (Chat's `url_citation` object, or a Responses annotation)
/// against `text`, the text it annotates (as far as it was sent).
pub fn cited(body: &Value, text: &str) -> Result<Cited, String> {
    let index = |key: &str| {
        body[key]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| format!("{key} is not a non-negative integer: {body}"))
    };
    let (start, end) = (index("start_index")?, index("end_index")?);
    let url = body["url"].as_str().unwrap_or_default();
    ensure(!url.is_empty(), || {
        format!("a citation without a url: {body}")
    })?;
    let title = body["title"]
        .as_str()
        .ok_or_else(|| format!("a citation without a title: {body}"))?;
    ensure(start <= end, || {
        format!("a citation's start_index {start} is after its end_index {end}: {body}")
    })?;
    let chars = text.chars().count();
    ensure(end <= chars, || {
        format!(
            "a citation ends at {end}, past the {chars} code points of text sent before it \
             (out of range, or before its text): {body}"
        )
    })?;
    Ok(Cited {
        url: url.to_owned(),
        title: title.to_owned(),
        start,
        end,
        text: text.chars().skip(start).take(end - start).collect(),
    })
}

/// Checks a list of Chat annotations (`message.annotations` or `delta.annotations`) against
/// `content`, the content they annotate.
pub fn citations(annotations: &Value, content: &str) -> Result<Vec<Cited>, String> {
    let list = match annotations {
        Value::Null => return Ok(Vec::new()),
        Value::Array(list) => list,
        other => return Err(format!("annotations is not an array: {other}")),
    };
    list.iter()
        .map(|a| {
            ensure(a["type"] == "url_citation", || {
                format!("an annotation of another type than url_citation: {a}")
            })?;
            ensure(a["url_citation"].is_object(), || {
                format!("a url_citation annotation without its url_citation object: {a}")
            })?;
            cited(&a["url_citation"], content)
        })
        .collect()
}

/// The citations of a stream's chunks, checked (see the module doc).
pub fn streamed_citations(chunks: &[Value]) -> Result<Vec<Cited>, String> {
    let mut content = String::new();
    let mut found: Option<Vec<Cited>> = None;
    for c in chunks {
        let delta = &c["choices"][0]["delta"];
        if let Some(t) = delta["content"].as_str() {
            content.push_str(t);
        }
        if let Some(a) = delta.get("annotations").filter(|a| !a.is_null()) {
            ensure(found.is_none(), || {
                format!("annotations in a second chunk (the SDK cannot merge them): {c}")
            })?;
            found = Some(citations(a, &content)?);
        }
    }
    Ok(found.unwrap_or_default())
}

/// The tool calls of a stream's chunks. A call is `choices[0].delta.tool_calls[]` deltas
/// sharing an `index`: indexes appear in order from 0; a call's first delta carries `id`,
/// `type: "function"` and `function.name`, its later deltas only `function.arguments`
/// fragments, which end once the next call starts and concatenate to a JSON object.
fn tool_calls(chunks: &[Value]) -> Result<Vec<CheckedCall>, String> {
    let mut calls: Vec<(CheckedCall, String)> = Vec::new();
    for c in chunks {
        for call in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"]
                .as_u64()
                .ok_or_else(|| format!("a tool call delta without index: {c}"))?
                as usize;
            let function = &call["function"];
            if index == calls.len() {
                ensure(call["id"].as_str().is_some_and(|id| !id.is_empty()), || {
                    format!("tool call {index}: its first chunk must carry an id: {c}")
                })?;
                ensure(call["type"] == "function", || {
                    format!("tool call {index}: its first chunk must carry type \"function\": {c}")
                })?;
                let name = function["name"].as_str().unwrap_or_default();
                ensure(!name.is_empty(), || {
                    format!("tool call {index} has no name in its first chunk: {c}")
                })?;
                calls.push((
                    CheckedCall {
                        id: call["id"].as_str().unwrap_or_default().to_owned(),
                        name: name.to_owned(),
                        arguments: Value::Null,
                    },
                    String::new(),
                ));
            } else {
                ensure(index < calls.len(), || {
                    format!(
                        "tool call index {index} skips ahead (expected {}, indexes count from 0): {c}",
                        calls.len()
                    )
                })?;
                ensure(index + 1 == calls.len(), || {
                    format!(
                        "tool call {index} continues after call {} started (a call split apart): {c}",
                        calls.len() - 1
                    )
                })?;
                ensure(call.get("id").is_none(), || {
                    format!("id only in a tool call's first chunk: {c}")
                })?;
                ensure(function.get("name").is_none(), || {
                    format!(
                        "function.name only in a tool call's first chunk (clients concatenate it): {c}"
                    )
                })?;
            }
            match &function["arguments"] {
                Value::Null => {}
                Value::String(fragment) => calls[index].1.push_str(fragment),
                other => {
                    return Err(format!(
                        "tool call {index}: function.arguments is not a string: {other}"
                    ));
                }
            }
        }
    }
    let calls = calls
        .into_iter()
        .enumerate()
        .map(|(i, (mut call, text))| {
            call.arguments = call_arguments(&format!("tool call {i} ({})", call.name), &text)?;
            Ok(call)
        })
        .collect::<Result<Vec<_>, String>>()?;
    check_calls(&calls)?;
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(delta: Value, finish: Option<&str>) -> String {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
               "model": "m", "choices": [{"index": 0, "delta": delta, "logprobs": null,
               "finish_reason": finish}], "usage": null})
        .to_string()
    }

    fn usage() -> String {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
               "model": "m", "choices": [], "usage": {"prompt_tokens": 1,
               "completion_tokens": 2, "total_tokens": 3}})
        .to_string()
    }

    fn body(payloads: &[String]) -> Vec<u8> {
        payloads
            .iter()
            .map(|p| format!("data: {p}\n\n"))
            .collect::<String>()
            .into_bytes()
    }

    fn valid() -> Vec<String> {
        vec![
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"reasoning_content": "hm"}), None),
            chunk(
                json!({"content": "Hi ![image](http://gw/media/x.png)"}),
                None,
            ),
            chunk(json!({}), Some("stop")),
            usage(),
            "[DONE]".into(),
        ]
    }

    #[test]
    fn a_valid_stream_passes() {
        let mut raw = b": keep-alive\n\n".to_vec();
        raw.extend(body(&valid()));
        let s = check(&raw, true).unwrap();
        assert_eq!(s.text, "Hi ![image](http://gw/media/x.png)");
        assert_eq!(s.thinking, "hm");
        assert_eq!(s.media, vec!["http://gw/media/x.png"]);
        assert_eq!(s.keepalives, 1);
        assert!(s.error.is_none());
    }

    #[test]
    fn a_stream_ending_in_an_error_chunk_passes_and_reports_it() {
        let p = vec![
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "one"}), None),
            json!({"error": {"message": "cut", "type": "server_error"}}).to_string(),
            "[DONE]".into(),
        ];
        // usage: null keys are present although include_usage is false: a violation.
        let e = check(&body(&p), false).unwrap_err();
        assert!(e.contains("usage"), "{e}");
        let s = check(&body(&p), true).unwrap();
        assert_eq!(s.text, "one");
        assert_eq!(s.stop_reason, None);
        assert_eq!(s.error.unwrap()["message"], "cut");
    }

    #[test]
    fn broken_streams_fail() {
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut no_done = valid();
        no_done.pop();
        cases.push(("no [DONE]", body(&no_done)));
        let mut no_role = valid();
        no_role[0] = chunk(json!({"content": ""}), None);
        cases.push(("no role first", body(&no_role)));
        let mut finish_with_content = valid();
        finish_with_content[3] = chunk(json!({"content": "x"}), Some("stop"));
        cases.push(("finish not alone", body(&finish_with_content)));
        let mut message = valid();
        message[2] = message[2].replace("\"delta\"", "\"message\"");
        cases.push(("message instead of delta", body(&message)));
        let mut no_usage = valid();
        no_usage.remove(4);
        cases.push(("usage chunk missing", body(&no_usage)));
        let mut bad_json = valid();
        bad_json[1] = "{not json".into();
        cases.push(("not JSON", body(&bad_json)));
        let mut two_ids = valid();
        two_ids[2] = two_ids[2].replace("chatcmpl-1", "chatcmpl-2");
        cases.push(("two ids", body(&two_ids)));
        let mut tool_no_index = valid();
        tool_no_index[2] = chunk(
            json!({"tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
            None,
        );
        cases.push(("tool call without index", body(&tool_no_index)));
        let mut error_not_last = valid();
        error_not_last.insert(
            2,
            json!({"error": {"message": "x", "type": "server_error"}}).to_string(),
        );
        cases.push(("error chunk not last", body(&error_not_last)));
        let mut cut = body(&valid());
        cut.truncate(cut.len() - 1);
        cases.push(("cut mid-frame", cut));
        let mut event_line = b"event: chunk\n".to_vec();
        event_line.extend(body(&valid()));
        cases.push(("event: line", event_line));
        for (name, raw) in cases {
            assert!(check(&raw, true).is_err(), "{name} must fail");
        }
    }

    fn annotation(start: u64, end: u64) -> Value {
        json!({"type": "url_citation", "url_citation": {"start_index": start, "end_index": end,
            "url": "https://a.example", "title": "A"}})
    }

    /// "é ☕ 𝄞 coffee" streamed in two pieces, then an annotation of "coffee".
    fn valid_cited() -> Vec<String> {
        vec![
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "é ☕ 𝄞 "}), None),
            chunk(json!({"content": "coffee"}), None),
            chunk(json!({"annotations": [annotation(6, 12)]}), None),
            chunk(json!({}), Some("stop")),
            usage(),
            "[DONE]".into(),
        ]
    }

    #[test]
    fn citations_are_checked_in_code_points() {
        let s = check(&body(&valid_cited()), true).unwrap();
        let chunks = &s.events;
        let c = streamed_citations(chunks).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].text.as_str(), c[0].url.as_str()),
            ("coffee", "https://a.example")
        );
        let mut broken: Vec<(&str, &str, Vec<String>)> = Vec::new();
        let mut p = valid_cited();
        p[3] = chunk(json!({"annotations": [annotation(6, 13)]}), None);
        broken.push(("past the text", "past the 12 code points", p));
        let mut p = valid_cited();
        p[3] = chunk(json!({"annotations": [annotation(8, 6)]}), None);
        broken.push(("start after end", "is after its end_index", p));
        let mut p = valid_cited();
        p.swap(2, 3);
        broken.push(("before its text", "(out of range, or before its text)", p));
        // Counted in UTF-8 bytes or UTF-16 units the range is off the code points.
        let mut p = valid_cited();
        p[3] = chunk(json!({"annotations": [annotation(12, 18)]}), None);
        broken.push(("UTF-8 byte offsets", "past the 12 code points", p));
        let mut p = valid_cited();
        p.insert(3, chunk(json!({"annotations": [annotation(0, 1)]}), None));
        broken.push(("two annotation chunks", "a second chunk", p));
        let mut p = valid_cited();
        p[3] = chunk(
            json!({"annotations": [{"type": "url_citation", "url_citation":
            {"start_index": 6, "end_index": 12, "url": "https://a.example"}}]}),
            None,
        );
        broken.push(("no title", "without a title", p));
        let mut p = valid_cited();
        p[3] = chunk(
            json!({"annotations": [{"type": "file_citation", "url_citation":
            {"start_index": 6, "end_index": 12, "url": "u", "title": "t"}}]}),
            None,
        );
        broken.push(("another type", "another type", p));
        let mut p = valid_cited();
        p[3] = chunk(json!({"annotations": [annotation(6, 12)]}), Some("stop"));
        p.remove(4);
        broken.push((
            "with the finish chunk",
            "finish_reason in a chunk of its own",
            p,
        ));
        for (name, expected, p) in broken {
            match check(&body(&p), true) {
                Ok(_) => panic!("{name} was accepted"),
                Err(e) => assert!(
                    e.contains(expected),
                    "{name}: rejected for another reason: {e}"
                ),
            }
        }
        // A message's annotations, read the same way.
        let c = citations(&json!([annotation(6, 12)]), "é ☕ 𝄞 coffee").unwrap();
        assert_eq!(c[0].text, "coffee");
        assert!(citations(&json!([annotation(6, 13)]), "é ☕ 𝄞 coffee").is_err());
    }

    fn call(index: u64, id: Option<&str>, name: Option<&str>, args: &str) -> Value {
        let mut c = json!({"index": index, "function": {"arguments": args}});
        if let Some(id) = id {
            c["id"] = json!(id);
            c["type"] = json!("function");
        }
        if let Some(name) = name {
            c["function"]["name"] = json!(name);
        }
        c
    }

    fn calls(tool_calls: Value) -> String {
        chunk(json!({"tool_calls": tool_calls}), None)
    }

    /// Two calls: the first streamed in fragments, the second whole.
    fn valid_tools() -> Vec<String> {
        vec![
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "Let me look."}), None),
            calls(json!([call(0, Some("call_a"), Some("get_weather"), "")])),
            calls(json!([call(0, None, None, "{\"city\":")])),
            calls(json!([call(0, None, None, "\"Paris\"}")])),
            calls(json!([call(1, Some("call_b"), Some("get_time"), "{}")])),
            chunk(json!({}), Some("tool_calls")),
            usage(),
            "[DONE]".into(),
        ]
    }

    #[test]
    fn a_valid_tool_call_stream_passes_and_reports_its_calls() {
        let s = check(&body(&valid_tools()), true).unwrap();
        assert_eq!(s.text, "Let me look.");
        assert_eq!(s.stop_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            s.tool_calls,
            crate::check::weather_then_time("call_a", "call_b")
        );
        // Several calls in one delta are fine too.
        let mut together = valid_tools();
        together.splice(
            2..6,
            [calls(json!([
                call(0, Some("call_a"), Some("f"), "{}"),
                call(1, Some("call_b"), Some("g"), "{\"x\":[1]}")
            ]))],
        );
        let s = check(&body(&together), true).unwrap();
        assert_eq!(s.tool_calls.len(), 2);
        assert_eq!(s.tool_calls[1].arguments, json!({"x": [1]}));
        // Without calls the stop reason is reported as sent.
        let s = check(&body(&valid()), true).unwrap();
        assert_eq!(s.stop_reason.as_deref(), Some("stop"));
        assert!(s.tool_calls.is_empty());
    }

    #[test]
    fn broken_tool_call_streams_fail() {
        let mut cases: Vec<(&str, &str, Vec<String>)> = Vec::new();
        let mut p = valid_tools();
        p[6] = chunk(json!({}), Some("stop"));
        cases.push(("stop with tool calls", "must be \"tool_calls\"", p));
        let mut p = valid();
        p[3] = chunk(json!({}), Some("tool_calls"));
        cases.push(("tool_calls without calls", "made no tool call", p));
        let mut p = valid_tools();
        p[6] = chunk(json!({}), None);
        cases.push(("no finish_reason", "has no finish_reason", p));
        let mut p = valid_tools();
        p[5] = calls(json!([call(1, Some("call_a"), Some("get_time"), "{}")]));
        cases.push(("duplicate ids", "duplicate tool call id \"call_a\"", p));
        let mut p = valid_tools();
        p[2] = calls(json!([call(0, Some("call_a"), None, "")]));
        cases.push(("no name", "has no name", p));
        let mut p = valid_tools();
        p[2] = calls(json!([call(0, Some("call_a"), Some(""), "")]));
        cases.push(("empty name", "has no name", p));
        let mut p = valid_tools();
        p[4] = calls(json!([call(0, None, None, "\"Paris\"")]));
        cases.push(("arguments not JSON", "are not JSON", p));
        let mut p = valid_tools();
        p[3] = calls(json!([call(0, None, None, "[\"Paris\"")]));
        p[4] = calls(json!([call(0, None, None, "]")]));
        cases.push(("arguments not an object", "not a JSON object", p));
        let mut p = valid_tools();
        p[5] = calls(json!([call(1, Some("call_b"), Some("get_time"), "")]));
        cases.push(("empty arguments", "are not JSON", p));
        // The first call's JSON is finished by a fragment after the second call started.
        let mut p = valid_tools();
        let rest = p.remove(4);
        p.insert(5, rest);
        cases.push(("a call split apart", "continues after call 1 started", p));
        let mut p = valid_tools();
        p[3] = calls(json!([call(0, Some("call_a"), None, "{\"city\":")]));
        cases.push(("id repeated", "id only in a tool call's first chunk", p));
        let mut p = valid_tools();
        p[3] = calls(json!([call(0, None, Some("get_weather"), "{\"city\":")]));
        cases.push(("name repeated", "function.name only in", p));
        let mut p = valid_tools();
        p[5] = calls(json!([call(2, Some("call_b"), Some("get_time"), "{}")]));
        cases.push(("index gap", "skips ahead", p));
        let mut p = valid_tools();
        p[2] = calls(json!([call(0, None, Some("get_weather"), "")]));
        cases.push(("first chunk without id", "must carry an id", p));
        let mut p = valid_tools();
        p[2] = calls(json!([{"index": 0, "id": "call_a", "type": "tool",
            "function": {"name": "get_weather", "arguments": ""}}]));
        // (the SDK's schema already refuses it)
        cases.push(("type not function", "does not match the SDK type", p));
        for (name, expected, p) in cases {
            match check(&body(&p), true) {
                Ok(_) => panic!("{name} was accepted"),
                Err(e) => assert!(
                    e.contains(expected),
                    "{name}: rejected for another reason: {e}"
                ),
            }
        }
    }
}
