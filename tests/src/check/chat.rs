//! OpenAI Chat Completions stream invariants (client-compat.md): `text/event-stream` frames of
//! `data: <json>`, first delta with the role, `delta` never `message`, `finish_reason` in a
//! chunk of its own, the usage chunk when asked (and `usage: null` before it), one id, an
//! error chunk only last, `data: [DONE]` at the end, every chunk valid for the SDK's type.

use serde_json::{Value, json};

use super::{Block, StreamSummary, ensure, json, sse_blocks};
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
    let chunks = check_payloads(&payloads, include_usage)?;
    let mut summary = StreamSummary {
        keepalives,
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
    let mut tool_indexes: std::collections::HashMap<u64, bool> = Default::default();
    for c in &chunks {
        for call in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"]
                .as_u64()
                .ok_or_else(|| format!("a tool call delta without index: {c}"))?;
            let first = !tool_indexes.contains_key(&index);
            tool_indexes.insert(index, true);
            ensure(first == call.get("id").is_some(), || {
                format!("id only in a tool call's first chunk: {c}")
            })?;
        }
    }
    if errored {
        return Ok(chunks);
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
    ensure(finish["choices"][0]["finish_reason"].is_string(), || {
        format!("finish chunk: {finish}")
    })?;
    ensure(finish["choices"][0]["delta"] == json!({}), || {
        format!("finish_reason in a chunk of its own: {finish}")
    })?;
    for c in &chunks[..body_end - 1] {
        ensure(c["choices"][0]["finish_reason"].is_null(), || {
            format!("finish_reason before the end: {c}")
        })?;
    }
    Ok(chunks)
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
}
