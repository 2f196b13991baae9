//! Domain events → Anthropic Messages SSE (`event: <type>` + `data: <json>` per event).
//!
//! The grammar this encoder writes (and `tests/src/check/anthropic.rs` enforces):
//!
//! ```text
//! message_start                       (message: id msg_…, content [], stop_reason null, usage)
//! ( content_block_start(i)            (i = 0, 1, 2 … contiguous)
//!   content_block_delta(i)*           (thinking_delta | signature_delta | text_delta | citations_delta
//!                                      | input_json_delta)
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
//!
//! Citations. Text is sent as it arrives, and a web source for it is known only later (a
//! [`StreamEvent::Citation`] follows the text it covers), so a cited run cannot be given a
//! block of its own as in the non-streamed answer. A citation is instead attached to the open
//! text block that holds its text, as a `citations_delta` after that text (the SDKs' stream
//! accumulators append it to the block's `citations`, in any order relative to the block's
//! `text_delta`s); its `cited_text` is the part of the block's text it covers. A citation that
//! reaches the end of the text sent so far ends the block: the next text starts a new one (not
//! at once: further sources of the same range, which come next, still attach to it). So when
//! the upstream names the sources of each piece of text before sending the next piece, blocks
//! follow the cited pieces; when it names them all at the end, they attach to the last text
//! block. A citation of text in a block already closed (the answer moved on to reasoning, a
//! tool call, media, or past a cited end) cannot be attached any more and is left out.

use bytes::BytesMut;
use serde_json::json;

use super::convert::{
    Sources, citation_out, cited_part, media_text, stop_reason, tool_id, tool_input,
};
use super::signature::ThinkingSigner;
use super::wire::{MessageOut, UsageOut};
use crate::dialects::stream::StreamEncoder;
use crate::domain::{Citation, FinishReason, StreamEvent, Usage};
use crate::error::GatewayError;

/// The keep-alive: a real event (Claude Code's idle watchdog ignores SSE comments).
pub const PING: &[u8] = b"event: ping\ndata: {\"type\": \"ping\"}\n\n";

