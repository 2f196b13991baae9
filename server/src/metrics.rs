//! Prometheus metrics: `GET /metrics` (issue 15).
//!
//! One [`Metrics`] per application (the tests run several gateways in one process, so there is
//! no global recorder): a `prometheus-client` [`Registry`] holding the counters and histograms
//! that the hot path increments (atomics; a histogram observation takes the crate's short
//! mutex; a family lookup takes its read lock), and gauges computed at scrape time from the
//! views the admin API already shows (pool snapshot, worker hub, Flow token pool,
//! `EgressPool::view`), never tracked twice.
//!
//! Exposition: Prometheus text format 0.0.4 by default (`text/plain; version=0.0.4`); OpenMetrics
//! 1.0 when the scraper's `Accept` asks for `application/openmetrics-text`. Both come from the
//! crate's own encoders (`encoding::prometheus_text` and `encoding::text`).
//!
//! Labels are bounded: the API call comes from a fixed table of routes ([`ApiCall`]), a model
//! label only names a model the registry knows (a parsed [`ModelId`]'s base model, else
//! `other`), a status is a registered HTTP status code (else its class, `5xx`), upstream calls
//! and error kinds are fixed names. No e-mail, key, IP or path is ever a label; accounts appear
//! only as counts by state.
//!
//! Gateway overhead (`business2api_gateway_overhead_seconds`) is the gateway's own time around
//! an answer: from the request's arrival at the API scope (its head read) to the hand-off of the
//! parsed domain request to the chat service, plus from the end of the upstream answer (the
//! chat service's last event) to the end of the response (the last frame encoded, or the JSON
//! body rendered). Reading the request body is included (a slow client adds to it); leasing an
//! account, minting its token and waiting on the upstream are not.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::domain::{ModelId, ModelSpec};
use crate::pool::account_state::{AccountState, Capability, Usable};
use crate::startup::AppState;
use crate::upstream::{ErrorKind, UpstreamError};

/// The `upstream` label of Gemini Business calls.
pub const GEMINI_BUSINESS: &str = "gemini_business";
/// The `upstream` label of Google Labs Flow calls.
pub const FLOW: &str = "flow";

