use super::*;

/// Snapshots go to `shared/src/snapshots/` (beside the crate's other sources), named by test.
fn snapshot(name: &str, value: &impl Serialize) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_json_snapshot!(format!("protocol__{name}"), value));
}

fn task_id(s: &str) -> TaskId {
    TaskId::parse(s).unwrap()
}

fn credentials() -> AccountCredentials {
    AccountCredentials {
        cookies: vec![
            WireCookie {
                name: "__Secure-C_SES".into(),
                value: Secret::new("CSE.cookie-session-secret"),
                domain: ".gemini.google".into(),
            },
            WireCookie {
                name: "__Host-C_OSES".into(),
                value: Secret::new("COS.other-session-secret"),
                domain: "business.gemini.google".into(),
            },
        ],
        authorization: Secret::new("Bearer eyJhbGciOi.jwt-secret"),
        config_id: "cfg-1234".into(),
        csesidx: "987654".into(),
    }
}

fn hello() -> Hello {
    Hello {
        protocol: ProtocolVersion::CURRENT,
        worker: WorkerId::parse("box-1").unwrap(),
        software: "0.1.0".into(),
        capacity: 2,
        kinds: vec![TaskKindName::Relogin, TaskKindName::Probe],
    }
}

fn relogin_task(otp: OtpSource) -> Task {
    Task {
        id: task_id("t-1"),
        attempt: 1,
        lease_ms: 60_000,
        spec: TaskSpec::Relogin(ReloginTask {
            account: AccountKey::new("alice@example.com"),
            otp,
            proxy: Some(Secret::new("http://user:proxy-password@127.0.0.1:8080")),
        }),
    }
}

fn imap() -> OtpSource {
    OtpSource::Imap(ImapMailbox {
        host: "imap.example.com".into(),
        port: 993,
        tls: true,
        username: Secret::new("alice@example.com"),
        password: Secret::new("imap-password-secret"),
        folder: "INBOX".into(),
        timeout_ms: 180_000,
    })
}

fn probe_task() -> Task {
    Task {
        id: task_id("t-2"),
        attempt: 3,
        lease_ms: 60_000,
        spec: TaskSpec::Probe(ProbeTask {
            account: AccountKey::new("bob@example.com"),
            credentials: credentials(),
            proxy: None,
        }),
    }
}

/// One of every worker message (and of every outcome).
fn worker_messages() -> Vec<(&'static str, WorkerMessage)> {
    let t = || task_id("t-1");
    vec![
        ("worker_hello", WorkerMessage::Hello(hello())),
        (
            "worker_heartbeat",
            WorkerMessage::Heartbeat {
                running: vec![t(), task_id("t-2")],
            },
        ),
        ("worker_accepted", WorkerMessage::Accepted { task: t() }),
        (
            "worker_declined",
            WorkerMessage::Declined {
                task: t(),
                reason: DeclineReason::Busy,
            },
        ),
        (
            "worker_progress",
            WorkerMessage::Progress {
                task: t(),
                stage: ProgressStage::WaitingForCode,
            },
        ),
        (
            "worker_result_relogged_in",
            WorkerMessage::Result(TaskResult {
                task: t(),
                outcome: TaskOutcome::ReloggedIn {
                    credentials: credentials(),
                },
            }),
        ),
        (
            "worker_result_probed",
            WorkerMessage::Result(TaskResult {
                task: task_id("t-2"),
                outcome: TaskOutcome::Probed {
                    verdict: ProbeVerdict::CredentialsRejected,
                },
            }),
        ),
        (
            "worker_result_failed",
            WorkerMessage::Result(TaskResult {
                task: t(),
                outcome: TaskOutcome::Failed {
                    reason: FailureReason::CodeNeverArrived,
                    message: "no code within 180 s".into(),
                },
            }),
        ),
        ("worker_draining", WorkerMessage::Draining {}),
    ]
}

