//! Tool calling by prompt emulation (docs/TOOLS.md).
//!
//! Upstreams such as Gemini Business take no client function declarations. When a request
//! declares tools, the upstream query starts with a tools section ([`ToolSet::instructions`]):
//! the tools' JSON schemas and the one grammar a call must use. The model's answer then goes
//! through a [`CallParser`], which separates plain text from calls as the chunks arrive and turns
//! each well-formed call into a [`ToolCall`]; anything else stays text, unchanged.
//!
//! The grammar (protocol version [`PROTOCOL_VERSION`]), one block per call, each on lines of its
//! own:
//!
//! ```text
//! <tool_call>
//! {"name": "read_file", "arguments": {"path": "notes.txt"}}
//! </tool_call>
//! ```

mod parser;
mod repair;

use std::fmt::Write as _;

use rand::Rng;
use serde_json::{Value, json};

pub use crate::domain::ToolChoice;
use crate::domain::{ToolCall, ToolSpec};

pub use parser::{CallParser, Piece};

/// The version of the grammar and the instructions; bumped when either changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// The line that opens a call.
pub const OPEN: &str = "<tool_call>";
/// The line that closes a call.
pub const CLOSE: &str = "</tool_call>";

/// One declared tool, with its parameters' schema compiled once per request.
struct Tool {
    spec: ToolSpec,
    validator: Option<jsonschema::Validator>,
}

/// The tools a request declared, ready to be described to the model and to check its calls.
pub struct ToolSet {
    tools: Vec<Tool>,
    choice: ToolChoice,
    parallel: bool,
}

impl std::fmt::Debug for ToolSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolSet")
            .field(
                "tools",
                &self.tools.iter().map(|t| &t.spec.name).collect::<Vec<_>>(),
            )
            .field("choice", &self.choice)
            .field("parallel", &self.parallel)
            .finish()
    }
}

impl ToolSet {
    /// The tool set of a request, or `None` when the model is to be given no tools (none
    /// declared, or `tool_choice` none). A schema that does not compile is not enforced (the
    /// call's arguments must still be a JSON object).
    pub fn new(specs: &[ToolSpec], choice: &ToolChoice, parallel: bool) -> Option<ToolSet> {
        if specs.is_empty() || *choice == ToolChoice::None {
            return None;
        }
        let tools = specs
            .iter()
            .map(|spec| Tool {
                validator: spec
                    .parameters
                    .as_ref()
                    .and_then(|schema| jsonschema::validator_for(schema).ok()),
                spec: spec.clone(),
            })
            .collect();
        Some(ToolSet {
            tools,
            choice: choice.clone(),
            parallel,
        })
    }

    /// The tools section placed before the conversation in the upstream query.
    pub fn instructions(&self) -> String {
        instructions(
            self.tools.iter().map(|t| &t.spec),
            &self.choice,
            self.parallel,
        )
    }

    /// Whether the model must call a tool (`required` or a named tool).
    pub fn forces(&self) -> bool {
        self.choice.forces()
    }

    /// The line added to the tools section when a forced call did not come and the model is
    /// asked again.
    pub fn reminder(&self) -> String {
        match &self.choice {
            ToolChoice::Named(name) => format!(
                "Your previous answer to this conversation made no call. This answer must be a \
                 call of the tool \"{name}\", in a <tool_call> block as described above."
            ),
            _ => "Your previous answer to this conversation made no call. This answer must call \
                  a tool, in a <tool_call> block as described above."
                .to_owned(),
        }
    }

