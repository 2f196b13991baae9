//! OpenAI Responses API stream invariants (client-compat.md, and what the SDK's
//! `responses.stream` helper asserts):
//! - every event is `event: <type>` + `data: <json>` with `data.type` equal to the event name,
//!   a strictly increasing `sequence_number`, and validates against the SDK's
//!   `ResponseStreamEvent`;
//! - `response.created` then `response.in_progress` first, one response id throughout;
//! - output items are announced (`response.output_item.added`, contiguous `output_index` from
//!   0, one open at a time) before any of their events, and closed by
//!   `response.output_item.done` with the same id and type and the accumulated content;
//! - a content part / summary part is announced before its deltas, and each `.done` carries
//!   exactly the concatenated deltas; text parts are done before their part is done;
//! - exactly one terminal event, last: `response.completed` (status `completed`, every item
//!   done, the response's output equal to the items, usage with a consistent total),
//!   `response.failed` (status `failed`, an `error`, every item done) or `error`;
//! - a `function_call` item is added with a unique `call_id`, a non-empty `name` and
//!   `arguments: ""`; its `response.function_call_arguments.delta` events (with `item_id`)
//!   concatenate to the `arguments` of `response.function_call_arguments.done`, which parse as
//!   a JSON object; its `response.output_item.done` repeats call_id, name and arguments, and so
//!   does the terminal response's `output`;
//! - `response.output_text.annotation.added` (web-search `url_citation`s) for an open
//!   `output_text` part, with `annotation_index` 0, 1, … in order, a URL, a title and
//!   `start_index` ≤ `end_index` within the part's text already streamed, in Unicode code
//!   points (the gateway's unit, see `openai::citations`), so never before its text; the
//!   part's `content_part.done`, its item's `output_item.done` and the terminal response list
//!   exactly the streamed annotations. [`citations`] reads them from a response.
//!
//! The summary's `stop_reason` is the terminal response's `status`.

use serde_json::Value;

use super::chat::{Cited, cited, markdown_links};
use super::{
    Block, CheckedCall, StreamSummary, call_arguments, check_calls, ensure, json, sse_blocks,
};
use crate::schemas;

#[derive(Debug)]
struct Part {
    text: String,
    /// The streamed annotations, as sent.
    annotations: Vec<Value>,
    text_done: bool,
    done: bool,
}

#[derive(Debug)]
struct Item {
    id: String,
    kind: String,
    parts: Vec<Part>,
    /// A function_call item's `call_id` and `name`.
    call_id: String,
    name: String,
    arguments: String,
    /// The parsed arguments, once `response.function_call_arguments.done` came.
    parsed: Option<Value>,
    arguments_done: bool,
    done: bool,
}

const TERMINAL: [&str; 3] = ["response.completed", "response.failed", "error"];

/// Checks a whole Responses API stream body.
pub fn check(raw: &[u8]) -> Result<StreamSummary, String> {
    let mut events = Vec::new();
    let mut keepalives = 0;
    for block in sse_blocks(raw)? {
        match block {
            Block::Comment(_) => keepalives += 1,
            Block::Event { event, data, .. } => {
                let v = json(&data)?;
                let name = event.ok_or_else(|| format!("an event without an event: line: {v}"))?;
                ensure(v["type"].as_str() == Some(name.as_str()), || {
                    format!("event: {name} but data.type is {}", v["type"])
                })?;
                events.push(v);
            }
        }
    }
    let mut summary = check_events(&events)?;
    summary.keepalives = keepalives;
    summary.events = events;
    Ok(summary)
}

fn item_at<'a>(items: &'a mut [Item], e: &Value) -> Result<&'a mut Item, String> {
    let index = e["output_index"]
        .as_u64()
        .ok_or_else(|| format!("no output_index: {e}"))? as usize;
    let item = items.get_mut(index).ok_or_else(|| {
        format!("an event for output_index {index} before its item was added: {e}")
    })?;
    ensure(!item.done, || format!("an event for a finished item: {e}"))?;
    if let Some(id) = e.get("item_id") {
        ensure(id.as_str() == Some(item.id.as_str()), || {
            format!("item_id does not match the item at its output_index: {e}")
        })?;
    }
    Ok(item)
}

fn part_at<'a>(
    item: &'a mut Item,
    e: &Value,
    key: &str,
    kind: &str,
) -> Result<&'a mut Part, String> {
    ensure(item.kind == kind, || {
        format!("a {kind} event for a {} item: {e}", item.kind)
    })?;
    let index = e[key].as_u64().ok_or_else(|| format!("no {key}: {e}"))? as usize;
    let part = item
        .parts
        .get_mut(index)
        .ok_or_else(|| format!("an event for {key} {index} before its part was added: {e}"))?;
    ensure(!part.done, || format!("an event for a finished part: {e}"))?;
    Ok(part)
}

