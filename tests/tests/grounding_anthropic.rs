//! Web-search grounding in the Anthropic dialect (issue 16): the upstream's sources become
//! text-block `citations` (`web_search_result_location`), through the real application and a
//! real simulator. A whole answer splits its text into uncited and cited blocks; a stream
//! attaches each source with a `citations_delta` to the text block holding the cited text.
//! Every stream goes through the Anthropic stream checker, which checks each citation's shape
//! and that its `cited_text` is in its block.

use std::time::Duration;

use business2api_tests::check::anthropic::{check_message_citations, content};
use business2api_tests::{Answer, TEST_KEY, TestApp, Wire, read_stream, schemas, spawn_app};
use serde_json::{Value, json};
use upstream_sim::{GROUNDED_CITES, GROUNDED_DIRECTIVE, GROUNDED_TEXT, Grounding, SimReference};

const MODEL: &str = "gemini-2.5-flash-search";

fn body(prompt: &str, stream: bool) -> Value {
    json!({"model": MODEL, "max_tokens": 1024, "stream": stream,
        "messages": [{"role": "user", "content": prompt}]})
}

async fn messages(app: &TestApp, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/messages"))
        .bearer_auth(TEST_KEY)
        .header("anthropic-version", "2026-10-21")
        .json(body)
        .send()
        .await
        .expect("request reaches the gateway")
}

async fn whole(app: &TestApp, prompt: &str) -> Value {
    let response = messages(app, &body(prompt, false)).await;
    assert_eq!(response.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("the body ends")
        .expect("a body");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON: {text}"));
    schemas::assert_valid("anthropic.Message", &v);
    check_message_citations(&v).unwrap_or_else(|e| panic!("{e}\n{v}"));
    v
}

/// The content blocks of a streamed answer, as the SDKs accumulate them.
async fn streamed(app: &TestApp, prompt: &str) -> Vec<Value> {
    let response = messages(app, &body(prompt, true)).await;
    assert_eq!(response.status(), 200);
    let summary = tokio::time::timeout(
        Duration::from_secs(10),
        read_stream(response, Wire::Anthropic),
    )
    .await
    .expect("the stream ends");
    content(&summary.events)
}

/// A citation as `(url, title, cited_text)`.
type Cite = (String, String, String);

/// `(text, [(url, title, cited_text)])` of each text block.
fn text_blocks(blocks: &[Value]) -> Vec<(String, Vec<Cite>)> {
    blocks
        .iter()
        .filter(|b| b["type"] == "text")
        .map(|b| {
            let citations = b["citations"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .map(|c| {
                            assert_eq!(c["type"], "web_search_result_location", "{c}");
                            assert!(c["encrypted_index"].as_str().is_some_and(|i| !i.is_empty()));
                            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                            (s("url"), s("title"), s("cited_text"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (b["text"].as_str().unwrap_or_default().to_owned(), citations)
        })
        .collect()
}

fn source(n: usize) -> Cite {
    let (cited, url, title) = GROUNDED_CITES[n];
    (url.to_owned(), title.to_owned(), cited.to_owned())
}

fn owned(t: &str) -> String {
    t.to_owned()
}

#[tokio::test]
async fn a_whole_grounded_answer_has_cited_blocks() {
    let app = spawn_app().await;
    let v = whole(&app, &format!("What is café au lait? {GROUNDED_DIRECTIVE}")).await;
    let blocks = v["content"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "thinking", "{v}");
    assert_eq!(
        text_blocks(blocks),
        [
            (owned("Café 𝄞 au lait ☕ is "), vec![]),
            (owned("coffee with hot milk"), vec![source(0)]),
            (owned(". "), vec![]),
            (owned("Rust 1.0 shipped in 2015"), vec![source(1)]),
            (owned("."), vec![]),
        ],
        "{v}"
    );
    // Uncited blocks carry no citations field at all.
    assert!(blocks[1].get("citations").is_none(), "{v}");
    app.stop().await;
}

#[tokio::test]
async fn a_streamed_grounded_answer_attaches_its_sources_to_the_text_block() {
    let app = spawn_app().await;
    let blocks = streamed(&app, &format!("What is café au lait? {GROUNDED_DIRECTIVE}")).await;
    assert_eq!(blocks[0]["type"], "thinking");
    // The sources arrive after all the text: they attach to the one text block.
    assert_eq!(
        text_blocks(&blocks),
        [(GROUNDED_TEXT.concat(), vec![source(0), source(1)])]
    );
    app.stop().await;
}

/// Text whose sources come after each piece: `Le café ☕ est chaud.` (cited whole), then
/// ` 𝄞 Rust est sûr.` (cited `Rust est sûr`, by two sources).
fn interleaved() -> Answer {
    let first = "Le café ☕ est chaud.";
    let all = format!("{first} 𝄞 Rust est sûr.");
    let cafe = SimReference::new("https://fr.example/cafe", "Le café");
    let rust = SimReference::new("https://rust.example/sur", "Rust");
    let rust2 = SimReference::new("https://other.example/rust", "Rust, encore");
    Answer::new()
        .text(first)
        .grounding(Grounding::citing(first, &[(first, cafe)]))
        .text(" 𝄞 Rust est sûr.")
        .grounding(Grounding::citing(
            &all,
            &[("Rust est sûr", rust), ("Rust est sûr", rust2)],
        ))
}

fn cite(url: &str, title: &str, cited: &str) -> Cite {
    (owned(url), owned(title), owned(cited))
}

#[tokio::test]
async fn sources_after_each_piece_of_text_follow_the_pieces() {
    let app = spawn_app().await;
    let cafe = cite(
        "https://fr.example/cafe",
        "Le café",
        "Le café ☕ est chaud.",
    );
    let rust = cite("https://rust.example/sur", "Rust", "Rust est sûr");
    let rust2 = cite("https://other.example/rust", "Rust, encore", "Rust est sûr");

    app.sim.set_answer(interleaved());
    let v = whole(&app, "tell me").await;
    assert_eq!(
        text_blocks(v["content"].as_array().unwrap()),
        [
            (owned("Le café ☕ est chaud."), vec![cafe.clone()]),
            (owned(" 𝄞 "), vec![]),
            (owned("Rust est sûr"), vec![rust.clone(), rust2.clone()]),
            (owned("."), vec![]),
        ],
        "{v}"
    );

    // Streamed: the first piece's source ends its block; the second piece's sources attach
    // to the block holding it.
    app.sim.set_answer(interleaved());
    let blocks = streamed(&app, "tell me").await;
    assert_eq!(
        text_blocks(&blocks),
        [
            (owned("Le café ☕ est chaud."), vec![cafe]),
            (owned(" 𝄞 Rust est sûr."), vec![rust, rust2]),
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn an_answer_without_grounding_has_no_citations() {
    let app = spawn_app().await;
    app.sim
        .set_answer(Answer::new().text("Plain ").text("text ☕."));
    let v = whole(&app, "hi").await;
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "Plain text ☕."}])
    );
    app.sim
        .set_answer(Answer::new().text("Plain ").text("text ☕."));
    let blocks = streamed(&app, "hi").await;
    assert_eq!(blocks, [json!({"type": "text", "text": "Plain text ☕."})]);
    app.stop().await;
}