    /// A parser for one answer.
    pub fn parser(&self) -> CallParser<'_> {
        CallParser::new(self)
    }

    /// The call a block's body describes, if it names a declared tool and its arguments are a
    /// JSON object that satisfies the tool's schema (after safe repairs). `None` otherwise: the
    /// block is then passed on as text.
    fn call_from_block(&self, body: &str) -> Option<ToolCall> {
        let value = repair::parse_lenient(body)?;
        let Value::Object(mut object) = value else {
            return None;
        };
        let name = object.get("name")?.as_str()?.to_owned();
        let tool = self.tools.iter().find(|t| t.spec.name == name)?;
        if let ToolChoice::Named(forced) = &self.choice
            && *forced != name
        {
            // Only the named tool may be called.
            return None;
        }
        let arguments = match object.remove("arguments") {
            None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
            Some(Value::String(text)) => repair::parse_lenient(&text)?,
            Some(v) => v,
        };
        if !arguments.is_object() {
            return None;
        }
        if let Some(validator) = &tool.validator
            && !validator.is_valid(&arguments)
        {
            return None;
        }
        Some(ToolCall {
            id: new_call_id(),
            name,
            arguments: arguments.to_string(),
        })
    }
}

/// The tools section for `specs` (what [`ToolSet::instructions`] writes), also used to count
/// a request's input tokens without compiling any schema.
pub fn instructions<'a>(
    specs: impl IntoIterator<Item = &'a ToolSpec>,
    choice: &ToolChoice,
    parallel: bool,
) -> String {
    let mut out = String::with_capacity(1024);
    let _ = write!(
        out,
        "<tools protocol=\"{PROTOCOL_VERSION}\">\n\
         You can call the tools below. Each is described by its name, what it does and the \
         JSON Schema of its arguments:\n"
    );
    for spec in specs {
        let mut described = json!({ "name": spec.name });
        if let Some(d) = spec.description.as_deref().filter(|d| !d.is_empty()) {
            described["description"] = Value::String(d.to_owned());
        }
        described["parameters"] = spec
            .parameters
            .clone()
            .unwrap_or_else(|| json!({ "type": "object" }));
        out.push_str(&described.to_string());
        out.push('\n');
    }
    out.push_str(
        "\nTo call a tool, write a block like this, with the opening and closing tags on \
         lines of their own and one JSON object between them:\n\
         <tool_call>\n\
         {\"name\": \"<tool name>\", \"arguments\": {<the arguments, as JSON>}}\n\
         </tool_call>\n\
         Rules: call only the tools listed above, with arguments that match their schema. \
         Never put a call inside a code block or quote one. Put your calls at the end of \
         your answer and write nothing after the last one: the results come back in the \
         next turn as \"Tool Result [<tool name>]: ...\". Earlier calls in the conversation \
         are shown in the same form.\n",
    );
    out.push_str(if parallel {
        "You may make several calls at once, one block each, when they do not depend on \
         each other.\n"
    } else {
        "Make at most one call per answer.\n"
    });
    match choice {
        ToolChoice::Auto | ToolChoice::None => out.push_str(
            "Call a tool only when it helps; otherwise answer normally, without any block.\n",
        ),
        ToolChoice::Required => {
            out.push_str("You must call at least one tool in this answer.\n");
        }
        ToolChoice::Named(name) => {
            let _ = writeln!(out, "You must call the tool \"{name}\" in this answer.");
        }
    }
    out.push_str("</tools>");
    out
}

/// A fresh call id: `call_` and 24 random letters and digits.
pub fn new_call_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut id = String::with_capacity(29);
    id.push_str("call_");
    for _ in 0..24 {
        let i = rng.random_range(0..ALPHABET.len());
        id.push(char::from(ALPHABET[i]));
    }
    id
}

/// A call the conversation already holds, written in the grammar (for the transcript).
pub fn render_call(call: &ToolCall, out: &mut impl std::fmt::Write) -> std::fmt::Result {
    let arguments: Value = serde_json::from_str(&call.arguments)
        .unwrap_or_else(|_| Value::String(call.arguments.clone()));
    // Written by hand so that `name` comes first, as in the instructions, whatever the map
    // order of serde_json in this build.
    let name = Value::String(call.name.clone());
    write!(
        out,
        "{OPEN}\n{{\"name\":{name},\"arguments\":{arguments}}}\n{CLOSE}"
    )
}

#[cfg(test)]
mod tests;
