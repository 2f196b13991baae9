//! The HTTP side of the adapter: one call per upstream endpoint (U1–U6), each with its own
//! timeout, and [`GeminiBusinessClient::converse`], which runs a whole chat turn as a stream.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::classify::{classify_element, classify_response, is_html};
use super::convert::{AnswerState, AssistItem, element_items, may_be_grounded, tools_spec};
use super::endpoint::Endpoint;
use super::json_stream::JsonElementSplitter;
use super::jwt::{XsrfKey, parse_xsrf_body, sign_jwt};
use super::prompt::{CallStyle, flatten_styled};
use super::wire::{
    AddContextFileMember, AddContextFileRequest, AddContextFileResponse, AssistGenerationConfig,
    CreateSessionMember, CreateSessionRequest, CreateSessionResponse, Envelope, FileMetadata,
    ListFilesMember, ListFilesRequest, ListFilesResponse, NewSession, Query, StreamAssistElement,
    StreamAssistMember, StreamAssistRequest, TextPart, UserMetadata,
};
use crate::accounts::Credentials;
use crate::config::live::LiveConfig;
use crate::config::{GeminiBusinessSettings, ProxyUrl};
use crate::domain::{ChatRequest, GeneratedMedia, Media, ModelId, StreamEvent};
use crate::egress::{ClientRecipe, Egress};
use crate::error::InputError;
use crate::media::fetch::{FetchError, MediaFetcher, display_url};
use crate::metrics::Metrics;
use crate::upstream::{
    AccessToken, Authenticator, BoxFuture, CallAuth, CallError, ErrorKind, EventStream,
    UpstreamError,
};

/// How long a minted JWT is used: it claims 300 s; we stop using it 30 s earlier so a request
/// that starts just before expiry does not carry a token that dies mid-call.
pub const TOKEN_USE_WINDOW: Duration = Duration::from_secs(270);

/// Error bodies are read up to this many bytes for classification.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The user agent of U1 (spec §1.3).
pub const U1_USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36";
/// The user agent of U2–U6 (spec §1.5).
pub const API_USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36";
/// `origin` of U2–U6.
pub const WEB_ORIGIN: &str = "https://business.gemini.google";
/// `referer` of U1–U6.
pub const WEB_REFERER: &str = "https://business.gemini.google/";
const AI_GENERATED_FILTER: &str = "file_origin_type = AI_GENERATED";

/// The Gemini Business HTTP client. One per process (per egress proxy later); cheap to share.
#[derive(Debug)]
pub struct GeminiBusinessClient {
    http: reqwest::Client,
    getoxsrf_url: String,
    api_base: String,
    /// The section as it was at start: what is bound into the client (base URLs, connect
    /// timeout, language headers). Per-call knobs come from [`Self::knobs`].
    settings: GeminiBusinessSettings,
    /// The running configuration, for the per-call timeouts and limits (`None`: the values of
    /// `settings` stay in force).
    live: Option<LiveConfig>,
    /// The fixed headers of U2–U6 (spec §1.5, without the browser fingerprint headers and
    /// without a hand-set `accept-encoding`).
    base_headers: HeaderMap,
    /// Fetches media URLs the upstream will not take by URI (`None`: such URLs fail).
    /// Swapped as a whole when a reload changes a `media.fetch_*` key.
    fetcher: arc_swap::ArcSwapOption<MediaFetcher>,
    /// Counts each request sent and each failed call (`/metrics`).
    metrics: Metrics,
    /// Sessions created ahead of need (`gemini_business.session_prefetch`).
    stock: super::sessions::SessionStock,
}

/// The per-call timeouts and limits, read from the live configuration at each call.
#[derive(Debug, Clone, Copy)]
struct CallKnobs {
    request_timeout: Duration,
    stream_first_byte_timeout: Duration,
    stream_idle_timeout: Duration,
    download_timeout: Duration,
    max_download_bytes: u64,
    session_prefetch: u32,
    session_prefetch_ttl: Duration,
}