/// One of every server message.
fn server_messages() -> Vec<(&'static str, ServerMessage)> {
    vec![
        (
            "server_welcome",
            ServerMessage::Welcome(
                negotiate_with(
                    &hello(),
                    &ServerTerms {
                        software: "0.1.0".into(),
                        ..ServerTerms::default()
                    },
                )
                .unwrap(),
            ),
        ),
        (
            "server_refused",
            ServerMessage::Refused(
                negotiate(&Hello {
                    protocol: ProtocolVersion { major: 2, minor: 0 },
                    ..hello()
                })
                .unwrap_err(),
            ),
        ),
        (
            "server_task_relogin_imap",
            ServerMessage::Task(relogin_task(imap())),
        ),
        (
            "server_task_relogin_operator",
            ServerMessage::Task(relogin_task(OtpSource::Operator {
                timeout_ms: 300_000,
            })),
        ),
        ("server_task_probe", ServerMessage::Task(probe_task())),
        (
            "server_otp",
            ServerMessage::Otp {
                task: task_id("t-1"),
                code: Secret::new("123456"),
            },
        ),
        (
            "server_cancel",
            ServerMessage::Cancel {
                task: task_id("t-1"),
                reason: CancelReason::LeaseExpired,
            },
        ),
        ("server_heartbeat_ack", ServerMessage::HeartbeatAck {}),
    ]
}

#[test]
fn every_worker_message_is_frozen() {
    for (name, message) in worker_messages() {
        snapshot(name, &message);
    }
}

#[test]
fn every_server_message_is_frozen() {
    for (name, message) in server_messages() {
        snapshot(name, &message);
    }
}

#[test]
fn every_message_round_trips() {
    for (name, message) in worker_messages() {
        let text = message.to_text();
        assert_eq!(WorkerMessage::parse(&text), Ok(message), "{name}");
    }
    for (name, message) in server_messages() {
        let text = message.to_text();
        assert_eq!(ServerMessage::parse(&text), Ok(message), "{name}");
    }
}

#[test]
fn an_unknown_type_is_unknown_not_an_error() {
    let text = r#"{"type":"register_account","email":"x@y.z","nested":{"a":[1,2]}}"#;
    assert_eq!(WorkerMessage::parse(text), Ok(WorkerMessage::Unknown));
    assert_eq!(ServerMessage::parse(text), Ok(ServerMessage::Unknown));
    // The server closes the session on it, with its own code.
    let err = WorkerMessage::parse(text)
        .and_then(WorkerMessage::require_known)
        .unwrap_err();
    assert_eq!(err, ProtocolError::UnknownType);
    assert_eq!(err.close().code, code::UNSUPPORTED_MESSAGE);
    // A known message is kept.
    let known =
        WorkerMessage::parse(r#"{"type":"draining"}"#).and_then(WorkerMessage::require_known);
    assert_eq!(known, Ok(WorkerMessage::Draining {}));
}

#[test]
fn unknown_fields_and_newer_enum_values_are_tolerated() {
    let text = r#"{"type":"declined","task":"t-1","reason":"overheated","added_in_1_1":true}"#;
    assert_eq!(
        WorkerMessage::parse(text),
        Ok(WorkerMessage::Declined {
            task: task_id("t-1"),
            reason: DeclineReason::Other,
        })
    );
    let hello = r#"{"type":"hello","protocol":{"major":1,"minor":7},"worker":"w","software":"9",
        "capacity":1,"kinds":["relogin","register"]}"#;
    let Ok(WorkerMessage::Hello(hello)) = WorkerMessage::parse(hello) else {
        unreachable!("hello parses")
    };
    assert_eq!(hello.kinds, [TaskKindName::Relogin, TaskKindName::Unknown]);
    // A newer server's task kind reaches the worker as Unknown (it declines it).
    let task =
        r#"{"type":"task","id":"t-9","attempt":1,"lease_ms":1000,"spec":{"kind":"register"}}"#;
    let Ok(ServerMessage::Task(task)) = ServerMessage::parse(task) else {
        unreachable!("task parses")
    };
    assert_eq!(task.kind(), TaskKindName::Unknown);
}

fn bad_message(text: &str) -> ProtocolError {
    let err = WorkerMessage::parse(text).unwrap_err();
    assert_eq!(err.close().code, code::BAD_MESSAGE, "{text}: {err}");
    err
}

