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
//!   The `<system>` block appears only when there is system text; it holds the system messages
//!   that come before the conversation, and a system message between turns is a `<system>` block
//!   of its own at its place. Turns without text, media or tool calls are skipped.
//! * Media from **every** turn is attached, in conversation order; in a transcript each turn that
//!   carries media is marked with `[attachment N: kind]` so the model can tell which turn sent it.

use std::fmt;

use crate::domain::usage::{TextTokenCounter, media_tokens};
use crate::domain::{Media, MediaKind, Message, Part, Role};

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

/// How earlier tool calls are written in the transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStyle {
    /// `Assistant: [tool call name(arguments)]` (the request declares no tools).
    Plain,
    /// In the tool protocol's grammar (`crate::tools::render_call`), so that the model sees
    /// the calls it is asked to make (the request declares tools).
    Protocol,
}

/// Flattens `messages` into one query (see the module docs for the format).
pub fn flatten(messages: &[Message]) -> UpstreamQuery {
    flatten_styled(messages, CallStyle::Plain)
}

/// [`flatten`], with earlier tool calls written in `style`.
pub fn flatten_styled(messages: &[Message], style: CallStyle) -> UpstreamQuery {
    let mut text = String::new();
    let mut attachments = Vec::new();
    // Writing into a String cannot fail.
    let _ = write_query(messages, &mut text, style, |m| attachments.push(m.clone()));
    UpstreamQuery { text, attachments }
}

/// The estimated input tokens of the query a request flattens into (what the answers and the
/// count-tokens routes report), counted as it is written, without building it: the tools
/// section of emulated tools (docs/TOOLS.md) included.
pub fn input_tokens(request: &crate::domain::ChatRequest) -> u32 {
    let mut text = TextTokenCounter::default();
    let mut media: u32 = 0;
    let style =
        if request.tools.is_empty() || request.tool_choice == crate::domain::ToolChoice::None {
            CallStyle::Plain
        } else {
            let section = crate::tools::instructions(
                &request.tools,
                &request.tool_choice,
                request.parallel_tool_calls,
            );
            // Counting cannot fail.
            let _ = fmt::Write::write_str(&mut text, &section);
            let _ = fmt::Write::write_str(&mut text, "\n\n");
            CallStyle::Protocol
        };
    let messages = &request.messages;
    // Counting cannot fail.
    let _ = write_query(messages, &mut text, style, |m| {
        media = media.saturating_add(media_tokens(m.kind()));
    });
    text.tokens().saturating_add(media).max(1)
}

/// The text parts of `message`, joined without separator.
fn write_text(message: &Message, out: &mut impl fmt::Write) -> fmt::Result {
    for part in &message.parts {
        if let Part::Text(t) = part {
            out.write_str(t)?;
        }
    }
    Ok(())
}

fn has_text(message: &Message, visible: fn(&str) -> bool) -> bool {
    message
        .parts
        .iter()
        .any(|p| matches!(p, Part::Text(t) if visible(t)))
}

