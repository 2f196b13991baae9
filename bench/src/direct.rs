//! The "direct" baseline: what a client of the upstream itself does for one chat turn on a warm
//! account — U2 `widgetCreateSession` then U4 `widgetStreamAssist`, reading the whole U4 answer —
//! with a JWT minted by U1 and self-signed exactly as the gateway does (spec §1.3–§1.9).

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use business2api::pool::import::{credentials_of, parse_account_file};
use business2api::upstream::gemini_business::jwt::{parse_xsrf_body, sign_jwt};
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde_json::{Value, json};

// The gateway's own header values and token window, so both paths send the same requests.
use business2api::upstream::gemini_business::client::{
    API_USER_AGENT, TOKEN_USE_WINDOW, U1_USER_AGENT, WEB_ORIGIN, WEB_REFERER,
};

/// The parts of an account file (spec §2.1) a direct caller needs, read with the gateway's own
/// importer so both sides use the same credentials.
#[derive(Debug, Clone)]
pub struct AccountFile {
    pub csesidx: String,
    pub config_id: String,
    /// The U1 `Cookie` header, built as the gateway builds it.
    pub cookie_header: String,
}

impl AccountFile {
    pub fn load(path: &Path) -> Result<AccountFile> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the account file {}", path.display()))?;
        let name = path.display().to_string();
        let record = parse_account_file(&name, &bytes).map_err(|e| anyhow!("{name}: {e}"))?;
        let credentials = credentials_of(&record, "").map_err(|e| anyhow!("{name}: {e}"))?;
        let cookie_header = credentials
            .cookie_header()
            .with_context(|| format!("{name}: no __Secure-C_SES cookie"))?;
        Ok(AccountFile {
            csesidx: credentials.csesidx,
            config_id: credentials.config_id,
            cookie_header: cookie_header.expose().to_owned(),
        })
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads an error body for a message (first 300 bytes).
async fn error_text(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    let cut = body.len().min(300);
    format!(
        "HTTP {status}: {}",
        String::from_utf8_lossy(body.get(..cut).unwrap_or_default())
    )
}

/// Timing of one direct U2 + U4 turn.
#[derive(Debug, Clone, Copy)]
pub struct DirectTiming {
    /// Start of U2 to the last byte of the U4 answer.
    pub total: Duration,
    /// Start of U2 to the first byte of the U4 answer body.
    pub first_chunk: Duration,
}

struct Token {
    bearer: HeaderValue,
    use_until: Instant,
}

/// Calls the simulator directly, as one account.
pub struct Direct {
    http: reqwest::Client,
    getoxsrf_url: String,
    create_url: String,
    assist_url: String,
    account: AccountFile,
    base_headers: HeaderMap,
    create_body: Bytes,
    prompt: String,
    model: String,
    language_code: String,
    time_zone: String,
    token: Mutex<Option<Token>>,
}

impl Direct {
    pub fn new(
        http: reqwest::Client,
        sim_base: &str,
        account: AccountFile,
        prompt: &str,
        model: &str,
    ) -> Result<Direct> {
        let base = sim_base.trim_end_matches('/');
        // The same headers the gateway sends on U2–U6 (spec §1.5 without the fingerprint
        // headers); reqwest adds accept-encoding itself, for both.
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        h.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("en-US,en;q=0.9"),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::ORIGIN, HeaderValue::from_static(WEB_ORIGIN));
        h.insert(header::REFERER, HeaderValue::from_static(WEB_REFERER));
        h.insert(header::USER_AGENT, HeaderValue::from_static(API_USER_AGENT));
        h.insert("x-server-timeout", HeaderValue::from_static("1800"));
        let create_body = serde_json::to_vec(&json!({
            "configId": account.config_id,
            "additionalParams": {"token": "-"},
            "createSessionRequest": {"session": {"name": "", "displayName": ""}},
        }))?;
        Ok(Direct {
            http,
            getoxsrf_url: format!("{base}/auth/getoxsrf"),
            create_url: format!("{base}/v1alpha/locations/global/widgetCreateSession"),
            assist_url: format!("{base}/v1alpha/locations/global/widgetStreamAssist"),
            account,
            base_headers: h,
            create_body: Bytes::from(create_body),
            prompt: prompt.to_owned(),
            model: model.to_owned(),
            // The gateway's defaults (gemini_business.language_code / time_zone).
            language_code: "en-US".to_owned(),
            time_zone: "UTC".to_owned(),
            token: Mutex::new(None),
        })
    }

