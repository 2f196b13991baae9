//! Web-search grounding through the OpenAI dialects (issue 16): the simulator answers with
//! grounding metadata, the gateway turns it into `url_citation` annotations — Chat
//! `message.annotations` / one `delta.annotations`, Responses `output_text` annotations and
//! `response.output_text.annotation.added` — whose offsets (code points of the text the
//! client received) slice out the cited text. Streams go through the checkers, which reject
//! broken offsets.

use std::time::Duration;

use business2api_tests::check::chat::{Cited, citations, streamed_citations};
use business2api_tests::check::responses;
use business2api_tests::{TEST_KEY, TestApp, Wire, read_stream, schemas, spawn_app};
use serde_json::{Value, json};
use upstream_sim::{
    Answer, GROUNDED_CITES, GROUNDED_DIRECTIVE, GROUNDED_TEXT, Grounding, SimReference,
    grounded_answer,
};

const MODEL: &str = "gemini-2.5-flash-search";
const BOUND: Duration = Duration::from_secs(15);

async fn post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    let r = tokio::time::timeout(
        BOUND,
        app.client
            .post(app.url(path))
            .bearer_auth(TEST_KEY)
            .json(&body)
            .send(),
    )
    .await
    .expect("the gateway answers in time")
    .expect("request reaches the gateway");
    assert_eq!(r.status(), 200);
    r
}

/// (url, title, cited text) of each citation.
fn triples(cited: &[Cited]) -> Vec<(String, String, String)> {
    cited
        .iter()
        .map(|c| (c.url.clone(), c.title.clone(), c.text.clone()))
        .collect()
}

/// What [`grounded_answer`] cites.
fn expected() -> Vec<(String, String, String)> {
    GROUNDED_CITES
        .iter()
        .map(|(cited, url, title)| ((*url).into(), (*title).into(), (*cited).into()))
        .collect()
}

fn chat(stream: bool) -> Value {
    json!({"model": MODEL, "stream": stream, "stream_options": if stream {
        json!({"include_usage": true}) } else { Value::Null },
        "messages": [{"role": "user", "content": "what is café au lait?"}]})
}

fn responses_body(stream: bool) -> Value {
    json!({"model": MODEL, "stream": stream, "input": "what is café au lait?"})
}

#[tokio::test]
async fn a_chat_completion_carries_url_citations_on_its_content() {
    let app = spawn_app().await;
    app.sim.set_answer(grounded_answer());
    let v: Value = post(&app, "/v1/chat/completions", chat(false))
        .await
        .json()
        .await
        .unwrap();
    schemas::assert_valid("openai.ChatCompletion", &v);
    let msg = &v["choices"][0]["message"];
    let content = msg["content"].as_str().unwrap();
    assert_eq!(content, GROUNDED_TEXT.concat());
    let cited = citations(&msg["annotations"], content).unwrap();
    assert_eq!(triples(&cited), expected());
    // Code points: "Café 𝄞 au lait ☕ is " is 20 of them (24 UTF-8 bytes, 21 UTF-16 units).
    assert_eq!((cited[0].start, cited[0].end), (20, 40));
}

#[tokio::test]
async fn a_chat_stream_sends_its_citations_in_one_delta_before_the_finish_chunk() {
    let app = spawn_app().await;
    app.sim.set_answer(grounded_answer());
    let r = post(&app, "/v1/chat/completions", chat(true)).await;
    let s = read_stream(
        r,
        Wire::ChatCompletions {
            include_usage: true,
        },
    )
    .await;
    assert_eq!(s.text, GROUNDED_TEXT.concat());
    assert_eq!(triples(&streamed_citations(&s.events).unwrap()), expected());
    let with: Vec<usize> = s
        .events
        .iter()
        .enumerate()
        .filter(|(_, c)| c["choices"][0]["delta"].get("annotations").is_some())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(with.len(), 1);
    // Then the finish chunk and the usage chunk.
    assert_eq!(with[0], s.events.len() - 3);
}

