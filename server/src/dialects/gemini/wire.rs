//! Gemini API shapes (`generativelanguage.googleapis.com`), as Google documents them.
//!
//! Requests are tolerant: unknown fields are ignored, and the proto-JSON snake_case spellings
//! (`system_instruction`, `inline_data`, …) are accepted next to the camelCase ones the SDKs
//! send. Responses use camelCase and carry the fields the SDKs read.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dialects::limits::{
    Bounded, CountedVec, MessagesKind, PartsKind, RawSeq, TextOr, ToolsKind,
};

// ---- request ----------------------------------------------------------------------------

/// `POST models/{m}:generateContent` and `:streamGenerateContent`.
///
/// `contents` and each content's `parts` are kept as raw elements borrowed from the body and
/// counted as they are read (`dialects::limits`); each part is then parsed on its own.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest<'a> {
    #[serde(borrow, default)]
    pub contents: Option<RawSeq<'a, MessagesKind>>,
    #[serde(borrow, default, alias = "system_instruction")]
    pub system_instruction: Option<SystemInstruction<'a>>,
    #[serde(default, alias = "generation_config")]
    pub generation_config: Option<GenerationConfig>,
    /// Function declarations (`parameters` or `parametersJsonSchema`), `googleSearch`,
    /// `codeExecution`, `urlContext`…: accepted, never passed upstream.
    #[serde(default)]
    pub tools: Option<CountedVec<Tool, ToolsKind>>,
    #[serde(default, alias = "tool_config")]
    pub tool_config: Option<ToolConfig>,
    /// Accepted and not applied.
    #[serde(default, alias = "safety_settings")]
    pub safety_settings: Option<Bounded>,
    /// Accepted and not applied.
    #[serde(default, alias = "cached_content")]
    pub cached_content: Option<Bounded>,
    /// Present inside `countTokens`' `generateContentRequest`; the path's model wins.
    #[serde(default)]
    pub model: Option<String>,
}

/// `POST models/{m}:countTokens`: either `contents` or a whole `generateContentRequest`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CountTokensRequest<'a> {
    #[serde(borrow, default)]
    pub contents: Option<RawSeq<'a, MessagesKind>>,
    #[serde(borrow, default, alias = "generate_content_request")]
    pub generate_content_request: Option<GenerateContentRequest<'a>>,
}

/// `systemInstruction`: a `Content` (its role is ignored) or, leniently, a plain string.
pub type SystemInstruction<'a> = TextOr<'a, Content<'a>>;

#[derive(Debug, Deserialize, Default)]
pub struct Content<'a> {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(borrow, default)]
    pub parts: Option<RawSeq<'a, PartsKind>>,
}

/// One entry of `tools`. Its function declarations count as tools too; the other kinds
/// (`googleSearch`, `codeExecution`, …) are skipped unparsed.
#[derive(Debug, Deserialize, Default)]
pub struct Tool {
    #[serde(
        default,
        rename = "functionDeclarations",
        alias = "function_declarations"
    )]
    pub function_declarations: Option<CountedVec<Bounded, ToolsKind>>,
}

/// One part. Exactly one data field is expected; `thought` and `thoughtSignature` qualify it.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub thought: Option<bool>,
    /// Sent back by clients on replayed function calls; accepted (the gateway has nothing to
    /// verify against, since the upstream never sees client tools).
    #[serde(default, alias = "thought_signature")]
    pub thought_signature: Option<String>,
    #[serde(default, alias = "inline_data")]
    pub inline_data: Option<Blob>,
    #[serde(default, alias = "file_data")]
    pub file_data: Option<FileData>,
    #[serde(default, alias = "function_call")]
    pub function_call: Option<FunctionCall>,
    #[serde(default, alias = "function_response")]
    pub function_response: Option<FunctionResponse>,
    #[serde(default, alias = "executable_code")]
    pub executable_code: Option<ExecutableCode>,
    #[serde(default, alias = "code_execution_result")]
    pub code_execution_result: Option<CodeExecutionResult>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    #[serde(default, alias = "mime_type")]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub data: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileData {
    #[serde(default, alias = "mime_type")]
    pub mime_type: Option<String>,
    #[serde(default, alias = "file_uri")]
    pub file_uri: String,
}

