//! Web-search citations (`StreamEvent::Citation`) → OpenAI `url_citation` annotations.
//!
//! A domain citation names a range of the answer's visible text (byte offsets into the
//! concatenation of every `StreamEvent::Text`). What the client receives can differ: Chat puts
//! media markdown into `content` between text pieces; Responses splits the text over several
//! `message` items when a thought, an image or a tool call comes in between. [`TextMap`]
//! records where each piece of answer text landed (which client text, at which byte) and maps a
//! citation onto the client's texts.
//!
//! The offsets OpenAI sends (`start_index`, `end_index`) are counted here in **Unicode code
//! points** of the text the client received, `end_index` exclusive: OpenAI documents no unit,
//! and code points are what the official Python SDK's strings index by (`text[start:end]` is
//! the cited text). JavaScript clients, whose strings count UTF-16 units, slice with
//! `Array.from(text).slice(start, end).join("")`.

use serde_json::{Value, json};

use crate::domain::Citation;

/// A piece of the answer's text as sent: the domain bytes `domain..domain + len` are the
/// client's text number `target` at byte `at`.
#[derive(Debug, Clone, Copy)]
struct Segment {
    domain: usize,
    len: usize,
    target: usize,
    at: usize,
}

/// Where the answer's text went (see the module doc).
#[derive(Debug, Default)]
pub struct TextMap {
    segments: Vec<Segment>,
    /// Bytes of answer text seen so far.
    domain_len: usize,
}

/// A citation's range in one client text, in bytes of that text (`start < end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub target: usize,
    pub start: usize,
    pub end: usize,
}

impl TextMap {
    /// Records `len` bytes of answer text, sent as the bytes at `at..at + len` of the client's
    /// text number `target`.
    pub fn push(&mut self, len: usize, target: usize, at: usize) {
        if len == 0 {
            return;
        }
        self.segments.push(Segment {
            domain: self.domain_len,
            len,
            target,
            at,
        });
        self.domain_len += len;
    }

    /// Where `citation` falls: one span per client text its range touches (the smallest range
    /// of that text covering every piece, so media markdown sent in between is covered too),
    /// in order. Empty for an empty range, or one that is not (yet) within the text sent.
    pub fn locate(&self, citation: &Citation) -> Vec<Span> {
        let (start, end) = (citation.start, citation.end);
        if start >= end || end > self.domain_len {
            return Vec::new();
        }
        let mut spans: Vec<Span> = Vec::new();
        for s in &self.segments {
            let (lo, hi) = (start.max(s.domain), end.min(s.domain + s.len));
            if lo >= hi {
                continue;
            }
            let (a, b) = (s.at + (lo - s.domain), s.at + (hi - s.domain));
            match spans.last_mut() {
                Some(last) if last.target == s.target => last.end = b,
                _ => spans.push(Span {
                    target: s.target,
                    start: a,
                    end: b,
                }),
            }
        }
        spans
    }
}

/// Code points of `text` before byte `byte` (`None` off a char boundary or past the end).
pub fn code_points(text: &str, byte: usize) -> Option<usize> {
    text.get(..byte).map(|t| t.chars().count())
}

/// A span of `text` in code points (`start_index`, `end_index`).
pub fn indexes(text: &str, span: Span) -> Option<(usize, usize)> {
    Some((code_points(text, span.start)?, code_points(text, span.end)?))
}

/// The title OpenAI requires: the source's title, else its domain, else its URL.
pub fn title(citation: &Citation) -> &str {
    citation
        .title
        .as_deref()
        .filter(|t| !t.is_empty())
        .or(citation.domain.as_deref().filter(|d| !d.is_empty()))
        .unwrap_or(&citation.url)
}

/// Chat Completions' annotation: `{"type": "url_citation", "url_citation": {…}}`.
pub fn chat_annotation(citation: &Citation, start: usize, end: usize) -> Value {
    json!({"type": "url_citation", "url_citation": {
        "start_index": start, "end_index": end, "url": citation.url, "title": title(citation)}})
}

/// The Responses API's annotation: `{"type": "url_citation", "start_index", …}` (flat).
pub fn responses_annotation(citation: &Citation, start: usize, end: usize) -> Value {
    json!({"type": "url_citation", "start_index": start, "end_index": end,
        "url": citation.url, "title": title(citation)})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cite(text: &str, cited: &str, url: &str) -> Citation {
        Citation::of(text, cited, url)
    }

    #[test]
    fn one_text_maps_to_code_points() {
        let text = "Café 𝄞 ☕ is coffee.";
        let mut map = TextMap::default();
        map.push(text.len(), 0, 0);
        let c = cite(text, "coffee", "https://a");
        let spans = map.locate(&c);
        assert_eq!(spans.len(), 1);
        let (s, e) = indexes(text, spans[0]).unwrap();
        let chars: Vec<char> = text.chars().collect();
        assert_eq!(chars[s..e].iter().collect::<String>(), "coffee");
        assert_eq!((s, e), (12, 18));
    }

    #[test]
    fn markdown_in_between_is_covered_and_text_beyond_is_refused() {
        // Chat: "ab" + "[md]" + "cd" in one content string.
        let mut map = TextMap::default();
        map.push(2, 0, 0);
        map.push(2, 0, 6);
        let c = Citation {
            url: "u".into(),
            title: None,
            domain: Some("example.com".into()),
            start: 1,
            end: 3,
            cited_text: "bc".into(),
        };
        assert_eq!(
            map.locate(&c),
            [Span {
                target: 0,
                start: 1,
                end: 7
            }]
        );
        assert_eq!(title(&c), "example.com");
        let beyond = Citation {
            end: 5,
            ..c.clone()
        };
        assert!(map.locate(&beyond).is_empty());
        let empty = Citation { end: 1, ..c };
        assert!(map.locate(&empty).is_empty());
    }

    #[test]
    fn a_range_over_two_texts_is_split() {
        // Responses: "ab" in item 0, "cd" in item 2.
        let mut map = TextMap::default();
        map.push(2, 0, 0);
        map.push(2, 2, 0);
        let c = Citation {
            url: "u".into(),
            title: None,
            domain: None,
            start: 1,
            end: 3,
            cited_text: "bc".into(),
        };
        assert_eq!(
            map.locate(&c),
            [
                Span {
                    target: 0,
                    start: 1,
                    end: 2
                },
                Span {
                    target: 2,
                    start: 0,
                    end: 1
                }
            ]
        );
        assert_eq!(title(&c), "u");
    }
}
