//! Domain events → Anthropic Messages SSE (`event: <type>` + `data: <json>` per event).
//!
//! The grammar this encoder writes (and `tests/src/check/anthropic.rs` enforces):
//!
//! ```text
//! message_start                       (message: id msg_…, content [], stop_reason null, usage)
//! ( content_block_start(i)            (i = 0, 1, 2 … contiguous)
//!   content_block_delta(i)*           (thinking_delta | signature_delta | text_delta | input_json_delta)
//!   content_block_stop(i) )*
//! [ error ]                           (only when the answer could not complete)
//! message_delta                       (delta.stop_reason end_turn | tool_use, usage.output_tokens)
//! message_stop
//! ```
//!
//! with `ping` events anywhere after `message_start` while the upstream is silent. A thinking
//! block's last delta is its `signature_delta`. After an upstream failure the open block is
//! closed, `event: error` reports the failure (the official SDKs raise it), and the message is
//! still closed with `message_delta` + `message_stop` (stop reason `end_turn`: Anthropic has no
//! "error" stop reason) so that clients which ignore `error` events end cleanly instead of
//! waiting; then the body ends.

use bytes::BytesMut;
use serde_json::json;

use super::convert::{media_text, stop_reason, tool_id, tool_input};
use super::signature::ThinkingSigner;
use super::wire::{MessageOut, UsageOut};
use crate::dialects::stream::StreamEncoder;
use crate::domain::{FinishReason, StreamEvent, Usage};
use crate::error::GatewayError;

/// The keep-alive: a real event (Claude Code's idle watchdog ignores SSE comments).
pub const PING: &[u8] = b"event: ping\ndata: {\"type\": \"ping\"}\n\n";

#[derive(Debug)]
enum Open {
    None,
    Thinking { index: u32, text: String },
    Text { index: u32 },
}

/// Encodes the events of one message.
#[derive(Debug)]
pub struct MessageEncoder {
    id: String,
    model: String,
    input_tokens: u32,
    signer: ThinkingSigner,
    next_index: u32,
    open: Open,
    show_thinking: bool,
}