impl CallKnobs {
    fn of(s: &GeminiBusinessSettings) -> CallKnobs {
        CallKnobs {
            request_timeout: s.request_timeout,
            stream_first_byte_timeout: s.stream_first_byte_timeout,
            stream_idle_timeout: s.stream_idle_timeout,
            download_timeout: s.download_timeout,
            max_download_bytes: s.max_download_bytes,
            session_prefetch: s.session_prefetch,
            session_prefetch_ttl: s.session_prefetch_ttl,
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The whole cause chain of an error, for logs (never shown to clients).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn transport(endpoint: Endpoint, e: reqwest::Error) -> UpstreamError {
    let e = e.without_url();
    tracing::debug!(endpoint = endpoint.as_str(), error = %chain(&e), "upstream transport error");
    if e.is_timeout() {
        UpstreamError::new(
            ErrorKind::Timeout,
            endpoint,
            "the upstream did not answer in time",
        )
    } else {
        UpstreamError::new(
            ErrorKind::Transport,
            endpoint,
            "could not talk to the upstream",
        )
    }
}

/// A transport failure of a call that went through `egress`: the proxy's fault when it is
/// (scored by the proxy pool, no account action), else classified as usual.
async fn transport_via(endpoint: Endpoint, egress: &Egress, e: reqwest::Error) -> UpstreamError {
    match egress.transport_failure(endpoint.as_str(), &e).await {
        Some(proxy_fault) => proxy_fault,
        None => transport(endpoint, e),
    }
}

fn timeout(endpoint: Endpoint, what: &str) -> UpstreamError {
    UpstreamError::new(ErrorKind::Timeout, endpoint, format!("the upstream {what}"))
}

fn protocol(endpoint: Endpoint, message: impl Into<String>) -> UpstreamError {
    UpstreamError::new(ErrorKind::Protocol, endpoint, message)
}

/// Reads at most `limit` bytes of a body (the rest is dropped with the connection).
async fn read_prefix(mut response: Response, limit: usize, idle: Duration) -> Vec<u8> {
    let mut buf = Vec::new();
    while buf.len() < limit {
        match tokio::time::timeout(idle, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let take = chunk.len().min(limit - buf.len());
                buf.extend_from_slice(&chunk[..take]);
            }
            _ => break,
        }
    }
    buf
}

fn header_str(response: &Response, name: header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// File extension for an uploaded file's name (reference defect 39: not the raw MIME subtype).
fn extension_for(mime: &str) -> &'static str {
    match mime.to_ascii_lowercase().as_str() {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "image/heic" => "heic",
        "image/heif" => "heif",
        "video/mp4" => "mp4",
        "video/webm" => "webm",
        "video/quicktime" => "mov",
        "video/3gpp" => "3gp",
        "video/x-matroska" => "mkv",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/wav" | "audio/x-wav" => "wav",
        "audio/ogg" => "ogg",
        "audio/flac" => "flac",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        "text/csv" => "csv",
        "text/html" => "html",
        "application/json" => "json",
        _ => "bin",
    }
}

fn base_headers(accept_language: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    if let Ok(v) = HeaderValue::from_str(accept_language) {
        h.insert(header::ACCEPT_LANGUAGE, v);
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::ORIGIN, HeaderValue::from_static(WEB_ORIGIN));
    h.insert(header::REFERER, HeaderValue::from_static(WEB_REFERER));
    h.insert(header::USER_AGENT, HeaderValue::from_static(API_USER_AGENT));
    h.insert("x-server-timeout", HeaderValue::from_static("1800"));
    h
}

impl GeminiBusinessClient {
    /// How its HTTP clients are built (the direct one here, each proxy's in the egress pool).
    pub fn recipe(settings: &GeminiBusinessSettings) -> ClientRecipe {
        ClientRecipe {
            connect_timeout: settings.connect_timeout,
            plain_http_upstream: settings.api_base_url.starts_with("http://")
                || settings.auth_base_url.starts_with("http://"),
        }
    }

    /// Builds the client; `proxy` is its direct route's proxy (client mode's own `proxy`; the
    /// gateway's accounts go through the egress pool instead). TLS is verified (rustls with the platform's roots); redirects are not
    /// followed (a redirect from Google means "sign in again", which we classify); only the
    /// content encodings reqwest decodes are advertised.
    pub fn new(
        settings: &GeminiBusinessSettings,
        proxy: Option<&ProxyUrl>,
    ) -> Result<Self, reqwest::Error> {
        let http = Self::recipe(settings).build(proxy)?;
        let primary = settings.language_code.split('-').next().unwrap_or("en");
        Ok(Self {
            http,
            getoxsrf_url: settings.auth_url("auth/getoxsrf"),
            api_base: settings.api_base_url.trim_end_matches('/').to_owned(),
            settings: settings.clone(),
            live: None,
            base_headers: base_headers(&format!("{},{};q=0.9", settings.language_code, primary)),
            fetcher: arc_swap::ArcSwapOption::empty(),
            metrics: Metrics::default(),
            stock: super::sessions::SessionStock::default(),
        })
    }

    /// Lets the client fetch media URLs itself when the upstream refuses them by URI.
    pub fn with_media_fetcher(self, fetcher: Arc<MediaFetcher>) -> Self {
        self.fetcher.store(Some(fetcher));
        self
    }

    /// Replaces the media fetcher (a reload changed its limits); calls in progress finish with
    /// the one they started with.
    pub fn set_media_fetcher(&self, fetcher: Arc<MediaFetcher>) {
        self.fetcher.store(Some(fetcher));
    }

    /// Counts its calls in the application's `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Reads the per-call timeouts and limits from `live` at each call from now on.
    pub fn with_live(mut self, live: LiveConfig) -> Self {
        self.live = Some(live);
        self
    }

    fn knobs(&self) -> CallKnobs {
        match &self.live {
            Some(live) => CallKnobs::of(&live.load().gemini_business),
            None => CallKnobs::of(&self.settings),
        }
    }

    fn method_url(&self, method: &str) -> String {
        format!("{}/v1alpha/locations/global/{method}", self.api_base)
    }

    /// Headers of every U2–U6 call: the fixed ones prepared once, plus this call's credentials.
    fn api_headers(&self, auth: &CallAuth) -> Result<HeaderMap, UpstreamError> {
        let bad = |_| {
            protocol(
                Endpoint::CreateSession,
                "a credential is not a valid header value",
            )
        };
        let mut h = self.base_headers.clone();
        let mut bearer =
            HeaderValue::from_str(&format!("Bearer {}", auth.token.expose())).map_err(bad)?;
        bearer.set_sensitive(true);
        h.insert(header::AUTHORIZATION, bearer);
        if !auth.credentials.authorization.is_empty() {
            let mut v =
                HeaderValue::from_str(auth.credentials.authorization.expose()).map_err(bad)?;
            v.set_sensitive(true);
            h.insert("x-original-authorization", v);
        }
        Ok(h)
    }

    /// Sends a request and returns the response if it is a 2xx JSON answer; every failure is
    /// classified. `limit` bounds the time to the response headers.
    async fn send(
        &self,
        endpoint: Endpoint,
        egress: &Egress,
        request: RequestBuilder,
        limit: Duration,
    ) -> Result<Response, UpstreamError> {
        self.metrics
            .upstream_call(crate::metrics::GEMINI_BUSINESS, endpoint.code());
        let response = match tokio::time::timeout(limit, request.send()).await {
            Err(_) => return Err(timeout(endpoint, "did not answer in time")),
            Ok(Err(e)) => return Err(transport_via(endpoint, egress, e).await),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if let Some(proxy_fault) =
            egress.refused_credentials(endpoint.as_str(), status.as_u16(), response.headers())
        {
            return Err(proxy_fault);
        }
        egress.succeeded();
        if status.is_redirection() {
            // Google redirects to its sign-in page when a session is no longer valid.
            let kind = if endpoint == Endpoint::GetXsrfKey {
                ErrorKind::CookiesInvalid
            } else {
                ErrorKind::Challenge
            };
            return Err(
                UpstreamError::new(kind, endpoint, "the upstream redirected to sign-in")
                    .with_status(status.as_u16()),
            );
        }
        let content_type = header_str(&response, header::CONTENT_TYPE);
        if !status.is_success()
            || content_type
                .as_deref()
                .is_some_and(|ct| is_html(Some(ct), b""))
        {
            let retry_after = header_str(&response, header::RETRY_AFTER);
            let body = read_prefix(response, ERROR_BODY_LIMIT, self.knobs().request_timeout).await;
            return Err(classify_response(
                endpoint,
                status.as_u16(),
                content_type.as_deref(),
                retry_after.as_deref(),
                &body,
            ));
        }
        Ok(response)
    }

    /// Reads a whole (small) JSON answer within the call's timeout and parses it; HTML and error
    /// elements are classified.
    async fn json<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        egress: &Egress,
        response: Response,
    ) -> Result<T, UpstreamError> {
        let content_type = header_str(&response, header::CONTENT_TYPE);
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(transport_via(endpoint, egress, e).await),
        };
        if is_html(content_type.as_deref(), &body) {
            return Err(classify_response(
                endpoint,
                200,
                content_type.as_deref(),
                None,
                &body,
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| protocol(endpoint, "the upstream answer is not JSON"))?;
        if let Some(e) = classify_element(endpoint, &value) {
            return Err(e);
        }
        serde_json::from_value(value)
            .map_err(|_| protocol(endpoint, "the upstream answer has an unexpected shape"))
    }

    async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        auth: &CallAuth,
        method: &str,
        body: &B,
    ) -> Result<T, UpstreamError> {
        let timeout = self.knobs().request_timeout;
        let request = auth
            .egress
            .http(&self.http)
            .post(self.method_url(method))
            .headers(self.api_headers(auth)?)
            .timeout(timeout)
            .json(body);
        let response = self.send(endpoint, &auth.egress, request, timeout).await?;
        self.json(endpoint, &auth.egress, response).await
    }

    /// U1 + signing: a short-lived JWT for the account (spec §1.3–1.4).
    #[tracing::instrument(skip_all)]
    pub async fn mint_token(
        &self,
        creds: &Credentials,
        egress: &Egress,
    ) -> Result<AccessToken, UpstreamError> {
        let result = self.mint_token_uncounted(creds, egress).await;
        self.metrics
            .token_refresh(crate::metrics::GEMINI_BUSINESS, result.as_ref().err());
        self.metrics
            .observe_call(crate::metrics::GEMINI_BUSINESS, result)
    }

    /// [`Self::mint_token`] without counting its failure.
    async fn mint_token_uncounted(
        &self,
        creds: &Credentials,
        egress: &Egress,
    ) -> Result<AccessToken, UpstreamError> {
        let endpoint = Endpoint::GetXsrfKey;
        let Some(cookie) = creds.cookie_header() else {
            return Err(UpstreamError::new(
                ErrorKind::CookiesInvalid,
                endpoint,
                "the account has no __Secure-C_SES cookie",
            ));
        };
        let mut cookie = HeaderValue::from_str(cookie.expose())
            .map_err(|_| protocol(endpoint, "a cookie is not a valid header value"))?;
        cookie.set_sensitive(true);
        let timeout = self.knobs().request_timeout;
        let request = egress
            .http(&self.http)
            .get(&self.getoxsrf_url)
            .query(&[("csesidx", creds.csesidx.as_str())])
            .header(header::COOKIE, cookie)
            .header(header::USER_AGENT, U1_USER_AGENT)
            .header(header::REFERER, WEB_REFERER)
            .timeout(timeout);
        let started = Instant::now();
        let response = self.send(endpoint, egress, request, timeout).await?;
        let content_type = header_str(&response, header::CONTENT_TYPE);
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(transport_via(endpoint, egress, e).await),
        };
        if is_html(content_type.as_deref(), &body) {
            return Err(classify_response(
                endpoint,
                200,
                content_type.as_deref(),
                None,
                &body,
            ));
        }
        let key: XsrfKey = parse_xsrf_body(&body)?;
        Ok(AccessToken {
            value: sign_jwt(&key, &creds.csesidx, now_unix()),
            use_until: started + TOKEN_USE_WINDOW,
        })
    }

    /// U2: a new chat session; returns its name.
    pub async fn create_session(&self, auth: &CallAuth) -> Result<String, UpstreamError> {
        let result = self.create_session_uncounted(auth).await;
        self.metrics
            .observe_call(crate::metrics::GEMINI_BUSINESS, result)
    }

    /// [`Self::create_session`] without counting its failure.
    async fn create_session_uncounted(&self, auth: &CallAuth) -> Result<String, UpstreamError> {
        let endpoint = Endpoint::CreateSession;
        let body = Envelope::new(
            &auth.credentials.config_id,
            CreateSessionMember {
                create_session_request: CreateSessionRequest {
                    session: NewSession {
                        name: "",
                        display_name: "",
                    },
                },
            },
        );
        let answer: CreateSessionResponse = self
            .post_json(endpoint, auth, "widgetCreateSession", &body)
            .await?;
        answer
            .session
            .map(|s| s.name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| protocol(endpoint, "the upstream returned no session name"))
    }

    /// U3: attaches one input file to the session; returns its file id.
    pub async fn upload(
        &self,
        auth: &CallAuth,
        session: &str,
        media: &Media,
    ) -> Result<String, UpstreamError> {
        let result = self.upload_uncounted(auth, session, media).await;
        self.metrics
            .observe_call(crate::metrics::GEMINI_BUSINESS, result)
    }

    /// [`Self::upload`] without counting its failure.
    async fn upload_uncounted(
        &self,
        auth: &CallAuth,
        session: &str,
        media: &Media,
    ) -> Result<String, UpstreamError> {
        let endpoint = Endpoint::AddContextFile;
        let request = match media {
            Media::Inline { mime, data } => {
                let suffix = uuid::Uuid::new_v4().simple().to_string();
                AddContextFileRequest::Inline {
                    name: session,
                    file_name: format!(
                        "upload_{}_{}.{}",
                        now_unix(),
                        &suffix[..6],
                        extension_for(mime)
                    ),
                    mime_type: mime,
                    file_contents: STANDARD.encode(data),
                }
            }
            Media::Url { url, .. } => AddContextFileRequest::Uri {
                name: session,
                file_uri: url,
            },
        };
        let body = Envelope::new(
            &auth.credentials.config_id,
            AddContextFileMember {
                add_context_file_request: request,
            },
        );
        let answer: AddContextFileResponse = self
            .post_json(endpoint, auth, "widgetAddContextFile", &body)
            .await?;
        answer
            .add_context_file_response
            .map(|r| r.file_id)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| protocol(endpoint, "the upstream returned no file id"))
    }

