//! Upstream answer elements → domain stream items, and domain model features → `toolsSpec`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use super::endpoint::Endpoint;
use super::wire::{Empty, FileRef, StreamAssistElement, TextGroundingMetadata, ToolsSpec};
use crate::domain::{Citation, Features, GeneratedMedia, StreamEvent, ToolCall};
use crate::upstream::{ErrorKind, UpstreamError};

/// What one U4 element contributes, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum AssistItem {
    /// The full session resource name (used for U5/U6).
    SessionInfo(String),
    /// Something for the client.
    Event(StreamEvent),
    /// A generated file to download once the answer is complete.
    File(FileRef),
}

/// The `toolsSpec` for a model's features (spec §1.9): no suffix → every tool and the default
/// registry; otherwise only the requested generation specs.
pub fn tools_spec(features: Features) -> ToolsSpec {
    if features.is_all_tools() {
        return ToolsSpec {
            web_grounding_spec: Some(Empty {}),
            tool_registry: Some("default_tool_registry"),
            image_generation_spec: Some(Empty {}),
            video_generation_spec: Some(Empty {}),
        };
    }
    ToolsSpec {
        web_grounding_spec: features.search.then_some(Empty {}),
        tool_registry: None,
        image_generation_spec: features.image.then_some(Empty {}),
        video_generation_spec: features.video.then_some(Empty {}),
    }
}

/// What the conversion of one answer remembers from element to element.
#[derive(Debug, Default)]
pub struct AnswerState {
    /// Numbers tool calls across the answer.
    pub call_seq: u32,
    /// The visible text so far, kept only when the answer may be grounded (search models):
    /// citations are placed on it.
    text: Option<String>,
}

impl AnswerState {
    /// The state of a new answer; `grounded`: keep its text for citations.
    pub fn new(grounded: bool) -> AnswerState {
        AnswerState {
            call_seq: 0,
            text: grounded.then(String::new),
        }
    }
}

/// Whether answers of a model with these features may carry web grounding.
pub fn may_be_grounded(features: Features) -> bool {
    features.search || features.is_all_tools()
}

/// The citations of `meta` on the answer text so far (see [`Citation`]): one per segment and
/// reference with a URI. A segment's range is its byte offsets into the answer's text so far;
/// when it sends its text and that is not what the offsets hold (offsets of another text, e.g.
/// of its reply alone), the occurrence of its text nearest to the offsets is cited instead. A
/// segment whose range cannot be placed on the text (out of range, inside a character, empty)
/// is dropped, as are references without a URI.
pub fn citations(text: &str, meta: &TextGroundingMetadata) -> Vec<Citation> {
    let mut out = Vec::new();
    for segment in &meta.segments {
        let start = segment.start_index.and_then(|i| i.0).unwrap_or(0);
        let end = segment.end_index.and_then(|i| i.0).unwrap_or(-1);
        let by_offsets = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .filter(|(s, e)| s < e && text.get(*s..*e).is_some());
        let range = match segment.text.as_deref().filter(|t| !t.is_empty()) {
            Some(cited) if by_offsets.is_some_and(|(s, e)| &text[s..e] == cited) => by_offsets,
            Some(cited) => {
                let near = by_offsets.map_or(0, |(s, _)| s);
                text.match_indices(cited)
                    .map(|(at, _)| at)
                    .min_by_key(|at| at.abs_diff(near))
                    .map(|at| (at, at + cited.len()))
            }
            None => by_offsets,
        };
        let Some((start, end)) = range else {
            tracing::debug!(
                start,
                end,
                "a grounding segment does not fit the answer text; dropped"
            );
            continue;
        };
        for index in &segment.reference_indices {
            let reference = index
                .0
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| meta.references.get(i))
                .and_then(|r| r.document_metadata.as_ref());
            let Some(doc) = reference else { continue };
            let Some(url) = doc.uri.as_deref().filter(|u| !u.is_empty()) else {
                continue;
            };
            out.push(Citation {
                url: url.to_owned(),
                title: doc.title.clone().filter(|t| !t.is_empty()),
                domain: doc.domain.clone().filter(|d| !d.is_empty()),
                start,
                end,
                cited_text: text[start..end].to_owned(),
            });
        }
    }
    out
}

