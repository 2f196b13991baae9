//! An incremental splitter for Google's "streamed JSON array" (spec §1.9, response format).
//!
//! U4 answers with `[{...},\n{...}]`, delivered in arbitrary byte chunks. [`JsonElementSplitter`]
//! yields each top-level element's exact bytes as soon as its closing byte arrives, so the
//! adapter can act on an element while the rest of the answer is still on the wire.
//!
//! It only *delimits*: it tracks nesting depth, strings and escapes, and leaves validating an
//! element to the JSON parser that reads it. All structural bytes (`{ } [ ] " \ ,`) are ASCII and
//! never occur inside a multi-byte UTF-8 sequence, so scanning bytes is safe for any UTF-8 text.
//!
//! Accepted input, after optional leading whitespace and an optional XSSI prefix `)]}'`:
//! * a JSON array whose elements are objects or arrays, separated by commas and whitespace
//!   (extra commas are tolerated); a missing closing `]` is reported, not an error;
//! * otherwise, newline-delimited JSON (NDJSON): top-level objects or arrays separated by
//!   whitespace or commas. Input that starts with `[` is always read as one array, so NDJSON
//!   lines that are themselves arrays are only recognised after a first object.
//!
//! Top-level scalars (strings, numbers, `true`, `false`, `null`) are skipped, in the array and
//! in NDJSON alike: the adapter only understands objects, and skipping keeps memory bounded to
//! the current element. They are still scanned correctly, so brackets inside a skipped string do
//! not confuse the splitter.

use bytes::Bytes;

/// The XSSI prefix Google puts in front of JSON meant for its own web clients.
const XSSI_PREFIX: &[u8] = b")]}'";

/// The default bound on one element's size.
pub const DEFAULT_MAX_ELEMENT_BYTES: usize = 16 * 1024 * 1024;

/// How the input ended, reported by [`JsonElementSplitter::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// A JSON array closed by its `]`.
    ClosedArray,
    /// The input started with `[` but ended before the closing `]`. Every complete element was
    /// yielded; an incomplete trailing element was dropped.
    TruncatedArray,
    /// Top-level values separated by whitespace, newlines or commas, no enclosing array. A
    /// trailing value cut off mid-way is an error, not this.
    Ndjson,
    /// No value at all: empty input, only whitespace, or only the XSSI prefix.
    Empty,
}

/// The input is not a JSON array or NDJSON stream, or an element exceeds the size limit.
///
/// The message names a byte offset and, for an unexpected byte, the byte; never a longer
/// excerpt of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SplitError {
    message: String,
}

impl SplitError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    fn unexpected(byte: u8, offset: u64, context: &str) -> Self {
        let shown = if byte.is_ascii_graphic() {
            format!("'{}'", char::from(byte))
        } else {
            format!("0x{byte:02x}")
        };
        Self::new(format!(
            "unexpected byte {shown} at offset {offset} {context}"
        ))
    }

    /// The description of what went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Whether the input is an array or NDJSON, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Unknown,
    Array,
    Ndjson,
}

/// Where the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the first value; `xssi_allowed` until the prefix was seen.
    Start { xssi_allowed: bool },
    /// Inside the XSSI prefix, `matched` bytes of it seen.
    Xssi { matched: usize },
    /// Between top-level values.
    Between,
    /// Inside an element (object or array) at nesting `depth` (≥ 1).
    Element {
        depth: usize,
        in_string: bool,
        escape: bool,
    },
    /// Inside a top-level string scalar being skipped.
    ScalarString { escape: bool },
    /// Inside a top-level number or literal being skipped.
    ScalarLiteral,
    /// After the array's closing `]`: only whitespace may follow.
    Closed,
    /// An error was returned; every further call fails.
    Failed,
}

