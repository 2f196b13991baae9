//! The Flow client (`business2api::upstream::flow`) against the Flow simulator, a real HTTP
//! server on loopback: every call of the protocol, each kind of video, and each failure typed
//! the way the pool will act on it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

use business2api::config::Settings;
use business2api::upstream::error::ErrorKind;
use business2api::upstream::flow::session::{Polling, TokenSession};
use business2api::upstream::flow::tokens::config_tokens;
use business2api::upstream::flow::{
    FlowClient, Orientation, VideoKind, VideoRequest, VideoStatus, VideoTask,
};
use business2api_shared::Secret;
use serde_json::json;
use upstream_sim::flow::{FlowRoute, FlowSimulator, ImageOutcome, VideoOutcome, VideoScript};

const ST: &str = "flow-session-token-0123456789";
const PNG: &[u8] = &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3];

async fn setup() -> (FlowSimulator, FlowClient) {
    // The application installs it at start; these tests build a client without one.
    business2api::startup::install_crypto_provider();
    let sim = FlowSimulator::start().await.unwrap();
    sim.add_token(ST, "flow@example.com", 1000, "PAYGATE_TIER_TWO");
    let config = json!({"flow": {"enable": true, "labs_base_url": sim.base_url(),
        "api_base_url": sim.base_url(), "timeout": 10}});
    let settings = Settings::from_json_str(&config.to_string(), &|_| None)
        .unwrap()
        .settings;
    let client = FlowClient::new(&settings.flow).unwrap();
    (sim, client)
}

fn session() -> Secret {
    Secret::new(ST.to_owned())
}

/// Polls until the job is done (or fails), as the pool's job runner will.
async fn finish(client: &FlowClient, at: &Secret, task: &VideoTask) -> Result<String, ErrorKind> {
    for _ in 0..50 {
        match client.check_video(at, task).await {
            Ok(VideoStatus::Done { url }) => return Ok(url),
            Ok(VideoStatus::Running(_)) => {}
            // HTTP errors while polling are not the end of the job.
            Err(e) if matches!(e.kind, ErrorKind::Server { .. }) && e.status.is_some() => {}
            Err(e) => return Err(e.kind),
        }
    }
    panic!("the job never finished");
}

