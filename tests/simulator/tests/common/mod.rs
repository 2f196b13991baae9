//! Test helpers: an HTTP client, a minimal HS256 JWT signer and request builders.

// Test-only helpers: a failed unwrap is a failed test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use upstream_sim::{SimAccount, Simulator};

pub const AUD: &str = "https://biz-discoveryengine.googleapis.com";
pub const ISS: &str = "https://business.gemini.google";

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().unwrap()
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Signs `payload` with `key` under `kid`.
pub fn sign(key: &[u8], kid: &str, payload: &Value) -> String {
    let header = json!({"alg": "HS256", "kid": kid, "typ": "JWT"});
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(payload.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{h}.{p}.{s}")
}

pub fn claims(csesidx: &str, nbf: i64, exp: i64) -> Value {
    json!({
        "aud": AUD, "exp": exp, "iat": nbf, "iss": ISS, "nbf": nbf,
        "sub": format!("csesidx/{csesidx}"),
    })
}

/// An issued U1 key.
#[derive(Clone)]
pub struct Key {
    pub key: Vec<u8>,
    pub kid: String,
}

/// U1 for `account`, returning the decoded key.
pub async fn getoxsrf(c: &reqwest::Client, sim: &Simulator, account: &SimAccount) -> Key {
    let resp = c
        .get(format!(
            "{}/auth/getoxsrf?csesidx={}",
            sim.base_url(),
            account.csesidx
        ))
        .header("cookie", format!("__Secure-C_SES={}", account.c_ses))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let json_text = text.strip_prefix(")]}'").unwrap().trim();
    let v: Value = serde_json::from_str(json_text).unwrap();
    let token = v["xsrfToken"].as_str().unwrap();
    Key {
        key: URL_SAFE_NO_PAD.decode(token).unwrap(),
        kid: v["keyId"].as_str().unwrap().to_string(),
    }
}

/// A signed-in test client for one account.
pub struct Caller {
    pub c: reqwest::Client,
    pub base: String,
    pub account: SimAccount,
    pub key: Key,
    pub jwt: String,
}

impl Caller {
    pub async fn new(sim: &Simulator, account: SimAccount) -> Caller {
        let c = client();
        let key = getoxsrf(&c, sim, &account).await;
        let t = now();
        let jwt = sign(&key.key, &key.kid, &claims(&account.csesidx, t, t + 300));
        Caller {
            c,
            base: sim.base_url(),
            account,
            key,
            jwt,
        }
    }

    pub fn envelope(&self, member: &str, value: Value) -> Value {
        let mut v = json!({"configId": self.account.config_id, "additionalParams": {"token": "-"}});
        v[member] = value;
        v
    }

    pub async fn post_raw(&self, method: &str, jwt: &str, body: &Value) -> reqwest::Response {
        self.c
            .post(format!("{}/v1alpha/locations/global/{method}", self.base))
            .header("authorization", format!("Bearer {jwt}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, method: &str, body: &Value) -> reqwest::Response {
        self.post_raw(method, &self.jwt, body).await
    }

    pub async fn create_session(&self) -> String {
        let body = self.envelope(
            "createSessionRequest",
            json!({"session": {"name": "", "displayName": ""}}),
        );
        let resp = self.post("widgetCreateSession", &body).await;
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        v["session"]["name"].as_str().unwrap().to_string()
    }

    pub fn stream_request(&self, session: &str, text: &str) -> Value {
        self.envelope(
            "streamAssistRequest",
            json!({
                "session": session,
                "query": {"parts": [{"text": text}]},
                "filter": "",
                "fileIds": null,
                "answerGenerationMode": "NORMAL",
                "toolsSpec": {"webGroundingSpec": {}, "toolRegistry": "default_tool_registry",
                              "imageGenerationSpec": {}, "videoGenerationSpec": {}},
                "languageCode": "zh-CN",
                "userMetadata": {"timeZone": "Asia/Shanghai"},
                "assistSkippingMode": "REQUEST_ASSIST",
                "assistGenerationConfig": {"modelId": "gemini-2.5-pro"},
            }),
        )
    }

    pub async fn upload_inline(
        &self,
        session: &str,
        mime: &str,
        bytes: &[u8],
    ) -> reqwest::Response {
        let body = self.envelope(
            "addContextFileRequest",
            json!({"name": session, "fileName": "upload_1_abcdef.png", "mimeType": mime,
                   "fileContents": STANDARD.encode(bytes)}),
        );
        self.post("widgetAddContextFile", &body).await
    }
}

/// Parses a U4 body into its elements.
pub fn elements(body: &str) -> Vec<Value> {
    serde_json::from_str::<Vec<Value>>(body).unwrap()
}

/// The `content` of an answer element.
pub fn content(element: &Value) -> &Value {
    &element["streamAssistResponse"]["answer"]["replies"][0]["groundedContent"]["content"]
}

/// Asserts a Google-shaped error.
pub async fn assert_google_error(resp: reqwest::Response, code: u16, status: &str) -> Value {
    assert_eq!(resp.status().as_u16(), code);
    let ct = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], code);
    assert_eq!(v["error"]["status"], status);
    assert!(v["error"]["message"].is_string());
    v
}
