//! `business2api accounts import|export|list`, run as the operator runs them: reference-format
//! files in, the same bytes out, no credentials on the terminal.

// The helpers below run only inside tests; a failed unwrap there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

/// As the reference gateway writes it: HTML characters in a cookie escaped, non-ASCII name,
/// response headers, no cookie_string.
const ALICE: &str = r#"{
  "email": "alice@example.com",
  "fullName": "Zoë Ünal",
  "authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjc2VzaWR4LzExMSJ9.QUxJQ0UtQVVUSA",
  "cookies": [
    {
      "name": "__Secure-C_SES",
      "value": "ALICE-SES\u0026x=\u003c1\u003e",
      "domain": ".gemini.google"
    },
    {
      "name": "__Host-C_OSES",
      "value": "ALICE-OSES",
      "domain": "business.gemini.google"
    }
  ],
  "response_headers": {
    "set-cookie": "ALICE-SET-COOKIE; Path=/",
    "x-goog-authenticated-user": "ALICE-USER"
  },
  "timestamp": "2026-03-01T10:00:00+08:00",
  "configId": "0f1e2d3c-aaaa-bbbb-cccc-123456789abc",
  "csesidx": "111"
}"#;

/// Not as the reference writes it: a key it does not know, placed among the known ones.
const BOB: &str = r#"{
  "email": "bob@example.com",
  "flowToken": {"value": "BOB-FLOW", "expires": [1, 2]},
  "fullName": "Bob",
  "authorization": "Bearer BOB-AUTH",
  "cookies": [
    {
      "name": "__Secure-C_SES",
      "value": "BOB-SES",
      "domain": ".gemini.google"
    }
  ],
  "cookie_string": "__Secure-C_SES=BOB-SES",
  "timestamp": "2026-03-02T10:00:00Z",
  "configId": "cfg-bob",
  "csesidx": "222"
}"#;

/// As the reference writes it, with an e-mail that tries to climb out of the export dir (and
/// no session cookie, so it cannot be used).
const EVIL: &str = r#"{
  "email": "../../evil@x.com",
  "fullName": "",
  "authorization": "EVIL-AUTH",
  "cookies": [
    {
      "name": "NID",
      "value": "EVIL-NID",
      "domain": ".google.com"
    }
  ],
  "timestamp": "2026-03-03T10:00:00Z"
}"#;

const SECRETS: [&str; 10] = [
    "ALICE-SES",
    "ALICE-OSES",
    "ALICE-SET-COOKIE",
    "ALICE-USER",
    "eyJhbGciOiJIUzI1NiJ9",
    "BOB-FLOW",
    "BOB-AUTH",
    "BOB-SES",
    "EVIL-AUTH",
    "EVIL-NID",
];

fn bin() -> Command {
    common::gateway_command()
}

/// A config file whose data dir is `data_dir`; returns its path.
fn config(root: &Path, name: &str, data_dir: &Path) -> PathBuf {
    let path = root.join(name);
    std::fs::write(
        &path,
        serde_json::json!({ "data_dir": data_dir }).to_string(),
    )
    .unwrap();
    path
}

