//! End-to-end tests of the Flow simulator over real HTTP.

// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{assert_google_error, client};
use serde_json::{Value, json};
use upstream_sim::flow::{FLOW_IMAGE_PNG, FLOW_VIDEO_MP4, VIDEO_CREDITS_COST};
use upstream_sim::{FlowRoute, FlowSimulator, ImageOutcome, VideoOutcome, VideoScript};

const ST: &str = "st-alice-0123456789";
const ST2: &str = "st-bob-9876543210";
const TIER: &str = "PAYGATE_TIER_ONE";

struct Flow {
    sim: FlowSimulator,
    c: reqwest::Client,
}

impl Flow {
    async fn new() -> Flow {
        let sim = FlowSimulator::start().await.unwrap();
        sim.add_token(ST, "alice@example.com", 1000, TIER);
        sim.add_token(ST2, "bob@example.com", 1000, "PAYGATE_TIER_TWO");
        Flow { sim, c: client() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    async fn session_raw(&self, st: &str) -> reqwest::Response {
        self.c
            .get(self.url("/fx/api/auth/session"))
            .header("cookie", format!("__Secure-next-auth.session-token={st}"))
            .send()
            .await
            .unwrap()
    }

    /// A fresh access token for `st`.
    async fn at(&self, st: &str) -> String {
        let resp = self.session_raw(st).await;
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    async fn post(&self, path: &str, at: &str, body: &Value) -> reqwest::Response {
        self.c
            .post(self.url(path))
            .header("content-type", "application/json")
            .bearer_auth(at)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn post_ok(&self, path: &str, at: &str, body: &Value) -> Value {
        let resp = self.post(path, at, body).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "{path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn create_project_raw(&self, st: &str, body: &Value) -> reqwest::Response {
        self.c
            .post(self.url("/fx/api/trpc/project.createProject"))
            .header("content-type", "application/json")
            .header("cookie", format!("__Secure-next-auth.session-token={st}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn project(&self, st: &str) -> String {
        let resp = self
            .create_project_raw(
                st,
                &json!({"json": {"projectTitle": "Flow2API", "toolName": "PINHOLE"}}),
            )
            .await;
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        v["result"]["data"]["json"]["result"]["projectId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn upload(&self, at: &str, bytes: &[u8]) -> String {
        let v = self
            .post_ok("/v1:uploadUserImage", at, &upload_body(bytes))
            .await;
        v["mediaGenerationId"]["mediaGenerationId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn get(&self, url: &str) -> reqwest::Response {
        self.c.get(url).send().await.unwrap()
    }

    async fn poll(&self, at: &str, task: &str, scene: &str) -> reqwest::Response {
        self.post(
            "/v1/video:batchCheckAsyncVideoGenerationStatus",
            at,
            &json!({"operations": [{"operation": {"name": task}, "sceneId": scene}]}),
        )
        .await
    }

    async fn poll_ok(&self, at: &str, task: &str, scene: &str) -> Value {
        let resp = self.poll(at, task, scene).await;
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        v["operations"][0].clone()
    }
}

fn session_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!(";{ms}")
}

fn upload_body(bytes: &[u8]) -> Value {
    json!({
        "imageInput": {
            "rawImageBytes": STANDARD.encode(bytes),
            "mimeType": "image/jpeg",
            "isUserUploaded": true,
            "aspectRatio": "IMAGE_ASPECT_RATIO_LANDSCAPE",
        },
        "clientContext": {"sessionId": session_id(), "tool": "ASSET_MANAGER"},
    })
}

fn image_body(model: &str, prompt: &str, inputs: &[&str]) -> Value {
    let inputs: Value = if inputs.is_empty() {
        Value::Null
    } else {
        inputs
            .iter()
            .map(|id| json!({"name": id, "imageInputType": "IMAGE_INPUT_TYPE_REFERENCE"}))
            .collect()
    };
    json!({"requests": [{
        "clientContext": {"sessionId": session_id()},
        "seed": 4242,
        "imageModelName": model,
        "imageAspectRatio": "IMAGE_ASPECT_RATIO_PORTRAIT",
        "prompt": prompt,
        "imageInputs": inputs,
    }]})
}

fn video_body(project: &str, key: &str, prompt: &str, extras: Value) -> Value {
    let mut request = json!({
        "aspectRatio": "VIDEO_ASPECT_RATIO_LANDSCAPE",
        "seed": 12345,
        "textInput": {"prompt": prompt},
        "videoModelKey": key,
        "metadata": {"sceneId": "5f0e6d1c-0000-4000-8000-000000000001"},
    });
    if let (Some(r), Value::Object(extras)) = (request.as_object_mut(), extras) {
        r.extend(extras);
    }
    json!({
        "clientContext": {
            "sessionId": session_id(),
            "projectId": project,
            "tool": "PINHOLE",
            "userPaygateTier": TIER,
        },
        "requests": [request],
    })
}

const T2V: &str = "/v1/video:batchAsyncGenerateVideoText";
const I2V: &str = "/v1/video:batchAsyncGenerateVideoStartAndEndImage";
const R2V: &str = "/v1/video:batchAsyncGenerateVideoReferenceImages";

fn images_path(project: &str) -> String {
    format!("/v1/projects/{project}/flowMedia:batchGenerateImages")
}

/// Submits, returns `(task id, scene id)`.
async fn submit(f: &Flow, at: &str, path: &str, body: &Value) -> (String, String) {
    let v = f.post_ok(path, at, body).await;
    let op = &v["operations"][0];
    assert_eq!(op["status"], "MEDIA_GENERATION_STATUS_PENDING");
    let task = op["operation"]["name"].as_str().unwrap().to_string();
    assert!(!task.is_empty());
    (task, op["sceneId"].as_str().unwrap().to_string())
}

/// Polls `running` times (expecting PENDING / ACTIVE alternately), then once more; returns
/// the final operation.
async fn poll_to_end(f: &Flow, at: &str, task: &str, scene: &str, running: u32) -> Value {
    for i in 0..running {
        let op = f.poll_ok(at, task, scene).await;
        let expected = if i % 2 == 0 {
            "MEDIA_GENERATION_STATUS_PENDING"
        } else {
            "MEDIA_GENERATION_STATUS_ACTIVE"
        };
        assert_eq!(op["status"], expected, "poll {i}: {op}");
        assert!(op["operation"]["metadata"].is_null());
        assert_eq!(op["operation"]["name"], task);
        assert_eq!(op["sceneId"], scene);
    }
    f.poll_ok(at, task, scene).await
}

async fn assert_video_downloadable(f: &Flow, op: &Value) {
    assert_eq!(op["status"], "MEDIA_GENERATION_STATUS_SUCCESSFUL", "{op}");
    let url = op["operation"]["metadata"]["video"]["fifeUrl"]
        .as_str()
        .unwrap();
    assert!(url.starts_with(&f.sim.base_url()), "{url}");
    let resp = f.get(url).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "video/mp4");
    let bytes = resp.bytes().await.unwrap();
    assert!(bytes.starts_with(b"\0\0\0\x18ftypmp42"));
    assert_eq!(&bytes[..], FLOW_VIDEO_MP4);
}

// ---------------------------------------------------------------- credentials

#[tokio::test]
async fn the_session_mints_fresh_access_tokens() {
    let f = Flow::new().await;
    let resp = f.session_raw(ST).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = resp.json().await.unwrap();
    let at1 = v["access_token"].as_str().unwrap().to_string();
    assert!(!at1.is_empty());
    assert_eq!(v["user"]["email"], "alice@example.com");
    // RFC 3339 UTC with milliseconds, about an hour ahead.
    let expires = v["expires"].as_str().unwrap();
    assert_eq!(expires.len(), "2025-01-01T00:00:00.000Z".len(), "{expires}");
    assert!(expires.ends_with('Z') && expires.as_bytes()[10] == b'T');
    let year: i32 = expires[..4].parse().unwrap();
    assert!(year >= 2025);

    let at2 = f.at(ST).await;
    assert_ne!(at1, at2);

    // The TTL sets `expires` of later tokens.
    f.sim.set_access_ttl(Duration::from_secs(3 * 366 * 86_400));
    let v: Value = f.session_raw(ST).await.json().await.unwrap();
    let later: i32 = v["expires"].as_str().unwrap()[..4].parse().unwrap();
    assert!(later >= year + 2, "{v}");
    f.sim.set_access_ttl(upstream_sim::flow::DEFAULT_ACCESS_TTL);
    // Both work.
    for at in [&at1, &at2] {
        let resp =
            f.c.get(f.url("/v1/credits"))
                .bearer_auth(at)
                .send()
                .await
                .unwrap();
        assert_eq!(resp.status(), 200);
    }

    // Unknown or missing session token.
    assert_google_error(f.session_raw("nope").await, 401, "UNAUTHENTICATED").await;
    let resp = f.get(&f.url("/fx/api/auth/session")).await;
    assert_google_error(resp, 401, "UNAUTHENTICATED").await;

    assert_eq!(f.sim.count(FlowRoute::Session), 5);
    let recs = f.sim.requests_to(FlowRoute::Session);
    assert_eq!(recs[0].session_token.as_deref(), Some(ST));
    assert_eq!(recs[0].status, 200);
    assert_eq!(recs[3].status, 401);
    assert_eq!(recs[4].session_token, None);
    // The TCP peer: a direct client on loopback.
    let peer = recs[0].peer.expect("the peer address is recorded");
    assert_eq!(peer.ip(), std::net::Ipv4Addr::LOCALHOST);
}

#[tokio::test]
async fn an_expired_session_token_is_refused_but_its_access_tokens_live_on() {
    let f = Flow::new().await;
    let at = f.at(ST).await;
    f.sim.expire_session(ST);
    assert_google_error(f.session_raw(ST).await, 401, "UNAUTHENTICATED").await;
    let resp = f
        .create_project_raw(
            ST,
            &json!({"json": {"projectTitle": "Flow2API", "toolName": "PINHOLE"}}),
        )
        .await;
    assert_google_error(resp, 401, "UNAUTHENTICATED").await;
    // The AT minted before keeps working.
    let resp =
        f.c.get(f.url("/v1/credits"))
            .bearer_auth(&at)
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    // Re-adding the token revives it.
    f.sim.add_token(ST, "alice@example.com", 5, TIER);
    f.at(ST).await;
    assert_eq!(f.sim.credits(ST), Some(5));
}

#[tokio::test]
async fn revoked_and_expired_access_tokens_are_refused_on_the_api_host() {
    let f = Flow::new().await;
    let old = f.at(ST).await;
    let other = f.at(ST2).await;
    let project = f.project(ST).await;
    f.sim.revoke_access_tokens(ST);
    let resp =
        f.c.get(f.url("/v1/credits"))
            .bearer_auth(&old)
            .send()
            .await
            .unwrap();
    let v = assert_google_error(resp, 401, "UNAUTHENTICATED").await;
    assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    let resp = f
        .post(
            T2V,
            &old,
            &video_body(&project, "veo_3_1_t2v_fast", "a cat", json!({})),
        )
        .await;
    assert_google_error(resp, 401, "UNAUTHENTICATED").await;
    let resp = f
        .post("/v1:uploadUserImage", &old, &upload_body(b"x"))
        .await;
    assert_google_error(resp, 401, "UNAUTHENTICATED").await;
    // Other tokens' ATs are untouched; a new AT works.
    let resp =
        f.c.get(f.url("/v1/credits"))
            .bearer_auth(&other)
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    let fresh = f.at(ST).await;
    let resp =
        f.c.get(f.url("/v1/credits"))
            .bearer_auth(&fresh)
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);

    // Missing / malformed authorization.
    let resp = f.get(&f.url("/v1/credits")).await;
    assert_google_error(resp, 401, "UNAUTHENTICATED").await;
    let resp =
        f.c.get(f.url("/v1/credits"))
            .header("authorization", format!("Basic {fresh}"))
            .send()
            .await
            .unwrap();
    assert_google_error(resp, 401, "UNAUTHENTICATED").await;

    // A short TTL: the AT expires.
    f.sim.set_access_ttl(Duration::from_millis(300));
    let short = f.at(ST).await;
    let resp =
        f.c.get(f.url("/v1/credits"))
            .bearer_auth(&short)
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let resp =
        f.c.get(f.url("/v1/credits"))
            .bearer_auth(&short)
            .send()
            .await
            .unwrap();
    assert_google_error(resp, 401, "UNAUTHENTICATED").await;
    assert_eq!(
        f.sim.requests().last().unwrap().bearer.as_deref(),
        Some(short.as_str())
    );
}

#[tokio::test]
async fn credits_and_projects() {
    let f = Flow::new().await;
    let at = f.at(ST).await;
    let resp =
        f.c.get(f.url("/v1/credits"))
            .bearer_auth(&at)
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["credits"], 1000);
    assert_eq!(v["userPaygateTier"], TIER);

    let p1 = f.project(ST).await;
    let p2 = f.project(ST).await;
    assert_ne!(p1, p2);
    assert_eq!(p1.len(), 36);
    assert_eq!(f.sim.projects(ST), vec![p1.clone(), p2]);
    assert!(f.sim.projects(ST2).is_empty());
    let rec = f.sim.requests_to(FlowRoute::CreateProject).remove(0);
    assert_eq!(rec.body.unwrap()["json"]["toolName"], "PINHOLE");
    assert_eq!(rec.session_token.as_deref(), Some(ST));

    // Validation.
    let resp = f
        .create_project_raw(ST, &json!({"json": {"projectTitle": "x"}}))
        .await;
    let v = assert_google_error(resp, 400, "INVALID_ARGUMENT").await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("json.toolName")
    );
    let resp = f
        .create_project_raw(
            ST,
            &json!({"json": {"projectTitle": "x", "toolName": "OTHER"}}),
        )
        .await;
    assert_google_error(resp, 400, "INVALID_ARGUMENT").await;
    let resp = f
        .create_project_raw(ST, &json!({"projectTitle": "x"}))
        .await;
    assert_google_error(resp, 400, "INVALID_ARGUMENT").await;
    // Not JSON / not declared as JSON.
    let resp =
        f.c.post(f.url("/fx/api/trpc/project.createProject"))
            .header("content-type", "application/json")
            .header("cookie", format!("__Secure-next-auth.session-token={ST}"))
            .body("{nope")
            .send()
            .await
            .unwrap();
    assert_google_error(resp, 400, "INVALID_ARGUMENT").await;
    let resp =
        f.c.post(f.url("/fx/api/trpc/project.createProject"))
            .header("content-type", "text/plain")
            .header("cookie", format!("__Secure-next-auth.session-token={ST}"))
            .body(json!({"json": {"projectTitle": "x", "toolName": "PINHOLE"}}).to_string())
            .send()
            .await
            .unwrap();
    let v = assert_google_error(resp, 400, "INVALID_ARGUMENT").await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Content-Type")
    );
    assert_eq!(f.sim.projects(ST).len(), 2);
}

// ---------------------------------------------------------------- uploads and images

#[tokio::test]
async fn uploads_are_validated_and_recorded() {
    let f = Flow::new().await;
    let at = f.at(ST).await;
    let id = f.upload(&at, b"\xff\xd8\xff\xe0jpeg").await;
    assert!(!id.is_empty());
    let ups = f.sim.uploads();
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].media_id, id);
    assert_eq!(ups[0].session_token, ST);
    assert_eq!(&ups[0].bytes[..], b"\xff\xd8\xff\xe0jpeg");
    assert_eq!(ups[0].mime_type, "image/jpeg");
    assert_eq!(ups[0].aspect_ratio, "IMAGE_ASPECT_RATIO_LANDSCAPE");

