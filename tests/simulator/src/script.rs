//! A scripted model that follows the gateway's tool protocol (docs/TOOLS.md), switched on by a
//! directive in the prompt, so that clients driving the simulator (the SDK suites, the agent
//! CLIs) can run whole tool loops without scripting answers by hand.
//!
//! `[sim:grounded]` anywhere in a query gets a web-grounded answer ([`grounded_answer`]).
//! Otherwise only a query that carries a tools section (`<tools protocol="…">`) is scripted;
//! any other query gets the default answer. The turn is the number of tool results the conversation
//! already holds (`Tool Result [name]: …`).
//!
//! * `[sim:call NAME {json arguments}]` (one or more): turn 0 calls each named tool with its
//!   arguments, all in one answer; later turns answer `Done. The tool said: <last result>`.
//! * `[sim:agent read=PATH write=PATH]`: a coding agent's two-step task. Turn 0 reads `read`
//!   with whichever file tool the client declared (Claude Code's `Read`, gemini-cli's
//!   `read_file`, Codex's `exec_command` or `shell`); turn 1 finds the first `token-…` word in
//!   the tool result and writes it upper-cased to `write`; turn 2 says it is done. Only data
//!   from the read's result reaches the write, so a file on disk proves the whole loop.

use serde_json::{Value, json};

use crate::model::Answer;

/// The directive of a scripted tool call.
pub const CALL_DIRECTIVE: &str = "[sim:call ";
/// The directive of the scripted coding-agent task.
pub const AGENT_DIRECTIVE: &str = "[sim:agent ";
/// The final text of a finished agent task.
pub const AGENT_DONE: &str = "Done: the token is written.";

/// A prompt with this directive gets [`grounded_answer`]: streamed text with non-ASCII before
/// its cited ranges, then its web grounding in a reply of its own.
pub const GROUNDED_DIRECTIVE: &str = "[sim:grounded]";
/// The text elements of [`grounded_answer`], in order.
pub const GROUNDED_TEXT: [&str; 3] = [
    "Café 𝄞 au lait ☕ is ",
    "coffee with hot milk. ",
    "Rust 1.0 shipped in 2015.",
];
/// The cited ranges of [`grounded_answer`] and their sources `(cited text, uri, title)`.
pub const GROUNDED_CITES: [(&str, &str, &str); 2] = [
    (
        "coffee with hot milk",
        "https://en.wikipedia.org/wiki/Caf%C3%A9_au_lait",
        "Café au lait — Wikipedia",
    ),
    (
        "Rust 1.0 shipped in 2015",
        "https://blog.rust-lang.org/2015/05/15/Rust-1.0.html",
        "Announcing Rust 1.0",
    ),
];

/// The answer to [`GROUNDED_DIRECTIVE`].
pub fn grounded_answer() -> Answer {
    let text: String = GROUNDED_TEXT.concat();
    let cites: Vec<(&str, crate::model::SimReference)> = GROUNDED_CITES
        .iter()
        .map(|(cited, uri, title)| (*cited, crate::model::SimReference::new(*uri, *title)))
        .collect();
    let mut answer = Answer::new().thought("Searching the web.");
    for piece in GROUNDED_TEXT {
        answer = answer.text(piece);
    }
    answer.grounding(crate::model::Grounding::citing(&text, &cites))
}

/// Characters per text element of a scripted call, so calls cross element boundaries.
const CALL_CHUNK: usize = 7;

/// The scripted answer to `query`, if it carries a tools section and a directive.
pub(crate) fn scripted_answer(query: &str) -> Option<Answer> {
    if query.contains(GROUNDED_DIRECTIVE) {
        return Some(grounded_answer());
    }
    if !query.contains("<tools protocol=") {
        return None;
    }
    // The conversation follows the tools section (whose rules mention "Tool Result [" too).
    let tools_end = query.find("</tools>").unwrap_or(0);
    let (tools, query) = query.split_at(tools_end);
    let turn = query.matches("Tool Result [").count();
    if let Some(at) = query.find(AGENT_DIRECTIVE) {
        return Some(agent(
            tools,
            &query[at + AGENT_DIRECTIVE.len()..],
            query,
            turn,
        ));
    }
    let calls = directive_calls(query);
    if calls.is_empty() {
        return None;
    }
    if turn == 0 {
        return Some(with_calls(
            Answer::new().thought("Deciding which tool to call."),
            &calls,
        ));
    }
    Some(
        Answer::new()
            .thought("Reading the tool result.")
            .text(format!("Done. The tool said: {}", last_result(query))),
    )
}

