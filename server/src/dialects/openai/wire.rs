//! OpenAI Chat Completions shapes, as OpenAI documents them. Requests are tolerant (unknown
//! fields ignored); responses carry exactly the fields the SDKs' types declare.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::dialects::limits::{
    Bounded, CountedVec, MessagesKind, PartsKind, RawSeq, TextOr, TextOrSeq, ToolsKind, parse_raw,
};

// ---- request ----------------------------------------------------------------------------
//
// Messages and content parts are kept as raw elements borrowed from the body and counted as
// they are read (`dialects::limits`); each is then parsed on its own into its typed form.

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest<'a> {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(borrow, default)]
    pub messages: Option<RawSeq<'a, MessagesKind>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub tools: Option<CountedVec<Tool, ToolsKind>>,
    #[serde(default)]
    pub tool_choice: Option<Bounded>,
    #[serde(default)]
    pub parallel_tool_calls: Option<Bounded>,
    #[serde(default)]
    pub functions: Option<CountedVec<FunctionDef, ToolsKind>>,
    #[serde(default)]
    pub function_call: Option<Bounded>,
    #[serde(default)]
    pub max_tokens: Option<Bounded>,
    #[serde(default)]
    pub max_completion_tokens: Option<Bounded>,
    #[serde(default)]
    pub temperature: Option<Bounded>,
    #[serde(default)]
    pub top_p: Option<Bounded>,
    #[serde(default)]
    pub stop: Option<Bounded>,
}

#[derive(Debug, Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage<'a> {
    pub role: String,
    #[serde(borrow, default)]
    pub content: Option<MessageContent<'a>>,
    #[serde(default)]
    pub name: Option<String>,
    /// Counted as parts of the message.
    #[serde(default)]
    pub tool_calls: Option<CountedVec<ToolCallIn, PartsKind>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub function_call: Option<FunctionCallIn>,
}

/// A message's content: a string or raw parts.
pub type MessageContent<'a> = TextOrSeq<'a, PartsKind>;

/// One content part, parsed from its raw text by its `type` so an unknown `type` gets a
/// precise error.
#[derive(Debug)]
pub enum ContentPart<'a> {
    Text { text: String },
    ImageUrl { image_url: UrlRef<'a> },
    VideoUrl { video_url: UrlRef<'a> },
    InputAudio { input_audio: InputAudio },
    File { file: FileInput },
    Refusal,
}

const PART_TYPES: &str = "`text`, `image_url`, `video_url`, `input_audio`, `file`, `refusal`";

impl<'a> ContentPart<'a> {
    /// Parses one raw part; the error is serde's (or names the unknown type).
    pub fn parse(raw: &'a RawValue) -> Result<ContentPart<'a>, String> {
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(rename = "type", borrow, default)]
            kind: Option<std::borrow::Cow<'a, str>>,
        }
        #[derive(Deserialize)]
        struct Text {
            text: String,
        }
        #[derive(Deserialize)]
        struct Image<'a> {
            #[serde(borrow)]
            image_url: UrlRef<'a>,
        }
        #[derive(Deserialize)]
        struct Video<'a> {
            #[serde(borrow)]
            video_url: UrlRef<'a>,
        }
        #[derive(Deserialize)]
        struct Audio {
            input_audio: InputAudio,
        }
        #[derive(Deserialize)]
        struct File {
            file: FileInput,
        }
        #[derive(Deserialize)]
        struct Refusal {
            #[serde(rename = "refusal")]
            _refusal: String,
        }
        let e = |e: serde_json::Error| e.to_string();
        let head: Head<'_> = parse_raw(raw).map_err(e)?;
        Ok(match head.kind.as_deref() {
            Some("text") => ContentPart::Text {
                text: parse_raw::<Text>(raw).map_err(e)?.text,
            },
            Some("image_url") => ContentPart::ImageUrl {
                image_url: parse_raw::<Image<'_>>(raw).map_err(e)?.image_url,
            },
            Some("video_url") => ContentPart::VideoUrl {
                video_url: parse_raw::<Video<'_>>(raw).map_err(e)?.video_url,
            },
            Some("input_audio") => ContentPart::InputAudio {
                input_audio: parse_raw::<Audio>(raw).map_err(e)?.input_audio,
            },
            Some("file") => ContentPart::File {
                file: parse_raw::<File>(raw).map_err(e)?.file,
            },
            Some("refusal") => {
                parse_raw::<Refusal>(raw).map_err(e)?;
                ContentPart::Refusal
            }
            Some(other) => {
                return Err(format!(
                    "unknown variant `{other}`, expected one of {PART_TYPES}"
                ));
            }
            None => return Err("missing field `type`".to_owned()),
        })
    }
}

