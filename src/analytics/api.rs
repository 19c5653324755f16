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

pub fn router() -> axum::Router<AppContext> {
    axum::Router::new().route(
        "/api/v1/analytics/event-counts",
        axum::routing::get(event_counts),
    )
}