#[tokio::test]
async fn an_image_with_a_reference_from_session_to_file() {
    let (sim, client) = setup().await;
    let access = client.access_token(&session()).await.unwrap();
    assert_eq!(access.email.as_deref(), Some("flow@example.com"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(access.expires.unix_timestamp() > i64::try_from(now).unwrap());
    let credits = client.credits(&access.token).await.unwrap();
    assert_eq!(credits.credits, 1000);
    assert_eq!(credits.tier.as_deref(), Some("PAYGATE_TIER_TWO"));
    let project = client.create_project(&session()).await.unwrap();
    let reference = client
        .upload_image(&access.token, PNG, Orientation::Portrait)
        .await
        .unwrap();
    for orientation in [Orientation::Landscape, Orientation::Portrait] {
        let url = client
            .generate_image(
                &access.token,
                &project,
                "IMAGEN_3_5",
                orientation,
                "a lighthouse",
                std::slice::from_ref(&reference),
            )
            .await
            .unwrap();
        let (mime, bytes) = client.download(&url, 1 << 20).await.unwrap();
        assert_eq!(mime, "image/png");
        assert!(bytes.starts_with(b"\x89PNG"));
    }
    // What went up is what the spec says.
    let generate = sim
        .requests()
        .into_iter()
        .find(|r| r.route == FlowRoute::GenerateImages)
        .unwrap();
    let body = generate.body.unwrap();
    assert_eq!(
        body["requests"][0]["imageAspectRatio"],
        "IMAGE_ASPECT_RATIO_LANDSCAPE"
    );
    assert_eq!(
        body["requests"][0]["imageInputs"][0]["name"],
        json!(reference)
    );
    assert!(
        body["requests"][0]["clientContext"]["sessionId"]
            .as_str()
            .unwrap()
            .starts_with(';')
    );
    let upload = sim
        .requests()
        .into_iter()
        .find(|r| r.route == FlowRoute::UploadImage)
        .unwrap()
        .body
        .unwrap();
    assert_eq!(upload["imageInput"]["mimeType"], "image/jpeg");
    assert_eq!(
        upload["imageInput"]["aspectRatio"],
        "IMAGE_ASPECT_RATIO_PORTRAIT"
    );
}

#[tokio::test]
async fn every_kind_of_video_is_submitted_polled_and_fetched() {
    let (sim, client) = setup().await;
    let access = client.access_token(&session()).await.unwrap();
    let project = client.create_project(&session()).await.unwrap();
    let a = client
        .upload_image(&access.token, PNG, Orientation::Landscape)
        .await
        .unwrap();
    let b = client
        .upload_image(&access.token, PNG, Orientation::Landscape)
        .await
        .unwrap();
    let cases: [(&str, VideoKind, Vec<String>, FlowRoute); 5] = [
        (
            "veo_3_1_t2v_fast",
            VideoKind::Text,
            vec![],
            FlowRoute::VideoText,
        ),
        (
            "veo_3_1_i2v_s_fast_fl",
            VideoKind::StartAndEnd,
            vec![a.clone()],
            FlowRoute::VideoStartEnd,
        ),
        (
            "veo_3_1_i2v_s_fast_fl",
            VideoKind::StartAndEnd,
            vec![a.clone(), b.clone()],
            FlowRoute::VideoStartEnd,
        ),
        (
            "veo_3_0_r2v_fast",
            VideoKind::Reference,
            vec![],
            FlowRoute::VideoReference,
        ),
        (
            "veo_3_0_r2v_fast",
            VideoKind::Reference,
            vec![a.clone(), b.clone()],
            FlowRoute::VideoReference,
        ),
    ];
    for (key, kind, images, route) in cases {
        sim.script_video(VideoScript {
            outcome: VideoOutcome::Success,
            polls_before_done: 3,
            poll_http_errors: 0,
        });
        let request = VideoRequest {
            model_key: key,
            kind,
            orientation: Orientation::Landscape,
            prompt: "waves at dusk",
            images: &images,
        };
        let task = client
            .submit_video(&access.token, &project, Some("PAYGATE_TIER_TWO"), &request)
            .await
            .unwrap();
        let url = finish(&client, &access.token, &task).await.unwrap();
        let (mime, bytes) = client.download(&url, 1 << 20).await.unwrap();
        assert_eq!(mime, "video/mp4", "{key}");
        assert!(!bytes.is_empty());
        let sent = sim
            .requests()
            .into_iter()
            .rfind(|r| r.route == route)
            .unwrap()
            .body
            .unwrap();
        let req = &sent["requests"][0];
        assert_eq!(req["videoModelKey"], key);
        assert_eq!(sent["clientContext"]["userPaygateTier"], "PAYGATE_TIER_TWO");
        assert_eq!(sent["clientContext"]["projectId"], json!(project));
        match kind {
            VideoKind::Text => assert!(req.get("startImage").is_none()),
            VideoKind::StartAndEnd => {
                assert_eq!(req["startImage"]["mediaId"], json!(images[0]));
                assert_eq!(req.get("endImage").is_some(), images.len() == 2, "{req}");
            }
            VideoKind::Reference => {
                assert_eq!(
                    req["referenceImages"].as_array().unwrap().len(),
                    images.len()
                );
            }
        }
    }
    // An image-to-video model without an image is refused before anything is sent.
    let none = VideoRequest {
        model_key: "veo_2_0_i2v",
        kind: VideoKind::StartAndEnd,
        orientation: Orientation::Portrait,
        prompt: "x",
        images: &[],
    };
    let before = sim.count(FlowRoute::VideoStartEnd);
    let e = client
        .submit_video(&access.token, &project, None, &none)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert_eq!(sim.count(FlowRoute::VideoStartEnd), before);
}

#[tokio::test]
async fn failures_are_typed_by_whose_fault_they_are() {
    let (sim, client) = setup().await;
    let access = client.access_token(&session()).await.unwrap();
    let project = client.create_project(&session()).await.unwrap();
    let text = VideoRequest {
        model_key: "veo_2_0_t2v",
        kind: VideoKind::Text,
        orientation: Orientation::Portrait,
        prompt: "a storm",
        images: &[],
    };
    // Safety refusals are the prompt's fault; an unknown failure is the upstream's.
    for (status, kind) in [
        ("MEDIA_GENERATION_STATUS_ERROR_NSFW", ErrorKind::BadRequest),
        (
            "MEDIA_GENERATION_STATUS_ERROR_PERSON",
            ErrorKind::BadRequest,
        ),
        (
            "MEDIA_GENERATION_STATUS_ERROR_SAFETY",
            ErrorKind::BadRequest,
        ),
        (
            "MEDIA_GENERATION_STATUS_ERROR_UNKNOWN",
            ErrorKind::Server { status: 500 },
        ),
    ] {
        sim.script_video(VideoScript {
            outcome: VideoOutcome::Failed(status.to_owned()),
            polls_before_done: 1,
            poll_http_errors: 0,
        });
        let task = client
            .submit_video(&access.token, &project, None, &text)
            .await
            .unwrap();
        assert_eq!(
            finish(&client, &access.token, &task).await.unwrap_err(),
            kind,
            "{status}"
        );
    }
    // HTTP errors while polling do not end the job.
    sim.script_video(VideoScript {
        outcome: VideoOutcome::Success,
        polls_before_done: 1,
        poll_http_errors: 3,
    });
    let task = client
        .submit_video(&access.token, &project, None, &text)
        .await
        .unwrap();
    assert!(finish(&client, &access.token, &task).await.is_ok());
    // No task id: a failure, never a job polled forever.
    sim.script_video(VideoScript {
        outcome: VideoOutcome::EmptyTaskId,
        polls_before_done: 0,
        poll_http_errors: 0,
    });
    let e = client
        .submit_video(&access.token, &project, None, &text)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol);
    // A refused submission says why.
    sim.script_video(VideoScript {
        outcome: VideoOutcome::SubmitHttpError(429),
        polls_before_done: 0,
        poll_http_errors: 0,
    });
    let e = client
        .submit_video(&access.token, &project, None, &text)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.kind,
            ErrorKind::RateLimited { .. } | ErrorKind::QuotaExhausted { .. }
        ),
        "{e:?}"
    );
    sim.script_image(ImageOutcome::HttpError(400, "prompt refused".into()));
    let e = client
        .generate_image(
            &access.token,
            &project,
            "GEM_PIX",
            Orientation::Landscape,
            "x",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    // Out of credits: a quota, not a broken token.
    sim.add_token(ST, "flow@example.com", 0, "PAYGATE_TIER_TWO");
    let e = client
        .submit_video(&access.token, &project, None, &text)
        .await
        .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::QuotaExhausted { .. }), "{e:?}");
    // A refused access token: mint another. A dead session: the token is finished.
    sim.revoke_access_tokens(ST);
    let e = client.credits(&access.token).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::AuthExpired);
    let fresh = client.access_token(&session()).await.unwrap();
    assert!(client.credits(&fresh.token).await.is_ok());
    sim.expire_session(ST);
    let e = client.access_token(&session()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::CookiesInvalid);
    let e = client.create_project(&session()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::CookiesInvalid);
    // Nothing secret in any error.
    assert!(!e.message.contains(ST), "{e:?}");
}

