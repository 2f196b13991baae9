//! Failures a request causes must not drain the pool: a failure that follows one request to a
//! second account (an upstream 5xx, a cut) ends that request after two attempts and counts
//! against neither account; an upstream bad request ends it at once without counting. Failures
//! of one account (a 429, a one-off 5xx) still fail over and count against that account.

use std::time::{Duration, Instant};

use business2api_tests::{
    Answer, Endpoint, Fault, FaultRule, SseReader, TEST_KEY, TestApp, TestOptions, Wire, chat_body,
    merge, spawn_app_with,
};
use futures_util::future::join_all;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "admin-key-for-tests-0123456789";

/// No request may take longer than this.
const BOUND: Duration = Duration::from_secs(20);

/// A marker in the prompt that the simulator's fault rule reacts to, for every account.
const POISON: &str = "POISON-PROMPT";

async fn app(accounts: u32, extra: Value) -> TestApp {
    let mut config = json!({ "admin_keys": [ADMIN_KEY] });
    merge(&mut config, extra);
    spawn_app_with(TestOptions::default().accounts(accounts).config(config)).await
}

async fn admin_get(app: &TestApp, path: &str) -> Value {
    let r = app
        .client
        .get(app.url(path))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// The account listing once no lease is in flight (outcomes are reported asynchronously).
async fn settled(app: &TestApp) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = admin_get(app, "/admin/status").await;
        if status["states"]["in_flight"] == 0 {
            let accounts = admin_get(app, "/admin/accounts").await;
            return accounts["accounts"].as_array().unwrap().clone();
        }
        assert!(Instant::now() < deadline, "leases stay in flight: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The listing entry of the app's `i`-th account.
fn account(accounts: &[Value], app: &TestApp, i: usize) -> Value {
    let email = &app.accounts[i].email;
    accounts
        .iter()
        .find(|a| a["email"] == email.as_str())
        .unwrap_or_else(|| panic!("{email} not listed"))
        .clone()
}

/// One chat request, bounded: (status, the error message when it failed).
async fn chat(app: &TestApp, prompt: &str, stream: bool) -> (u16, Option<String>) {
    let fut = async {
        let r = app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(TEST_KEY)
            .json(&chat_body("gemini-2.5-flash", prompt, stream))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status != 200 {
            let v: Value = r.json().await.unwrap();
            let message = v["error"]["message"].as_str().map(str::to_owned);
            assert!(message.is_some(), "an OpenAI-shaped error: {v}");
            return (status, message);
        }
        if stream {
            let data = SseReader::checked(
                r,
                Wire::ChatCompletions {
                    include_usage: false,
                },
            )
            .rest()
            .await;
            assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
            let error = data.iter().find(|d| d.contains("\"error\"")).cloned();
            (status, error)
        } else {
            let v: Value = r.json().await.unwrap();
            assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
            (status, None)
        }
    };
    tokio::time::timeout(BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("'{prompt}' did not end within {BOUND:?}"))
}

/// The U4 calls whose prompt contains `needle`.
fn u4_calls_with(app: &TestApp, needle: &str) -> usize {
    app.sim
        .requests(Endpoint::StreamAssist)
        .iter()
        .filter(|r| {
            r.body
                .as_ref()
                .is_some_and(|b| b.to_string().contains(needle))
        })
        .count()
}

/// 7 accounts; every U4 call whose prompt carries [`POISON`] gets `fault`, on every account.
/// Five such requests run at once with a clean one: each poisoned request ends with `status`
/// after at most two attempts (`max_attempts` is 3), the clean one answers, afterwards every
/// account is ready with no failure counted, and clean requests all answer.
async fn request_caused(fault: Fault, answer: Option<Answer>, status: u16, stream: bool) {
    let app = app(7, json!({})).await;
    if let Some(answer) = answer {
        app.sim.set_answer(answer);
    }
    app.sim.add_fault(
        FaultRule::always(Endpoint::StreamAssist, fault.clone()).when_prompt_contains(POISON),
    );
    let poisoned = (0..5).map(|i| format!("{POISON} request #{i}#"));
    let requests = poisoned
        .clone()
        .map(|p| (p, false))
        .chain([("a clean request".to_owned(), true)]);
    let results = join_all(requests.map(|(prompt, clean)| {
        let app = &app;
        async move { (clean, chat(app, &prompt, stream).await) }
    }))
    .await;
    for (clean, (got, error)) in &results {
        if *clean {
            assert_eq!(*got, 200, "stream={stream}: the concurrent clean request");
            assert_eq!(*error, None, "stream={stream}");
        } else {
            assert_eq!(*got, status, "{fault:?} stream={stream}: {error:?}");
        }
    }
    for (i, _) in poisoned.enumerate() {
        let calls = u4_calls_with(&app, &format!("request #{i}#"));
        assert!(
            (1..=2).contains(&calls),
            "{fault:?} stream={stream}: poisoned request {i} made {calls} U4 calls"
        );
    }
    let accounts = settled(&app).await;
    assert_eq!(accounts.len(), 7);
    for (i, a) in accounts.iter().enumerate() {
        assert_eq!(
            a["state"], "ready",
            "{fault:?} stream={stream}: account {i}: {a}"
        );
        assert_eq!(
            a["counters"]["failed"], 0,
            "{fault:?} stream={stream}: a request-caused failure counted against account {i}: {a}"
        );
    }
    for i in 0..10 {
        let (got, error) = chat(&app, &format!("clean request {i}"), stream).await;
        assert_eq!(got, 200, "stream={stream}: clean request {i}: {error:?}");
        assert_eq!(error, None, "stream={stream}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_that_makes_every_account_answer_500_cools_no_account() {
    for stream in [false, true] {
        request_caused(Fault::ServerError(500), None, 502, stream).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_the_upstream_refuses_as_a_bad_request_counts_against_no_account() {
    for stream in [false, true] {
        request_caused(
            Fault::BadRequest("the prompt is refused".into()),
            None,
            400,
            stream,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_whose_answer_is_cut_on_every_account_cools_no_account() {
    for stream in [false, true] {
        request_caused(Fault::CutAfter(0), None, 502, stream).await;
    }
    // Not streamed, a cut mid-answer (after the first event) on a second account is the
    // request's too.
    request_caused(
        Fault::CutAfter(1),
        Some(Answer::new().text("one ").text("two ").text("three")),
        502,
        false,
    )
    .await;
}

/// 3 accounts, `fill_first` (the first account in e-mail order, `accounts[0]`, is tried first).
async fn fill_first() -> TestApp {
    app(3, json!({ "pool": { "selection": "fill_first" } })).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_still_fails_over_and_cools_the_account() {
    for stream in [false, true] {
        // One account rate limited: the next one answers, the limited one cools.
        let app = fill_first().await;
        app.sim.add_fault(
            FaultRule::always(
                Endpoint::StreamAssist,
                Fault::RateLimited {
                    retry_after_secs: Some(60),
                },
            )
            .for_account(&app.accounts[0].csesidx),
        );
        let (got, error) = chat(&app, "x", stream).await;
        assert_eq!(got, 200, "stream={stream}: {error:?}");
        assert_eq!(error, None);
        assert_eq!(app.sim.requests(Endpoint::StreamAssist).len(), 2);
        let accounts = settled(&app).await;
        let limited = account(&accounts, &app, 0);
        assert_eq!(limited["counters"]["failed"], 1, "{limited}");
        assert_eq!(
            limited["cooldowns"]["text"]["reason"], "rate_limited",
            "{limited}"
        );
        assert_eq!(account(&accounts, &app, 1)["counters"]["success"], 1);
        app.stop().await;

        // Rate limited on every account (the same failure each time, but the accounts'):
        // every attempt is made and every account cools.
        let app = fill_first().await;
        app.sim.add_fault(FaultRule::always(
            Endpoint::StreamAssist,
            Fault::RateLimited {
                retry_after_secs: Some(60),
            },
        ));
        let (got, _) = chat(&app, "x", stream).await;
        assert_eq!(got, 429, "stream={stream}");
        assert_eq!(app.sim.requests(Endpoint::StreamAssist).len(), 3);
        let accounts = settled(&app).await;
        for i in 0..3 {
            let a = account(&accounts, &app, i);
            assert_eq!(a["counters"]["failed"], 1, "stream={stream}: {a}");
            assert_eq!(a["cooldowns"]["text"]["reason"], "rate_limited", "{a}");
        }
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_500_on_one_account_still_fails_over_and_penalises_that_account() {
    for stream in [false, true] {
        let app = fill_first().await;
        app.sim.add_fault(
            FaultRule::once(Endpoint::StreamAssist, Fault::ServerError(500))
                .for_account(&app.accounts[0].csesidx),
        );
        let (got, error) = chat(&app, "x", stream).await;
        assert_eq!(got, 200, "stream={stream}: {error:?}");
        assert_eq!(error, None);
        assert_eq!(app.sim.requests(Endpoint::StreamAssist).len(), 2);
        let accounts = settled(&app).await;
        let failed = account(&accounts, &app, 0);
        assert_eq!(failed["state"], "cooling_down", "stream={stream}: {failed}");
        assert_eq!(failed["counters"]["failed"], 1, "{failed}");
        let next = account(&accounts, &app, 1);
        assert_eq!(next["state"], "ready", "{next}");
        assert_eq!(next["counters"]["success"], 1, "{next}");
        app.stop().await;
    }
}