fn frame(out: &mut BytesMut, event: &str, data: &serde_json::Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl MessageEncoder {
    pub fn new(id: String, model: String, input_tokens: u32, signer: ThinkingSigner) -> Self {
        Self {
            id,
            model,
            input_tokens,
            signer,
            next_index: 0,
            open: Open::None,
            show_thinking: true,
        }
    }

    /// Whether reasoning becomes thinking blocks (false: it is left out).
    pub fn show_thinking(mut self, show: bool) -> Self {
        self.show_thinking = show;
        self
    }

    fn start_block(&mut self, block: serde_json::Value, out: &mut BytesMut) -> u32 {
        let index = self.next_index;
        self.next_index += 1;
        frame(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    fn delta(index: u32, delta: serde_json::Value, out: &mut BytesMut) {
        frame(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    fn stop_block(index: u32, out: &mut BytesMut) {
        frame(
            out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
    }

    /// Closes the open block (a thinking block gets its signature first).
    fn close(&mut self, out: &mut BytesMut) {
        match std::mem::replace(&mut self.open, Open::None) {
            Open::None => {}
            Open::Thinking { index, text } => {
                let signature = self.signer.sign(&text);
                Self::delta(
                    index,
                    json!({"type": "signature_delta", "signature": signature}),
                    out,
                );
                Self::stop_block(index, out);
            }
            Open::Text { index } => Self::stop_block(index, out),
        }
    }

    fn text_index(&mut self, out: &mut BytesMut) -> u32 {
        if let Open::Text { index } = self.open {
            return index;
        }
        self.close(out);
        let index = self.start_block(json!({"type": "text", "text": ""}), out);
        self.open = Open::Text { index };
        index
    }

    fn end(&mut self, reason: FinishReason, usage: Usage, out: &mut BytesMut) {
        frame(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(reason), "stop_sequence": null},
                "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
            }),
        );
        frame(out, "message_stop", &json!({"type": "message_stop"}));
    }
}

impl StreamEncoder for MessageEncoder {
    fn open(&mut self, out: &mut BytesMut) {
        let message = MessageOut {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: UsageOut::new(self.input_tokens, 1),
        };
        let message = serde_json::to_value(&message).unwrap_or_default();
        frame(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
    }

    fn event(&mut self, event: &StreamEvent, out: &mut BytesMut) {
        match event {
            StreamEvent::Thought(_) if !self.show_thinking => {}
            StreamEvent::Thought(t) if !t.is_empty() => {
                let index = match &mut self.open {
                    Open::Thinking { index, text } => {
                        text.push_str(t);
                        *index
                    }
                    _ => {
                        self.close(out);
                        let index = self.start_block(
                            json!({"type": "thinking", "thinking": "", "signature": ""}),
                            out,
                        );
                        self.open = Open::Thinking {
                            index,
                            text: t.clone(),
                        };
                        index
                    }
                };
                Self::delta(index, json!({"type": "thinking_delta", "thinking": t}), out);
            }
            StreamEvent::Text(t) if !t.is_empty() => {
                let index = self.text_index(out);
                Self::delta(index, json!({"type": "text_delta", "text": t}), out);
            }
            StreamEvent::Thought(_) | StreamEvent::Text(_) => {}
            StreamEvent::Media(m) => {
                // A text block of its own, holding the link.
                self.close(out);
                let index = self.text_index(out);
                Self::delta(
                    index,
                    json!({"type": "text_delta", "text": media_text(m)}),
                    out,
                );
                self.close(out);
            }
            StreamEvent::Citation(_) => {}
            StreamEvent::ToolCall(c) => {
                self.close(out);
                let index = self.start_block(
                    json!({"type": "tool_use", "id": tool_id(c), "name": c.name, "input": {}}),
                    out,
                );
                Self::delta(
                    index,
                    json!({"type": "input_json_delta", "partial_json": tool_input(&c.arguments).to_string()}),
                    out,
                );
                Self::stop_block(index, out);
            }
        }
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(PING);
    }

    fn finish(&mut self, reason: FinishReason, usage: Usage, out: &mut BytesMut) {
        self.close(out);
        self.end(reason, usage, out);
    }

    fn fail(&mut self, error: &GatewayError, usage: Usage, out: &mut BytesMut) {
        self.close(out);
        frame(
            out,
            "error",
            &json!({"type": "error", "error": super::error::object(error)}),
        );
        self.end(FinishReason::Stop, usage, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{GeneratedMedia, ToolCall};
    use crate::upstream::{ErrorKind, UpstreamError};
    use bytes::Bytes;

    fn events(raw: &[u8]) -> Vec<(String, serde_json::Value)> {
        std::str::from_utf8(raw)
            .unwrap()
            .split("\n\n")
            .filter(|b| !b.is_empty())
            .map(|b| {
                let (e, d) = b.split_once('\n').unwrap();
                let e = e.strip_prefix("event: ").unwrap().to_owned();
                let d: serde_json::Value =
                    serde_json::from_str(d.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(d["type"], e.as_str());
                (e, d)
            })
            .collect()
    }

    fn encoder() -> MessageEncoder {
        MessageEncoder::new(
            "msg_1".into(),
            "gemini-2.5-flash".into(),
            7,
            ThinkingSigner::from_key([1; 32]),
        )
    }

    #[test]
    fn a_whole_answer() {
        let mut enc = encoder();
        let mut out = BytesMut::new();
        enc.open(&mut out);
        enc.keepalive(&mut out);
        enc.event(&StreamEvent::Thought("a".into()), &mut out);
        enc.event(&StreamEvent::Thought("b".into()), &mut out);
        enc.event(&StreamEvent::Text("x".into()), &mut out);
        enc.event(&StreamEvent::Text("y".into()), &mut out);
        enc.event(
            &StreamEvent::Media(GeneratedMedia {
                mime: "image/png".into(),
                data: Bytes::from_static(&[1]),
                url: Some("http://gw/media/t.png".into()),
            }),
            &mut out,
        );
        enc.event(
            &StreamEvent::ToolCall(ToolCall {
                id: "toolu_9".into(),
                name: "f".into(),
                arguments: "{\"a\":1}".into(),
            }),
            &mut out,
        );
        enc.finish(
            FinishReason::ToolCalls,
            Usage {
                input_tokens: 7,
                output_tokens: 4,
                reasoning_tokens: 1,
            },
            &mut out,
        );
        let ev = events(&out);
        let names: Vec<&str> = ev.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let start = &ev[0].1["message"];
        assert_eq!(start["id"], "msg_1");
        assert_eq!(start["content"], json!([]));
        assert!(start["stop_reason"].is_null());
        assert_eq!(start["usage"]["input_tokens"], 7);
        let sig = ev[5].1["delta"]["signature"].as_str().unwrap();
        assert!(ThinkingSigner::from_key([1; 32]).verify("ab", sig));
        assert_eq!(ev[12].1["delta"]["text"], "![image](http://gw/media/t.png)");
        assert_eq!(ev[14].1["index"], 3);
        assert_eq!(ev[15].1["delta"]["partial_json"], "{\"a\":1}");
        assert_eq!(ev[17].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(ev[17].1["usage"]["output_tokens"], 4);
    }

    #[test]
    fn a_failure_closes_the_block_reports_and_ends_the_message() {
        let mut enc = encoder();
        let mut out = BytesMut::new();
        enc.open(&mut out);
        enc.event(&StreamEvent::Text("partial".into()), &mut out);
        let e = GatewayError::Upstream(UpstreamError::new(
            ErrorKind::Transport,
            "widgetStreamAssist",
            "connection reset",
        ));
        enc.fail(&e, Usage::default(), &mut out);
        let names: Vec<String> = events(&out).into_iter().map(|(e, _)| e).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "error",
                "message_delta",
                "message_stop"
            ]
        );
        let err = &events(&out)[4].1;
        assert_eq!(err["error"]["type"], "api_error");
    }
}
