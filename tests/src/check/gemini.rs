//! Gemini `streamGenerateContent` invariants (client-compat.md), for both framings:
//!
//! - SSE (`?alt=sse`): only `data: <json>` lines — with the space, which google-genai's parser
//!   matches literally — each followed by one blank line. No comments, no `event:` lines and no
//!   stray blank lines: google-genai json-parses every other line and the JavaScript parsers
//!   match `^data: ` at the start of their buffer.
//! - JSON array (no `alt=sse`): one JSON array of chunks, whitespace allowed between elements.
//!
//! Every element is a `GenerateContentResponse`: `candidates[]` each with `content.parts[]`
//! (known part kinds, `thought` a boolean, `inlineData` valid base64), `finishReason` upper
//! case and only on the last chunk (which must have it and integer `usageMetadata` whose total
//! adds up), one `responseId` — or a last element whose first key is `error`
//! (`{"error":{"code","message","status"}}`) with nothing after it.
//!
//! `candidates[].groundingMetadata` (search grounding, `check_grounding`): web chunks with a
//! `uri`, supports whose `groundingChunkIndices` name existing chunks and whose segment is a
//! range of UTF-8 byte offsets into the whole answer text sent so far (on character
//! boundaries, `start ≤ end`, `text` the slice they delimit). A chunk carrying it is not a
//! keep-alive.
//!
//! A `functionCall` part arrives whole, in one chunk: `{name, args, id?}` with a non-empty
//! name, `args` a JSON object and ids (when sent) unique; an answer with calls finishes with
//! `STOP`. The summary's calls and `stop_reason` are the first candidate's.

use base64::Engine as _;
use serde_json::Value;

use super::{CheckedCall, StreamSummary, check_calls, ensure};

const PART_KINDS: [&str; 7] = [
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
];

/// Checks a `streamGenerateContent?alt=sse` body.
pub fn check_sse(raw: &[u8]) -> Result<StreamSummary, String> {
    let text = std::str::from_utf8(raw).map_err(|e| format!("SSE body is not UTF-8: {e}"))?;
    ensure(!text.is_empty(), || "empty stream".into())?;
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    // `split` leaves one empty item after the final newline.
    ensure(text.ends_with('\n'), || {
        "the stream does not end with a newline (cut off?)".into()
    })?;
    let lines = &lines[..lines.len() - 1];
    let mut payloads: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let Some(data) = line.strip_prefix("data:") else {
            return Err(if line.is_empty() {
                format!(
                    "a stray blank line at line {i} (only one blank line may follow each data line)"
                )
            } else {
                format!("line {i} is not a `data: ` line: {line:?}")
            });
        };
        let payload = data.strip_prefix(' ').ok_or_else(|| {
            format!("line {i}: `data:` must be followed by a space (google-genai matches `data: `)")
        })?;
        ensure(lines.get(i + 1) == Some(&""), || {
            format!("line {i}: a data line must be followed by exactly one blank line")
        })?;
        payloads.push(payload);
        i += 2;
    }
    check_elements(&payloads, 0)
}

/// Checks a `streamGenerateContent` body without `alt=sse` (one JSON array).
pub fn check_array(raw: &[u8]) -> Result<StreamSummary, String> {
    let text = std::str::from_utf8(raw).map_err(|e| format!("array body is not UTF-8: {e}"))?;
    let (elements, gaps_newlines) = split_array(text)?;
    let keepalives = gaps_newlines.saturating_sub(elements.len().saturating_sub(1));
    check_elements(&elements, keepalives)
}

/// Splits a JSON array into the raw text of its elements (and counts the newlines between
/// them). Fails on anything but one complete array of objects.
fn split_array(text: &str) -> Result<(Vec<&str>, usize), String> {
    let trimmed = text.trim_start();
    let offset = text.len() - trimmed.len();
    ensure(trimmed.starts_with('['), || {
        format!(
            "the body is not a JSON array: {:?}",
            &text[..text.len().min(40)]
        )
    })?;
    let bytes = text.as_bytes();
    let mut elements = Vec::new();
    let mut newlines = 0;
    let mut i = offset + 1;
    let mut expect_element = true;
    let mut closed = false;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\r' => i += 1,
            b'\n' => {
                newlines += 1;
                i += 1;
            }
            b',' if !expect_element => {
                expect_element = true;
                i += 1;
            }
            b']' if !expect_element || elements.is_empty() => {
                closed = true;
                i += 1;
                break;
            }
            b'{' if expect_element => {
                let end = object_end(bytes, i)
                    .ok_or_else(|| "the array ends inside an element (truncated)".to_owned())?;
                elements.push(&text[i..end]);
                expect_element = false;
                i = end;
            }
            other => {
                return Err(format!(
                    "unexpected {:?} at byte {i} of the array",
                    other as char
                ));
            }
        }
    }
    ensure(closed, || "the array is not closed (truncated)".into())?;
    ensure(text[i..].trim().is_empty(), || {
        format!("content after the array: {:?}", &text[i..])
    })?;
    Ok((elements, newlines))
}

