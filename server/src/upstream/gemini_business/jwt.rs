//! The U1 signing key and the self-signed short-lived JWT (spec §1.3, §1.4).
//!
//! U1 (`GET /auth/getoxsrf`) hands out an HMAC key (`xsrfToken`) and its id (`keyId`); the
//! gateway then signs its own HS256 JWT with that key for every U2–U6 call. Nothing here does
//! I/O: parsing, encoding and signing only.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use business2api_shared::Secret;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::endpoint::Endpoint;
use crate::upstream::error::{ErrorKind, UpstreamError};

/// How long the self-signed JWT claims to be valid (`exp - iat`), in seconds.
pub const JWT_LIFETIME_SECS: u64 = 300;

/// The XSSI prefix Google puts in front of JSON bodies meant for its own web clients.
const XSSI_PREFIX: &str = ")]}'";

/// The JWT `aud` claim.
const AUDIENCE: &str = "https://biz-discoveryengine.googleapis.com";

/// The JWT `iss` claim.
const ISSUER: &str = "https://business.gemini.google";

/// Base64url decoding that accepts both padded and unpadded input and, like Go's non-strict
/// decoder the reference implementation used, ignores non-zero trailing bits.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

type HmacSha256 = Hmac<Sha256>;

/// The signing key U1 returns: the decoded `xsrfToken` bytes and the `keyId` naming them.
///
/// `Debug` shows the key id and the key length, never the key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct XsrfKey {
    /// The `keyId` from U1; goes into the JWT header as `kid`. Not secret.
    pub key_id: String,
    key: Vec<u8>,
}

impl XsrfKey {
    /// Builds a key from its parts (e.g. for tests or a simulator).
    pub fn new(key_id: impl Into<String>, key: Vec<u8>) -> Self {
        Self {
            key_id: key_id.into(),
            key,
        }
    }

    /// The raw HMAC key bytes. Use only to sign.
    pub fn key_bytes(&self) -> &[u8] {
        &self.key
    }
}

impl fmt::Debug for XsrfKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XsrfKey")
            .field("key_id", &self.key_id)
            .field("key", &format_args!("[redacted; {} bytes]", self.key.len()))
            .finish()
    }
}

fn protocol(message: &str) -> UpstreamError {
    UpstreamError::new(ErrorKind::Protocol, Endpoint::GetXsrfKey, message)
}

/// Parses a U1 200 body into the signing key.
///
/// Leading whitespace and a leading XSSI prefix `)]}'` are skipped, the rest is trimmed and
/// parsed as a JSON object with non-empty string fields `xsrfToken` and `keyId`. `xsrfToken` is
/// base64url, padded or not. Every failure is a [`ErrorKind::Protocol`] error on
/// [`Endpoint::GetXsrfKey`] whose message never contains the token or any other body text.
pub fn parse_xsrf_body(body: &[u8]) -> Result<XsrfKey, UpstreamError> {
    let text = std::str::from_utf8(body).map_err(|_| protocol("U1 body is not UTF-8"))?;
    let text = text.trim_start();
    let text = text.strip_prefix(XSSI_PREFIX).unwrap_or(text).trim();
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        protocol(&format!(
            "U1 body is not JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let object = value
        .as_object()
        .ok_or_else(|| protocol("U1 body is not a JSON object"))?;
    let token = match object.get("xsrfToken") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s,
        Some(_) => return Err(protocol("U1 body: `xsrfToken` is not a non-empty string")),
        None => return Err(protocol("U1 body: `xsrfToken` is missing")),
    };
    let key_id = match object.get("keyId") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s,
        Some(_) => return Err(protocol("U1 body: `keyId` is not a non-empty string")),
        None => return Err(protocol("U1 body: `keyId` is missing")),
    };
    // Decoding errors name the offending byte and offset; report neither.
    let key = URL_SAFE_LENIENT
        .decode(token.as_bytes())
        .map_err(|_| protocol("U1 body: `xsrfToken` is not valid base64url"))?;
    if key.is_empty() {
        return Err(protocol("U1 body: `xsrfToken` decodes to an empty key"));
    }
    Ok(XsrfKey {
        key_id: key_id.clone(),
        key,
    })
}

