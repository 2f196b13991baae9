//! Bounded cost per request: the structural limits (`limits.*`) every dialect's parser runs
//! under, and the wire building blocks that let a parse stop early instead of building a tree.
//!
//! # How a body is parsed
//! Every dialect's parser enters through [`bounded`], which runs steps 1 and 2:
//! 1. [`check_depth`]: an allocation-free scan of the bytes refuses a body nested deeper than
//!    `limits.max_depth` before anything is parsed.
//! 2. [`with_budget`] installs a per-parse budget (a thread-local; the parse runs on one thread)
//!    and runs the dialect's parser. The wire types hold request content as borrowed
//!    [`RawValue`]s in [`RawSeq`] / [`TextOrSeq`] sequences whose `Deserialize` takes one unit of
//!    the budget per element ([`take`]); when a limit is exceeded the element's deserializer
//!    fails, serde unwinds at once, and [`with_budget`] replaces serde's message with the clean
//!    limit error. Nothing is buffered: no `serde_json::Value` tree and no `#[serde(untagged)]`
//!    enum holds a sequence of content.
//! 3. Each element is then parsed on its own from its `RawValue` into the dialect's typed block
//!    (keeping the precise per-block error messages); nested sequences (tool results, documents)
//!    are parsed inside the same budget.
//!
//! Attachments are counted once for every dialect before an account is leased
//! (`service::check_inline_media`). Bodies larger than [`OFF_THREAD_BYTES`] are parsed on the
//! blocking thread pool ([`parse_body`]), so a heavy parse never stalls an HTTP worker thread.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::config::LimitsSettings;
use crate::error::GatewayError;

/// Bodies larger than this are parsed (and, for token counts, counted) off the HTTP worker
/// threads.
pub const OFF_THREAD_BYTES: usize = 64 * 1024;

/// What a counted sequence holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Messages, `contents`, Responses `input` items (`limits.max_messages`).
    Messages,
    /// Content blocks and parts, anywhere in the request (`limits.max_parts`).
    Parts,
    /// Tool definitions of every kind (`limits.max_tools`).
    Tools,
    /// Array elements and object members of passed-through JSON ([`Bounded`]): tool schemas,
    /// arguments, options. Shares `limits.max_parts`' budget.
    Values,
}

/// Type-level names of the [`Kind`]s, for [`RawSeq`] and [`TextOrSeq`].
pub trait Counts {
    const KIND: Kind;
}

/// Counts against `limits.max_messages`.
#[derive(Debug)]
pub enum MessagesKind {}
/// Counts against `limits.max_parts`.
#[derive(Debug)]
pub enum PartsKind {}
/// Counts against `limits.max_tools`.
#[derive(Debug)]
pub enum ToolsKind {}

impl Counts for MessagesKind {
    const KIND: Kind = Kind::Messages;
}
impl Counts for PartsKind {
    const KIND: Kind = Kind::Parts;
}
impl Counts for ToolsKind {
    const KIND: Kind = Kind::Tools;
}

/// How a dialect names what is counted, for the refusal's message and `param`.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    /// The field holding the messages: `messages`, `contents`, `input`.
    pub messages: &'static str,
    /// What a part is called: `content blocks`, `parts`, `content parts`.
    pub parts: &'static str,
    /// The field holding the tools: `tools`.
    pub tools: &'static str,
}

impl Names {
    pub const ANTHROPIC: Names = Names {
        messages: "messages",
        parts: "content blocks",
        tools: "tools",
    };
    pub const OPENAI_CHAT: Names = Names {
        messages: "messages",
        parts: "content parts",
        tools: "tools",
    };
    pub const RESPONSES: Names = Names {
        messages: "input",
        parts: "content parts",
        tools: "tools",
    };
    pub const GEMINI: Names = Names {
        messages: "contents",
        parts: "parts",
        tools: "tools",
    };
}

#[derive(Debug)]
struct Budget {
    left: [u64; 3],
    tripped: Option<Kind>,
}

thread_local! {
    static BUDGET: RefCell<Option<Budget>> = const { RefCell::new(None) };
}

fn index(kind: Kind) -> usize {
    match kind {
        Kind::Messages => 0,
        Kind::Parts | Kind::Values => 1,
        Kind::Tools => 2,
    }
}

/// Takes one `kind` from the running parse's budget. `false` once the limit is exceeded (the
/// caller fails its deserializer so the parse stops). Without a budget (a parse outside
/// [`with_budget`]) everything is allowed.
pub fn take(kind: Kind) -> bool {
    BUDGET.with(|b| {
        let mut b = b.borrow_mut();
        let Some(budget) = b.as_mut() else {
            return true;
        };
        let left = &mut budget.left[index(kind)];
        if *left == 0 {
            budget.tripped.get_or_insert(kind);
            false
        } else {
            *left -= 1;
            true
        }
    })
}

