//! The HTTP server every process runs: health, readiness, metrics and the status page always;
//! the gateway's API, the schema registry and other components' endpoints when their role is
//! on. Requests are measured by matched route (bounded labels) and carry a request id and a
//! span (`telemetry::tracing::http`). Every request passes `guard.rs` (NUL in the URL,
//! the in-flight limit, the request timeout), and every error answer is JSON, also the
//! router's own 404 and 405. Shutdown stops accepting, lets requests in flight finish (up to
//! `http.shutdown_grace_secs`), then returns.

pub mod error;
pub mod guard;
pub mod health;
pub mod json;
pub mod openapi;

use std::sync::Arc;

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::AppContext;
use crate::roles::Role;
use utoipa_axum::router::OpenApiRouter;

/// Every documented route of a process with `roles`, as one `OpenApiRouter`: the router and
/// its OpenAPI document come from the same registrations (`openapi`). With `ctx`, the
/// authenticated API sits behind the per-address limit; without, it is the bare
/// registrations (for the document alone).
pub fn api_router(roles: &[Role], ctx: Option<&AppContext>) -> OpenApiRouter<AppContext> {
    let mut r = openapi::router().merge(health::router());
    if roles.contains(&Role::Gateway) {
        // Everything that authenticates sits behind the per-address limit (health and status
        // do not, so probes never starve).
        let api = OpenApiRouter::new()
            .merge(crate::gateway::router())
            .merge(crate::schema::registry::http::router())
            .merge(crate::consumers::admin::router())
            .merge(crate::media::router())
            .merge(crate::realtime::router())
            .merge(crate::projections::stats::api::router())
            .merge(crate::projections::snapshot::api::router())
            .merge(crate::analytics::api::router())
            .merge(crate::telemetry::ingest::router())
            .merge(crate::telemetry::query::router())
            .merge(crate::alerts::router());
        r = r.merge(match ctx {
            Some(ctx) => api.layer(axum::middleware::from_fn_with_state(
                ctx.clone(),
                crate::gateway::addresses::guard,
            )),
            None => api,
        });
    }
    r.merge(crate::status::http::router())
}

/// The router for the roles this process runs.
pub fn router(ctx: &AppContext, roles: &[Role]) -> Router {
    let (r, api) = api_router(roles, Some(ctx)).split_for_parts();
    let base = Arc::new(openapi::finish(api));
    let r: Router<AppContext> = r
        .layer(axum::Extension(base))
        .fallback(guard::not_found)
        .method_not_allowed_fallback(guard::method_not_allowed);
    let limits = Arc::new(guard::Limits::new(&ctx.config.http));
    r.layer(axum::middleware::from_fn_with_state(limits, guard::limits))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), track))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(guard::json_errors))
        .layer(axum::middleware::from_fn(
            crate::telemetry::tracing::http::trace_request,
        ))
        .with_state(ctx.clone())
}

async fn track(State(ctx): State<AppContext>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    ctx.metrics.http_in_flight.inc();
    let resp = next.run(req).await;
    ctx.metrics.http_in_flight.dec();
    let status = resp.status().as_u16().to_string();
    ctx.metrics
        .http_requests
        .with_label_values(&[&route, &method, &status])
        .inc();
    ctx.metrics
        .http_duration
        .with_label_values(&[&route, &method])
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// Serves `app` on `listener` until `shutdown`, then drains requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let drained = CancellationToken::new();
    // The peer address feeds the per-address limit (`gateway::addresses`).
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    // No Nagle: a stream writes one small frame per event, and with Nagle on, a frame written
    // while the previous one is still unacknowledged waits for the client's delayed ACK (up
    // to 40 ms on Linux). axum::serve leaves the socket's default (Nagle on).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let s = shutdown.clone();
        async move { s.cancelled().await }
    });
    let handle = tokio::spawn(async move {
        let r = server.await;
        drained.cancel();
        r
    });
    tokio::pin!(handle);
    tokio::select! {
        r = &mut handle => return r.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        _ = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(grace, &mut handle).await {
        Ok(r) => r.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        Err(_) => {
            tracing::warn!("requests still in flight after the grace period; closing");
            handle.abort();
            Ok(())
        }
    }
}