    let cases: Vec<(Value, &str)> = vec![
        (
            patched(
                upload_body(b"x"),
                &["imageInput", "rawImageBytes"],
                json!("%%%not base64"),
            ),
            "imageInput.rawImageBytes",
        ),
        (
            patched(
                upload_body(b"x"),
                &["imageInput", "rawImageBytes"],
                json!(""),
            ),
            "imageInput.rawImageBytes",
        ),
        (
            patched(
                upload_body(b"x"),
                &["imageInput", "aspectRatio"],
                json!("VIDEO_ASPECT_RATIO_LANDSCAPE"),
            ),
            "imageInput.aspectRatio",
        ),
        (
            patched(
                upload_body(b"x"),
                &["clientContext", "tool"],
                json!("PINHOLE"),
            ),
            "clientContext.tool",
        ),
        (
            patched(
                upload_body(b"x"),
                &["clientContext", "sessionId"],
                json!("12345"),
            ),
            "clientContext.sessionId",
        ),
        (json!({"clientContext": {}}), "imageInput"),
    ];
    for (body, field) in cases {
        let resp = f.post("/v1:uploadUserImage", &at, &body).await;
        let v = assert_google_error(resp, 400, "INVALID_ARGUMENT").await;
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field), "{field}: {msg}");
    }
    assert_eq!(f.sim.uploads().len(), 1);
}

