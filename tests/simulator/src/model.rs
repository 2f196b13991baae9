//! Public data types of the simulator: accounts, endpoints, fault rules, scripted answers,
//! statistics and request records.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One simulated Gemini Business account (a signed-in web session).
#[derive(Clone, Debug)]
pub struct SimAccount {
    /// The account's e-mail address.
    pub email: String,
    /// Decimal digit string identifying the browser session (`csesidx`).
    pub csesidx: String,
    /// Value of the required `__Secure-C_SES` cookie; U1 checks it.
    pub c_ses: String,
    /// Value of the optional `__Host-C_OSES` cookie (not checked by U1).
    pub c_oses: Option<String>,
    /// The workspace config id ("cid"); U2–U5 bodies must carry it as `configId`.
    pub config_id: String,
    /// The captured web-app `authorization` header value (`Bearer <JWT>`), if any.
    pub authorization: Option<String>,
}

impl SimAccount {
    /// A deterministic demo account: e-mail `demo{i}@example.com`, a 10+ digit `csesidx` derived
    /// from `i`, `c_ses` = `demo-c-ses-{i}-<hex>`, a lowercase UUID-like `config_id`, no
    /// `c_oses` and no `authorization`.
    pub fn demo(i: u32) -> SimAccount {
        let ses_hex = hex_digest(&format!("c_ses/{i}"));
        let cfg_hex = hex_digest(&format!("config/{i}"));
        let config_id = format!(
            "{}-{}-{}-{}-{}",
            &cfg_hex[0..8],
            &cfg_hex[8..12],
            &cfg_hex[12..16],
            &cfg_hex[16..20],
            &cfg_hex[20..32]
        );
        SimAccount {
            email: format!("demo{i}@example.com"),
            csesidx: (1_000_000_000u64 + u64::from(i) * 1013).to_string(),
            c_ses: format!("demo-c-ses-{i}-{}", &ses_hex[0..24]),
            c_oses: None,
            config_id,
            authorization: None,
        }
    }

    /// The account in the reference implementation's on-disk format (spec §2.1): `email`,
    /// `fullName`, `authorization` (`""` when none), `cookies`, `cookie_string`, `timestamp`
    /// (RFC 3339, now), `configId`, `csesidx`.
    pub fn account_file_json(&self) -> Value {
        let mut cookies = vec![json!({
            "name": "__Secure-C_SES",
            "value": self.c_ses,
            "domain": ".gemini.google",
        })];
        let mut cookie_string = format!("__Secure-C_SES={}", self.c_ses);
        if let Some(oses) = &self.c_oses {
            cookies.push(json!({
                "name": "__Host-C_OSES",
                "value": oses,
                "domain": "business.gemini.google",
            }));
            cookie_string.push_str(&format!("; __Host-C_OSES={oses}"));
        }
        let full_name = self
            .email
            .split('@')
            .next()
            .unwrap_or(self.email.as_str())
            .to_string();
        json!({
            "email": self.email,
            "fullName": full_name,
            "authorization": self.authorization.clone().unwrap_or_default(),
            "cookies": cookies,
            "cookie_string": cookie_string,
            "timestamp": rfc3339_now(),
            "configId": self.config_id,
            "csesidx": self.csesidx,
        })
    }
}

fn hex_digest(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Current UTC time as RFC 3339 (`YYYY-MM-DDTHH:MM:SSZ`).
pub(crate) fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339_secs(secs)
}

/// `t` (UTC) as RFC 3339 with milliseconds (`YYYY-MM-DDTHH:MM:SS.mmmZ`, as JavaScript's
/// `toISOString`).
pub(crate) fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let base = rfc3339_secs(d.as_secs());
    let base = base.strip_suffix('Z').unwrap_or(&base);
    format!("{base}.{:03}Z", d.subsec_millis())
}

/// Seconds since the Unix epoch (UTC) as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339_secs(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// The simulated upstream endpoints (spec §1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// U1 `GET /auth/getoxsrf`.
    GetOxsrf,
    /// U2 `widgetCreateSession`.
    CreateSession,
    /// U3 `widgetAddContextFile`.
    AddContextFile,
    /// U4 `widgetStreamAssist`.
    StreamAssist,
    /// U5 `widgetListSessionFileMetadata`.
    ListFiles,
    /// U6 `…:downloadFile`.
    Download,
}

impl Endpoint {
    /// All endpoints, in U1..U6 order.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::GetOxsrf,
        Endpoint::CreateSession,
        Endpoint::AddContextFile,
        Endpoint::StreamAssist,
        Endpoint::ListFiles,
        Endpoint::Download,
    ];
}

