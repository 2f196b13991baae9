//! `gemini_business.session_prefetch`: upstream sessions made ahead of need, through the real
//! wiring against the simulator. A request takes a ready session and goes straight to U4; a
//! session the upstream says is gone is replaced once and never handed out again; new
//! credentials never get a session made with the old ones.

use std::time::{Duration, Instant};

use business2api_tests::{TestApp, TestOptions, chat_body, spawn_app_with};
use serde_json::{Value, json};
use upstream_sim::{Endpoint, Fault, FaultRule};

const ADMIN: &str = "admin-key-prefetch-0123456789";
const MODEL: &str = "gemini-2.5-flash";

fn options(prefetch: u32) -> TestOptions {
    TestOptions::default().accounts(1).config(json!({
        "admin_keys": [ADMIN],
        "gemini_business": { "session_prefetch": prefetch, "session_prefetch_ttl_sec": 300 }
    }))
}

fn created_sessions(app: &TestApp) -> u64 {
    app.sim
        .stats()
        .calls
        .get(&Endpoint::CreateSession)
        .copied()
        .unwrap_or(0)
}

/// Waits until the simulator has seen `n` U2 calls (the background refill is asynchronous).
async fn until_created(app: &TestApp, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while created_sessions(app) < n {
        assert!(
            Instant::now() < deadline,
            "{} U2 calls, waiting for {n}",
            created_sessions(app)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Settled: no further call arrives (a refill never overshoots the configured count).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        created_sessions(app),
        n,
        "more U2 calls than the stock needs"
    );
}

async fn chat(app: &TestApp, text: &str) -> (u16, Value) {
    let r = app.chat(chat_body(MODEL, text, false)).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The session named by each U4 request so far, with the simulator's status.
fn assist_sessions(app: &TestApp) -> Vec<(String, u16)> {
    app.sim
        .requests(Endpoint::StreamAssist)
        .iter()
        .map(|r| {
            let body = r.body.as_ref().unwrap();
            let session = body["streamAssistRequest"]["session"]
                .as_str()
                .unwrap()
                .to_owned();
            (session, r.status)
        })
        .collect()
}

#[tokio::test]
async fn a_request_takes_a_ready_session_and_a_gone_one_is_replaced_once() {
    let app = spawn_app_with(options(2)).await;
    // The first request makes its own session and starts the stock: 1 + 2 U2 calls.
    assert_eq!(chat(&app, "one").await.0, 200);
    until_created(&app, 3).await;

    // With U2 failing, the next request is still answered: it never waits for a session of
    // its own. (The refill it starts fails, which empties the stock: a failing account keeps
    // no sessions.)
    app.sim.add_fault(FaultRule::always(
        Endpoint::CreateSession,
        Fault::ServerError(503),
    ));
    let (status, body) = chat(&app, "two").await;
    assert_eq!(status, 200, "{body}");
    until_created(&app, 4).await;
    let used = assist_sessions(&app);
    assert_eq!(used.len(), 2);
    assert_ne!(used[1].0, used[0].0, "one session per request: {used:?}");
    app.sim.clear_faults();

    // Refill the stock, then let the upstream forget every session: the ready one is gone.
    // The request is answered on a fresh session, once.
    assert_eq!(chat(&app, "four").await.0, 200);
    until_created(&app, 7).await;
    app.sim.forget_sessions();
    let (status, body) = chat(&app, "five").await;
    assert_eq!(status, 200, "{body}");
    let used = assist_sessions(&app);
    let (gone, refused) = used[used.len() - 2].clone();
    assert_eq!(refused, 404, "the prefetched session was gone: {used:?}");
    assert_eq!(used[used.len() - 1].1, 200);
    assert_ne!(used[used.len() - 1].0, gone);

    // The gone session, and the one ready beside it, are never named again.
    for text in ["six", "seven", "eight"] {
        assert_eq!(chat(&app, text).await.0, 200, "{text}");
    }
    let later = &assist_sessions(&app)[used.len()..];
    assert_eq!(later.len(), 3);
    assert!(
        later.iter().all(|(s, status)| *status == 200 && *s != gone),
        "{later:?}"
    );

    // /metrics counts where the sessions came from.
    let scrape = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |outcome: &str| -> u64 {
        let series = format!("business2api_session_prefetch_total{{outcome=\"{outcome}\"}} ");
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    assert_eq!(count("gone"), 1, "{scrape}");
    // one, four and the replacement in five made their own; two and five took ready ones;
    // six to eight take one or make one, depending on the refill's timing.
    assert!(count("miss") >= 3 && count("hit") >= 2, "{scrape}");
    assert_eq!(count("miss") + count("hit"), 8, "{scrape}");
    app.stop().await;
}

#[tokio::test]
async fn new_credentials_never_get_a_session_made_with_the_old_ones() {
    let app = spawn_app_with(options(1)).await;
    assert_eq!(chat(&app, "one").await.0, 200);
    until_created(&app, 2).await;

    // The operator imports the account again with one more cookie: new credentials.
    let mut file = app.accounts[0].account_file_json();
    file["cookies"].as_array_mut().unwrap().push(json!({
        "name": "__Secure-extra",
        "value": "rotated",
        "domain": ".gemini.google",
    }));
    let (status, body) = app
        .post_json_as(ADMIN, "/admin/pool-files/import", &file)
        .await;
    assert_eq!(status, 200, "{body}");

    // The next request cannot use the ready session of the old credentials: it makes its own,
    // and a refill for the new credentials follows (2 more U2 calls, not 1).
    assert_eq!(chat(&app, "two").await.0, 200);
    until_created(&app, 4).await;
    app.stop().await;
}

#[tokio::test]
async fn off_by_default_one_session_per_request() {
    let app = spawn_app_with(TestOptions::default().accounts(1)).await;
    for n in 1..=3 {
        assert_eq!(chat(&app, "hi").await.0, 200);
        until_created(&app, n).await;
    }
    app.stop().await;
}