    /// U3 for one attachment. A URL goes by `fileUri` first (the upstream fetches it); if the
    /// upstream does not take it (a bad request, not found, another non-auth 4xx, or no file
    /// id), the gateway fetches the URL itself with SSRF protection ([`MediaFetcher`]) and
    /// uploads the bytes inline. A fetch failure is an [`InputError`]: the client's, not the
    /// account's.
    pub async fn attach(
        &self,
        auth: &CallAuth,
        session: &str,
        media: &Media,
    ) -> Result<String, CallError> {
        let Media::Url { url, .. } = media else {
            return Ok(self.upload(auth, session, media).await?);
        };
        let refused = match self.upload(auth, session, media).await {
            Ok(id) => return Ok(id),
            Err(e) if upstream_refused_uri(&e) => e,
            Err(e) => return Err(e.into()),
        };
        let Some(fetcher) = self.fetcher.load_full() else {
            return Err(CallError::Input(InputError::from(FetchError::Refused {
                url: display_url(url),
                reason: "the upstream could not fetch it and this gateway does not fetch media"
                    .to_owned(),
            })));
        };
        tracing::info!(url = %crate::telemetry::untrusted(&display_url(url)), error = %crate::telemetry::untrusted(&refused.to_string()), "the upstream did not take a media URL; fetching it");
        let fetched = fetcher.fetch(url).await.map_err(InputError::from)?;
        Ok(self
            .upload(
                auth,
                session,
                &Media::Inline {
                    mime: fetched.mime,
                    data: fetched.data,
                },
            )
            .await?)
    }