#[derive(Debug)]
enum Open {
    None,
    Thinking {
        index: u32,
        text: String,
    },
    /// A text block holding the answer's visible text `[start, start + text.len())`
    /// (`text` stays empty for a media link, which is no part of it).
    Text {
        index: u32,
        start: usize,
        text: String,
        /// A citation reached the end of `text`: the next text starts a new block.
        cited_to_end: bool,
    },
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
    /// The visible text sent so far, in bytes.
    sent: usize,
    sources: Sources,
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
            sent: 0,
            sources: Sources::default(),
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
            Open::Text { index, .. } => Self::stop_block(index, out),
        }
    }

    /// The index of the open text block (opened when there is none, or when a citation
    /// ended the open one).
    fn text_index(&mut self, out: &mut BytesMut) -> u32 {
        if let Open::Text {
            index,
            cited_to_end: false,
            ..
        } = self.open
        {
            return index;
        }
        self.close(out);
        let index = self.start_block(json!({"type": "text", "text": ""}), out);
        self.open = Open::Text {
            index,
            start: self.sent,
            text: String::new(),
            cited_to_end: false,
        };
        index
    }

    /// Attaches `c` to the open text block when that block holds text it covers.
    fn cite(&mut self, c: &Citation, out: &mut BytesMut) {
        let Open::Text {
            index,
            start,
            text,
            cited_to_end,
        } = &mut self.open
        else {
            tracing::debug!(url = %c.url, "a citation with no open text block: left out");
            return;
        };
        let Some((s, e)) = cited_part(c, *start, text).filter(|_| c.end <= self.sent) else {
            tracing::debug!(url = %c.url, "a citation of text outside the open block: left out");
            return;
        };
        let citation = citation_out(c, &text[s..e], &mut self.sources);
        if c.end == self.sent {
            *cited_to_end = true;
        }
        let citation = serde_json::to_value(&citation).unwrap_or_default();
        Self::delta(
            *index,
            json!({"type": "citations_delta", "citation": citation}),
            out,
        );
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
                if let Open::Text { text, .. } = &mut self.open {
                    text.push_str(t);
                }
                self.sent += t.len();
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
            StreamEvent::Citation(c) => self.cite(c, out),
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

    fn cite(answer: &str, cited: &str, url: &str) -> StreamEvent {
        StreamEvent::Citation(Citation::of(answer, cited, url))
    }

    /// `(event name, block index, delta type)` of each event after `message_start`.
    fn shape(ev: &[(String, serde_json::Value)]) -> Vec<(String, i64, String)> {
        ev[1..]
            .iter()
            .map(|(e, d)| {
                (
                    e.clone(),
                    d["index"].as_i64().unwrap_or(-1),
                    d["delta"]["type"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    fn s(e: &str, i: i64, d: &str) -> (String, i64, String) {
        (e.to_owned(), i, d.to_owned())
    }

    #[test]
    fn citations_after_all_the_text_attach_to_its_block() {
        let pieces = [
            "Café 𝄞 au lait ☕ is ",
            "coffee with hot milk. ",
            "Rust 1.0 shipped in 2015.",
        ];
        let all = pieces.concat();
        let mut enc = encoder();
        let mut out = BytesMut::new();
        enc.open(&mut out);
        enc.event(&StreamEvent::Thought("Searching.".into()), &mut out);
        for p in pieces {
            enc.event(&StreamEvent::Text(p.into()), &mut out);
        }
        for e in [
            cite(&all, "coffee with hot milk", "https://a.example/cafe"),
            cite(&all, "coffee with hot milk", "https://b.example/lait"),
            cite(&all, "Rust 1.0 shipped in 2015", "https://a.example/cafe"),
        ] {
            enc.event(&e, &mut out);
        }
        enc.finish(FinishReason::Stop, Usage::default(), &mut out);
        let ev = events(&out);
        assert_eq!(
            shape(&ev),
            [
                s("content_block_start", 0, ""),
                s("content_block_delta", 0, "thinking_delta"),
                s("content_block_delta", 0, "signature_delta"),
                s("content_block_stop", 0, ""),
                s("content_block_start", 1, ""),
                s("content_block_delta", 1, "text_delta"),
                s("content_block_delta", 1, "text_delta"),
                s("content_block_delta", 1, "text_delta"),
                s("content_block_delta", 1, "citations_delta"),
                s("content_block_delta", 1, "citations_delta"),
                s("content_block_delta", 1, "citations_delta"),
                s("content_block_stop", 1, ""),
                s("message_delta", -1, ""),
                s("message_stop", -1, ""),
            ]
        );
        let citation = |n: usize| ev[n].1["delta"]["citation"].clone();
        assert_eq!(
            citation(9),
            json!({"type": "web_search_result_location", "url": "https://a.example/cafe",
                   "title": "title of https://a.example/cafe",
                   "encrypted_index": citation(9)["encrypted_index"],
                   "cited_text": "coffee with hot milk"})
        );
        assert_eq!(citation(10)["url"], "https://b.example/lait");
        assert_eq!(citation(11)["cited_text"], "Rust 1.0 shipped in 2015");
        // One source, one index; two sources, two.
        assert_eq!(
            citation(9)["encrypted_index"],
            citation(11)["encrypted_index"]
        );
        assert_ne!(
            citation(9)["encrypted_index"],
            citation(10)["encrypted_index"]
        );
    }

    #[test]
    fn a_citation_reaching_the_end_of_the_text_ends_its_block() {
        let all = "Le café ☕ est chaud. Il coûte 2 €. 𝄞 fin";
        let [first, second, third] = ["Le café ☕ est chaud.", " Il coûte 2 €.", " 𝄞 fin"];
        let mut enc = encoder();
        let mut out = BytesMut::new();
        enc.open(&mut out);
        enc.event(&StreamEvent::Text(first.into()), &mut out);
        // Two sources of the whole first piece: both attach to block 0.
        enc.event(
            &cite(all, "café ☕ est chaud.", "https://x.example/1"),
            &mut out,
        );
        enc.event(
            &cite(all, "café ☕ est chaud.", "https://x.example/2"),
            &mut out,
        );
        enc.event(&StreamEvent::Text(second.into()), &mut out);
        // Text of block 0, now closed: left out.
        enc.event(&cite(all, "Le café", "https://x.example/3"), &mut out);
        // Crossing into block 1: cut to its part there.
        enc.event(
            &cite(all, "chaud. Il coûte", "https://x.example/4"),
            &mut out,
        );
        // Past the text sent so far: broken, left out.
        enc.event(&cite(all, "€. 𝄞", "https://x.example/5"), &mut out);
        enc.event(&StreamEvent::Text(third.into()), &mut out);
        enc.event(&cite(all, "𝄞", "https://x.example/6"), &mut out);
        enc.finish(FinishReason::Stop, Usage::default(), &mut out);
        let ev = events(&out);
        assert_eq!(
            shape(&ev),
            [
                s("content_block_start", 0, ""),
                s("content_block_delta", 0, "text_delta"),
                s("content_block_delta", 0, "citations_delta"),
                s("content_block_delta", 0, "citations_delta"),
                s("content_block_stop", 0, ""),
                s("content_block_start", 1, ""),
                s("content_block_delta", 1, "text_delta"),
                s("content_block_delta", 1, "citations_delta"),
                s("content_block_delta", 1, "text_delta"),
                s("content_block_delta", 1, "citations_delta"),
                s("content_block_stop", 1, ""),
                s("message_delta", -1, ""),
                s("message_stop", -1, ""),
            ]
        );
        let cited = |n: usize| {
            let c = &ev[n].1["delta"]["citation"];
            (
                c["url"].as_str().unwrap().to_owned(),
                c["cited_text"].as_str().unwrap().to_owned(),
            )
        };
        let x = |n: u8, t: &str| (format!("https://x.example/{n}"), t.to_owned());
        assert_eq!(cited(3), x(1, "café ☕ est chaud."));
        assert_eq!(cited(4), x(2, "café ☕ est chaud."));
        assert_eq!(cited(8), x(4, " Il coûte"));
        assert_eq!(cited(10), x(6, "𝄞"));
    }
}
