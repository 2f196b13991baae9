//! The repairs of a call's JSON that cannot change what it means: a code fence around it, and
//! trailing commas before a closing bracket. Nothing else is guessed.

use serde_json::Value;

/// `text` as JSON, after the safe repairs; `None` when it still does not parse.
pub fn parse_lenient(text: &str) -> Option<Value> {
    let unfenced = strip_fence(text.trim());
    if let Ok(v) = serde_json::from_str(unfenced) {
        return Some(v);
    }
    serde_json::from_str(&drop_trailing_commas(unfenced)).ok()
}

/// The text inside a Markdown code fence (```` ``` ```` or ```` ```json ````), or `text` itself.
fn strip_fence(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    // The info string (`json`) ends at the first line break.
    let Some((_, body)) = rest.split_once('\n') else {
        return text;
    };
    body.trim_end().strip_suffix("```").unwrap_or(body).trim()
}

/// `text` without the commas that directly precede (whitespace aside) a `}` or `]`, outside
/// strings.
fn drop_trailing_commas(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            ',' => {
                let next = chars[i + 1..].iter().find(|n| !n.is_whitespace());
                if !matches!(next, Some('}' | ']')) {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use serde_json::json;

    #[test]
    fn plain_json_parses_as_is() {
        assert_eq!(parse_lenient(r#" {"a": 1} "#), Some(json!({"a": 1})));
    }

    #[test]
    fn a_code_fence_is_removed() {
        assert_eq!(
            parse_lenient("```json\n{\"a\": [1, 2]}\n```"),
            Some(json!({"a": [1, 2]}))
        );
        assert_eq!(parse_lenient("```\n{\"a\": 1}\n```"), Some(json!({"a": 1})));
    }

    #[test]
    fn trailing_commas_are_dropped_outside_strings_only() {
        assert_eq!(
            parse_lenient(r#"{"a": [1, 2,], "b": "x,}", }"#),
            Some(json!({"a": [1, 2], "b": "x,}"}))
        );
        assert_eq!(
            parse_lenient(r#"{"q": "say \"hi\",]", "n": 1,}"#),
            Some(json!({"q": "say \"hi\",]", "n": 1}))
        );
    }

    #[test]
    fn what_is_not_safely_repairable_is_refused() {
        for broken in [
            r#"{"a": 1"#,
            r#"{'a': 1}"#,
            r#"{"a": 1} trailing words"#,
            "",
            "```json\n{\"a\": \n```",
        ] {
            assert_eq!(parse_lenient(broken), None, "{broken}");
        }
    }
}