    /// U4: sends the query and returns the answer items as they arrive. The returned stream
    /// holds the connection; dropping it cancels the upstream call.
    pub async fn stream_assist(
        &self,
        auth: &CallAuth,
        session: &str,
        text: &str,
        file_ids: &[String],
        model: &ModelId,
    ) -> Result<impl Stream<Item = Result<AssistItem, UpstreamError>> + Send + 'static, UpstreamError>
    {
        let result = self
            .stream_assist_uncounted(auth, session, text, file_ids, model)
            .await;
        let metrics = self.metrics.clone();
        let result = result.map(|items| {
            items.inspect(move |item| {
                if let Err(e) = item {
                    metrics.upstream_error(crate::metrics::GEMINI_BUSINESS, e);
                }
            })
        });
        self.metrics
            .observe_call(crate::metrics::GEMINI_BUSINESS, result)
    }

    /// [`Self::stream_assist`] without counting its failure.
    async fn stream_assist_uncounted(
        &self,
        auth: &CallAuth,
        session: &str,
        text: &str,
        file_ids: &[String],
        model: &ModelId,
    ) -> Result<impl Stream<Item = Result<AssistItem, UpstreamError>> + Send + 'static, UpstreamError>
    {
        let endpoint = Endpoint::StreamAssist;
        let text = if text.is_empty() { " " } else { text };
        let body = Envelope::new(
            &auth.credentials.config_id,
            StreamAssistMember {
                stream_assist_request: StreamAssistRequest {
                    session,
                    query: Query {
                        parts: [TextPart { text }],
                    },
                    filter: "",
                    file_ids: (!file_ids.is_empty()).then_some(file_ids),
                    answer_generation_mode: "NORMAL",
                    tools_spec: tools_spec(model.features()),
                    language_code: &self.settings.language_code,
                    user_metadata: UserMetadata {
                        time_zone: &self.settings.time_zone,
                    },
                    assist_skipping_mode: "REQUEST_ASSIST",
                    assist_generation_config: Some(AssistGenerationConfig {
                        model_id: model.upstream_id(),
                    }),
                },
            },
        );
        let request = auth
            .egress
            .http(&self.http)
            .post(self.method_url("widgetStreamAssist"))
            .headers(self.api_headers(auth)?)
            .json(&body);
        let knobs = self.knobs();
        let response = self
            .send(
                endpoint,
                &auth.egress,
                request,
                knobs.stream_first_byte_timeout,
            )
            .await?;
        Ok(assist_items(
            response,
            auth.egress.clone(),
            knobs.stream_idle_timeout,
            may_be_grounded(model.features()),
        ))
    }