#[tokio::test]
async fn images_are_generated_synchronously_and_served() {
    let f = Flow::new().await;
    let at = f.at(ST).await;
    let project = f.project(ST).await;
    let media = f.upload(&at, b"ref").await;
    for model in ["GEM_PIX", "GEM_PIX_2", "IMAGEN_3_5"] {
        let inputs: &[&str] = if model == "GEM_PIX" { &[&media] } else { &[] };
        let v = f
            .post_ok(
                &images_path(&project),
                &at,
                &image_body(model, "a red fox", inputs),
            )
            .await;
        let image = &v["media"][0]["image"]["generatedImage"];
        assert_eq!(image["modelNameType"], model);
        let url = image["fifeUrl"].as_str().unwrap();
        let resp = f.get(url).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "image/png");
        assert_eq!(&resp.bytes().await.unwrap()[..], FLOW_IMAGE_PNG);
    }
    // Images cost nothing.
    assert_eq!(f.sim.credits(ST), Some(1000));
    // A generated image can be referenced by its media id.
    let v = f
        .post_ok(
            &images_path(&project),
            &at,
            &image_body("GEM_PIX", "x", &[]),
        )
        .await;
    let generated = v["media"][0]["image"]["generatedImage"]["mediaGenerationId"]
        .as_str()
        .unwrap()
        .to_string();
    f.post_ok(
        &images_path(&project),
        &at,
        &image_body("GEM_PIX_2", "y", &[&generated]),
    )
    .await;

    // A scripted failure, then the default success again.
    f.sim.script_image(ImageOutcome::HttpError(
        429,
        "Resource has been exhausted".into(),
    ));
    let resp = f
        .post(
            &images_path(&project),
            &at,
            &image_body("GEM_PIX", "a red fox", &[]),
        )
        .await;
    let v = assert_google_error(resp, 429, "RESOURCE_EXHAUSTED").await;
    assert_eq!(v["error"]["message"], "Resource has been exhausted");
    f.post_ok(
        &images_path(&project),
        &at,
        &image_body("GEM_PIX", "a red fox", &[]),
    )
    .await;

    // A scripted outcome is not consumed by a rejected request.
    f.sim
        .script_image(ImageOutcome::HttpError(500, "boom".into()));
    let resp = f
        .post(&images_path(&project), &at, &image_body("GEM_PIX", "", &[]))
        .await;
    assert_google_error(resp, 400, "INVALID_ARGUMENT").await;
    let resp = f
        .post(
            &images_path(&project),
            &at,
            &image_body("GEM_PIX", "ok", &[]),
        )
        .await;
    assert_google_error(resp, 500, "INTERNAL").await;
    assert_eq!(f.sim.count(FlowRoute::GenerateImages), 9);
}