/// Splits a streamed JSON array (or NDJSON) into its top-level elements, incrementally.
///
/// Each byte is scanned exactly once, whatever the chunking; the only memory kept is the part of
/// the current element that arrived in earlier chunks, bounded by
/// [`max_element_bytes`](Self::max_element_bytes).
///
/// ```
/// use business2api::upstream::gemini_business::json_stream::{Completion, JsonElementSplitter};
///
/// let mut splitter = JsonElementSplitter::new();
/// // Chunks may end anywhere, even inside a string holding brackets.
/// assert!(splitter.push(b")]}'\n[{\"text\":\"a ] and a {")?.is_empty());
/// let done = splitter.push(b"\"},\n{\"n\":2}")?;
/// assert_eq!(done.len(), 2);
/// assert_eq!(&done[0][..], br#"{"text":"a ] and a {"}"#);
/// assert_eq!(&done[1][..], br#"{"n":2}"#);
/// assert!(splitter.push(b"]")?.is_empty());
/// assert_eq!(splitter.finish()?, (vec![], Completion::ClosedArray));
///
/// // An answer cut off before its `]` keeps every complete element and says so.
/// let mut cut = JsonElementSplitter::new();
/// assert_eq!(cut.push(b"[{\"a\":1},{\"b\":")?.len(), 1);
/// assert_eq!(cut.finish()?.1, Completion::TruncatedArray);
/// # Ok::<(), business2api::upstream::gemini_business::json_stream::SplitError>(())
/// ```
#[derive(Debug)]
pub struct JsonElementSplitter {
    layout: Layout,
    phase: Phase,
    /// Bytes of the current element from earlier chunks.
    pending: Vec<u8>,
    /// Bytes consumed so far, for error messages.
    offset: u64,
    max_element_bytes: usize,
}

impl Default for JsonElementSplitter {
    fn default() -> Self {
        Self::new()
    }
}

fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

fn starts_literal(byte: u8) -> bool {
    byte == b'-' || byte.is_ascii_digit() || matches!(byte, b't' | b'f' | b'n')
}

fn continues_literal(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'+' | b'-')
}

impl JsonElementSplitter {
    /// A splitter with the default element limit of 16 MiB.
    pub fn new() -> Self {
        Self {
            layout: Layout::Unknown,
            phase: Phase::Start { xssi_allowed: true },
            pending: Vec::new(),
            offset: 0,
            max_element_bytes: DEFAULT_MAX_ELEMENT_BYTES,
        }
    }

    /// Sets the largest element accepted, in bytes; a larger one fails with a [`SplitError`].
    pub fn max_element_bytes(mut self, limit: usize) -> Self {
        self.max_element_bytes = limit;
        self
    }

    fn fail(&mut self, error: SplitError) -> SplitError {
        self.phase = Phase::Failed;
        self.pending = Vec::new();
        error
    }

    fn too_large(&self) -> SplitError {
        SplitError::new(format!(
            "an element exceeds the limit of {} bytes (at offset {})",
            self.max_element_bytes, self.offset
        ))
    }