    /// U5: the AI-generated files of a session.
    pub async fn list_generated_files(
        &self,
        auth: &CallAuth,
        session: &str,
    ) -> Result<Vec<FileMetadata>, UpstreamError> {
        let result = self.list_generated_files_uncounted(auth, session).await;
        self.metrics
            .observe_call(crate::metrics::GEMINI_BUSINESS, result)
    }

    /// [`Self::list_generated_files`] without counting its failure.
    async fn list_generated_files_uncounted(
        &self,
        auth: &CallAuth,
        session: &str,
    ) -> Result<Vec<FileMetadata>, UpstreamError> {
        let body = Envelope::new(
            &auth.credentials.config_id,
            ListFilesMember {
                list_session_file_metadata_request: ListFilesRequest {
                    name: session,
                    filter: AI_GENERATED_FILTER,
                },
            },
        );
        let answer: ListFilesResponse = self
            .post_json(
                Endpoint::ListSessionFiles,
                auth,
                "widgetListSessionFileMetadata",
                &body,
            )
            .await?;
        Ok(answer
            .list_session_file_metadata_response
            .unwrap_or_default()
            .file_metadata)
    }

    /// U6: downloads one generated file, refusing files larger than `max_download_mb`.
    pub async fn download(
        &self,
        auth: &CallAuth,
        full_session: &str,
        file_id: &str,
    ) -> Result<Bytes, UpstreamError> {
        let result = self.download_uncounted(auth, full_session, file_id).await;
        self.metrics
            .observe_call(crate::metrics::GEMINI_BUSINESS, result)
    }