/// The `Content-Type` of the Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// The `Content-Type` of OpenMetrics 1.0 text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Seconds of the time-to-first-token buckets.
const TTFT_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0,
];
/// Seconds of the gateway-overhead buckets.
const OVERHEAD_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The API calls counted, by the route they arrive on (the `dialect` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiCall {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/messages`.
    Messages,
    /// `POST /v1beta/models/{m}:generateContent|streamGenerateContent` (also under `/v1`).
    GenerateContent,
    /// `POST /v1/images/generations`.
    Images,
    /// `POST /v1/videos`.
    Videos,
}

impl ApiCall {
    pub const ALL: [ApiCall; 6] = [
        ApiCall::Chat,
        ApiCall::Responses,
        ApiCall::Messages,
        ApiCall::GenerateContent,
        ApiCall::Images,
        ApiCall::Videos,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiCall::Chat => "chat",
            ApiCall::Responses => "responses",
            ApiCall::Messages => "messages",
            ApiCall::GenerateContent => "generate_content",
            ApiCall::Images => "images",
            ApiCall::Videos => "videos",
        }
    }

    /// The calls answered through `dialects::stream::respond` (timed by [`AnswerProbe`]).
    pub const ANSWERED: [ApiCall; 4] = [
        ApiCall::Chat,
        ApiCall::Responses,
        ApiCall::Messages,
        ApiCall::GenerateContent,
    ];

    /// Its histograms' index ([`ApiCall::ANSWERED`]); `None` for images and videos, which have
    /// handlers of their own and no histograms.
    fn answered_index(self) -> Option<usize> {
        ApiCall::ANSWERED.iter().position(|&c| c == self)
    }

    /// The call a request makes, or `None` for routes that are not counted (listings, token
    /// counts, video polling, anything unknown).
    pub fn of(method: &Method, path: &str) -> Option<ApiCall> {
        if method != Method::POST {
            return None;
        }
        match path {
            "/v1/chat/completions" => return Some(ApiCall::Chat),
            "/v1/responses" => return Some(ApiCall::Responses),
            "/v1/messages" => return Some(ApiCall::Messages),
            "/v1/images/generations" => return Some(ApiCall::Images),
            "/v1/videos" => return Some(ApiCall::Videos),
            _ => {}
        }
        let action = path
            .strip_prefix("/v1beta/models/")
            .or_else(|| path.strip_prefix("/v1/models/"))?;
        match action.rsplit_once(':') {
            Some((_, "generateContent" | "streamGenerateContent")) => {
                Some(ApiCall::GenerateContent)
            }
            _ => None,
        }
    }
}

impl EncodeLabelValue for ApiCall {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// The `model` label: the base model of a name the registry parsed, else `other`. Cloning it
/// copies a reference, never the name.
#[derive(Debug, Clone)]
pub enum ModelLabel {
    Known(Arc<ModelSpec>),
    Other,
}

impl ModelLabel {
    pub fn of(model: &ModelId) -> ModelLabel {
        ModelLabel::Known(model.shared_spec())
    }

    pub fn as_str(&self) -> &str {
        match self {
            ModelLabel::Known(spec) => &spec.name,
            ModelLabel::Other => "other",
        }
    }
}

impl PartialEq for ModelLabel {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ModelLabel {}

impl Hash for ModelLabel {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for ModelLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// The `status` label: a registered HTTP status code, else its class (`5xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusLabel {
    Code(u16),
    Class(u16),
}

impl StatusLabel {
    pub fn of(status: StatusCode) -> StatusLabel {
        if status.canonical_reason().is_some() {
            StatusLabel::Code(status.as_u16())
        } else {
            StatusLabel::Class(status.as_u16() / 100)
        }
    }
}

impl EncodeLabelValue for StatusLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            StatusLabel::Code(code) => write!(encoder, "{code}"),
            StatusLabel::Class(class) => write!(encoder, "{class}xx"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    dialect: ApiCall,
    model: ModelLabel,
    status: StatusLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DialectLabels {
    dialect: ApiCall,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamCallLabels {
    upstream: &'static str,
    call: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamErrorLabels {
    upstream: &'static str,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefreshLabels {
    upstream: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CapabilityLabels {
    capability: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// The label of an upstream error kind (a fixed set).
pub fn kind_name(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::AuthExpired => "auth_expired",
        ErrorKind::CookiesInvalid => "cookies_invalid",
        ErrorKind::Challenge => "challenge",
        ErrorKind::RateLimited { .. } => "rate_limited",
        ErrorKind::QuotaExhausted { .. } => "quota_exhausted",
        ErrorKind::BadRequest => "bad_request",
        ErrorKind::NotFound => "not_found",
        ErrorKind::Server { .. } => "server",
        ErrorKind::Transport => "transport",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Protocol => "protocol",
        ErrorKind::Proxy { exhausted: false } => "proxy",
        ErrorKind::Proxy { exhausted: true } => "proxy_exhausted",
    }
}

type HistogramFamily = Family<DialectLabels, Histogram, fn() -> Histogram>;

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// One histogram per [`ApiCall`] (index), shared with the registered family.
    ttft: Vec<Histogram>,
    overhead: Vec<Histogram>,
    upstream_requests: Family<UpstreamCallLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    token_refreshes: Family<RefreshLabels, Counter>,
    session_prefetch: Family<OutcomeLabels, Counter>,
}

/// The application's metrics: cheap to clone, shared by the handlers and the upstream clients.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn ttft_histogram() -> Histogram {
    Histogram::new(TTFT_BUCKETS)
}

fn overhead_histogram() -> Histogram {
    Histogram::new(OVERHEAD_BUCKETS)
}

impl Metrics {
    /// A fresh registry with every counter and histogram at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "business2api_requests",
            "API requests answered, by API call, model and HTTP status",
            requests.clone(),
        );
        let ttft_family: HistogramFamily = Family::new_with_constructor(ttft_histogram);
        registry.register(
            "business2api_time_to_first_token_seconds",
            "Streamed answers: time from the request's arrival to its first content event written",
            ttft_family.clone(),
        );
        let overhead_family: HistogramFamily = Family::new_with_constructor(overhead_histogram);
        registry.register(
            "business2api_gateway_overhead_seconds",
            "The gateway's own time per answer: arrival to hand-off to the chat service, plus end \
             of the upstream answer to end of the response",
            overhead_family.clone(),
        );
        let per_call = |family: &HistogramFamily| -> Vec<Histogram> {
            ApiCall::ANSWERED
                .iter()
                .map(|&dialect| family.get_or_create_owned(&DialectLabels { dialect }))
                .collect()
        };
        let ttft = per_call(&ttft_family);
        let overhead = per_call(&overhead_family);
        let upstream_requests = Family::<UpstreamCallLabels, Counter>::default();
        registry.register(
            "business2api_upstream_requests",
            "HTTP requests sent to an upstream, by upstream and call",
            upstream_requests.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "business2api_upstream_errors",
            "Upstream calls that failed, by upstream and the gateway's error kind",
            upstream_errors.clone(),
        );
        let token_refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "business2api_token_refreshes",
            "Token mints (Gemini Business session JWTs, Flow access tokens), by outcome",
            token_refreshes.clone(),
        );
        let session_prefetch = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "business2api_session_prefetch",
            "Sessions taken by Gemini Business turns with session prefetch on: hit (a ready one), \
             miss (none ready: made for the turn), gone (a ready one the upstream had dropped, \
             then replaced by a miss)",
            session_prefetch.clone(),
        );
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "business2api_build_info",
            "The running build (always 1)",
            build,
        );
        Metrics(Arc::new(Inner {
            registry,
            requests,
            ttft,
            overhead,
            upstream_requests,
            upstream_errors,
            token_refreshes,
            session_prefetch,
        }))
    }

    fn ttft(&self, call: ApiCall) -> Option<&Histogram> {
        self.0.ttft.get(call.answered_index()?)
    }

    fn overhead(&self, call: ApiCall) -> Option<&Histogram> {
        self.0.overhead.get(call.answered_index()?)
    }

    /// One API request answered.
    pub fn request(&self, call: ApiCall, model: ModelLabel, status: StatusCode) {
        self.0
            .requests
            .get_or_create(&RequestLabels {
                dialect: call,
                model,
                status: StatusLabel::of(status),
            })
            .inc();
    }

    /// One HTTP request sent to `upstream` (`call`: its fixed call name).
    pub fn upstream_call(&self, upstream: &'static str, call: &'static str) {
        self.0
            .upstream_requests
            .get_or_create(&UpstreamCallLabels { upstream, call })
            .inc();
    }

    /// An upstream call failed (counted once per failed call).
    pub fn upstream_error(&self, upstream: &'static str, error: &UpstreamError) {
        self.0
            .upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                upstream,
                kind: kind_name(&error.kind),
            })
            .inc();
    }

    /// A token mint ended: `success`, or the kind of its failure.
    pub fn token_refresh(&self, upstream: &'static str, failure: Option<&UpstreamError>) {
        let outcome = failure.map_or("success", |e| kind_name(&e.kind));
        self.0
            .token_refreshes
            .get_or_create(&RefreshLabels { upstream, outcome })
            .inc();
    }

    /// A turn with session prefetch on took a ready session (`hit`), made one (`miss`), or
    /// found its ready one gone (`gone`).
    pub fn session_prefetch(&self, outcome: &'static str) {
        self.0
            .session_prefetch
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts a failed call's error on its way out.
    pub fn observe_call<T>(
        &self,
        upstream: &'static str,
        result: Result<T, UpstreamError>,
    ) -> Result<T, UpstreamError> {
        if let Err(e) = &result {
            self.upstream_error(upstream, e);
        }
        result
    }

    /// The exposition: the registry's series, then the gauges of `scrape`.
    fn encode(&self, scrape: &Registry, openmetrics: bool) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        if openmetrics {
            prometheus_client::encoding::text::encode_registry(&mut out, &self.0.registry)?;
            prometheus_client::encoding::text::encode_registry(&mut out, scrape)?;
            prometheus_client::encoding::text::encode_eof(&mut out)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.0.registry)?;
            prometheus_client::encoding::prometheus_text::encode(&mut out, scrape)?;
        }
        Ok(out)
    }
}

