//! Domain events → Chat Completions SSE frames (`data: <json>\n\n`, ending with `data: [DONE]`).
//!
//! Citations are gathered as they come (offsets on the `content` sent so far, see
//! [`super::citations`]) and sent together in one `delta.annotations` chunk before the finish
//! chunk, as OpenAI's search models do: the SDK's stream helper cannot merge two such deltas.

use bytes::{BufMut, Bytes, BytesMut};

use super::citations::TextMap;
use super::convert::{chat_annotation_of, finish_reason_str, media_markdown, usage_out};
use super::wire::{ChatCompletionChunk, ChunkChoice, Delta, FunctionDelta, ToolCallDelta};
use crate::dialects::stream::StreamEncoder;
use crate::domain::{FinishReason, StreamEvent, Usage};
use crate::error::GatewayError;

/// An SSE comment: ignored by clients, keeps proxies and idle timers from closing the stream.
pub const KEEPALIVE: Bytes = Bytes::from_static(b": keep-alive\n\n");
/// The last frame of every stream.
pub const DONE: Bytes = Bytes::from_static(b"data: [DONE]\n\n");

/// Encodes the chunks of one answer.
#[derive(Debug)]
pub struct ChunkEncoder {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// Generated media as inline data URIs rather than links (`media.inline_in_chat`).
    inline_media: bool,
    next_tool_index: u32,
    /// The `content` sent so far, and where the answer's text is in it (for citations).
    content: String,
    map: TextMap,
    /// The `url_citation` annotations, sent in one delta before the finish chunk.
    annotations: Vec<serde_json::Value>,
}

fn frame(json: &impl serde::Serialize) -> Bytes {
    let mut buf = BytesMut::with_capacity(128).writer();
    std::io::Write::write_all(&mut buf, b"data: ").ok();
    if serde_json::to_writer(&mut buf, json).is_err() {
        return Bytes::new();
    }
    std::io::Write::write_all(&mut buf, b"\n\n").ok();
    buf.into_inner().freeze()
}

impl ChunkEncoder {
    pub fn new(
        id: String,
        created: u64,
        model: String,
        include_usage: bool,
        inline_media: bool,
    ) -> Self {
        Self {
            id,
            created,
            model,
            include_usage,
            inline_media,
            next_tool_index: 0,
            content: String::new(),
            map: TextMap::default(),
            annotations: Vec::new(),
        }
    }

    fn chunk(&self, delta: Delta<'_>, finish_reason: Option<&'static str>) -> Bytes {
        frame(&ChatCompletionChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            usage: self.include_usage.then_some(None),
        })
    }

    /// The first chunk: the assistant role.
    pub fn role(&self) -> Bytes {
        self.chunk(
            Delta {
                role: Some("assistant"),
                content: Some(""),
                ..Delta::default()
            },
            None,
        )
    }

    /// One event.
    pub fn event(&mut self, event: &StreamEvent) -> Bytes {
        match event {
            StreamEvent::Text(t) => {
                self.map.push(t.len(), 0, self.content.len());
                self.content.push_str(t);
                self.chunk(
                    Delta {
                        content: Some(t),
                        ..Delta::default()
                    },
                    None,
                )
            }
            StreamEvent::Thought(t) => self.chunk(
                Delta {
                    reasoning_content: Some(t),
                    ..Delta::default()
                },
                None,
            ),
            StreamEvent::Media(m) => {
                let md = media_markdown(m, self.inline_media);
                self.content.push_str(&md);
                self.chunk(
                    Delta {
                        content: Some(&md),
                        ..Delta::default()
                    },
                    None,
                )
            }
            StreamEvent::Citation(c) => {
                if let Some(a) = chat_annotation_of(&self.map, &self.content, c) {
                    self.annotations.push(a);
                }
                Bytes::new()
            }
            StreamEvent::ToolCall(c) => {
                let index = self.next_tool_index;
                self.next_tool_index += 1;
                self.chunk(
                    Delta {
                        tool_calls: Some([ToolCallDelta {
                            index,
                            id: &c.id,
                            kind: "function",
                            function: FunctionDelta {
                                name: &c.name,
                                arguments: &c.arguments,
                            },
                        }]),
                        ..Delta::default()
                    },
                    None,
                )
            }
        }
    }

    /// The chunk with every annotation (`delta.annotations`), if the answer cited sources.
    pub fn annotations(&self) -> Option<Bytes> {
        (!self.annotations.is_empty()).then(|| {
            self.chunk(
                Delta {
                    annotations: Some(&self.annotations),
                    ..Delta::default()
                },
                None,
            )
        })
    }

    /// The chunk that carries `finish_reason`, on its own.
    pub fn finish(&self, reason: FinishReason) -> Bytes {
        self.chunk(Delta::default(), Some(finish_reason_str(reason)))
    }

    /// The usage chunk (`choices: []`), sent only when the client asked for usage.
    pub fn usage(&self, usage: Usage) -> Option<Bytes> {
        self.include_usage.then(|| {
            frame(&ChatCompletionChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: Vec::new(),
                usage: Some(Some(usage_out(usage))),
            })
        })
    }

    /// A mid-stream failure: a chunk with a top-level `error` (which makes SDKs raise).
    pub fn error(&self, error: &GatewayError) -> Bytes {
        let mut buf = BytesMut::from(&b"data: "[..]);
        buf.extend_from_slice(&super::error::body(error));
        buf.extend_from_slice(b"\n\n");
        buf.freeze()
    }
}

