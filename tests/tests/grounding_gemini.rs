//! Web-search grounding in the Gemini dialect (issue 16): the upstream's grounding becomes
//! `candidates[0].groundingMetadata` (`groundingChunks[].web`, `groundingSupports[]` with UTF-8
//! byte offsets into the whole answer text), non-streamed, streamed as SSE and as a JSON array.
//! Every stream goes through the Gemini checker, which verifies the offsets on the text.

use std::time::Duration;

use business2api_tests::{Answer, TEST_KEY, TestApp, Wire, read_stream, spawn_app};
use serde_json::{Value, json};
use upstream_sim::{GROUNDED_CITES, GROUNDED_DIRECTIVE, GROUNDED_TEXT, Grounding, SimReference};

const MODEL: &str = "gemini-2.5-flash-search";
const BOUND: Duration = Duration::from_secs(20);

/// Non-ASCII of every UTF-8 length (é 2, ☕ 3, 𝄞 4 bytes) before the cited ranges.
const PIECES: [&str; 3] = ["Café ☕ 𝄞 — ", "espresso is strong. ", "Tea 🍵 calms."];
const ESPRESSO: &str = "https://coffee.example/espresso";
const TEA: &str = "https://tea.example.org/green";
const WIKI: &str = "https://en.wikipedia.org/wiki/Espresso";

fn user(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

async fn post(app: &TestApp, action: &str, body: &Value) -> reqwest::Response {
    let request = app
        .client
        .post(app.url(&format!("/v1beta/models/{MODEL}:{action}")))
        .header("x-goog-api-key", TEST_KEY)
        .json(body);
    let r = tokio::time::timeout(BOUND, request.send())
        .await
        .expect("the gateway answers in time")
        .expect("request reaches the gateway");
    assert_eq!(r.status(), 200);
    r
}

/// How the answer is asked for.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Whole,
    Sse,
    Array,
}

const MODES: [Mode; 3] = [Mode::Whole, Mode::Sse, Mode::Array];