/// Every `[sim:call NAME ARGS]` of the query, in order (the tools section's own examples
/// cannot match: they do not use this directive).
fn directive_calls(query: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find(CALL_DIRECTIVE) {
        rest = &rest[at + CALL_DIRECTIVE.len()..];
        let Some((name, after)) = rest.split_once(' ') else {
            break;
        };
        let mut values = serde_json::Deserializer::from_str(after).into_iter::<Value>();
        if let Some(Ok(args)) = values.next() {
            out.push((name.to_owned(), args));
        }
    }
    out
}

/// The text of the last tool result, up to the blank line that ends it.
fn last_result(query: &str) -> String {
    let Some(at) = query.rfind("Tool Result [") else {
        return String::new();
    };
    let after = &query[at..];
    let body = after.split_once("]: ").map_or("", |(_, b)| b);
    body.split("\n\n")
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// An answer that writes `calls` as protocol blocks, cut into small text elements.
fn with_calls(mut answer: Answer, calls: &[(String, Value)]) -> Answer {
    let mut text = String::from("I will use a tool.\n");
    for (name, args) in calls {
        text.push_str("<tool_call>\n");
        // Name first, as the protocol's example has it (whatever the map order).
        text.push_str(&format!(
            "{{\"name\":{},\"arguments\":{}}}",
            Value::String(name.clone()),
            args
        ));
        text.push_str("\n</tool_call>\n");
    }
    let chars: Vec<char> = text.chars().collect();
    for chunk in chars.chunks(CALL_CHUNK) {
        answer = answer.text(chunk.iter().collect::<String>());
    }
    answer
}

/// Which file tools the client declared.
enum Kit {
    /// Claude Code: `Read {file_path}`, `Write {file_path, content}`.
    Claude,
    /// gemini-cli: `read_file {file_path}`, `write_file {file_path, content}`.
    GeminiCli,
    /// Codex: `exec_command {cmd}`.
    ExecCommand,
    /// Older Codex: `shell {command: [argv]}`.
    Shell,
}

fn declares(query: &str, name: &str) -> bool {
    query.contains(&format!("\"name\":\"{name}\""))
}

fn kit(query: &str) -> Option<Kit> {
    if declares(query, "Read") && declares(query, "Write") {
        Some(Kit::Claude)
    } else if declares(query, "read_file") && declares(query, "write_file") {
        Some(Kit::GeminiCli)
    } else if declares(query, "exec_command") {
        Some(Kit::ExecCommand)
    } else if declares(query, "shell") {
        Some(Kit::Shell)
    } else {
        None
    }
}

/// `key=value` from the agent directive's arguments.
fn directive_arg<'a>(args: &'a str, key: &str) -> Option<&'a str> {
    let args = args.split(']').next()?;
    args.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The first `token-…` word in the tool results.
