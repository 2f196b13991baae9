//! Domain events → Chat Completions SSE frames (`data: <json>\n\n`, ending with `data: [DONE]`).

use bytes::{BufMut, Bytes, BytesMut};

use super::convert::{finish_reason_str, media_markdown, usage_out};
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
            StreamEvent::Text(t) => self.chunk(
                Delta {
                    content: Some(t),
                    ..Delta::default()
                },
                None,
            ),
            StreamEvent::Thought(t) => self.chunk(
                Delta {
                    reasoning_content: Some(t),
                    ..Delta::default()
                },
                None,
            ),
            StreamEvent::Media(m) => {
                let md = media_markdown(m, self.inline_media);
                self.chunk(
                    Delta {
                        content: Some(&md),
                        ..Delta::default()
                    },
                    None,
                )
            }
            StreamEvent::Citation(_) => Bytes::new(),
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
    fn without_include_usage_there_is_no_usage_key() {
        let enc = ChunkEncoder::new("id".into(), 1, "m".into(), false, false);
        assert!(json(&enc.role()).get("usage").is_none());
        assert!(enc.usage(Usage::default()).is_none());
    }
}