#[tokio::test]
async fn citations_with_their_text_or_after_it_and_sources_cited_twice() {
    let app = spawn_app().await;
    let first = "Ünïcødé 𝄞 first: the sky is blue. ";
    let second = "Water ☕ boils at 100 °C.";
    let text = format!("{first}{second}");
    let sky = SimReference::new("https://sky.example/blue", "Why the sky is blue");
    let water = SimReference::new("https://water.example/boil", "Boiling point");
    // The first reply carries its grounding with its text; the second's comes after it.
    let answer = Answer::new()
        .grounded_text(
            first,
            Grounding::citing(first, &[("the sky is blue", sky.clone())]),
        )
        .text(second)
        .grounding(Grounding::citing(
            &text,
            &[
                ("boils at 100 °C", water.clone()),
                ("Water ☕", sky.clone()),
            ],
        ));
    let want = [
        (sky.uri.as_str(), sky.title.as_str(), "the sky is blue"),
        (water.uri.as_str(), water.title.as_str(), "boils at 100 °C"),
        (sky.uri.as_str(), sky.title.as_str(), "Water ☕"),
    ];
    let mut seen = Vec::new();
    for stream in [false, true] {
        app.sim.set_answer(answer.clone());
        let cited = if stream {
            let r = post(&app, "/v1/chat/completions", chat(true)).await;
            let s = read_stream(
                r,
                Wire::ChatCompletions {
                    include_usage: true,
                },
            )
            .await;
            streamed_citations(&s.events).unwrap()
        } else {
            let v: Value = post(&app, "/v1/chat/completions", chat(false))
                .await
                .json()
                .await
                .unwrap();
            let msg = &v["choices"][0]["message"];
            citations(&msg["annotations"], msg["content"].as_str().unwrap()).unwrap()
        };
        let mut got: Vec<_> = triples(&cited);
        got.sort();
        let mut w: Vec<(String, String, String)> = want
            .iter()
            .map(|(u, t, c)| ((*u).into(), (*t).into(), (*c).into()))
            .collect();
        w.sort();
        assert_eq!(got, w, "stream: {stream}");
        seen.push(cited);
    }
    assert_eq!(seen[0], seen[1], "streamed and not, the same annotations");
}

#[tokio::test]
async fn a_response_carries_url_citations_on_its_output_text() {
    let app = spawn_app().await;
    app.sim.set_answer(grounded_answer());
    let v: Value = post(&app, "/v1/responses", responses_body(false))
        .await
        .json()
        .await
        .unwrap();
    schemas::assert_valid(
        "openai.ResponseStreamEvent",
        &json!({"type": "response.completed", "sequence_number": 0, "response": v}),
    );
    let cited = responses::citations(&v).unwrap();
    let message = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .position(|o| o["type"] == "message")
        .unwrap();
    assert!(cited.iter().all(|(i, j, _)| (*i, *j) == (message, 0)));
    let cited: Vec<Cited> = cited.into_iter().map(|(_, _, c)| c).collect();
    assert_eq!(triples(&cited), expected());
    assert_eq!((cited[0].start, cited[0].end), (20, 40));
}

#[tokio::test]
async fn a_response_stream_announces_each_citation_and_completes_with_them() {
    let app = spawn_app().await;
    app.sim.set_answer(grounded_answer());
    let r = post(&app, "/v1/responses", responses_body(true)).await;
    let s = read_stream(r, Wire::Responses).await;
    assert_eq!(s.text, GROUNDED_TEXT.concat());
    let added: Vec<&Value> = s
        .events
        .iter()
        .filter(|e| e["type"] == "response.output_text.annotation.added")
        .collect();
    assert_eq!(added.len(), GROUNDED_CITES.len());
    for (i, e) in added.iter().enumerate() {
        assert_eq!(e["annotation_index"], i);
        assert_eq!(e["annotation"]["url"], GROUNDED_CITES[i].1);
    }
    let completed = s.events.last().unwrap();
    assert_eq!(completed["type"], "response.completed");
    let cited: Vec<Cited> = responses::citations(&completed["response"])
        .unwrap()
        .into_iter()
        .map(|(_, _, c)| c)
        .collect();
    assert_eq!(triples(&cited), expected());
}

#[tokio::test]
async fn the_directive_grounds_an_answer_through_the_gateway_too() {
    // What the SDK tests use: the prompt's directive picks the simulator's grounded answer.
    let app = spawn_app().await;
    let body = json!({"model": MODEL, "input": format!("{GROUNDED_DIRECTIVE} coffee?")});
    let v: Value = post(&app, "/v1/responses", body)
        .await
        .json()
        .await
        .unwrap();
    let cited: Vec<Cited> = responses::citations(&v)
        .unwrap()
        .into_iter()
        .map(|(_, _, c)| c)
        .collect();
    assert_eq!(triples(&cited), expected());
}