fn check_events(events: &[Value]) -> Result<StreamSummary, String> {
    let mut summary = StreamSummary::default();
    ensure(!events.is_empty(), || "no events".into())?;
    ensure(events[0]["type"] == "response.created", || {
        format!("the first event must be response.created: {}", events[0])
    })?;
    ensure(
        events
            .get(1)
            .is_some_and(|e| e["type"] == "response.in_progress"),
        || "the second event must be response.in_progress".into(),
    )?;
    let response_id = events[0]["response"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure(response_id.starts_with("resp_"), || {
        format!("response ids start with resp_: {response_id:?}")
    })?;
    let mut last_seq: Option<i64> = None;
    let mut items: Vec<Item> = Vec::new();
    let mut terminal = None;
    for (i, e) in events.iter().enumerate() {
        let kind = e["type"].as_str().unwrap_or_default();
        ensure(terminal.is_none(), || {
            format!("an event after the terminal event: {e}")
        })?;
        let violations = schemas::violations("openai.ResponseStreamEvent", e);
        ensure(violations.is_empty(), || {
            format!("event {i} does not match the SDK type: {violations:?}: {e}")
        })?;
        let seq = e["sequence_number"]
            .as_i64()
            .ok_or_else(|| format!("no sequence_number: {e}"))?;
        ensure(last_seq.is_none_or(|l| seq > l), || {
            format!("sequence_number {seq} does not increase (after {last_seq:?})")
        })?;
        last_seq = Some(seq);
        if let Some(r) = e.get("response") {
            ensure(r["id"].as_str() == Some(response_id.as_str()), || {
                format!("the response id changed: {e}")
            })?;
        }
        match kind {
            "response.created" | "response.in_progress" => {
                ensure(i < 2, || format!("{kind} after the start"))?;
                ensure(e["response"]["status"] == "in_progress", || {
                    format!("{kind} has status in_progress: {e}")
                })?;
            }
            "response.output_item.added" => {
                ensure(items.iter().all(|it| it.done), || {
                    format!("an item was added while another is open: {e}")
                })?;
                ensure(
                    e["output_index"].as_u64() == Some(items.len() as u64),
                    || format!("output_index must be {}: {e}", items.len()),
                )?;
                let item = &e["item"];
                let kind = item["type"].as_str().unwrap_or_default().to_owned();
                ensure(
                    [
                        "message",
                        "reasoning",
                        "image_generation_call",
                        "function_call",
                    ]
                    .contains(&kind.as_str()),
                    || format!("an unexpected item type: {e}"),
                )?;
                ensure(
                    item["content"].as_array().is_none_or(Vec::is_empty)
                        && item["summary"].as_array().is_none_or(Vec::is_empty),
                    || format!("an added item starts empty: {e}"),
                )?;
                let id = item["id"].as_str().unwrap_or_default().to_owned();
                ensure(!id.is_empty(), || {
                    format!("an added item without an id: {e}")
                })?;
                ensure(items.iter().all(|it| it.id != id), || {
                    format!("two output items with the id {id:?}: {e}")
                })?;
                let (call_id, name) = if kind == "function_call" {
                    let call_id = item["call_id"].as_str().unwrap_or_default();
                    ensure(!call_id.is_empty(), || {
                        format!("a function_call item without a call_id: {e}")
                    })?;
                    let name = item["name"].as_str().unwrap_or_default();
                    ensure(!name.is_empty(), || {
                        format!("a function_call item has no name: {e}")
                    })?;
                    ensure(item["arguments"] == "", || {
                        format!("an added function_call item starts with arguments \"\": {e}")
                    })?;
                    (call_id.to_owned(), name.to_owned())
                } else {
                    Default::default()
                };
                items.push(Item {
                    id,
                    kind,
                    parts: Vec::new(),
                    call_id,
                    name,
                    arguments: String::new(),
                    parsed: None,
                    arguments_done: false,
                    done: false,
                });
            }
            "response.content_part.added" | "response.reasoning_summary_part.added" => {
                let (key, want) = if kind == "response.content_part.added" {
                    ("content_index", "message")
                } else {
                    ("summary_index", "reasoning")
                };
                let item = item_at(&mut items, e)?;
                ensure(item.kind == want, || {
                    format!("{kind} for a {} item", item.kind)
                })?;
                ensure(e[key].as_u64() == Some(item.parts.len() as u64), || {
                    format!("{key} must be {}: {e}", item.parts.len())
                })?;
                ensure(e["part"]["text"] == "", || {
                    format!("a part starts empty: {e}")
                })?;
                ensure(item.parts.iter().all(|p| p.done), || {
                    format!("a part added while another is open: {e}")
                })?;
                item.parts.push(Part {
                    text: String::new(),
                    annotations: Vec::new(),
                    text_done: false,
                    done: false,
                });
            }
            "response.output_text.delta" | "response.reasoning_summary_text.delta" => {
                let (key, want) = if kind == "response.output_text.delta" {
                    ("content_index", "message")
                } else {
                    ("summary_index", "reasoning")
                };
                let item = item_at(&mut items, e)?;
                let part = part_at(item, e, key, want)?;
                ensure(!part.text_done, || {
                    format!("a delta after its text was done: {e}")
                })?;
                let delta = e["delta"].as_str().unwrap_or_default();
                part.text.push_str(delta);
                if want == "message" {
                    summary.text.push_str(delta);
                } else {
                    summary.thinking.push_str(delta);
                }
            }
            "response.output_text.done" | "response.reasoning_summary_text.done" => {
                let (key, want) = if kind == "response.output_text.done" {
                    ("content_index", "message")
                } else {
                    ("summary_index", "reasoning")
                };
                let item = item_at(&mut items, e)?;
                let part = part_at(item, e, key, want)?;
                ensure(!part.text_done, || format!("text done twice: {e}"))?;
                ensure(e["text"].as_str() == Some(part.text.as_str()), || {
                    format!("{kind} text differs from the deltas {:?}: {e}", part.text)
                })?;
                part.text_done = true;
            }
            "response.content_part.done" | "response.reasoning_summary_part.done" => {
                let (key, want) = if kind == "response.content_part.done" {
                    ("content_index", "message")
                } else {
                    ("summary_index", "reasoning")
                };
                let item = item_at(&mut items, e)?;
                let part = part_at(item, e, key, want)?;
                ensure(part.text_done, || {
                    format!("{kind} before its text was done: {e}")
                })?;
                ensure(
                    e["part"]["text"].as_str() == Some(part.text.as_str()),
                    || format!("{kind} text differs from the deltas: {e}"),
                )?;
                same_annotations(&e["part"], &part.annotations)
                    .map_err(|m| format!("{kind}: {m}: {e}"))?;
                part.done = true;
            }
            "response.output_text.annotation.added" => {
                let item = item_at(&mut items, e)?;
                let part = part_at(item, e, "content_index", "message")?;
                ensure(
                    e["annotation_index"].as_u64() == Some(part.annotations.len() as u64),
                    || format!("annotation_index must be {}: {e}", part.annotations.len()),
                )?;
                let a = &e["annotation"];
                ensure(a["type"] == "url_citation", || {
                    format!("an annotation of another type than url_citation: {e}")
                })?;
                cited(a, &part.text).map_err(|m| format!("{kind}: {m}"))?;
                part.annotations.push(a.clone());
            }
            "response.function_call_arguments.delta" | "response.function_call_arguments.done" => {
                ensure(e["item_id"].is_string(), || {
                    format!("{kind} without item_id: {e}")
                })?;
                let item = item_at(&mut items, e)?;
                ensure(item.kind == "function_call", || {
                    format!("{kind} for a {} item", item.kind)
                })?;
                ensure(!item.arguments_done, || {
                    format!("{kind} after arguments were done")
                })?;
                if kind.ends_with("delta") {
                    let delta = e["delta"]
                        .as_str()
                        .ok_or_else(|| format!("{kind}: delta is not a string: {e}"))?;
                    item.arguments.push_str(delta);
                } else {
                    ensure(
                        e["arguments"].as_str() == Some(item.arguments.as_str()),
                        || format!("arguments differ from the deltas: {e}"),
                    )?;
                    if let Some(name) = e.get("name") {
                        ensure(name.as_str() == Some(item.name.as_str()), || {
                            format!("{kind} names another function than its item: {e}")
                        })?;
                    }
                    item.parsed = Some(call_arguments(
                        &format!("function_call {} ({})", item.call_id, item.name),
                        &item.arguments,
                    )?);
                    item.arguments_done = true;
                }
            }
            "response.output_item.done" => {
                let item = item_at(&mut items, e)?;
                let done = &e["item"];
                ensure(
                    done["id"].as_str() == Some(item.id.as_str())
                        && done["type"] == item.kind.as_str(),
                    || format!("output_item.done does not match its added item: {e}"),
                )?;
                ensure(item.parts.iter().all(|p| p.done), || {
                    format!("output_item.done with a part still open: {e}")
                })?;
                let texts: Vec<&str> = match item.kind.as_str() {
                    "message" => done["content"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| p["text"].as_str().unwrap_or_default())
                        .collect(),
                    "reasoning" => done["summary"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| p["text"].as_str().unwrap_or_default())
                        .collect(),
                    _ => Vec::new(),
                };
                if matches!(item.kind.as_str(), "message" | "reasoning") {
                    let streamed: Vec<&str> = item.parts.iter().map(|p| p.text.as_str()).collect();
                    ensure(texts == streamed, || {
                        format!(
                            "the finished item's text differs from the deltas {streamed:?}: {e}"
                        )
                    })?;
                }
                if item.kind == "message" {
                    same_item_annotations(done, item)
                        .map_err(|m| format!("output_item.done: {m}: {e}"))?;
                }
                match item.kind.as_str() {
                    "function_call" => {
                        ensure(item.arguments_done, || {
                            format!(
                                "output_item.done before response.function_call_arguments.done: {e}"
                            )
                        })?;
                        ensure(
                            done["arguments"].as_str() == Some(item.arguments.as_str()),
                            || format!("function_call arguments not streamed consistently: {e}"),
                        )?;
                        ensure(
                            done["call_id"].as_str() == Some(item.call_id.as_str())
                                && done["name"].as_str() == Some(item.name.as_str()),
                            || {
                                format!(
                                    "the finished function_call's call_id/name differ from the added item's: {e}"
                                )
                            },
                        )?;
                        summary.tool_calls.push(CheckedCall {
                            id: item.call_id.clone(),
                            name: item.name.clone(),
                            arguments: item.parsed.clone().unwrap_or_default(),
                        });
                        check_calls(&summary.tool_calls)?;
                    }
                    "image_generation_call" => {
                        let result = done["result"]
                            .as_str()
                            .filter(|r| !r.is_empty())
                            .ok_or_else(|| format!("an image item without result: {e}"))?;
                        let format = done["output_format"].as_str().unwrap_or("png");
                        summary
                            .media
                            .push(format!("data:image/{format};base64,{result}"));
                    }
                    _ => {}
                }
                item.done = true;
            }
            "response.completed" | "response.failed" => {
                ensure(items.iter().all(|it| it.done), || {
                    format!("{kind} with an item still open")
                })?;
                let r = &e["response"];
                let want = if kind == "response.completed" {
                    "completed"
                } else {
                    "failed"
                };
                ensure(r["status"] == want, || {
                    format!("{kind} must have status {want}: {e}")
                })?;
                let ids: Vec<&str> = r["output"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| o["id"].as_str().unwrap_or_default())
                    .collect();
                let streamed: Vec<&str> = items.iter().map(|it| it.id.as_str()).collect();
                ensure(ids == streamed, || {
                    format!("the final output {ids:?} differs from the streamed items {streamed:?}")
                })?;
                for (o, item) in r["output"].as_array().into_iter().flatten().zip(&items) {
                    ensure(o["type"] == item.kind.as_str(), || {
                        format!(
                            "the final output item {} is a {}, streamed as a {}",
                            item.id, o["type"], item.kind
                        )
                    })?;
                    if item.kind == "message" {
                        same_item_annotations(o, item)
                            .map_err(|m| format!("{kind}'s output item {}: {m}", item.id))?;
                    }
                    if item.kind == "function_call" {
                        ensure(
                            o["call_id"].as_str() == Some(item.call_id.as_str())
                                && o["name"].as_str() == Some(item.name.as_str())
                                && o["arguments"].as_str() == Some(item.arguments.as_str()),
                            || {
                                format!(
                                    "the final output's function_call {} differs from the streamed call ({} {} {}): {o}",
                                    item.id, item.call_id, item.name, item.arguments
                                )
                            },
                        )?;
                    }
                }
                summary.stop_reason = r["status"].as_str().map(str::to_owned);
                let u = &r["usage"];
                let (input, output, total) = (
                    u["input_tokens"].as_u64(),
                    u["output_tokens"].as_u64(),
                    u["total_tokens"].as_u64(),
                );
                ensure(
                    matches!((input, output, total), (Some(a), Some(b), Some(t)) if t == a + b && t > 0),
                    || format!("usage with a consistent, non-zero total: {u}"),
                )?;
                if kind == "response.failed" {
                    ensure(r["error"]["message"].is_string(), || {
                        format!("a failed response carries an error: {e}")
                    })?;
                    summary.error = Some(r["error"].clone());
                } else {
                    ensure(r["error"].is_null(), || {
                        format!("a completed response with an error: {e}")
                    })?;
                }
                terminal = Some(kind);
            }
            "error" => {
                summary.error = Some(e.clone());
                terminal = Some(kind);
            }
            other => return Err(format!("an event type this gateway never sends: {other}")),
        }
    }
    ensure(terminal.is_some(), || {
        format!("the stream ended without a terminal event ({TERMINAL:?})")
    })?;
    summary.media.extend(markdown_links(&summary.text));
    Ok(summary)
}

/// Whether a finished `output_text` part lists exactly the streamed annotations.
fn same_annotations(part: &Value, streamed: &[Value]) -> Result<(), String> {
    let listed = match &part["annotations"] {
        Value::Null => &[][..],
        Value::Array(a) => a.as_slice(),
        other => return Err(format!("annotations is not an array: {other}")),
    };
    ensure(listed == streamed, || {
        format!(
            "the part's annotations differ from the streamed ones {}",
            Value::from(streamed.to_vec())
        )
    })
}

/// [`same_annotations`] for every part of a finished message item.
fn same_item_annotations(done: &Value, item: &Item) -> Result<(), String> {
    let parts = done["content"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for (p, streamed) in parts.iter().zip(&item.parts) {
        same_annotations(p, &streamed.annotations)?;
    }
    Ok(())
}

/// The `url_citation` annotations of a response's `output_text` parts (a non-streamed
/// response, or the terminal event's), each checked against its part's text, in order:
/// `(output_index, content_index, citation)`.
pub fn citations(response: &Value) -> Result<Vec<(usize, usize, Cited)>, String> {
    let mut out = Vec::new();
    for (i, item) in response["output"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        for (j, part) in item["content"].as_array().into_iter().flatten().enumerate() {
            let text = part["text"].as_str().unwrap_or_default();
            for a in part["annotations"].as_array().into_iter().flatten() {
                ensure(a["type"] == "url_citation", || {
                    format!("an annotation of another type than url_citation: {a}")
                })?;
                out.push((i, j, cited(a, text)?));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(status: &str, output: Value) -> Value {
        json!({"id": "resp_1", "object": "response", "created_at": 1, "status": status,
            "model": "gemini-2.5-flash", "output": output, "parallel_tool_calls": true,
            "tool_choice": "auto", "tools": [], "error": null,
            "usage": {"input_tokens": 2, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 5}})
    }

    fn valid() -> Vec<Value> {
        let rs = json!({"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hm"}]});
        let msg = json!({"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi there", "annotations": [], "logprobs": []}]});
        vec![
            json!({"type": "response.created", "response": response("in_progress", json!([]))}),
            json!({"type": "response.in_progress", "response": response("in_progress", json!([]))}),
            json!({"type": "response.output_item.added", "output_index": 0,
                "item": {"type": "reasoning", "id": "rs_1", "summary": []}}),
            json!({"type": "response.reasoning_summary_part.added", "item_id": "rs_1", "output_index": 0,
                "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
            json!({"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "output_index": 0,
                "summary_index": 0, "delta": "hm"}),
            json!({"type": "response.reasoning_summary_text.done", "item_id": "rs_1", "output_index": 0,
                "summary_index": 0, "text": "hm"}),
            json!({"type": "response.reasoning_summary_part.done", "item_id": "rs_1", "output_index": 0,
                "summary_index": 0, "part": {"type": "summary_text", "text": "hm"}}),
            json!({"type": "response.output_item.done", "output_index": 0, "item": rs}),
            json!({"type": "response.output_item.added", "output_index": 1,
                "item": {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}}),
            json!({"type": "response.content_part.added", "item_id": "msg_1", "output_index": 1, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}),
            json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1, "content_index": 0,
                "delta": "Hi ", "logprobs": []}),
            json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1, "content_index": 0,
                "delta": "there", "logprobs": []}),
            json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 1, "content_index": 0,
                "text": "Hi there", "logprobs": []}),
            json!({"type": "response.content_part.done", "item_id": "msg_1", "output_index": 1, "content_index": 0,
                "part": {"type": "output_text", "text": "Hi there", "annotations": []}}),
            json!({"type": "response.output_item.done", "output_index": 1, "item": msg}),
            json!({"type": "response.completed", "response": response("completed", json!([rs, msg]))}),
        ]
    }

    fn render(events: &[Value]) -> Vec<u8> {
        let mut out = String::new();
        for (i, e) in events.iter().enumerate() {
            let mut e = e.clone();
            if e.get("sequence_number").is_none() {
                e["sequence_number"] = json!(i);
            }
            out.push_str(&format!(
                "event: {}\ndata: {e}\n\n",
                e["type"].as_str().unwrap()
            ));
            if i == 3 {
                out.push_str(": keep-alive\n\n");
            }
        }
        out.into_bytes()
    }

    fn index_of(events: &[Value], kind: &str) -> usize {
        events.iter().position(|e| e["type"] == kind).unwrap()
    }

    #[test]
    fn a_valid_stream_passes() {
        let s = check(&render(&valid())).unwrap();
        assert_eq!(s.text, "Hi there");
        assert_eq!(s.thinking, "hm");
        assert_eq!(s.keepalives, 1);
        assert!(s.error.is_none());
    }

    #[test]
    fn a_failed_stream_passes_and_reports_its_error() {
        let mut events = valid();
        let last = events.len() - 1;
        let mut r = response("failed", events[last]["response"]["output"].clone());
        r["error"] = json!({"code": "server_error", "message": "the upstream failed"});
        events[last] = json!({"type": "response.failed", "response": r});
        let s = check(&render(&events)).unwrap();
        assert_eq!(s.stop_reason.as_deref(), Some("failed"));
        assert_eq!(s.error.unwrap()["code"], "server_error");
    }

    #[test]
    fn broken_streams_fail() {
        let mut broken: Vec<(&str, Vec<u8>)> = Vec::new();

        let mut e = valid();
        let added = index_of(&e, "response.content_part.added") - 1;
        let delta = e.remove(index_of(&e, "response.output_text.delta"));
        e.insert(added, delta);
        broken.push(("delta before output_item.added", render(&e)));

        let mut e = valid();
        e.remove(index_of(&e, "response.content_part.added"));
        broken.push(("missing content_part.added", render(&e)));

        let mut e = valid();
        e[5]["sequence_number"] = json!(4);
        broken.push(("non-increasing sequence_number", render(&e)));

        let mut e = valid();
        e.pop();
        broken.push(("missing response.completed", render(&e)));

        let mut e = valid();
        let done = index_of(&e, "response.output_text.done");
        e[done]["text"] = json!("Hi where");
        broken.push(("done text mismatch", render(&e)));

        let mut e = valid();
        let done = index_of(&e, "response.output_item.done");
        e[done]["item"]["summary"][0]["text"] = json!("other");
        broken.push(("finished item text mismatch", render(&e)));

        let raw = String::from_utf8(render(&valid())).unwrap().replacen(
            "event: response.output_text.delta",
            "event: response.output_text.done",
            1,
        );
        broken.push(("event-name mismatch", raw.into_bytes()));

        let raw = String::from_utf8(render(&valid())).unwrap().replacen(
            "event: response.created\n",
            "",
            1,
        );
        broken.push(("no event: line", raw.into_bytes()));

        let mut e = valid();
        let delta = index_of(&e, "response.output_text.delta");
        e[delta].as_object_mut().unwrap().remove("logprobs");
        broken.push(("schema violation", render(&e)));

        let mut e = valid();
        e.swap(0, 1);
        broken.push(("in_progress before created", render(&e)));

        let mut e = valid();
        let last = e.len() - 1;
        e[last]["response"]["output"] = json!([]);
        broken.push(("final output differs from the items", render(&e)));

        let mut e = valid();
        let last_done = e
            .iter()
            .rposition(|x| x["type"] == "response.output_item.done")
            .unwrap();
        e.remove(last_done);
        broken.push(("completed with an open item", render(&e)));

        let mut e = valid();
        let extra = e[10].clone();
        e.push(extra);
        broken.push(("an event after the terminal event", render(&e)));

        let mut e = valid();
        e[9]["item_id"] = json!("msg_other");
        broken.push(("item_id mismatch", render(&e)));

        for (name, raw) in broken {
            match check(&raw) {
                Ok(_) => panic!("{name} was accepted"),
                Err(e) => eprintln!("{name}: rejected: {e}"),
            }
        }
    }

    fn url(start: u64, end: u64) -> Value {
        json!({"type": "url_citation", "start_index": start, "end_index": end,
            "url": "https://a.example", "title": "A"})
    }

    /// [`valid`] with "é ☕ 𝄞 coffee" as the message text and an annotation of "coffee",
    /// streamed after the deltas.
    fn valid_cited() -> Vec<Value> {
        let mut e = valid();
        let text = "é ☕ 𝄞 coffee";
        let a = url(6, 12);
        let deltas: Vec<usize> = e
            .iter()
            .enumerate()
            .filter(|(_, x)| x["type"] == "response.output_text.delta")
            .map(|(i, _)| i)
            .collect();
        e[deltas[0]]["delta"] = json!("é ☕ 𝄞 ");
        e[deltas[1]]["delta"] = json!("coffee");
        e.insert(
            deltas[1] + 1,
            json!({"type": "response.output_text.annotation.added", "item_id": "msg_1",
                "output_index": 1, "content_index": 0, "annotation_index": 0, "annotation": a}),
        );
        for x in e.iter_mut() {
            if x["type"] == "response.output_text.done" {
                x["text"] = json!(text);
            }
            if x["type"] == "response.content_part.done" {
                x["part"]["text"] = json!(text);
                x["part"]["annotations"] = json!([a]);
            }
        }
        let done = index_of(&e, "response.completed");
        for it in [e.len() - 2, done] {
            let part = if it == done {
                &mut e[it]["response"]["output"][1]["content"][0]
            } else {
                &mut e[it]["item"]["content"][0]
            };
            part["text"] = json!(text);
            part["annotations"] = json!([a]);
        }
        e
    }

    #[test]
    fn citations_are_checked_in_code_points() {
        let s = check(&render(&valid_cited())).unwrap();
        assert_eq!(s.text, "é ☕ 𝄞 coffee");
        let last = s.events.last().unwrap();
        let c = citations(&last["response"]).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].0, c[0].1, c[0].2.text.as_str()), (1, 0, "coffee"));

        let added = |e: &[Value]| index_of(e, "response.output_text.annotation.added");
        let mut broken: Vec<(&str, &str, Vec<Value>)> = Vec::new();
        let mut e = valid_cited();
        let i = added(&e);
        e[i]["annotation"] = url(6, 13);
        broken.push(("past the text", "past the 12 code points", e));
        let mut e = valid_cited();
        let i = added(&e);
        e[i]["annotation"] = url(12, 18);
        broken.push(("UTF-8 byte offsets", "past the 12 code points", e));
        let mut e = valid_cited();
        let i = added(&e);
        e[i]["annotation"] = url(9, 6);
        broken.push(("start after end", "is after its end_index", e));
        let mut e = valid_cited();
        let i = added(&e);
        e.swap(i - 1, i);
        broken.push(("before its text", "before its text", e));
        let mut e = valid_cited();
        let i = added(&e);
        e[i]["annotation_index"] = json!(1);
        broken.push(("annotation_index gap", "annotation_index must be 0", e));
        let mut e = valid_cited();
        let i = added(&e);
        e[i]["annotation"]["title"] = Value::Null;
        broken.push(("no title", "does not match the SDK type", e));
        let mut e = valid_cited();
        let i = index_of(&e, "response.content_part.done");
        e[i]["part"]["annotations"] = json!([]);
        let i = e.len() - 2;
        e[i]["item"]["content"][0]["annotations"] = json!([]);
        let i = added(&e);
        let a = e.remove(i);
        let at = index_of(&e, "response.output_item.done") + 1;
        let at = e[at..]
            .iter()
            .position(|x| x["type"] == "response.output_item.done")
            .unwrap()
            + at;
        e.insert(at + 1, a);
        broken.push(("after its item was done", "finished item", e));
        let mut e = valid_cited();
        let i = index_of(&e, "response.content_part.done");
        e[i]["part"]["annotations"] = json!([]);
        broken.push(("part done without it", "differ from the streamed", e));
        let mut e = valid_cited();
        let last = e.len() - 1;
        e[last]["response"]["output"][1]["content"][0]["annotations"] = json!([url(0, 1)]);
        broken.push(("final output differs", "differ from the streamed", e));
        let mut e = valid_cited();
        let i = added(&e);
        e.remove(i);
        broken.push(("listed but never streamed", "differ from the streamed", e));
        for (name, expected, events) in broken {
            match check(&render(&events)) {
                Ok(_) => panic!("{name} was accepted"),
                Err(e) => assert!(
                    e.contains(expected),
                    "{name}: rejected for another reason: {e}"
                ),
            }
        }
    }

    fn fc(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
        json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status})
    }

    /// A function_call item at `index`, its arguments streamed in `deltas`.
    fn call_events(
        index: usize,
        id: &str,
        call_id: &str,
        name: &str,
        deltas: &[&str],
    ) -> Vec<Value> {
        let arguments: String = deltas.concat();
        let mut out = vec![
            json!({"type": "response.output_item.added", "output_index": index,
            "item": fc(id, call_id, name, "", "in_progress")}),
        ];
        for d in deltas {
            out.push(
                json!({"type": "response.function_call_arguments.delta", "item_id": id,
                "output_index": index, "delta": d}),
            );
        }
        out.push(
            json!({"type": "response.function_call_arguments.done", "item_id": id,
            "output_index": index, "name": name, "arguments": arguments}),
        );
        out.push(
            json!({"type": "response.output_item.done", "output_index": index,
            "item": fc(id, call_id, name, &arguments, "completed")}),
        );
        out
    }

    /// The reasoning and message of [`valid`], then two calls.
    fn valid_tools() -> Vec<Value> {
        let mut e = valid();
        let completed = e.pop().unwrap();
        e.extend(call_events(
            2,
            "fc_1",
            "call_a",
            "get_weather",
            &["{\"city\":", "\"Paris\"}"],
        ));
        e.extend(call_events(3, "fc_2", "call_b", "get_time", &["{}"]));
        let mut output = completed["response"]["output"].clone();
        let output_list = output.as_array_mut().unwrap();
        output_list.push(fc(
            "fc_1",
            "call_a",
            "get_weather",
            "{\"city\":\"Paris\"}",
            "completed",
        ));
        output_list.push(fc("fc_2", "call_b", "get_time", "{}", "completed"));
        e.push(json!({"type": "response.completed", "response": response("completed", output)}));
        e
    }

    #[test]
    fn a_valid_tool_call_stream_passes_and_reports_its_calls() {
        let s = check(&render(&valid_tools())).unwrap();
        assert_eq!(s.text, "Hi there");
        assert_eq!(s.stop_reason.as_deref(), Some("completed"));
        assert_eq!(
            s.tool_calls,
            crate::check::weather_then_time("call_a", "call_b")
        );
        let s = check(&render(&valid())).unwrap();
        assert_eq!(s.stop_reason.as_deref(), Some("completed"));
        assert!(s.tool_calls.is_empty());
    }

    /// Replaces the events of the call at output_index `index` by `events`.
    fn with_call(index: usize, events: Vec<Value>, output: Option<Value>) -> Vec<Value> {
        let mut e: Vec<Value> = valid_tools()
            .into_iter()
            .filter(|x| x["output_index"] != index)
            .collect();
        let at = e
            .iter()
            .position(|x| x["output_index"] == index + 1)
            .unwrap_or(e.len() - 1);
        e.splice(at..at, events);
        if let Some(o) = output {
            let last = e.len() - 1;
            e[last]["response"]["output"][index] = o;
        }
        e
    }

    #[test]
    fn broken_tool_call_streams_fail() {
        let mut broken: Vec<(&str, &str, Vec<Value>)> = Vec::new();

        // The first call's JSON is finished in the second call's item.
        let mut e = with_call(
            2,
            call_events(2, "fc_1", "call_a", "get_weather", &["{\"city\":"]),
            Some(fc(
                "fc_1",
                "call_a",
                "get_weather",
                "{\"city\":",
                "completed",
            )),
        );
        let second = call_events(3, "fc_2", "call_b", "get_time", &["\"Paris\"}"]);
        let at = e.iter().position(|x| x["output_index"] == 3).unwrap();
        e.splice(at..at + 4, second);
        broken.push(("a call split across items", "are not JSON", e));

        broken.push((
            "arguments not JSON",
            "are not JSON",
            with_call(
                2,
                call_events(2, "fc_1", "call_a", "get_weather", &["{city: 1}"]),
                Some(fc(
                    "fc_1",
                    "call_a",
                    "get_weather",
                    "{city: 1}",
                    "completed",
                )),
            ),
        ));
        broken.push((
            "arguments not an object",
            "not a JSON object",
            with_call(
                2,
                call_events(2, "fc_1", "call_a", "get_weather", &["[1,", "2]"]),
                Some(fc("fc_1", "call_a", "get_weather", "[1,2]", "completed")),
            ),
        ));
        broken.push((
            "empty arguments",
            "are not JSON",
            with_call(
                2,
                call_events(2, "fc_1", "call_a", "get_weather", &[]),
                Some(fc("fc_1", "call_a", "get_weather", "", "completed")),
            ),
        ));
        broken.push((
            "no name",
            "has no name",
            with_call(
                2,
                call_events(2, "fc_1", "call_a", "", &["{}"]),
                Some(fc("fc_1", "call_a", "", "{}", "completed")),
            ),
        ));
        broken.push((
            "duplicate call ids",
            "duplicate tool call id \"call_a\"",
            with_call(
                3,
                call_events(3, "fc_2", "call_a", "get_time", &["{}"]),
                Some(fc("fc_2", "call_a", "get_time", "{}", "completed")),
            ),
        ));
        broken.push((
            "no call_id",
            "without a call_id",
            with_call(
                3,
                call_events(3, "fc_2", "", "get_time", &["{}"]),
                Some(fc("fc_2", "", "get_time", "{}", "completed")),
            ),
        ));

        let mut e = valid_tools();
        let done = index_of(&e, "response.function_call_arguments.done");
        e[done]["arguments"] = json!("{\"city\":\"Rome\"}");
        broken.push((
            "done arguments differ from the deltas",
            "differ from the deltas",
            e,
        ));

        let mut e = valid_tools();
        let done = index_of(&e, "response.function_call_arguments.done");
        e.remove(done);
        broken.push((
            "no arguments.done",
            "before response.function_call_arguments.done",
            e,
        ));

        let mut e = valid_tools();
        let added = index_of(&e, "response.output_item.added");
        let fc_added = e
            .iter()
            .rposition(|x| {
                x["type"] == "response.output_item.added"
                    && x["item"]["type"] == "function_call"
                    && x["output_index"] == 2
            })
            .unwrap();
        assert!(fc_added > added);
        e[fc_added]["item"]["arguments"] = json!("{");
        broken.push(("added with arguments", "starts with arguments", e));

        let mut e = valid_tools();
        let delta = index_of(&e, "response.function_call_arguments.delta");
        e[delta].as_object_mut().unwrap().remove("item_id");
        // (the SDK's schema already requires it)
        broken.push(("delta without item_id", "does not match the SDK type", e));

        let mut e = valid_tools();
        let done = e
            .iter()
            .position(|x| x["type"] == "response.output_item.done" && x["output_index"] == 2)
            .unwrap();
        e[done]["item"]["name"] = json!("other");
        broken.push(("item.done renames the call", "call_id/name differ", e));

        let mut e = valid_tools();
        let last = e.len() - 1;
        e[last]["response"]["output"][3]["arguments"] = json!("{\"x\":1}");
        broken.push((
            "final output arguments differ",
            "differs from the streamed call",
            e,
        ));

        let mut e = valid_tools();
        let last = e.len() - 1;
        e[last]["response"]["output"][2]["call_id"] = json!("call_z");
        broken.push((
            "final output call_id differs",
            "differs from the streamed call",
            e,
        ));

        for (name, expected, events) in broken {
            match check(&render(&events)) {
                Ok(_) => panic!("{name} was accepted"),
                Err(e) => assert!(
                    e.contains(expected),
                    "{name}: rejected for another reason: {e}"
                ),
            }
        }
    }
}
