//! What every request passes before and after its handler, so no request can hurt others and
//! every error answer is JSON:
//! - a URL holding a NUL character (`%00`) is refused (`400 invalid_request`): no store can
//!   look it up or keep it;
//! - at most `http.max_in_flight` requests are in their handlers at once; beyond that, `503
//!   overloaded` with `Retry-After` (load shedding). Health, readiness and metrics are exempt;
//! - a handler that has not produced its answer within `http.request_timeout_secs` is cut with
//!   `503 timeout`. Only the time to the answer's head counts, so SSE and WebSocket streams
//!   (and downloads) run on; uploads to `/blobs/…` and operator endpoints are exempt;
//! - an error answer without a JSON body (the router's 404 and 405, axum's extractor
//!   rejections, a caught panic) gets one: `{"error": code, "reason": text}`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::error::ApiError;

/// The in-flight limit, shared by every request of a process.
pub struct Limits {
    in_flight: Arc<Semaphore>,
    timeout: Duration,
}

impl Limits {
    pub fn new(cfg: &crate::config::HttpConfig) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
            timeout: Duration::from_secs(cfg.request_timeout_secs.max(1)),
        }
    }
}

/// Routes polled by machines: never shed, never cut.
fn exempt_from_shedding(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz" | "/metrics")
}

/// Routes whose handler legitimately runs long: a blob upload streams its body inside the
/// handler, and operator actions (snapshots, redrives) work through whole tables.
fn exempt_from_timeout(route: &str) -> bool {
    route.starts_with("/blobs/") || route.starts_with("/api/v1/admin/")
}

/// Whether the URL holds a percent-encoded NUL.
fn has_nul(req: &Request) -> bool {
    req.uri()
        .path_and_query()
        .is_some_and(|pq| pq.as_str().contains("%00"))
}

pub async fn limits(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    if has_nul(&req) {
        return ApiError::bad_request("invalid_request")
            .with("reason", "the URL contains a NUL character (%00)")
            .into_response();
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let _permit = if exempt_from_shedding(&route) {
        None
    } else {
        match limits.in_flight.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded")
                    .with("reason", "too many requests in flight (http.max_in_flight)")
                    .header(header::RETRY_AFTER, "1")
                    .into_response();
            }
        }
    };
    if exempt_from_timeout(&route) || exempt_from_shedding(&route) {
        return next.run(req).await;
    }
    match tokio::time::timeout(limits.timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout")
            .with(
                "reason",
                format!(
                    "no answer within {}s (http.request_timeout_secs); an event may still be \
                     stored: retry with the same Idempotency-Key",
                    limits.timeout.as_secs()
                ),
            )
            .header(header::RETRY_AFTER, "1")
            .into_response(),
    }
}

/// The `error` code of a status, for answers that came without one.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"))
}

/// Most bytes of a non-JSON error body kept as the `reason`.
const REASON_LIMIT: usize = 4096;

/// Gives every error answer a JSON body: the status's code, and the text it had as `reason`.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(resp.headers()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, REASON_LIMIT * 4)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let mut doc = json!({ "error": code_for(status) });
    if !text.is_empty() {
        let reason: String = text.chars().take(REASON_LIMIT).collect();
        doc["reason"] = Value::String(reason);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(doc.to_string()))
}

/// The router's answer for a path it does not know.
pub async fn not_found() -> ApiError {
    ApiError::not_found("not_found")
}

/// The router's answer for a known path with another method (axum adds `Allow`).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(code_for(StatusCode::NOT_FOUND), "not_found");
        assert_eq!(code_for(StatusCode::BAD_GATEWAY), "internal");
        assert_eq!(code_for(StatusCode::IM_A_TEAPOT), "error");
    }
}
