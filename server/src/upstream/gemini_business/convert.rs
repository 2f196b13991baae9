//! Upstream answer elements → domain stream items, and domain model features → `toolsSpec`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use super::endpoint::Endpoint;
use super::wire::{Empty, FileRef, StreamAssistElement, ToolsSpec};
use crate::domain::{Features, GeneratedMedia, StreamEvent, ToolCall};
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

/// Converts one parsed element into items. `call_seq` numbers tool calls across the answer.
pub fn element_items(
    element: StreamAssistElement,
    call_seq: &mut u32,
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
        let Some(content) = reply.grounded_content.and_then(|g| g.content) else {
            continue;
        };
        if let Some(text) = content.text.filter(|t| !t.is_empty()) {
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
            *call_seq += 1;
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
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn items(v: serde_json::Value) -> Vec<AssistItem> {
        let mut seq = 0;
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
        let mut seq = 0;
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
}