#[test]
fn malformed_json_and_bad_fields_are_bad_messages() {
    for text in [
        "",
        "not json",
        "{\"type\":\"accepted\",\"task\":\"t-1\"",
        "[1,2,3]",
        "42",
        "null",
        "{}",
        r#"{"type":7}"#,
    ] {
        assert!(
            matches!(bad_message(text), ProtocolError::Malformed { .. }),
            "{text}"
        );
    }
    // A known type with a missing field names the field (ours), not the input.
    let err = bad_message(r#"{"type":"accepted"}"#);
    assert!(err.to_string().contains("missing field `task`"), "{err}");
    // An ill-typed field: the reason does not quote the value (it may be a credential).
    let err = bad_message(r#"{"type":"accepted","task":{"cookie":"quoted-secret"}}"#);
    let err2 = bad_message(r#"{"type":"hello","protocol":"quoted-secret"}"#);
    for e in [err, err2] {
        assert!(!e.to_string().contains("quoted-secret"), "{e}");
        assert!(!e.close().reason().contains("quoted-secret"));
    }
    // Bad task ids are rejected when parsed, with our own message.
    for id in ["", "../etc", "a b", "-t", &"x".repeat(65)] {
        let text = serde_json::json!({"type": "accepted", "task": id}).to_string();
        let err = bad_message(&text);
        assert!(err.to_string().contains("invalid id:"), "{id}: {err}");
    }
    // A `result` missing a cookie's name (the reference crashed on it).
    let text = r#"{"type":"result","task":"t-1","outcome":{"status":"relogged_in","credentials":
        {"cookies":[{"value":"v","domain":".x"}],"authorization":"Bearer a","configId":"c","csesidx":"1"}}}"#;
    assert!(
        bad_message(text)
            .to_string()
            .contains("missing field `name`")
    );
    // An unknown outcome status is not tolerated: the server cannot apply it.
    bad_message(r#"{"type":"result","task":"t-1","outcome":{"status":"teleported"}}"#);
}

#[test]
fn fields_out_of_bounds_are_invalid() {
    let cases: Vec<(WorkerMessage, &str)> = vec![
        (
            WorkerMessage::Hello(Hello {
                capacity: 0,
                ..hello()
            }),
            "hello.capacity",
        ),
        (
            WorkerMessage::Hello(Hello {
                capacity: MAX_CAPACITY + 1,
                ..hello()
            }),
            "hello.capacity",
        ),
        (
            WorkerMessage::Hello(Hello {
                software: "v\u{1b}[31m".into(),
                ..hello()
            }),
            "hello.software",
        ),
        (
            WorkerMessage::Heartbeat {
                running: (0..33).map(|i| task_id(&format!("t-{i}"))).collect(),
            },
            "heartbeat.running",
        ),
        (
            WorkerMessage::Result(TaskResult {
                task: task_id("t-1"),
                outcome: TaskOutcome::Failed {
                    reason: FailureReason::WrongCode,
                    message: "x".repeat(MAX_TEXT_BYTES + 1),
                },
            }),
            "result.message",
        ),
    ];
    let mut with_credentials = Vec::new();
    let mut c = credentials();
    c.cookies[0].value = Secret::new("abc\r\nX-Injected: 1");
    with_credentials.push((c, "credentials.cookies.value"));
    let mut c = credentials();
    c.cookies[0].name = "a b".into();
    with_credentials.push((c, "credentials.cookies.name"));
    let mut c = credentials();
    c.cookies[1].domain = "evil/path".into();
    with_credentials.push((c, "credentials.cookies.domain"));
    let mut c = credentials();
    c.cookies.clear();
    with_credentials.push((c, "credentials.cookies"));
    let mut c = credentials();
    c.cookies = vec![c.cookies[0].clone(); MAX_COOKIES + 1];
    with_credentials.push((c, "credentials.cookies"));
    let mut c = credentials();
    c.authorization = Secret::new("Bearer x\ny");
    with_credentials.push((c, "credentials.authorization"));
    let mut c = credentials();
    c.config_id = "../x".into();
    with_credentials.push((c, "credentials.configId"));
    let mut c = credentials();
    c.csesidx = "12a".into();
    with_credentials.push((c, "credentials.csesidx"));

    let cases = cases
        .into_iter()
        .chain(with_credentials.into_iter().map(|(c, f)| {
            (
                WorkerMessage::Result(TaskResult {
                    task: task_id("t-1"),
                    outcome: TaskOutcome::ReloggedIn { credentials: c },
                }),
                f,
            )
        }));
    for (message, field) in cases {
        // Through the text a worker would send, so the bounds hold on the parse path.
        let err = WorkerMessage::parse(&message.to_text()).unwrap_err();
        assert!(
            matches!(err, ProtocolError::Invalid { field: f, .. } if f == field),
            "{field}: {err}"
        );
        assert_eq!(err.close().code, code::BAD_MESSAGE);
        // The reason never carries the credential.
        assert!(!err.close().reason().contains("X-Injected"));
    }
}

#[test]
fn an_oversized_frame_is_refused_before_parsing() {
    // Valid JSON, one byte over the bound: the size decides, not the content.
    let filler = "x".repeat(MAX_FRAME_BYTES);
    let text = format!(r#"{{"type":"draining","pad":"{filler}"}}"#);
    let err = WorkerMessage::parse(&text).unwrap_err();
    assert_eq!(err, ProtocolError::FrameTooLarge { bytes: text.len() });
    assert_eq!(err.close().code, code::FRAME_TOO_LARGE);
    assert_eq!(
        ServerMessage::parse(&text).unwrap_err().close().code,
        code::FRAME_TOO_LARGE
    );
    // Exactly at the bound is parsed.
    let pad = MAX_FRAME_BYTES - r#"{"type":"draining","pad":""}"#.len();
    let text = format!(r#"{{"type":"draining","pad":"{}"}}"#, "x".repeat(pad));
    assert_eq!(text.len(), MAX_FRAME_BYTES);
    assert_eq!(WorkerMessage::parse(&text), Ok(WorkerMessage::Draining {}));
}

#[test]
fn hostile_frames_never_panic() {
    // Deep nesting inside a known and an unknown type (serde_json's recursion limit).
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for text in [
        format!(r#"{{"type":"draining","x":{deep}}}"#),
        format!(r#"{{"type":"what","x":{deep}}}"#),
        format!(r#"{{"type":"hello","protocol":{deep}}}"#),
        "\u{0}\u{ffff}\"".to_owned(),
        r#"{"type":"hello","protocol":{"major":1e400,"minor":-1}}"#.to_owned(),
        r#"{"type":"hello","protocol":{"major":1,"minor":0},"worker":"w","software":"s","capacity":99999,"kinds":[]}"#.to_owned(),
        r#"{"type":"heartbeat","running":"t-1"}"#.to_owned(),
        r#"{"type":"heartbeat","running":[null]}"#.to_owned(),
        r#"{"type":"accepted","task":"t-1","task":"t-2"}"#.to_owned(),
    ] {
        assert!(WorkerMessage::parse(&text).is_err(), "{text:.80}");
        // The worker's parser survives them too (some are unknown server types there).
        let _ = ServerMessage::parse(&text);
    }
}

#[test]
fn negotiate_refuses_another_major_version_with_a_close_reason() {
    for major in [0, 2, u32::MAX] {
        let refusal = negotiate(&Hello {
            protocol: ProtocolVersion { major, minor: 0 },
            ..hello()
        })
        .unwrap_err();
        assert_eq!(refusal.code, code::INCOMPATIBLE);
        assert!(refusal.reason.contains(&format!("protocol {major}.0")));
        assert!(refusal.reason.contains("1.x"));
        let close = refusal.close();
        assert!(close.reason().len() <= MAX_CLOSE_REASON_BYTES);
        assert_eq!(close.reason(), refusal.reason);
    }
}

#[test]
fn negotiate_agrees_on_the_lower_minor_and_the_common_kinds() {
    let welcome = negotiate(&Hello {
        protocol: ProtocolVersion {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR + 5,
        },
        kinds: vec![TaskKindName::Unknown, TaskKindName::Probe],
        ..hello()
    })
    .unwrap();
    assert_eq!(welcome.protocol, ProtocolVersion::CURRENT);
    assert_eq!(welcome.kinds, [TaskKindName::Probe]);
    assert_eq!(welcome.heartbeat_interval_ms, 15_000);
    assert_eq!(welcome.missed_heartbeats, MISSED_HEARTBEATS);
    assert_eq!(welcome.lease_ms, 60_000);
    assert_eq!(welcome.max_frame_bytes, MAX_FRAME_BYTES as u64);
    // A lease outlives the heartbeats that renew it.
    assert!(LEASE_DURATION > HEARTBEAT_INTERVAL * 2);

    let refusal = negotiate(&Hello {
        kinds: vec![TaskKindName::Unknown],
        ..hello()
    })
    .unwrap_err();
    assert_eq!(refusal.code, code::INCOMPATIBLE);
    assert!(refusal.reason.contains("no task kind in common"));

    // A hello built in code (not parsed) is still bounds-checked.
    let refusal = negotiate(&Hello {
        capacity: 0,
        ..hello()
    })
    .unwrap_err();
    assert_eq!(refusal.code, code::BAD_MESSAGE);
}

#[test]
fn debug_of_messages_carrying_credentials_shows_no_secret() {
    let messages = [
        format!("{:?}", ServerMessage::Task(relogin_task(imap()))),
        format!("{:?}", ServerMessage::Task(probe_task())),
        format!(
            "{:?}",
            ServerMessage::Otp {
                task: task_id("t-1"),
                code: Secret::new("123456"),
            }
        ),
        format!("{:?}", worker_messages()),
    ];
    for text in messages {
        for secret in [
            "cookie-session-secret",
            "other-session-secret",
            "jwt-secret",
            "imap-password-secret",
            "proxy-password",
            "123456",
            // The account's address is personal data: Debug shows its label.
            "alice@example.com",
            "bob@example.com",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("[redacted]"), "{text}");
    }
}

#[test]
fn close_reasons_are_bounded_and_clean() {
    let close = Close::new(code::BAD_MESSAGE, &"é".repeat(100));
    assert!(close.reason().len() <= MAX_CLOSE_REASON_BYTES);
    assert_eq!(close.reason().len(), 122); // 61 two-byte characters: cut at a boundary
    assert_eq!(Close::new(code::BAD_MESSAGE, "a\r\nb").reason(), "a  b");
    // Every error's close reason fits a close frame.
    let long = ProtocolError::Malformed {
        detail: "x".repeat(500),
    };
    assert!(long.close().reason().len() <= MAX_CLOSE_REASON_BYTES);
    for c in [
        code::NORMAL,
        code::GOING_AWAY,
        code::BAD_MESSAGE,
        code::UNAUTHORISED,
        code::INCOMPATIBLE,
        code::UNSUPPORTED_MESSAGE,
        code::FRAME_TOO_LARGE,
        code::PROTOCOL_VIOLATION,
        code::HEARTBEAT_TIMEOUT,
        code::REPLACED,
        code::TOO_MANY_WORKERS,
    ] {
        assert_ne!(code::describe(c), "unknown close code", "{c}");
    }
    assert_eq!(
        ProtocolError::Unexpected {
            what: "a result for a task not leased to this worker"
        }
        .close()
        .code,
        code::PROTOCOL_VIOLATION
    );
    assert_eq!(ProtocolError::NotText.close().code, code::BAD_MESSAGE);
}

#[test]
fn outcomes_fit_their_task_kind() {
    let relogged = TaskOutcome::ReloggedIn {
        credentials: credentials(),
    };
    assert!(relogged.fits(TaskKindName::Relogin));
    assert!(!relogged.fits(TaskKindName::Probe));
    let probed = TaskOutcome::Probed {
        verdict: ProbeVerdict::Healthy,
    };
    assert!(probed.fits(TaskKindName::Probe) && !probed.fits(TaskKindName::Relogin));
    let failed = TaskOutcome::Failed {
        reason: FailureReason::Cancelled,
        message: String::new(),
    };
    assert!(failed.fits(TaskKindName::Relogin) && failed.fits(TaskKindName::Probe));
}