#[tokio::test]
async fn image_requests_are_validated() {
    let f = Flow::new().await;
    let at = f.at(ST).await;
    let at2 = f.at(ST2).await;
    let project = f.project(ST).await;
    let bobs_media = f.upload(&at2, b"bob").await;
    let path = images_path(&project);

    let check = |body: Value, field: &'static str| {
        let f = &f;
        let at = at.clone();
        let path = path.clone();
        async move {
            let resp = f.post(&path, &at, &body).await;
            let v = assert_google_error(resp, 400, "INVALID_ARGUMENT").await;
            let msg = v["error"]["message"].as_str().unwrap().to_string();
            assert!(msg.contains(field), "{field}: {msg}");
        }
    };
    check(
        image_body("GEM_PIX_3", "x", &[]),
        "requests[0].imageModelName",
    )
    .await;
    check(image_body("GEM_PIX", "", &[]), "requests[0].prompt").await;
    check(image_body("GEM_PIX", "   ", &[]), "requests[0].prompt").await;
    let mut b = image_body("GEM_PIX", "x", &[]);
    b["requests"][0].as_object_mut().unwrap().remove("prompt");
    check(b, "requests[0].prompt").await;
    let mut b = image_body("GEM_PIX", "x", &[]);
    b["requests"][0]["imageAspectRatio"] = json!("IMAGE_ASPECT_RATIO_SQUARE");
    check(b, "requests[0].imageAspectRatio").await;
    let mut b = image_body("GEM_PIX", "x", &[]);
    b["requests"][0]["seed"] = json!("12");
    check(b, "requests[0].seed").await;
    check(json!({"requests": []}), "requests").await;
    check(
        image_body("GEM_PIX", "x", &["CAMaUnknown"]),
        "requests[0].imageInputs[0].name",
    )
    .await;
    // Another token's media id is unknown to this one.
    check(
        image_body("GEM_PIX", "x", &[&bobs_media]),
        "requests[0].imageInputs[0].name",
    )
    .await;

    // Someone else's project, an unknown project.
    let resp = f.post(&path, &at2, &image_body("GEM_PIX", "x", &[])).await;
    assert_google_error(resp, 403, "PERMISSION_DENIED").await;
    let resp = f
        .post(&images_path("0000"), &at, &image_body("GEM_PIX", "x", &[]))
        .await;
    assert_google_error(resp, 404, "NOT_FOUND").await;
}