fn take_or_fail<E: de::Error>(kind: Kind) -> Result<(), E> {
    if take(kind) {
        Ok(())
    } else {
        Err(E::custom("a request limit is exceeded"))
    }
}

/// The refusal of a body over `kind`'s limit.
pub fn exceeded(kind: Kind, limits: &LimitsSettings, names: Names) -> GatewayError {
    let (field, noun, limit, key) = match kind {
        Kind::Messages => (
            names.messages,
            if names.messages == "messages" {
                "messages"
            } else {
                "items"
            },
            limits.max_messages,
            "max_messages",
        ),
        Kind::Parts => (names.messages, names.parts, limits.max_parts, "max_parts"),
        Kind::Tools => (names.tools, "tools", limits.max_tools, "max_tools"),
        Kind::Values => (
            "request body",
            "content parts and values of passed-through JSON (tool schemas, arguments, options)",
            limits.max_parts,
            "max_parts",
        ),
    };
    GatewayError::invalid(
        format!(
            "{field}: more than {limit} {noun} in one request exceed the limit of {limit} (limits.{key})"
        ),
        Some(field.to_owned()),
    )
}

/// Runs `parse` under a fresh budget of `limits`. When a counted sequence exceeded its limit,
/// the result is that limit's refusal (whatever error the interrupted parse produced).
pub fn with_budget<T>(
    limits: &LimitsSettings,
    names: Names,
    parse: impl FnOnce() -> Result<T, GatewayError>,
) -> Result<T, GatewayError> {
    /// Removes the budget even when `parse` unwinds.
    struct Installed(Option<Budget>);
    impl Drop for Installed {
        fn drop(&mut self) {
            let previous = self.0.take();
            BUDGET.with(|b| *b.borrow_mut() = previous);
        }
    }
    let previous = BUDGET.with(|b| {
        b.borrow_mut().replace(Budget {
            left: [
                u64::from(limits.max_messages),
                u64::from(limits.max_parts),
                u64::from(limits.max_tools),
            ],
            tripped: None,
        })
    });
    let installed = Installed(previous);
    let result = parse();
    let tripped = BUDGET.with(|b| b.borrow().as_ref().and_then(|b| b.tripped));
    drop(installed);
    match tripped {
        Some(kind) => Err(exceeded(kind, limits, names)),
        None => result,
    }
}

/// Parses `body` under every structural limit: the depth scan first, then `parse` (which
/// deserializes `body`) under the element budget of [`with_budget`].
pub fn bounded<T>(
    body: &[u8],
    limits: &LimitsSettings,
    names: Names,
    parse: impl FnOnce() -> Result<T, GatewayError>,
) -> Result<T, GatewayError> {
    check_depth(body, limits.max_depth)?;
    with_budget(limits, names, parse)
}

/// Refuses a body whose JSON nests deeper than `max_depth` (arrays and objects), without
/// allocating. Malformed JSON is left to the parser.
pub fn check_depth(body: &[u8], max_depth: u32) -> Result<(), GatewayError> {
    let mut depth: u32 = 0;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(GatewayError::invalid(
                        format!(
                            "request body: JSON nested deeper than {max_depth} levels exceeds the limit of {max_depth} (limits.max_depth)"
                        ),
                        None,
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// How many large bodies are parsed at once: one fewer than the CPUs (at least one), so that
/// however many large requests arrive together, a CPU stays free for the HTTP workers (and so
/// for `/health` and small requests). The others wait their turn; their bytes are already
/// accounted for by the body budget (`body.rs`).
fn heavy_parses() -> &'static tokio::sync::Semaphore {
    static HEAVY: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    HEAVY.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        tokio::sync::Semaphore::new(cpus.saturating_sub(1).max(1))
    })
}

/// Parses `body` with `parse`: inline for a small body, on the blocking thread pool for one
/// over [`OFF_THREAD_BYTES`] (at most [`heavy_parses`] at once). The body is moved into the
/// parse and dropped as soon as it is done, on whichever thread parsed it.
pub async fn parse_body<B, T, F>(body: B, len: usize, parse: F) -> Result<T, GatewayError>
where
    B: Send + 'static,
    T: Send + 'static,
    F: FnOnce(&B) -> Result<T, GatewayError> + Send + 'static,
{
    if len <= OFF_THREAD_BYTES {
        return parse(&body);
    }
    let _turn = heavy_parses().acquire().await.map_err(|_| {
        tracing::error!("the large-parse semaphore is closed");
        GatewayError::Internal
    })?;
    actix_web::web::block(move || {
        let result = parse(&body);
        drop(body);
        result
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "the blocking pool could not run a request parse");
        GatewayError::Internal
    })?
}

