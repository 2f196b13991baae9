//! The gateway side: `POST /v1/chat/completions`, streamed or not, read to the end.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderValue};
use serde_json::{Value, json};

/// Timing of one gateway request.
#[derive(Debug, Clone, Copy)]
pub struct GatewayTiming {
    /// Send to the last byte of the response.
    pub total: Duration,
    /// Send to the first response body byte.
    pub first_byte: Duration,
    /// Streaming only: send to the first SSE chunk whose delta carries text (answer or
    /// reasoning); the role chunk does not count.
    pub first_content: Option<Duration>,
}

/// Calls the gateway with one API key.
pub struct Gateway {
    http: reqwest::Client,
    url: String,
    bearer: HeaderValue,
    plain_body: Bytes,
    stream_body: Bytes,
}

async fn error_text(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    let cut = body.len().min(300);
    format!(
        "HTTP {status}: {}",
        String::from_utf8_lossy(body.get(..cut).unwrap_or_default())
    )
}

impl Gateway {
    pub fn new(
        http: reqwest::Client,
        base: &str,
        key: &str,
        prompt: &str,
        model: &str,
    ) -> Result<Gateway> {
        let body = |stream: bool| {
            serde_json::to_vec(&json!({
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "stream": stream,
            }))
            .map(Bytes::from)
        };
        let mut bearer = HeaderValue::from_str(&format!("Bearer {key}"))
            .context("the API key is not a valid header value")?;
        bearer.set_sensitive(true);
        Ok(Gateway {
            http,
            url: format!("{}/v1/chat/completions", base.trim_end_matches('/')),
            bearer,
            plain_body: body(false)?,
            stream_body: body(true)?,
        })
    }

    /// One request. Fails on any non-200, an error in the body or an answer without text.
    pub async fn chat(&self, stream: bool) -> Result<GatewayTiming> {
        let t0 = Instant::now();
        let body = if stream {
            self.stream_body.clone()
        } else {
            self.plain_body.clone()
        };
        let mut response = self
            .http
            .post(&self.url)
            .header(header::AUTHORIZATION, self.bearer.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .context("gateway request failed")?;
        if response.status() != StatusCode::OK {
            bail!("gateway refused: {}", error_text(response).await);
        }
        let mut first_byte = None;
        let mut first_content = None;
        let mut buf = Vec::with_capacity(2048);
        let mut scanned = 0;
        while let Some(chunk) = response.chunk().await.context("gateway body")? {
            if first_byte.is_none() {
                first_byte = Some(t0.elapsed());
            }
            buf.extend_from_slice(&chunk);
            if stream && first_content.is_none() {
                // Look at the complete SSE frames received so far.
                while let Some(end) = find(&buf[scanned..], b"\n\n") {
                    let frame = &buf[scanned..scanned + end];
                    scanned += end + 2;
                    if frame_has_text(frame) {
                        first_content = Some(t0.elapsed());
                        break;
                    }
                }
            }
        }
        let total = t0.elapsed();
        if stream {
            check_sse(&buf)?;
            if first_content.is_none() {
                bail!("the stream carried no text");
            }
        } else {
            check_completion(&buf)?;
        }
        Ok(GatewayTiming {
            total,
            first_byte: first_byte.unwrap_or(total),
            first_content,
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn delta_text(v: &Value) -> bool {
    ["content", "reasoning_content"].iter().any(|k| {
        v.pointer(&format!("/choices/0/delta/{k}"))
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
    })
}

fn frame_has_text(frame: &[u8]) -> bool {
    let Some(data) = frame.strip_prefix(b"data: ") else {
        return false;
    };
    serde_json::from_slice::<Value>(data).is_ok_and(|v| delta_text(&v))
}

/// A complete SSE body: `data:` frames ending with `[DONE]`, no error frame.
fn check_sse(body: &[u8]) -> Result<()> {
    let text = std::str::from_utf8(body).context("the SSE body is not UTF-8")?;
    let mut done = false;
    for frame in text.split("\n\n").filter(|f| !f.is_empty()) {
        let Some(data) = frame.strip_prefix("data: ") else {
            continue; // keep-alive comments
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).context("an SSE frame is not JSON")?;
        if v.get("error").is_some() {
            bail!("the stream carried an error: {data}");
        }
    }
    if !done {
        bail!("the stream did not end with [DONE]");
    }
    Ok(())
}

/// A chat completion with non-empty assistant text.
fn check_completion(body: &[u8]) -> Result<()> {
    let v: Value = serde_json::from_slice(body).context("the completion is not JSON")?;
    let text = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if text.is_empty() {
        bail!(
            "the completion has no text: {}",
            String::from_utf8_lossy(body.get(..body.len().min(300)).unwrap_or_default())
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_checks() {
        let ok = b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
                   data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n: keep-alive\n\ndata: [DONE]\n\n";
        assert!(check_sse(ok).is_ok());
        assert!(!frame_has_text(
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}"
        ));
        assert!(frame_has_text(
            b"data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"x\"}}]}"
        ));
        assert!(check_sse(b"data: {\"error\":{}}\n\ndata: [DONE]\n\n").is_err());
        assert!(check_sse(b"data: {}\n\n").is_err());
    }

    #[test]
    fn completion_checks() {
        assert!(check_completion(br#"{"choices":[{"message":{"content":"x"}}]}"#).is_ok());
        assert!(check_completion(br#"{"choices":[{"message":{"content":""}}]}"#).is_err());
    }
}