/// The end (exclusive) of the JSON object starting at `start`.
fn object_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The first key of a JSON object's text.
fn first_key(raw: &str) -> Option<String> {
    let rest = raw.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let mut key = String::new();
    let mut escaped = false;
    for c in rest.chars() {
        if escaped {
            key.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Some(key);
        } else {
            key.push(c);
        }
    }
    None
}

fn is_count(v: &Value) -> bool {
    v.as_u64().is_some()
}

/// The rules over the elements of one stream, whatever the framing.
fn check_elements(raw: &[&str], keepalives: usize) -> Result<StreamSummary, String> {
    ensure(!raw.is_empty(), || "no chunks".into())?;
    let mut summary = StreamSummary {
        keepalives,
        ..StreamSummary::default()
    };
    let mut response_id: Option<String> = None;
    let last = raw.len() - 1;
    for (i, text) in raw.iter().enumerate() {
        let chunk: Value = serde_json::from_str(text)
            .map_err(|e| format!("chunk {i} is not JSON ({e}): {text}"))?;
        ensure(chunk.is_object(), || {
            format!("chunk {i} is not an object: {chunk}")
        })?;
        if chunk.get("error").is_some() {
            ensure(first_key(text).as_deref() == Some("error"), || {
                format!("chunk {i}: an error chunk's first key must be `error`: {text}")
            })?;
            ensure(i == last, || {
                format!("chunk {i} is an error, and chunks follow it")
            })?;
            check_error(&chunk["error"]).map_err(|e| format!("chunk {i}: {e}"))?;
            summary.error = Some(chunk["error"].clone());
            summary.events.push(chunk);
            continue;
        }
        let finished =
            check_chunk(&chunk, &mut summary).map_err(|e| format!("chunk {i}: {e}: {chunk}"))?;
        // Only the last non-error chunk of a complete answer carries finishReason.
        if finished {
            ensure(i == last, || {
                format!("chunk {i} has finishReason but is not the last chunk")
            })?;
        } else if i == last {
            return Err(format!(
                "the last chunk has no finishReason (an answer must end with one, or with an error): {chunk}"
            ));
        }
        if let Some(id) = chunk.get("responseId") {
            let id = id
                .as_str()
                .ok_or_else(|| format!("chunk {i}: responseId is not a string"))?;
            match &response_id {
                None => response_id = Some(id.to_owned()),
                Some(first) => ensure(first == id, || {
                    format!("chunk {i}: responseId changed from {first} to {id}")
                })?,
            }
        }
        summary.events.push(chunk);
    }
    check_calls(&summary.tool_calls)?;
    // Gemini reports STOP for an answer with function calls.
    if let Some(reason) = &summary.stop_reason
        && !summary.tool_calls.is_empty()
    {
        ensure(reason == "STOP", || {
            format!(
                "finishReason must be STOP after {} functionCall part(s), got {reason:?}",
                summary.tool_calls.len()
            )
        })?;
    }
    Ok(summary)
}

fn check_error(error: &Value) -> Result<(), String> {
    ensure(is_count(&error["code"]), || {
        format!("error.code must be an integer: {error}")
    })?;
    ensure(error["message"].is_string(), || {
        format!("error.message must be a string: {error}")
    })?;
    let status = error["status"].as_str().unwrap_or_default();
    ensure(
        !status.is_empty() && status.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
        || format!("error.status must be an upper-case Google status: {error}"),
    )
}

