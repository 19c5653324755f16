//! `/healthz` (the process is alive), `/readyz` (its dependencies answer, by the status
//! page's checks; 503 with the reasons otherwise) and `/metrics` (Prometheus text format).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppContext;

pub fn router() -> OpenApiRouter<AppContext> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

crate::doc_schema!(
    /// Liveness.
    Health = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["ok"]}}}
);

crate::doc_schema!(
    /// Readiness: each check is `ok` or `<state>: <reason>`.
    Readiness = {"type": "object", "required": ["ready", "checks"], "properties": {
        "ready": {"type": "boolean"},
        "checks": {"type": "object", "additionalProperties": {"type": "string"}}}}
);

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    operation_id = "healthz",
    summary = "Liveness",
    responses(
        (status = 200, description = "The process runs", body = Health),
    )
)]
async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({ "status": "ok" }))).into_response()
}

/// `/readyz`: the status page's store and log checks (`status::http::readiness`); 503 with
/// the reasons when the instance cannot work. Each check is `"ok"` or `"<state>: <reason>"`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    operation_id = "readyz",
    summary = "Readiness: the store and the log",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready, with the reasons", body = Readiness),
    )
)]
async fn readyz(State(ctx): State<AppContext>) -> Response {
    let (ready, checks) = crate::status::http::readiness(&ctx).await;
    let detail: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(c, check)| {
            let v = match check.reason {
                None => "ok".to_string(),
                Some(r) => format!("{}: {r}", check.state.as_str()),
            };
            (c.name().to_string(), json!(v))
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ready": ready, "checks": detail })),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "The Prometheus text format", content_type = "text/plain", body = String),
    )
)]
async fn metrics(State(ctx): State<AppContext>) -> Response {
    if let Ok((n, age)) = crate::outbox::backlog(&ctx.store).await {
        ctx.metrics.outbox_backlog.set(n);
        ctx.metrics.outbox_oldest_age.set(age);
    }
    if let Ok(n) = crate::relay::parked::open_count(&ctx.store).await {
        ctx.metrics.relay_parked_rows.set(n);
    }
    if let Ok(depths) = crate::consumers::dlq::depth(&ctx.store).await {
        ctx.metrics.dlq_depth.reset();
        for (group, n) in depths {
            ctx.metrics.dlq_depth.with_label_values(&[&group]).set(n);
        }
    }
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        ctx.metrics.render(),
    )
        .into_response()
}
