//! What a request body may cost before a handler sees it: a refusal of a `Content-Length`
//! above `http.max_request_body_mb` before any byte is read, a timeout for a body that stops
//! arriving (`http.body_read_timeout_sec`), and one budget for the bytes of all request
//! bodies being received and parsed at once (`http.inflight_body_mb`), so that N large
//! requests cannot exhaust memory together.
//!
//! [`guard_body`] is middleware on the API and admin scopes (after the key check, so a caller
//! without a key never takes from the budget). It takes the declared `Content-Length` from
//! the budget before the handler runs — waiting at most `http.inflight_wait_ms`, then `503`
//! with `Retry-After: 1` — and wraps the payload so that a chunked body takes each chunk as
//! it arrives and a silent client gets `408`. What was taken is given back when the handler
//! has produced its response: after the body was read and parsed (and, for a stream, when
//! the answer starts), which is when the body's bytes and its parse are gone.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::HttpMessage as _;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::middleware::Next;
use actix_web::web;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::live::LiveConfig;
use crate::dialects::Dialect;
use crate::error::GatewayError;

/// The bytes of request bodies in flight, over all requests (`http.inflight_body_mb`).
#[derive(Debug)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    total: usize,
}

impl BodyBudget {
    pub fn new(total: usize) -> BodyBudget {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            permits: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Bytes not taken right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

/// What one request has taken from the budget; given back when dropped.
#[derive(Debug, Clone)]
struct Held {
    budget: Arc<Semaphore>,
    total: usize,
    permit: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

/// The budget had no room within `http.inflight_wait_ms`.
#[derive(Debug)]
struct NoRoom;

impl Held {
    fn new(budget: &BodyBudget) -> Held {
        Held {
            budget: Arc::clone(&budget.permits),
            total: budget.total,
            permit: Arc::new(Mutex::new(None)),
        }
    }

    /// Takes `bytes` more, waiting at most `wait`. A request never holds more than the whole
    /// budget (a body larger than it still gets in, alone).
    async fn take(&self, bytes: usize, wait: Duration) -> Result<(), NoRoom> {
        let held = self
            .permit
            .lock()
            .map(|p| p.as_ref().map_or(0, OwnedSemaphorePermit::num_permits))
            .unwrap_or(0);
        let want = bytes.min(self.total.saturating_sub(held));
        if want == 0 {
            return Ok(());
        }
        let n = u32::try_from(want).unwrap_or(u32::MAX);
        let acquire = Arc::clone(&self.budget).acquire_many_owned(n);
        let permit = match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => return Err(NoRoom),
        };
        if let Ok(mut slot) = self.permit.lock() {
            match slot.as_mut() {
                Some(existing) => existing.merge(permit),
                None => *slot = Some(permit),
            }
        }
        Ok(())
    }
}

/// The marker inside the `io::Error` a guarded payload yields when the budget had no room.
#[derive(Debug, thiserror::Error)]
#[error("the request body budget (http.inflight_body_mb) has no room")]
struct BudgetFull;

/// The marker inside the `io::Error` a guarded payload yields when the client stopped sending.
#[derive(Debug, thiserror::Error)]
#[error("no bytes of the request body arrived for {0:?}")]
struct Stalled(Duration);

/// The gateway error a payload error stands for (see [`crate::dialects::read_body`]).
pub fn payload_error(e: PayloadError, limit: usize) -> GatewayError {
    match e {
        PayloadError::Overflow => GatewayError::PayloadTooLarge { limit },
        PayloadError::Io(io) => {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<BudgetFull>().is_some())
            {
                return GatewayError::Busy;
            }
            if let Some(Stalled(after)) = io.get_ref().and_then(|i| i.downcast_ref::<Stalled>()) {
                return GatewayError::BodyTimeout { after: *after };
            }
            GatewayError::invalid(format!("the request body could not be read: {io}"), None)
        }
        other => {
            GatewayError::invalid(format!("the request body could not be read: {other}"), None)
        }
    }
}

/// The declared `Content-Length`, when there is one that parses.
fn declared_length(req: &ServiceRequest) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Middleware: see the module docs.
pub async fn guard_body(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let (Some(budget), Some(live)) = (
        req.app_data::<web::Data<BodyBudget>>().cloned(),
        req.app_data::<web::Data<LiveConfig>>().cloned(),
    ) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let (limit, idle, wait) = {
        let settings = live.load();
        (
            settings.http.max_request_body_bytes,
            settings.http.body_read_timeout,
            settings.http.inflight_wait,
        )
    };
    let declared = declared_length(&req);
    if let Some(n) = declared
        && n > limit as u64
    {
        return Ok(refuse(req, &GatewayError::PayloadTooLarge { limit }));
    }
    let held = Held::new(&budget);
    let prepaid = usize::try_from(declared.unwrap_or(0)).unwrap_or(usize::MAX);
    if prepaid > 0 && held.take(prepaid, wait).await.is_err() {
        tracing::warn!(
            bytes = prepaid,
            "request refused: the body budget (http.inflight_body_mb) stayed full"
        );
        return Ok(refuse(req, &GatewayError::Busy));
    }
    let payload = guarded(req.take_payload(), held.clone(), prepaid, idle, wait);
    req.set_payload(payload);
    let response = next.call(req).await;
    drop(held);
    response.map(ServiceResponse::map_into_left_body)
}

fn refuse<B>(req: ServiceRequest, error: &GatewayError) -> ServiceResponse<EitherBody<B>> {
    let response = match Dialect::of_api(req.request()) {
        Some(dialect) => dialect.error_response(error),
        // The admin API's shape: `{"error": "..."}`.
        None => crate::dialects::error_with_body(
            error,
            Bytes::from(serde_json::json!({ "error": error.client_message() }).to_string()),
        ),
    };
    req.into_response(response).map_into_right_body()
}

/// The payload, with the silence timeout and the budget applied to every chunk past the
/// `prepaid` bytes of the declared length.
fn guarded(inner: Payload, held: Held, prepaid: usize, idle: Duration, wait: Duration) -> Payload {
    struct State {
        inner: Payload,
        held: Held,
        prepaid: usize,
        idle: Duration,
        wait: Duration,
        done: bool,
    }
    let state = State {
        inner,
        held,
        prepaid,
        idle,
        wait,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let chunk: Bytes = match tokio::time::timeout(st.idle, st.inner.next()).await {
            Err(_) => {
                st.done = true;
                let e = io::Error::new(io::ErrorKind::TimedOut, Stalled(st.idle));
                return Some((Err(PayloadError::Io(e)), st));
            }
            Ok(None) => return None,
            Ok(Some(Err(e))) => {
                st.done = true;
                return Some((Err(e), st));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        let beyond = chunk.len().saturating_sub(st.prepaid);
        st.prepaid = st.prepaid.saturating_sub(chunk.len());
        if beyond > 0 && st.held.take(beyond, st.wait).await.is_err() {
            st.done = true;
            let e = io::Error::other(BudgetFull);
            return Some((Err(PayloadError::Io(e)), st));
        }
        Some((Ok(chunk), st))
    });
    // Fused: a reader may poll again after the end (actix-multipart does), which an unfused
    // `unfold` answers with a panic.
    Payload::Stream {
        payload: Box::pin(stream.fuse()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn held_bytes_come_back_when_the_request_is_done() {
        let budget = BodyBudget::new(1000);
        let a = Held::new(&budget);
        a.take(600, Duration::ZERO).await.unwrap();
        a.take(300, Duration::ZERO).await.unwrap();
        assert_eq!(budget.available(), 100);
        let b = Held::new(&budget);
        assert!(b.take(200, Duration::from_millis(20)).await.is_err());
        drop(a);
        assert_eq!(budget.available(), 1000);
        b.take(200, Duration::ZERO).await.unwrap();
        assert_eq!(budget.available(), 800);
    }

    #[tokio::test]
    async fn one_request_never_holds_more_than_the_whole_budget() {
        let budget = BodyBudget::new(1000);
        let a = Held::new(&budget);
        a.take(5000, Duration::ZERO).await.unwrap();
        a.take(5000, Duration::ZERO).await.unwrap();
        assert_eq!(budget.available(), 0);
        drop(a);
        assert_eq!(budget.available(), 1000);
    }

    #[tokio::test]
    async fn a_waiting_request_gets_in_when_room_frees_up() {
        let budget = BodyBudget::new(100);
        let a = Held::new(&budget);
        a.take(100, Duration::ZERO).await.unwrap();
        let b = Held::new(&budget);
        let waiter = tokio::spawn(async move { b.take(50, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        assert!(waiter.await.unwrap().is_ok());
    }

    #[test]
    fn payload_errors_map_to_their_gateway_errors() {
        let busy = payload_error(PayloadError::Io(io::Error::other(BudgetFull)), 10);
        assert_eq!(busy, GatewayError::Busy);
        let stalled = payload_error(
            PayloadError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                Stalled(Duration::from_secs(3)),
            )),
            10,
        );
        assert_eq!(
            stalled,
            GatewayError::BodyTimeout {
                after: Duration::from_secs(3)
            }
        );
        assert_eq!(
            payload_error(PayloadError::Overflow, 10),
            GatewayError::PayloadTooLarge { limit: 10 }
        );
    }
}
