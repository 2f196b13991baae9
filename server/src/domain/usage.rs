//! Token usage, estimated.
//!
//! The Gemini Business upstream reports no usage, so the gateway estimates it (never reports
//! zero). The estimator, documented in README:
//!
//! * text: every 4 ASCII bytes count as one token, every non-ASCII character as one token
//!   (CJK text is roughly a token per character), rounded up;
//! * media: a fixed [`IMAGE_TOKENS`] per image (Gemini's documented cost of an image) and
//!   [`OTHER_MEDIA_TOKENS`] per video, audio or document input or output. Base64 bytes are never
//!   counted as text (reference defect 30);
//! * input = the text the upstream is sent (each adapter says what that is: Gemini Business
//!   sends the flattened conversation) plus its attachments; output = answer text plus
//!   reasoning text plus generated media. Each side is at least 1.

use super::chat::{MediaKind, StreamEvent};

/// Tokens charged for one image.
pub const IMAGE_TOKENS: u32 = 258;
/// Tokens charged for one video, audio clip or document.
pub const OTHER_MEDIA_TOKENS: u32 = 1032;

/// Estimated usage of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// The part of `output_tokens` spent on reasoning.
    pub reasoning_tokens: u32,
}

impl Usage {
    pub fn total_tokens(&self) -> u32 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// Estimated tokens of a text (see the module docs).
pub fn text_tokens(text: &str) -> u32 {
    let mut counter = TextTokenCounter::default();
    counter.add(text);
    counter.tokens()
}

/// Counts the estimated tokens of text written to it, without keeping the text: an upstream
/// can estimate what it would send by writing it here instead of into a string.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextTokenCounter {
    ascii: u64,
    other: u64,
}

impl TextTokenCounter {
    fn add(&mut self, text: &str) {
        for c in text.chars() {
            if c.is_ascii() {
                self.ascii += 1;
            } else {
                self.other += 1;
            }
        }
    }

    /// The estimate of everything written so far (the same as [`text_tokens`] of it).
    pub fn tokens(&self) -> u32 {
        u32::try_from(self.ascii.div_ceil(4) + self.other).unwrap_or(u32::MAX)
    }
}

impl std::fmt::Write for TextTokenCounter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.add(s);
        Ok(())
    }
}

/// Tokens charged for one media input or output of `kind`.
pub fn media_tokens(kind: MediaKind) -> u32 {
    match kind {
        MediaKind::Image => IMAGE_TOKENS,
        _ => OTHER_MEDIA_TOKENS,
    }
}

/// Accumulates output usage as stream events pass by, without keeping their text.
#[derive(Debug, Clone, Default)]
pub struct OutputMeter {
    answer: u32,
    reasoning: u32,
}

impl OutputMeter {
    pub fn observe(&mut self, event: &StreamEvent) {
        match event {
            StreamEvent::Text(t) => self.answer = self.answer.saturating_add(text_tokens(t)),
            StreamEvent::Thought(t) => {
                self.reasoning = self.reasoning.saturating_add(text_tokens(t))
            }
            StreamEvent::Media(m) => {
                self.answer = self
                    .answer
                    .saturating_add(media_tokens(MediaKind::from_mime(&m.mime)))
            }
            StreamEvent::Citation(_) => {}
            StreamEvent::ToolCall(c) => {
                self.answer = self
                    .answer
                    .saturating_add(text_tokens(&c.name))
                    .saturating_add(text_tokens(&c.arguments))
            }
        }
    }

    /// The usage of the whole request.
    pub fn usage(&self, input_tokens: u32) -> Usage {
        Usage {
            input_tokens: input_tokens.max(1),
            output_tokens: self.answer.saturating_add(self.reasoning).max(1),
            reasoning_tokens: self.reasoning,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::chat::GeneratedMedia;
    use bytes::Bytes;

    #[test]
    fn text_estimate() {
        assert_eq!(text_tokens(""), 0);
        assert_eq!(text_tokens("abcd"), 1);
        assert_eq!(text_tokens("abcde"), 2);
        assert_eq!(text_tokens("你好"), 2);
        assert_eq!(text_tokens("hi 你好"), 3);
    }

    #[test]
    fn input_counts_media_by_kind_not_bytes() {
        let big = Bytes::from(vec![0u8; 1_000_000]);
        let media = crate::domain::Media::Inline {
            mime: "image/png".into(),
            data: big,
        };
        assert_eq!(media_tokens(media.kind()), IMAGE_TOKENS);
        assert_eq!(media_tokens(MediaKind::Document), OTHER_MEDIA_TOKENS);
    }

    #[test]
    fn the_counter_agrees_with_text_tokens_across_pieces() {
        use std::fmt::Write as _;
        let text = "hello 你好, a longer piece of ASCII text; ünïcode";
        let mut counter = TextTokenCounter::default();
        // Written in pieces that split the ASCII runs at odd places.
        for piece in [
            "hel",
            "lo 你",
            "好, a longer piece of ASC",
            "II text; ünïcode",
        ] {
            counter.write_str(piece).unwrap();
        }
        assert_eq!(counter.tokens(), text_tokens(text));
    }

    #[test]
    fn output_is_never_zero_and_separates_reasoning() {
        let mut meter = OutputMeter::default();
        assert_eq!(
            meter.usage(0),
            Usage {
                input_tokens: 1,
                output_tokens: 1,
                reasoning_tokens: 0
            }
        );
        meter.observe(&StreamEvent::Thought("thinking".into()));
        meter.observe(&StreamEvent::Text("answer text".into()));
        meter.observe(&StreamEvent::Media(GeneratedMedia {
            mime: "image/png".into(),
            data: Bytes::from(vec![0u8; 100_000]),
            url: None,
        }));
        let u = meter.usage(10);
        assert_eq!(u.reasoning_tokens, 2);
        assert_eq!(u.output_tokens, 2 + 3 + IMAGE_TOKENS);
        assert_eq!(u.total_tokens(), 10 + u.output_tokens);
    }
}