/// When (and as which call) a counted request arrived, set by [`count`], and the model its
/// handler noted ([`note_model`]): one entry in the request's extensions.
#[derive(Debug, Clone)]
struct Arrival {
    at: Instant,
    call: ApiCall,
    model: Option<ModelLabel>,
}

/// Middleware on the API scopes: counts every request of an [`ApiCall`] with its final status
/// and the model its handler noted ([`note_model`]; `other` when none was parsed).
pub async fn count(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(call) = ApiCall::of(req.method(), req.path()) else {
        return next.call(req).await;
    };
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    req.extensions_mut().insert(Arrival {
        at: Instant::now(),
        call,
        model: None,
    });
    // (The request is not cloned here: routing below needs it unshared.)
    let response = next.call(req).await;
    if let Some(metrics) = metrics {
        let (status, model) = match &response {
            Ok(r) => (
                r.status(),
                r.request()
                    .extensions()
                    .get::<Arrival>()
                    .and_then(|a| a.model.clone()),
            ),
            Err(e) => (e.as_response_error().status_code(), None),
        };
        metrics.request(call, model.unwrap_or(ModelLabel::Other), status);
    }
    response
}

/// Notes the model a request asked for, for its `model` label (a request [`count`] does not
/// count has nothing to note).
pub fn note_model(req: &HttpRequest, model: &ModelId) {
    if let Some(arrival) = req.extensions_mut().get_mut::<Arrival>() {
        arrival.model = Some(ModelLabel::of(model));
    }
}