fn accounts(config: &Path, args: &[&str], paths: &[&Path]) -> Output {
    bin()
        .arg("--config")
        .arg(config)
        .arg("accounts")
        .args(args)
        .args(paths)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn assert_no_secret(what: &str, output: &Output) {
    let all = text(&output.stdout) + text(&output.stderr).as_str();
    for secret in SECRETS {
        assert!(!all.contains(secret), "{what} printed {secret}:\n{all}");
    }
}

/// File name → content of every entry of `dir`.
fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            assert!(e.file_type().unwrap().is_file(), "{:?}", e.path());
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn email_of(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    v["email"].as_str().unwrap().to_owned()
}

#[test]
fn reference_files_survive_import_and_export_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let src = root.join("reference");
    std::fs::create_dir(&src).unwrap();
    let originals = [
        ("alice@example.com", "alice@example.com.json", ALICE),
        ("bob@example.com", "bob@example.com.json", BOB),
    ];
    for (_, name, content) in originals {
        std::fs::write(src.join(name), content).unwrap();
    }
    let first = config(root, "first.json", &root.join("data1"));

    let out = accounts(&first, &["import"], &[&src]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    for (_, name, _) in originals {
        let line = format!("inserted   {}", src.join(name).display());
        assert!(stdout.contains(&line), "no `{line}` in:\n{stdout}");
    }
    assert_no_secret("import", &out);

    // Importing again changes nothing.
    let again = accounts(&first, &["import"], &[&src]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(
        text(&again.stdout).matches("unchanged  ").count(),
        2,
        "{}",
        text(&again.stdout)
    );

    // Export: the reference-written files come back byte for byte, the one with an unknown
    // key as the same JSON; everything lands inside the export dir.
    let export1 = root.join("export1");
    let out = accounts(&first, &["export"], &[&export1]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_no_secret("export", &out);
    let exported = files_in(&export1);
    assert_eq!(exported.len(), 2, "{:?}", exported.keys());
    let by_email: BTreeMap<String, (&String, &Vec<u8>)> = exported
        .iter()
        .map(|(name, bytes)| (email_of(bytes), (name, bytes)))
        .collect();
    for (email, _, original) in originals {
        let (name, bytes) = by_email[email];
        assert!(
            text(&out.stdout).contains(&export1.join(name).display().to_string()),
            "the written path is printed"
        );
        if email == "bob@example.com" {
            assert_ne!(
                text(bytes),
                original,
                "the unknown key moved after the known ones"
            );
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(bytes).unwrap(),
                serde_json::from_str::<serde_json::Value>(original).unwrap()
            );
        } else {
            assert_eq!(text(bytes), original, "{email} changed on the way through");
        }
    }
    assert_eq!(by_email["alice@example.com"].0, "alice@example.com.json");
    let mut top: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["data1", "export1", "first.json", "reference"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for name in exported.keys() {
            let mode = std::fs::metadata(export1.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    // Export → import into a fresh data dir → export: the same files again.
    let second = config(root, "second.json", &root.join("data2"));
    let out = accounts(&second, &["import"], &[&export1]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let export2 = root.join("export2");
    let out = accounts(&second, &["export"], &[&export2]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(files_in(&export2), exported);

    // The listing shows the accounts and what the gateway makes of them, no secret.
    let out = accounts(&first, &["list", "--json"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_no_secret("list --json", &out);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    let emails: Vec<&str> = listed
        .iter()
        .map(|a| a["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["alice@example.com", "bob@example.com"]);
    assert_eq!(
        listed[0],
        serde_json::json!({"email": "alice@example.com", "label": "acct-ff8d9819",
            "usable": true, "reason": null,
            "config_id": "0f1e2d3c-aaaa-bbbb-cccc-123456789abc", "cookies": 2,
            "source_file": "alice@example.com.json"})
    );
    assert_eq!(listed[1]["cookies"], 1);

    let out = accounts(&first, &["list"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_no_secret("list", &out);
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(stdout.contains("2 account(s), 2 usable"), "{stdout}");
}

/// Whether `text` holds a character a terminal would act on.
fn has_control(text: &str) -> bool {
    text.chars()
        .any(|c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c))
}

/// `accounts import` refuses records whose e-mail is not a plausible address (a path, control
/// characters), naming each by file (and index) with the value escaped, and imports the rest;
/// records stored by an older version are listed and exported escaped and contained.
#[test]
fn implausible_emails_are_rejected_by_name_and_stored_ones_never_reach_the_terminal_raw() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let data = root.join("data");
    let cfg = config(root, "config.json", &data);
    let src = root.join("in");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("alice.json"), ALICE).unwrap();
    std::fs::write(src.join("evil.json"), EVIL).unwrap();
    let mut nul: serde_json::Value = serde_json::from_str(BOB).unwrap();
    nul["email"] = "bob\0@example.com".into();
    let mut esc = nul.clone();
    esc["email"] = "bob\u{1b}[2J\n@example.com".into();
    let many = root.join("many.json");
    std::fs::write(
        &many,
        serde_json::to_vec(&serde_json::json!([
            serde_json::from_str::<serde_json::Value>(BOB).unwrap(),
            nul,
            esc
        ]))
        .unwrap(),
    )
    .unwrap();

    let out = accounts(&cfg, &["import"], &[&src, &many]);
    assert_eq!(out.status.code(), Some(1), "a rejection fails the command");
    let stdout = text(&out.stdout);
    assert!(!has_control(&stdout), "{stdout:?}");
    assert_no_secret("import", &out);
    for line in [
        format!("inserted   {}", src.join("alice.json").display()),
        format!("inserted   {}[0]", many.display()),
        format!(
            "rejected   {}: invalid `email` \"../../evil@x.com\": it contains `/` or `\\`",
            src.join("evil.json").display()
        ),
        format!(
            "rejected   {}[1]: invalid `email` \"bob\\0@example.com\": it contains a control character",
            many.display()
        ),
        format!(
            "rejected   {}[2]: invalid `email` \"bob\\u{{1b}}[2J\\n@example.com\": it contains a control character",
            many.display()
        ),
        "2 account(s) imported (2 inserted, 0 updated, 0 unchanged), 3 rejected".to_owned(),
    ] {
        assert!(stdout.contains(&line), "no `{line}` in:\n{stdout}");
    }
    let out = accounts(&cfg, &["list", "--json"], &[]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let emails: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["alice@example.com", "bob@example.com"]);

    // A record an older version stored: listed escaped, exported inside the export dir.
    {
        let store = business2api::store::Store::open(&data).unwrap();
        let mut old =
            business2api::pool::import::parse_account_file("x", ALICE.as_bytes()).unwrap();
        old.email = "../../evil\u{1b}]0;pwned\u{7}\u{202e}@x.com".into();
        old.source_file = Some("old\u{1b}[31m.json".into());
        store.upsert_account(&old).unwrap();
    }
    let out = accounts(&cfg, &["list"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(!has_control(&stdout), "{stdout:?}");
    assert!(
        stdout.contains("../../evil\\u{1b}]0;pwned\\u{7}\\u{202e}@x.com  acct-")
            && stdout.contains("source=old\\u{1b}[31m.json"),
        "{stdout}"
    );
    let export = root.join("export");
    let out = accounts(&cfg, &["export"], &[&export]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(!has_control(&text(&out.stdout)), "{:?}", text(&out.stdout));
    assert_eq!(files_in(&export).len(), 3);
    let mut top: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["config.json", "data", "export", "in", "many.json"]);
}

#[test]
fn a_rejected_file_fails_the_import_and_says_why() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let cfg = config(root, "config.json", &root.join("data"));
    let good = root.join("alice.json");
    std::fs::write(&good, ALICE).unwrap();
    let bad = root.join("bad.json");
    std::fs::write(
        &bad,
        br#"{"email": "x@y.com", "cookies": {"name": "SECRET-ISH"}}"#,
    )
    .unwrap();
    let out = accounts(&cfg, &["import"], &[&good, &bad]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("inserted   {}", good.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "rejected   {}: `cookies` must be an array",
            bad.display()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("SECRET-ISH"), "{stdout}");
}

#[test]
fn an_account_that_cannot_serve_is_reported_at_import_with_the_reason() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let cfg = config(root, "config.json", &root.join("data"));
    let good = root.join("alice.json");
    std::fs::write(&good, ALICE).unwrap();
    let cookieless = root.join("carol.json");
    std::fs::write(
        &cookieless,
        br#"{"email": "carol@example.com", "cookies": [], "csesidx": "3", "configId": "c",
            "authorization": "Bearer CAROL-AUTH"}"#,
    )
    .unwrap();
    let out = accounts(&cfg, &["import"], &[&good, &cookieless]);
    // Stored (it may get its cookies by a re-login), so the import succeeds, but it says so.
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "unusable   carol@example.com: imported, but it cannot serve: no `__Secure-C_SES` cookie"
        ),
        "{stdout}"
    );
    assert!(
        !stdout.contains("alice@example.com: imported, but"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 account(s) imported (2 inserted, 0 updated, 0 unchanged), 0 rejected, 1 imported but unusable (see above)"),
        "{stdout}"
    );
    assert_no_secret("import", &out);
    // Importing the same files again changes nothing and repeats nothing.
    let again = text(&accounts(&cfg, &["import"], &[&good, &cookieless]).stdout);
    assert!(!again.contains("unusable"), "{again}");
}

#[test]
fn a_database_in_use_is_refused_with_directions() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let data = root.join("data");
    std::fs::create_dir(&data).unwrap();
    let cfg = config(root, "config.json", &data);
    let src = root.join("alice.json");
    std::fs::write(&src, ALICE).unwrap();

    let held = business2api::store::Store::open(&data).unwrap();
    for (args, paths) in [
        (&["import"][..], vec![src.as_path()]),
        (&["list", "--json"][..], vec![]),
    ] {
        let out = accounts(&cfg, args, &paths);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
        let stderr = text(&out.stderr);
        for needle in [
            "in use by a running gateway",
            "POST /admin/pool-files/import",
            "GET /admin/pool-files/export",
        ] {
            assert!(
                stderr.contains(needle),
                "{args:?}: no {needle:?} in:\n{stderr}"
            );
        }
    }
    drop(held);
    let out = accounts(&cfg, &["import"], &[&src]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn help_documents_the_accounts_commands() {
    let out = bin().args(["accounts", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    for needle in ["import", "export", "list", "--config"] {
        assert!(
            help.contains(needle),
            "`accounts --help` lacks {needle}:\n{help}"
        );
    }
    let out = bin().args(["accounts", "list", "--help"]).output().unwrap();
    assert!(text(&out.stdout).contains("--json"));
    let out = bin().args(["accounts", "import"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a path is required");
}
