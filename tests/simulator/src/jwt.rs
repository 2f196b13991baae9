//! Verification of the gateway's self-signed HS256 JWT (spec §1.4, "Simulator guidance").

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::state::State;

/// Required `aud` claim.
pub(crate) const AUDIENCE: &str = "https://biz-discoveryengine.googleapis.com";
/// Required `iss` claim.
pub(crate) const ISSUER: &str = "https://business.gemini.google";
/// Tolerated clock skew on `nbf`, seconds.
const NBF_SKEW_SECS: i64 = 5;

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn decode_json(segment: &str) -> Result<Value, &'static str> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| "segment is not base64url without padding")?;
    serde_json::from_slice(&bytes).map_err(|_| "segment is not JSON")
}

/// Verifies an `authorization` header value; returns the account's `csesidx` or the reason
/// for rejection.
pub(crate) fn verify(state: &State, authorization: Option<&str>) -> Result<String, &'static str> {
    let value = authorization.ok_or("missing authorization header")?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or("authorization is not a Bearer token")?;
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("token does not have three segments");
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err("empty segment");
    }
    let header = decode_json(h)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err("alg is not HS256");
    }
    if header.get("typ").and_then(Value::as_str) != Some("JWT") {
        return Err("typ is not JWT");
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or("kid missing")?;
    let issued = state.key(kid).ok_or("unknown kid")?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| "signature is not base64url without padding")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&issued.key).map_err(|_| "unusable key length")?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    // `verify_slice` compares in constant time.
    mac.verify_slice(&signature)
        .map_err(|_| "signature mismatch")?;

    let payload = decode_json(p)?;
    let expected_sub = format!("csesidx/{}", issued.csesidx);
    if payload.get("sub").and_then(Value::as_str) != Some(expected_sub.as_str()) {
        return Err("sub does not match the key's csesidx");
    }
    if payload.get("aud").and_then(Value::as_str) != Some(AUDIENCE) {
        return Err("wrong aud");
    }
    if payload.get("iss").and_then(Value::as_str) != Some(ISSUER) {
        return Err("wrong iss");
    }
    let nbf = payload
        .get("nbf")
        .and_then(Value::as_i64)
        .ok_or("nbf is not an integer")?;
    let exp = payload
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or("exp is not an integer")?;
    let now = now_secs();
    if nbf > now.saturating_add(NBF_SKEW_SECS) {
        return Err("token not yet valid");
    }
    if now >= exp {
        return Err("token expired");
    }
    Ok(issued.csesidx)
}
