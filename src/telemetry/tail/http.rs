//! The tail endpoints: `GET /api/v1/tail/logs` and `GET /api/v1/tail/alerts` as Server-Sent
//! Events, and `…/ws` for the same over WebSocket, served by the realtime transports
//! (`crate::realtime::sse::respond`, `crate::realtime::ws::run`). Credentials (an API key
//! with `telemetry:read` or `telemetry:write` and `org:<id>`, or a JWT with `org:<id>`) are
//! checked first, then the filters; the org comes from the credentials only.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Kind, filter};
use crate::app::AppContext;
use crate::http::error::ApiError;
use crate::realtime::stream::Transport;
use crate::telemetry::store::read::LogFilter;
use crate::telemetry::tenant::{Access, tenant};

pub fn router() -> OpenApiRouter<AppContext> {
    OpenApiRouter::new()
        .routes(routes!(tail_logs))
        .routes(routes!(tail_logs_ws))
        .routes(routes!(tail_alerts))
        .routes(routes!(tail_alerts_ws))
}

/// The answers of every tail endpoint besides its success, documented once.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only its documentation is used
enum TailErrors {
    /// A bad filter or parameter (`invalid_query`, naming the `parameter`), or, on `/ws`, not
    /// a WebSocket request
    #[response(status = 400)]
    Invalid(#[to_schema] crate::http::openapi::ErrorBody),
    /// No or bad credentials
    #[response(status = 401)]
    Unauthorized(#[to_schema] crate::http::openapi::ErrorBody),
    /// Needs the telemetry:read scope and an org
    #[response(status = 403)]
    Forbidden(#[to_schema] crate::http::openapi::ErrorBody),
    /// Too many tails open (`too_many_tails`, with `scope` `org` or `process`), or rate limited
    #[response(status = 429)]
    TooMany(#[to_schema] crate::http::openapi::ErrorBody),
}

/// The caller's org and the tail's filter (logs), or no parameters at all (alerts).
async fn open_args(
    ctx: &AppContext,
    headers: &HeaderMap,
    query: Option<String>,
    kind: Kind,
) -> Result<(String, LogFilter), ApiError> {
    let p = crate::realtime::stream_principal(ctx, headers, None).await?;
    let org = tenant(&p, Access::Read)?;
    let raw = query.unwrap_or_default();
    let filter = match kind {
        Kind::Logs => filter::parse(&raw)?,
        Kind::Alerts => {
            if let Some((k, _)) = url::form_urlencoded::parse(raw.as_bytes()).next() {
                return Err(ApiError::bad_request("invalid_query")
                    .with("parameter", k.to_string())
                    .with("reason", "the alert tail takes no parameters"));
            }
            LogFilter::default()
        }
    };
    Ok((org, filter))
}

async fn sse(
    ctx: AppContext,
    headers: HeaderMap,
    query: Option<String>,
    kind: Kind,
) -> Result<Response, ApiError> {
    let (org, filter) = open_args(&ctx, &headers, query, kind).await?;
    let conn = ctx
        .realtime
        .open_tail(&ctx, org, kind, filter, Transport::Sse)
        .await?;
    Ok(crate::realtime::sse::respond(&ctx, conn))
}

async fn ws(
    ctx: AppContext,
    headers: HeaderMap,
    query: Option<String>,
    kind: Kind,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (org, filter) = open_args(&ctx, &headers, query, kind).await?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::bad_request("not_a_websocket_request").with("reason", e.body_text())
    })?;
    let hello = json!({
        "type": "hello",
        "tail": kind.as_str(),
        "org": org,
        "heartbeat_secs": ctx.realtime.heartbeat_secs(),
    });
    let conn = ctx
        .realtime
        .open_tail(&ctx, org, kind, filter, Transport::WebSocket)
        .await?;
    Ok(upgrade.on_upgrade(move |socket| crate::realtime::ws::run(socket, conn, hello)))
}

#[utoipa::path(
    get,
    path = "/api/v1/tail/logs",
    tag = "telemetry",
    operation_id = "tail_logs",
    summary = "Live tail of the org's log lines (Server-Sent Events)",
    params(
        ("service" = Option<String>, Query, description = "Only lines of this service"),
        ("level" = Option<String>, Query, description = "Only lines of this level (any case)"),
        ("label" = Option<Vec<String>>, Query, description = "`name=value`: only lines with this label; repeatable, all must hold"),
        ("q" = Option<String>, Query, description = "Only lines whose message contains this text"),
    ),
    responses(
        (status = 200, description = "An event stream: `log` events (one line each, as in the log search), `lagged` (`{\"dropped\": n}`) when the client fell behind, heartbeat comments", content_type = "text/event-stream", body = String),
        TailErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn tail_logs(
    State(ctx): State<AppContext>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    sse(ctx, headers, q, Kind::Logs).await
}

#[utoipa::path(
    get,
    path = "/api/v1/tail/logs/ws",
    tag = "telemetry",
    operation_id = "tail_logs_websocket",
    summary = "Live tail of the org's log lines (WebSocket)",
    params(
        ("service" = Option<String>, Query, description = "Only lines of this service"),
        ("level" = Option<String>, Query, description = "Only lines of this level (any case)"),
        ("label" = Option<Vec<String>>, Query, description = "`name=value`: only lines with this label; repeatable, all must hold"),
        ("q" = Option<String>, Query, description = "Only lines whose message contains this text"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: JSON messages `hello`, `log` (`data`: the line), `lagged` (`data.dropped`), `heartbeat`"),
        TailErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn tail_logs_ws(
    State(ctx): State<AppContext>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    ws(ctx, headers, q, Kind::Logs, upgrade).await
}

#[utoipa::path(
    get,
    path = "/api/v1/tail/alerts",
    tag = "telemetry",
    operation_id = "tail_alerts",
    summary = "Live tail of the org's alert transitions (Server-Sent Events)",
    responses(
        (status = 200, description = "An event stream: `alert` events (one transition each, the `internal.alerts.transitions` payload), `lagged` when the client fell behind, heartbeat comments", content_type = "text/event-stream", body = String),
        TailErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn tail_alerts(
    State(ctx): State<AppContext>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    sse(ctx, headers, q, Kind::Alerts).await
}

#[utoipa::path(
    get,
    path = "/api/v1/tail/alerts/ws",
    tag = "telemetry",
    operation_id = "tail_alerts_websocket",
    summary = "Live tail of the org's alert transitions (WebSocket)",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: JSON messages `hello`, `alert` (`data`: the transition), `lagged`, `heartbeat`"),
        TailErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn tail_alerts_ws(
    State(ctx): State<AppContext>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    ws(ctx, headers, q, Kind::Alerts, upgrade).await
}
