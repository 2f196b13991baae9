//! The U4 response: a JSON array written element by element as a chunked body.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use serde_json::{Value, json};

use crate::gate::Gate;
use crate::model::{Answer, AnswerPart};
use crate::state::{PROJECT_PREFIX, State};

/// How long a held stream waits for its gate at most.
const HOLD_LIMIT: Duration = Duration::from_secs(30);
/// Pause before a simulated cut so that the chunks before it reach the socket.
const CUT_FLUSH_PAUSE: Duration = Duration::from_millis(20);

/// Words per text element of the default answer.
const DEFAULT_WORDS_PER_ELEMENT: usize = 3;

fn content_element(content: Value) -> Value {
    json!({"streamAssistResponse": {"answer": {"replies": [
        {"groundedContent": {"content": content}}
    ]}}})
}

/// A prompt containing this text gets its U4 answer cut (as by `Fault::CutAfter`) after
/// [`CUT_DIRECTIVE_AFTER`] answer elements — the thought and the first text of the default
/// answer. Lets tests that drive the `upstream-sim` binary (the SDK suites) exercise a
/// mid-stream failure without scripting faults.
pub const CUT_DIRECTIVE: &str = "[sim:cut]";
/// How many answer elements a prompt with [`CUT_DIRECTIVE`] receives before the cut.
pub const CUT_DIRECTIVE_AFTER: usize = 2;

/// The image the default answer of an image-only request carries: a 1×1 PNG.
pub const DEFAULT_IMAGE_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// The default echo answer for a query; with `image` (an image-only request) it ends with
/// [`DEFAULT_IMAGE_PNG`] as a generated image.
pub(crate) fn default_answer(query: &str, image: bool) -> Answer {
    let chars: Vec<char> = query.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(200)..].iter().collect();
    let text = format!("Hello from the Gemini Business simulator. You asked: «{tail}»");
    let mut answer = Answer::new().thought("Considering the question.");
    let mut chunk = String::new();
    let mut words = 0;
    for piece in text.split_inclusive(' ') {
        chunk.push_str(piece);
        words += 1;
        if words == DEFAULT_WORDS_PER_ELEMENT {
            answer = answer.text(std::mem::take(&mut chunk));
            words = 0;
        }
    }
    if !chunk.is_empty() {
        answer = answer.text(chunk);
    }
    if image {
        answer = answer.image("image/png", Bytes::from_static(DEFAULT_IMAGE_PNG));
    }
    answer
}

/// Serialises the array elements of one U4 response (generated files are stored in the
/// session as a side effect).
pub(crate) fn build_elements(state: &State, session: &str, answer: &Answer) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(answer.parts.len() + 1);
    let info = json!({"streamAssistResponse": {"sessionInfo": {
        "session": format!("{PROJECT_PREFIX}{session}")
    }}});
    out.push(Bytes::from(info.to_string()));
    for part in &answer.parts {
        let element = match part {
            AnswerPart::Thought(t) => content_element(json!({"text": t, "thought": true})),
            AnswerPart::Text(t) => content_element(json!({"text": t})),
            AnswerPart::Inline { mime, bytes } => content_element(json!({
                "inlineData": {"mimeType": mime, "data": STANDARD.encode(bytes)}
            })),
            AnswerPart::Image { mime, bytes } | AnswerPart::Video { mime, bytes } => {
                let file_id = state.add_generated(session, mime, bytes.clone());
                content_element(json!({"file": {"fileId": file_id, "mimeType": mime}}))
            }
            AnswerPart::FunctionCall { name, args } => {
                content_element(json!({"functionCall": {"name": name, "args": args}}))
            }
            AnswerPart::Grounding(g) => json!({"streamAssistResponse": {"answer": {"replies": [
                {"groundedContent": {"textGroundingMetadata": g.to_json()}}
            ]}}}),
            AnswerPart::GroundedText { text, grounding } => {
                json!({"streamAssistResponse": {"answer": {"replies": [
                    {"groundedContent": {
                        "content": {"text": text},
                        "textGroundingMetadata": grounding.to_json(),
                    }}
                ]}}})
            }
            AnswerPart::Element(v) => v.clone(),
        };
        out.push(Bytes::from(element.to_string()));
    }
    out
}

/// Counts the stream's end in the stats when dropped.
struct StreamGuard {
    state: Arc<State>,
    completed: bool,
    cut: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.completed && !self.cut {
            self.state.lock().stats.streams_cancelled += 1;
        }
    }
}

/// How one stream is shaped.
pub(crate) struct StreamPlan {
    pub(crate) elements: Vec<Bytes>,
    pub(crate) pacing: Duration,
    pub(crate) hold: Option<Gate>,
    /// `Some(n)`: send `sessionInfo` + `n` answer elements, then break the body.
    pub(crate) cut_after: Option<usize>,
}

/// The body stream. Counts `streams_started` immediately.
pub(crate) fn body(
    state: Arc<State>,
    plan: StreamPlan,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + 'static {
    state.lock().stats.streams_started += 1;
    let mut guard = StreamGuard {
        state,
        completed: false,
        cut: false,
    };
    let StreamPlan {
        elements,
        pacing,
        hold,
        cut_after,
    } = plan;
    async_stream::stream! {
        let total = elements.len();
        let limit = match cut_after {
            Some(n) => n.saturating_add(1).min(total),
            None => total,
        };
        for (i, element) in elements.into_iter().enumerate().take(limit) {
            if i > 0 && !pacing.is_zero() {
                tokio::time::sleep(pacing).await;
            }
            let last = i + 1 == total;
            if last && let Some(gate) = &hold {
                gate.wait(HOLD_LIMIT).await;
            }
            let mut chunk = BytesMut::with_capacity(element.len() + 3);
            chunk.extend_from_slice(if i == 0 { b"[" } else { b",\n" });
            chunk.extend_from_slice(&element);
            let finishing = last && cut_after.is_none();
            if finishing {
                chunk.extend_from_slice(b"]");
            }
            {
                let mut inner = guard.state.lock();
                inner.stats.elements_sent += 1;
                if finishing {
                    inner.stats.streams_completed += 1;
                }
            }
            if finishing {
                guard.completed = true;
            }
            yield Ok(chunk.freeze());
        }
        if total == 0 {
            // Not reachable (sessionInfo is always there), but keep the body valid JSON.
            guard.completed = true;
            guard.state.lock().stats.streams_completed += 1;
            yield Ok(Bytes::from_static(b"[]"));
        }
        if cut_after.is_some() {
            guard.cut = true;
            guard.state.lock().stats.streams_cut += 1;
            tokio::time::sleep(CUT_FLUSH_PAUSE).await;
            yield Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "simulated connection cut",
            ));
        }
    }
}
