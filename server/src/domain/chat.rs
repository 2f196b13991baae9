//! The vendor-neutral chat model every dialect converts into and out of.

use bytes::Bytes;

use super::model::ModelId;

/// One chat request, whatever dialect it arrived in: what every dialect produces and every
/// upstream adapter consumes. System and developer instructions are [`Role::System`] messages
/// at their place in `messages`.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: ModelId,
    pub messages: Vec<Message>,
    pub stream: bool,
    /// Tool definitions the client declared (empty when its tool choice is "none"). Each
    /// upstream decides what it does with them: Gemini Business takes no custom tools, so its
    /// adapter emulates them (`crate::tools`, docs/TOOLS.md).
    pub tools: Vec<ToolSpec>,
    /// Whether and which tool the model must call (`tool_choice`, `functionCallingConfig`).
    pub tool_choice: ToolChoice,
    /// Whether the model may make several calls in one answer (`parallel_tool_calls`, the
    /// inverse of Anthropic's `disable_parallel_tool_use`).
    pub parallel_tool_calls: bool,
    /// Sampling and length options the client asked for.
    pub options: GenerationOptions,
}

impl ChatRequest {
    /// A request for `model` with `messages`, not streamed, no tools, default options.
    pub fn new(model: ModelId, messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model,
            messages,
            stream: false,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            options: GenerationOptions::default(),
        }
    }

    /// Every media part of every message, in conversation order.
    pub fn media(&self) -> impl Iterator<Item = &Media> {
        self.messages.iter().flat_map(Message::media)
    }
}

/// Whether and how the model must call a tool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides (the default).
    #[default]
    Auto,
    /// No tool: the request is answered as if it declared none.
    None,
    /// At least one call, any declared tool.
    Required,
    /// At least one call of this tool.
    Named(String),
}

impl ToolChoice {
    /// Whether the model must call a tool.
    pub fn forces(&self) -> bool {
        matches!(self, ToolChoice::Required | ToolChoice::Named(_))
    }
}

/// Sampling and length options, as the client sent them (`None`: not given). An upstream that
/// cannot honour one ignores it (documented per upstream).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationOptions {
    /// `max_tokens` / `max_completion_tokens` / `max_output_tokens` / `maxOutputTokens`.
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Stop sequences.
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// System or developer instructions.
    System,
    User,
    Assistant,
    /// The result of a tool call, sent back by the client.
    Tool,
}

/// One turn of the conversation.
#[derive(Debug, Clone)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
    /// Tool calls an assistant turn made.
    pub tool_calls: Vec<ToolCall>,
    /// For a [`Role::Tool`] turn: the name of the tool (or the call id when the name is unknown).
    pub tool_name: Option<String>,
}

impl Message {
    /// A message with the given role and parts and nothing else.
    pub fn new(role: Role, parts: Vec<Part>) -> Self {
        Self {
            role,
            parts,
            tool_calls: Vec::new(),
            tool_name: None,
        }
    }

    /// The text parts joined without separator (how every dialect concatenates text parts).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            if let Part::Text(t) = part {
                out.push_str(t);
            }
        }
        out
    }

    /// The media parts, in order.
    pub fn media(&self) -> impl Iterator<Item = &Media> {
        self.parts.iter().filter_map(|p| match p {
            Part::Media(m) => Some(m),
            Part::Text(_) => None,
        })
    }
}

#[derive(Debug, Clone)]
pub enum Part {
    Text(String),
    Media(Media),
}

/// What kind of media a part carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
}

impl MediaKind {
    /// The kind a MIME type belongs to.
    pub fn from_mime(mime: &str) -> MediaKind {
        let top = mime
            .split('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match top.as_str() {
            "image" => MediaKind::Image,
            "video" => MediaKind::Video,
            "audio" => MediaKind::Audio,
            _ => MediaKind::Document,
        }
    }
}

/// A media input.
#[derive(Debug, Clone, PartialEq)]
pub enum Media {
    /// Bytes the client sent (data URL or base64 block), already decoded.
    Inline { mime: String, data: Bytes },
    /// An http(s) URL the upstream is asked to fetch itself.
    Url { url: String, kind: MediaKind },
}

impl Media {
    pub fn kind(&self) -> MediaKind {
        match self {
            Media::Inline { mime, .. } => MediaKind::from_mime(mime),
            Media::Url { kind, .. } => *kind,
        }
    }
}

/// A tool the client declared.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Option<serde_json::Value>,
}

/// A tool call, made by the model (out) or replayed by the client (in).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as a JSON text.
    pub arguments: String,
}

/// A generated image or video, as bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedMedia {
    pub mime: String,
    pub data: Bytes,
    /// The gateway's link to the stored copy, once published (`media::MediaOut`); `None`
    /// means "not stored": dialects then send the bytes inline.
    pub url: Option<String>,
}

impl GeneratedMedia {
    pub fn new(mime: impl Into<String>, data: Bytes) -> Self {
        Self {
            mime: mime.into(),
            data,
            url: None,
        }
    }
}

/// A web source a range of the answer's text rests on (search grounding).
///
/// The range is in the answer's visible text: the concatenation of every [`StreamEvent::Text`]
/// of the answer, as byte offsets on `char` boundaries (`end` exclusive). A citation is emitted
/// only after all the text it covers (`end` ≤ the text emitted so far), so an encoder can turn
/// it into its own units (UTF-16 or code points, bytes, the cited text) from what it has sent.
/// One range supported by several sources is one citation per source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Citation {
    pub url: String,
    pub title: Option<String>,
    /// The source's domain (e.g. `example.com`), when the upstream named it.
    pub domain: Option<String>,
    pub start: usize,
    pub end: usize,
    /// The cited text: `text[start..end]` of the answer.
    pub cited_text: String,
}

#[cfg(test)]
impl Citation {
    /// A citation of the first `cited` in `answer`, from `url` (titled "title of <url>").
    pub fn of(answer: &str, cited: &str, url: &str) -> Citation {
        let start = answer.find(cited).unwrap_or_default();
        Citation {
            url: url.into(),
            title: Some(format!("title of {url}")),
            domain: None,
            start,
            end: start + cited.len(),
            cited_text: cited.into(),
        }
    }
}

/// What the upstream produces, in order, as it arrives.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A piece of the visible answer.
    Text(String),
    /// A piece of the model's reasoning.
    Thought(String),
    /// A generated image or video.
    Media(GeneratedMedia),
    /// A tool call the model made.
    ToolCall(ToolCall),
    /// A source for a range of the text already sent (see [`Citation`]).
    Citation(Citation),
}

/// Why the answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    ToolCalls,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_kind_from_mime() {
        assert_eq!(MediaKind::from_mime("image/png"), MediaKind::Image);
        assert_eq!(MediaKind::from_mime("VIDEO/mp4"), MediaKind::Video);
        assert_eq!(MediaKind::from_mime("audio/ogg"), MediaKind::Audio);
        assert_eq!(MediaKind::from_mime("application/pdf"), MediaKind::Document);
        assert_eq!(MediaKind::from_mime(""), MediaKind::Document);
    }

    #[test]
    fn text_joins_text_parts_only() {
        let m = Message::new(
            Role::User,
            vec![
                Part::Text("a".into()),
                Part::Media(Media::Url {
                    url: "https://x/y.png".into(),
                    kind: MediaKind::Image,
                }),
                Part::Text("b".into()),
            ],
        );
        assert_eq!(m.text(), "ab");
        assert_eq!(m.media().count(), 1);
    }
}