/// Converts one parsed element into items; `state` carries what the answer's earlier elements
/// left (tool call numbering, the text citations are placed on).
pub fn element_items(
    element: StreamAssistElement,
    state: &mut AnswerState,
) -> Result<Vec<AssistItem>, UpstreamError> {
    let mut items = Vec::new();
    let Some(response) = element.stream_assist_response else {
        return Ok(items);
    };
    if let Some(session) = response
        .session_info
        .and_then(|s| s.session)
        .filter(|s| !s.is_empty())
    {
        items.push(AssistItem::SessionInfo(session));
    }
    let replies = response.answer.map(|a| a.replies).unwrap_or_default();
    for reply in replies {
        let Some(grounded) = reply.grounded_content else {
            continue;
        };
        let grounding = grounded.text_grounding_metadata;
        if let Some(content) = grounded.content {
            content_items(content, state, &mut items)?;
        }
        // After the reply's own text: a grounding may cite it.
        if let (Some(meta), Some(text)) = (grounding, &state.text) {
            items.extend(
                citations(text, &meta)
                    .into_iter()
                    .map(|c| AssistItem::Event(StreamEvent::Citation(c))),
            );
        }
    }
    Ok(items)
}

/// The items of one reply's content.
fn content_items(
    content: super::wire::Content,
    state: &mut AnswerState,
    items: &mut Vec<AssistItem>,
) -> Result<(), UpstreamError> {
    {
        if let Some(text) = content.text.filter(|t| !t.is_empty()) {
            if !content.thought
                && let Some(answer) = &mut state.text
            {
                answer.push_str(&text);
            }
            items.push(AssistItem::Event(if content.thought {
                StreamEvent::Thought(text)
            } else {
                StreamEvent::Text(text)
            }));
        }
        if let Some(inline) = content.inline_data {
            let data = STANDARD.decode(inline.data.as_bytes()).map_err(|_| {
                UpstreamError::new(
                    ErrorKind::Protocol,
                    Endpoint::StreamAssist,
                    "inlineData is not valid base64",
                )
            })?;
            items.push(AssistItem::Event(StreamEvent::Media(GeneratedMedia {
                mime: if inline.mime_type.is_empty() {
                    "application/octet-stream".to_owned()
                } else {
                    inline.mime_type
                },
                data: Bytes::from(data),
                url: None,
            })));
        }
        if let Some(file) = content.file.filter(|f| !f.file_id.is_empty()) {
            items.push(AssistItem::File(file));
        }
        if let Some(call) = content.function_call.filter(|c| !c.name.is_empty()) {
            state.call_seq += 1;
            let call_seq = state.call_seq;
            let arguments = if call.args.is_null() {
                "{}".to_owned()
            } else {
                call.args.to_string()
            };
            items.push(AssistItem::Event(StreamEvent::ToolCall(ToolCall {
                id: format!("call_{}_{}", uuid::Uuid::new_v4().simple(), call_seq),
                name: call.name,
                arguments,
            })));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn items(v: serde_json::Value) -> Vec<AssistItem> {
        let mut seq = AnswerState::new(false);
        element_items(serde_json::from_value(v).unwrap(), &mut seq).unwrap()
    }

    #[test]
    fn tools_spec_rules() {
        let all = serde_json::to_value(tools_spec(Features::default())).unwrap();
        assert_eq!(
            all,
            json!({"webGroundingSpec":{},"toolRegistry":"default_tool_registry",
            "imageGenerationSpec":{},"videoGenerationSpec":{}})
        );
        let some = serde_json::to_value(tools_spec(Features {
            image: true,
            video: false,
            search: true,
        }))
        .unwrap();
        assert_eq!(
            some,
            json!({"webGroundingSpec":{},"imageGenerationSpec":{}})
        );
    }

    #[test]
    fn the_spec_example_converts_in_order() {
        assert_eq!(
            items(json!({"streamAssistResponse":{"sessionInfo":{"session":"projects/1/x"}}})),
            vec![AssistItem::SessionInfo("projects/1/x".into())]
        );
        assert_eq!(
            items(json!({"streamAssistResponse":{"answer":{"replies":[
                {"groundedContent":{"content":{"text":"Planning","thought":true}}},
                {"groundedContent":{"content":{"text":"Here is "}}},
                {"groundedContent":{"content":{"file":{"fileId":"gen-77","mimeType":"image/png"}}}}]}}})),
            vec![
                AssistItem::Event(StreamEvent::Thought("Planning".into())),
                AssistItem::Event(StreamEvent::Text("Here is ".into())),
                AssistItem::File(FileRef {
                    file_id: "gen-77".into(),
                    mime_type: "image/png".into()
                }),
            ]
        );
    }

    #[test]
    fn inline_data_and_function_calls() {
        let got = items(json!({"streamAssistResponse":{"answer":{"replies":[
            {"groundedContent":{"content":{"inlineData":{"mimeType":"image/png","data":"AAEC"}}}},
            {"groundedContent":{"content":{"functionCall":{"name":"f","args":{"a":1}}}}}]}}}));
        assert_eq!(
            got[0],
            AssistItem::Event(StreamEvent::Media(GeneratedMedia {
                mime: "image/png".into(),
                data: Bytes::from_static(&[0, 1, 2]),
                url: None,
            }))
        );
        match &got[1] {
            AssistItem::Event(StreamEvent::ToolCall(c)) => {
                assert_eq!(c.name, "f");
                assert_eq!(c.arguments, r#"{"a":1}"#);
                assert!(c.id.starts_with("call_"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_inline_base64_is_a_protocol_error() {
        let mut seq = AnswerState::new(false);
        let e = element_items(
            serde_json::from_value(json!({"streamAssistResponse":{"answer":{"replies":[
                {"groundedContent":{"content":{"inlineData":{"mimeType":"image/png","data":"!!"}}}}]}}}))
            .unwrap(),
            &mut seq,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
    }

    #[test]
    fn empty_texts_and_unknown_elements_yield_nothing() {
        assert!(
            items(json!({"streamAssistResponse":{"answer":{"replies":[
            {"groundedContent":{"content":{"text":""}}}, {}]}}}))
            .is_empty()
        );
        assert!(items(json!({"other": 1})).is_empty());
    }

    /// The citations of a stream of elements, on a grounded answer.
    fn grounded(elements: &[serde_json::Value]) -> Vec<AssistItem> {
        let mut state = AnswerState::new(true);
        elements
            .iter()
            .flat_map(|v| {
                element_items(serde_json::from_value(v.clone()).unwrap(), &mut state).unwrap()
            })
            .collect()
    }

    fn text(t: &str) -> serde_json::Value {
        json!({"streamAssistResponse":{"answer":{"replies":[{"groundedContent":{"content":{"text": t}}}]}}})
    }

    fn grounding(meta: serde_json::Value) -> serde_json::Value {
        json!({"streamAssistResponse":{"answer":{"replies":[{"groundedContent":{"textGroundingMetadata": meta}}]}}})
    }

    fn cites(items: &[AssistItem]) -> Vec<&Citation> {
        items
            .iter()
            .filter_map(|i| match i {
                AssistItem::Event(StreamEvent::Citation(c)) => Some(c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn grounding_after_streamed_text_cites_byte_ranges_of_the_whole_answer() {
        // "Café 𝄞 " is 11 bytes: é is 2, 𝄞 is 4.
        let items = grounded(&[
            text("Café 𝄞 "),
            text("is coffee. Rust 1.0 shipped."),
            grounding(json!({
                "segments": [
                    {"startIndex": "14", "endIndex": "20", "referenceIndices": [0, 1], "text": "coffee"},
                    // Numbers as numbers, no text: the offsets alone.
                    {"startIndex": 22, "endIndex": 38, "referenceIndices": [2]},
                ],
                "references": [
                    {"content": "…", "documentMetadata": {"uri": "https://a.example/x", "title": "A", "domain": "a.example"}},
                    {"documentMetadata": {"uri": "https://b.example/y"}},
                    {"documentMetadata": {"uri": "https://c.example/z", "title": "C"}},
                ],
            })),
        ]);
        let c = cites(&items);
        assert_eq!(c.len(), 3);
        assert_eq!(
            (c[0].start, c[0].end, c[0].cited_text.as_str()),
            (14, 20, "coffee")
        );
        assert_eq!(c[0].url, "https://a.example/x");
        assert_eq!(c[0].title.as_deref(), Some("A"));
        assert_eq!(c[0].domain.as_deref(), Some("a.example"));
        assert_eq!(
            (c[1].url.as_str(), c[1].title.as_deref()),
            ("https://b.example/y", None)
        );
        assert_eq!(c[2].cited_text, "Rust 1.0 shipped");
        // Citations come after the text they cover.
        let last_text = items
            .iter()
            .rposition(|i| matches!(i, AssistItem::Event(StreamEvent::Text(_))))
            .unwrap();
        let first_cite = items
            .iter()
            .position(|i| matches!(i, AssistItem::Event(StreamEvent::Citation(_))))
            .unwrap();
        assert!(first_cite > last_text);
    }

    #[test]
    fn a_segment_whose_offsets_miss_its_text_is_placed_by_its_text_and_broken_ones_are_dropped() {
        let items = grounded(&[
            text("one two "),
            json!({"streamAssistResponse":{"answer":{"replies":[{"groundedContent":{
                "content": {"text": "three four"},
                // Offsets of the reply alone: "four" is at 6..10 there, at 14..18 in the answer.
                "textGroundingMetadata": {
                    "segments": [
                        {"startIndex": "6", "endIndex": "10", "referenceIndices": [0], "text": "four"},
                        // Inside a character? Out of range, reversed, no reference: dropped.
                        {"startIndex": "100", "endIndex": "120", "referenceIndices": [0]},
                        {"startIndex": "5", "endIndex": "2", "referenceIndices": [0]},
                        {"startIndex": "0", "endIndex": "3", "referenceIndices": [7]},
                        {"startIndex": "0", "endIndex": "3", "referenceIndices": [1]},
                        {"text": "absent words", "referenceIndices": [0]},
                    ],
                    "references": [
                        {"documentMetadata": {"uri": "https://a.example/"}},
                        {"documentMetadata": {"title": "no uri"}},
                    ],
                },
            }}]}}}),
        ]);
        let c = cites(&items);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(
            (c[0].start, c[0].end, c[0].cited_text.as_str()),
            (14, 18, "four")
        );
        let multibyte = grounded(&[
            text("é!"),
            grounding(
                json!({"segments": [{"startIndex": 1, "endIndex": 3, "referenceIndices": [0]}],
                "references": [{"documentMetadata": {"uri": "https://a.example/"}}]}),
            ),
        ]);
        assert!(
            cites(&multibyte).is_empty(),
            "a range inside a character is dropped"
        );
    }

    #[test]
    fn answers_of_models_without_search_keep_no_text_and_cite_nothing() {
        let mut state = AnswerState::new(false);
        let mut all = Vec::new();
        for v in [
            text("coffee"),
            grounding(
                json!({"segments": [{"startIndex": 0, "endIndex": 6, "referenceIndices": [0]}],
                "references": [{"documentMetadata": {"uri": "https://a.example/"}}]}),
            ),
        ] {
            all.extend(element_items(serde_json::from_value(v).unwrap(), &mut state).unwrap());
        }
        assert!(cites(&all).is_empty());
        assert!(may_be_grounded(Features {
            search: true,
            ..Features::default()
        }));
        assert!(may_be_grounded(Features::default()));
        assert!(!may_be_grounded(Features {
            image: true,
            ..Features::default()
        }));
    }
}