    /// [`Self::download`] without counting its failure.
    async fn download_uncounted(
        &self,
        auth: &CallAuth,
        full_session: &str,
        file_id: &str,
    ) -> Result<Bytes, UpstreamError> {
        let endpoint = Endpoint::DownloadFile;
        let knobs = self.knobs();
        let url = format!(
            "{}/download/v1alpha/{full_session}:downloadFile",
            self.api_base
        );
        let request = auth
            .egress
            .http(&self.http)
            .get(url)
            .query(&[("fileId", file_id), ("alt", "media")])
            .headers(self.api_headers(auth)?)
            .timeout(knobs.download_timeout);
        let mut response = self
            .send(endpoint, &auth.egress, request, knobs.download_timeout)
            .await?;
        let limit = knobs.max_download_bytes;
        let too_big = || {
            protocol(
                endpoint,
                "the generated file exceeds gemini_business.max_download_mb",
            )
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_big());
        }
        let mut buf = Vec::new();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => return Err(transport_via(endpoint, &auth.egress, e).await),
            };
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(too_big());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    }

    /// A ready session of `shelf` (prefetch on), starting a background refill of the shelf
    /// when it is short.
    fn ready_session(
        self: &Arc<Self>,
        auth: &CallAuth,
        shelf: Option<&super::sessions::ShelfKey>,
        knobs: CallKnobs,
    ) -> Option<String> {
        let shelf = shelf?;
        let (ready, refill) = self.stock.take(
            shelf,
            knobs.session_prefetch,
            knobs.session_prefetch_ttl,
            Instant::now(),
        );
        if let Some(refill) = refill {
            let client = Arc::clone(self);
            let auth = auth.clone();
            tokio::spawn(async move {
                for _ in 0..refill.count {
                    let made = client.create_session(&auth).await;
                    let want = client.knobs().session_prefetch;
                    match made {
                        Ok(name) => client
                            .stock
                            .arrived(&refill, Some(name), want, Instant::now()),
                        Err(e) => {
                            tracing::debug!(error = %e, "prefetching an upstream session failed");
                            client.stock.discard(&refill.key);
                            break;
                        }
                    }
                }
            });
        }
        ready
    }

    /// One chat turn: the conversation flattened into one query ([`flatten`]), then U2, U3 for
    /// each attachment, U4 streamed, then U5/U6 for generated files. Events are yielded as soon
    /// as they are parsed; dropping the stream cancels whatever call is in flight.
    pub fn converse(self: &Arc<Self>, auth: CallAuth, request: Arc<ChatRequest>) -> EventStream {
        let client = Arc::clone(self);
        Box::pin(async_stream::try_stream! {
            // Declared tools are emulated (crate::tools): described before the conversation,
            // and the model's calls read back out of its text.
            let tools = crate::tools::ToolSet::new(
                &request.tools,
                &request.tool_choice,
                request.parallel_tool_calls,
            );
            let query = flatten_styled(
                &request.messages,
                if tools.is_some() { CallStyle::Protocol } else { CallStyle::Plain },
            );
            // A forced choice holds the answer back until a call arrives; an answer without
            // one is asked once more, with a reminder (docs/TOOLS.md, "Forced calls").
            let forced = tools.as_ref().is_some_and(crate::tools::ToolSet::forces);
            let attempts = if forced { 2 } else { 1 };
            let model = &request.model;
            let knobs = client.knobs();
            // Ready sessions of this account's credentials, when prefetch is on.
            let shelf = (knobs.session_prefetch > 0)
                .then(|| super::sessions::shelf_key(&auth.credentials));
            let mut full_session: Option<String> = None;
            let mut session = String::new();
            let mut files = Vec::new();
            for attempt in 1..=attempts {
                let text = match &tools {
                    Some(tools) if attempt > 1 => format!(
                        "{}\n{}\n\n{}",
                        tools.instructions(),
                        tools.reminder(),
                        query.text
                    ),
                    Some(tools) => format!("{}\n\n{}", tools.instructions(), query.text),
                    None => query.text.clone(),
                };
                let mut parser = tools.as_ref().map(crate::tools::ToolSet::parser);
                full_session = None;
                files.clear();
                // A prefetched session that turns out gone is replaced once by a fresh one.
                let mut retried = false;
                let mut file_ids: Vec<String>;
                let items = loop {
                    let ready = client.ready_session(&auth, shelf.as_ref(), knobs);
                    let prefetched = ready.is_some();
                    if shelf.is_some() {
                        client.metrics.session_prefetch(if prefetched { "hit" } else { "miss" });
                    }
                    let prepared = async {
                        let session = match ready {
                            Some(ready) => ready,
                            None => client.create_session(&auth).await?,
                        };
                        let mut file_ids = Vec::with_capacity(query.attachments.len());
                        for media in &query.attachments {
                            file_ids.push(client.attach(&auth, &session, media).await?);
                        }
                        Ok::<_, CallError>((session, file_ids))
                    }
                    .await;
                    let started = match prepared {
                        Ok((s, ids)) => {
                            session = s;
                            file_ids = ids;
                            client
                                .stream_assist(&auth, &session, &text, &file_ids, model)
                                .await
                                .map_err(CallError::from)
                        }
                        Err(e) => Err(e),
                    };
                    match started {
                        Ok(items) => break items,
                        Err(e) => {
                            if let Some(shelf) = &shelf {
                                client.stock.discard(shelf);
                            }
                            // A session made ahead of need can be gone by the time it is
                            // used: once, a fresh one is made instead.
                            let gone = matches!(&e, CallError::Upstream(u) if u.kind == ErrorKind::NotFound);
                            if prefetched && gone && !retried {
                                tracing::info!("a prefetched upstream session was gone; creating a new one");
                                client.metrics.session_prefetch("gone");
                                retried = true;
                                continue;
                            }
                            Err(e)?;
                        }
                    }
                };
                futures_util::pin_mut!(items);
                // Events held back while a forced call has not arrived yet.
                let mut held: Vec<StreamEvent> = Vec::new();
                let mut called = !forced;
                while let Some(item) = items.next().await {
                    if let (Err(_), Some(shelf)) = (&item, &shelf) {
                        client.stock.discard(shelf);
                    }
                    let events = match item? {
                        AssistItem::SessionInfo(s) => {
                            full_session.get_or_insert(s);
                            continue;
                        }
                        AssistItem::File(file) => {
                            files.push(file);
                            continue;
                        }
                        // Declared tools rewrite the text (calls are taken out of it): the
                        // upstream's ranges no longer fit what the client gets.
                        AssistItem::Event(StreamEvent::Citation(_)) if parser.is_some() => continue,
                        AssistItem::Event(StreamEvent::Text(text)) if parser.is_some() => parser
                            .as_mut()
                            .map(|p| p.push(&text))
                            .unwrap_or_default()
                            .into_iter()
                            .map(piece_event)
                            .collect(),
                        // The common path (no tools, or a call already made): passed on as
                        // it is, no buffer.
                        AssistItem::Event(event) if called => {
                            yield event;
                            continue;
                        }
                        AssistItem::Event(event) => vec![event],
                    };
                    for event in events {
                        if called {
                            yield event;
                        } else {
                            called = matches!(event, StreamEvent::ToolCall(_));
                            held.push(event);
                            if called {
                                for event in held.drain(..) {
                                    yield event;
                                }
                            }
                        }
                    }
                }
                let rest: Vec<StreamEvent> = parser
                    .as_mut()
                    .map(|p| p.finish().into_iter().map(piece_event).collect())
                    .unwrap_or_default();
                called = called || rest.iter().any(|e| matches!(e, StreamEvent::ToolCall(_)));
                if !called && attempt < attempts {
                    tracing::info!(attempt, "the forced tool call did not come; asking again");
                    continue;
                }
                for event in held.into_iter().chain(rest) {
                    yield event;
                }
                break;
            }
            if !files.is_empty() {
                let listed = client
                    .list_generated_files(&auth, full_session.as_deref().unwrap_or(&session))
                    .await?;
                for file in files {
                    let meta = listed.iter().find(|m| m.file_id == file.file_id).ok_or_else(|| {
                        protocol(Endpoint::ListSessionFiles, "a generated file is missing from the session")
                    })?;
                    let owner = if meta.session.is_empty() {
                        full_session.clone().unwrap_or_else(|| session.clone())
                    } else {
                        meta.session.clone()
                    };
                    let data = client.download(&auth, &owner, &file.file_id).await?;
                    let mime = if file.mime_type.is_empty() { meta.mime_type.clone() } else { file.mime_type };
                    yield StreamEvent::Media(GeneratedMedia::new(mime, data));
                }
            }
        })
    }
}