/// How U3 treats uploads by `fileUri` (the real upstream fetches the URL itself and may fail).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileUris {
    /// Accepted and recorded (the default).
    #[default]
    Accept,
    /// 400 `INVALID_ARGUMENT`: the upstream could not fetch the URL. Inline uploads still work.
    Refuse,
    /// 200 with an empty `fileId` (nothing recorded).
    EmptyFileId,
}

/// A scripted fault: applies to requests of `endpoint` (optionally only for one account, and
/// only for U4 prompts containing a marker), `times` times or forever.
#[derive(Clone, Debug)]
pub struct FaultRule {
    /// The endpoint the rule applies to.
    pub endpoint: Endpoint,
    /// Only requests of this account (`csesidx`); `None` = any account.
    pub csesidx: Option<String>,
    /// Only U4 requests whose prompt (the texts of `streamAssistRequest.query.parts`) contains
    /// this marker; `None` = any request. A rule with a marker never matches other endpoints.
    pub prompt_contains: Option<String>,
    /// How many more times the rule fires; `None` = forever. The rule is dropped at 0.
    pub times: Option<u32>,
    /// What happens.
    pub fault: Fault,
}

impl FaultRule {
    /// A rule that fires once, for any account.
    pub fn once(endpoint: Endpoint, fault: Fault) -> Self {
        FaultRule {
            endpoint,
            csesidx: None,
            prompt_contains: None,
            times: Some(1),
            fault,
        }
    }

    /// A rule that fires forever, for any account.
    pub fn always(endpoint: Endpoint, fault: Fault) -> Self {
        FaultRule {
            endpoint,
            csesidx: None,
            prompt_contains: None,
            times: None,
            fault,
        }
    }

    /// Restricts the rule to requests of one account.
    pub fn for_account(mut self, csesidx: &str) -> Self {
        self.csesidx = Some(csesidx.to_string());
        self
    }

    /// Restricts the rule to U4 requests whose prompt contains `marker` (for any account,
    /// unless [`FaultRule::for_account`] narrows it too): a failure the request itself causes.
    pub fn when_prompt_contains(mut self, marker: &str) -> Self {
        self.prompt_contains = Some(marker.to_string());
        self
    }

    /// Whether the rule applies to a request of `endpoint` by `csesidx` with `prompt` (U4).
    pub(crate) fn matches(&self, endpoint: Endpoint, csesidx: &str, prompt: Option<&str>) -> bool {
        self.endpoint == endpoint
            && self.csesidx.as_deref().is_none_or(|c| c == csesidx)
            && self
                .prompt_contains
                .as_deref()
                .is_none_or(|m| prompt.is_some_and(|p| p.contains(m)))
    }

    /// Makes the rule fire `n` times.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

/// What a fault rule makes the simulator answer. Faults apply after authentication passed.
#[derive(Clone, Debug)]
pub enum Fault {
    /// 401 `UNAUTHENTICATED`.
    Unauthorized,
    /// 429 `RESOURCE_EXHAUSTED` with an `ErrorInfo` `RATE_LIMIT_EXCEEDED` detail; with
    /// `Some(n)`, a `Retry-After: n` header and a `RetryInfo` detail.
    RateLimited {
        /// Seconds for `Retry-After` / `RetryInfo`.
        retry_after_secs: Option<u64>,
    },
    /// 429 `RESOURCE_EXHAUSTED` with a `QuotaFailure` detail (daily quota).
    QuotaExhausted {
        /// Seconds for `Retry-After` / `RetryInfo`.
        retry_after_secs: Option<u64>,
    },
    /// HTTP 200 with a JSON array whose only element is a 429 quota error object.
    QuotaInStream,
    /// HTTP 200 `text/html` Google sign-in page.
    ChallengePage,
    /// HTTP 200 JSON object `{"uToken":…,"redirectUrl":…}`.
    UTokenChallenge,
    /// That status with an `UNAVAILABLE` (or `INTERNAL` for 500) error body.
    ServerError(u16),
    /// 400 `INVALID_ARGUMENT` with this message.
    BadRequest(String),
    /// Waits that long, then answers normally.
    SlowFirstByte(Duration),
    /// U4: sends `sessionInfo` + N answer elements, then breaks the body (no chunked
    /// terminator). Other endpoints: a 200 response head whose body breaks before any byte.
    CutAfter(usize),
    /// Anything: status, content type, body and an optional `Retry-After` header value.
    Raw {
        /// HTTP status.
        status: u16,
        /// `Content-Type` header value.
        content_type: String,
        /// Body text.
        body: String,
        /// `Retry-After` header value, if any.
        retry_after: Option<String>,
    },
}

/// One part of a scripted answer.
#[derive(Clone, Debug)]
pub enum AnswerPart {
    /// Reasoning text (`thought: true`).
    Thought(String),
    /// Visible answer text delta.
    Text(String),
    /// A generated image (stored as a session file, announced as `content.file`).
    Image {
        /// MIME type.
        mime: String,
        /// File bytes.
        bytes: Bytes,
    },
    /// A generated video (stored as a session file, announced as `content.file`).
    Video {
        /// MIME type.
        mime: String,
        /// File bytes.
        bytes: Bytes,
    },
    /// Inline media (`content.inlineData`).
    Inline {
        /// MIME type.
        mime: String,
        /// Media bytes (sent as standard base64).
        bytes: Bytes,
    },
    /// A function call (`content.functionCall`).
    FunctionCall {
        /// Function name.
        name: String,
        /// Arguments object.
        args: Value,
    },
    /// Web grounding for the text sent before it (`groundedContent.textGroundingMetadata`, in
    /// a reply of its own, as a streamed answer sends it after its text).
    Grounding(Grounding),
    /// Text and its grounding in one reply (`content.text` with `textGroundingMetadata`).
    GroundedText { text: String, grounding: Grounding },
    /// A raw array element, sent verbatim (for shapes the builders do not cover).
    Element(Value),
}

/// A web source of a grounded answer (`TextGroundingMetadata.Reference`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimReference {
    pub uri: String,
    pub title: String,
    pub domain: String,
    /// A snippet of the source (`content`).
    pub content: String,
}

