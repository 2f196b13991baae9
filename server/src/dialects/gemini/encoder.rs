//! Domain events → `streamGenerateContent` chunks, in either framing:
//!
//! - **SSE** (`?alt=sse`): `data: <GenerateContentResponse>\n\n` per chunk. There is no SSE
//!   comment keep-alive: google-genai's Python parser hands every line that does not start with
//!   `data: ` to `json.loads` (a `: keep-alive` comment raises `UnknownApiResponseError`), and
//!   the JavaScript parsers match `^data: ` at the start of their buffer (a stray blank line
//!   stalls them). During upstream silence the gateway therefore sends a real chunk whose only
//!   part is an empty text, which every client reads as "nothing new".
//! - **JSON array** (no `alt=sse`): `[` chunk `,\n` chunk … `]`; keep-alives are newlines
//!   between elements (JSON whitespace).
//!
//! Each chunk carries the parts of one event; the last one carries `finishReason: "STOP"` and
//! `usageMetadata`. A failure after the response committed is a last element
//! `{"error":{"code","message","status"}}` (the shape google-genai raises on).

use std::borrow::Cow;

use bytes::BytesMut;

use super::convert::{part_of, usage_metadata};
use super::wire::{Candidate, ContentOut, GenerateContentResponse, PartOut, UsageMetadata};
use crate::dialects::stream::StreamEncoder;
use crate::domain::{FinishReason, StreamEvent, Usage};
use crate::error::GatewayError;

/// How the chunks are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Sse,
    Array,
}

/// Encodes the chunks of one streamed answer.
#[derive(Debug)]
pub struct ChunkEncoder {
    framing: Framing,
    model: String,
    response_id: String,
    include_thoughts: bool,
    elements: usize,
}

impl ChunkEncoder {
    pub fn new(
        framing: Framing,
        model: String,
        response_id: String,
        include_thoughts: bool,
    ) -> Self {
        Self {
            framing,
            model,
            response_id,
            include_thoughts,
            elements: 0,
        }
    }

    fn element(&mut self, json: &[u8], out: &mut BytesMut) {
        match self.framing {
            Framing::Sse => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(json);
                out.extend_from_slice(b"\n\n");
            }
            Framing::Array => {
                if self.elements > 0 {
                    out.extend_from_slice(b",\n");
                }
                out.extend_from_slice(json);
            }
        }
        self.elements += 1;
    }

    fn chunk(
        &mut self,
        parts: Vec<PartOut<'_>>,
        finish_reason: Option<&'static str>,
        usage: Option<UsageMetadata>,
        out: &mut BytesMut,
    ) {
        let chunk = GenerateContentResponse {
            candidates: vec![Candidate {
                content: ContentOut {
                    role: "model",
                    parts,
                },
                finish_reason,
                index: 0,
            }],
            usage_metadata: usage,
            model_version: &self.model,
            response_id: &self.response_id,
        };
        let json = serde_json::to_vec(&chunk).unwrap_or_default();
        self.element(&json, out);
    }

    fn empty_text() -> Vec<PartOut<'static>> {
        vec![PartOut::Text {
            text: Cow::Borrowed(""),
            thought: None,
        }]
    }
}

