//! Domain events → Responses API output items and stream events.
//!
//! One [`ResponsesEncoder`] builds both forms, so the non-streamed response is exactly what a
//! stream would have completed with. Events are grouped into output items by kind, in arrival
//! order: thoughts into a `reasoning` item (one `summary_text` part), text into a `message`
//! item (one `output_text` part), each generated image into an `image_generation_call` item
//! (`result` = base64), each tool call into a `function_call` item. Videos and other media
//! become a markdown link in the message text. When the kind changes the open item is closed
//! and a new one opened, so a thought that arrives after text has started opens a new
//! reasoning item (and later text a new message item).
//!
//! Citations (web-search grounding) become `url_citation` annotations of the `output_text`
//! part holding the cited text (offsets in code points of that part's text, see
//! `openai::citations`), each announced by `response.output_text.annotation.added` while
//! the message is open (after the deltas it covers) and listed in the finished part. A
//! finished item does not change: a citation for a message item already closed (the upstream
//! sends sources right after the text they cover, so only a thought, an image or a tool call
//! in between closes it) is dropped, and of a range spread over two message items only the
//! open one's part is annotated.
//!
//! Stream grammar (every event with `event: <type>` and an increasing `sequence_number`):
//! `response.created` → `response.in_progress` → per item: `response.output_item.added` →
//! (`response.reasoning_summary_part.added` → `…summary_text.delta`* → `…summary_text.done`
//! → `…summary_part.done` | `response.content_part.added` → (`response.output_text.delta` |
//! `response.output_text.annotation.added`)* → `response.output_text.done` →
//! `response.content_part.done` | `…function_call_arguments.delta` →
//! `…function_call_arguments.done`) → `response.output_item.done`; then
//! `response.completed`, or after a failure the open item is closed as `incomplete` and
//! `response.failed` carries the response with `status: "failed"` and `error`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use serde_json::{Value, json};

use super::parse::{Echo, text_config};
use crate::dialects::openai::citations::{TextMap, indexes, responses_annotation};
use crate::dialects::openai::convert::media_markdown;
use crate::dialects::openai::sse::KEEPALIVE;
use crate::dialects::stream::StreamEncoder;
use crate::domain::{
    Citation, FinishReason, GeneratedMedia, MediaKind, StreamEvent, ToolCall, Usage,
};
use crate::error::{Category, GatewayError};

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

#[derive(Debug)]
enum Open {
    Reasoning {
        id: String,
        text: String,
    },
    Message {
        id: String,
        text: String,
        annotations: Vec<Value>,
    },
}

/// Encodes one response, streamed (`emit`) or only built.
#[derive(Debug)]
pub struct ResponsesEncoder {
    id: String,
    created_at: u64,
    model: String,
    echo: Echo,
    seq: u64,
    /// Finished output items.
    output: Vec<Value>,
    open: Option<Open>,
    emit: bool,
    /// Where the answer's text went: targets are message items' output indexes.
    map: TextMap,
}

/// The Responses `usage` object.
pub fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens(),
    })
}

/// `ResponseError.code` for a failure (the SDK's type allows a fixed set).
fn error_code(error: &GatewayError) -> &'static str {
    match error.category() {
        Category::RateLimited | Category::QuotaExhausted => "rate_limit_exceeded",
        _ => "server_error",
    }
}

fn output_format(mime: &str) -> Value {
    match mime.to_ascii_lowercase().as_str() {
        "image/png" => json!("png"),
        "image/jpeg" | "image/jpg" => json!("jpeg"),
        "image/webp" => json!("webp"),
        "image/gif" => json!("gif"),
        _ => Value::Null,
    }
}

fn output_text_part(text: &str, annotations: &[Value]) -> Value {
    json!({"type": "output_text", "text": text, "annotations": annotations, "logprobs": []})
}

impl ResponsesEncoder {
    pub fn new(id: String, created_at: u64, model: String, echo: Echo, emit: bool) -> Self {
        Self {
            id,
            created_at,
            model,
            echo,
            seq: 0,
            output: Vec::new(),
            open: None,
            emit,
            map: TextMap::default(),
        }
    }

    /// A whole (non-streamed) answer as a `response` object.
    pub fn complete(mut self, events: &[StreamEvent], usage: Usage) -> Value {
        let mut sink = BytesMut::new();
        for event in events {
            self.push(event, &mut sink);
        }
        self.close("completed", &mut sink);
        self.response("completed", Some(usage), None)
    }

