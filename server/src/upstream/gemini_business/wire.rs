//! Serde shapes of the Gemini Business wire format (spec §1.6–§1.10): request bodies exactly as
//! the upstream expects them, response shapes tolerant of extra and missing fields.

use serde::{Deserialize, Serialize};

/// `additionalParams`, always `{"token":"-"}`.
#[derive(Debug, Serialize)]
pub struct AdditionalParams {
    pub token: &'static str,
}

/// The common envelope of every U2–U5 body: `configId`, `additionalParams` and exactly one
/// request-specific member (`R` serialises as that one member).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<'a, R: Serialize> {
    pub config_id: &'a str,
    pub additional_params: AdditionalParams,
    #[serde(flatten)]
    pub request: R,
}

impl<'a, R: Serialize> Envelope<'a, R> {
    pub fn new(config_id: &'a str, request: R) -> Self {
        Self {
            config_id,
            additional_params: AdditionalParams { token: "-" },
            request,
        }
    }
}

// ---- U2 ---------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionMember {
    pub create_session_request: CreateSessionRequest,
}

#[derive(Debug, Serialize)]
pub struct CreateSessionRequest {
    pub session: NewSession,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSession {
    pub name: &'static str,
    pub display_name: &'static str,
}

#[derive(Debug, Deserialize)]
pub struct CreateSessionResponse {
    pub session: Option<SessionName>,
}

#[derive(Debug, Deserialize)]
pub struct SessionName {
    #[serde(default)]
    pub name: String,
}

// ---- U3 ---------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddContextFileMember<'a> {
    pub add_context_file_request: AddContextFileRequest<'a>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum AddContextFileRequest<'a> {
    #[serde(rename_all = "camelCase")]
    Inline {
        name: &'a str,
        file_name: String,
        mime_type: &'a str,
        file_contents: String,
    },
    #[serde(rename_all = "camelCase")]
    Uri { name: &'a str, file_uri: &'a str },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddContextFileResponse {
    pub add_context_file_response: Option<AddContextFileResult>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddContextFileResult {
    #[serde(default)]
    pub file_id: String,
}

// ---- U4 ---------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamAssistMember<'a> {
    pub stream_assist_request: StreamAssistRequest<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamAssistRequest<'a> {
    pub session: &'a str,
    pub query: Query<'a>,
    pub filter: &'static str,
    /// `null` when nothing was uploaded, as the web client sends it.
    pub file_ids: Option<&'a [String]>,
    pub answer_generation_mode: &'static str,
    pub tools_spec: ToolsSpec,
    pub language_code: &'a str,
    pub user_metadata: UserMetadata<'a>,
    pub assist_skipping_mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assist_generation_config: Option<AssistGenerationConfig<'a>>,
}

#[derive(Debug, Serialize)]
pub struct Query<'a> {
    pub parts: [TextPart<'a>; 1],
}

#[derive(Debug, Serialize)]
pub struct TextPart<'a> {
    pub text: &'a str,
}

/// An empty JSON object (`{}`), how the upstream spells "enable this tool".
#[derive(Debug, Serialize, Default, PartialEq, Eq)]
pub struct Empty {}

#[derive(Debug, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ToolsSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_grounding_spec: Option<Empty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_registry: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_generation_spec: Option<Empty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video_generation_spec: Option<Empty>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserMetadata<'a> {
    pub time_zone: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssistGenerationConfig<'a> {
    pub model_id: &'a str,
}

/// One element of the U4 answer array.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StreamAssistElement {
    pub stream_assist_response: Option<StreamAssistResponse>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StreamAssistResponse {
    pub session_info: Option<SessionInfo>,
    pub answer: Option<Answer>,
}