/// One answer's timings: created where the parsed request is handed to the chat service.
#[derive(Debug)]
pub struct AnswerProbe {
    metrics: Metrics,
    call: Option<ApiCall>,
    arrival: Instant,
    /// Arrival to hand-off.
    before: Duration,
    first_event_seen: bool,
}

impl AnswerProbe {
    /// The answer to `req` for `model` starts now: notes the model and the pre-upstream time.
    pub fn start(metrics: &Metrics, req: &HttpRequest, model: &ModelId) -> AnswerProbe {
        note_model(req, model);
        let now = Instant::now();
        let arrival = req.extensions().get::<Arrival>().map(|a| (a.at, a.call));
        AnswerProbe {
            metrics: metrics.clone(),
            call: arrival.map(|(_, call)| call),
            arrival: arrival.map_or(now, |(at, _)| at),
            before: arrival.map_or(Duration::ZERO, |(at, _)| now.saturating_duration_since(at)),
            first_event_seen: false,
        }
    }

    /// A content event is being written (streamed answers): the first one sets the TTFT.
    pub fn event(&mut self) {
        if self.first_event_seen {
            return;
        }
        self.first_event_seen = true;
        if let Some(histogram) = self.call.and_then(|c| self.metrics.ttft(c)) {
            histogram.observe(self.arrival.elapsed().as_secs_f64());
        }
    }

    /// The response is complete; the upstream's answer ended at `upstream_done`.
    pub fn finished(self, upstream_done: Instant) {
        if let Some(histogram) = self.call.and_then(|c| self.metrics.overhead(c)) {
            let after = upstream_done.elapsed();
            histogram.observe((self.before + after).as_secs_f64());
        }
    }
}

