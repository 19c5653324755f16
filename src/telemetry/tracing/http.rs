//! Every HTTP request gets a request id (the caller's `x-request-id` when it is sane, else a
//! new one), echoed in the `x-request-id` answer header and carried by the request's span, so
//! every log line of the request names it. API requests get a server span that continues the
//! caller's `traceparent`; health, metrics and status requests get a quiet (debug) span that
//! is never exported, so scrapes do not flood the trace backend.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing::field::Empty;

use super::context;

pub const REQUEST_ID: &str = "x-request-id";

/// The request id of a request, for handlers that want it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Routes polled by machines: no exported span.
fn quiet(route: &str) -> bool {
    matches!(
        route,
        "/healthz" | "/readyz" | "/metrics" | "/status" | "/status.json"
    )
}

/// A caller-supplied request id is kept when it is short printable ASCII without spaces.
fn sane(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
}

pub async fn trace_request(mut req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| sane(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let span = if quiet(&route) {
        tracing::debug_span!("http", request_id = %request_id, "http.route" = %route)
    } else {
        let span = tracing::info_span!(
            "http",
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = Empty,
            "http.request.method" = %method,
            "http.route" = %route,
            "http.response.status_code" = Empty,
            request_id = %request_id,
        );
        let parent = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok());
        let state = req
            .headers()
            .get("tracestate")
            .and_then(|v| v.to_str().ok());
        if let Some(cx) = parent.and_then(|p| context::extract(p.trim(), state)) {
            context::set_parent(&span, cx);
        }
        span
    };
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert!(sane("req-123_abc.def"));
        assert!(sane("0193a5b2-7c1e-7f00-8000-000000000000"));
        assert!(!sane(""));
        assert!(!sane("has space"));
        assert!(!sane("<script>"));
        assert!(!sane(&"a".repeat(129)));
    }
}
