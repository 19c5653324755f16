//! `/healthz` (the process is alive), `/readyz` (its dependencies answer; 503 with the
//! reasons otherwise) and `/metrics` (Prometheus text format).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::app::AppContext;

pub fn router() -> Router<AppContext> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({ "status": "ok" }))).into_response()
}

/// Checks each dependency; `Err` names what is not ready.
pub async fn check(ctx: &AppContext) -> Vec<(&'static str, Result<(), String>)> {
    let store =
        match tokio::time::timeout(std::time::Duration::from_secs(2), ctx.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("store unreachable".to_string()),
            Err(_) => Err("store timed out".to_string()),
        };
    ctx.metrics
        .store_up
        .with_label_values(&[ctx.store.backend().as_str()])
        .set(i64::from(store.is_ok()));
    vec![("store", store)]
}

async fn readyz(State(ctx): State<AppContext>) -> Response {
    let checks = check(&ctx).await;
    let ready = checks.iter().all(|(_, r)| r.is_ok());
    let detail: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(k, r)| (k.to_string(), json!(r.err().unwrap_or_else(|| "ok".into()))))
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

async fn metrics(State(ctx): State<AppContext>) -> Response {
    if let Ok((n, age)) = crate::outbox::backlog(&ctx.store).await {
        ctx.metrics.outbox_backlog.set(n);
        ctx.metrics.outbox_oldest_age.set(age);
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