/// Checks one `GenerateContentResponse`; returns whether it carries a finishReason.
fn check_chunk(chunk: &Value, summary: &mut StreamSummary) -> Result<bool, String> {
    let candidates = chunk["candidates"]
        .as_array()
        .ok_or("candidates[] is missing")?;
    ensure(!candidates.is_empty(), || "candidates[] is empty".into())?;
    let mut finished = false;
    let mut only_empty_text = true;
    for (c, candidate) in candidates.iter().enumerate() {
        if let Some(index) = candidate.get("index") {
            ensure(is_count(index), || {
                format!("candidates[{c}].index is not an integer")
            })?;
        }
        let content = &candidate["content"];
        ensure(content.is_object(), || {
            format!("candidates[{c}].content is missing")
        })?;
        if let Some(role) = content.get("role") {
            ensure(role == "model", || {
                format!("candidates[{c}].content.role must be \"model\"")
            })?;
        }
        let parts = content["parts"]
            .as_array()
            .ok_or_else(|| format!("candidates[{c}].content.parts[] is missing"))?;
        for (p, part) in parts.iter().enumerate() {
            let at = format!("candidates[{c}].content.parts[{p}]");
            let kinds: Vec<&&str> = PART_KINDS
                .iter()
                .filter(|k| part.get(**k).is_some())
                .collect();
            ensure(kinds.len() == 1, || {
                format!("{at} must have exactly one data field, has {kinds:?}")
            })?;
            if let Some(thought) = part.get("thought") {
                ensure(thought.is_boolean(), || {
                    format!("{at}.thought must be a boolean")
                })?;
            }
            let is_thought = part["thought"] == true;
            if let Some(text) = part.get("text") {
                let text = text
                    .as_str()
                    .ok_or_else(|| format!("{at}.text is not a string"))?;
                if !text.is_empty() {
                    only_empty_text = false;
                }
                if c == 0 {
                    if is_thought {
                        summary.thinking.push_str(text);
                    } else {
                        summary.text.push_str(text);
                    }
                }
                continue;
            }
            only_empty_text = false;
            if let Some(blob) = part.get("inlineData") {
                let mime = blob["mimeType"]
                    .as_str()
                    .filter(|m| m.contains('/'))
                    .ok_or_else(|| format!("{at}.inlineData.mimeType is missing"))?;
                let data = blob["data"]
                    .as_str()
                    .ok_or_else(|| format!("{at}.inlineData.data is missing"))?;
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| format!("{at}.inlineData.data is not base64: {e}"))?;
                if c == 0 {
                    summary.media.push(format!("data:{mime};base64,{data}"));
                }
            } else if let Some(file) = part.get("fileData") {
                let uri = file["fileUri"]
                    .as_str()
                    .ok_or_else(|| format!("{at}.fileData.fileUri is missing"))?;
                if c == 0 {
                    summary.media.push(uri.to_owned());
                }
            } else if let Some(call) = part.get("functionCall") {
                let fields = call
                    .as_object()
                    .ok_or_else(|| format!("{at}.functionCall is not an object"))?;
                // Whole calls only: no streamed-arguments fields (`partialArgs`, `willContinue`).
                let unknown: Vec<&String> = fields
                    .keys()
                    .filter(|k| !["id", "name", "args"].contains(&k.as_str()))
                    .collect();
                ensure(unknown.is_empty(), || {
                    format!(
                        "{at}.functionCall has fields other than id, name and args (a call arrives whole): {unknown:?}"
                    )
                })?;
                let name = call["name"].as_str().unwrap_or_default();
                ensure(!name.is_empty(), || {
                    format!("{at}.functionCall has no name")
                })?;
                let args = call
                    .get("args")
                    .ok_or_else(|| format!("{at}.functionCall.args is missing"))?;
                ensure(args.is_object(), || {
                    format!("{at}.functionCall.args must be a JSON object, got {args}")
                })?;
                let id = match call.get("id") {
                    None => "",
                    Some(id) => id.as_str().filter(|id| !id.is_empty()).ok_or_else(|| {
                        format!("{at}.functionCall.id must be a non-empty string")
                    })?,
                };
                if c == 0 {
                    summary.tool_calls.push(CheckedCall {
                        id: id.to_owned(),
                        name: name.to_owned(),
                        arguments: args.clone(),
                    });
                }
            }
        }
        if let Some(grounding) = candidate.get("groundingMetadata") {
            // Candidate 0's text is the answer's; the ranges of others are checked for shape.
            let text = (c == 0).then_some(summary.text.as_str());
            check_grounding(grounding, text)
                .map_err(|e| format!("candidates[{c}].groundingMetadata: {e}"))?;
            only_empty_text = false;
        }
        if let Some(reason) = candidate.get("finishReason") {
            let reason = reason
                .as_str()
                .ok_or_else(|| format!("candidates[{c}].finishReason is not a string"))?;
            ensure(
                !reason.is_empty()
                    && reason
                        .chars()
                        .all(|ch| ch.is_ascii_uppercase() || ch == '_'),
                || format!("candidates[{c}].finishReason must be upper case, got {reason:?}"),
            )?;
            if c == 0 {
                summary.stop_reason = Some(reason.to_owned());
            }
            finished = true;
        }
    }
    if let Some(usage) = chunk.get("usageMetadata") {
        ensure(usage.is_object(), || {
            "usageMetadata is not an object".into()
        })?;
        for (key, value) in usage.as_object().into_iter().flatten() {
            if key.ends_with("Count") {
                ensure(is_count(value), || {
                    format!("usageMetadata.{key} must be a non-negative integer, got {value}")
                })?;
            }
        }
    }
    if finished {
        let usage = &chunk["usageMetadata"];
        for key in [
            "promptTokenCount",
            "candidatesTokenCount",
            "totalTokenCount",
        ] {
            ensure(is_count(&usage[key]), || {
                format!("the finishing chunk needs usageMetadata.{key} as an integer")
            })?;
        }
        let sum = usage["promptTokenCount"].as_u64().unwrap_or(0)
            + usage["candidatesTokenCount"].as_u64().unwrap_or(0)
            + usage["thoughtsTokenCount"].as_u64().unwrap_or(0);
        ensure(usage["totalTokenCount"].as_u64() == Some(sum), || {
            format!("usageMetadata.totalTokenCount is not prompt + candidates + thoughts ({sum})")
        })?;
    } else if only_empty_text {
        summary.keepalives += 1;
    }
    Ok(finished)
}

