//! Domain citations → Gemini `groundingMetadata`.
//!
//! Offsets are UTF-8 byte offsets into the whole visible answer (every `StreamEvent::Text`,
//! concatenated — what google-genai's `response.text` gives, and what a streaming client gets
//! by concatenating the chunks' texts), as the Gemini API measures `Segment` indices in bytes.
//! `partIndex` is not sent: the indices never restart at a part boundary.
//!
//! Sources are deduplicated by URL (`groundingChunks`), and the sources of one range are one
//! support with several `groundingChunkIndices` (the domain sends one citation per source).

use super::wire::{GroundingChunk, GroundingMetadata, GroundingSupport, Segment, WebChunk};
use crate::domain::{Citation, StreamEvent};

impl GroundingMetadata {
    pub fn is_empty(&self) -> bool {
        self.grounding_supports.is_empty()
    }

    /// Adds one citation of `text` (the answer's visible text so far). A citation whose range
    /// is not a range of `text` (out of bounds, reversed, inside a character) is dropped.
    /// Returns whether it was added.
    pub fn add(&mut self, citation: &Citation, text: &str) -> bool {
        let Some(cited) = text.get(citation.start..citation.end) else {
            tracing::debug!(
                start = citation.start,
                end = citation.end,
                len = text.len(),
                "citation outside the answer text dropped"
            );
            return false;
        };
        let chunk = match self
            .grounding_chunks
            .iter()
            .position(|c| c.web.uri == citation.url)
        {
            Some(i) => {
                let web = &mut self.grounding_chunks[i].web;
                if web.title.is_none() {
                    web.title.clone_from(&citation.title);
                }
                if web.domain.is_none() {
                    web.domain.clone_from(&citation.domain);
                }
                i
            }
            None => {
                self.grounding_chunks.push(GroundingChunk {
                    web: WebChunk {
                        uri: citation.url.clone(),
                        title: citation.title.clone(),
                        domain: citation.domain.clone(),
                    },
                });
                self.grounding_chunks.len() - 1
            }
        };
        match self.grounding_supports.iter_mut().find(|s| {
            s.segment.start_index == citation.start && s.segment.end_index == citation.end
        }) {
            Some(support) => {
                if !support.grounding_chunk_indices.contains(&chunk) {
                    support.grounding_chunk_indices.push(chunk);
                }
            }
            None => self.grounding_supports.push(GroundingSupport {
                segment: Segment {
                    start_index: citation.start,
                    end_index: citation.end,
                    text: cited.to_owned(),
                },
                grounding_chunk_indices: vec![chunk],
            }),
        }
        true
    }

    /// The grounding of a whole answer.
    pub fn of_events(events: &[StreamEvent]) -> GroundingMetadata {
        let mut text = String::new();
        let mut grounding = GroundingMetadata::default();
        for event in events {
            match event {
                StreamEvent::Text(t) => text.push_str(t),
                StreamEvent::Citation(c) => {
                    grounding.add(c, &text);
                }
                _ => {}
            }
        }
        grounding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Non-ASCII (2-, 3- and 4-byte characters) before the cited ranges.
    const PIECES: [&str; 2] = ["Café ☕ 𝄞: ", "milk is white. Rust is fast."];

    fn citation(text: &str, cited: &str, url: &str, title: Option<&str>) -> Citation {
        Citation {
            title: title.map(Into::into),
            domain: Some("example.com".into()),
            ..Citation::of(text, cited, url)
        }
    }

    #[test]
    fn sources_dedupe_and_ranges_merge() {
        let text = PIECES.concat();
        let events = vec![
            StreamEvent::Thought("hm".into()),
            StreamEvent::Text(PIECES[0].into()),
            StreamEvent::Text(PIECES[1].into()),
            StreamEvent::Citation(citation(&text, "milk is white", "https://a/", Some("A"))),
            StreamEvent::Citation(citation(&text, "milk is white", "https://b/", None)),
            StreamEvent::Citation(citation(&text, "Rust is fast", "https://a/", Some("A2"))),
            // Duplicated: no second index.
            StreamEvent::Citation(citation(&text, "Rust is fast", "https://a/", None)),
        ];
        let g = GroundingMetadata::of_events(&events);
        let v = serde_json::to_value(&g).unwrap();
        let start = text.find("milk").unwrap();
        assert_eq!(start, "Café ☕ 𝄞: ".len());
        assert_eq!(start, 16, "bytes, not chars (10) or UTF-16 units (11)");
        assert_eq!(
            v,
            json!({
                "groundingChunks": [
                    {"web": {"uri": "https://a/", "title": "A", "domain": "example.com"}},
                    {"web": {"uri": "https://b/", "domain": "example.com"}},
                ],
                "groundingSupports": [
                    {"segment": {"startIndex": start, "endIndex": start + 13, "text": "milk is white"},
                     "groundingChunkIndices": [0, 1]},
                    {"segment": {"startIndex": text.find("Rust").unwrap(), "endIndex": text.len() - 1, "text": "Rust is fast"},
                     "groundingChunkIndices": [0]},
                ],
            })
        );
        for s in &g.grounding_supports {
            assert_eq!(
                &text.as_bytes()[s.segment.start_index..s.segment.end_index],
                s.segment.text.as_bytes()
            );
        }
    }

    #[test]
    fn a_missing_title_is_filled_by_a_later_citation() {
        let text = "one two";
        let mut g = GroundingMetadata::default();
        assert!(g.add(&citation(text, "one", "https://a/", None), text));
        assert!(g.add(&citation(text, "two", "https://a/", Some("T")), text));
        assert_eq!(g.grounding_chunks.len(), 1);
        assert_eq!(g.grounding_chunks[0].web.title.as_deref(), Some("T"));
    }

    #[test]
    fn ranges_outside_the_text_are_dropped() {
        let text = "é𝄞 x";
        let mut g = GroundingMetadata::default();
        let mut c = citation(text, "x", "https://a/", None);
        for (start, end) in [(0, 1), (1, 2), (2, 3), (3, 6), (0, 100), (8, 7)] {
            c.start = start;
            c.end = end;
            assert!(!g.add(&c, text), "{start}..{end}");
        }
        assert!(g.is_empty());
        assert!(g.grounding_chunks.is_empty());
        // Only text already sent counts: a citation before its text is dropped.
        let events = vec![
            StreamEvent::Citation(citation(text, "x", "https://a/", None)),
            StreamEvent::Text(text.into()),
        ];
        assert!(GroundingMetadata::of_events(&events).is_empty());
    }
}
