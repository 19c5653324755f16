//! `GET /api/v1/analytics/event-counts?from=&to=&step=1m|5m|1h&topic=`: event counts by topic
//! and type in time buckets, zeros filled in. Needs the admin role/scope or the
//! `analytics:read` scope (the counts describe the whole platform, not the caller).

use axum::Json;
use axum::extract::{Query, State};
use serde_json::Value;

use super::AnalyticsError;
use super::query::{self, QueryError, RawQuery};
use crate::app::AppContext;
use crate::gateway::auth::Principal;
use crate::http::error::ApiError;
use crate::store::now_micros;

pub const READ_SCOPE: &str = "analytics:read";

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Invalid { parameter, reason } => ApiError::bad_request("invalid_parameter")
                .with("parameter", parameter)
                .with("reason", reason),
            QueryError::RangeTooLarge { buckets, max } => ApiError::bad_request("range_too_large")
                .with("buckets", buckets)
                .with("max_buckets", max as u64)
                .with("reason", "narrow from/to or use a coarser step"),
            QueryError::UnknownTopic(t) => ApiError::bad_request("unknown_topic")
                .with("parameter", "topic")
                .with("topic", t),
        }
    }
}

impl From<AnalyticsError> for ApiError {
    fn from(e: AnalyticsError) -> Self {
        match e {
            AnalyticsError::Store(s) => s.into(),
            AnalyticsError::ClickHouse(c) => {
                tracing::error!(error = %c, "analytics query failed");
                ApiError::unavailable("analytics backend unavailable")
            }
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/analytics/event-counts",
    tag = "stats",
    operation_id = "event_counts",
    summary = "Event counts by topic over time",
    params(("from" = Option<String>, Query, description = "RFC 3339 start"), ("to" = Option<String>, Query, description = "RFC 3339 end"), ("step" = Option<String>, Query, description = "Bucket size, e.g. 1m, 1h, 1d"), ("topic" = Option<String>, Query, description = "One topic")),
    responses(
        (status = 200, description = "Counts per bucket", body = Object),
        (status = 400, description = "An invalid range, step or topic", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Needs the admin role or the analytics:read scope", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn event_counts(
    State(ctx): State<AppContext>,
    p: Principal,
    Query(raw): Query<RawQuery>,
) -> Result<Json<Value>, ApiError> {
    if !(p.admin || p.has_scope(READ_SCOPE)) {
        return Err(ApiError::forbidden(format!(
            "event counts need the admin role or the {READ_SCOPE} scope"
        )));
    }
    let q = query::parse(
        &raw,
        now_micros(),
        ctx.config.analytics.max_buckets.max(1),
        |t| ctx.schemas.topic(t).is_some(),
    )?;
    let cells = ctx.analytics.rollup(&q).await?;
    Ok(Json(query::answer(&q, &cells, ctx.analytics.source())))
}

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppContext> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(event_counts))
}