/// Checks a `groundingMetadata` against `text`, the answer's visible text so far (every
/// non-thought text part of the stream, concatenated). Segment indices are UTF-8 byte offsets
/// into that whole text (`startIndex` may be left out for 0), on character boundaries, `end`
/// exclusive and not past the text sent so far; `text`, when sent, is the slice they delimit.
/// Each support names existing `groundingChunks`; a web chunk has a `uri`.
pub fn check_grounding(grounding: &Value, text: Option<&str>) -> Result<(), String> {
    ensure(grounding.is_object(), || "not an object".into())?;
    let chunks = match grounding.get("groundingChunks") {
        None => &Vec::new(),
        Some(chunks) => chunks.as_array().ok_or("groundingChunks is not an array")?,
    };
    for (i, chunk) in chunks.iter().enumerate() {
        ensure(chunk.is_object(), || {
            format!("groundingChunks[{i}] is not an object")
        })?;
        if let Some(web) = chunk.get("web") {
            ensure(web["uri"].as_str().is_some_and(|u| !u.is_empty()), || {
                format!("groundingChunks[{i}].web.uri must be a non-empty string")
            })?;
            for key in ["title", "domain"] {
                ensure(web.get(key).is_none_or(Value::is_string), || {
                    format!("groundingChunks[{i}].web.{key} must be a string")
                })?;
            }
        }
    }
    if let Some(queries) = grounding.get("webSearchQueries") {
        ensure(
            queries
                .as_array()
                .is_some_and(|q| q.iter().all(Value::is_string)),
            || "webSearchQueries must be an array of strings".into(),
        )?;
    }
    let supports = match grounding.get("groundingSupports") {
        None => return Ok(()),
        Some(supports) => supports
            .as_array()
            .ok_or("groundingSupports is not an array")?,
    };
    for (i, support) in supports.iter().enumerate() {
        let at = format!("groundingSupports[{i}]");
        let segment = &support["segment"];
        ensure(segment.is_object(), || format!("{at}.segment is missing"))?;
        let index = |key: &str| -> Result<Option<usize>, String> {
            match segment.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| {
                        format!("{at}.segment.{key} must be a non-negative integer, got {v}")
                    }),
            }
        };
        let start = index("startIndex")?.unwrap_or(0);
        let end = index("endIndex")?.ok_or_else(|| format!("{at}.segment.endIndex is missing"))?;
        ensure(start <= end, || {
            format!("{at}.segment: startIndex {start} > endIndex {end}")
        })?;
        // The indices cover the whole answer text: no per-part offsets.
        ensure(index("partIndex")?.unwrap_or(0) == 0, || {
            format!("{at}.segment.partIndex must be absent or 0 (indices are over the whole text)")
        })?;
        let cited = segment.get("text");
        ensure(cited.is_none_or(Value::is_string), || {
            format!("{at}.segment.text must be a string")
        })?;
        if let Some(text) = text {
            ensure(end <= text.len(), || {
                format!(
                    "{at}.segment.endIndex {end} is past the {} bytes of answer text sent so far",
                    text.len()
                )
            })?;
            let slice = text.get(start..end).ok_or_else(|| {
                format!(
                    "{at}.segment {start}..{end} does not fall on UTF-8 character boundaries of the answer text"
                )
            })?;
            if let Some(cited) = cited.and_then(Value::as_str) {
                ensure(slice == cited, || {
                    format!(
                        "{at}.segment.text {cited:?} is not the answer's bytes {start}..{end} ({slice:?})"
                    )
                })?;
            }
        }
        let indices = support["groundingChunkIndices"]
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("{at}.groundingChunkIndices must be a non-empty array"))?;
        for v in indices {
            ensure(
                v.as_u64()
                    .is_some_and(|n| usize::try_from(n).is_ok_and(|n| n < chunks.len())),
                || {
                    format!(
                        "{at}.groundingChunkIndices: {v} is not an index of the {} groundingChunks",
                        chunks.len()
                    )
                },
            )?;
        }
        if let Some(scores) = support.get("confidenceScores") {
            ensure(
                scores.as_array().is_some_and(|s| {
                    s.len() == indices.len()
                        && s.iter()
                            .all(|x| x.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)))
                }),
                || format!("{at}.confidenceScores must be one score in [0, 1] per chunk index"),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]},"index":0}],"modelVersion":"m","responseId":"r"}"#;
    const THOUGHT: &str = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hmm","thought":true}]},"index":0}],"modelVersion":"m","responseId":"r"}"#;
    const IMAGE: &str = r#"{"candidates":[{"content":{"role":"model","parts":[{"inlineData":{"mimeType":"image/png","data":"UE5H"}}]},"index":0}],"modelVersion":"m","responseId":"r"}"#;
    const EMPTY: &str = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":""}]},"index":0}],"modelVersion":"m","responseId":"r"}"#;
    const FINISH: &str = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"lo"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":6,"thoughtsTokenCount":1},"modelVersion":"m","responseId":"r"}"#;
    const ERROR: &str =
        r#"{"error":{"code":502,"message":"the upstream failed","status":"UNAVAILABLE"}}"#;

    fn sse(chunks: &[&str]) -> String {
        chunks.iter().map(|c| format!("data: {c}\n\n")).collect()
    }

    fn array(chunks: &[&str]) -> String {
        format!("[{}]", chunks.join(",\n"))
    }

    #[test]
    fn valid_streams_pass() {
        let chunks = [EMPTY, THOUGHT, TEXT, IMAGE, FINISH];
        let s = check_sse(sse(&chunks).as_bytes()).unwrap();
        assert_eq!(s.text, "Hello");
        assert_eq!(s.thinking, "hmm");
        assert_eq!(s.media, vec!["data:image/png;base64,UE5H".to_owned()]);
        assert_eq!(s.keepalives, 1);
        assert!(s.error.is_none());
        assert_eq!(s.events.len(), 5);
        let crlf = sse(&chunks).replace('\n', "\r\n");
        assert_eq!(check_sse(crlf.as_bytes()).unwrap().text, "Hello");

        let a = check_array(array(&chunks).as_bytes()).unwrap();
        assert_eq!(a.text, "Hello");
        let spaced = format!("\n[\n{TEXT}\n,\n\n{FINISH}\n]\n");
        assert_eq!(check_array(spaced.as_bytes()).unwrap().keepalives, 4);

        let failed = check_sse(sse(&[TEXT, ERROR]).as_bytes()).unwrap();
        assert_eq!(failed.error.unwrap()["status"], "UNAVAILABLE");
        assert_eq!(failed.text, "Hel");
        assert!(check_sse(sse(&[ERROR]).as_bytes()).is_ok());
        assert!(check_array(array(&[TEXT, ERROR]).as_bytes()).is_ok());
    }

    /// The stream is refused, for the expected reason (`because` is part of the message).
    fn sse_fails(body: &str, because: &str) {
        let e = check_sse(body.as_bytes()).expect_err(because);
        assert!(e.contains(because), "refused for another reason: {e}");
    }

    fn array_fails(body: &str, because: &str) {
        let e = check_array(body.as_bytes()).expect_err(because);
        assert!(e.contains(because), "refused for another reason: {e}");
    }

    #[test]
    fn broken_sse_streams_fail() {
        sse_fails(
            &sse(&[TEXT, FINISH]).replace("data: ", "data:"),
            "must be followed by a space",
        );
        sse_fails(
            &sse(&[TEXT, &FINISH.replace("STOP", "stop")]),
            "must be upper case",
        );
        sse_fails(
            &sse(&[FINISH, TEXT]),
            "has finishReason but is not the last chunk",
        );
        sse_fails(&sse(&[TEXT, TEXT]), "the last chunk has no finishReason");
        sse_fails(&sse(&[TEXT, ERROR, TEXT]), "chunks follow it");
        sse_fails(&sse(&[TEXT, ERROR, FINISH]), "chunks follow it");
        sse_fails(
            &sse(&[r#"{"modelVersion":"m"}"#, FINISH]),
            "candidates[] is missing",
        );
        sse_fails(
            &sse(&[&FINISH.replace("\"promptTokenCount\":3", "\"promptTokenCount\":\"3\"")]),
            "promptTokenCount must be a non-negative integer",
        );
        sse_fails(
            &sse(&[&FINISH.replace("\"totalTokenCount\":6", "\"totalTokenCount\":7")]),
            "is not prompt + candidates + thoughts",
        );
        sse_fails(
            &sse(&[&FINISH.replace(r#","usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":6,"thoughtsTokenCount":1}"#, "")]),
            "needs usageMetadata.promptTokenCount",
        );
        sse_fails(
            &format!(": keep-alive\n\n{}", sse(&[FINISH])),
            "is not a `data: ` line: \": keep-alive\"",
        );
        sse_fails(&format!("\n{}", sse(&[FINISH])), "a stray blank line");
        sse_fails(
            &format!("event: x\n{}", sse(&[FINISH])),
            "is not a `data: ` line: \"event: x\"",
        );
        sse_fails(
            sse(&[TEXT, FINISH]).trim_end(),
            "does not end with a newline",
        );
        sse_fails(&sse(&[TEXT, &FINISH[..40]]), "chunk 1 is not JSON");
        sse_fails(
            &sse(&[r#"{"message":"x","error":{"code":500,"message":"m","status":"INTERNAL"}}"#]),
            "first key must be `error`",
        );
        sse_fails(
            &sse(&[r#"{"error":{"code":500,"message":"m","status":"internal"}}"#]),
            "error.status must be an upper-case",
        );
        sse_fails(
            &sse(&[&TEXT.replace("\"r\"", "\"other\""), FINISH]),
            "responseId changed",
        );
        sse_fails(
            &sse(&[&THOUGHT.replace("true", "\"yes\""), FINISH]),
            "thought must be a boolean",
        );
        sse_fails(
            &sse(&[&IMAGE.replace("UE5H", "!!!"), FINISH]),
            "inlineData.data is not base64",
        );
        sse_fails(
            &sse(&[
                &TEXT.replace(r#""parts":[{"text":"Hel"}]"#, r#""parts":[{"foo":1}]"#),
                FINISH,
            ]),
            "must have exactly one data field",
        );
        sse_fails("", "empty stream");
    }

    #[test]
    fn broken_arrays_fail() {
        let whole = array(&[TEXT, FINISH]);
        array_fails(&whole[..whole.len() - 1], "the array is not closed");
        array_fails(&whole[..whole.len() / 2], "ends inside an element");
        array_fails(&format!("{whole}{TEXT}"), "content after the array");
        array_fails(
            &array(&[FINISH, TEXT]),
            "has finishReason but is not the last chunk",
        );
        array_fails(&array(&[TEXT, ERROR, TEXT]), "chunks follow it");
        array_fails(
            &array(&[&FINISH.replace("STOP", "Stop")]),
            "must be upper case",
        );
        array_fails(
            &array(&[TEXT, "{\"usageMetadata\":{}}"]),
            "candidates[] is missing",
        );
        array_fails(&format!("[{TEXT}{FINISH}]"), "unexpected '{'");
        array_fails(&format!("[{TEXT},]"), "unexpected ']'");
        array_fails(&sse(&[FINISH]), "is not a JSON array");
        array_fails("[]", "no chunks");
    }

    /// A chunk with the given functionCall parts (each with the gateway's thoughtSignature).
    fn calls(parts: &[serde_json::Value]) -> String {
        let parts: Vec<serde_json::Value> = parts
            .iter()
            .map(|c| serde_json::json!({"functionCall": c, "thoughtSignature": "sig"}))
            .collect();
        serde_json::json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
            "modelVersion": "m", "responseId": "r"})
        .to_string()
    }

    fn call_a() -> serde_json::Value {
        serde_json::json!({"id": "call_a", "name": "get_weather", "args": {"city": "Paris"}})
    }

    fn call_b() -> serde_json::Value {
        serde_json::json!({"name": "get_time", "args": {}})
    }

    fn finish_without_text() -> String {
        FINISH.replace(r#"{"text":"lo"}"#, r#"{"text":""}"#)
    }

    #[test]
    fn valid_tool_call_streams_pass_and_report_their_calls() {
        let first = calls(&[call_a()]);
        let second = calls(&[call_b()]);
        let finish = finish_without_text();
        let chunks = [TEXT, first.as_str(), second.as_str(), finish.as_str()];
        let want = crate::check::weather_then_time("call_a", "");
        let s = check_sse(sse(&chunks).as_bytes()).unwrap();
        assert_eq!(s.text, "Hel");
        assert_eq!(s.stop_reason.as_deref(), Some("STOP"));
        assert_eq!(s.tool_calls, want);
        let a = check_array(array(&chunks).as_bytes()).unwrap();
        assert_eq!(a.tool_calls, want);
        assert_eq!(a.stop_reason.as_deref(), Some("STOP"));
        // Two calls in one chunk, and calls in the finishing chunk itself.
        let both = calls(&[call_a(), call_b()]);
        let s = check_sse(sse(&[both.as_str(), FINISH]).as_bytes()).unwrap();
        assert_eq!(s.tool_calls, want);
        let last = FINISH.replace(
            r#"{"text":"lo"}"#,
            &serde_json::json!({"functionCall": call_a()}).to_string(),
        );
        let s = check_array(array(&[TEXT, &last]).as_bytes()).unwrap();
        assert_eq!(s.tool_calls, want[..1]);
        // Without calls: the reason as sent; after an error: none.
        let s = check_sse(sse(&[TEXT, &FINISH.replace("STOP", "MAX_TOKENS")]).as_bytes()).unwrap();
        assert_eq!(s.stop_reason.as_deref(), Some("MAX_TOKENS"));
        let s = check_sse(sse(&[first.as_str(), ERROR]).as_bytes()).unwrap();
        assert_eq!(s.stop_reason, None);
        assert_eq!(s.tool_calls.len(), 1);
    }

    #[test]
    fn broken_tool_call_streams_fail() {
        let finish = finish_without_text();
        let cases: Vec<(&str, &str, Vec<String>)> = vec![
            (
                "duplicate ids",
                "duplicate tool call id \"call_a\"",
                vec![calls(&[call_a()]), calls(&[call_a()]), finish.clone()],
            ),
            (
                "a call split across chunks",
                "functionCall has no name",
                vec![
                    calls(&[
                        serde_json::json!({"id": "call_a", "name": "get_weather", "args": {}}),
                    ]),
                    calls(&[serde_json::json!({"id": "call_a", "args": {"city": "Paris"}})]),
                    finish.clone(),
                ],
            ),
            (
                "streamed arguments",
                "a call arrives whole",
                vec![
                    calls(&[
                        serde_json::json!({"name": "get_weather", "partialArgs": [], "willContinue": true}),
                    ]),
                    finish.clone(),
                ],
            ),
            (
                "no name",
                "functionCall has no name",
                vec![calls(&[serde_json::json!({"args": {}})]), finish.clone()],
            ),
            (
                "empty name",
                "functionCall has no name",
                vec![
                    calls(&[serde_json::json!({"name": "", "args": {}})]),
                    finish.clone(),
                ],
            ),
            (
                "args not an object",
                "args must be a JSON object",
                vec![
                    calls(&[serde_json::json!({"name": "f", "args": "{\"a\":1}"})]),
                    finish.clone(),
                ],
            ),
            (
                "args missing",
                "args is missing",
                vec![calls(&[serde_json::json!({"name": "f"})]), finish.clone()],
            ),
            (
                "empty id",
                "id must be a non-empty string",
                vec![
                    calls(&[serde_json::json!({"id": "", "name": "f", "args": {}})]),
                    finish.clone(),
                ],
            ),
            (
                "wrong finish reason",
                "finishReason must be STOP after 1 functionCall",
                vec![calls(&[call_a()]), finish.replace("STOP", "MAX_TOKENS")],
            ),
            (
                "missing finish reason",
                "the last chunk has no finishReason",
                vec![TEXT.to_owned(), calls(&[call_a()])],
            ),
        ];
        for (what, because, chunks) in cases {
            let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
            let e = check_sse(sse(&chunks).as_bytes()).expect_err(what);
            assert!(
                e.contains(because),
                "{what}: refused for another reason: {e}"
            );
            let e = check_array(array(&chunks).as_bytes()).expect_err(what);
            assert!(
                e.contains(because),
                "{what} (array): refused for another reason: {e}"
            );
        }
    }

    /// A stream of `pieces` (non-ASCII before the cited ranges), then a finishing chunk whose
    /// groundingMetadata is `grounding`.
    fn grounded_stream(grounding: &serde_json::Value) -> (String, String) {
        let pieces = ["Café ☕ 𝄞 is ", "coffee."];
        let mut chunks: Vec<String> = pieces
            .iter()
            .map(|p| {
                serde_json::json!({"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}, "index": 0}], "modelVersion": "m", "responseId": "r"})
                    .to_string()
            })
            .collect();
        let mut finish: serde_json::Value = serde_json::from_str(FINISH).unwrap();
        finish["candidates"][0]["content"]["parts"] = serde_json::json!([{"text": ""}]);
        finish["candidates"][0]["groundingMetadata"] = grounding.clone();
        chunks.push(finish.to_string());
        let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
        (sse(&chunks), array(&chunks))
    }

    fn grounding(
        start: serde_json::Value,
        end: serde_json::Value,
        text: &str,
    ) -> serde_json::Value {
        serde_json::json!({
            "groundingChunks": [{"web": {"uri": "https://a/", "title": "A", "domain": "a"}}],
            "groundingSupports": [{"segment": {"startIndex": start, "endIndex": end, "text": text}, "groundingChunkIndices": [0]}],
        })
    }

    #[test]
    fn grounding_metadata_passes_with_byte_offsets() {
        // "coffee" starts at byte 18 (char 12, UTF-16 unit 13).
        let (sse_body, array_body) =
            grounding_stream_ok(&grounding(18.into(), 24.into(), "coffee"));
        let s = check_sse(sse_body.as_bytes()).unwrap();
        assert_eq!(s.text, "Café ☕ 𝄞 is coffee.");
        assert_eq!(s.keepalives, 0, "a metadata chunk is not a keep-alive");
        check_array(array_body.as_bytes()).unwrap();
        // startIndex may be left out (proto3 JSON omits a 0); queries and scores are allowed.
        let mut g = grounding(0.into(), 5.into(), "Café");
        g["groundingSupports"][0]["segment"]
            .as_object_mut()
            .unwrap()
            .remove("startIndex");
        g["groundingSupports"][0]["confidenceScores"] = serde_json::json!([0.5]);
        g["webSearchQueries"] = serde_json::json!(["café"]);
        grounding_stream_ok(&g);
    }

    fn grounding_stream_ok(g: &serde_json::Value) -> (String, String) {
        let (sse_body, array_body) = grounded_stream(g);
        check_sse(sse_body.as_bytes()).unwrap();
        check_array(array_body.as_bytes()).unwrap();
        (sse_body, array_body)
    }

    fn grounding_fails(g: &serde_json::Value, because: &str) {
        let (sse_body, array_body) = grounded_stream(g);
        sse_fails(&sse_body, because);
        array_fails(&array_body, because);
    }

    #[test]
    fn broken_grounding_metadata_fails() {
        use serde_json::json;
        // Character (12) or UTF-16 (13) offsets instead of bytes land inside 𝄞 here; a text
        // that is not the slice.
        grounding_fails(
            &grounding(12.into(), 18.into(), "coffee"),
            "character boundaries",
        );
        grounding_fails(
            &grounding(13.into(), 19.into(), "coffee"),
            "character boundaries",
        );
        grounding_fails(
            &grounding(18.into(), 24.into(), "coffee!"),
            "is not the answer's bytes",
        );
        // Past the text, reversed, inside a character (é is bytes 3..5, 𝄞 bytes 10..14).
        grounding_fails(
            &grounding(18.into(), 99.into(), "coffee"),
            "past the 25 bytes",
        );
        grounding_fails(
            &grounding(24.into(), 18.into(), ""),
            "startIndex 24 > endIndex 18",
        );
        grounding_fails(&grounding(4.into(), 6.into(), "x"), "character boundaries");
        grounding_fails(&grounding(0.into(), 12.into(), "x"), "character boundaries");
        grounding_fails(
            &grounding((-1).into(), 6.into(), "x"),
            "non-negative integer",
        );
        grounding_fails(
            &grounding("18".into(), 24.into(), "coffee"),
            "non-negative integer",
        );
        grounding_fails(
            &grounding(18.into(), json!(null), "coffee"),
            "non-negative integer",
        );
        let mut g = grounding(18.into(), 24.into(), "coffee");
        g["groundingSupports"][0]["segment"]
            .as_object_mut()
            .unwrap()
            .remove("endIndex");
        grounding_fails(&g, "endIndex is missing");
        // Chunk indices out of range or missing.
        let mut g = grounding(18.into(), 24.into(), "coffee");
        g["groundingSupports"][0]["groundingChunkIndices"] = json!([1]);
        grounding_fails(&g, "is not an index of the 1 groundingChunks");
        g["groundingSupports"][0]["groundingChunkIndices"] = json!([]);
        grounding_fails(&g, "non-empty array");
        // A chunk without a uri; per-part offsets; scores not matching the indices.
        let mut g = grounding(18.into(), 24.into(), "coffee");
        g["groundingChunks"][0]["web"] = json!({"title": "A"});
        grounding_fails(&g, "web.uri must be a non-empty string");
        let mut g = grounding(18.into(), 24.into(), "coffee");
        g["groundingSupports"][0]["segment"]["partIndex"] = json!(1);
        grounding_fails(&g, "partIndex must be absent or 0");
        let mut g = grounding(18.into(), 24.into(), "coffee");
        g["groundingSupports"][0]["confidenceScores"] = json!([0.5, 0.5]);
        grounding_fails(&g, "confidenceScores");
        // A citation before its text: the range is checked against the text sent so far.
        let early = grounding(18.into(), 24.into(), "coffee");
        let mut first: serde_json::Value = serde_json::from_str(TEXT).unwrap();
        first["candidates"][0]["groundingMetadata"] = early;
        let first = first.to_string();
        sse_fails(&sse(&[first.as_str(), FINISH]), "past the 3 bytes");
    }
}