// ---------------------------------------------------------------- videos

#[tokio::test]
async fn text_to_video_succeeds_after_the_default_two_polls() {
    let f = Flow::new().await;
    let at = f.at(ST).await;
    let project = f.project(ST).await;
    let body = video_body(&project, "veo_3_1_t2v_fast_portrait", "a cat", json!({}));
    let v = f.post_ok(T2V, &at, &body).await;
    assert_eq!(v["remainingCredits"], 1000 - VIDEO_CREDITS_COST);
    assert_eq!(f.sim.credits(ST), Some(1000 - VIDEO_CREDITS_COST));
    let op = &v["operations"][0];
    let task = op["operation"]["name"].as_str().unwrap();
    assert_eq!(op["sceneId"], "5f0e6d1c-0000-4000-8000-000000000001");
    let scene = op["sceneId"].as_str().unwrap();
    let done = poll_to_end(&f, &at, task, scene, 2).await;
    assert_video_downloadable(&f, &done).await;
    assert_eq!(
        done["operation"]["metadata"]["video"]["model"],
        "veo_3_1_t2v_fast_portrait"
    );
    // Final stays final.
    let again = f.poll_ok(&at, task, scene).await;
    assert_eq!(again["status"], "MEDIA_GENERATION_STATUS_SUCCESSFUL");
    assert_eq!(
        again["operation"]["metadata"]["video"]["fifeUrl"],
        done["operation"]["metadata"]["video"]["fifeUrl"]
    );
    // Every t2v key is accepted.
    for key in ["veo_3_1_t2v_fast", "veo_2_1_fast_d_15_t2v", "veo_2_0_t2v"] {
        f.sim.script_video(VideoScript::success_after(0));
        let (task, scene) = submit(&f, &at, T2V, &video_body(&project, key, "x", json!({}))).await;
        let done = f.poll_ok(&at, &task, &scene).await;
        assert_video_downloadable(&f, &done).await;
    }
    assert_eq!(f.sim.credits(ST), Some(1000 - 4 * VIDEO_CREDITS_COST));
    let rec = f.sim.requests_to(FlowRoute::VideoText).remove(0);
    assert_eq!(rec.bearer.as_deref(), Some(at.as_str()));
    assert_eq!(rec.body.unwrap()["clientContext"]["tool"], "PINHOLE");
}