fn token_in_results(query: &str) -> Option<String> {
    let results = &query[query.find("Tool Result [")?..];
    let at = results.find("token-")?;
    let word: String = results[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (word.len() > "token-".len()).then_some(word)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn agent(tools: &str, args: &str, query: &str, turn: usize) -> Answer {
    let (Some(read), Some(write), Some(kit)) = (
        directive_arg(args, "read"),
        directive_arg(args, "write"),
        kit(tools),
    ) else {
        return Answer::new().text("I cannot do this task with the tools I was given.");
    };
    match turn {
        0 => {
            let call = match kit {
                Kit::Claude => ("Read", json!({"file_path": read})),
                Kit::GeminiCli => ("read_file", json!({"file_path": read})),
                Kit::ExecCommand => (
                    "exec_command",
                    json!({"cmd": format!("cat {}", shell_quote(read))}),
                ),
                Kit::Shell => ("shell", json!({"command": ["cat", read]})),
            };
            with_calls(
                Answer::new().thought("First I need the file's content."),
                &[(call.0.to_owned(), call.1)],
            )
        }
        1 => {
            let Some(token) = token_in_results(query) else {
                return Answer::new().text("The file holds no token.");
            };
            let content = format!("{}\n", token.to_uppercase());
            let call = match kit {
                Kit::Claude => ("Write", json!({"file_path": write, "content": content})),
                Kit::GeminiCli => (
                    "write_file",
                    json!({"file_path": write, "content": content}),
                ),
                Kit::ExecCommand => (
                    "exec_command",
                    json!({"cmd": format!("printf '%s\\n' {} > {}", shell_quote(&token.to_uppercase()), shell_quote(write))}),
                ),
                Kit::Shell => (
                    "shell",
                    json!({"command": ["sh", "-c", format!("printf '%s\\n' {} > {}", shell_quote(&token.to_uppercase()), shell_quote(write))]}),
                ),
            };
            with_calls(
                Answer::new().thought("Now I write the upper-cased token."),
                &[(call.0.to_owned(), call.1)],
            )
        }
        _ => Answer::new()
            .thought("Both steps are done.")
            .text(AGENT_DONE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AnswerPart;

    fn text_of(a: &Answer) -> String {
        a.parts
            .iter()
            .filter_map(|p| match p {
                AnswerPart::Text(t) | AnswerPart::GroundedText { text: t, .. } => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    const TOOLS: &str = "<tools protocol=\"1\">\n{\"name\":\"get_weather\",\"parameters\":{}}\nresults come back as \"Tool Result [<tool name>]: ...\"\n</tools>\n\n";

    #[test]
    fn call_directives_call_then_report() {
        let q = format!(
            "{TOOLS}Weather? [sim:call get_weather {{\"city\": \"Paris\"}}] [sim:call get_time {{}}]"
        );
        let text = text_of(&scripted_answer(&q).unwrap());
        assert!(text.contains("<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call>\n"), "{text}");
        assert!(text.contains("\"name\":\"get_time\""), "{text}");
        let q2 = format!("{q}\n\nTool Result [get_weather]: 21 C and sunny\n\nAssistant:");
        assert_eq!(
            text_of(&scripted_answer(&q2).unwrap()),
            "Done. The tool said: 21 C and sunny"
        );
        assert!(scripted_answer("no tools [sim:call f {}]").is_none());
        assert!(scripted_answer(TOOLS).is_none());
    }

    #[test]
    fn the_agent_reads_then_writes_what_it_read() {
        let tools = "<tools protocol=\"1\">\n{\"name\":\"read_file\"}\n{\"name\":\"write_file\"}\nTool Result [x]: ...\n</tools>\n\n";
        let q = format!(
            "{tools}Human: do it [sim:agent read=/w/notes.txt write=/w/out.txt]\n\nAssistant:"
        );
        assert!(
            text_of(&scripted_answer(&q).unwrap()).contains(
                "{\"name\":\"read_file\",\"arguments\":{\"file_path\":\"/w/notes.txt\"}}"
            )
        );
        let q1 = format!("{q} ...\n\nTool Result [read_file]: hello token-ab12 bye\n\nAssistant:");
        let t1 = text_of(&scripted_answer(&q1).unwrap());
        assert!(t1.contains("\"content\":\"TOKEN-AB12\\n\""), "{t1}");
        assert!(t1.contains("\"file_path\":\"/w/out.txt\""), "{t1}");
        let q2 = format!("{q1} ...\n\nTool Result [write_file]: ok\n\nAssistant:");
        assert_eq!(text_of(&scripted_answer(&q2).unwrap()), AGENT_DONE);
    }
}
