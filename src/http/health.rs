//! `/healthz` (the process is alive), `/readyz` (its dependencies answer, by the status
//! page's checks; 503 with the reasons otherwise) and `/metrics` (Prometheus text format).

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

/// `/readyz`: the status page's store and log checks (`status::http::readiness`); 503 with
/// the reasons when the instance cannot work. Each check is `"ok"` or `"<state>: <reason>"`.
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
