//! The vendor-neutral domain: what a chat request is, what an answer stream carries, model ids,
//! prompt flattening and usage estimation. No HTTP and no wire formats here.

pub mod chat;
pub mod model;
pub mod prompt;
pub mod usage;

pub use chat::{
    ChatRequest, FinishReason, GeneratedMedia, Media, MediaKind, Message, Part, Role, StreamEvent,
    ToolCall, ToolSpec,
};
pub use model::{BaseModel, Features, ModelError, ModelId};
pub use prompt::{UpstreamQuery, flatten};
pub use usage::{OutputMeter, Usage};
