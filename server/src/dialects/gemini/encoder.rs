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
//!
//! Citations (search grounding) become `candidates[0].groundingMetadata`: when citations have
//! arrived since the last one sent, the next chunk the encoder writes (the finishing chunk, or
//! an empty-text chunk before the next part, a keep-alive or an error) carries the metadata of
//! the whole answer so far — every source and support, offsets into the whole answer text —
//! so the last `groundingMetadata` of a stream is the complete one (Google resends the
//! accumulated metadata too; clients keep the latest).

use std::borrow::Cow;

use bytes::BytesMut;

use super::convert::{part_of, usage_metadata};
use super::wire::{
    Candidate, ContentOut, GenerateContentResponse, GroundingMetadata, PartOut, UsageMetadata,
};
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
    /// The visible answer text sent so far (citation ranges index into it).
    text: String,
    /// Every citation so far.
    grounding: GroundingMetadata,
    /// Whether `grounding` has citations no chunk has carried yet.
    grounding_pending: bool,
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
            text: String::new(),
            grounding: GroundingMetadata::default(),
            grounding_pending: false,
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

    /// One chunk's JSON; it carries the grounding metadata when some is pending.
    fn chunk_json(
        &self,
        parts: Vec<PartOut<'_>>,
        finish_reason: Option<&'static str>,
        usage: Option<UsageMetadata>,
    ) -> Vec<u8> {
        let chunk = GenerateContentResponse {
            candidates: vec![Candidate {
                content: ContentOut {
                    role: "model",
                    parts,
                },
                finish_reason,
                index: 0,
                grounding_metadata: self.grounding_pending.then_some(&self.grounding),
            }],
            usage_metadata: usage,
            model_version: &self.model,
            response_id: &self.response_id,
        };
        serde_json::to_vec(&chunk).unwrap_or_default()
    }

    fn chunk(
        &mut self,
        parts: Vec<PartOut<'_>>,
        finish_reason: Option<&'static str>,
        usage: Option<UsageMetadata>,
        out: &mut BytesMut,
    ) {
        let json = self.chunk_json(parts, finish_reason, usage);
        self.grounding_pending = false;
        self.element(&json, out);
    }

    /// Sends pending grounding metadata in a chunk of its own.
    fn flush_grounding(&mut self, out: &mut BytesMut) {
        if self.grounding_pending {
            self.chunk(Self::empty_text(), None, None, out);
        }
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
        if let StreamEvent::Citation(citation) = event {
            if self.grounding.add(citation, &self.text) {
                self.grounding_pending = true;
            }
            return;
        }
        if let Some(part) = part_of(event, self.include_thoughts) {
            self.flush_grounding(out);
            if let StreamEvent::Text(t) = event {
                self.text.push_str(t);
            }
            // The part borrows the event, not the encoder.
            let json = self.chunk_json(vec![part], None, None);
            self.element(&json, out);
        }
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        match self.framing {
            Framing::Sse => self.chunk(Self::empty_text(), None, None, out),
            Framing::Array if self.grounding_pending => self.flush_grounding(out),
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
        self.flush_grounding(out);
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
    use serde_json::{Value, json};

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

    /// Non-ASCII (2-, 3- and 4-byte characters) before each cited range.
    const PIECES: [&str; 3] = ["Café ☕ 𝄞 is ", "coffee. ", "Tea 🍵 is tea."];

    fn citation(text: &str, cited: &str, url: &str) -> StreamEvent {
        let start = text.find(cited).unwrap();
        StreamEvent::Citation(crate::domain::Citation {
            url: url.into(),
            title: Some(format!("About {cited}")),
            domain: Some("example.org".into()),
            start,
            end: start + cited.len(),
            cited_text: cited.into(),
        })
    }

    /// A grounded answer: one citation after the first two pieces, two after the last.
    fn grounded(framing: Framing) -> Vec<Value> {
        let text = PIECES.concat();
        let mut enc = ChunkEncoder::new(framing, "m".into(), "r".into(), false);
        let mut out = BytesMut::new();
        enc.open(&mut out);
        enc.event(&StreamEvent::Thought("searching".into()), &mut out);
        enc.event(&StreamEvent::Text(PIECES[0].into()), &mut out);
        enc.event(&StreamEvent::Text(PIECES[1].into()), &mut out);
        enc.event(&citation(&text, "coffee", "https://a.example/"), &mut out);
        enc.event(&StreamEvent::Text(PIECES[2].into()), &mut out);
        enc.event(
            &citation(&text, "Tea 🍵 is tea", "https://b.example/"),
            &mut out,
        );
        enc.event(
            &citation(&text, "Tea 🍵 is tea", "https://a.example/"),
            &mut out,
        );
        // Outside the text: dropped.
        enc.event(
            &StreamEvent::Citation(crate::domain::Citation {
                url: "https://c.example/".into(),
                title: None,
                domain: None,
                start: 4,
                end: 5,
                cited_text: String::new(),
            }),
            &mut out,
        );
        enc.finish(FinishReason::Stop, Usage::default(), &mut out);
        let body = String::from_utf8(out.to_vec()).unwrap();
        match framing {
            Framing::Sse => sse_payloads(&body),
            Framing::Array => serde_json::from_str::<Vec<Value>>(&body).unwrap(),
        }
    }

    #[test]
    fn citations_become_cumulative_grounding_metadata() {
        let text = PIECES.concat();
        for framing in [Framing::Sse, Framing::Array] {
            let chunks = grounded(framing);
            let texts: String = chunks
                .iter()
                .filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str())
                .collect();
            assert_eq!(texts, text);
            let with: Vec<(usize, &Value)> = chunks
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c["candidates"][0].get("groundingMetadata").map(|g| (i, g)))
                .collect();
            // The first citation rides an empty chunk before the next text; the others the
            // finishing chunk.
            assert_eq!(with.len(), 2, "{chunks:?}");
            let (i, first) = with[0];
            assert_eq!(
                chunks[i]["candidates"][0]["content"]["parts"],
                json!([{"text": ""}])
            );
            assert_eq!(
                chunks[i + 1]["candidates"][0]["content"]["parts"][0]["text"],
                PIECES[2]
            );
            let coffee = text.find("coffee").unwrap();
            assert_eq!(coffee, 18, "UTF-8 bytes");
            assert_eq!(
                first,
                &json!({
                    "groundingChunks": [{"web": {"uri": "https://a.example/", "title": "About coffee", "domain": "example.org"}}],
                    "groundingSupports": [{"segment": {"startIndex": coffee, "endIndex": coffee + 6, "text": "coffee"}, "groundingChunkIndices": [0]}],
                })
            );
            let (i, last) = with[1];
            assert_eq!(i, chunks.len() - 1);
            assert_eq!(chunks[i]["candidates"][0]["finishReason"], "STOP");
            let sources: Vec<&str> = last["groundingChunks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["web"]["uri"].as_str().unwrap())
                .collect();
            assert_eq!(sources, ["https://a.example/", "https://b.example/"]);
            let supports = last["groundingSupports"].as_array().unwrap();
            assert_eq!(supports.len(), 2);
            assert_eq!(supports[0], first["groundingSupports"][0]);
            assert_eq!(supports[1]["groundingChunkIndices"], json!([1, 0]));
            for s in supports {
                let (a, b) = (
                    s["segment"]["startIndex"].as_u64().unwrap() as usize,
                    s["segment"]["endIndex"].as_u64().unwrap() as usize,
                );
                assert_eq!(
                    &text.as_bytes()[a..b],
                    s["segment"]["text"].as_str().unwrap().as_bytes()
                );
            }
            assert!(!last.to_string().contains("c.example"));
        }
    }

    #[test]
    fn pending_grounding_goes_out_before_a_keepalive_or_an_error() {
        let text = "x ☕ y";
        for framing in [Framing::Sse, Framing::Array] {
            let mut enc = ChunkEncoder::new(framing, "m".into(), "r".into(), true);
            let mut out = BytesMut::new();
            enc.open(&mut out);
            enc.event(&StreamEvent::Text(text.into()), &mut out);
            enc.event(&citation(text, "y", "https://a/"), &mut out);
            enc.keepalive(&mut out);
            enc.keepalive(&mut out);
            enc.event(&citation(text, "☕", "https://b/"), &mut out);
            enc.fail(&GatewayError::Internal, Usage::default(), &mut out);
            let body = String::from_utf8(out.to_vec()).unwrap();
            let chunks: Vec<Value> = match framing {
                Framing::Sse => sse_payloads(&body),
                Framing::Array => serde_json::from_str(&body).unwrap(),
            };
            let grounding: Vec<usize> = chunks
                .iter()
                .map(|c| {
                    c["candidates"][0]["groundingMetadata"]["groundingSupports"]
                        .as_array()
                        .map_or(0, Vec::len)
                })
                .collect();
            match framing {
                // text, keep-alive (with the metadata), keep-alive, metadata, error.
                Framing::Sse => assert_eq!(grounding, [0, 1, 0, 2, 0], "{chunks:?}"),
                // text, metadata (instead of a newline), metadata, error.
                Framing::Array => assert_eq!(grounding, [0, 1, 2, 0], "{chunks:?}"),
            }
            assert!(chunks.last().unwrap()["error"].is_object());
        }
    }
}
