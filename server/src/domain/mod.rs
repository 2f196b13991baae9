//! The vendor-neutral domain: what a chat request is, what an answer stream carries, model ids,
//! and usage estimation. No HTTP and no wire formats here.

pub mod chat;
pub mod model;
pub mod usage;

pub use chat::{
    ChatRequest, Citation, FinishReason, GeneratedMedia, GenerationOptions, Media, MediaKind,
    Message, Part, Role, StreamEvent, ToolCall, ToolChoice, ToolSpec,
};
pub use model::{Features, ModelError, ModelId, ModelSpec};
pub use usage::{OutputMeter, Usage};