    /// The response object in its current state.
    fn response(&self, status: &str, usage: Option<Usage>, error: Option<Value>) -> Value {
        let e = &self.echo;
        let mut r = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": null,
            "instructions": e.instructions,
            "max_output_tokens": e.max_output_tokens,
            "model": self.model,
            "output": self.output,
            "parallel_tool_calls": e.parallel_tool_calls,
            "previous_response_id": null,
            "reasoning": null,
            "store": false,
            "temperature": e.temperature,
            "text": text_config(),
            "tool_choice": e.tool_choice,
            "tools": [],
            "top_p": e.top_p,
            "truncation": e.truncation,
            "usage": usage.map(usage_json),
            "user": e.user,
            "metadata": e.metadata,
        });
        if status == "completed"
            && let Some(o) = r.as_object_mut()
        {
            o.insert("completed_at".into(), json!(super::super::unix_now()));
        }
        r
    }

    /// Writes one event (`event:` line + `data:` with the next sequence number).
    fn send(&mut self, mut event: Value, out: &mut BytesMut) {
        let seq = self.seq;
        self.seq += 1;
        if !self.emit {
            return;
        }
        let kind = event["type"].as_str().unwrap_or_default().to_owned();
        if let Some(o) = event.as_object_mut() {
            o.insert("sequence_number".into(), json!(seq));
        }
        let Ok(data) = serde_json::to_vec(&event) else {
            return;
        };
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\n\n");
    }

    /// Closes the open item (if any) with `status` and appends it to the output.
    fn close(&mut self, status: &str, out: &mut BytesMut) {
        let index = self.output.len();
        let item = match self.open.take() {
            None => return,
            Some(Open::Reasoning { id, text }) => {
                self.send(
                    json!({"type": "response.reasoning_summary_text.done", "item_id": id,
                        "output_index": index, "summary_index": 0, "text": text}),
                    out,
                );
                let part = json!({"type": "summary_text", "text": text});
                self.send(
                    json!({"type": "response.reasoning_summary_part.done", "item_id": id,
                        "output_index": index, "summary_index": 0, "part": part}),
                    out,
                );
                json!({"type": "reasoning", "id": id, "summary": [part], "status": status})
            }
            Some(Open::Message {
                id,
                text,
                annotations,
            }) => {
                self.send(
                    json!({"type": "response.output_text.done", "item_id": id,
                        "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
                    out,
                );
                let part = output_text_part(&text, &annotations);
                self.send(
                    json!({"type": "response.content_part.done", "item_id": id,
                        "output_index": index, "content_index": 0, "part": part}),
                    out,
                );
                json!({"type": "message", "id": id, "status": status, "role": "assistant",
                    "content": [part]})
            }
        };
        self.finish_item(item, out);
    }

    fn finish_item(&mut self, item: Value, out: &mut BytesMut) {
        let index = self.output.len();
        self.send(
            json!({"type": "response.output_item.done", "output_index": index, "item": item}),
            out,
        );
        self.output.push(item);
    }

    fn thought(&mut self, t: &str, out: &mut BytesMut) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close("completed", out);
            let id = new_id("rs");
            let index = self.output.len();
            self.send(
                json!({"type": "response.output_item.added", "output_index": index,
                    "item": {"type": "reasoning", "id": id, "summary": [], "status": "in_progress"}}),
                out,
            );
            self.send(
                json!({"type": "response.reasoning_summary_part.added", "item_id": id,
                    "output_index": index, "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""}}),
                out,
            );
            self.open = Some(Open::Reasoning {
                id,
                text: String::new(),
            });
        }
        let index = self.output.len();
        if let Some(Open::Reasoning { id, text }) = &mut self.open {
            text.push_str(t);
            let event = json!({"type": "response.reasoning_summary_text.delta", "item_id": id,
                "output_index": index, "summary_index": 0, "delta": t});
            self.send(event, out);
        }
    }

    /// Appends `t` to the open message (opening one if needed); `answer_text` says whether
    /// it is the answer's text (which citations count in) or a media link.
    fn text(&mut self, t: &str, answer_text: bool, out: &mut BytesMut) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close("completed", out);
            let id = new_id("msg");
            let index = self.output.len();
            self.send(
                json!({"type": "response.output_item.added", "output_index": index,
                    "item": {"type": "message", "id": id, "status": "in_progress",
                        "role": "assistant", "content": []}}),
                out,
            );
            self.send(
                json!({"type": "response.content_part.added", "item_id": id,
                    "output_index": index, "content_index": 0,
                    "part": output_text_part("", &[])}),
                out,
            );
            self.open = Some(Open::Message {
                id,
                text: String::new(),
                annotations: Vec::new(),
            });
        }
        let index = self.output.len();
        if let Some(Open::Message { id, text, .. }) = &mut self.open {
            if answer_text {
                self.map.push(t.len(), index, text.len());
            }
            text.push_str(t);
            let event = json!({"type": "response.output_text.delta", "item_id": id,
                "output_index": index, "content_index": 0, "delta": t, "logprobs": []});
            self.send(event, out);
        }
    }

    /// Annotates the open message's text with `c` (the part of its range in that message).
    fn citation(&mut self, c: &Citation, out: &mut BytesMut) {
        let index = self.output.len();
        for span in self.map.locate(c) {
            let Some(Open::Message {
                id,
                text,
                annotations,
            }) = &mut self.open
            else {
                return;
            };
            if span.target != index {
                continue;
            }
            let Some((start, end)) = indexes(text, span) else {
                continue;
            };
            let annotation = responses_annotation(c, start, end);
            annotations.push(annotation.clone());
            let event = json!({"type": "response.output_text.annotation.added", "item_id": id,
                "output_index": index, "content_index": 0,
                "annotation_index": annotations.len() - 1, "annotation": annotation});
            self.send(event, out);
        }
    }

    fn image(&mut self, m: &GeneratedMedia, out: &mut BytesMut) {
        self.close("completed", out);
        let id = new_id("ig");
        let index = self.output.len();
        self.send(
            json!({"type": "response.output_item.added", "output_index": index,
                "item": {"type": "image_generation_call", "id": id, "status": "in_progress",
                    "result": null}}),
            out,
        );
        let item = json!({"type": "image_generation_call", "id": id, "status": "completed",
            "result": STANDARD.encode(&m.data), "output_format": output_format(&m.mime)});
        self.finish_item(item, out);
    }

    fn tool_call(&mut self, c: &ToolCall, out: &mut BytesMut) {
        self.close("completed", out);
        let id = new_id("fc");
        let call_id = if c.id.is_empty() {
            new_id("call")
        } else {
            c.id.clone()
        };
        let index = self.output.len();
        self.send(
            json!({"type": "response.output_item.added", "output_index": index,
                "item": {"type": "function_call", "id": id, "call_id": call_id, "name": c.name,
                    "arguments": "", "status": "in_progress"}}),
            out,
        );
        self.send(
            json!({"type": "response.function_call_arguments.delta", "item_id": id,
                "output_index": index, "delta": c.arguments}),
            out,
        );
        self.send(
            json!({"type": "response.function_call_arguments.done", "item_id": id,
                "output_index": index, "name": c.name, "arguments": c.arguments}),
            out,
        );
        let item = json!({"type": "function_call", "id": id, "call_id": call_id, "name": c.name,
            "arguments": c.arguments, "status": "completed"});
        self.finish_item(item, out);
    }

    fn push(&mut self, event: &StreamEvent, out: &mut BytesMut) {
        match event {
            StreamEvent::Thought(t) if !t.is_empty() => self.thought(t, out),
            StreamEvent::Text(t) if !t.is_empty() => self.text(t, true, out),
            StreamEvent::Thought(_) | StreamEvent::Text(_) => {}
            StreamEvent::Media(m) if MediaKind::from_mime(&m.mime) == MediaKind::Image => {
                self.image(m, out)
            }
            StreamEvent::Media(m) => self.text(&media_markdown(m, false), false, out),
            StreamEvent::Citation(c) => self.citation(c, out),
            StreamEvent::ToolCall(c) => self.tool_call(c, out),
        }
    }
}