/// A piece of the tool parser's output as a stream event.
fn piece_event(piece: crate::tools::Piece) -> StreamEvent {
    match piece {
        crate::tools::Piece::Text(text) => StreamEvent::Text(text),
        crate::tools::Piece::Call(call) => StreamEvent::ToolCall(call),
    }
}

/// Whether a failed URI upload means "the upstream will not fetch this URL" (so the gateway
/// fetches it), rather than a failure of the account or the upstream itself.
fn upstream_refused_uri(e: &UpstreamError) -> bool {
    match e.kind {
        ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::Protocol => true,
        ErrorKind::Server { status } => (400..500).contains(&status),
        _ => false,
    }
}

/// Turns a 200 U4 response into answer items, element by element, as the bytes arrive.
fn assist_items(
    response: Response,
    egress: Egress,
    idle: Duration,
    grounded: bool,
) -> impl Stream<Item = Result<AssistItem, UpstreamError>> + Send + 'static {
    let endpoint = Endpoint::StreamAssist;
    async_stream::try_stream! {
        let status = response.status();
        debug_assert_eq!(status, StatusCode::OK);
        let mut body = response.bytes_stream();
        let mut splitter = JsonElementSplitter::new();
        let mut state = AnswerState::new(grounded);
        loop {
            let chunk = match tokio::time::timeout(idle, body.next()).await {
                Err(_) => Err(timeout(endpoint, "went silent in the middle of the answer"))?,
                Ok(None) => break,
                Ok(Some(Err(e))) => Err(transport_via(endpoint, &egress, e).await)?,
                Ok(Some(Ok(chunk))) => chunk,
            };
            let elements = splitter
                .push(&chunk)
                .map_err(|e| protocol(endpoint, format!("malformed answer: {e}")))?;
            for element in elements {
                for item in parse_element(&element, &mut state)? {
                    yield item;
                }
            }
        }
        let (rest, _completion) = splitter
            .finish()
            .map_err(|e| protocol(endpoint, format!("malformed answer: {e}")))?;
        for element in rest {
            for item in parse_element(&element, &mut state)? {
                yield item;
            }
        }
    }
}