impl SimReference {
    /// A reference with a title and domain derived from `uri`.
    pub fn new(uri: impl Into<String>, title: impl Into<String>) -> Self {
        let uri = uri.into();
        let domain = uri
            .split("//")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned();
        SimReference {
            uri,
            title: title.into(),
            domain,
            content: String::new(),
        }
    }
}

/// A grounded range of the answer text (`TextGroundingMetadata.Segment`): UTF-8 byte offsets
/// into the answer's visible text (every text reply so far, concatenated), end exclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimSegment {
    pub start: usize,
    pub end: usize,
    /// Indices into the references.
    pub references: Vec<usize>,
    /// The segment's text (sent as `text`; `None` leaves the field out).
    pub text: Option<String>,
}

/// The grounding of an answer: its sources and the ranges each supports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grounding {
    pub references: Vec<SimReference>,
    pub segments: Vec<SimSegment>,
}

impl Grounding {
    /// The `textGroundingMetadata` JSON: indices as strings (proto3 JSON's int64), as Google
    /// sends them.
    pub fn to_json(&self) -> Value {
        let segments: Vec<Value> = self
            .segments
            .iter()
            .map(|s| {
                let mut v = serde_json::json!({
                    "startIndex": s.start.to_string(),
                    "endIndex": s.end.to_string(),
                    "referenceIndices": s.references,
                    "groundingScore": 0.9,
                });
                if let Some(t) = &s.text {
                    v["text"] = Value::String(t.clone());
                }
                v
            })
            .collect();
        let references: Vec<Value> = self
            .references
            .iter()
            .map(|r| {
                serde_json::json!({
                    "content": r.content,
                    "documentMetadata": {"uri": r.uri, "title": r.title, "domain": r.domain},
                })
            })
            .collect();
        serde_json::json!({"segments": segments, "references": references})
    }

    /// The grounding of `answer` where each `(cited, reference)` pair cites the first
    /// occurrence of `cited` in `answer` (with its text), one reference per distinct URL.
    pub fn citing(answer: &str, cites: &[(&str, SimReference)]) -> Grounding {
        let mut g = Grounding::default();
        for (cited, reference) in cites {
            let index = match g.references.iter().position(|r| r.uri == reference.uri) {
                Some(i) => i,
                None => {
                    g.references.push(reference.clone());
                    g.references.len() - 1
                }
            };
            let start = answer.find(cited).unwrap_or(0);
            g.segments.push(SimSegment {
                start,
                end: start + cited.len(),
                references: vec![index],
                text: Some((*cited).to_owned()),
            });
        }
        g
    }
}

/// A scripted U4 answer: ordered parts, one array element each (after `sessionInfo`).
#[derive(Clone, Debug, Default)]
pub struct Answer {
    /// The parts, in order.
    pub parts: Vec<AnswerPart>,
}

impl Answer {
    /// An empty answer (only the `sessionInfo` element is sent).
    pub fn new() -> Self {
        Answer::default()
    }