impl StreamEncoder for ChunkEncoder {
    fn open(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&self.role());
    }

    fn event(&mut self, event: &StreamEvent, out: &mut BytesMut) {
        out.extend_from_slice(&ChunkEncoder::event(self, event));
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&KEEPALIVE);
    }

    fn finish(&mut self, reason: FinishReason, usage: Usage, out: &mut BytesMut) {
        if let Some(a) = self.annotations() {
            out.extend_from_slice(&a);
        }
        out.extend_from_slice(&ChunkEncoder::finish(self, reason));
        if let Some(u) = ChunkEncoder::usage(self, usage) {
            out.extend_from_slice(&u);
        }
        out.extend_from_slice(&DONE);
    }

    fn fail(&mut self, error: &GatewayError, _usage: Usage, out: &mut BytesMut) {
        out.extend_from_slice(&self.error(error));
        out.extend_from_slice(&DONE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ToolCall;

    fn json(frame: &Bytes) -> serde_json::Value {
        let s = std::str::from_utf8(frame).unwrap();
        let body = s
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn chunks_follow_the_checklist() {
        let mut enc = ChunkEncoder::new(
            "chatcmpl-x".into(),
            5,
            "gemini-2.5-flash".into(),
            true,
            false,
        );
        let role = json(&enc.role());
        assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
        assert!(role["usage"].is_null() && role.as_object().unwrap().contains_key("usage"));
        let t = json(&enc.event(&StreamEvent::Thought("hm".into())));
        assert_eq!(t["choices"][0]["delta"]["reasoning_content"], "hm");
        assert!(t["choices"][0]["delta"].get("content").is_none());
        let call = ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments: "{}".into(),
        };
        let c1 = json(&enc.event(&StreamEvent::ToolCall(call.clone())));
        let c2 = json(&enc.event(&StreamEvent::ToolCall(call)));
        assert_eq!(c1["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(c2["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        let fin = json(&enc.finish(FinishReason::ToolCalls));
        assert_eq!(fin["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(fin["choices"][0]["delta"], serde_json::json!({}));
        let u = json(
            &enc.usage(Usage {
                input_tokens: 1,
                output_tokens: 2,
                reasoning_tokens: 0,
            })
            .unwrap(),
        );
        assert_eq!(u["choices"], serde_json::json!([]));
        assert_eq!(u["usage"]["total_tokens"], 3);
    }

    #[test]
    fn citations_come_in_one_annotations_delta_before_the_finish_chunk() {
        use crate::dialects::openai::convert::tests::{citation_of, slice_chars};
        let mut enc = ChunkEncoder::new("id".into(), 1, "m".into(), false, true);
        let pieces = ["é ☕ 𝄞 ", "coffee", " and tea."];
        let text: String = pieces.concat();
        let mut out = BytesMut::new();
        StreamEncoder::open(&mut enc, &mut out);
        let mut content = String::new();
        for p in pieces {
            content.push_str(p);
            StreamEncoder::event(&mut enc, &StreamEvent::Text(p.into()), &mut out);
            if p == "coffee" {
                // Cited as soon as its text is out: nothing is sent yet.
                let before = out.len();
                let c = citation_of(&text, "coffee", "https://c.example", "Coffee");
                StreamEncoder::event(&mut enc, &StreamEvent::Citation(c), &mut out);
                assert_eq!(out.len(), before);
            }
        }
        let c = citation_of(&text, "tea", "https://t.example", "Tea");
        StreamEncoder::event(&mut enc, &StreamEvent::Citation(c), &mut out);
        StreamEncoder::finish(&mut enc, FinishReason::Stop, Usage::default(), &mut out);
        let frames: Vec<Bytes> = std::str::from_utf8(&out)
            .unwrap()
            .split_inclusive("\n\n")
            .map(|f| Bytes::copy_from_slice(f.as_bytes()))
            .collect();
        assert_eq!(frames.last().unwrap(), &DONE);
        let n = frames.len();
        let fin = json(&frames[n - 2]);
        assert_eq!(fin["choices"][0]["finish_reason"], "stop");
        let ann = json(&frames[n - 3]);
        let delta = &ann["choices"][0]["delta"];
        assert!(delta.get("content").is_none() && ann["choices"][0]["finish_reason"].is_null());
        let a = delta["annotations"].as_array().unwrap();
        assert_eq!(a.len(), 2);
        let got: Vec<(String, String, String)> = a
            .iter()
            .map(|a| {
                let c = &a["url_citation"];
                (
                    c["url"].as_str().unwrap().to_owned(),
                    c["title"].as_str().unwrap().to_owned(),
                    slice_chars(&content, &c["start_index"], &c["end_index"]),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("https://c.example".into(), "Coffee".into(), "coffee".into()),
                ("https://t.example".into(), "Tea".into(), "tea".into())
            ]
        );
        assert_eq!(a[0]["url_citation"]["start_index"], 6);
        // No citations, no annotations chunk.
        let enc = ChunkEncoder::new("id".into(), 1, "m".into(), false, false);
        assert!(enc.annotations().is_none());
    }

    #[test]
    fn without_include_usage_there_is_no_usage_key() {
        let enc = ChunkEncoder::new("id".into(), 1, "m".into(), false, false);
        assert!(json(&enc.role()).get("usage").is_none());
        assert!(enc.usage(Usage::default()).is_none());
    }
}