#[tokio::test]
async fn start_and_end_image_video_succeeds_after_n_polls() {
    let f = Flow::new().await;
    let at = f.at(ST).await;
    let project = f.project(ST).await;
    let start = f.upload(&at, b"start").await;
    let end = f.upload(&at, b"end").await;
    f.sim.script_video(VideoScript::success_after(3));
    let body = video_body(
        &project,
        "veo_3_1_i2v_s_fast_fl",
        "zoom",
        json!({"startImage": {"mediaId": start}, "endImage": {"mediaId": end}}),
    );
    let (task, scene) = submit(&f, &at, I2V, &body).await;
    let done = poll_to_end(&f, &at, &task, &scene, 3).await;
    assert_video_downloadable(&f, &done).await;

    // Start frame only, other keys.
    for key in ["veo_2_1_fast_d_15_i2v", "veo_2_0_i2v"] {
        let body = video_body(
            &project,
            key,
            "zoom",
            json!({"startImage": {"mediaId": start}}),
        );
        let (task, scene) = submit(&f, &at, I2V, &body).await;
        let done = poll_to_end(&f, &at, &task, &scene, 2).await;
        assert_video_downloadable(&f, &done).await;
    }
}

#[tokio::test]
async fn reference_images_video_succeeds_with_zero_or_more_references() {
    let f = Flow::new().await;
    let at = f.at(ST).await;
    let project = f.project(ST).await;
    let r1 = f.upload(&at, b"r1").await;
    let r2 = f.upload(&at, b"r2").await;
    f.sim.script_video(VideoScript::success_after(1));
    let refs = json!({"referenceImages": [
        {"imageUsageType": "IMAGE_USAGE_TYPE_ASSET", "mediaId": r1},
        {"imageUsageType": "IMAGE_USAGE_TYPE_ASSET", "mediaId": r2},
    ]});
    let (task, scene) = submit(
        &f,
        &at,
        R2V,
        &video_body(&project, "veo_3_0_r2v_fast", "p", refs),
    )
    .await;
    let done = poll_to_end(&f, &at, &task, &scene, 1).await;
    assert_video_downloadable(&f, &done).await;

    f.sim.script_video(VideoScript::success_after(0));
    let body = video_body(
        &project,
        "veo_3_0_r2v_fast",
        "p",
        json!({"referenceImages": []}),
    );
    let (task, scene) = submit(&f, &at, R2V, &body).await;
    let done = f.poll_ok(&at, &task, &scene).await;
    assert_video_downloadable(&f, &done).await;

    // referenceImages is required; the usage type is checked.
    let body = video_body(&project, "veo_3_0_r2v_fast", "p", json!({}));
    let resp = f.post(R2V, &at, &body).await;
    let v = assert_google_error(resp, 400, "INVALID_ARGUMENT").await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests[0].referenceImages")
    );
    let body = video_body(
        &project,
        "veo_3_0_r2v_fast",
        "p",
        json!({"referenceImages": [{"imageUsageType": "X", "mediaId": r1}]}),
    );
    let resp = f.post(R2V, &at, &body).await;
    assert_google_error(resp, 400, "INVALID_ARGUMENT").await;
}

#[tokio::test]
async fn a_scripted_failure_status_ends_the_job_without_a_url() {
    let f = Flow::new().await;
    let at = f.at(ST).await;
    let project = f.project(ST).await;
    f.sim.script_video(VideoScript::failed_after(
        "MEDIA_GENERATION_STATUS_ERROR_NSFW",
        1,
    ));
    let (task, scene) = submit(
        &f,
        &at,
        T2V,
        &video_body(&project, "veo_2_0_t2v", "x", json!({})),
    )
    .await;
    let done = poll_to_end(&f, &at, &task, &scene, 1).await;
    assert_eq!(done["status"], "MEDIA_GENERATION_STATUS_ERROR_NSFW");
    assert!(done["operation"]["metadata"].is_null());
    // Also through the struct literal, final at once.
    f.sim.script_video(VideoScript {
        outcome: VideoOutcome::Failed("MEDIA_GENERATION_STATUS_ERROR_SAFETY".into()),
        polls_before_done: 0,
        poll_http_errors: 0,
    });
    let (task, scene) = submit(
        &f,
        &at,
        T2V,
        &video_body(&project, "veo_2_0_t2v", "x", json!({})),
    )
    .await;
    let done = f.poll_ok(&at, &task, &scene).await;
    assert_eq!(done["status"], "MEDIA_GENERATION_STATUS_ERROR_SAFETY");
}

