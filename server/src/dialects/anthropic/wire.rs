//! Anthropic Messages shapes. Requests are tolerant (unknown fields are ignored: `metadata`,
//! `thinking`, `context_management`, `cache_control`, `stop_sequences`, sampling parameters …);
//! responses carry the fields the SDKs' types declare.

use serde::{Deserialize, Serialize};

// ---- request ----------------------------------------------------------------------------
//
// Content is kept as raw elements borrowed from the body and counted as it is read
// (`dialects::limits`); each block is then parsed on its own into its typed form.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::dialects::limits::{
    Bounded, CountedVec, MessagesKind, PartsKind, RawSeq, TextOrSeq, ToolsKind, parse_raw as p,
};

#[derive(Debug, Deserialize)]
pub struct MessagesRequest<'a> {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(borrow, default)]
    pub messages: Option<RawSeq<'a, MessagesKind>>,
    #[serde(borrow, default)]
    pub system: Option<Content<'a>>,
    #[serde(default)]
    pub stream: Option<bool>,
    /// Required by Anthropic; accepted when missing and not enforced (the upstream has no limit).
    #[serde(default)]
    pub max_tokens: Option<Bounded>,
    #[serde(default)]
    pub tools: Option<CountedVec<Bounded, ToolsKind>>,
    #[serde(default)]
    pub tool_choice: Option<Bounded>,
    #[serde(default)]
    pub temperature: Option<Bounded>,
    #[serde(default)]
    pub top_p: Option<Bounded>,
    #[serde(default)]
    pub stop_sequences: Option<Bounded>,
    /// `{"type": "enabled" | "adaptive" | "disabled", "display": "summarized" | "omitted", …}`.
    #[serde(default)]
    pub thinking: Option<Bounded>,
}

/// A message's content (or `system`, or a nested `content`): a string or raw blocks.
pub type Content<'a> = TextOrSeq<'a, PartsKind>;

#[derive(Debug, Deserialize)]
pub struct InMessage<'a> {
    #[serde(borrow)]
    pub role: Cow<'a, str>,
    #[serde(borrow)]
    pub content: Content<'a>,
}

/// A block's `type`, read first so an unknown type gets a precise error naming the block.
#[derive(Debug, Deserialize)]
pub struct Head<'a> {
    #[serde(rename = "type", borrow, default)]
    pub kind: Option<Cow<'a, str>>,
}