fn gauge_family<S>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (S, i64)>,
) where
    S: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<S, Gauge>::default();
    for (labels, value) in values {
        family.get_or_create(&labels).set(value);
    }
    registry.register(name, help, family);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn count_of(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The gauges of one scrape, from the views the admin API shows.
async fn scrape(state: &AppState, workers: Option<&crate::workers::Workers>) -> Registry {
    let mut r = Registry::default();
    gauge(
        &mut r,
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds",
        i64::try_from(state.started_unix).unwrap_or(0),
    );

    // Accounts: every state, 0 included; cooldowns per capability.
    let views = state.chat.pool().snapshot().await;
    let now = crate::pool::supervisor::now_ms();
    let mut states = [
        ("ready", 0usize),
        ("cooling_down", 0),
        ("refreshing_token", 0),
        ("needs_relogin", 0),
        ("disabled", 0),
    ];
    let mut cooling = [0usize; 3];
    let mut cooling_end = [0u64; 3];
    for v in &views {
        let i = match v.status.state {
            AccountState::Ready => 0,
            AccountState::CoolingDown { .. } => 1,
            AccountState::RefreshingToken => 2,
            AccountState::NeedsRelogin { .. } => 3,
            AccountState::Disabled { .. } => 4,
        };
        states[i].1 += 1;
        for cap in Capability::ALL {
            if let Usable::After(until) = v.status.usable_for(cap, now) {
                cooling[cap.index()] += 1;
                cooling_end[cap.index()] = cooling_end[cap.index()].max(until);
            }
        }
    }
    gauge_family(
        &mut r,
        "business2api_accounts",
        "Gemini Business accounts by state",
        states.map(|(state, n)| (StateLabels { state }, count_of(n))),
    );
    gauge_family(
        &mut r,
        "business2api_accounts_cooling_down",
        "Accounts that cannot serve a capability until a cooldown ends (state or capability)",
        Capability::ALL.map(|cap| {
            (
                CapabilityLabels {
                    capability: cap.as_str(),
                },
                count_of(cooling[cap.index()]),
            )
        }),
    );
    gauge_family(
        &mut r,
        "business2api_account_cooldown_end_max_timestamp_seconds",
        "The latest cooldown end of the accounts cooling for a capability, Unix seconds (0: none)",
        Capability::ALL.map(|cap| {
            (
                CapabilityLabels {
                    capability: cap.as_str(),
                },
                i64::try_from(cooling_end[cap.index()].div_ceil(1000)).unwrap_or(i64::MAX),
            )
        }),
    );

    // Workers and their tasks.
    let (connected, queued, leased) = match workers {
        Some(w) => w.counts().await,
        None => (0, 0, 0),
    };
    gauge(
        &mut r,
        "business2api_workers_connected",
        "Workers connected to the task hub (local mode: its in-process worker)",
        count_of(connected),
    );
    gauge_family(
        &mut r,
        "business2api_worker_tasks",
        "Re-login and probe tasks by state",
        [("queued", queued), ("leased", leased)]
            .map(|(state, n)| (StateLabels { state }, count_of(n))),
    );

    // Flow tokens.
    let mut flow = [
        ("active", 0usize),
        ("cooling", 0),
        ("failing", 0),
        ("disabled", 0),
    ];
    if let Some(pool) = state.flow.pool() {
        for token in pool.status().await {
            let i = match token.state {
                crate::upstream::flow::pool::TokenStateView::Active => 0,
                crate::upstream::flow::pool::TokenStateView::Cooling => 1,
                crate::upstream::flow::pool::TokenStateView::Failing => 2,
                crate::upstream::flow::pool::TokenStateView::Disabled => 3,
            };
            flow[i].1 += 1;
        }
    }
    gauge_family(
        &mut r,
        "business2api_flow_tokens",
        "Google Labs Flow tokens by state",
        flow.map(|(state, n)| (StateLabels { state }, count_of(n))),
    );

    // Egress proxies.
    let proxies = state.egress.view();
    gauge_family(
        &mut r,
        "business2api_egress_proxies",
        "Egress proxies of the pool by state",
        [
            ("healthy", proxies.healthy),
            ("quarantined", proxies.quarantined),
        ]
        .map(|(state, n)| (StateLabels { state }, count_of(n))),
    );
    r
}

/// Whether the scraper asked for OpenMetrics (`Accept: application/openmetrics-text`).
fn wants_openmetrics(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
}

/// `GET /metrics`: the exposition (0.0.4, or OpenMetrics when asked for).
pub async fn endpoint(
    req: HttpRequest,
    state: web::Data<AppState>,
    workers: Option<web::Data<crate::workers::Workers>>,
) -> HttpResponse {
    let scraped = scrape(&state, workers.as_ref().map(|w| w.get_ref())).await;
    let openmetrics = wants_openmetrics(&req);
    match state.metrics.encode(&scraped, openmetrics) {
        Ok(body) => HttpResponse::Ok()
            .insert_header((
                header::CONTENT_TYPE,
                if openmetrics {
                    OPENMETRICS_CONTENT_TYPE
                } else {
                    TEXT_CONTENT_TYPE
                },
            ))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(body),
        Err(_) => {
            tracing::error!("the metrics could not be encoded");
            HttpResponse::InternalServerError().finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::ModelRegistry;

    fn text(metrics: &Metrics) -> String {
        metrics.encode(&Registry::default(), false).unwrap()
    }

    #[test]
    fn api_calls_come_from_a_fixed_table_of_routes() {
        let post = Method::POST;
        assert_eq!(
            ApiCall::of(&post, "/v1/chat/completions"),
            Some(ApiCall::Chat)
        );
        assert_eq!(
            ApiCall::of(&post, "/v1/responses"),
            Some(ApiCall::Responses)
        );
        assert_eq!(ApiCall::of(&post, "/v1/messages"), Some(ApiCall::Messages));
        assert_eq!(
            ApiCall::of(&post, "/v1/images/generations"),
            Some(ApiCall::Images)
        );
        assert_eq!(ApiCall::of(&post, "/v1/videos"), Some(ApiCall::Videos));
        for path in [
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "/v1beta/models/anything-at-all:streamGenerateContent",
            "/v1/models/x:generateContent",
        ] {
            assert_eq!(
                ApiCall::of(&post, path),
                Some(ApiCall::GenerateContent),
                "{path}"
            );
        }
        for path in [
            "/v1/messages/count_tokens",
            "/v1beta/models/x:countTokens",
            "/v1/models",
            "/v1/chat/completions/",
            "/v1/videos/video_123",
            "/admin/status",
            "/v1/user@example.com",
        ] {
            assert_eq!(ApiCall::of(&post, path), None, "{path}");
        }
        assert_eq!(ApiCall::of(&Method::GET, "/v1/chat/completions"), None);
    }

    #[test]
    fn model_labels_name_only_registered_models() {
        let registry = ModelRegistry::gemini_business_names();
        let plain = registry.parse("gemini-2.5-flash").unwrap();
        let suffixed = registry.parse("models/gemini-2.5-flash-search").unwrap();
        assert_eq!(ModelLabel::of(&plain).as_str(), "gemini-2.5-flash");
        // Feature suffixes and prefixes fold into the registered base model.
        assert_eq!(ModelLabel::of(&suffixed), ModelLabel::of(&plain));
        assert_eq!(ModelLabel::Other.as_str(), "other");
        // A name the registry does not know never becomes a model at all.
        assert!(registry.parse("user@example.com").is_err());
    }

    #[test]
    fn statuses_are_registered_codes_or_classes() {
        let m = Metrics::new();
        let registry = ModelRegistry::gemini_business_names();
        let model = ModelLabel::of(&registry.parse("gemini-2.5-flash").unwrap());
        m.request(ApiCall::Chat, model.clone(), StatusCode::OK);
        m.request(ApiCall::Chat, model, StatusCode::OK);
        m.request(
            ApiCall::Messages,
            ModelLabel::Other,
            StatusCode::from_u16(599).unwrap(),
        );
        m.request(
            ApiCall::Messages,
            ModelLabel::Other,
            StatusCode::from_u16(598).unwrap(),
        );
        let t = text(&m);
        assert!(
            t.contains(
                "business2api_requests_total{dialect=\"chat\",model=\"gemini-2.5-flash\",status=\"200\"} 2"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "business2api_requests_total{dialect=\"messages\",model=\"other\",status=\"5xx\"} 2"
            ),
            "{t}"
        );
    }

    #[test]
    fn error_kinds_and_refresh_outcomes_are_fixed_names() {
        let m = Metrics::new();
        m.upstream_call(GEMINI_BUSINESS, "U4");
        let e = UpstreamError::new(ErrorKind::Server { status: 503 }, "widgetStreamAssist", "x");
        assert!(
            m.observe_call::<()>(GEMINI_BUSINESS, Err(e.clone()))
                .is_err()
        );
        m.token_refresh(GEMINI_BUSINESS, None);
        m.token_refresh(FLOW, Some(&e));
        let t = text(&m);
        for line in [
            "business2api_upstream_requests_total{upstream=\"gemini_business\",call=\"U4\"} 1",
            "business2api_upstream_errors_total{upstream=\"gemini_business\",kind=\"server\"} 1",
            "business2api_token_refreshes_total{upstream=\"gemini_business\",outcome=\"success\"} 1",
            "business2api_token_refreshes_total{upstream=\"flow\",outcome=\"server\"} 1",
        ] {
            assert!(t.contains(line), "{line} in {t}");
        }
        assert_eq!(
            kind_name(&ErrorKind::Proxy { exhausted: true }),
            "proxy_exhausted"
        );
    }

    #[test]
    fn every_dialect_has_its_histograms_from_the_start() {
        let t = text(&Metrics::new());
        for call in ApiCall::ANSWERED {
            for name in [
                "business2api_time_to_first_token_seconds_count",
                "business2api_gateway_overhead_seconds_count",
            ] {
                let line = format!("{name}{{dialect=\"{}\"}} 0", call.as_str());
                assert!(t.contains(&line), "{line} in {t}");
            }
        }
        assert!(!t.contains("dialect=\"images\""));
        assert!(t.contains("business2api_build_info{version=\""));
        assert!(!t.contains("# EOF"));
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        let om = Metrics::new().encode(&Registry::default(), true).unwrap();
        assert!(om.ends_with("# EOF\n"));
        let ask = |accept: &str| {
            let req = actix_web::test::TestRequest::get()
                .insert_header((header::ACCEPT, accept))
                .to_http_request();
            wants_openmetrics(&req)
        };
        assert!(ask(
            "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"
        ));
        assert!(ask("text/plain, application/openmetrics-text;q=0.3"));
        assert!(!ask("text/plain;version=0.0.4"));
        assert!(!ask("application/openmetrics-text;q=0"));
        assert!(!ask("*/*"));
    }
}
