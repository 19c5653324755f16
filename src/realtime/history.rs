//! `GET /api/v1/notifications?after=<id>&limit=<n>`: the caller's history, **oldest first**,
//! by the same id cursor the streams use (pass the last id you hold as `after`; `next_after` is
//! the cursor for the next page and for a stream's `Last-Event-ID`). Only rows the caller may
//! see are returned: their own, broadcasts, and direct messages to them.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::parse_cursor;
use crate::app::AppContext;
use crate::gateway::auth::Principal;
use crate::http::error::ApiError;
use crate::projections::notifications::{self, NotificationRow};

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    pub after: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct HistoryPage {
    pub notifications: Vec<NotificationRow>,
    /// The cursor to continue from (the last id returned, or `after` when none).
    pub next_after: i64,
    /// Whether more rows were visible beyond this page when it was read.
    pub has_more: bool,
}

fn parse_limit(v: Option<&str>) -> Result<i64, ApiError> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_LIMIT);
    };
    match v.parse::<i64>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request("invalid_parameter")
            .with("parameter", "limit")
            .with(
                "reason",
                format!("expected an integer from 1 to {MAX_LIMIT}"),
            )),
    }
}

pub async fn list(
    State(ctx): State<AppContext>,
    p: Principal,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let after = match q.after.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(a) => parse_cursor("after", a)?,
        None => 0,
    };
    let limit = parse_limit(q.limit.as_deref())?;
    // One extra row tells whether there is more.
    let mut rows = notifications::visible_after(&ctx.store, &p.id, after, limit + 1).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let page = HistoryPage {
        next_after: rows.last().map(|r| r.id).unwrap_or(after),
        notifications: rows,
        has_more,
    };
    Ok(Json(serde_json::to_value(page).unwrap_or(Value::Null)))
}
