//! Account e-mails are validated wherever accounts enter: the admin import route and the
//! start-up import of the accounts dir. A record with an implausible e-mail (a path, control
//! characters) is rejected by name with its value escaped; the others are imported.

use business2api_tests::{
    SimAccount, Simulator, TEST_KEY, TestApp, TestOptions, base_config, merge, spawn_app_with,
    start_app, write_account_file,
};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "admin-key-for-tests-0123456789";

/// E-mails no import may store, each with the escaped form its rejection must show.
const HOSTILE: [(&str, &str); 4] = [
    ("../../etc/x", r#""../../etc/x""#),
    ("/abs/path@x.com", r#""/abs/path@x.com""#),
    ("nul\0@x.com", r#""nul\0@x.com""#),
    ("line\n\u{1b}[2J@x.com", r#""line\n\u{1b}[2J@x.com""#),
];

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

fn emails(listing: &Value) -> Vec<String> {
    let mut emails: Vec<String> = listing["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["email"].as_str().unwrap().to_owned())
        .collect();
    emails.sort();
    emails
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_import_rejects_implausible_emails_by_index_and_imports_the_rest() {
    let app =
        spawn_app_with(TestOptions::default().config(json!({"admin_keys": [ADMIN_KEY]}))).await;
    let newcomer = SimAccount::demo(7);
    app.sim.add_account(newcomer.clone());
    let mut body = vec![newcomer.account_file_json()];
    for (email, _) in HOSTILE {
        let mut bad = newcomer.account_file_json();
        bad["email"] = json!(email);
        body.push(bad);
    }
    let r = app
        .client
        .post(app.url("/admin/pool-files/import"))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(
        report["imported"],
        json!([{"email": newcomer.email, "result": "inserted"}]),
        "{report}"
    );
    let rejected = report["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), HOSTILE.len(), "{report}");
    for (i, (r, (_, escaped))) in rejected.iter().zip(HOSTILE).enumerate() {
        assert_eq!(r["name"], format!("body[{}]", i + 1), "{r}");
        let reason = r["reason"].as_str().unwrap();
        assert!(
            reason.starts_with(&format!("invalid `email` {escaped}: ")),
            "{reason}"
        );
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
    }
    let listing = admin_get(&app, "/admin/accounts").await;
    let mut expected = vec![app.accounts[0].email.clone(), newcomer.email.clone()];
    expected.sort();
    assert_eq!(emails(&listing), expected);

    // Only invalid records: nothing is imported, the request is refused.
    let r = app
        .client
        .post(app.url("/admin/pool-files/import"))
        .bearer_auth(ADMIN_KEY)
        .json(&body[1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["rejected"][0]["name"], "body", "{report}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_import_rejects_implausible_emails_by_file_and_imports_the_rest() {
    let sim = Simulator::start().await.unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let good = SimAccount::demo(0);
    sim.add_account(good.clone());
    write_account_file(data_dir.path(), &good);
    for (i, (email, _)) in HOSTILE.iter().enumerate() {
        let mut bad = good.account_file_json();
        bad["email"] = json!(email);
        std::fs::write(
            data_dir.path().join(format!("bad-{i}.json")),
            serde_json::to_vec(&bad).unwrap(),
        )
        .unwrap();
    }
    let mut config = base_config(data_dir.path(), &sim);
    merge(
        &mut config,
        json!({"api_keys": [TEST_KEY], "admin_keys": [ADMIN_KEY]}),
    );
    let app = start_app(sim, vec![good.clone()], data_dir, config).await;

    let import = &app.report.import;
    assert_eq!(import.imported.len(), 1, "{import:?}");
    assert_eq!(import.imported[0].0, format!("{}.json", good.email));
    assert_eq!(import.rejected.len(), HOSTILE.len(), "{import:?}");
    for (i, (r, (_, escaped))) in import.rejected.iter().zip(HOSTILE).enumerate() {
        assert_eq!(r.name, format!("bad-{i}.json"));
        assert!(
            r.reason
                .starts_with(&format!("invalid `email` {escaped}: ")),
            "{}",
            r.reason
        );
    }
    let listing = admin_get(&app, "/admin/accounts").await;
    assert_eq!(emails(&listing), vec![good.email.clone()]);
    let store_keys = {
        let r = app
            .client
            .get(app.url("/admin/pool-files/export"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        let exported: Value = r.json().await.unwrap();
        exported.as_array().unwrap().len()
    };
    assert_eq!(store_keys, 1, "nothing else reached the store");
    app.stop().await;
}