#[derive(Debug, Deserialize)]
pub struct FunctionCall {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub args: Option<Bounded>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionResponse {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub response: Option<Bounded>,
}

#[derive(Debug, Deserialize)]
pub struct ExecutableCode {
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub code: String,
}

#[derive(Debug, Deserialize)]
pub struct CodeExecutionResult {
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub output: Option<String>,
}

/// `generationConfig`. The fields below are read (the sampling and length options reach the
/// domain request; each upstream says which it honours); every other documented field
/// (`topK`, `seed`, `responseModalities`, `presencePenalty`, …) is accepted and ignored.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    #[serde(default, alias = "candidate_count")]
    pub candidate_count: Option<i64>,
    #[serde(default, alias = "thinking_config")]
    pub thinking_config: Option<ThinkingConfig>,
    #[serde(default, alias = "response_mime_type")]
    pub response_mime_type: Option<String>,
    #[serde(default, alias = "response_schema")]
    pub response_schema: Option<Bounded>,
    #[serde(default, alias = "response_json_schema")]
    pub response_json_schema: Option<Bounded>,
    #[serde(default, alias = "max_output_tokens")]
    pub max_output_tokens: Option<Bounded>,
    #[serde(default)]
    pub temperature: Option<Bounded>,
    #[serde(default, alias = "top_p")]
    pub top_p: Option<Bounded>,
    #[serde(default, alias = "stop_sequences")]
    pub stop_sequences: Option<Bounded>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    #[serde(default, alias = "include_thoughts")]
    pub include_thoughts: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    #[serde(default, alias = "function_calling_config")]
    pub function_calling_config: Option<FunctionCallingConfig>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default, alias = "allowed_function_names")]
    pub allowed_function_names: Option<Vec<String>>,
}

// ---- response ---------------------------------------------------------------------------

/// One `GenerateContentResponse` (a whole answer, or one stream chunk).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse<'a> {
    pub candidates: Vec<Candidate<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<UsageMetadata>,
    pub model_version: &'a str,
    pub response_id: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate<'a> {
    pub content: ContentOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<&'static str>,
    pub index: u32,
    /// The web sources of the answer (search grounding), when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grounding_metadata: Option<&'a GroundingMetadata>,
}

/// `candidates[].groundingMetadata`: the answer's web sources (`groundingChunks`, one per
/// distinct URL) and the ranges of its text each supports (`groundingSupports`).
/// `webSearchQueries` and `searchEntryPoint` are left out: the upstream does not report them.
#[derive(Debug, Serialize, Default, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroundingMetadata {
    pub grounding_chunks: Vec<GroundingChunk>,
    pub grounding_supports: Vec<GroundingSupport>,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct GroundingChunk {
    pub web: WebChunk,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct WebChunk {
    pub uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroundingSupport {
    pub segment: Segment,
    /// Indices into `groundingChunks`: every source of this range.
    pub grounding_chunk_indices: Vec<usize>,
}

/// A range of the answer's text: UTF-8 byte offsets (`endIndex` exclusive) into the whole
/// visible answer (every non-thought text part, in order, across all streamed chunks).
#[derive(Debug, Serialize, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    pub start_index: usize,
    pub end_index: usize,
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct ContentOut<'a> {
    pub role: &'static str,
    pub parts: Vec<PartOut<'a>>,
}

/// One answer part.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum PartOut<'a> {
    Text {
        text: std::borrow::Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        thought: Option<bool>,
    },
    #[serde(rename_all = "camelCase")]
    InlineData { inline_data: BlobOut<'a> },
    /// A generated video, by the gateway's link to it (the bytes are not inlined).
    #[serde(rename_all = "camelCase")]
    FileData { file_data: FileDataOut<'a> },
    #[serde(rename_all = "camelCase")]
    FunctionCall {
        function_call: FunctionCallOut<'a>,
        thought_signature: &'static str,
    },
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobOut<'a> {
    pub mime_type: &'a str,
    /// Standard base64.
    pub data: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileDataOut<'a> {
    pub mime_type: &'a str,
    pub file_uri: &'a str,
}

#[derive(Debug, Serialize)]
pub struct FunctionCallOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    pub name: &'a str,
    pub args: Value,
}

#[derive(Debug, Serialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    pub prompt_token_count: u32,
    pub candidates_token_count: u32,
    pub total_token_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thoughts_token_count: Option<u32>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CountTokensResponse {
    pub total_tokens: u32,
}

/// One entry of `GET models`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelOut {
    pub name: String,
    pub base_model_id: String,
    pub version: String,
    pub display_name: String,
    pub description: String,
    pub input_token_limit: u32,
    pub output_token_limit: u32,
    pub supported_generation_methods: [&'static str; 3],
    pub temperature: f32,
    pub max_temperature: f32,
    pub top_p: f32,
    pub top_k: u32,
    pub thinking: bool,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub models: Vec<ModelOut>,
}