/// The web client's byte encoding of the JWT segments (spec §1.4).
///
/// The string is taken as UTF-16 code units, as the web client's JavaScript (`charCodeAt`) sees
/// it: a unit `<= 0xFF` becomes one byte, any other unit two bytes, low byte then high byte.
/// A code point above U+FFFF is therefore encoded as its two surrogates, four bytes in all
/// (U+1F600 → `3D D8 00 DE`). For ASCII text this equals UTF-8.
pub fn quirky_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for unit in s.encode_utf16() {
        let [low, high] = unit.to_le_bytes();
        out.push(low);
        if high != 0 {
            out.push(high);
        }
    }
    out
}

/// A JSON string literal for `s`, with serde_json's escaping.
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// An HMAC-SHA256 instance for a key of any length.
///
/// HMAC (RFC 2104) hashes keys longer than the 64-byte block and zero-pads the rest to one
/// block; doing that here lets us use the infallible fixed-size constructor instead of
/// `new_from_slice`, whose error cannot happen for HMAC but would need handling.
fn hmac_for(key: &[u8]) -> HmacSha256 {
    let mut block = hmac::digest::Key::<HmacSha256>::default();
    if key.len() > block.len() {
        let digest = Sha256::digest(key);
        for (slot, byte) in block.iter_mut().zip(digest.iter()) {
            *slot = *byte;
        }
    } else {
        for (slot, byte) in block.iter_mut().zip(key.iter()) {
            *slot = *byte;
        }
    }
    <HmacSha256 as KeyInit>::new(&block)
}

/// Builds the short-lived JWT for `csesidx`, issued at `now_unix`, valid for
/// [`JWT_LIFETIME_SECS`].
///
/// Header `{"alg":"HS256","kid":<keyId>,"typ":"JWT"}` and payload
/// `{"aud":…,"exp":now+300,"iat":now,"iss":…,"nbf":now,"sub":"csesidx/<csesidx>"}` are written
/// in exactly that key order without whitespace; each segment is base64url without padding of
/// [`quirky_bytes`] of the JSON; the signature is base64url without padding of
/// HMAC-SHA256(key, `<header>.<payload>`).
pub fn sign_jwt(key: &XsrfKey, csesidx: &str, now_unix: u64) -> Secret {
    let header = format!(
        r#"{{"alg":"HS256","kid":{},"typ":"JWT"}}"#,
        json_string(&key.key_id)
    );
    let payload = format!(
        r#"{{"aud":{},"exp":{},"iat":{now_unix},"iss":{},"nbf":{now_unix},"sub":{}}}"#,
        json_string(AUDIENCE),
        now_unix.saturating_add(JWT_LIFETIME_SECS),
        json_string(ISSUER),
        json_string(&format!("csesidx/{csesidx}")),
    );
    let mut token = URL_SAFE_NO_PAD.encode(quirky_bytes(&header));
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(quirky_bytes(&payload), &mut token);
    let mut mac = hmac_for(key.key_bytes());
    mac.update(token.as_bytes());
    let signature = mac.finalize().into_bytes();
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Secret::new(token)
}