impl StreamEncoder for ResponsesEncoder {
    fn open(&mut self, out: &mut BytesMut) {
        let response = self.response("in_progress", None, None);
        self.send(
            json!({"type": "response.created", "response": response}),
            out,
        );
        self.send(
            json!({"type": "response.in_progress", "response": response}),
            out,
        );
    }

    fn event(&mut self, event: &StreamEvent, out: &mut BytesMut) {
        self.push(event, out);
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&KEEPALIVE);
    }

    fn finish(&mut self, _reason: FinishReason, usage: Usage, out: &mut BytesMut) {
        self.close("completed", out);
        let response = self.response("completed", Some(usage), None);
        self.send(
            json!({"type": "response.completed", "response": response}),
            out,
        );
    }

    fn fail(&mut self, error: &GatewayError, usage: Usage, out: &mut BytesMut) {
        self.close("incomplete", out);
        let error = json!({"code": error_code(error), "message": error.client_message()});
        let response = self.response("failed", Some(usage), Some(error));
        self.send(
            json!({"type": "response.failed", "response": response}),
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn events(raw: &[u8]) -> Vec<(String, Value)> {
        std::str::from_utf8(raw)
            .unwrap()
            .split("\n\n")
            .filter(|b| !b.is_empty())
            .map(|b| {
                let (e, d) = b.split_once('\n').unwrap();
                (
                    e.strip_prefix("event: ").unwrap().to_owned(),
                    serde_json::from_str(d.strip_prefix("data: ").unwrap()).unwrap(),
                )
            })
            .collect()
    }

    fn encoder() -> ResponsesEncoder {
        ResponsesEncoder::new(
            "resp_1".into(),
            5,
            "gemini-2.5-flash".into(),
            Echo::default(),
            true,
        )
    }

    #[test]
    fn the_event_order() {
        let mut enc = encoder();
        let mut out = BytesMut::new();
        enc.open(&mut out);
        for e in [
            StreamEvent::Thought("a".into()),
            StreamEvent::Thought("b".into()),
            StreamEvent::Text("x".into()),
            StreamEvent::Text("y".into()),
        ] {
            StreamEncoder::event(&mut enc, &e, &mut out);
        }
        enc.finish(FinishReason::Stop, Usage::default(), &mut out);
        let got = events(&out);
        let types: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            types,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (t, v)) in got.iter().enumerate() {
            assert_eq!(v["type"], *t);
            assert_eq!(v["sequence_number"], i);
        }
        let done = &got.last().unwrap().1["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][0]["summary"][0]["text"], "ab");
        assert_eq!(done["output"][1]["content"][0]["text"], "xy");
        assert_eq!(done["output"][1]["id"], got[9].1["item"]["id"]);
    }

    #[test]
    fn citations_are_annotations_of_the_message_holding_their_text() {
        use crate::dialects::openai::convert::tests::{citation_of, slice_chars};
        let pieces = ["Café 𝄞 au lait ☕ is ", "coffee with hot milk. "];
        let later = "Rust 1.0 shipped in 2015.";
        let text = format!("{}{later}", pieces.concat());
        let cite = |cited: &str, url: &str| {
            StreamEvent::Citation(citation_of(&text, cited, url, &format!("About {cited}")))
        };
        let mut script: Vec<StreamEvent> = pieces
            .iter()
            .map(|p| StreamEvent::Text((*p).into()))
            .collect();
        script.push(cite("coffee with hot milk", "https://a.example"));
        // A thought closes the first message; the rest of the text opens a second one.
        script.push(StreamEvent::Thought("more".into()));
        script.push(StreamEvent::Text(later.into()));
        script.push(cite("Rust 1.0", "https://b.example"));
        // A range over both messages: only the open message's part is annotated.
        script.push(cite("milk. Rust", "https://c.example"));
        // Out of range: dropped.
        let mut beyond = citation_of(&text, "2015", "https://d.example", "d");
        beyond.end = text.len() + 4;
        script.push(StreamEvent::Citation(beyond));

        let mut enc = encoder();
        let mut out = BytesMut::new();
        enc.open(&mut out);
        for e in &script {
            StreamEncoder::event(&mut enc, e, &mut out);
        }
        enc.finish(FinishReason::Stop, Usage::default(), &mut out);
        let got = events(&out);
        let added: Vec<&Value> = got
            .iter()
            .filter(|(t, _)| t == "response.output_text.annotation.added")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(added.len(), 3);
        let done = &got.last().unwrap().1["response"];
        let texts: Vec<&str> = [0, 2]
            .iter()
            .map(|i| done["output"][i]["content"][0]["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, [pieces.concat().as_str(), later]);
        let expect = [
            (
                0,
                0,
                "https://a.example",
                "About coffee with hot milk",
                "coffee with hot milk",
            ),
            (2, 0, "https://b.example", "About Rust 1.0", "Rust 1.0"),
            (2, 1, "https://c.example", "About milk. Rust", "Rust"),
        ];
        for (e, (output_index, annotation_index, url, title, cited)) in added.iter().zip(expect) {
            assert_eq!(e["output_index"], output_index);
            assert_eq!(e["content_index"], 0);
            assert_eq!(e["annotation_index"], annotation_index);
            assert_eq!(
                e["item_id"], done["output"][output_index]["id"],
                "the annotation names its item"
            );
            let a = &e["annotation"];
            assert_eq!(
                (a["type"].as_str(), a["url"].as_str()),
                (Some("url_citation"), Some(url))
            );
            assert_eq!(a["title"], title);
            let part = &done["output"][output_index]["content"][0];
            let t = part["text"].as_str().unwrap();
            assert_eq!(slice_chars(t, &a["start_index"], &a["end_index"]), cited);
            assert_eq!(part["annotations"][annotation_index], *a);
        }
        assert_eq!(added[0]["annotation"]["start_index"], 20);
        // The event comes after the deltas it covers, before the text is done.
        let pos = |kind: &str, index: u64| {
            got.iter()
                .position(|(t, v)| t == kind && v["output_index"] == index)
                .unwrap()
        };
        let first = pos("response.output_text.annotation.added", 0);
        assert!(first > pos("response.output_text.delta", 0));
        assert!(first < pos("response.output_text.done", 0));
        // The content_part.done and output_item.done carry them too; the non-streamed form is
        // the same.
        let part_done = &got[pos("response.content_part.done", 2)].1["part"];
        assert_eq!(part_done["annotations"].as_array().unwrap().len(), 2);
        let whole = ResponsesEncoder::new("resp_3".into(), 1, "m".into(), Echo::default(), false)
            .complete(&script, Usage::default());
        for i in [0, 2] {
            assert_eq!(
                whole["output"][i]["content"][0]["annotations"],
                done["output"][i]["content"][0]["annotations"]
            );
        }
    }

    #[test]
    fn a_failure_closes_the_open_item_as_incomplete() {
        let mut enc = encoder();
        let mut out = BytesMut::new();
        enc.open(&mut out);
        StreamEncoder::event(&mut enc, &StreamEvent::Text("x".into()), &mut out);
        enc.fail(&GatewayError::Internal, Usage::default(), &mut out);
        let got = events(&out);
        let (t, last) = got.last().unwrap();
        assert_eq!(t, "response.failed");
        assert_eq!(last["response"]["status"], "failed");
        assert_eq!(last["response"]["error"]["code"], "server_error");
        assert_eq!(last["response"]["output"][0]["status"], "incomplete");
    }

    #[test]
    fn non_streamed_output_items() {
        let enc = ResponsesEncoder::new(
            "resp_2".into(),
            1,
            "gemini-2.5-flash-image".into(),
            Echo::default(),
            false,
        );
        let mut video = GeneratedMedia::new("video/mp4", Bytes::from_static(&[1]));
        video.url = Some("http://gw/media/v.mp4".into());
        let r = enc.complete(
            &[
                StreamEvent::Text("Here: ".into()),
                StreamEvent::Media(GeneratedMedia::new(
                    "image/png",
                    Bytes::from_static(&[1, 2]),
                )),
                StreamEvent::Media(video),
            ],
            Usage {
                input_tokens: 2,
                output_tokens: 3,
                reasoning_tokens: 0,
            },
        );
        let out = r["output"].as_array().unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0]["content"][0]["text"], "Here: ");
        assert_eq!(out[1]["type"], "image_generation_call");
        assert_eq!(out[1]["result"], "AQI=");
        assert_eq!(out[1]["output_format"], "png");
        assert_eq!(
            out[2]["content"][0]["text"],
            "[video](http://gw/media/v.mp4)"
        );
        assert_eq!(r["usage"]["total_tokens"], 5);
        assert!(r["completed_at"].is_u64());
    }
}