    /// Appends a reasoning element.
    pub fn thought(mut self, t: impl Into<String>) -> Self {
        self.parts.push(AnswerPart::Thought(t.into()));
        self
    }

    /// Appends a text element.
    pub fn text(mut self, t: impl Into<String>) -> Self {
        self.parts.push(AnswerPart::Text(t.into()));
        self
    }

    /// Appends a generated image, downloadable via U5/U6.
    pub fn image(mut self, mime: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        self.parts.push(AnswerPart::Image {
            mime: mime.into(),
            bytes: bytes.into(),
        });
        self
    }

    /// Appends a generated video, downloadable via U5/U6.
    pub fn video(mut self, mime: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        self.parts.push(AnswerPart::Video {
            mime: mime.into(),
            bytes: bytes.into(),
        });
        self
    }

    /// Appends an `inlineData` element.
    pub fn inline(mut self, mime: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        self.parts.push(AnswerPart::Inline {
            mime: mime.into(),
            bytes: bytes.into(),
        });
        self
    }

    /// Appends a `functionCall` element.
    pub fn function_call(mut self, name: impl Into<String>, args: Value) -> Self {
        self.parts.push(AnswerPart::FunctionCall {
            name: name.into(),
            args,
        });
        self
    }

    /// Appends web grounding for the text before it, in a reply of its own (as streamed).
    pub fn grounding(mut self, grounding: Grounding) -> Self {
        self.parts.push(AnswerPart::Grounding(grounding));
        self
    }

    /// Appends text with its grounding in the same reply.
    pub fn grounded_text(mut self, text: impl Into<String>, grounding: Grounding) -> Self {
        self.parts.push(AnswerPart::GroundedText {
            text: text.into(),
            grounding,
        });
        self
    }

    /// Appends a raw array element, sent verbatim.
    pub fn element(mut self, value: Value) -> Self {
        self.parts.push(AnswerPart::Element(value));
        self
    }
}

/// Counters since start.
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    /// Requests that reached each endpoint (including rejected ones).
    pub calls: HashMap<Endpoint, u64>,
    /// U4 array elements handed to the HTTP layer, all streams.
    pub elements_sent: u64,
    /// U4 streams begun (response head decided as a 200 stream).
    pub streams_started: u64,
    /// U4 streams whose every element was handed to the HTTP layer.
    pub streams_completed: u64,
    /// U4 bodies dropped before their end (the client went away).
    pub streams_cancelled: u64,
    /// U4 bodies broken on purpose by a [`Fault::CutAfter`].
    pub streams_cut: u64,
    /// U2–U6 requests rejected because the bearer JWT was missing or invalid.
    pub jwts_rejected: u64,
    /// The most U1 calls that were in progress at once for one account.
    pub max_concurrent_mints_per_account: u64,
}

/// One request as the simulator saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The account, once identified (U1: the existing account named by `csesidx`; U2–U6: the
    /// verified JWT `sub`).
    pub csesidx: Option<String>,
    /// The HTTP status the simulator answered.
    pub status: u16,
    /// The request body, when it was JSON. In bodies over 1 MiB, strings over 64 KiB are
    /// replaced by `"[elided N bytes]"` (see [`Upload`] for upload sizes and bytes).
    pub body: Option<Value>,
    /// Request headers, lower-case names; `authorization`, `cookie` and
    /// `x-original-authorization` values are replaced by `[present]`.
    pub headers: Vec<(String, String)>,
    /// Method of the request.
    pub method: String,
    /// Path and query of the request.
    pub path: String,
    /// When the request arrived.
    pub at: std::time::Instant,
    /// The TCP peer the request came from (`None` if the transport has none). The simulator
    /// listens on 127.0.0.1, but any 127.0.0.0/8 source address reaches it: an egress proxy
    /// bound to its own source IP (127.0.0.2, 127.0.0.3, …) shows here which proxy the request
    /// went through.
    pub peer: Option<std::net::SocketAddr>,
}

impl RecordedRequest {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One U3 upload the simulator accepted.
#[derive(Clone, Debug)]
pub struct Upload {
    /// The uploading account.
    pub csesidx: String,
    /// The session (short name).
    pub session: String,
    /// The fileId issued.
    pub file_id: String,
    /// `fileName` (inline uploads).
    pub file_name: Option<String>,
    /// `mimeType` (inline uploads).
    pub mime_type: Option<String>,
    /// Decoded byte length (0 for URI uploads).
    pub byte_len: usize,
    /// The decoded bytes, for inline uploads up to 1 MiB.
    pub bytes: Option<Bytes>,
    /// `fileUri` (URI uploads).
    pub file_uri: Option<String>,
}