/// One U4 element, parsed once: the answer part, plus the members that mark an error element
/// or a challenge instead of an answer.
#[derive(serde::Deserialize)]
struct RawElement {
    #[serde(rename = "streamAssistResponse")]
    answer: Option<super::wire::StreamAssistResponse>,
    error: Option<serde_json::Value>,
    #[serde(rename = "uToken")]
    u_token: Option<serde_json::Value>,
    #[serde(rename = "errorMessage")]
    error_message: Option<serde_json::Value>,
}

fn parse_element(bytes: &[u8], state: &mut AnswerState) -> Result<Vec<AssistItem>, UpstreamError> {
    let endpoint = Endpoint::StreamAssist;
    let raw: RawElement = serde_json::from_slice(bytes).map_err(|_| {
        protocol(
            endpoint,
            "an answer element is not valid JSON of the expected shape",
        )
    })?;
    if raw.error.is_some() || raw.u_token.is_some() || raw.error_message.is_some() {
        // Rare: rebuild just the members the classifier looks at.
        let mut marker = serde_json::Map::new();
        for (key, value) in [
            ("error", raw.error),
            ("uToken", raw.u_token),
            ("errorMessage", raw.error_message),
        ] {
            if let Some(v) = value {
                marker.insert(key.to_owned(), v);
            }
        }
        if raw.answer.is_some() {
            marker.insert("streamAssistResponse".to_owned(), serde_json::json!({}));
        }
        if let Some(e) = classify_element(endpoint, &serde_json::Value::Object(marker)) {
            return Err(e);
        }
    }
    element_items(
        StreamAssistElement {
            stream_assist_response: raw.answer,
        },
        state,
    )
}

impl Authenticator for GeminiBusinessClient {
    fn authenticate<'a>(
        &'a self,
        credentials: &'a Credentials,
        egress: &'a Egress,
    ) -> BoxFuture<'a, Result<AccessToken, UpstreamError>> {
        Box::pin(self.mint_token(credentials, egress))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use business2api_shared::Secret;

    #[test]
    fn upload_names_use_real_extensions() {
        assert_eq!(extension_for("image/jpeg"), "jpg");
        assert_eq!(extension_for("IMAGE/PNG"), "png");
        assert_eq!(extension_for("video/x-matroska"), "mkv");
        assert_eq!(extension_for("application/x-unknown"), "bin");
    }

    #[test]
    fn elements_are_parsed_once_and_errors_still_classified() {
        let mut seq = AnswerState::new(false);
        let answer = br#"{"streamAssistResponse":{"answer":{"replies":[{"groundedContent":
            {"content":{"text":"an error about quota and uToken"}}}]}}}"#;
        assert_eq!(
            parse_element(answer, &mut seq).unwrap(),
            vec![AssistItem::Event(StreamEvent::Text(
                "an error about quota and uToken".into()
            ))]
        );
        let quota = br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"q",
            "details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure"}]}}"#;
        assert!(matches!(
            parse_element(quota, &mut seq).unwrap_err().kind,
            ErrorKind::QuotaExhausted { .. }
        ));
        let challenge = br#"{"uToken":"x","redirectUrl":"https://accounts.google.com/"}"#;
        assert_eq!(
            parse_element(challenge, &mut seq).unwrap_err().kind,
            ErrorKind::Challenge
        );
        assert_eq!(
            parse_element(b"[1,2]", &mut seq).unwrap_err().kind,
            ErrorKind::Protocol
        );
    }

    #[test]
    fn only_refusals_of_the_uri_lead_to_a_gateway_fetch() {
        let e = |kind| UpstreamError::new(kind, Endpoint::AddContextFile, "x");
        for kind in [
            ErrorKind::BadRequest,
            ErrorKind::NotFound,
            ErrorKind::Protocol,
            ErrorKind::Server { status: 415 },
        ] {
            assert!(upstream_refused_uri(&e(kind.clone())), "{kind:?}");
        }
        for kind in [
            ErrorKind::AuthExpired,
            ErrorKind::Challenge,
            ErrorKind::RateLimited { retry_after: None },
            ErrorKind::Server { status: 503 },
            ErrorKind::Transport,
            ErrorKind::Timeout,
        ] {
            assert!(!upstream_refused_uri(&e(kind.clone())), "{kind:?}");
        }
    }

    #[test]
    fn token_use_window_is_checked_at_use_time() {
        let now = Instant::now();
        let t = AccessToken {
            value: Secret::new("x"),
            use_until: now + Duration::from_secs(1),
        };
        assert!(t.usable_at(now));
        assert!(!t.usable_at(now + Duration::from_secs(1)));
    }
}