// ---- wire building blocks ---------------------------------------------------------------

/// A JSON array kept as its elements' raw text (borrowed from the body), each counted against
/// `K`'s limit as it is read.
pub struct RawSeq<'a, K> {
    pub items: Vec<&'a RawValue>,
    kind: PhantomData<K>,
}

impl<K> fmt::Debug for RawSeq<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSeq")
            .field("len", &self.items.len())
            .finish()
    }
}

impl<'a, K> Default for RawSeq<'a, K> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            kind: PhantomData,
        }
    }
}

/// Reads the rest of a sequence as counted raw elements.
fn read_raw_seq<'de, A: SeqAccess<'de>>(
    mut seq: A,
    kind: Kind,
) -> Result<Vec<&'de RawValue>, A::Error> {
    let mut items = Vec::new();
    // The element over the limit is only scanned (a raw value borrows from the body) before
    // the parse stops.
    while let Some(item) = seq.next_element::<&'de RawValue>()? {
        take_or_fail::<A::Error>(kind)?;
        items.push(item);
    }
    Ok(items)
}

impl<'de: 'a, 'a, K: Counts> Deserialize<'de> for RawSeq<'a, K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a, K>(PhantomData<(&'a (), K)>);
        impl<'de: 'a, 'a, K: Counts> Visitor<'de> for V<'a, K> {
            type Value = RawSeq<'a, K>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Ok(RawSeq {
                    items: read_raw_seq(seq, K::KIND)?,
                    kind: PhantomData,
                })
            }
        }
        deserializer.deserialize_seq(V(PhantomData))
    }
}

/// A string, or an array of raw elements counted against `K` (content that is a string or a
/// list of blocks). Deserialized by hand: nothing is buffered to choose the variant.
pub enum TextOrSeq<'a, K> {
    Text(Cow<'a, str>),
    Seq(RawSeq<'a, K>),
}

impl<K> fmt::Debug for TextOrSeq<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextOrSeq::Text(t) => f.debug_tuple("Text").field(t).finish(),
            TextOrSeq::Seq(s) => f.debug_tuple("Seq").field(s).finish(),
        }
    }
}

impl<'de: 'a, 'a, K: Counts> Deserialize<'de> for TextOrSeq<'a, K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a, K>(PhantomData<(&'a (), K)>);
        impl<'de: 'a, 'a, K: Counts> Visitor<'de> for V<'a, K> {
            type Value = TextOrSeq<'a, K>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TextOrSeq::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextOrSeq::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TextOrSeq::Text(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Ok(TextOrSeq::Seq(RawSeq {
                    items: read_raw_seq(seq, K::KIND)?,
                    kind: PhantomData,
                }))
            }
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}

/// A string, or an object read as `T` (a `systemInstruction` given as text, an image URL given
/// as a string). Deserialized by hand: the object goes straight to `T`, unbuffered.
#[derive(Debug)]
pub enum TextOr<'a, T> {
    Text(Cow<'a, str>),
    Object(T),
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for TextOr<'a, T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a, T>(PhantomData<(&'a (), T)>);
        impl<'de: 'a, 'a, T: Deserialize<'de>> Visitor<'de> for V<'a, T> {
            type Value = TextOr<'a, T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an object")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TextOr::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextOr::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TextOr::Text(Cow::Owned(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(TextOr::Object)
            }
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}

/// A list whose every element counts against `K` and is read straight into `T` (tool lists:
/// small typed elements, no raw text kept).
#[derive(Debug)]
pub struct CountedVec<T, K> {
    pub items: Vec<T>,
    kind: PhantomData<K>,
}

impl<T, K> Default for CountedVec<T, K> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            kind: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>, K: Counts> Deserialize<'de> for CountedVec<T, K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T, K>(PhantomData<(T, K)>);
        impl<'de, T: Deserialize<'de>, K: Counts> Visitor<'de> for V<T, K> {
            type Value = CountedVec<T, K>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<T>()? {
                    take_or_fail::<A::Error>(K::KIND)?;
                    items.push(item);
                }
                Ok(CountedVec {
                    items,
                    kind: PhantomData,
                })
            }
        }
        deserializer.deserialize_seq(V(PhantomData))
    }
}