impl StreamEncoder for ChunkEncoder {
    fn content_type(&self) -> &'static str {
        match self.framing {
            Framing::Sse => "text/event-stream",
            Framing::Array => "application/json",
        }
    }

    fn open(&mut self, out: &mut BytesMut) {
        if self.framing == Framing::Array {
            out.extend_from_slice(b"[");
        }
    }

    fn event(&mut self, event: &StreamEvent, out: &mut BytesMut) {
        if let Some(part) = part_of(event, self.include_thoughts) {
            // The part borrows the event, not the encoder: serialise it before the next call.
            let chunk = GenerateContentResponse {
                candidates: vec![Candidate {
                    content: ContentOut {
                        role: "model",
                        parts: vec![part],
                    },
                    finish_reason: None,
                    index: 0,
                }],
                usage_metadata: None,
                model_version: &self.model,
                response_id: &self.response_id,
            };
            let json = serde_json::to_vec(&chunk).unwrap_or_default();
            self.element(&json, out);
        }
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        match self.framing {
            Framing::Sse => self.chunk(Self::empty_text(), None, None, out),
            Framing::Array => out.extend_from_slice(b"\n"),
        }
    }

    fn finish(&mut self, _reason: FinishReason, usage: Usage, out: &mut BytesMut) {
        // Gemini reports STOP for function calls too.
        self.chunk(
            Self::empty_text(),
            Some("STOP"),
            Some(usage_metadata(usage)),
            out,
        );
        if self.framing == Framing::Array {
            out.extend_from_slice(b"]");
        }
    }

    fn fail(&mut self, error: &GatewayError, _usage: Usage, out: &mut BytesMut) {
        let json = super::error::body(error);
        self.element(&json, out);
        if self.framing == Framing::Array {
            out.extend_from_slice(b"]");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn run(framing: Framing, include_thoughts: bool, fail: bool) -> String {
        let mut enc = ChunkEncoder::new(framing, "m".into(), "r".into(), include_thoughts);
        let mut out = BytesMut::new();
        enc.open(&mut out);
        enc.keepalive(&mut out);
        enc.event(&StreamEvent::Thought("hm".into()), &mut out);
        enc.event(&StreamEvent::Text("hi".into()), &mut out);
        if fail {
            enc.fail(&GatewayError::Internal, Usage::default(), &mut out);
        } else {
            enc.finish(
                FinishReason::Stop,
                Usage {
                    input_tokens: 1,
                    output_tokens: 2,
                    reasoning_tokens: 1,
                },
                &mut out,
            );
        }
        String::from_utf8(out.to_vec()).unwrap()
    }

    fn sse_payloads(s: &str) -> Vec<Value> {
        assert!(s.ends_with("\n\n"));
        s.split("\n\n")
            .filter(|b| !b.is_empty())
            .map(|b| serde_json::from_str(b.strip_prefix("data: ").unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn sse_chunks() {
        let chunks = sse_payloads(&run(Framing::Sse, true, false));
        assert_eq!(chunks.len(), 4);
        assert_eq!(
            chunks[0]["candidates"][0]["content"]["parts"],
            serde_json::json!([{"text": ""}])
        );
        assert_eq!(
            chunks[1]["candidates"][0]["content"]["parts"][0]["thought"],
            true
        );
        assert_eq!(
            chunks[2]["candidates"][0]["content"]["parts"][0]["text"],
            "hi"
        );
        assert!(
            chunks[..3]
                .iter()
                .all(|c| c["candidates"][0].get("finishReason").is_none())
        );
        assert_eq!(chunks[3]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(chunks[3]["usageMetadata"]["thoughtsTokenCount"], 1);
        assert_eq!(chunks[3]["usageMetadata"]["candidatesTokenCount"], 1);
    }

    #[test]
    fn thoughts_can_be_left_out() {
        let chunks = sse_payloads(&run(Framing::Sse, false, false));
        assert_eq!(chunks.len(), 3);
        assert!(!chunks.iter().any(|c| c.to_string().contains("thought\"")));
    }

    #[test]
    fn array_framing_and_failure() {
        let body = run(Framing::Array, true, false);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        let body = run(Framing::Array, true, true);
        let v: Value = serde_json::from_str(&body).unwrap();
        let last = v.as_array().unwrap().last().unwrap();
        assert_eq!(last["error"]["status"], "INTERNAL");
        let body = run(Framing::Sse, true, true);
        let last = body.trim_end().rsplit("\n\n").next().unwrap();
        assert!(last.starts_with("data: {\"error\":"), "{last}");
    }
}
