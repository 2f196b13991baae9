#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "read_file".into(),
            description: Some("Reads a file".into()),
            parameters: Some(json!({
                "type": "object",
                "properties": { "path": { "type": "string" } },
                "required": ["path"],
                "additionalProperties": false,
            })),
        },
        ToolSpec {
            name: "write_file".into(),
            description: None,
            parameters: Some(json!({
                "type": "object",
                "properties": { "path": { "type": "string" }, "content": { "type": "string" } },
                "required": ["path", "content"],
            })),
        },
        ToolSpec {
            name: "now".into(),
            description: None,
            parameters: None,
        },
    ]
}

fn set(choice: ToolChoice, parallel: bool) -> ToolSet {
    ToolSet::new(&specs(), &choice, parallel).unwrap()
}

/// Text merged, calls as (name, arguments as JSON).
fn summary(pieces: &[Piece]) -> (String, Vec<(String, Value)>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in pieces {
        match p {
            Piece::Text(t) => text.push_str(t),
            Piece::Call(c) => {
                assert!(c.id.starts_with("call_") && c.id.len() == 29, "{}", c.id);
                calls.push((c.name.clone(), serde_json::from_str(&c.arguments).unwrap()));
            }
        }
    }
    (text, calls)
}

fn run(tools: &ToolSet, chunks: &[&str]) -> Vec<Piece> {
    let mut parser = tools.parser();
    let mut pieces = Vec::new();
    for chunk in chunks {
        pieces.extend(parser.push(chunk));
    }
    pieces.extend(parser.finish());
    pieces
}

const READ: &str = "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"notes.txt\"}}\n</tool_call>";

#[test]
fn no_tools_or_tool_choice_none_gives_no_tool_set() {
    assert!(ToolSet::new(&[], &ToolChoice::Auto, true).is_none());
    assert!(ToolSet::new(&specs(), &ToolChoice::None, true).is_none());
}