#[tokio::test]
async fn an_empty_task_id_and_a_submit_http_error_create_no_job() {
    let f = Flow::new().await;
    let at = f.at(ST).await;
    let project = f.project(ST).await;
    f.sim.script_video(VideoScript::empty_task_id());
    let body = video_body(&project, "veo_3_1_t2v_fast", "x", json!({}));
    let v = f.post_ok(T2V, &at, &body).await;
    assert_eq!(v["operations"][0]["operation"]["name"], "");
    assert_eq!(v["remainingCredits"], 1000);
    assert_eq!(f.sim.credits(ST), Some(1000));

    f.sim.script_video(VideoScript::submit_error(503));
    let resp = f.post(T2V, &at, &body).await;
    assert_google_error(resp, 503, "UNAVAILABLE").await;
    assert_eq!(f.sim.credits(ST), Some(1000));

    // The queue is consumed: the next submit succeeds.
    submit(&f, &at, T2V, &body).await;
    assert_eq!(f.sim.credits(ST), Some(1000 - VIDEO_CREDITS_COST));
}

#[tokio::test]
async fn poll_http_errors_come_first_then_the_job_runs() {
    let f = Flow::new().await;
    let at = f.at(ST).await;
    let project = f.project(ST).await;
    f.sim
        .script_video(VideoScript::success_after(1).with_poll_http_errors(2));
    let (task, scene) = submit(
        &f,
        &at,
        T2V,
        &video_body(&project, "veo_2_0_t2v", "x", json!({})),
    )
    .await;
    for _ in 0..2 {
        let resp = f.poll(&at, &task, &scene).await;
        assert_google_error(resp, 500, "INTERNAL").await;
    }
    let done = poll_to_end(&f, &at, &task, &scene, 1).await;
    assert_video_downloadable(&f, &done).await;
    let statuses: Vec<u16> = f
        .sim
        .requests_to(FlowRoute::CheckStatus)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![500, 500, 200, 200]);
}