/// An image or video URL: `{"url": ...}` or, leniently, the URL itself.
pub type UrlRef<'a> = TextOr<'a, UrlObject>;

#[derive(Debug, Deserialize)]
pub struct UrlObject {
    pub url: String,
}

/// The URL of a [`UrlRef`].
pub fn url_of<'r>(r: &'r UrlRef<'_>) -> &'r str {
    match r {
        TextOr::Text(url) => url,
        TextOr::Object(o) => &o.url,
    }
}

#[derive(Debug, Deserialize)]
pub struct InputAudio {
    pub data: String,
    #[serde(default)]
    pub format: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct FileInput {
    #[serde(default)]
    pub file_data: Option<String>,
    #[serde(default)]
    pub file_id: Option<String>,
    #[serde(default)]
    pub filename: Option<String>,
    /// Not OpenAI's: some clients send a URL and a MIME type here.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ToolCallIn {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionCallIn>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionCallIn {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub arguments: Option<Bounded>,
}

#[derive(Debug, Deserialize)]
pub struct Tool {
    #[serde(default)]
    pub function: Option<FunctionDef>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionDef {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Bounded>,
}

// ---- response ---------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct ChatCompletion<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: [Choice; 1],
    pub usage: UsageOut,
}

#[derive(Debug, Serialize)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: Option<String>,
    pub refusal: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut>,
    /// `url_citation` annotations (web-search grounding), see `citations`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, Clone)]
pub struct ToolCallOut {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionOut,
}

#[derive(Debug, Serialize, Clone)]
pub struct FunctionOut {
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Serialize, Clone, Copy)]
pub struct UsageOut {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub completion_tokens_details: CompletionTokensDetails,
}

#[derive(Debug, Serialize, Clone, Copy)]
pub struct CompletionTokensDetails {
    pub reasoning_tokens: u32,
}

/// A streamed chunk. `usage` is present (as `null` or a value) only when the client asked for
/// usage; `choices` is empty only in the usage chunk.
#[derive(Debug, Serialize)]
pub struct ChatCompletionChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<UsageOut>>,
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice<'a> {
    pub index: u32,
    pub delta: Delta<'a>,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Serialize, Default)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<[ToolCallDelta<'a>; 1]>,
    /// Every `url_citation` annotation of the answer, in one delta before the finish chunk
    /// (as OpenAI's search models send them; the SDK's stream helper cannot merge two).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<&'a [serde_json::Value]>,
}

#[derive(Debug, Serialize)]
pub struct ToolCallDelta<'a> {
    pub index: u32,
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionDelta<'a>,
}

#[derive(Debug, Serialize)]
pub struct FunctionDelta<'a> {
    pub name: &'a str,
    pub arguments: &'a str,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

#[derive(Debug, Serialize)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

/// `{"error": {...}}`.
#[derive(Debug, Serialize)]
pub struct ErrorEnvelope<'a> {
    pub error: ErrorObject<'a>,
}

#[derive(Debug, Serialize)]
pub struct ErrorObject<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<&'a str>,
    pub code: Option<&'static str>,
}