#[test]
fn the_instructions_list_every_tool_and_the_grammar_and_the_choice() {
    let text = set(ToolChoice::Auto, true).instructions();
    assert!(text.starts_with("<tools protocol=\"1\">"), "{text}");
    assert!(text.ends_with("</tools>"));
    assert!(text.contains(r#"{"name":"read_file","description":"Reads a file","parameters":"#));
    assert!(text.contains(r#"{"name":"now","parameters":{"type":"object"}}"#));
    assert!(text.contains("<tool_call>\n{\"name\": \"<tool name>\""));
    assert!(text.contains("only when it helps"));
    assert!(text.contains("several calls at once"));
    let forced = set(ToolChoice::Named("write_file".into()), false).instructions();
    assert!(forced.contains("You must call the tool \"write_file\""));
    assert!(forced.contains("at most one call"));
    assert!(
        set(ToolChoice::Required, true)
            .instructions()
            .contains("must call at least one tool")
    );
}

#[test]
fn a_call_after_text_is_recognised_and_the_text_kept() {
    let tools = set(ToolChoice::Auto, true);
    let pieces = run(&tools, &["Let me look.\n", READ, "\n"]);
    let (text, calls) = summary(&pieces);
    assert_eq!(text, "Let me look.\n");
    assert_eq!(
        calls,
        [("read_file".to_owned(), json!({"path": "notes.txt"}))]
    );
    assert!(matches!(pieces.last(), Some(Piece::Call(_))), "{pieces:?}");
}

#[test]
fn text_is_passed_on_at_once_except_what_may_be_the_opening_tag() {
    let tools = set(ToolChoice::Auto, true);
    let mut parser = tools.parser();
    assert_eq!(parser.push("Hello wor"), [Piece::Text("Hello wor".into())]);
    assert_eq!(
        parser.push("ld <tool_call> inline\n"),
        [Piece::Text("ld <tool_call> inline\n".into())]
    );
    assert_eq!(parser.push("  <tool_"), []);
    assert_eq!(parser.push("x"), [Piece::Text("  <tool_x".into())]);
    assert_eq!(parser.push("\n<tool"), [Piece::Text("\n".into())]);
    assert_eq!(parser.finish(), [Piece::Text("<tool".into())]);
}

#[test]
fn a_call_inside_a_code_fence_stays_text() {
    let tools = set(ToolChoice::Auto, true);
    let answer = format!("Use this grammar:\n```\n{READ}\n```\nand that is all.");
    let (text, calls) = summary(&run(&tools, &[&answer]));
    assert!(calls.is_empty());
    assert_eq!(text, answer);
    // After the fence closes, a call is recognised again.
    let answer = format!("```text\n{READ}\n~~~ not a close\n```\n{READ}");
    let (text, calls) = summary(&run(&tools, &[&answer]));
    assert_eq!(calls.len(), 1);
    assert_eq!(text, format!("```text\n{READ}\n~~~ not a close\n```\n"));
}

#[test]
fn blocks_that_are_not_valid_calls_arrive_as_the_exact_text() {
    let tools = set(ToolChoice::Auto, true);
    for block in [
        // Broken JSON.
        "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": }\n</tool_call>",
        // Unknown tool.
        "<tool_call>\n{\"name\": \"rm_rf\", \"arguments\": {}}\n</tool_call>",
        // Arguments break the schema (a required property missing, an unknown one).
        "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"file\": \"a\"}}\n</tool_call>",
        // Arguments that are not an object.
        "<tool_call>\n{\"name\": \"now\", \"arguments\": [1]}\n</tool_call>",
        // No name.
        "<tool_call>\n{\"arguments\": {}}\n</tool_call>",
        // The answer stops in the middle of the block.
        "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"pa",
    ] {
        let answer = format!("Sure.\n{block}");
        let (text, calls) = summary(&run(&tools, &[&answer]));
        assert!(calls.is_empty(), "{block}");
        assert_eq!(text, answer);
    }
}

#[test]
fn safe_repairs_are_made_and_string_arguments_are_read() {
    let tools = set(ToolChoice::Auto, true);
    let answer = "<tool_call>\n```json\n{\"name\": \"write_file\", \"arguments\": {\"path\": \"a\", \"content\": \"x,}\",},}\n```\n</tool_call>\n\
                  <tool_call>{\"name\": \"read_file\", \"arguments\": \"{\\\"path\\\": \\\"b\\\"}\"}</tool_call>\n\
                  <tool_call>\n{\"name\": \"now\"}\n</tool_call>";
    let (text, calls) = summary(&run(&tools, &[answer]));
    assert_eq!(text, "");
    assert_eq!(
        calls,
        [
            (
                "write_file".to_owned(),
                json!({"path": "a", "content": "x,}"})
            ),
            ("read_file".to_owned(), json!({"path": "b"})),
            ("now".to_owned(), json!({})),
        ]
    );
}

#[test]
fn one_call_per_answer_unless_parallel_calls_are_allowed() {
    let two = format!("{READ}\n{READ}");
    let (_, calls) = summary(&run(&set(ToolChoice::Auto, true), &[&two]));
    assert_eq!(calls.len(), 2);
    // One call was asked for: the answer ends with it, as a model stopped there would.
    let answer = format!("Reading.\n{two}\nAnd more text.");
    let (half_a, half_b) = answer.split_at(answer.len() / 2 + 3);
    for chunks in [vec![answer.as_str()], vec![half_a, half_b]] {
        let (text, calls) = summary(&run(&set(ToolChoice::Auto, false), &chunks));
        assert_eq!(calls.len(), 1);
        assert_eq!(text, "Reading.\n", "nothing after the first call");
    }
}

#[test]
fn a_named_tool_choice_takes_only_that_tool() {
    let tools = set(ToolChoice::Named("write_file".into()), true);
    let (text, calls) = summary(&run(&tools, &[READ]));
    assert!(calls.is_empty());
    assert_eq!(text, READ);
}

#[test]
fn calls_render_in_the_grammar_they_are_parsed_from() {
    let call = ToolCall {
        id: "call_1".into(),
        name: "read_file".into(),
        arguments: r#"{"path":"notes.txt"}"#.into(),
    };
    let mut rendered = String::new();
    render_call(&call, &mut rendered).unwrap();
    let (text, calls) = summary(&run(&set(ToolChoice::Auto, true), &[&rendered]));
    assert_eq!(text, "");
    assert_eq!(
        calls,
        [("read_file".to_owned(), json!({"path": "notes.txt"}))]
    );
}

/// Splits `text` at the given char positions.
fn split_at_chars(text: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut chunks = Vec::new();
    let mut start = 0;
    for p in points.into_iter().chain([chars.len()]) {
        chunks.push(chars[start..p].iter().collect());
        start = p;
    }
    chunks
}

fn text_strategy() -> impl Strategy<Value = String> {
    // Text that may look like the grammar in part: tags, fences, braces, non-ASCII.
    proptest::collection::vec(
        prop_oneof![
            Just("<tool_call>".to_owned()),
            Just("</tool_call>".to_owned()),
            Just("<tool_".to_owned()),
            Just("```".to_owned()),
            Just("\n".to_owned()),
            Just("  ".to_owned()),
            Just("{\"name\": \"read_file\"}".to_owned()),
            "[a-zé漢 ]{0,6}",
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn chunk_boundaries_never_change_the_result(
        before in text_strategy(),
        after in text_strategy(),
        cuts in proptest::collection::vec(0usize..400, 0..12),
    ) {
        let tools = set(ToolChoice::Auto, true);
        let answer = format!("{before}\n{READ}\n{after}");
        let whole = summary(&run(&tools, &[&answer]));
        let chunks = split_at_chars(&answer, &cuts);
        let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let split = summary(&run(&tools, &refs));
        prop_assert_eq!(&whole, &split);
    }

    #[test]
    fn text_without_a_call_comes_out_unchanged(
        text in text_strategy(),
        cuts in proptest::collection::vec(0usize..400, 0..12),
    ) {
        let tools = set(ToolChoice::Auto, true);
        // Only text: no block can be a valid call (the JSON inside names no arguments object
        // that a schema accepts... `read_file` requires a path).
        let chunks = split_at_chars(&text, &cuts);
        let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let (out, calls) = summary(&run(&tools, &refs));
        prop_assert!(calls.is_empty());
        prop_assert_eq!(out, text);
    }
}