fn token_session() -> TokenSession {
    TokenSession::new(config_tokens(&[session()]).remove(0))
}

const FAST: Polling = Polling {
    interval: std::time::Duration::from_millis(10),
    max_attempts: 50,
};

fn text_video() -> VideoRequest<'static> {
    VideoRequest {
        model_key: "veo_3_1_t2v_fast",
        kind: VideoKind::Text,
        orientation: Orientation::Landscape,
        prompt: "rain on a window",
        images: &[],
    }
}

#[tokio::test]
async fn an_access_token_refused_mid_job_is_replaced_and_the_job_completes() {
    let (sim, client) = setup().await;
    let mut token = token_session();
    sim.script_video(VideoScript {
        outcome: VideoOutcome::Success,
        polls_before_done: 4,
        poll_http_errors: 0,
    });
    let revoker = sim.clone();
    let mut polls = Vec::new();
    let url = token
        .run_video(&client, &text_video(), FAST, |attempt, status| {
            if attempt == 1 {
                // The access token dies while the job runs upstream.
                revoker.revoke_access_tokens(ST);
            }
            polls.push(status.to_owned());
        })
        .await
        .unwrap();
    assert!(client.download(&url, 1 << 20).await.is_ok());
    assert_eq!(sim.count(FlowRoute::Session), 2, "minted again once");
    assert_eq!(
        sim.count(FlowRoute::VideoText),
        1,
        "the job was not submitted twice"
    );
    assert!(
        polls
            .iter()
            .all(|s| s.starts_with("MEDIA_GENERATION_STATUS_")),
        "{polls:?}"
    );
}

