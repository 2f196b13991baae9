//! The streaming parser: the model's answer text in, text and calls out, as chunks arrive.
//!
//! A call starts only with [`OPEN`] at the start of a line (indentation aside) outside a
//! Markdown code fence, so a call quoted in a code block or mentioned in a sentence stays text.
//! Text is held back only while the current line could still be the opening tag (at most its
//! indentation and 11 characters); everything else is passed on as soon as it arrives. A block
//! that does not end, does not parse, names an unknown tool or breaks its schema is passed on
//! as the exact text the model wrote.

use crate::domain::ToolCall;

use super::{CLOSE, OPEN, ToolSet};

/// The most text one call block may hold before it is given up as text.
const MAX_BLOCK: usize = 1024 * 1024;
/// Indentation held back at the start of a line before it is passed on.
const MAX_INDENT: usize = 64;
/// Characters of a line kept to recognise a code fence.
const HEAD: usize = 8;

/// A piece of the answer, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Call(ToolCall),
}

enum Mode {
    Text,
    /// Inside a block: `raw` holds everything from the line's indentation on.
    Call {
        raw: String,
        body_start: usize,
    },
}

/// Separates text from calls in one answer (see the module docs).
pub struct CallParser<'a> {
    tools: &'a ToolSet,
    mode: Mode,
    /// Only indentation (and the start of the opening tag) on this line so far.
    at_line_start: bool,
    /// Held back: the line's indentation and what may be the opening tag.
    held: String,
    /// The first characters of the current line after its indentation.
    line_head: String,
    /// Whether every character of `line_head` after the first is the first one (or space).
    marker_only: bool,
    /// The open code fence's character (`` ` `` or `~`).
    fence: Option<char>,
    calls: usize,
    /// Whitespace after a call, held until text follows.
    pending: String,
    /// One call per answer was asked for and it came: the rest of the answer is dropped, as a
    /// model stopped after its call would not have written it.
    stopped: bool,
}

/// What one `push` produces: consecutive text merged. After a call, trailing whitespace is held
/// in `pending` until text follows (then it is passed on with it); whitespace that only
/// separates calls or ends the answer is dropped. Independent of where the chunks split.
struct Out {
    pieces: Vec<Piece>,
    text: String,
    after_call: bool,
    pending: String,
}

impl Out {
    fn flush(&mut self) {
        if self.text.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.text);
        if !self.after_call {
            self.pieces.push(Piece::Text(text));
            return;
        }
        let body = text.trim_end();
        if !body.is_empty() {
            let mut all = std::mem::take(&mut self.pending);
            all.push_str(body);
            self.pieces.push(Piece::Text(all));
        }
        self.pending.push_str(&text[body.len()..]);
    }

    fn call(&mut self, call: ToolCall) {
        self.flush();
        self.pending.clear();
        self.pieces.push(Piece::Call(call));
        self.after_call = true;
    }
}

impl<'a> CallParser<'a> {
    pub(super) fn new(tools: &'a ToolSet) -> CallParser<'a> {
        CallParser {
            tools,
            mode: Mode::Text,
            at_line_start: true,
            held: String::new(),
            line_head: String::new(),
            marker_only: true,
            fence: None,
            calls: 0,
            pending: String::new(),
            stopped: false,
        }
    }

    /// Calls recognised so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    fn out(&mut self) -> Out {
        Out {
            pieces: Vec::new(),
            text: String::new(),
            after_call: self.calls > 0,
            pending: std::mem::take(&mut self.pending),
        }
    }

    fn done(&mut self, mut out: Out) -> Vec<Piece> {
        out.flush();
        self.pending = out.pending;
        out.pieces
    }

    /// The pieces `chunk` completes.
    pub fn push(&mut self, chunk: &str) -> Vec<Piece> {
        let mut out = self.out();
        for c in chunk.chars() {
            if self.stopped {
                break;
            }
            self.step(c, &mut out);
        }
        self.done(out)
    }

    /// The end of the answer: whatever is held back, as text (an unfinished block included);
    /// whitespace after the last call is dropped.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = self.out();
        match std::mem::replace(&mut self.mode, Mode::Text) {
            Mode::Text => out.text.push_str(&std::mem::take(&mut self.held)),
            Mode::Call { raw, .. } => out.text.push_str(&raw),
        }
        let pieces = self.done(out);
        self.pending.clear();
        pieces
    }

    fn step(&mut self, c: char, out: &mut Out) {
        match &mut self.mode {
            Mode::Call { raw, body_start } => {
                raw.push(c);
                let closed = raw[*body_start..].ends_with(CLOSE);
                if !closed && raw.len() <= MAX_BLOCK {
                    return;
                }
                let Mode::Call { raw, body_start } = std::mem::replace(&mut self.mode, Mode::Text)
                else {
                    return;
                };
                let call = if !closed {
                    None
                } else {
                    self.tools
                        .call_from_block(&raw[body_start..raw.len() - CLOSE.len()])
                };
                match call {
                    Some(call) => {
                        self.calls += 1;
                        out.call(call);
                        self.stopped = !self.tools.parallel;
                    }
                    None => out.text.push_str(&raw),
                }
                self.end_block();
            }
            Mode::Text if self.at_line_start && self.fence.is_none() => {
                self.held.push(c);
                if c == '\n' {
                    out.text.push_str(&self.held);
                    self.held.clear();
                    self.end_line();
                    return;
                }
                let tag = self.held.trim_start();
                if tag.is_empty() {
                    if self.held.len() >= MAX_INDENT {
                        out.text.push_str(&self.held);
                        self.held.clear();
                    }
                } else if tag == OPEN {
                    let raw = std::mem::take(&mut self.held);
                    let body_start = raw.len();
                    self.mode = Mode::Call { raw, body_start };
                } else if !OPEN.starts_with(tag) {
                    let held = std::mem::take(&mut self.held);
                    self.at_line_start = false;
                    held.chars().for_each(|h| self.track(h));
                    out.text.push_str(&held);
                }
            }
            Mode::Text => {
                out.text.push(c);
                if c == '\n' {
                    self.end_line();
                } else {
                    if !c.is_whitespace() {
                        self.at_line_start = false;
                    }
                    self.track(c);
                }
            }
        }
    }

    /// Notes a character of the current line (not a line break) for fence recognition.
    fn track(&mut self, c: char) {
        if c.is_whitespace() && self.line_head.is_empty() {
            return;
        }
        if let Some(first) = self.line_head.chars().next()
            && c != first
            && !c.is_whitespace()
        {
            self.marker_only = false;
        }
        if self.line_head.chars().count() < HEAD {
            self.line_head.push(c);
        }
    }

    /// A line ended: it may have opened a fence (three backticks or tildes, an info string
    /// allowed) or closed the open one (at least three of its character and nothing else).
    fn end_line(&mut self) {
        match self.fence {
            None => {
                if self.line_head.starts_with("```") || self.line_head.starts_with("~~~") {
                    self.fence = self.line_head.chars().next();
                }
            }
            Some(f) => {
                if self.marker_only
                    && self.line_head.chars().take(3).filter(|&h| h == f).count() == 3
                {
                    self.fence = None;
                }
            }
        }
        self.line_head.clear();
        self.marker_only = true;
        self.at_line_start = true;
    }

    /// Back to text after a block, in the middle of the closing tag's line.
    fn end_block(&mut self) {
        self.mode = Mode::Text;
        self.at_line_start = false;
        self.line_head = CLOSE.chars().take(HEAD).collect();
        self.marker_only = false;
    }
}
