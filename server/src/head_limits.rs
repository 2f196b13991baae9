//! Limits on the request head, answered in the caller's dialect.
//!
//! actix-http itself refuses a head it cannot hold (more than 96 header lines, or more than
//! 128 KiB of head) with an empty `431`, and a URL longer than the `http` crate accepts (about
//! 64 KiB) with an empty `400`, before any of our code runs. Below those limits this middleware
//! applies lower ones of its own and answers with the dialect's error body: a URL (path and
//! query) over [`MAX_URL_BYTES`] gets `414 URI Too Long`; more than [`MAX_HEADERS`] header lines
//! or more than [`MAX_HEADER_BYTES`] of headers get `431 Request Header Fields Too Large`.

use actix_web::HttpRequest;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

use crate::dialects::Dialect;
use crate::error::GatewayError;

/// Longest URL (path and query) accepted, in bytes.
pub const MAX_URL_BYTES: usize = 16 * 1024;
/// Most header lines accepted (a repeated header counts once per line).
pub const MAX_HEADERS: usize = 64;
/// Largest total of header names and values accepted, in bytes (each line counted as
/// `name: value\r\n`).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The limit `req`'s head breaks, if any.
pub fn check(req: &HttpRequest) -> Result<(), GatewayError> {
    let url = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if url > MAX_URL_BYTES {
        return Err(GatewayError::UriTooLong {
            limit: MAX_URL_BYTES,
        });
    }
    let headers = req.headers();
    if headers.len() > MAX_HEADERS {
        return Err(GatewayError::HeadersTooLarge(format!(
            "the request has {} header lines; the limit is {MAX_HEADERS}",
            headers.len()
        )));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(GatewayError::HeadersTooLarge(format!(
            "the request headers take {bytes} bytes; the limit is {MAX_HEADER_BYTES}"
        )));
    }
    Ok(())
}

/// Middleware: refuses a request whose head breaks a limit, in the caller's dialect.
pub async fn enforce(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    match check(req.request()) {
        Ok(()) => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
        Err(e) => {
            let response = Dialect::of(req.request()).error_response(&e);
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}