#[tokio::test]
async fn access_tokens_are_reused_until_shortly_before_they_expire() {
    let (sim, client) = setup().await;
    let mut token = token_session();
    let now = time::OffsetDateTime::now_utc();
    let first = token.access(&client, now).await.unwrap();
    let again = token.access(&client, now).await.unwrap();
    assert_eq!(first.expose(), again.expose());
    assert_eq!(sim.count(FlowRoute::Session), 1);
    // One that expires within five minutes is replaced before it is used.
    sim.set_access_ttl(std::time::Duration::from_secs(240));
    token.drop_access();
    token.access(&client, now).await.unwrap();
    token.access(&client, now).await.unwrap();
    assert_eq!(sim.count(FlowRoute::Session), 3);
    // The project is made once per token; credits are read with the token's access.
    let p1 = token.project(&client).await.unwrap();
    assert_eq!(token.project(&client).await.unwrap(), p1);
    assert_eq!(sim.count(FlowRoute::CreateProject), 1);
    assert_eq!(token.refresh_credits(&client).await.unwrap().credits, 1000);
}

#[tokio::test]
async fn a_job_waits_out_poll_errors_and_ends_on_failure_or_too_many_polls() {
    let (sim, client) = setup().await;
    let mut token = token_session();
    sim.script_video(VideoScript {
        outcome: VideoOutcome::Success,
        polls_before_done: 1,
        poll_http_errors: 3,
    });
    assert!(
        token
            .run_video(&client, &text_video(), FAST, |_, _| {})
            .await
            .is_ok()
    );
    sim.script_video(VideoScript {
        outcome: VideoOutcome::Failed("MEDIA_GENERATION_STATUS_ERROR_SAFETY".into()),
        polls_before_done: 1,
        poll_http_errors: 0,
    });
    let e = token
        .run_video(&client, &text_video(), FAST, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    sim.script_video(VideoScript {
        outcome: VideoOutcome::Success,
        polls_before_done: 100,
        poll_http_errors: 0,
    });
    let few = Polling {
        interval: std::time::Duration::from_millis(5),
        max_attempts: 3,
    };
    let e = token
        .run_video(&client, &text_video(), few, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    // A session that died is the token's end, typed for the pool to act on.
    sim.expire_session(ST);
    token.drop_access();
    let e = token
        .run_video(&client, &text_video(), FAST, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::CookiesInvalid);
}