/// The answer's text and the groundingMetadata the client ends with (the whole answer's, or
/// the last one a stream sent), plus every metadata a stream sent, in order.
async fn ask(app: &TestApp, mode: Mode, prompt: &str) -> (String, Value, Vec<Value>) {
    let body = user(prompt);
    match mode {
        Mode::Whole => {
            let v: Value = post(app, "generateContent", &body)
                .await
                .json()
                .await
                .unwrap();
            let candidate = &v["candidates"][0];
            let text: String = candidate["content"]["parts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["thought"] != true)
                .filter_map(|p| p["text"].as_str())
                .collect();
            let g = candidate["groundingMetadata"].clone();
            (text, g.clone(), vec![g])
        }
        Mode::Sse | Mode::Array => {
            let (action, wire) = match mode {
                Mode::Sse => ("streamGenerateContent?alt=sse", Wire::GeminiSse),
                _ => ("streamGenerateContent", Wire::GeminiArray),
            };
            let s = read_stream(post(app, action, &body).await, wire).await;
            assert!(s.error.is_none(), "{:?}", s.error);
            let all: Vec<Value> = s
                .events
                .iter()
                .filter_map(|c| c["candidates"][0].get("groundingMetadata").cloned())
                .collect();
            let last = all.last().cloned().unwrap_or(Value::Null);
            (s.text, last, all)
        }
    }
}

/// The `(uri, title, domain)` of every grounding chunk.
fn sources(g: &Value) -> Vec<(String, String, String)> {
    g["groundingChunks"]
        .as_array()
        .unwrap_or_else(|| panic!("no groundingChunks: {g}"))
        .iter()
        .map(|c| {
            let s = |k: &str| c["web"][k].as_str().unwrap_or_default().to_owned();
            (s("uri"), s("title"), s("domain"))
        })
        .collect()
}

/// Every support as (the bytes of `text` its offsets delimit, its source URIs), after checking
/// the segment's own `text` is that slice.
fn supports(text: &str, g: &Value) -> Vec<(String, Vec<String>)> {
    let chunks = sources(g);
    g["groundingSupports"]
        .as_array()
        .unwrap_or_else(|| panic!("no groundingSupports: {g}"))
        .iter()
        .map(|s| {
            let seg = &s["segment"];
            let start = seg["startIndex"].as_u64().unwrap_or(0) as usize;
            let end = seg["endIndex"].as_u64().unwrap() as usize;
            let bytes = &text.as_bytes()[start..end];
            let cited = String::from_utf8(bytes.to_vec()).expect("offsets on char boundaries");
            assert_eq!(seg["text"], cited.as_str(), "{g}");
            assert!(seg.get("partIndex").is_none(), "{g}");
            let uris = s["groundingChunkIndices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| chunks[i.as_u64().unwrap() as usize].0.clone())
                .collect();
            (cited, uris)
        })
        .collect()
}

fn owned(pairs: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    pairs
        .iter()
        .map(|(t, us)| {
            (
                (*t).to_owned(),
                us.iter().map(|u| (*u).to_owned()).collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn grounding_after_the_text_is_the_candidates_metadata_in_every_mode() {
    let app = spawn_app().await;
    let text = PIECES.concat();
    // Two sources for one range (one support, two chunk indices) and one source cited twice
    // (one chunk).
    let grounding = Grounding::citing(
        &text,
        &[
            (
                "espresso is strong",
                SimReference::new(ESPRESSO, "Espresso — strong"),
            ),
            ("espresso is strong", SimReference::new(WIKI, "Espresso")),
            ("Tea 🍵 calms", SimReference::new(TEA, "Green tea")),
            ("Café", SimReference::new(ESPRESSO, "Espresso — strong")),
        ],
    );
    for mode in MODES {
        app.sim.set_answer(
            Answer::new()
                .thought("Searching.")
                .text(PIECES[0])
                .text(PIECES[1])
                .text(PIECES[2])
                .grounding(grounding.clone()),
        );
        let (got, g, all) = ask(&app, mode, "coffee and tea?").await;
        assert_eq!(got, text, "{mode:?}");
        assert_eq!(
            all.len(),
            1,
            "{mode:?}: one metadata, after all the text: {all:?}"
        );
        assert_eq!(
            sources(&g),
            [
                (ESPRESSO, "Espresso — strong", "coffee.example"),
                (WIKI, "Espresso", "en.wikipedia.org"),
                (TEA, "Green tea", "tea.example.org"),
            ]
            .map(|(u, t, d)| (u.to_owned(), t.to_owned(), d.to_owned())),
            "{mode:?}"
        );
        assert_eq!(
            supports(&got, &g),
            owned(&[
                ("espresso is strong", &[ESPRESSO, WIKI]),
                ("Tea 🍵 calms", &[TEA]),
                ("Café", &[ESPRESSO]),
            ]),
            "{mode:?}"
        );
        // Bytes, not characters or UTF-16 units.
        let start = g["groundingSupports"][0]["segment"]["startIndex"].as_u64();
        assert_eq!(start, Some(text.find("espresso").unwrap() as u64));
        assert_ne!(
            start,
            Some(text.chars().take_while(|c| *c != 'e').count() as u64)
        );
        assert!(g.get("webSearchQueries").is_none(), "not known upstream");
    }
}

#[tokio::test]
async fn streamed_metadata_is_cumulative_and_follows_the_text_it_cites() {
    let app = spawn_app().await;
    let first = PIECES[..2].concat();
    let text = PIECES.concat();
    let early = Grounding::citing(
        &first,
        &[(
            "espresso is strong",
            SimReference::new(ESPRESSO, "Espresso"),
        )],
    );
    let late = Grounding::citing(&text, &[("Tea 🍵 calms", SimReference::new(TEA, "Tea"))]);
    for mode in MODES {
        app.sim.set_answer(
            Answer::new()
                .text(PIECES[0])
                .grounded_text(PIECES[1], early.clone())
                .text(PIECES[2])
                .grounding(late.clone()),
        );
        let (got, g, all) = ask(&app, mode, "coffee and tea?").await;
        assert_eq!(got, text, "{mode:?}");
        let want = owned(&[
            ("espresso is strong", &[ESPRESSO]),
            ("Tea 🍵 calms", &[TEA]),
        ]);
        assert_eq!(supports(&got, &g), want, "{mode:?}");
        if let Mode::Sse | Mode::Array = mode {
            // The first metadata went out before the last piece; the last one has everything.
            assert_eq!(all.len(), 2, "{mode:?}: {all:?}");
            assert_eq!(supports(&got, &all[0]), want[..1], "{mode:?}");
            assert_eq!(sources(&all[0]).len(), 1);
            assert_eq!(sources(&all[1]).len(), 2);
        }
    }
}

#[tokio::test]
async fn the_grounded_directive_answer_is_cited_in_every_mode() {
    let app = spawn_app().await;
    let text = GROUNDED_TEXT.concat();
    for mode in MODES {
        let (got, g, _) = ask(&app, mode, &format!("{GROUNDED_DIRECTIVE} café?")).await;
        assert_eq!(got, text, "{mode:?}");
        let cites: Vec<(String, Vec<String>)> = GROUNDED_CITES
            .iter()
            .map(|(cited, uri, _)| ((*cited).to_owned(), vec![(*uri).to_owned()]))
            .collect();
        assert_eq!(supports(&got, &g), cites, "{mode:?}");
        let titles: Vec<String> = sources(&g).into_iter().map(|s| s.1).collect();
        assert_eq!(titles, GROUNDED_CITES.map(|c| c.2.to_owned()), "{mode:?}");
    }
}

#[tokio::test]
async fn an_answer_without_grounding_has_no_metadata() {
    let app = spawn_app().await;
    for mode in MODES {
        app.sim.set_answer(Answer::new().text(PIECES[0]));
        let (got, g, all) = ask(&app, mode, "hi").await;
        assert_eq!(got, PIECES[0]);
        assert!(g.is_null(), "{mode:?}: {g}");
        assert!(all.iter().all(Value::is_null), "{mode:?}: {all:?}");
    }
}