#[tokio::test]
async fn video_requests_are_validated() {
    let f = Flow::new().await;
    let at = f.at(ST).await;
    let at2 = f.at(ST2).await;
    let project = f.project(ST).await;
    let bobs = f.upload(&at2, b"bob").await;
    // A scripted outcome survives rejected submits.
    f.sim.script_video(VideoScript::submit_error(500));

    let expect_400 = |path: &'static str, body: Value, field: &'static str| {
        let f = &f;
        let at = at.clone();
        async move {
            let resp = f.post(path, &at, &body).await;
            let v = assert_google_error(resp, 400, "INVALID_ARGUMENT").await;
            let msg = v["error"]["message"].as_str().unwrap().to_string();
            assert!(msg.contains(field), "{field}: {msg}");
        }
    };
    // A model key of another endpoint.
    expect_400(
        T2V,
        video_body(&project, "veo_3_1_i2v_s_fast_fl", "x", json!({})),
        "requests[0].videoModelKey",
    )
    .await;
    expect_400(
        I2V,
        video_body(
            &project,
            "veo_3_1_t2v_fast",
            "x",
            json!({"startImage": {"mediaId": bobs}}),
        ),
        "requests[0].videoModelKey",
    )
    .await;
    expect_400(
        R2V,
        video_body(&project, "veo_2_0_t2v", "x", json!({"referenceImages": []})),
        "requests[0].videoModelKey",
    )
    .await;
    // Missing / empty prompt.
    let mut b = video_body(&project, "veo_2_0_t2v", "x", json!({}));
    b["requests"][0]["textInput"] = json!({});
    expect_400(T2V, b, "requests[0].textInput.prompt").await;
    expect_400(
        T2V,
        video_body(&project, "veo_2_0_t2v", "", json!({})),
        "requests[0].textInput.prompt",
    )
    .await;
    // Start image required; media ids must be this token's.
    expect_400(
        I2V,
        video_body(&project, "veo_2_0_i2v", "x", json!({})),
        "requests[0].startImage",
    )
    .await;
    expect_400(
        I2V,
        video_body(
            &project,
            "veo_2_0_i2v",
            "x",
            json!({"startImage": {"mediaId": "CAMaNope"}}),
        ),
        "requests[0].startImage.mediaId",
    )
    .await;
    expect_400(
        I2V,
        video_body(
            &project,
            "veo_2_0_i2v",
            "x",
            json!({"startImage": {"mediaId": bobs}}),
        ),
        "requests[0].startImage.mediaId",
    )
    .await;
    // Envelope.
    let mut b = video_body(&project, "veo_2_0_t2v", "x", json!({}));
    b["clientContext"]["tool"] = json!("ASSET_MANAGER");
    expect_400(T2V, b, "clientContext.tool").await;
    let mut b = video_body(&project, "veo_2_0_t2v", "x", json!({}));
    b["requests"][0]["aspectRatio"] = json!("IMAGE_ASPECT_RATIO_LANDSCAPE");
    expect_400(T2V, b, "requests[0].aspectRatio").await;
    let mut b = video_body(&project, "veo_2_0_t2v", "x", json!({}));
    b["requests"][0]["metadata"] = json!({});
    expect_400(T2V, b, "requests[0].metadata.sceneId").await;
    let mut b = video_body(&project, "veo_2_0_t2v", "x", json!({}));
    b["clientContext"]["userPaygateTier"] = json!(null);
    expect_400(T2V, b, "clientContext.userPaygateTier").await;
    // Missing Content-Type.
    let resp =
        f.c.post(f.url(T2V))
            .bearer_auth(&at)
            .body(video_body(&project, "veo_2_0_t2v", "x", json!({})).to_string())
            .send()
            .await
            .unwrap();
    assert_google_error(resp, 400, "INVALID_ARGUMENT").await;
    // Unknown project.
    let resp = f
        .post(T2V, &at, &video_body("nope", "veo_2_0_t2v", "x", json!({})))
        .await;
    assert_google_error(resp, 404, "NOT_FOUND").await;
    assert_eq!(f.sim.credits(ST), Some(1000));

    // The script was kept for the first accepted submit.
    let resp = f
        .post(
            T2V,
            &at,
            &video_body(&project, "veo_2_0_t2v", "x", json!({})),
        )
        .await;
    assert_google_error(resp, 500, "INTERNAL").await;

    // Polls: unknown task, another token's task, wrong scene, malformed.
    let (task, scene) = submit(
        &f,
        &at,
        T2V,
        &video_body(&project, "veo_2_0_t2v", "x", json!({})),
    )
    .await;
    assert_google_error(f.poll(&at, "deadbeef", &scene).await, 404, "NOT_FOUND").await;
    assert_google_error(f.poll(&at2, &task, &scene).await, 404, "NOT_FOUND").await;
    assert_google_error(
        f.poll(&at, &task, "other-scene").await,
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    let resp = f
        .post(
            "/v1/video:batchCheckAsyncVideoGenerationStatus",
            &at,
            &json!({"operations": []}),
        )
        .await;
    assert_google_error(resp, 400, "INVALID_ARGUMENT").await;
    // None of these counted as polls.
    let op = f.poll_ok(&at, &task, &scene).await;
    assert_eq!(op["status"], "MEDIA_GENERATION_STATUS_PENDING");
}

#[tokio::test]
async fn credits_run_out() {
    let f = Flow::new().await;
    f.sim
        .add_token(ST, "alice@example.com", VIDEO_CREDITS_COST, TIER);
    let at = f.at(ST).await;
    let project = f.project(ST).await;
    let body = video_body(&project, "veo_2_0_t2v", "x", json!({}));
    let v = f.post_ok(T2V, &at, &body).await;
    assert_eq!(v["remainingCredits"], 0);
    let resp = f.post(T2V, &at, &body).await;
    assert_google_error(resp, 429, "RESOURCE_EXHAUSTED").await;
    let resp =
        f.c.get(f.url("/v1/credits"))
            .bearer_auth(&at)
            .send()
            .await
            .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["credits"], 0);
}

#[tokio::test]
async fn files_and_unrouted_paths() {
    let f = Flow::new().await;
    let resp = f.get(&f.url("/files/nope")).await;
    assert_google_error(resp, 404, "NOT_FOUND").await;
    let resp = f.get(&f.url("/v1/somethingElse")).await;
    assert_google_error(resp, 404, "NOT_FOUND").await;
    // Wrong method on a known path.
    let resp = f.c.post(f.url("/v1/credits")).send().await.unwrap();
    assert_google_error(resp, 404, "NOT_FOUND").await;
    let routes: Vec<FlowRoute> = f.sim.requests().iter().map(|r| r.route).collect();
    assert_eq!(
        routes,
        vec![FlowRoute::File, FlowRoute::Unrouted, FlowRoute::Unrouted]
    );
    assert_eq!(f.sim.count(FlowRoute::Unrouted), 2);
    f.sim.stop();
}

/// `body` with the member at `path` (object keys, or array indices as digits) set to `value`.
fn patched(mut body: Value, path: &[&str], value: Value) -> Value {
    let mut at = &mut body;
    for key in path {
        at = match key.parse::<usize>() {
            Ok(i) if at.is_array() => &mut at[i],
            _ => &mut at[*key],
        };
    }
    *at = value;
    body
}