/// A passed-through JSON value (a tool schema, tool arguments, an option) whose every array
/// element and object member counts against the parts budget ([`Kind::Values`]) as it is
/// built, so a flat array of millions of tiny values cannot grow into a tree of gigabytes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bounded(pub serde_json::Value);

impl Bounded {
    pub fn into_inner(self) -> serde_json::Value {
        self.0
    }
}

impl std::ops::Deref for Bounded {
    type Target = serde_json::Value;
    fn deref(&self) -> &serde_json::Value {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Bounded {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde_json::{Map, Number, Value};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::String(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
                Ok(Value::String(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                Bounded::deserialize(d).map(Bounded::into_inner)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(Bounded(item)) = seq.next_element()? {
                    take_or_fail::<A::Error>(Kind::Values)?;
                    items.push(item);
                }
                Ok(Value::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut members = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    let Bounded(value) = map.next_value()?;
                    take_or_fail::<A::Error>(Kind::Values)?;
                    members.insert(key, value);
                }
                Ok(Value::Object(members))
            }
        }
        deserializer.deserialize_any(V).map(Bounded)
    }
}

/// Parses one raw element (a block, a part, an item) into its typed form.
pub fn parse_raw<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Result<T, serde_json::Error> {
    serde_json::from_str(raw.get())
}

/// Refuses a negative max-token value (`field` names it). Other types are left to the
/// dialect, as before.
pub fn check_max_tokens(
    value: Option<&serde_json::Value>,
    field: &str,
) -> Result<(), GatewayError> {
    if let Some(n) = value.and_then(serde_json::Value::as_f64)
        && n < 0.0
    {
        return Err(GatewayError::invalid(
            format!("{field}: must not be negative"),
            Some(field.to_owned()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn limits(messages: u32, parts: u32, tools: u32) -> LimitsSettings {
        LimitsSettings {
            max_messages: messages,
            max_parts: parts,
            max_tools: tools,
            ..LimitsSettings::default()
        }
    }

    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow, default)]
        messages: Option<RawSeq<'a, MessagesKind>>,
        #[serde(borrow, default)]
        content: Option<TextOrSeq<'a, PartsKind>>,
        #[serde(default)]
        tools: Option<CountedVec<serde_json::Value, ToolsKind>>,
    }

    fn parse(json: &str, l: &LimitsSettings) -> Result<usize, GatewayError> {
        with_budget(l, Names::ANTHROPIC, || {
            let b: Body<'_> = serde_json::from_str(json)
                .map_err(|e| GatewayError::invalid(format!("serde: {e}"), None))?;
            let mut n = b.messages.map_or(0, |m| m.items.len());
            n += match b.content {
                Some(TextOrSeq::Seq(s)) => s.items.len(),
                Some(TextOrSeq::Text(_)) => 1,
                None => 0,
            };
            n += b.tools.map_or(0, |t| t.items.len());
            Ok(n)
        })
    }

    fn message(e: &GatewayError) -> String {
        match e {
            GatewayError::InvalidRequest { message, .. } => message.clone(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_body_at_the_limits_parses() {
        let l = limits(2, 3, 1);
        let n = parse(
            r#"{"messages": [1, {"a": [1,2,3,4]}], "content": [1, 2, 3], "tools": [{}]}"#,
            &l,
        )
        .unwrap();
        assert_eq!(n, 6);
        assert_eq!(parse(r#"{"content": "just text"}"#, &l).unwrap(), 1);
    }

    #[test]
    fn each_limit_stops_the_parse_with_its_own_message() {
        let l = limits(2, 3, 1);
        let e = parse(r#"{"messages": [1, 2, 3]}"#, &l).unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(
            message(&e),
            "messages: more than 2 messages in one request exceed the limit of 2 (limits.max_messages)"
        );
        let e = parse(r#"{"content": [1, 2, 3, 4]}"#, &l).unwrap_err();
        assert!(message(&e).contains("limits.max_parts"), "{e:?}");
        let e = parse(r#"{"tools": [{}, {}]}"#, &l).unwrap_err();
        assert!(message(&e).contains("tools: more than 1 tools"), "{e:?}");
        assert!(message(&e).contains("limits.max_tools"), "{e:?}");
    }

    #[test]
    fn the_parse_stops_at_the_first_element_over_the_limit() {
        // Everything after the element over the limit is garbage: a parse that went on would
        // report a syntax error instead of the limit.
        let l = limits(2, 3, 1);
        let e = parse(r#"{"messages": [1, 2, 3, this is not JSON"#, &l).unwrap_err();
        assert!(message(&e).contains("limits.max_messages"), "{e:?}");
        // A budget counts the whole parse: nested sequences share it.
        let e = parse(
            r#"{"content": [1, 2], "messages": [], "tools": []} "#,
            &limits(2, 1, 1),
        )
        .unwrap_err();
        assert!(message(&e).contains("limits.max_parts"), "{e:?}");
    }

    #[test]
    fn budgets_end_with_their_parse() {
        let l = limits(1, 1, 1);
        assert!(parse(r#"{"messages": [1, 2]}"#, &l).is_err());
        // No budget outside with_budget: nothing is counted.
        let b: Body<'_> = serde_json::from_str(r#"{"messages": [1, 2, 3]}"#).unwrap();
        assert_eq!(b.messages.unwrap().items.len(), 3);
        // And the next parse starts afresh.
        assert_eq!(parse(r#"{"messages": [1]}"#, &l).unwrap(), 1);
    }

    #[test]
    fn passed_through_values_count_their_elements() {
        #[derive(Deserialize)]
        struct Opts {
            #[serde(default)]
            temperature: Option<Bounded>,
        }
        let l = limits(1, 4, 1);
        let run = |json: &str| {
            with_budget(&l, Names::OPENAI_CHAT, || {
                serde_json::from_str::<Opts>(json)
                    .map_err(|e| GatewayError::invalid(format!("serde: {e}"), None))
                    .map(|o| o.temperature.map(Bounded::into_inner))
            })
        };
        assert_eq!(
            run(r#"{"temperature": {"a": [1, 2], "b": null}}"#).unwrap(),
            Some(serde_json::json!({"a": [1, 2], "b": null}))
        );
        assert_eq!(
            run(r#"{"temperature": 0.5}"#).unwrap(),
            Some(serde_json::json!(0.5))
        );
        let e = run(r#"{"temperature": [0, 0, 0, 0, 0, "never read"#).unwrap_err();
        assert!(
            message(&e).starts_with("request body: more than 4"),
            "{e:?}"
        );
        assert!(message(&e).contains("limits.max_parts"), "{e:?}");
    }

    #[test]
    fn depth_is_counted_outside_strings() {
        assert!(check_depth(br#"{"a": [[1]]}"#, 3).is_ok());
        let e = check_depth(br#"{"a": [[[1]]]}"#, 3).unwrap_err();
        assert!(message(&e).contains("limits.max_depth"), "{e:?}");
        // Brackets inside strings, escaped quotes included, do not count.
        assert!(check_depth(br#"{"a": "[[[[{{{{\"[[[[", "b": [1]}"#, 2).is_ok());
        // Closing brackets release depth.
        assert!(check_depth(b"[[1],[2],[3],[[4]]]", 3).is_ok());
    }

    #[test]
    fn text_or_object() {
        #[derive(Deserialize, Debug)]
        struct Url {
            url: String,
        }
        let t: TextOr<'_, Url> = serde_json::from_str(r#""plain""#).unwrap();
        assert!(matches!(t, TextOr::Text(Cow::Borrowed("plain"))));
        let t: TextOr<'_, Url> = serde_json::from_str(r#"{"url": "u", "x": [1]}"#).unwrap();
        assert!(matches!(t, TextOr::Object(Url { url }) if url == "u"));
        assert!(serde_json::from_str::<TextOr<'_, Url>>("[1]").is_err());
    }

    #[tokio::test]
    async fn large_bodies_are_parsed_off_the_calling_thread() {
        let here = std::thread::current().id();
        let thread_of = |_: &Vec<u8>| Ok(std::thread::current().id());
        let small = vec![0u8; OFF_THREAD_BYTES];
        let small_len = small.len();
        assert_eq!(parse_body(small, small_len, thread_of).await.unwrap(), here);
        let large = vec![0u8; OFF_THREAD_BYTES + 1];
        let large_len = large.len();
        assert_ne!(parse_body(large, large_len, thread_of).await.unwrap(), here);
        // The parse's error comes back as it is.
        let e = parse_body(
            vec![0u8; OFF_THREAD_BYTES + 1],
            OFF_THREAD_BYTES + 1,
            |_| Err::<(), _>(GatewayError::invalid("bad", None)),
        )
        .await
        .unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn negative_max_tokens() {
        assert!(check_max_tokens(Some(&serde_json::json!(-1)), "max_tokens").is_err());
        assert!(check_max_tokens(Some(&serde_json::json!(-0.5)), "max_tokens").is_err());
        assert!(check_max_tokens(Some(&serde_json::json!(0)), "max_tokens").is_ok());
        assert!(check_max_tokens(Some(&serde_json::json!("x")), "max_tokens").is_ok());
        assert!(check_max_tokens(None, "max_tokens").is_ok());
    }
}