/// The `csesidx` named by a stored `authorization` header value (`Bearer <JWT>`).
///
/// Surrounding whitespace is ignored; the rest must split on a single space into exactly two
/// parts, the scheme `Bearer` (compared case-insensitively, as HTTP auth schemes are) and a JWT
/// of three dot-separated segments. The payload segment is base64url (padded or not) of JSON
/// whose `sub` is `csesidx/<digits>`. The payload may be in the web client's quirky encoding
/// (§1.4), which is not UTF-8 for non-ASCII claims; it is then read as Latin-1, which keeps the
/// ASCII `sub` intact. The signature is not checked. `None` for anything else.
pub fn csesidx_from_authorization(authorization: &str) -> Option<String> {
    let mut parts = authorization.trim().split(' ');
    let (Some(scheme), Some(jwt), None) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return None;
    }
    let mut segments = jwt.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return None;
    };
    let bytes = URL_SAFE_LENIENT.decode(payload).ok()?;
    let claims: serde_json::Value = match std::str::from_utf8(&bytes) {
        Ok(text) => serde_json::from_str(text).ok()?,
        Err(_) => {
            let latin1: String = bytes.iter().map(|&b| char::from(b)).collect();
            serde_json::from_str(&latin1).ok()?
        }
    };
    let digits = claims.get("sub")?.as_str()?.strip_prefix("csesidx/")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vectors below were computed independently with Python 3 (standard library only):
    //
    // import base64, hashlib, hmac, json
    //
    // def b64u(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    //
    // def quirky(s):
    //     # one byte per UTF-16 code unit <= 0xFF, else low byte then high byte
    //     units = s.encode("utf-16-le")
    //     out = bytearray()
    //     for i in range(0, len(units), 2):
    //         u = units[i] | (units[i + 1] << 8)
    //         if u <= 0xFF: out.append(u)
    //         else: out += bytes([u & 0xFF, u >> 8])
    //     return bytes(out)
    //
    // def sign(key, kid, csesidx, now):
    //     dump = lambda o: json.dumps(o, separators=(",", ":"), ensure_ascii=False)
    //     h = dump({"alg": "HS256", "kid": kid, "typ": "JWT"})
    //     p = dump({"aud": "https://biz-discoveryengine.googleapis.com", "exp": now + 300,
    //               "iat": now, "iss": "https://business.gemini.google", "nbf": now,
    //               "sub": "csesidx/" + csesidx})
    //     signing_input = b64u(quirky(h)) + "." + b64u(quirky(p))
    //     sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    //     return signing_input + "." + b64u(sig)
    //
    // key = bytes([0xfb, 0xff, 0xbf, 0x3e, 0x00, 0x7f]) + b"business2api-test-key"
    // print("token:", b64u(key))
    // print(sign(key, "kid-0123", "1234567890", 1700000000))
    // print(sign(key, "k\u00e9y-\u4e2d", "42", 1700000000))
    // print(sign(b"L" * 100, "long", "7", 1))
    // print(quirky("k\u00e9y-\u4e2d\U0001F600").hex())

    /// `b64u(key)` from the snippet: uses both `-` and `_`.
    const TOKEN: &str = "-_-_PgB_YnVzaW5lc3MyYXBpLXRlc3Qta2V5";

    fn test_key_bytes() -> Vec<u8> {
        let mut key = vec![0xfb, 0xff, 0xbf, 0x3e, 0x00, 0x7f];
        key.extend_from_slice(b"business2api-test-key");
        key
    }

    fn body(token: &str, kid: &str) -> String {
        format!(r#"{{"xsrfToken":"{token}","keyId":"{kid}"}}"#)
    }

    #[test]
    fn known_answer_ascii() {
        let key = XsrfKey::new("kid-0123", test_key_bytes());
        let jwt = sign_jwt(&key, "1234567890", 1_700_000_000);
        assert_eq!(
            jwt.expose(),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6ImtpZC0wMTIzIiwidHlwIjoiSldUIn0.\
             eyJhdWQiOiJodHRwczovL2Jpei1kaXNjb3ZlcnllbmdpbmUuZ29vZ2xlYXBpcy5jb20iLCJleHAiOjE3MDAw\
             MDAzMDAsImlhdCI6MTcwMDAwMDAwMCwiaXNzIjoiaHR0cHM6Ly9idXNpbmVzcy5nZW1pbmkuZ29vZ2xlIiwi\
             bmJmIjoxNzAwMDAwMDAwLCJzdWIiOiJjc2VzaWR4LzEyMzQ1Njc4OTAifQ.\
             nYJzIokxaUqySnMJ9JeIf8CbgTSv2L0hF0ONoPPcmKs"
        );
    }

    #[test]
    fn known_answer_non_ascii_kid_uses_quirky_encoding() {
        let kid = "k\u{e9}y-\u{4e2d}";
        let key = XsrfKey::new(kid, test_key_bytes());
        let jwt = sign_jwt(&key, "42", 1_700_000_000);
        assert_eq!(
            jwt.expose(),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6ImvpeS0tTiIsInR5cCI6IkpXVCJ9.\
             eyJhdWQiOiJodHRwczovL2Jpei1kaXNjb3ZlcnllbmdpbmUuZ29vZ2xlYXBpcy5jb20iLCJleHAiOjE3MDAw\
             MDAzMDAsImlhdCI6MTcwMDAwMDAwMCwiaXNzIjoiaHR0cHM6Ly9idXNpbmVzcy5nZW1pbmkuZ29vZ2xlIiwi\
             bmJmIjoxNzAwMDAwMDAwLCJzdWIiOiJjc2VzaWR4LzQyIn0.\
             IKwrV6zJaq9ELVAVg5YsYHvdxNU1m9HL7RP1_tdN7x0"
        );
        // The header segment is not the base64url of the UTF-8 JSON.
        let header = jwt.expose().split('.').next().unwrap().to_owned();
        let utf8 = URL_SAFE_NO_PAD
            .encode(format!(r#"{{"alg":"HS256","kid":"{kid}","typ":"JWT"}}"#).as_bytes());
        assert_ne!(header, utf8);
    }

    #[test]
    fn known_answer_long_key_is_hashed() {
        let key = XsrfKey::new("long", vec![b'L'; 100]);
        assert_eq!(
            sign_jwt(&key, "7", 1).expose(),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6ImxvbmciLCJ0eXAiOiJKV1QifQ.\
             eyJhdWQiOiJodHRwczovL2Jpei1kaXNjb3ZlcnllbmdpbmUuZ29vZ2xlYXBpcy5jb20iLCJleHAiOjMwMSwi\
             aWF0IjoxLCJpc3MiOiJodHRwczovL2J1c2luZXNzLmdlbWluaS5nb29nbGUiLCJuYmYiOjEsInN1YiI6ImNz\
             ZXNpZHgvNyJ9._dPVMKX2H_sT-apXGJG6mEiOsQLeI7RpTXF3QTgw66g"
        );
    }

    #[test]
    fn hmac_matches_library_for_short_and_long_keys() {
        for len in [0usize, 1, 32, 63, 64, 65, 200] {
            let key = vec![0x5a; len];
            let mut ours = hmac_for(&key);
            let mut theirs = <HmacSha256 as Mac>::new_from_slice(&key).unwrap();
            ours.update(b"message");
            theirs.update(b"message");
            assert_eq!(
                ours.finalize().into_bytes(),
                theirs.finalize().into_bytes(),
                "len {len}"
            );
        }
    }

    #[test]
    fn quirky_encoding() {
        assert_eq!(quirky_bytes("abc"), b"abc");
        assert_eq!(quirky_bytes("\u{e9}"), [0xe9]);
        assert_eq!(quirky_bytes("\u{4e2d}"), [0x2d, 0x4e]);
        assert_eq!(quirky_bytes("\u{100}"), [0x00, 0x01]);
        // From the Python snippet: quirky("k\u00e9y-\u4e2d\U0001F600").hex()
        assert_eq!(
            quirky_bytes("k\u{e9}y-\u{4e2d}\u{1F600}"),
            [0x6b, 0xe9, 0x79, 0x2d, 0x2d, 0x4e, 0x3d, 0xd8, 0x00, 0xde]
        );
    }

    #[test]
    fn signed_token_round_trips_through_csesidx_extraction() {
        let key = XsrfKey::new("k", test_key_bytes());
        let jwt = sign_jwt(&key, "987654321", 1_700_000_000);
        let header = format!("Bearer {}", jwt.expose());
        assert_eq!(
            csesidx_from_authorization(&header).as_deref(),
            Some("987654321")
        );
    }

    #[test]
    fn parses_body_with_and_without_xssi_prefix() {
        let plain = body(TOKEN, "kid-1");
        let prefixed = format!(")]}}'\n{plain}\n");
        let spaced = format!("  \r\n{plain}  ");
        for text in [plain.clone(), prefixed, spaced] {
            let key = parse_xsrf_body(text.as_bytes()).unwrap();
            assert_eq!(key.key_id, "kid-1");
            assert_eq!(key.key_bytes(), test_key_bytes().as_slice());
        }
    }

    #[test]
    fn parses_padded_and_unpadded_tokens() {
        // 27 bytes → 36 chars, no padding needed; use shorter keys for the padded forms.
        for (token, expected) in [
            ("YQ", b"a".to_vec()),
            ("YQ==", b"a".to_vec()),
            ("YWI", b"ab".to_vec()),
            ("YWI=", b"ab".to_vec()),
            ("YWJj", b"abc".to_vec()),
            ("-_8", vec![0xfb, 0xff]),
            ("-_8=", vec![0xfb, 0xff]),
        ] {
            let key = parse_xsrf_body(body(token, "k").as_bytes()).unwrap();
            assert_eq!(key.key_bytes(), expected.as_slice(), "token {token}");
        }
    }

    #[test]
    fn bad_bodies_are_protocol_errors_without_the_token() {
        let secret = "c2VjcmV0c2VjcmV0";
        let cases = [
            "not json".to_owned(),
            format!(r#"{{"xsrfToken":"{secret}""#),
            format!(r#"{{"xsrfToken":"{secret}"}}"#),
            r#"{"keyId":"k"}"#.to_owned(),
            format!(r#"{{"xsrfToken":"{secret}","keyId":7}}"#),
            format!(r#"{{"xsrfToken":"{secret}","keyId":""}}"#),
            r#"{"xsrfToken":17,"keyId":"k"}"#.to_owned(),
            r#"{"xsrfToken":"","keyId":"k"}"#.to_owned(),
            format!(r#"{{"xsrfToken":"{secret}*+/","keyId":"k"}}"#),
            format!(r#"{{"xsrfToken":"{secret}a","keyId":"k"}}"#),
            format!(r#"["{secret}"]"#),
            ")]}'".to_owned(),
            String::new(),
        ];
        for text in &cases {
            let err = parse_xsrf_body(text.as_bytes()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Protocol, "{text}");
            assert_eq!(err.endpoint, Endpoint::GetXsrfKey.as_str(), "{text}");
            assert!(!err.message.contains(secret), "{text}: {}", err.message);
            assert!(!err.to_string().contains(secret));
        }
        let err = parse_xsrf_body(&[0xff, 0xfe]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Protocol);
    }

    #[test]
    fn debug_hides_the_key() {
        let key = parse_xsrf_body(body(TOKEN, "kid-1").as_bytes()).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("kid-1"));
        assert!(shown.contains("redacted"));
        assert!(!shown.contains("business2api-test-key"));
        assert!(!shown.contains("251"), "{shown}"); // 0xfb as a decimal byte
        assert!(!shown.contains(TOKEN));
        let jwt = sign_jwt(&key, "1", 1);
        assert!(!format!("{jwt:?}").contains(jwt.expose()));
    }

    fn authorization_for(payload: &str) -> String {
        format!(
            "Bearer eyJhbGciOiJIUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn csesidx_good_cases() {
        let good = authorization_for(r#"{"sub":"csesidx/123456","exp":1}"#);
        assert_eq!(csesidx_from_authorization(&good).as_deref(), Some("123456"));
        assert_eq!(
            csesidx_from_authorization(&format!(" {good}\n")).as_deref(),
            Some("123456")
        );
        let lower = good.replacen("Bearer", "bearer", 1);
        assert_eq!(
            csesidx_from_authorization(&lower).as_deref(),
            Some("123456")
        );
        // Padded payload segment.
        let padded = format!(
            "Bearer h.{}.s",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"sub":"csesidx/9"}"#)
        );
        assert!(padded.contains('='));
        assert_eq!(csesidx_from_authorization(&padded).as_deref(), Some("9"));
        // A quirky-encoded (Latin-1) non-ASCII claim next to the ASCII `sub`.
        let mut payload = br#"{"name":""#.to_vec();
        payload.push(0xe9);
        payload.extend_from_slice(br#"","sub":"csesidx/77"}"#);
        let quirky = format!("Bearer h.{}.s", URL_SAFE_NO_PAD.encode(&payload));
        assert_eq!(csesidx_from_authorization(&quirky).as_deref(), Some("77"));
    }

    #[test]
    fn csesidx_bad_cases() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"csesidx/123"}"#);
        let cases = [
            String::new(),
            "Bearer".to_owned(),
            format!("Bearer  h.{payload}.s"),
            format!("Basic h.{payload}.s"),
            format!("Bearer h.{payload}.s extra"),
            format!("h.{payload}.s"),
            format!("Bearer h.{payload}"),
            format!("Bearer h.{payload}.s.x"),
            "Bearer h.!!!.s".to_owned(),
            authorization_for("not json"),
            authorization_for(r#"{"sub":"user/123"}"#),
            authorization_for(r#"{"sub":"csesidx/"}"#),
            authorization_for(r#"{"sub":"csesidx/12a"}"#),
            authorization_for(r#"{"sub":"csesidx/-12"}"#),
            authorization_for(r#"{"sub":"csesidx/１２"}"#),
            authorization_for(r#"{"sub":123}"#),
            authorization_for(r#"{"iss":"x"}"#),
            authorization_for(r#"["csesidx/1"]"#),
        ];
        for case in &cases {
            assert_eq!(csesidx_from_authorization(case), None, "{case}");
        }
    }
}