    /// Feeds the next bytes of the input and returns every element they complete, in order:
    /// each one's exact bytes, from its opening `{`/`[` to its closing `}`/`]`.
    ///
    /// After an error the splitter is spent: further calls fail.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Bytes>, SplitError> {
        if self.phase == Phase::Failed {
            return Err(SplitError::new("the splitter failed earlier"));
        }
        let mut out = Vec::new();
        // Start of the current element within `chunk`, when one is open.
        let mut element_start = 0usize;
        let mut i = 0usize;
        while i < chunk.len() {
            let byte = chunk[i];
            match self.phase {
                Phase::Failed => return Err(SplitError::new("the splitter failed earlier")),
                Phase::Start { xssi_allowed } => match byte {
                    b' ' | b'\t' | b'\n' | b'\r' => {}
                    b')' if xssi_allowed => self.phase = Phase::Xssi { matched: 1 },
                    b'[' => {
                        self.layout = Layout::Array;
                        self.phase = Phase::Between;
                    }
                    b'{' => {
                        self.layout = Layout::Ndjson;
                        element_start = i;
                        self.phase = Phase::Element {
                            depth: 1,
                            in_string: false,
                            escape: false,
                        };
                    }
                    b'"' => {
                        self.layout = Layout::Ndjson;
                        self.phase = Phase::ScalarString { escape: false };
                    }
                    _ if starts_literal(byte) => {
                        self.layout = Layout::Ndjson;
                        self.phase = Phase::ScalarLiteral;
                    }
                    _ => {
                        let error = SplitError::unexpected(
                            byte,
                            self.offset,
                            "before the first value (expected `[`, `{` or `)]}'`)",
                        );
                        return Err(self.fail(error));
                    }
                },
                Phase::Xssi { matched } => {
                    if XSSI_PREFIX.get(matched) != Some(&byte) {
                        let error = SplitError::unexpected(byte, self.offset, "in the XSSI prefix");
                        return Err(self.fail(error));
                    }
                    self.phase = if matched + 1 == XSSI_PREFIX.len() {
                        Phase::Start {
                            xssi_allowed: false,
                        }
                    } else {
                        Phase::Xssi {
                            matched: matched + 1,
                        }
                    };
                }
                Phase::Between => match byte {
                    b' ' | b'\t' | b'\n' | b'\r' | b',' => {}
                    b'{' | b'[' => {
                        element_start = i;
                        self.phase = Phase::Element {
                            depth: 1,
                            in_string: false,
                            escape: false,
                        };
                    }
                    b']' if self.layout == Layout::Array => self.phase = Phase::Closed,
                    b'"' => self.phase = Phase::ScalarString { escape: false },
                    _ if starts_literal(byte) => self.phase = Phase::ScalarLiteral,
                    _ => {
                        let error = SplitError::unexpected(byte, self.offset, "between elements");
                        return Err(self.fail(error));
                    }
                },
                Phase::Element {
                    depth,
                    in_string,
                    escape,
                } => {
                    if in_string {
                        let (in_string, escape) = match (escape, byte) {
                            (true, _) => (true, false),
                            (false, b'\\') => (true, true),
                            (false, b'"') => (false, false),
                            (false, _) => (true, false),
                        };
                        self.phase = Phase::Element {
                            depth,
                            in_string,
                            escape,
                        };
                    } else {
                        match byte {
                            b'"' => {
                                self.phase = Phase::Element {
                                    depth,
                                    in_string: true,
                                    escape: false,
                                };
                            }
                            b'{' | b'[' => {
                                self.phase = Phase::Element {
                                    depth: depth + 1,
                                    in_string: false,
                                    escape: false,
                                };
                            }
                            b'}' | b']' if depth > 1 => {
                                self.phase = Phase::Element {
                                    depth: depth - 1,
                                    in_string: false,
                                    escape: false,
                                };
                            }
                            b'}' | b']' => {
                                let tail = &chunk[element_start..=i];
                                if self.pending.len() + tail.len() > self.max_element_bytes {
                                    let error = self.too_large();
                                    return Err(self.fail(error));
                                }
                                let element = if self.pending.is_empty() {
                                    Bytes::copy_from_slice(tail)
                                } else {
                                    self.pending.extend_from_slice(tail);
                                    Bytes::from(std::mem::take(&mut self.pending))
                                };
                                out.push(element);
                                self.phase = Phase::Between;
                            }
                            _ => {}
                        }
                    }
                }
                Phase::ScalarString { escape } => {
                    self.phase = match (escape, byte) {
                        (true, _) => Phase::ScalarString { escape: false },
                        (false, b'\\') => Phase::ScalarString { escape: true },
                        (false, b'"') => Phase::Between,
                        (false, _) => Phase::ScalarString { escape: false },
                    };
                }
                Phase::ScalarLiteral => {
                    if !continues_literal(byte) {
                        // The literal ended; this byte belongs to what follows it.
                        self.phase = Phase::Between;
                        continue;
                    }
                }
                Phase::Closed => {
                    if !is_whitespace(byte) {
                        let error = SplitError::unexpected(
                            byte,
                            self.offset,
                            "after the array's closing `]`",
                        );
                        return Err(self.fail(error));
                    }
                }
            }
            i += 1;
            self.offset += 1;
        }
        if matches!(self.phase, Phase::Element { .. }) {
            let tail = &chunk[element_start..];
            if self.pending.len() + tail.len() > self.max_element_bytes {
                let error = self.too_large();
                return Err(self.fail(error));
            }
            self.pending.extend_from_slice(tail);
        }
        Ok(out)
    }

    /// Ends the input and reports how it ended.
    ///
    /// Objects and arrays are complete the moment their closing byte arrives, so [`push`]
    /// has already yielded every complete element and the returned list is empty; it is part of
    /// the signature so a future variant that yields scalars can return a trailing one.
    /// An element cut off in an array is dropped ([`Completion::TruncatedArray`]); a value cut
    /// off in NDJSON, or an incomplete XSSI prefix, is an error.
    ///
    /// [`push`]: Self::push
    pub fn finish(self) -> Result<(Vec<Bytes>, Completion), SplitError> {
        let completion = match (self.phase, self.layout) {
            (Phase::Failed, _) => return Err(SplitError::new("the splitter failed earlier")),
            (Phase::Xssi { .. }, _) => {
                return Err(SplitError::new("the input ended inside the XSSI prefix"));
            }
            (Phase::Closed, _) => Completion::ClosedArray,
            (_, Layout::Unknown) => Completion::Empty,
            (_, Layout::Array) => Completion::TruncatedArray,
            (Phase::Between | Phase::ScalarLiteral | Phase::Start { .. }, Layout::Ndjson) => {
                Completion::Ndjson
            }
            (Phase::Element { .. } | Phase::ScalarString { .. }, Layout::Ndjson) => {
                return Err(SplitError::new(format!(
                    "the input ended inside a value (at offset {})",
                    self.offset
                )));
            }
        };
        Ok((Vec::new(), completion))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn split_all(input: &[u8], chunk: usize) -> Result<(Vec<Vec<u8>>, Completion), SplitError> {
        let mut splitter = JsonElementSplitter::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            out.extend(splitter.push(piece)?.into_iter().map(|b| b.to_vec()));
        }
        let (rest, completion) = splitter.finish()?;
        out.extend(rest.into_iter().map(|b| b.to_vec()));
        Ok((out, completion))
    }

    fn strings(elements: &[Vec<u8>]) -> Vec<String> {
        elements
            .iter()
            .map(|e| String::from_utf8(e.clone()).unwrap())
            .collect()
    }

    /// Every table case is also fed one byte at a time and in chunks of 2, 3 and 7 bytes.
    fn check(input: &str, expected: &[&str], completion: Completion) {
        for chunk in [input.len().max(1), 1, 2, 3, 7] {
            let (elements, got) = split_all(input.as_bytes(), chunk)
                .unwrap_or_else(|e| panic!("{input:?} chunk {chunk}: {e}"));
            assert_eq!(strings(&elements), expected, "{input:?} chunk {chunk}");
            assert_eq!(got, completion, "{input:?} chunk {chunk}");
        }
    }

    #[test]
    fn table() {
        use Completion::*;
        check(
            r#"[{"a":1},{"b":2}]"#,
            &[r#"{"a":1}"#, r#"{"b":2}"#],
            ClosedArray,
        );
        check(
            "[{\"a\":1}\n,{\"b\":[2,{}]}\n]\n",
            &[r#"{"a":1}"#, r#"{"b":[2,{}]}"#],
            ClosedArray,
        );
        check(
            "  [ { } , , [1,[2]] ,{\"x\":\n\"y\"}]  ",
            &["{ }", "[1,[2]]", "{\"x\":\n\"y\"}"],
            ClosedArray,
        );
        check("[]", &[], ClosedArray);
        check(" [ ]\n", &[], ClosedArray);
        check("", &[], Empty);
        check(" \n\t", &[], Empty);
        check(")]}'\n", &[], Empty);
        check(
            "{\"a\":1}\n{\"b\":2}\n",
            &[r#"{"a":1}"#, r#"{"b":2}"#],
            Ndjson,
        );
        check(
            "{\"a\":1}\r\n{\"b\":2}",
            &[r#"{"a":1}"#, r#"{"b":2}"#],
            Ndjson,
        );
        check("{\"a\":1}\n[1]\n", &[r#"{"a":1}"#, "[1]"], Ndjson);
        check("{\"a\":1},{\"b\":2}", &[r#"{"a":1}"#, r#"{"b":2}"#], Ndjson);
        check(r#"[{"a":1},{"b":2"#, &[r#"{"a":1}"#], TruncatedArray);
        check(r#"[{"a":1},"#, &[r#"{"a":1}"#], TruncatedArray);
        check(r#"[{"a":1}"#, &[r#"{"a":1}"#], TruncatedArray);
        check(r#"[{"a":"unterminated \"str"#, &[], TruncatedArray);
        check("[", &[], TruncatedArray);
        check(
            r#"[{"s":"]}[{,\"}"},{"t":"\\"},{"u":"\\\"]"}]"#,
            &[r#"{"s":"]}[{,\"}"}"#, r#"{"t":"\\"}"#, r#"{"u":"\\\"]"}"#],
            ClosedArray,
        );
        check(
            r#"[{"e":"\u005d\u0022x\ud83d\ude00"}]"#,
            &[r#"{"e":"\u005d\u0022x\ud83d\ude00"}"#],
            ClosedArray,
        );
        check(
            "[{\"z\":\"中文 ] é 😀\"}]",
            &["{\"z\":\"中文 ] é 😀\"}"],
            ClosedArray,
        );
        check(")]}'\n[{\"a\":1}]", &[r#"{"a":1}"#], ClosedArray);
        check("\n)]}'\n\n{\"a\":1}\n", &[r#"{"a":1}"#], Ndjson);
        // Scalars are skipped, brackets inside skipped strings do not count.
        check(
            r#"[1, "x]}", {"a":1}, true, null, -2.5e3, "\"]", {"b":2}]"#,
            &[r#"{"a":1}"#, r#"{"b":2}"#],
            ClosedArray,
        );
        check("\"]\" 12\n{\"a\":1}\nnull", &[r#"{"a":1}"#], Ndjson);
    }

    #[test]
    fn malformed_input_fails() {
        for input in [
            "<html><body>sign in</body></html>",
            ")]}x[]",
            "[]]",
            "[] {}",
            "[{}]x",
            "}",
            "[{}}]",
            "{}]",
            ",{}",
            "{\"a\":1}\n{\"b\":",
            "{\"a\":\"open",
            ")]}",
        ] {
            for chunk in [input.len(), 1] {
                assert!(
                    split_all(input.as_bytes(), chunk).is_err(),
                    "{input:?} chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn elements_are_yielded_as_soon_as_closed() {
        let mut splitter = JsonElementSplitter::new();
        assert!(splitter.push(b"[{\"a\":").unwrap().is_empty());
        assert_eq!(
            splitter.push(b"1}").unwrap(),
            vec![Bytes::from_static(b"{\"a\":1}")]
        );
        assert_eq!(
            splitter.push(b",{\"b\":2},{\"c\"").unwrap(),
            vec![Bytes::from_static(b"{\"b\":2}")]
        );
        assert_eq!(
            splitter.push(b":3}]").unwrap(),
            vec![Bytes::from_static(b"{\"c\":3}")]
        );
        assert_eq!(
            splitter.finish().unwrap(),
            (vec![], Completion::ClosedArray)
        );
    }

    #[test]
    fn oversized_element_fails_and_stays_failed() {
        let mut splitter = JsonElementSplitter::new().max_element_bytes(16);
        assert_eq!(splitter.push(b"[{\"a\":\"0123456\"}").unwrap().len(), 1); // 15 bytes
        let err = splitter.push(b",{\"a\":\"012345678\"}").unwrap_err(); // 17 bytes
        assert!(err.message().contains("limit"), "{err}");
        assert!(splitter.push(b"]").is_err());
        assert!(splitter.push(b"").is_err());
        assert!(splitter.finish().is_err());

        // Across chunks, the limit is enforced before the bytes are kept.
        let mut splitter = JsonElementSplitter::new().max_element_bytes(16);
        assert!(splitter.push(b"[{\"a\":\"01234").unwrap().is_empty());
        assert!(splitter.push(b"56789abcdef").is_err());
        assert!(splitter.pending.is_empty());

        // Byte at a time.
        let mut splitter = JsonElementSplitter::new().max_element_bytes(16);
        let input = b"[{\"a\":\"0123456789abcdef\"}]";
        let failed = input.iter().any(|b| splitter.push(&[*b]).is_err());
        assert!(failed);
    }

    #[test]
    fn element_of_exactly_the_limit_is_accepted() {
        let element = b"{\"a\":\"01234567\"}"; // 16 bytes
        for chunk in [1, 5, 100] {
            let mut splitter = JsonElementSplitter::new().max_element_bytes(16);
            let mut out = Vec::new();
            let mut input = b"[".to_vec();
            input.extend_from_slice(element);
            input.push(b']');
            for piece in input.chunks(chunk) {
                out.extend(splitter.push(piece).unwrap());
            }
            assert_eq!(out, vec![Bytes::copy_from_slice(element)]);
        }
    }

    fn tricky_string() -> impl Strategy<Value = String> {
        proptest::string::string_regex(r#"[a-z \\"\[\]{},:/\n\t\u{0}\u{1f}é中😀\u{2028}]{0,12}"#)
            .unwrap()
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            // Binary fractions, so the text form round-trips exactly.
            (-4_000_000i32..4_000_000).prop_map(|n| json!(f64::from(n) / 4.0)),
            tricky_string().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(tricky_string(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn element() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => prop::collection::btree_map(tricky_string(), json_value(), 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            1 => prop::collection::vec(json_value(), 0..4).prop_map(Value::Array),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_chunking_yields_the_elements(
            elements in prop::collection::vec(element(), 0..8),
            pretty in any::<bool>(),
            xssi in any::<bool>(),
            separator in prop::sample::select(vec![",", ",\n", "\n,", " , ", ",\r\n  "]),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let serialize = |v: &Value| {
                if pretty { serde_json::to_string_pretty(v).unwrap() }
                else { serde_json::to_string(v).unwrap() }
            };
            let body: Vec<String> = elements.iter().map(serialize).collect();
            let mut input = String::new();
            if xssi {
                input.push_str(")]}'\n");
            }
            input.push('[');
            input.push_str(&body.join(separator));
            input.push_str("]\n");
            let bytes = input.as_bytes();

            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.push(0);
            points.push(bytes.len());
            points.sort_unstable();
            let mut splitter = JsonElementSplitter::new();
            let mut got = Vec::new();
            for pair in points.windows(2) {
                got.extend(splitter.push(&bytes[pair[0]..pair[1]]).unwrap());
            }
            let (rest, completion) = splitter.finish().unwrap();
            prop_assert!(rest.is_empty());
            prop_assert_eq!(completion, Completion::ClosedArray);
            prop_assert_eq!(got.len(), elements.len());
            for (raw, expected) in got.iter().zip(&elements) {
                let parsed: Value = serde_json::from_slice(raw).unwrap();
                prop_assert_eq!(&parsed, expected);
            }
            for (raw, text) in got.iter().zip(&body) {
                prop_assert_eq!(&raw[..], text.as_bytes());
            }
        }

        #[test]
        fn ndjson_byte_at_a_time(elements in prop::collection::vec(element(), 1..5)) {
            let input: String = elements
                .iter()
                .map(|v| serde_json::to_string(v).unwrap() + "\n")
                .collect();
            // NDJSON must start with an object to be told apart from an array.
            prop_assume!(elements[0].is_object());
            let (got, completion) = split_all(input.as_bytes(), 1).unwrap();
            prop_assert_eq!(completion, Completion::Ndjson);
            let parsed: Vec<Value> =
                got.iter().map(|raw| serde_json::from_slice(raw).unwrap()).collect();
            prop_assert_eq!(parsed, elements);
        }

        #[test]
        fn truncation_never_yields_a_partial_element(
            elements in prop::collection::vec(element(), 1..5),
            cut in any::<prop::sample::Index>(),
        ) {
            let full = format!(
                "[{}]",
                elements.iter().map(|v| serde_json::to_string(v).unwrap()).collect::<Vec<_>>().join(",")
            );
            let end = cut.index(full.len());
            let (got, completion) = split_all(&full.as_bytes()[..end], 3).unwrap();
            prop_assert!(end == 0 || completion == Completion::TruncatedArray);
            prop_assert!(got.len() <= elements.len());
            for (raw, expected) in got.iter().zip(&elements) {
                let parsed: Value = serde_json::from_slice(raw).unwrap();
                prop_assert_eq!(&parsed, expected);
            }
        }
    }
}