/// Writes the query text of `messages` to `out` (the format in the module docs) and hands
/// every attachment, in conversation order, to `attach`.
fn write_query(
    messages: &[Message],
    out: &mut impl fmt::Write,
    style: CallStyle,
    mut attach: impl FnMut(&Media),
) -> fmt::Result {
    if let [only] = messages
        && only.role == Role::User
    {
        only.media().for_each(&mut attach);
        return write_text(only, out);
    }

    // The system messages before the conversation form the opening block; a later one (Claude
    // Code puts its environment notes between turns) is a block of its own at its place.
    let leading = messages
        .iter()
        .take_while(|m| m.role == Role::System)
        .count();
    let mut in_system = false;
    for message in messages[..leading]
        .iter()
        .filter(|m| has_text(m, |t| !t.trim().is_empty()))
    {
        out.write_str(if in_system { "\n\n" } else { "<system>\n" })?;
        in_system = true;
        write_text(message, out)?;
    }
    if in_system {
        out.write_str("\n</system>\n\n")?;
    }

    let mut attached = 0usize;
    for (i, message) in messages.iter().enumerate() {
        let speaker = match message.role {
            Role::System => {
                if i >= leading && has_text(message, |t| !t.trim().is_empty()) {
                    out.write_str("<system>\n")?;
                    write_text(message, out)?;
                    out.write_str("\n</system>\n\n")?;
                }
                // Media in a system turn is unusual but not dropped (and not marked).
                for media in message.media() {
                    attached += 1;
                    attach(media);
                }
                continue;
            }
            Role::User => "Human",
            Role::Assistant => "Assistant",
            Role::Tool => "Tool Result",
        };
        let text = has_text(message, |t| !t.is_empty());
        let mut media = message.media().peekable();
        if text || media.peek().is_some() {
            out.write_str(speaker)?;
            if message.role == Role::Tool {
                write!(out, " [{}]", message.tool_name.as_deref().unwrap_or("tool"))?;
            }
            out.write_str(": ")?;
            write_text(message, out)?;
            for (i, m) in media.enumerate() {
                attached += 1;
                attach(m);
                if text || i > 0 {
                    out.write_char(' ')?;
                }
                write!(out, "[attachment {attached}: {}]", kind_label(m.kind()))?;
            }
            out.write_str("\n\n")?;
        }
        for call in &message.tool_calls {
            match style {
                CallStyle::Plain => write!(
                    out,
                    "Assistant: [tool call {}({})]\n\n",
                    call.name, call.arguments
                )?,
                CallStyle::Protocol => {
                    out.write_str("Assistant: ")?;
                    crate::tools::render_call(call, out)?;
                    out.write_str("\n\n")?;
                }
            }
        }
    }
    out.write_str("Assistant:")
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
            "<system>\nsys one\n</system>\n\n\
             Human: first question\n\n\
             Assistant: first answer\n\n\
             <system>\nsys two\n</system>\n\n\
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

    #[test]
    fn the_estimate_counts_exactly_what_flatten_writes() {
        use crate::domain::usage::text_tokens;
        let mut with_media = msg(Role::User, "look at this, 你好");
        with_media.parts.push(Part::Media(image(1)));
        let mut system_media = msg(Role::System, "  ");
        system_media.parts.push(Part::Media(image(2)));
        let mut tool = msg(Role::Tool, "sunny");
        tool.tool_name = Some("get_weather".into());
        let mut call = msg(Role::Assistant, "");
        call.tool_calls.push(ToolCall {
            id: "c1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        });
        let conversations = [
            vec![msg(Role::User, "hello there")],
            vec![with_media.clone()],
            vec![
                msg(Role::System, "be brief"),
                system_media,
                msg(Role::System, "and kind"),
                with_media,
                call,
                tool,
                msg(Role::User, "thanks"),
            ],
        ];
        let specs: Vec<std::sync::Arc<crate::domain::ModelSpec>> = super::super::models::specs()
            .into_iter()
            .map(std::sync::Arc::new)
            .collect();
        let model = crate::domain::ModelId::parse_in(&specs, "gemini-2.5-flash").unwrap();
        for messages in conversations {
            let q = flatten(&messages);
            let media: u32 = q.attachments.iter().map(|m| media_tokens(m.kind())).sum();
            assert_eq!(
                input_tokens(&crate::domain::ChatRequest::new(
                    model.clone(),
                    messages.clone()
                )),
                (text_tokens(&q.text) + media).max(1),
                "{}",
                q.text
            );
        }
        // Declared tools are counted as the tools section the query starts with.
        let mut request = crate::domain::ChatRequest::new(model, vec![msg(Role::User, "weather?")]);
        let plain = input_tokens(&request);
        request.tools = vec![crate::domain::ToolSpec {
            name: "get_weather".into(),
            description: Some("The weather in a city".into()),
            parameters: Some(
                serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            ),
        }];
        let section = crate::tools::instructions(&request.tools, &request.tool_choice, true);
        let q = flatten_styled(&request.messages, CallStyle::Protocol);
        assert_eq!(
            input_tokens(&request),
            text_tokens(&format!("{section}\n\n{}", q.text)).max(1)
        );
        assert!(input_tokens(&request) > plain + 100);
        request.tool_choice = crate::domain::ToolChoice::None;
        assert_eq!(input_tokens(&request), plain);
    }
}