#[derive(Debug, Deserialize, Default)]
pub struct SessionInfo {
    pub session: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct Answer {
    #[serde(default)]
    pub replies: Vec<Reply>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    pub grounded_content: Option<GroundedContent>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GroundedContent {
    pub content: Option<Content>,
    /// Web grounding of the answer's text (search models).
    pub text_grounding_metadata: Option<TextGroundingMetadata>,
}

/// `AssistantGroundedContent.TextGroundingMetadata`: which ranges of the text rest on which
/// references. Every field may be absent; indices may be JSON numbers or strings (int64).
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct TextGroundingMetadata {
    pub segments: Vec<GroundingSegment>,
    pub references: Vec<GroundingReference>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct GroundingSegment {
    /// UTF-8 byte offset of the segment's start.
    pub start_index: Option<Int64>,
    /// UTF-8 byte offset of its end, exclusive.
    pub end_index: Option<Int64>,
    pub reference_indices: Vec<Int64>,
    /// The segment's text, when sent.
    pub text: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct GroundingReference {
    pub document_metadata: Option<DocumentMetadata>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct DocumentMetadata {
    pub uri: Option<String>,
    pub title: Option<String>,
    pub domain: Option<String>,
}

/// A proto3 JSON int64: a number or a decimal string (anything else reads as absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Int64(pub Option<i64>);

impl<'de> Deserialize<'de> for Int64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Int64(match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }))
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    pub text: Option<String>,
    #[serde(default)]
    pub thought: bool,
    pub inline_data: Option<InlineData>,
    pub file: Option<FileRef>,
    pub function_call: Option<FunctionCall>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InlineData {
    #[serde(default)]
    pub mime_type: String,
    #[serde(default)]
    pub data: String,
}

#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileRef {
    #[serde(default)]
    pub file_id: String,
    #[serde(default)]
    pub mime_type: String,
}

#[derive(Debug, Deserialize)]
pub struct FunctionCall {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub args: serde_json::Value,
}

// ---- U5 ---------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListFilesMember<'a> {
    pub list_session_file_metadata_request: ListFilesRequest<'a>,
}

#[derive(Debug, Serialize)]
pub struct ListFilesRequest<'a> {
    pub name: &'a str,
    pub filter: &'static str,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListFilesResponse {
    pub list_session_file_metadata_response: Option<FileMetadataList>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct FileMetadataList {
    #[serde(default)]
    pub file_metadata: Vec<FileMetadata>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct FileMetadata {
    #[serde(default)]
    pub file_id: String,
    #[serde(default)]
    pub session: String,
    #[serde(default)]
    pub mime_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_assist_body_matches_the_spec() {
        let ids = vec!["file-abc".to_owned()];
        let body = Envelope::new(
            "cfg",
            StreamAssistMember {
                stream_assist_request: StreamAssistRequest {
                    session: "collections/c/engines/e/sessions/1",
                    query: Query {
                        parts: [TextPart {
                            text: "draw a red fox",
                        }],
                    },
                    filter: "",
                    file_ids: Some(&ids),
                    answer_generation_mode: "NORMAL",
                    tools_spec: ToolsSpec {
                        image_generation_spec: Some(Empty {}),
                        ..Default::default()
                    },
                    language_code: "en-US",
                    user_metadata: UserMetadata { time_zone: "UTC" },
                    assist_skipping_mode: "REQUEST_ASSIST",
                    assist_generation_config: Some(AssistGenerationConfig {
                        model_id: "gemini-2.5-pro",
                    }),
                },
            },
        );
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"configId":"cfg","additionalParams":{"token":"-"},
              "streamAssistRequest":{"session":"collections/c/engines/e/sessions/1",
                "query":{"parts":[{"text":"draw a red fox"}]},"filter":"","fileIds":["file-abc"],
                "answerGenerationMode":"NORMAL","toolsSpec":{"imageGenerationSpec":{}},"languageCode":"en-US",
                "userMetadata":{"timeZone":"UTC"},"assistSkippingMode":"REQUEST_ASSIST",
                "assistGenerationConfig":{"modelId":"gemini-2.5-pro"}}})
        );
    }

    #[test]
    fn no_uploads_send_null_file_ids() {
        let body = StreamAssistRequest {
            session: "s",
            query: Query {
                parts: [TextPart { text: " " }],
            },
            filter: "",
            file_ids: None,
            answer_generation_mode: "NORMAL",
            tools_spec: ToolsSpec::default(),
            language_code: "en-US",
            user_metadata: UserMetadata { time_zone: "UTC" },
            assist_skipping_mode: "REQUEST_ASSIST",
            assist_generation_config: None,
        };
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["fileIds"], serde_json::Value::Null);
        assert!(v.get("assistGenerationConfig").is_none());
    }

    #[test]
    fn create_session_and_upload_bodies() {
        let v = serde_json::to_value(Envelope::new(
            "cfg",
            CreateSessionMember {
                create_session_request: CreateSessionRequest {
                    session: NewSession {
                        name: "",
                        display_name: "",
                    },
                },
            },
        ))
        .unwrap();
        assert_eq!(
            v,
            json!({"configId":"cfg","additionalParams":{"token":"-"},
            "createSessionRequest":{"session":{"name":"","displayName":""}}})
        );
        let v = serde_json::to_value(AddContextFileMember {
            add_context_file_request: AddContextFileRequest::Uri {
                name: "s",
                file_uri: "https://x/y.png",
            },
        })
        .unwrap();
        assert_eq!(
            v,
            json!({"addContextFileRequest":{"name":"s","fileUri":"https://x/y.png"}})
        );
    }

    #[test]
    fn elements_tolerate_extra_and_missing_fields() {
        let e: StreamAssistElement = serde_json::from_value(json!({
            "streamAssistResponse": {"answer": {"state": "IN_PROGRESS", "replies": [
                {"groundedContent": {"content": {"text": "hi", "thought": true}, "extra": 1}}]}},
            "unknown": true
        }))
        .unwrap();
        let r = e.stream_assist_response.unwrap().answer.unwrap();
        let c = r.replies[0]
            .grounded_content
            .as_ref()
            .unwrap()
            .content
            .as_ref()
            .unwrap();
        assert_eq!(c.text.as_deref(), Some("hi"));
        assert!(c.thought);
        let empty: StreamAssistElement = serde_json::from_value(json!({})).unwrap();
        assert!(empty.stream_assist_response.is_none());
    }
}