    /// U1 + signing.
    async fn mint(&self) -> Result<Token> {
        let started = Instant::now();
        let response = self
            .http
            .get(&self.getoxsrf_url)
            .query(&[("csesidx", self.account.csesidx.as_str())])
            .header(header::COOKIE, &self.account.cookie_header)
            .header(header::USER_AGENT, U1_USER_AGENT)
            .header(header::REFERER, WEB_REFERER)
            .send()
            .await
            .context("U1 request failed")?;
        if response.status() != StatusCode::OK {
            bail!("U1 refused: {}", error_text(response).await);
        }
        let body = response.bytes().await.context("U1 body")?;
        let key = parse_xsrf_body(&body).map_err(|e| anyhow!("U1 answer: {e}"))?;
        let jwt = sign_jwt(&key, &self.account.csesidx, now_unix());
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", jwt.expose()))
            .context("the JWT is not a valid header value")?;
        bearer.set_sensitive(true);
        Ok(Token {
            bearer,
            use_until: started + TOKEN_USE_WINDOW,
        })
    }

    /// The cached bearer header, minting a new JWT when the old one is past its use window.
    async fn bearer(&self) -> Result<HeaderValue> {
        {
            let slot = self.token.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = slot.as_ref()
                && Instant::now() < t.use_until
            {
                return Ok(t.bearer.clone());
            }
        }
        let token = self.mint().await?;
        let bearer = token.bearer.clone();
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
        Ok(bearer)
    }

    /// Mints the JWT now so that timed calls find it cached.
    pub async fn warm(&self) -> Result<()> {
        self.bearer().await.map(drop)
    }

    fn headers(&self, bearer: HeaderValue) -> HeaderMap {
        let mut h = self.base_headers.clone();
        h.insert(header::AUTHORIZATION, bearer);
        h
    }

    /// One chat turn: U2, then U4 read to the end. Fails on any non-200 or malformed answer.
    pub async fn turn(&self) -> Result<DirectTiming> {
        let t0 = Instant::now();
        let bearer = self.bearer().await?;
        let response = self
            .http
            .post(&self.create_url)
            .headers(self.headers(bearer.clone()))
            .body(self.create_body.clone())
            .send()
            .await
            .context("U2 request failed")?;
        if response.status() != StatusCode::OK {
            bail!("U2 refused: {}", error_text(response).await);
        }
        let body = response.bytes().await.context("U2 body")?;
        let created: Value = serde_json::from_slice(&body).context("U2 answer is not JSON")?;
        let session = created
            .pointer("/session/name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .context("U2 answer has no session.name")?;
        let assist = serde_json::to_vec(&json!({
            "configId": self.account.config_id,
            "additionalParams": {"token": "-"},
            "streamAssistRequest": {
                "session": session,
                "query": {"parts": [{"text": self.prompt}]},
                "filter": "",
                "fileIds": null,
                "answerGenerationMode": "NORMAL",
                "toolsSpec": {
                    "webGroundingSpec": {},
                    "toolRegistry": "default_tool_registry",
                    "imageGenerationSpec": {},
                    "videoGenerationSpec": {},
                },
                "languageCode": self.language_code,
                "userMetadata": {"timeZone": self.time_zone},
                "assistSkippingMode": "REQUEST_ASSIST",
                "assistGenerationConfig": {"modelId": self.model},
            },
        }))?;
        let mut response = self
            .http
            .post(&self.assist_url)
            .headers(self.headers(bearer))
            .body(assist)
            .send()
            .await
            .context("U4 request failed")?;
        if response.status() != StatusCode::OK {
            bail!("U4 refused: {}", error_text(response).await);
        }
        let mut first_chunk = None;
        let mut answer = Vec::with_capacity(2048);
        while let Some(chunk) = response.chunk().await.context("U4 body")? {
            if first_chunk.is_none() {
                first_chunk = Some(t0.elapsed());
            }
            answer.extend_from_slice(&chunk);
        }
        let total = t0.elapsed();
        check_answer(&answer)?;
        Ok(DirectTiming {
            total,
            first_chunk: first_chunk.unwrap_or(total),
        })
    }
}

/// The U4 answer must be a JSON array whose elements carry answer text.
fn check_answer(body: &[u8]) -> Result<()> {
    let v: Value = serde_json::from_slice(body).context("the U4 answer is not a JSON array")?;
    let elements = v.as_array().context("the U4 answer is not a JSON array")?;
    let has_text = elements.iter().any(|e| {
        e.pointer("/streamAssistResponse/answer/replies/0/groundedContent/content/text")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
    });
    if !has_text {
        bail!("the U4 answer has no text");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_check() {
        assert!(check_answer(br#"[{"streamAssistResponse":{"answer":{"replies":[{"groundedContent":{"content":{"text":"hi"}}}]}}}]"#).is_ok());
        assert!(check_answer(b"[]").is_err());
        assert!(check_answer(b"{}").is_err());
    }
}