/// One content block of a request.
#[derive(Debug)]
pub enum InBlock<'a> {
    Text(TextBlock),
    Image(SourceBlock<'a>),
    Document(SourceBlock<'a>),
    ToolUse(ToolUseBlock),
    ToolResult(ToolResultBlock<'a>),
    Thinking(ThinkingBlock),
    RedactedThinking,
}

const BLOCK_TYPES: &str =
    "`text`, `image`, `document`, `tool_use`, `tool_result`, `thinking`, `redacted_thinking`";

impl<'a> InBlock<'a> {
    /// Parses one raw block; the error is serde's (or names the unknown type).
    pub fn parse(raw: &'a RawValue, kind: &str) -> Result<InBlock<'a>, String> {
        let e = |e: serde_json::Error| e.to_string();
        Ok(match kind {
            "text" => InBlock::Text(p(raw).map_err(e)?),
            "image" => InBlock::Image(p(raw).map_err(e)?),
            "document" => InBlock::Document(p(raw).map_err(e)?),
            "tool_use" => InBlock::ToolUse(p(raw).map_err(e)?),
            "tool_result" => InBlock::ToolResult(p(raw).map_err(e)?),
            "thinking" => InBlock::Thinking(p(raw).map_err(e)?),
            "redacted_thinking" => InBlock::RedactedThinking,
            "(missing)" => return Err("missing field `type`".to_owned()),
            other => {
                return Err(format!(
                    "unknown variant `{other}`, expected one of {BLOCK_TYPES}"
                ));
            }
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct TextBlock {
    pub text: String,
}

/// An `image` or `document` block.
#[derive(Debug, Deserialize)]
pub struct SourceBlock<'a> {
    #[serde(borrow)]
    pub source: &'a RawValue,
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ToolUseBlock {
    #[serde(default)]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub input: Option<Bounded>,
}

#[derive(Debug, Deserialize)]
pub struct ToolResultBlock<'a> {
    pub tool_use_id: String,
    #[serde(borrow, default)]
    pub content: Option<Content<'a>>,
    #[serde(default)]
    pub is_error: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct ThinkingBlock {
    pub thinking: String,
    #[serde(default)]
    pub signature: Option<String>,
}

/// Where an image's or a document's bytes come from.
#[derive(Debug)]
pub enum Source<'a> {
    Base64 { media_type: String, data: String },
    Url { url: String },
    Text { data: String },
    Content { content: Content<'a> },
    File,
}

impl<'a> Source<'a> {
    /// Parses a block's `source` by its `type`.
    pub fn parse(raw: &'a RawValue) -> Result<Source<'a>, String> {
        #[derive(Deserialize)]
        struct Base64 {
            media_type: String,
            data: String,
        }
        #[derive(Deserialize)]
        struct Url {
            url: String,
        }
        #[derive(Deserialize)]
        struct Text {
            data: String,
        }
        #[derive(Deserialize)]
        struct Nested<'a> {
            #[serde(borrow)]
            content: Content<'a>,
        }
        let e = |e: serde_json::Error| format!("source: {e}");
        let head: Head<'_> = p(raw).map_err(e)?;
        Ok(match head.kind.as_deref() {
            Some("base64") => {
                let b: Base64 = p(raw).map_err(e)?;
                Source::Base64 {
                    media_type: b.media_type,
                    data: b.data,
                }
            }
            Some("url") => Source::Url {
                url: p::<Url>(raw).map_err(e)?.url,
            },
            Some("text") => Source::Text {
                data: p::<Text>(raw).map_err(e)?.data,
            },
            Some("content") => Source::Content {
                content: p::<Nested<'_>>(raw).map_err(e)?.content,
            },
            Some("file") => Source::File,
            Some(other) => {
                return Err(format!(
                    "source: unknown variant `{other}`, expected one of `base64`, `url`, `text`, `content`, `file`"
                ));
            }
            None => return Err("source: missing field `type`".to_owned()),
        })
    }
}

// ---- response ---------------------------------------------------------------------------

/// A whole message (the non-streamed answer, and `message_start`'s `message`).
#[derive(Debug, Serialize)]
pub struct MessageOut<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub role: &'static str,
    pub model: &'a str,
    pub content: Vec<BlockOut>,
    pub stop_reason: Option<&'static str>,
    pub stop_sequence: Option<()>,
    pub usage: UsageOut,
}

/// A content block of an answer.
#[derive(Debug, Serialize, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockOut {
    Thinking {
        thinking: String,
        signature: String,
    },
    Text {
        text: String,
        /// The web sources of this block's text (left out when there are none).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        citations: Vec<CitationOut>,
    },
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
}

/// A text block's citation of a web source (`web_search_result_location`; the SDKs' types
/// require `url`, `cited_text` and `encrypted_index`, and `title` may be null).
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct CitationOut {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub url: String,
    pub title: Option<String>,
    /// Opaque to clients (Anthropic's points into its own search index; see
    /// `convert::Sources`).
    pub encrypted_index: String,
    /// The block's text this source supports.
    pub cited_text: String,
}

#[derive(Debug, Serialize, Clone, Copy)]
pub struct UsageOut {
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub cache_creation_input_tokens: u32,
    pub cache_read_input_tokens: u32,
}

impl UsageOut {
    pub fn new(input_tokens: u32, output_tokens: u32) -> Self {
        Self {
            input_tokens,
            output_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ModelObject {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub display_name: String,
    pub created_at: String,
    /// Required by the 2.x SDKs' `ModelInfo` (`active`, `deprecated` or `retired`).
    pub lifecycle: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub data: Vec<ModelObject>,
    pub has_more: bool,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}
