//! Flattening a conversation into the single query the Gemini Business upstream takes.
//!
//! The upstream accepts one query per session and keeps no history we could reuse, so every
//! request sends the whole conversation as one text. The format (documented in ARCHITECTURE.md):
//!
//! * A request that is exactly one user message (no system prompt, no other turn) is sent as the
//!   user's text, unchanged.
//! * Anything else is sent as a transcript:
//!
//!   ```text
//!   <system>
//!   {every system/developer text, in order, separated by a blank line}
//!   </system>
//!
//!   Human: {user text} [attachment 1: image]
//!
//!   Assistant: {assistant text}
//!
//!   Assistant: [tool call get_weather({"city":"Paris"})]
//!
//!   Tool Result [get_weather]: {tool output}
//!
//!   Human: {user text}
//!
//!   Assistant:
//!   ```
//!
//!   The `<system>` block appears only when there is system text. Turns without text, media or
//!   tool calls are skipped.
//! * Media from **every** turn is attached, in conversation order; in a transcript each turn that
//!   carries media is marked with `[attachment N: kind]` so the model can tell which turn sent it.

use std::fmt::Write as _;

use crate::domain::{Media, MediaKind, Message, Role};

/// Estimated input tokens of a query (what the answers and the count-tokens routes report).
pub fn input_tokens(query: &UpstreamQuery) -> u32 {
    crate::domain::usage::input_tokens(&query.text, &query.attachments)
}

/// What is sent upstream for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamQuery {
    pub text: String,
    pub attachments: Vec<Media>,
}

fn kind_label(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Image => "image",
        MediaKind::Video => "video",
        MediaKind::Audio => "audio",
        MediaKind::Document => "document",
    }
}

/// Flattens `messages` into one query (see the module docs for the format).
pub fn flatten(messages: &[Message]) -> UpstreamQuery {
    let mut attachments: Vec<Media> = Vec::new();

    if let [only] = messages
        && only.role == Role::User
    {
        attachments.extend(only.media().cloned());
        return UpstreamQuery {
            text: only.text(),
            attachments,
        };
    }

    let mut system = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    for message in messages {
        let text = message.text();
        match message.role {
            Role::System => {
                if !text.trim().is_empty() {
                    system.push(text);
                }
                // Media in a system turn is unusual but not dropped.
                attachments.extend(message.media().cloned());
            }
            Role::User | Role::Assistant | Role::Tool => {
                let speaker = match message.role {
                    Role::User => "Human".to_owned(),
                    Role::Assistant => "Assistant".to_owned(),
                    _ => format!(
                        "Tool Result [{}]",
                        message.tool_name.as_deref().unwrap_or("tool")
                    ),
                };
                let mut line = String::new();
                if !text.is_empty() {
                    line.push_str(&text);
                }
                for media in message.media() {
                    attachments.push(media.clone());
                    if !line.is_empty() {
                        line.push(' ');
                    }
                    let _ = write!(
                        line,
                        "[attachment {}: {}]",
                        attachments.len(),
                        kind_label(media.kind())
                    );
                }
                if !line.is_empty() {
                    lines.push(format!("{speaker}: {line}"));
                }
                for call in &message.tool_calls {
                    lines.push(format!(
                        "Assistant: [tool call {}({})]",
                        call.name, call.arguments
                    ));
                }
            }
        }
    }

    let mut text = String::new();
    if !system.is_empty() {
        text.push_str("<system>\n");
        text.push_str(&system.join("\n\n"));
        text.push_str("\n</system>\n\n");
    }
    for line in &lines {
        text.push_str(line);
        text.push_str("\n\n");
    }
    text.push_str("Assistant:");
    UpstreamQuery { text, attachments }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Part, ToolCall};
    use bytes::Bytes;

    fn msg(role: Role, text: &str) -> Message {
        Message::new(role, vec![Part::Text(text.into())])
    }

    fn image(n: u8) -> Media {
        Media::Inline {
            mime: "image/png".into(),
            data: Bytes::from(vec![n]),
        }
    }

    #[test]
    fn a_single_user_message_is_sent_verbatim() {
        let q = flatten(&[msg(Role::User, "hello there")]);
        assert_eq!(q.text, "hello there");
        assert!(q.attachments.is_empty());
    }

    #[test]
    fn system_prompt_alone_makes_a_transcript() {
        let q = flatten(&[msg(Role::System, "be brief"), msg(Role::User, "hi")]);
        assert_eq!(
            q.text,
            "<system>\nbe brief\n</system>\n\nHuman: hi\n\nAssistant:"
        );
    }

    #[test]
    fn every_turn_is_kept_in_order() {
        let mut assistant_call = msg(Role::Assistant, "");
        assistant_call.tool_calls.push(ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        });
        let mut tool = msg(Role::Tool, "sunny");
        tool.tool_name = Some("get_weather".into());
        let q = flatten(&[
            msg(Role::System, "sys one"),
            msg(Role::User, "first question"),
            msg(Role::Assistant, "first answer"),
            msg(Role::System, "sys two"),
            msg(Role::User, "weather?"),
            assistant_call,
            tool,
            msg(Role::User, "thanks"),
        ]);
        assert_eq!(
            q.text,
            "<system>\nsys one\n\nsys two\n</system>\n\n\
             Human: first question\n\n\
             Assistant: first answer\n\n\
             Human: weather?\n\n\
             Assistant: [tool call get_weather({\"city\":\"Paris\"})]\n\n\
             Tool Result [get_weather]: sunny\n\n\
             Human: thanks\n\n\
             Assistant:"
        );
    }

    #[test]
    fn media_from_every_turn_is_attached_and_marked() {
        let mut first = msg(Role::User, "look");
        first.parts.push(Part::Media(image(1)));
        let mut second = Message::new(Role::User, vec![Part::Media(image(2))]);
        second.parts.push(Part::Media(Media::Url {
            url: "https://example.com/v.mp4".into(),
            kind: MediaKind::Video,
        }));
        let q = flatten(&[first, msg(Role::Assistant, "nice"), second]);
        assert_eq!(q.attachments.len(), 3);
        assert_eq!(q.attachments[0], image(1));
        assert_eq!(q.attachments[1], image(2));
        assert!(q.text.contains("Human: look [attachment 1: image]"));
        assert!(
            q.text
                .contains("Human: [attachment 2: image] [attachment 3: video]")
        );
    }

    #[test]
    fn several_user_turns_are_not_dropped() {
        let q = flatten(&[msg(Role::User, "one"), msg(Role::User, "two")]);
        assert!(q.text.contains("Human: one") && q.text.contains("Human: two"));
    }

    #[test]
    fn single_message_keeps_its_media() {
        let mut m = msg(Role::User, "what is this");
        m.parts.push(Part::Media(image(7)));
        let q = flatten(&[m]);
        assert_eq!(q.text, "what is this");
        assert_eq!(q.attachments, vec![image(7)]);
    }
}
